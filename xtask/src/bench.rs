//! `cargo xtask bench`: boot the `bench` test guest under deterministic time, read its
//! `BENCH <name> <unit>=<value>` lines, compare them with real Xen's figures and write them to
//! `target/xtask/bench.json`.
//!
//! Three boots: the guest alone, two domains of it (bench-pair.dts: an event's round trip),
//! one domain of two vCPUs (bench-smp2.dts: yielding between them). ARM runs under QEMU
//! `-icount shift=0,sleep=off`: one guest instruction is one virtual nanosecond, so the
//! guest's `ns_per_op` is instructions per round trip, exact and repeatable, and directly
//! comparable with Xen 4.17's measured under the same QEMU (docs:
//! /work/shared/spec/benchmarks.md; `--against xen` measures them in the same run). x86_64
//! runs on QEMU's TCG (AMD-V backend) with icount too and reports TSC cycles per round trip,
//! without a reference.

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
const XEN_AARCH64: [(&str, f64); 11] = [
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
    // `--config qemu/configs/bench-smp2.dts --smp 1` (both vCPUs on one pCPU), measured by
    // `--against xen` on 2026-12-06.
    ("vcpu_switch_yield", 7760.0),
];

/// One figure the guest printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    /// The JSON unit: `instructions` (QEMU icount) or `tsc-cycles`.
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

pub fn run(
    arch: Option<Arch>,
    timeout: u64,
    against_xen: bool,
    emulator: Option<crate::qemu_x86::Emulator>,
) -> Result<i32> {
    use crate::qemu_x86::Emulator;
    let arch = arch.unwrap_or(Arch::Aarch64);
    if against_xen && arch != Arch::Aarch64 {
        bail!("--against xen: the reference Xen (Debian's 4.17) runs on arm64 only");
    }
    let bochs = emulator == Some(Emulator::Bochs);
    if emulator.is_some() && arch != Arch::X86_64 {
        bail!("--emulator chooses the x86_64 backend; ARM benches run in QEMU under icount");
    }
    let command = format!("cargo xtask bench --arch {}{}", arch.name(), if bochs { " --emulator bochs" } else { "" });
    let mut needs = crate::prereq::Needs::default();
    let x86_emulator = if bochs { crate::prereq::X86Emulator::Bochs } else { crate::prereq::X86Emulator::Qemu };
    crate::prereq::ensure(needs.boot(arch, x86_emulator))?;
    let built = build::hypervisor_and_guests(arch)?;
    let args = RunArgs {
        // Bochs has no icount: its clock follows its own instruction count.
        icount: !bochs,
        guest: Some("bench".into()),
        // x86: QEMU's TCG (deterministic under icount), never KVM; or Bochs for VT-x.
        emulator: Some(if bochs { Emulator::Bochs } else { Emulator::QemuTcg }),
        ..RunArgs::one_cpu(arch, timeout)
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
    eprintln!("xtask: booting it as one domain of two vCPUs from qemu/configs/bench-smp2.dts");
    // One pCPU (the host's CPU count is `smp`): the two vCPUs take turns on it. With two,
    // an SMP host runs them side by side and nothing is switched.
    let smp2_args = RunArgs { smp: 1, ..args.clone() };
    let smp2 = emulator::configured(&built, &smp2_args, &build::workspace_root().join("qemu/configs/bench-smp2.dts"))?;
    let smp2_log = logs.join(format!("bench-smp2-{}.log", arch.name()));
    let smp2_console = boot_bench(arch, &built, &smp2_args, smp2, "BENCH-SWITCH-DONE", &smp2_log)?;
    let log = logs.join(format!("bench-{}.log", arch.name()));
    let build = domain_build(&console);
    let out_console = console + &pair_console + &smp2_console;
    let mut figures = parse(&out_console);
    // In instructions only under icount.
    if !bochs {
        figures.extend(build);
    }
    if figures.is_empty() {
        bail!("the bench guest printed no BENCH lines (console: {})", log.display());
    }
    let live = if against_xen { Some(on_xen(&built, &args, &logs)?) } else { None };
    let refs = References { arch, live: live.as_ref() };
    let json = to_json(&refs, &figures, &command);
    let path = target_dir().join("xtask/bench.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    print!("{}", table(&refs, &figures));
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
                // Under `-icount shift=0` a virtual nanosecond is one guest instruction.
                "ns_per_op" => "instructions",
                "cycles_per_op" => "tsc-cycles",
                _ => return None,
            };
            Some(Figure { name: name.to_string(), unit, value: value.parse().ok()? })
        })
        .collect()
}

/// How long the hypervisor took to build the bench domain, from its `d1: built in <ms> ms`
/// line: under `-icount shift=0` a virtual millisecond is a million guest instructions (on
/// x86 too: the TSC follows QEMU's virtual clock).
pub fn domain_build(console: &str) -> Option<Figure> {
    let line = console.lines().find(|l| l.contains("(XEN) d1: built in "))?;
    let rest = &line[line.find("built in ")? + "built in ".len()..];
    let ms: f64 = rest.split_whitespace().next()?.trim_end_matches("ms").parse().ok()?;
    Some(Figure { name: "domain_build".into(), unit: "instructions", value: (ms * 1e6).round() })
}

/// The commands that give Xen's figures for the same guests, as `--against xen` runs them.
const XEN_COMMANDS: [&str; 3] = [
    "cargo xtask run --arch aarch64 --hypervisor xen --guest bench --icount --smp 1",
    "cargo xtask run --arch aarch64 --hypervisor xen --config qemu/configs/bench-pair.dts --icount --smp 1",
    "cargo xtask run --arch aarch64 --hypervisor xen --config qemu/configs/bench-smp2.dts --icount --smp 1",
];

/// Where Xen's figure for a benchmark comes from: this run's own boot on Xen (`--against
/// xen`), else the figures recorded in [`XEN_AARCH64`].
pub struct References<'a> {
    pub arch: Arch,
    pub live: Option<&'a Vec<Figure>>,
}

impl References<'_> {
    fn of(&self, name: &str) -> Option<f64> {
        if self.arch != Arch::Aarch64 {
            return None;
        }
        match self.live {
            Some(live) => live.iter().find(|f| f.name == name).map(|f| f.value),
            None => XEN_AARCH64.iter().find(|(n, _)| *n == name).map(|&(_, v)| v),
        }
    }

    fn source(&self) -> &'static str {
        if self.live.is_some() { "measured in this run" } else { "recorded" }
    }
}

/// Boot the bench guests on Xen 4.17 under the same QEMU settings; their figures. Xen idles
/// once its domains are done, so each boot stops on the guest's last line.
fn on_xen(built: &build::Built, args: &RunArgs, logs: &std::path::Path) -> Result<Vec<Figure>> {
    let xen_args = RunArgs { hypervisor: crate::xen::Hypervisor::Xen, ..args.clone() };
    eprintln!("xtask: booting the same guests on Xen 4.17 ({})", XEN_COMMANDS[0]);
    let mut console = String::new();
    let boots = [(None, "BENCH-DONE", "bench-xen"), (Some("bench-pair.dts"), "BENCH-PAIR-DONE", "bench-pair-xen")];
    let boots = boots.into_iter().chain([(Some("bench-smp2.dts"), "BENCH-SWITCH-DONE", "bench-smp2-xen")]);
    for (config, done, name) in boots {
        // Each boot writes the run's boot DTB: prepare it just before booting.
        let guest = match config {
            Some(file) => {
                emulator::configured(built, &xen_args, &build::workspace_root().join("qemu/configs").join(file))?
            }
            None => Guest::Dom0less(emulator::single_domu(built, &xen_args, &built.guest("bench")?)?),
        };
        let boot = Boot { arch: Arch::Aarch64, built, guest, args: xen_args.clone() };
        let out = emulator::boot_until(&boot, Echo::Quiet, &|c: &str| c.contains(done))?;
        let log = logs.join(format!("{name}-aarch64.log"));
        std::fs::write(&log, &out.console)?;
        if !out.console.contains(done) {
            bail!("the bench guest did not finish on Xen: {} (console: {})", out.summary(), log.display());
        }
        console += &out.console;
    }
    Ok(parse(&console))
}

/// `[{name, arch, unit, value, reference, reference_source, command, reference_command}, ...]`,
/// one object per figure.
pub fn to_json(refs: &References, figures: &[Figure], command: &str) -> String {
    let mut s = String::from("[\n");
    for (i, f) in figures.iter().enumerate() {
        let reference = refs.of(&f.name).map_or("null".to_string(), |r| format!("{r}"));
        let xen_command = match f.name.as_str() {
            "evtchn_roundtrip_interdomain" => XEN_COMMANDS[1],
            "vcpu_switch_yield" => XEN_COMMANDS[2],
            _ => XEN_COMMANDS[0],
        };
        let _ = write!(
            s,
            "  {{\"name\": {}, \"arch\": {}, \"unit\": {}, \"value\": {}, \"reference\": {}, \"reference_source\": {}, \"command\": {}, \"reference_command\": {}}}",
            json_str(&f.name),
            json_str(refs.arch.name()),
            json_str(f.unit),
            f.value,
            reference,
            json_str(refs.source()),
            json_str(command),
            json_str(xen_command)
        );
        s += if i + 1 < figures.len() { ",\n" } else { "\n" };
    }
    s + "]\n"
}

/// `s` as a JSON string literal (also for `xtf`'s results).
pub(crate) fn json_str(s: &str) -> String {
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
fn table(refs: &References, figures: &[Figure]) -> String {
    let mut s = format!("{:<40} {:>22} {:>8} {:>7}   (Xen: {})\n", "figure", "ours", "Xen", "ratio", refs.source());
    for f in figures {
        let ours = format!("{:.1} {}", f.value, f.unit);
        let (xen, ratio) = match refs.of(&f.name) {
            Some(r) => (format!("{r:.0}"), format!("{:.2}", f.value / r)),
            None => ("-".into(), "-".into()),
        };
        let _ =
            writeln!(s, "{:<40} {:>22} {:>8} {:>7}", format!("{} ({})", f.name, refs.arch.name()), ours, xen, ratio);
    }
    s
}

/// `cargo xtask bench --sched`: the host benchmark of one scheduling decision per policy
/// (`hypervisor/examples/sched_bench.rs`, release build), its lines as it prints them.
pub fn sched_host() -> Result<i32> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(build::workspace_root())
        .args(["run", "--quiet", "--release", "-p", "hypervisor", "--example", "sched_bench"])
        .status()?;
    Ok(status.code().unwrap_or(1))
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
                Figure { name: "xen_version".into(), unit: "instructions", value: 301.5 },
                Figure { name: "gicd_typer_read".into(), unit: "instructions", value: 500.0 },
            ]
        );
        let x86 = parse("(d1) BENCH sched_yield cycles_per_op=1234.0 cycles=1 n=1\n");
        assert_eq!(x86, [Figure { name: "sched_yield".into(), unit: "tsc-cycles", value: 1234.0 }]);
    }

    #[test]
    fn the_domain_build_time_is_read_from_the_hypervisor_log() {
        let console = "(XEN) d1: entry 0x40008000\n\
            (XEN) d1: built in 42.278 ms; hypervisor memory beyond its RAM: 117 KiB\n";
        assert_eq!(
            domain_build(console),
            Some(Figure { name: "domain_build".into(), unit: "instructions", value: 42_278_000.0 })
        );
        assert_eq!(domain_build(CONSOLE), None);
    }

    #[test]
    fn json_has_one_object_per_figure_with_references() {
        let recorded = References { arch: Arch::Aarch64, live: None };
        let json = to_json(&recorded, &parse(CONSOLE), "cargo xtask bench --arch aarch64");
        assert!(json.contains(
            "{\"name\": \"xen_version\", \"arch\": \"aarch64\", \"unit\": \"instructions\", \"value\": 301.5, \
             \"reference\": 417, \"reference_source\": \"recorded\", \"command\": \"cargo xtask bench --arch aarch64\", \
             \"reference_command\": \"cargo xtask run --arch aarch64 --hypervisor xen --guest bench --icount --smp 1\"}"
        ));
        assert!(json.contains("\"reference\": 611"));
        assert_eq!(json.matches("\"name\"").count(), 2);
        let x86 = to_json(&References { arch: Arch::X86_64, live: None }, &parse(CONSOLE), "c");
        assert!(x86.contains("\"reference\": null"));
        assert_eq!(json_str("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
        // Measured in the same run: those values win, and a figure Xen lacks has none.
        let live = vec![Figure { name: "xen_version".into(), unit: "instructions", value: 420.0 }];
        let measured = References { arch: Arch::Aarch64, live: Some(&live) };
        let json = to_json(&measured, &parse(CONSOLE), "c");
        assert!(json.contains("\"value\": 301.5, \"reference\": 420, \"reference_source\": \"measured in this run\""));
        assert!(json.contains("\"value\": 500, \"reference\": null"));
    }
}
