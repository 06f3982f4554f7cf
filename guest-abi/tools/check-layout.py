#!/usr/bin/env python3
"""Cross-check guest-abi against Xen's public C headers with a C compiler.

Usage: check-layout.py XEN_PUBLIC_DIR [--cc gcc] [--keep DIR]

XEN_PUBLIC_DIR is a checkout's `xen/include/public`. The script reads, from ../src/*.rs:

* every `layout_checks!` table (arch, C type, size, field offsets), and asserts the same
  numbers with `_Static_assert(sizeof / offsetof)` in C;
* every `pub const NAME: T = VALUE;`, and asserts VALUE against the C macro or enumerator
  whose name is NAME ignoring case (also tried: `XEN_NAME`, and `__HYPERVISOR_NAME` for
  hypercall numbers).

Rust field names map to C names by dropping a leading `r#`; fields named `_pad<digits>`
stand for implicit C padding and are only covered by the size check.

The headers are compiled four times with the host (x86_64) gcc:
  x86_64   as is;
  aarch64  with `__x86_64__` replaced by `__aarch64__` (both LP64, 8-byte aligned u64);
  arm32    `-m32 -malign-double` with `__i386__` replaced by `__arm__`: ILP32 with 8-byte
           aligned 64-bit integers, as in the ARM EABI.
  x86_32   `-m32`: the i386 ABI of 32-bit PVH guests (Xen's compat layouts; tables marked
           `x86_32`, in compat.rs).
The ARM runs are an emulation of the ARM ABI's alignment rules on an x86 compiler, not a
cross compiler; a few sanity asserts check the emulation (pointer size, u64 alignment).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")

HEADERS = [
    "xen.h", "errno.h", "features.h", "version.h", "sched.h", "vcpu.h", "memory.h",
    "event_channel.h", "grant_table.h", "hvm/hvm_op.h", "hvm/params.h",
    "io/console.h", "elfnote.h", "arch-x86/hvm/start_info.h",
]

BASE = ["-ffreestanding", "-fsyntax-only", "-std=gnu11", "-Wno-builtin-macro-redefined",
        "-D__XEN_INTERFACE_VERSION__=0x00041300"]
CONFIGS = {
    "x86_64": BASE,
    "aarch64": BASE + ["-U__x86_64__", "-U__amd64__", "-U__i386__", "-D__aarch64__"],
    "arm32": BASE + ["-m32", "-malign-double", "-U__i386__", "-U__x86_64__", "-D__arm__"],
    "x86_32": BASE + ["-m32"],
}
SANITY = {
    "x86_64": ["sizeof(void *) == 8", "sizeof(long) == 8"],
    "aarch64": ["sizeof(void *) == 8", "sizeof(xen_ulong_t) == 8", "XEN_LEGACY_MAX_VCPUS == 1"],
    "arm32": ["sizeof(void *) == 4", "sizeof(long) == 4", "sizeof(xen_ulong_t) == 8",
              "__builtin_offsetof(struct { char c; uint64_t x; }, x) == 8",
              "XEN_LEGACY_MAX_VCPUS == 1"],
    "x86_32": ["sizeof(void *) == 4", "sizeof(long) == 4", "sizeof(xen_ulong_t) == 4",
               "__builtin_offsetof(struct { char c; uint64_t x; }, x) == 4"],
}
ARCHES = {"all": ["x86_64", "aarch64", "arm32"], "x86": ["x86_64"], "arm": ["aarch64", "arm32"],
          "x86_32": ["x86_32"]}


def parse_layouts(text, fname):
    out = []
    for block in re.finditer(r"layout_checks!\s*\{(.*?)\n\}", text, re.S):
        body = re.sub(r"//[^\n]*", "", block.group(1))
        for m in re.finditer(
                r'(\w+)\s*,\s*"([^"]+)"\s*,\s*([^,]+?)\s*,\s*([0-9_]+)\s*,\s*\{(.*?)\}\s*;',
                body, re.S):
            arch, cty, rty, size, fields = m.groups()
            fl = []
            for f in re.finditer(r"(r#)?(\w+)\s*:\s*([0-9_]+)", fields):
                fl.append((f.group(2), int(f.group(3).replace("_", ""))))
            out.append((fname, arch, cty, rty.strip(), int(size.replace("_", "")), fl))
    return out


def rust_value(expr, known):
    e = re.sub(r"(?<=[0-9a-fA-F])_(?=[0-9a-fA-F])", "", expr.strip())
    e = re.sub(r"\b(\d+)(u8|u16|u32|u64|usize|i8|i16|i32|i64)\b", r"\1", e)
    e = re.sub(r"\bas\s+\w+", "", e)
    e = e.replace("!", "~")
    if re.search(r"[^\w\s()<>|&~+\-*]", e):
        return None

    def sub(m):
        name = m.group(0)
        if re.fullmatch(r"0[xX][0-9a-fA-F]+|\d+", name):
            return name
        if name in known:
            return "(%d)" % known[name]
        raise KeyError(name)
    try:
        e = re.sub(r"\b\w+\b", sub, e)
        return int(eval(e, {"__builtins__": {}}))
    except Exception:
        return None


def submodule_spans(text):
    """(start, end, arch) of `pub mod x86 { ... }` / `pub mod arm { ... }` blocks."""
    spans = []
    for m in re.finditer(r"\npub mod (x86|arm) \{\n", text):
        end = text.index("\n}\n", m.end())
        spans.append((m.start(), end, m.group(1)))
    return spans


def parse_consts(text, fname):
    out = []
    known = {}
    spans = submodule_spans(text)
    for m in re.finditer(r"pub const (\w+)\s*:\s*([^=]+?)\s*=\s*([^;]+);", text):
        name, ty, expr = m.groups()
        arch = "all"
        for a, b, sub in spans:
            if a <= m.start() < b:
                arch = sub
        v = rust_value(expr, known)
        if v is None:
            continue
        bits = {"u8": 8, "u16": 16, "u32": 32, "u64": 64, "usize": 64}.get(ty.strip())
        if bits and v < 0:
            v &= (1 << bits) - 1
        if bits:
            v &= (1 << bits) - 1
        if arch == "all":
            known[name] = v
        out.append((fname, name, v, arch))
    return out


def run(cc, flags, src, path):
    with open(path, "w") as f:
        f.write(src)
    return subprocess.run([cc] + flags + ["-I", os.path.dirname(path), path],
                          capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("public")
    ap.add_argument("--cc", default="gcc")
    ap.add_argument("--keep")
    a = ap.parse_args()
    pub = os.path.abspath(a.public)
    incl = "".join('#include "%s"\n' % os.path.join(pub, h) for h in HEADERS)
    prelude = "#include <stdint.h>\n#include <stddef.h>\n" + incl

    layouts, consts = [], []
    for fn in sorted(os.listdir(SRC)):
        if fn.endswith(".rs"):
            t = open(os.path.join(SRC, fn)).read()
            layouts += parse_layouts(t, fn)
            consts += parse_consts(t, fn)

    tmp = a.keep or tempfile.mkdtemp()
    os.makedirs(tmp, exist_ok=True)
    failed = False

    # Layouts.
    n_assert = 0
    for cfg, flags in CONFIGS.items():
        lines = [prelude]
        for s in SANITY[cfg]:
            lines.append('_Static_assert(%s, "sanity %s: %s");' % (s, cfg, s.replace('"', "")))
        for fname, arch, cty, rty, size, fields in layouts:
            if cfg not in ARCHES[arch]:
                continue
            lines.append('_Static_assert(sizeof(%s) == %d, "%s: sizeof %s");' % (cty, size, fname, cty))
            n_assert += 1
            for f, off in fields:
                if re.fullmatch(r"_pad\d+", f):
                    continue
                lines.append('_Static_assert(__builtin_offsetof(%s, %s) == %d, "%s: offsetof %s.%s");'
                             % (cty, f, off, fname, cty, f))
                n_assert += 1
        r = run(a.cc, flags, "\n".join(lines) + "\n", os.path.join(tmp, "layout_%s.c" % cfg))
        if r.returncode != 0:
            failed = True
            print("== layout check FAILED for %s\n%s" % (cfg, r.stderr))
        else:
            print("layout %-8s ok" % cfg)
    print("%d structs, %d sizeof/offsetof assertions over all configurations: %s"
          % (len(layouts), n_assert, "FAILED (see above)" if failed else "all passed"))

    # Constants: look names up among the macros of each configuration (and of a
    # __XEN_TOOLS__ build, which exposes toolstack-only numbers).
    macro_sets = {}
    nover = [x for x in BASE if not x.startswith("-D__XEN_INTERFACE")]
    extra = [
        # Toolstack- and hypervisor-only numbers.
        ("x86_64+tools", nover + ["-D__XEN_TOOLS__"]),
        ("aarch64+tools", [x for x in CONFIGS["aarch64"] if x in nover or not x.startswith("-D__XEN_I")]
         + ["-D__XEN_TOOLS__"]),
        ("x86_64+xen", nover + ["-D__XEN__"]),
        # Numbers only the legacy (interface version 0) view defines; consulted last.
        ("x86_64+legacy", nover),
    ]
    for cfg, flags in list(CONFIGS.items()) + extra:
        path = os.path.join(tmp, "macros_%s.c" % cfg.replace("+", "_"))
        with open(path, "w") as f:
            f.write(prelude)
        r = subprocess.run([a.cc] + [x for x in flags if x != "-fsyntax-only"] + ["-E", "-dM", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print("macro dump failed for", cfg, r.stderr[:2000])
            failed = True
            continue
        names = set()
        for line in r.stdout.splitlines():
            m = re.match(r"#define (\w+)(\(?)", line)
            if m and not m.group(2):
                names.add(m.group(1))
        macro_sets[cfg] = (flags, names)

    header_text = ""
    for root, _, files in os.walk(pub):
        for f in files:
            if f.endswith(".h"):
                header_text += open(os.path.join(root, f), errors="replace").read()
    enumerators = set(re.findall(r"^\s*(HVMMEM_\w+|XENMEM_access_\w+)\b", header_text, re.M))
    enumerators |= {"XEN_" + e for e in re.findall(r"^XEN_ERRNO\((\w+),", header_text, re.M)}

    checked, unmatched = 0, []
    per_cfg = {cfg: [] for cfg in macro_sets}
    enum_checks = []
    for fname, name, v, arch in consts:
        cands = [name, "XEN_" + name]
        if fname == "hypercall.rs":
            cands.append("__HYPERVISOR_" + name)
        found = False
        for cfg, (flags, names) in macro_sets.items():
            if cfg.split("+")[0] not in ARCHES[arch]:
                continue
            if cfg.endswith("+legacy") and found:
                continue  # the legacy view only serves names newer interfaces dropped
            upper = {}
            for n in names:
                upper.setdefault(n.upper(), []).append(n)
            for c in cands:
                hits = upper.get(c.upper(), [])
                if len(hits) == 1:
                    per_cfg[cfg].append((fname, name, hits[0], v))
                    found = True
                    break
        if not found:
            hits = [e for e in enumerators if e.upper() in (name.upper(), "XEN_" + name.upper())]
            if len(hits) == 1:
                enum_checks.append((fname, name, hits[0], v))
                found = True
        if found:
            checked += 1
        else:
            unmatched.append("%s::%s" % (fname[:-3], name))

    def expr(cname, v):
        if v < 0:
            return "(long long)(%s) == %dLL" % (cname, v)
        return "(unsigned long long)(%s) == %dULL" % (cname, v)

    for cfg, items in per_cfg.items():
        flags, _ = macro_sets[cfg]
        lines = [prelude]
        for fname, name, cname, v in items:
            lines.append('_Static_assert(%s, "%s: %s != %s");' % (expr(cname, v), fname, name, cname))
        if cfg == "x86_64+xen":
            for fname, name, cname, v in enum_checks:
                lines.append('_Static_assert(%s, "%s: %s != %s");' % (expr(cname, v), fname, name, cname))
        r = run(a.cc, flags, "\n".join(lines) + "\n", os.path.join(tmp, "consts_%s.c" % cfg.replace("+", "_")))
        if r.returncode != 0:
            failed = True
            print("== constant check FAILED for %s\n%s" % (cfg, r.stderr))
    print("%d of %d Rust constants matched a C macro/enumerator and were checked%s"
          % (checked, len(consts), "" if not failed else " (see failures above)"))
    if unmatched:
        print("no C counterpart found (not checked):", ", ".join(unmatched))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
