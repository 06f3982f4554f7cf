//! `cargo xtask bench`: boot the `bench` test guest under deterministic time, read its
//! `BENCH <name> <unit>=<value>` lines, compare them with real Xen's figures and write them to
//! `target/xtask/bench.json`.
//!
//! aarch64 runs under QEMU `-icount shift=0,sleep=off`, smp 1: one guest instruction is one
//! virtual nanosecond, so the guest's `ns_per_op` is instructions per round trip, exact and
//! repeatable, and directly comparable with Xen 4.17's measured under the same QEMU
//! (docs: /work/shared/spec/benchmarks.md). x86_64 runs on QEMU's TCG (AMD-V backend) with
//! icount too and reports TSC cycles per round trip, without a reference.

use crate::RunArgs;
use crate::arch::Arch;
use crate::build::{self, target_dir};
use crate::emulator::{self, Boot, Echo, Guest};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;

/// Real Xen 4.17 arm64 under the same QEMU icount, instructions per round trip
/// (`benchmarks.md`, "hypercall round trip").
/// The interdomain and FIFO figures: the same bench guest on Xen 4.17 under the same QEMU
/// icount (`cargo xtask run --arch aarch64 --hypervisor xen --guest bench --icount --smp 1`,
/// 2026-12-06; Xen caps a dom0less domU at 1023 ports, so it has no 100 000-port figure).
/// The grant figures and the two-domain round trip: the same, 2026-12-06 (the round trip
/// with `--config qemu/configs/bench-pair.dts` instead of `--guest bench`).
const XEN_AARCH64: [(&str, f64); 10] = [
    ("xen_version", 417.0),
    ("sched_yield", 2112.0),
    ("evtchn_send", 817.0),
    ("gicd_typer_read", 611.0),
    ("evtchn_send_interdomain", 822.2),
    ("fifo_send_consume_10", 1159.2),
    ("fifo_send_consume_1000", 1162.2),
    ("grant_map_unmap", 5141.1),
    ("grant_copy_4k", 3657.9),
    ("evtchn_roundtrip_interdomain", 9449.3),
];

/// One figure the guest printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    /// The JSON unit: `ns` (icount: guest instructions) or `tsc-cycles`.
    pub unit: &'static str,
    pub value: f64,
}

/// Boot `guest` under the bench settings; its console once it printed `done` and every
/// domain powered off (saved to `log` either way).
fn boot_bench(
    arch: Arch,
    built: &build::Built,
    args: &RunArgs,
    guest: Guest,
    done: &str,
    log: &std::path::Path,
) -> Result<String> {
    let boot = Boot { arch, built, guest, args: args.clone() };
    let out = emulator::boot(&boot, Echo::Quiet)?;
    std::fs::write(log, &out.console)?;
    if let Some(fail) = out.console.lines().find(|l| l.contains("FAIL")) {
        bail!("the bench guest failed: `{}` (console: {})", fail.trim(), log.display());
    }
    if !out.console.contains(done) || out.status != Some(0) {
        bail!("the bench guest did not finish: {} (console: {})", out.summary(), log.display());
    }
    Ok(out.console)
}

pub fn run(arch: Option<Arch>, timeout: u64) -> Result<i32> {
    let arch = arch.unwrap_or(Arch::Aarch64);
    if arch == Arch::Armv7 {
        bail!("the bench guest measures aarch64 and x86_64 only");
    }
    let command = format!("cargo xtask bench --arch {}", arch.name());
    let mut needs = crate::prereq::Needs::default();
    crate::prereq::ensure(needs.boot(arch, crate::prereq::X86Emulator::Qemu))?;
    let built = build::hypervisor_and_guests(arch)?;
    let args = RunArgs {
        arch,
        kernel: None,
        initrd: None,
        append: None,
        config: None,
        smp: 1,
        icount: true,
        guest: Some("bench".into()),
        timeout,
        // x86: QEMU's TCG (deterministic under icount), never KVM.
        emulator: Some(crate::qemu_x86::Emulator::QemuTcg),
        guest_arch: None,
        hypervisor: crate::xen::Hypervisor::Xhv,
    };
    let logs = target_dir().join("xtask/logs");
    std::fs::create_dir_all(&logs)?;
    eprintln!("xtask: booting the bench guest ({command})");
    let alone = Guest::Loader { kernel: built.guest("bench")? };
    let console =
        boot_bench(arch, &built, &args, alone, "BENCH-DONE", &logs.join(format!("bench-{}.log", arch.name())))?;
    eprintln!("xtask: booting it twice from qemu/configs/bench-pair.dts (two domains on one CPU)");
    let pair_log = logs.join(format!("bench-pair-{}.log", arch.name()));
    let pair = emulator::configured(&built, &args, &build::workspace_root().join("qemu/configs/bench-pair.dts"))?;
    let pair_console = boot_bench(arch, &built, &args, pair, "BENCH-PAIR-DONE", &pair_log)?;
    let log = logs.join(format!("bench-{}.log", arch.name()));
    let out_console = console + &pair_console;
    let figures = parse(&out_console);
    if figures.is_empty() {
        bail!("the bench guest printed no BENCH lines (console: {})", log.display());
    }
    let json = to_json(arch, &figures, &command);
    let path = target_dir().join("xtask/bench.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    print!("{}", table(arch, &figures));
    eprintln!("xtask: wrote {} (console: {})", path.display(), log.display());
    Ok(0)
}

/// The `BENCH <name> <key>=<value> ...` lines of a console (the hypervisor prefixes guest
/// output with `(d1) `); the first key names the unit.
pub fn parse(console: &str) -> Vec<Figure> {
    console
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find("BENCH ")? + "BENCH ".len()..];
            let mut words = rest.split_whitespace();
            let name = words.next()?;
            let (key, value) = words.next()?.split_once('=')?;
            let unit = match key {
                "ns_per_op" => "ns",
                "cycles_per_op" => "tsc-cycles",
                _ => return None,
            };
            Some(Figure { name: name.to_string(), unit, value: value.parse().ok()? })
        })
        .collect()
}

fn reference(arch: Arch, name: &str) -> Option<f64> {
    if arch != Arch::Aarch64 {
        return None;
    }
    XEN_AARCH64.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// `[{name, arch, unit, value, reference, command}, ...]`, one object per figure.
pub fn to_json(arch: Arch, figures: &[Figure], command: &str) -> String {
    let mut s = String::from("[\n");
    for (i, f) in figures.iter().enumerate() {
        let reference = reference(arch, &f.name).map_or("null".to_string(), |r| format!("{r}"));
        let _ = write!(
            s,
            "  {{\"name\": {}, \"arch\": {}, \"unit\": {}, \"value\": {}, \"reference\": {}, \"command\": {}}}",
            json_str(&f.name),
            json_str(arch.name()),
            json_str(f.unit),
            f.value,
            reference,
            json_str(command)
        );
        s += if i + 1 < figures.len() { ",\n" } else { "\n" };
    }
    s + "]\n"
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out + "\""
}

/// figure, ours, Xen, ratio (ours / Xen: below 1 is faster than Xen).
fn table(arch: Arch, figures: &[Figure]) -> String {
    let mut s = format!("{:<40} {:>16} {:>8} {:>7}\n", "figure", "ours", "Xen", "ratio");
    for f in figures {
        let ours = format!("{:.1} {}", f.value, f.unit);
        let (xen, ratio) = match reference(arch, &f.name) {
            Some(r) => (format!("{r:.0}"), format!("{:.2}", f.value / r)),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(s, "{:<40} {:>16} {:>8} {:>7}", format!("{} ({})", f.name, arch.name()), ours, xen, ratio);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "(XEN) xhv starting\n\
        (d1) BENCH xen_version ns_per_op=301.5 ticks=188437 cntfrq=62500000 n=10000\n\
        (d1) BENCH gicd_typer_read ns_per_op=500.0 ticks=1 cntfrq=1 n=1\n\
        (d1) BENCH-DONE\n";

    #[test]
    fn parses_bench_lines_only() {
        let f = parse(CONSOLE);
        assert_eq!(
            f,
            [
                Figure { name: "xen_version".into(), unit: "ns", value: 301.5 },
                Figure { name: "gicd_typer_read".into(), unit: "ns", value: 500.0 },
            ]
        );
        let x86 = parse("(d1) BENCH sched_yield cycles_per_op=1234.0 cycles=1 n=1\n");
        assert_eq!(x86, [Figure { name: "sched_yield".into(), unit: "tsc-cycles", value: 1234.0 }]);
    }

    #[test]
    fn json_has_one_object_per_figure_with_references() {
        let json = to_json(Arch::Aarch64, &parse(CONSOLE), "cargo xtask bench --arch aarch64");
        assert!(json.contains(
            "{\"name\": \"xen_version\", \"arch\": \"aarch64\", \"unit\": \"ns\", \"value\": 301.5, \
             \"reference\": 417, \"command\": \"cargo xtask bench --arch aarch64\"}"
        ));
        assert!(json.contains("\"reference\": 611"));
        assert_eq!(json.matches("\"name\"").count(), 2);
        let x86 = to_json(Arch::X86_64, &parse(CONSOLE), "c");
        assert!(x86.contains("\"reference\": null"));
        assert_eq!(json_str("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
    }
}
