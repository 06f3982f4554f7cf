//! Building the hypervisor and the test guests for a target, and finding the results.

use crate::arch::Arch;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The test guests of `qemu/guests/hello`, one binary per scenario.
pub const GUESTS: [&str; 17] = [
    "hello",
    "enosys",
    "guest-fault",
    "vgic",
    "vendor-probe",
    "bad-hypercalls",
    "hypercall-page",
    "bench",
    "simd-isolation",
    "smp-parallel",
    "fuzz",
    "evtchn-pingpong",
    "evtchn-limits",
    "grant-copy",
    "grant-ring",
    "evtchn-scale",
    "sched-probe",
];

/// What a build produced for one architecture.
pub struct Built {
    pub arch: Arch,
    /// The image the emulator boots (flat binary on ARM, ELF on x86).
    pub hypervisor: PathBuf,
    /// Where the guests and other per-arch artefacts are.
    pub out_dir: PathBuf,
    /// This process's own directory for what one boot writes (ISO, DTBs, serial log), so that
    /// concurrent runs and tests in one checkout never share a file.
    pub run_dir: PathBuf,
}

impl Built {
    /// The bootable image of a built-in test guest.
    pub fn guest(&self, name: &str) -> Result<PathBuf> {
        if !GUESTS.contains(&name) {
            bail!("unknown test guest `{name}` (have: {})", GUESTS.join(", "));
        }
        Ok(self.out_dir.join(self.image_name(name)))
    }

    /// An image a boot configuration names: the file if there is one, else, when the name
    /// is a built-in test guest's (`xen,uefi-binary = "evtchn-pingpong"`), that guest built
    /// for this architecture, so one configuration serves every architecture.
    pub fn config_image(&self, path: &Path) -> Result<PathBuf> {
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if GUESTS.contains(&name) {
            return self.guest(name);
        }
        bail!("{} not found (and `{name}` is not a built-in test guest)", path.display())
    }

    fn image_name(&self, name: &str) -> String {
        if self.arch.flat_binary() { format!("{name}.bin") } else { format!("{name}.elf") }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// Build everything one architecture needs to boot and copy it into `target/xtask/<arch>`.
pub fn hypervisor_and_guests(arch: Arch) -> Result<Built> {
    eprintln!("xtask: building the hypervisor and test guests for {}", arch.name());
    cargo_build(arch.hypervisor_target(), &["-p", "hypervisor"])?;
    cargo_build(arch.target(), &["-p", "hello-guest", "--bins"])?;
    let elf_dir = target_dir().join(arch.target()).join("release");
    let out_dir = target_dir().join("xtask").join(arch.name());
    std::fs::create_dir_all(&out_dir)?;
    let built = Built {
        arch,
        hypervisor: out_dir.join(if arch.flat_binary() { "hypervisor.bin" } else { "hypervisor.elf" }),
        out_dir,
        run_dir: run_dir(arch)?,
    };
    let hypervisor_elf = target_dir().join(arch.hypervisor_target()).join("release/hypervisor");
    export(arch, &hypervisor_elf, &built.hypervisor)?;
    for g in GUESTS {
        export(arch, &elf_dir.join(g), &built.guest(g)?)?;
    }
    Ok(built)
}

/// The ARMv7 hypervisor linked at `link_base` (a board's RAM base + 0x10000: ARMv7 images
/// cannot relocate themselves), as a flat binary next to the default one. The next default
/// build links the default image again.
pub fn armv7_image_at(link_base: u64) -> Result<PathBuf> {
    let arch = Arch::Armv7;
    let target = arch.hypervisor_target();
    cargo_build_env(target, &["-p", "hypervisor"], &[("XHV_ARMV7_LINK_BASE", format!("{link_base:#x}"))])?;
    let elf = target_dir().join(target).join("release/hypervisor");
    let out = target_dir().join("xtask").join(arch.name()).join(format!("hypervisor-{link_base:x}.bin"));
    export(arch, &elf, &out)?;
    Ok(out)
}

fn cargo_build(target: &str, what: &[&str]) -> Result<()> {
    cargo_build_env(target, what, &[])
}

fn cargo_build_env(target: &str, what: &[&str], env: &[(&str, String)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .env_remove("XHV_ARMV7_LINK_BASE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["build", "--release", "--target", target])
        .args(what)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build {} for {} failed", what.join(" "), target);
    }
    Ok(())
}

/// ARM images become flat binaries; x86 ELF files are copied as they are. The result replaces
/// `out` in one step: a concurrent run that is reading the old image keeps reading it whole.
fn export(arch: Arch, elf: &Path, out: &Path) -> Result<()> {
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    if arch.flat_binary() {
        let status = Command::new(objcopy()?)
            .args(["-O", "binary"])
            .arg(elf)
            .arg(&tmp)
            .status()
            .context("running llvm-objcopy")?;
        if !status.success() {
            bail!("llvm-objcopy failed on {}", elf.display());
        }
    } else {
        std::fs::copy(elf, &tmp).with_context(|| format!("copying {}", elf.display()))?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("replacing {}", out.display()))
}

/// `target/xtask/runs/<pid>/<arch>`, created on first use. Directories of processes that
/// have ended are removed then, so they do not pile up (the test logs stay in
/// `target/xtask/logs`).
pub fn run_dir(arch: Arch) -> Result<PathBuf> {
    let runs = target_dir().join("xtask/runs");
    let mine = runs.join(std::process::id().to_string());
    if !mine.exists()
        && let Ok(entries) = std::fs::read_dir(&runs)
    {
        for e in entries.filter_map(|e| e.ok()) {
            let pid = e.file_name().to_string_lossy().into_owned();
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = mine.join(arch.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The `llvm-objcopy` that ships with the pinned toolchain's `llvm-tools` component.
fn objcopy() -> Result<PathBuf> {
    let sysroot = capture("rustc", &["--print", "sysroot"])?;
    let host = capture("rustc", &["-vV"])?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")?;
    let path = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/llvm-objcopy");
    if !path.exists() {
        bail!("{} is missing: run `rustup component add llvm-tools` (or `cargo xtask setup`)", path.display());
    }
    Ok(path)
}

pub fn capture(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Formatting and clippy over every crate and every target it is built for.
pub fn lint() -> Result<i32> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut runs: Vec<Vec<String>> = vec![
        vec!["fmt".into(), "--all".into(), "--check".into()],
        vec![
            "clippy".into(),
            "--workspace".into(),
            "--all-targets".into(),
            "--".into(),
            "-D".into(),
            "warnings".into(),
        ],
    ];
    for arch in Arch::ALL {
        // The hypervisor's crates on its target, the test guests on theirs (one run if the same).
        let mut per_target = vec![(arch.hypervisor_target(), vec!["guest-abi", "arch", "hypervisor"])];
        if arch.target() == arch.hypervisor_target() {
            per_target[0].1.push("hello-guest");
        } else {
            per_target.push((arch.target(), vec!["guest-abi", "hello-guest"]));
        }
        for (target, crates) in per_target {
            let mut v: Vec<String> = ["clippy", "--release", "--target", target].map(String::from).to_vec();
            for p in crates {
                v.extend(["-p".into(), p.into()]);
            }
            v.extend(["--".into(), "-D".into(), "warnings".into()]);
            runs.push(v);
        }
    }
    let mut failed = 0;
    for args in runs {
        eprintln!("xtask: cargo {}", args.join(" "));
        let ok = Command::new(&cargo).current_dir(workspace_root()).args(&args).status()?.success();
        if !ok {
            failed += 1;
        }
    }
    println!("lint: {failed} check(s) failed");
    Ok(if failed == 0 { 0 } else { 1 })
}
