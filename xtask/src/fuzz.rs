//! `cargo xtask fuzz`: a hypercall fuzzing campaign in the `fuzz` guest, and the pieces the
//! `fuzz-*` test scenarios share with it (the guest's command line, the two-domain
//! configuration, the verdict).
//!
//! The guest prints `FUZZ seed=<s> calls=<n>` first, so one command replays a failure:
//! `cargo xtask fuzz --arch A --calls N --seed S` (add `--trace-from I` to see each call
//! from the I-th on).

use crate::RunArgs;
use crate::arch::Arch;
use crate::build::{self, Built, workspace_root};
use crate::emulator::{self, Boot, Echo, Guest, Outcome};
use crate::qemu_x86::Emulator;
use anyhow::{Context, Result, ensure};
use std::path::PathBuf;

/// The dom0less configuration of the two-domain run: a fuzzer and a canary holder.
pub const TWO_DOMAIN_CONFIG: &str = "fuzz-two-domains.dts";
/// What the configuration's fuzzer command line says, replaced by the campaign's own.
const CONFIG_FUZZ_ARGS: &str = "fuzz.seed=1 fuzz.calls=100000";

#[derive(clap::Args, Clone)]
pub struct FuzzArgs {
    #[arg(long, value_enum, default_value_t = Arch::host())]
    pub arch: Arch,
    /// x86_64 only: QEMU (AMD-V, the default) or Bochs (VT-x).
    #[arg(long, value_enum)]
    pub emulator: Option<Emulator>,
    /// Hypercalls to make.
    #[arg(long, default_value_t = 100_000)]
    pub calls: u64,
    /// PRNG seed (a campaign is replayed exactly by its seed and call count).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print every call from this index on (to find the one that breaks the hypervisor).
    #[arg(long)]
    pub trace_from: Option<u64>,
    /// aarch64: run beside a second domain holding a canary page (qemu/configs/fuzz-two-domains.dts).
    #[arg(long)]
    pub two_domains: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// The fuzz guest's command line.
pub fn guest_args(seed: u64, calls: u64, trace_from: Option<u64>) -> String {
    let mut s = format!("fuzz.seed={seed} fuzz.calls={calls}");
    if let Some(i) = trace_from {
        s += &format!(" fuzz.trace={i}");
    }
    s
}

/// Prepare the boot of the fuzz guest with `append` as its command line: one domain, or the
/// fuzzer beside a canary holder (aarch64).
pub fn guest(built: &Built, args: &mut RunArgs, two_domains: bool) -> Result<Guest> {
    let append = args.append.clone().unwrap_or_default();
    if !two_domains {
        args.guest = Some("fuzz".into());
        return Ok(Guest::Loader { kernel: built.guest("fuzz")? });
    }
    ensure!(args.arch == Arch::Aarch64, "the two-domain fuzz run is an aarch64 dom0less configuration");
    let config = two_domain_config(built, &append)?;
    Ok(Guest::Dom0less(emulator::configured_domus(built, args, &config)?))
}

/// `qemu/configs/fuzz-two-domains.dts` with the campaign's command line, next to a link
/// named as its image (`fuzz.bin`) pointing at the built guest.
fn two_domain_config(built: &Built, fuzz_args: &str) -> Result<PathBuf> {
    let dir = built.run_dir.join("fuzz-config");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("fuzz.bin");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(built.guest("fuzz")?, &link)?;
    let source = workspace_root().join("qemu/configs").join(TWO_DOMAIN_CONFIG);
    let text = std::fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
    ensure!(text.contains(CONFIG_FUZZ_ARGS), "{} no longer says `{CONFIG_FUZZ_ARGS}`", source.display());
    let config = dir.join(TWO_DOMAIN_CONFIG);
    std::fs::write(&config, text.replace(CONFIG_FUZZ_ARGS, fuzz_args))?;
    Ok(config)
}

/// Why a campaign's console and exit status say it failed, if they do.
pub fn verdict(out: &Outcome, calls: u64, two_domains: bool) -> Result<(), String> {
    let console = &out.console;
    let bad = ["PANIC", "FUZZ-FAIL", "guest fault", "domain crashed"];
    if let Some(line) = console.lines().find(|l| bad.iter().any(|b| l.contains(b))) {
        return Err(format!("console shows `{}`", line.trim()));
    }
    let done = format!("(d1) FUZZ-DONE calls={calls} canary=intact");
    if !console.contains(&done) {
        return Err(format!("console never showed `{done}`; {}", out.summary()));
    }
    if two_domains && !console.lines().any(|l| l.contains("(d2) FUZZ-HOLD-DONE") && l.ends_with("canary=intact")) {
        return Err("the canary holder (d2) never reported its canary intact".into());
    }
    match out.status {
        Some(0) => Ok(()),
        _ => Err(out.summary()),
    }
}

pub fn run(a: &FuzzArgs) -> Result<i32> {
    let built = build::hypervisor_and_guests(a.arch)?;
    let mut args = RunArgs {
        arch: a.arch,
        kernel: None,
        initrd: None,
        append: Some(guest_args(a.seed, a.calls, a.trace_from)),
        config: None,
        smp: 1,
        gic: None,
        icount: false,
        guest: None,
        timeout: a.timeout,
        emulator: a.emulator,
        guest_arch: None,
        board: None,
        firmware: None,
        hypervisor: crate::xen::Hypervisor::Xhv,
    };
    let guest = guest(&built, &mut args, a.two_domains)?;
    eprintln!(
        "xtask: fuzz campaign on {}{}: seed {} calls {}",
        a.arch.name(),
        a.emulator.map(|e| format!(" ({e:?})")).unwrap_or_default(),
        a.seed,
        a.calls
    );
    let boot = Boot { arch: a.arch, built: &built, guest, args };
    let out = emulator::boot(&boot, Echo::Stream)?;
    let secs = out.elapsed.as_secs_f64();
    // Kept after the run (the run directory is not): one file per campaign.
    let dir = build::target_dir().join("xtask/fuzz");
    std::fs::create_dir_all(&dir)?;
    let emulator = a.emulator.map(|e| format!("-{e:?}").to_lowercase()).unwrap_or_default();
    let log = dir.join(format!("{}{emulator}-seed{}-calls{}.log", a.arch.name(), a.seed, a.calls));
    let _ = std::fs::write(&log, &out.console);
    match verdict(&out, a.calls, a.two_domains) {
        Ok(()) => {
            eprintln!(
                "xtask: fuzz PASS: {} calls, seed {}, {:.1} s ({:.0} calls/s); console: {}",
                a.calls,
                a.seed,
                secs,
                a.calls as f64 / secs,
                log.display()
            );
            Ok(0)
        }
        Err(why) => {
            eprintln!("xtask: fuzz FAIL (seed {}, calls {}): {why}; console: {}", a.seed, a.calls, log.display());
            Ok(1)
        }
    }
}
