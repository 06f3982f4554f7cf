//! What a command needs from the host, checked before anything is built, and installed when
//! it is missing: the Rust targets and components `rust-toolchain.toml` pins, the emulator of
//! the chosen architecture, GRUB and the ISO tools for x86 images, `dtc`, and what apt needs
//! to fetch Debian's guest kernels.
//!
//! Packages come from apt: directly when we are root, through `sudo` otherwise (one line
//! says what and why; `sudo -n`, never a password prompt, when `CI` is set). Where neither
//! works, or the host has no apt, we stop before building with the exact command to run.

use crate::arch::Arch;
use crate::images::KernelSeries;
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One thing on the host, and the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Req {
    check: Check,
    package: &'static str,
    /// What it is for, for the line that says what is installed.
    why: &'static str,
    /// QEMU comes from bookworm-backports (10.x): the machine's qemu-utils is from there, and
    /// bookworm's own qemu-system 7.2 conflicts with it.
    backports: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    /// A program on `PATH`.
    Bin(&'static str),
    /// A file or directory the emulator or GRUB reads.
    Path(&'static str),
}

impl Check {
    fn present(self) -> bool {
        match self {
            Check::Bin(bin) => on_path(bin),
            Check::Path(p) => Path::new(p).exists(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Check::Bin(n) | Check::Path(n) => n,
        }
    }
}

const fn apt(check: Check, package: &'static str, why: &'static str) -> Req {
    Req { check, package, why, backports: false }
}

const fn backports(check: Check, package: &'static str, why: &'static str) -> Req {
    Req { check, package, why, backports: true }
}

const FOR_DT: &str = "dtc for boot device trees";
const FOR_ARM: &str = "QEMU for the ARM guests";
const FOR_X86: &str = "QEMU for x86 (AMD-V)";
const FOR_ISO: &str = "GRUB and its ISO tools for x86 boot images";
const FOR_BOCHS: &str = "Bochs for x86 (VT-x)";
const FOR_XTF: &str = "git, gcc, make and python3 to fetch and build the Xen Test Framework";
const FOR_UBOOT: &str = "U-Boot, mkimage and mtools to boot through U-Boot from a FAT disk";

const DTC: Req = apt(Check::Bin("dtc"), "device-tree-compiler", FOR_DT);
const QEMU_AARCH64: Req = backports(Check::Bin("qemu-system-aarch64"), "qemu-system-arm", FOR_ARM);
const QEMU_ARM: Req = backports(Check::Bin("qemu-system-arm"), "qemu-system-arm", FOR_ARM);
const QEMU_X86: Req = backports(Check::Bin("qemu-system-x86_64"), "qemu-system-x86", FOR_X86);
/// What turns the hypervisor and its modules into a bootable multiboot2 ISO.
const GRUB_ISO: [Req; 4] = [
    apt(Check::Bin("grub-mkrescue"), "grub-common", FOR_ISO),
    apt(Check::Path("/usr/lib/grub/i386-pc/multiboot2.mod"), "grub-pc-bin", FOR_ISO),
    apt(Check::Bin("xorriso"), "xorriso", FOR_ISO),
    apt(Check::Bin("mformat"), "mtools", FOR_ISO),
];
/// Bochs with the BIOS images `qemu/x86/bochsrc` names.
const BOCHS: [Req; 3] = [
    apt(Check::Bin("bochs"), "bochs", FOR_BOCHS),
    apt(Check::Path("/usr/share/bochs/BIOS-bochs-latest"), "bochsbios", FOR_BOCHS),
    apt(Check::Path("/usr/share/vgabios/vgabios.bin"), "vgabios", FOR_BOCHS),
];

/// What fetches and builds XTF (`cargo xtask xtf`).
const XTF: [Req; 4] = [
    apt(Check::Bin("git"), "git", FOR_XTF),
    apt(Check::Bin("gcc"), "gcc", FOR_XTF),
    apt(Check::Bin("make"), "make", FOR_XTF),
    apt(Check::Bin("python3"), "python3", FOR_XTF),
];

/// `mkimage`, which turns a U-Boot script into `boot.scr`.
const MKIMAGE: Req = apt(Check::Bin("mkimage"), "u-boot-tools", FOR_UBOOT);
/// `mformat` and `mcopy` build the FAT boot partition.
const MTOOLS: Req = apt(Check::Bin("mcopy"), "mtools", FOR_UBOOT);
const UBOOT_ARM64: Req = apt(Check::Path(crate::uboot::QEMU_ARM64_UBOOT), "u-boot-qemu", FOR_UBOOT);
const UBOOT_ARM: Req = apt(Check::Path(crate::uboot::QEMU_ARM_UBOOT), "u-boot-qemu", FOR_UBOOT);
/// An arm64 package: apt's foreign architecture arm64 is there for the aarch64 guest kernel.
const UBOOT_RPI4: Req = apt(Check::Path(crate::uboot::RPI4_UBOOT), "u-boot-rpi:arm64", FOR_UBOOT);

/// Debian architectures whose guest kernels and busybox the ARM guests use.
fn foreign_arch(arch: Arch) -> Option<&'static str> {
    match arch {
        Arch::Aarch64 => Some("arm64"),
        Arch::Armv7 => Some("armhf"),
        Arch::X86_64 => None,
    }
}

/// Which emulator an x86_64 boot uses (ARM always boots under QEMU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum X86Emulator {
    Qemu,
    Bochs,
}

impl X86Emulator {
    /// The emulator `--emulator` picks (QEMU unless Bochs is asked for).
    pub fn of(choice: Option<crate::qemu_x86::Emulator>) -> X86Emulator {
        match choice {
            Some(crate::qemu_x86::Emulator::Bochs) => X86Emulator::Bochs,
            _ => X86Emulator::Qemu,
        }
    }
}

/// Everything one command will use.
#[derive(Default, Debug)]
pub struct Needs {
    /// Architectures whose hypervisor is built and booted (ARM: under QEMU).
    arches: BTreeSet<Arch>,
    /// The x86 emulators booted (with GRUB's ISO tools).
    x86: BTreeSet<X86Emulator>,
    /// Architectures whose Linux guest comes from Debian's archive, and the kernel series
    /// (6.12 is bookworm-backports').
    linux: BTreeSet<(Arch, KernelSeries)>,
    /// Debian's i386 kernel and busybox too (32-bit PVH guests on x86_64).
    linux_i386: bool,
    /// `dtc`: boot configurations written as `.dts`, and the host tests' cross-checks.
    dtc: bool,
    /// `mkimage` for U-Boot scripts (`cargo xtask uboot`).
    uboot_script: bool,
    /// Architectures booted through Debian's U-Boot for QEMU `virt` from a FAT disk image.
    uboot: BTreeSet<Arch>,
    /// The same on QEMU's raspi4b, with Debian's U-Boot for the Raspberry Pi 4.
    uboot_rpi4: bool,
    /// git, gcc, make and python3 for the Xen Test Framework.
    xtf: bool,
}

impl Needs {
    /// Boot `arch` (on x86_64 under `emulator`).
    pub fn boot(&mut self, arch: Arch, emulator: X86Emulator) -> &mut Self {
        self.arches.insert(arch);
        if arch == Arch::X86_64 {
            self.x86.insert(emulator);
        } else {
            self.dtc = true;
        }
        self
    }

    /// Fetch Debian's Linux guest for `arch`.
    pub fn linux(&mut self, arch: Arch) -> &mut Self {
        self.linux_series(arch, KernelSeries::V6_1)
    }

    /// Fetch Debian's Linux guest for `arch` with the kernel of `series`.
    pub fn linux_series(&mut self, arch: Arch, series: KernelSeries) -> &mut Self {
        self.linux.insert((arch, series));
        self
    }

    /// Fetch Debian's i386 Linux guest (apt's foreign architecture i386).
    pub fn linux_i386(&mut self) -> &mut Self {
        self.linux_i386 = true;
        self
    }

    /// git, gcc, make and python3 (`cargo xtask xtf`).
    pub fn xtf(&mut self) -> &mut Self {
        self.xtf = true;
        self
    }

    /// `dtc` on the path (host tests, `.dts` configurations).
    pub fn dtc(&mut self) -> &mut Self {
        self.dtc = true;
        self
    }

    /// `mkimage` (u-boot-tools), for `cargo xtask uboot`.
    pub fn uboot_script(&mut self) -> &mut Self {
        self.uboot_script = true;
        self.dtc = true;
        self
    }

    /// Boot `arch` through Debian's U-Boot from a FAT disk image: its QEMU `virt` build, or
    /// its Raspberry Pi 4 build on raspi4b (with the arm64 apt architecture it comes from).
    pub fn uboot(&mut self, arch: Arch, board: Option<crate::boards::Board>) -> &mut Self {
        match board {
            Some(crate::boards::Board::Raspi4b) => {
                self.uboot_rpi4 = true;
                self.linux(Arch::Aarch64);
            }
            _ => {
                self.uboot.insert(arch);
            }
        }
        self.uboot_script()
    }

    /// What `cargo xtask setup` installs: every emulator and every guest kernel.
    pub fn everything() -> Needs {
        let mut n = Needs::default();
        for arch in Arch::ALL {
            n.boot(arch, X86Emulator::Qemu);
            for series in KernelSeries::ALL {
                n.linux_series(arch, series);
            }
        }
        n.boot(Arch::X86_64, X86Emulator::Bochs);
        n.uboot(Arch::Aarch64, None).uboot(Arch::Armv7, None).uboot(Arch::Aarch64, Some(crate::boards::Board::Raspi4b));
        n.linux_i386();
        n.dtc();
        n
    }

    /// The packages to check, each once.
    fn requirements(&self) -> BTreeSet<Req> {
        let mut reqs = BTreeSet::new();
        if self.dtc {
            reqs.insert(DTC);
        }
        if self.uboot_script {
            reqs.insert(MKIMAGE);
        }
        if self.xtf {
            reqs.extend(XTF);
        }
        if self.uboot_rpi4 {
            reqs.extend([UBOOT_RPI4, MTOOLS]);
        }
        for arch in &self.uboot {
            reqs.insert(MTOOLS);
            match arch {
                Arch::Aarch64 => reqs.insert(UBOOT_ARM64),
                Arch::Armv7 => reqs.insert(UBOOT_ARM),
                Arch::X86_64 => false,
            };
        }
        for arch in &self.arches {
            match arch {
                Arch::Aarch64 => reqs.insert(QEMU_AARCH64),
                Arch::Armv7 => reqs.insert(QEMU_ARM),
                Arch::X86_64 => false,
            };
        }
        for emulator in &self.x86 {
            reqs.extend(GRUB_ISO);
            match emulator {
                X86Emulator::Qemu => reqs.insert(QEMU_X86),
                X86Emulator::Bochs => {
                    reqs.extend(BOCHS);
                    true
                }
            };
        }
        reqs
    }
}

/// Make sure everything `needs` names is on the host, installing what is missing.
pub fn ensure(needs: &Needs) -> Result<()> {
    rust_targets()?;
    let missing: Vec<Req> = needs.requirements().into_iter().filter(|r| !r.check.present()).collect();
    let i386 = needs.linux_i386.then_some(crate::images::I386_ARCH);
    let foreign: BTreeSet<&str> = needs.linux.iter().filter_map(|(a, _)| foreign_arch(*a)).chain(i386).collect();
    let arches: Vec<&str> = foreign.into_iter().filter(|a| !apt_knows_arch(a)).collect();
    let unlisted: Vec<(Arch, KernelSeries)> =
        needs.linux.iter().copied().filter(|&(a, series)| !kernel_listed(a, series)).collect();
    let need_lists = !unlisted.is_empty() || (needs.linux_i386 && !apt_knows(crate::images::I386_KERNEL_META));
    // The 6.12 kernels are bookworm-backports' (as QEMU is): its source must be in apt's.
    let backports_kernels = unlisted.iter().any(|&(_, series)| series == KernelSeries::V6_12);
    if missing.is_empty() && arches.is_empty() && !need_lists {
        return Ok(());
    }
    let why = purpose(&missing, &arches, need_lists);
    let sudo = privilege(&missing, &arches)?;
    let start = Instant::now();
    for a in &arches {
        eprintln!("xtask: adding Debian architecture {a} to apt ({why})");
        sudo.run(Command::new("dpkg").args(["--add-architecture", a]))?;
    }
    let use_backports = (missing.iter().any(|r| r.backports) || backports_kernels) && add_backports(&sudo)?;
    apt_update(&sudo);
    install(&sudo, &missing, use_backports, &why)
        .with_context(|| format!("installing failed: run `{}` by hand", manual_command(&missing, &arches)))?;
    let still: Vec<&str> = missing.iter().filter(|r| !r.check.present()).map(|r| r.check.name()).collect();
    if !still.is_empty() {
        bail!("still missing after installing: {}", still.join(", "));
    }
    eprintln!("xtask: host set up in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// One line on why: what the missing pieces are for.
fn purpose(missing: &[Req], arches: &[&str], need_lists: bool) -> String {
    let mut why: Vec<&str> = Vec::new();
    for r in missing {
        if !why.contains(&r.why) {
            why.push(r.why);
        }
    }
    if !arches.is_empty() || need_lists {
        why.push("apt's lists of Debian's guest kernels");
    }
    why.join("; ")
}

/// How we may run apt: as ourselves (root) or through sudo.
struct Sudo {
    prefix: Option<&'static [&'static str]>,
}

impl Sudo {
    fn run(&self, cmd: &mut Command) -> Result<()> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let status = match self.prefix {
            None => cmd.status(),
            Some(prefix) => {
                let mut wrapped = Command::new(prefix[0]);
                wrapped.args(&prefix[1..]).arg("env");
                for (k, v) in cmd.get_envs() {
                    if let Some(v) = v {
                        wrapped.arg(format!("{}={}", k.to_string_lossy(), v.to_string_lossy()));
                    }
                }
                wrapped.arg(&program).args(cmd.get_args()).stdin(Stdio::inherit()).status()
            }
        }
        .with_context(|| format!("running {program}"))?;
        if !status.success() {
            bail!("{program} failed with {status}");
        }
        Ok(())
    }
}

/// Root runs apt itself; others go through sudo (non-interactively under CI, where a password
/// prompt would hang). Without either, stop with the command the user can run.
fn privilege(missing: &[Req], arches: &[&str]) -> Result<Sudo> {
    let manual = manual_command(missing, arches);
    if !on_path("apt-get") || !on_path("dpkg") {
        let names: Vec<&str> = missing.iter().map(|r| r.check.name()).collect();
        bail!(
            "this host has no apt: install {} with its package manager (Debian/Ubuntu: `{manual}`)",
            names.join(", ")
        );
    }
    if is_root() {
        return Ok(Sudo { prefix: None });
    }
    let as_root = format!("installing packages needs root: as root (or with sudo), run `{manual}`");
    if !on_path("sudo") {
        bail!("{as_root}");
    }
    // Without a terminal (or under CI) sudo must not ask; with one it may ask once, here,
    // before anything else runs, so that a refusal stops us at once with the command.
    let interactive = std::env::var_os("CI").is_none() && std::io::stdin().is_terminal();
    if !interactive {
        let ok = Command::new("sudo").args(["-n", "true"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if !ok {
            bail!("{as_root} (sudo cannot run without asking for a password here)");
        }
        return Ok(Sudo { prefix: Some(&["sudo", "-n"]) });
    }
    eprintln!("xtask: installing what is missing needs root: asking sudo");
    if !Command::new("sudo").arg("-v").status().is_ok_and(|s| s.success()) {
        bail!("{as_root}");
    }
    // The credentials sudo just cached serve the calls that follow without asking again.
    Ok(Sudo { prefix: Some(&["sudo", "-n"]) })
}

/// The command a user runs by hand for what we could not install.
fn manual_command(missing: &[Req], arches: &[&str]) -> String {
    let mut parts: Vec<String> = arches.iter().map(|a| format!("sudo dpkg --add-architecture {a}")).collect();
    parts.push("sudo apt-get update".into());
    let pkgs: BTreeSet<&str> = missing.iter().map(|r| r.package).collect();
    if !pkgs.is_empty() {
        let backports = missing.iter().any(|r| r.backports) && is_bookworm();
        let target = if backports { "-t bookworm-backports " } else { "" };
        parts.push(format!("sudo apt-get install -y {target}{}", pkgs.into_iter().collect::<Vec<_>>().join(" ")));
    }
    parts.join(" && ")
}

fn install(sudo: &Sudo, missing: &[Req], use_backports: bool, why: &str) -> Result<()> {
    let (from_backports, main): (Vec<&Req>, Vec<&Req>) = missing.iter().partition(|r| r.backports && use_backports);
    for (group, target) in [(main, None), (from_backports, Some("bookworm-backports"))] {
        let pkgs: BTreeSet<&str> = group.iter().map(|r| r.package).collect();
        if pkgs.is_empty() {
            continue;
        }
        let list: Vec<&str> = pkgs.into_iter().collect();
        let via = if sudo.prefix.is_some() { "with sudo apt-get" } else { "with apt-get" };
        let from = target.map(|t| format!(" from {t}")).unwrap_or_default();
        eprintln!("xtask: installing {}{from} {via} ({why})", list.join(" "));
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "-q", "--no-install-recommends"]);
        if let Some(t) = target {
            cmd.args(["-t", t]);
        }
        sudo.run(cmd.args(&list))?;
    }
    Ok(())
}

fn is_bookworm() -> bool {
    std::fs::read_to_string("/etc/os-release").unwrap_or_default().contains("VERSION_CODENAME=bookworm")
}

/// On Debian 12, QEMU 10 and the 6.12 guest kernels come from bookworm-backports, served by
/// the mirror already in use.
fn add_backports(sudo: &Sudo) -> Result<bool> {
    if !is_bookworm() {
        return Ok(false);
    }
    let target = "/etc/apt/sources.list.d/bookworm-backports.sources";
    if Path::new(target).exists() {
        return Ok(true);
    }
    let debian = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let field = |name: &str| {
        debian.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
    };
    let uri = field("URIs:").unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let signed = field("Signed-By:").unwrap_or_else(|| "/usr/share/keyrings/debian-archive-keyring.gpg".into());
    let stanza =
        format!("Types: deb\nURIs: {uri}\nSuites: bookworm-backports\nComponents: main\nSigned-By: {signed}\n");
    eprintln!("xtask: adding bookworm-backports ({uri}) to apt's sources, for QEMU 10 and the 6.12 guest kernels");
    let tmp = std::env::temp_dir().join(format!("xhv-backports-{}.sources", std::process::id()));
    std::fs::write(&tmp, stanza).context("writing the backports source")?;
    let res = sudo.run(Command::new("cp").arg(&tmp).arg(target));
    let _ = std::fs::remove_file(&tmp);
    res.map(|()| true)
}

/// Mirrors are sometimes mid-sync (one index of one architecture): retry once, then carry on
/// and let the install decide.
fn apt_update(sudo: &Sudo) {
    for attempt in 1..=2 {
        eprintln!("xtask: apt-get update");
        if sudo.run(Command::new("apt-get").args(["update", "-q"])).is_ok() {
            return;
        }
        if attempt == 1 {
            eprintln!("xtask: apt-get update reported errors; retrying in 5 s");
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
    }
    eprintln!("xtask: apt-get update kept reporting errors; installing with the lists we have");
}

/// apt's lists name `arch`'s guest kernel metapackage, and behind it (for 6.12) a kernel of
/// `series`.
fn kernel_listed(arch: Arch, series: KernelSeries) -> bool {
    match series {
        KernelSeries::V6_1 => apt_knows(crate::images::kernel_metapackage(arch)),
        _ => crate::images::kernel_known(arch, series),
    }
}

fn apt_knows_arch(arch: &str) -> bool {
    Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == arch))
}

/// apt's lists name `package` (a fresh container has no lists; a newly added architecture
/// has none until the next update).
fn apt_knows(package: &str) -> bool {
    Command::new("apt-cache")
        .args(["show", "-q", package])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The targets and components `rust-toolchain.toml` lists: rustup adds them only when it
/// installs the toolchain itself, not to a toolchain the machine already had.
fn rust_targets() -> Result<()> {
    let toml = std::fs::read_to_string(crate::build::workspace_root().join("rust-toolchain.toml"))?;
    let (targets, components) = (toml_list(&toml, "targets"), toml_list(&toml, "components"));
    let installed = |what: &str| -> Result<Vec<String>> {
        let out = Command::new("rustup")
            .args([what, "list", "--installed"])
            .output()
            .context("running rustup (install it from https://rustup.rs)")?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
    };
    let have_targets = installed("target")?;
    let have_components = installed("component")?;
    // Components are listed with the host triple (`llvm-tools-x86_64-unknown-linux-gnu`), or
    // without one (`rust-src`).
    let has_component = |c: &str| have_components.iter().any(|h| h == c || h.starts_with(&format!("{c}-")));
    let missing_targets: Vec<&String> = targets.iter().filter(|t| !have_targets.contains(t)).collect();
    let missing_components: Vec<&String> = components.iter().filter(|c| !has_component(c)).collect();
    if !missing_targets.is_empty() {
        eprintln!("xtask: adding Rust targets {} (rust-toolchain.toml)", join(&missing_targets));
        run(Command::new("rustup").args(["target", "add"]).args(&missing_targets))?;
    }
    if !missing_components.is_empty() {
        eprintln!("xtask: adding Rust components {} (rust-toolchain.toml)", join(&missing_components));
        run(Command::new("rustup").args(["component", "add"]).args(&missing_components))?;
    }
    Ok(())
}

/// The quoted strings of `key = [...]` in a TOML file of one-line arrays.
fn toml_list(toml: &str, key: &str) -> Vec<String> {
    toml.lines()
        .find(|l| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')))
        .map(|l| l.split('"').skip(1).step_by(2).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !st.success() {
        bail!("{:?} failed with {}", cmd.get_program(), st);
    }
    Ok(())
}

pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_lists_are_read_from_one_line_arrays() {
        let toml = "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"a-b\", \"c-d\"]\ncomponents = [\"rust-src\"]\n";
        assert_eq!(toml_list(toml, "targets"), ["a-b", "c-d"]);
        assert_eq!(toml_list(toml, "components"), ["rust-src"]);
        assert!(toml_list(toml, "profile").is_empty());
    }

    #[test]
    fn an_x86_qemu_boot_needs_qemu_and_grub_but_not_bochs() {
        let mut n = Needs::default();
        n.boot(Arch::X86_64, X86Emulator::Qemu);
        let pkgs: BTreeSet<&str> = n.requirements().iter().map(|r| r.package).collect();
        assert!(pkgs.contains("qemu-system-x86") && pkgs.contains("grub-pc-bin") && pkgs.contains("mtools"));
        assert!(!pkgs.contains("bochs") && !pkgs.contains("qemu-system-arm") && !pkgs.contains("device-tree-compiler"));
    }

    #[test]
    fn an_arm_boot_needs_its_qemu_and_dtc_only() {
        let mut n = Needs::default();
        n.boot(Arch::Armv7, X86Emulator::Qemu);
        let checks: BTreeSet<&str> = n.requirements().iter().map(|r| r.check.name()).collect();
        assert_eq!(checks, BTreeSet::from(["dtc", "qemu-system-arm"]));
    }

    #[test]
    fn a_uboot_boot_needs_the_firmware_mkimage_and_mtools() {
        let mut n = Needs::default();
        n.boot(Arch::Armv7, X86Emulator::Qemu).uboot(Arch::Armv7, None);
        let checks: BTreeSet<&str> = n.requirements().iter().map(|r| r.check.name()).collect();
        let want = ["dtc", "qemu-system-arm", "mkimage", "mcopy", crate::uboot::QEMU_ARM_UBOOT];
        assert_eq!(checks, BTreeSet::from(want));
        let pkgs: BTreeSet<&str> = n.requirements().iter().map(|r| r.package).collect();
        assert!(pkgs.contains("u-boot-qemu") && pkgs.contains("u-boot-tools") && pkgs.contains("mtools"));
    }

    #[test]
    fn setup_fetches_both_kernel_series_of_every_architecture() {
        let n = Needs::everything();
        for arch in Arch::ALL {
            assert!(n.linux.contains(&(arch, KernelSeries::V6_1)) && n.linux.contains(&(arch, KernelSeries::V6_12)));
        }
    }

    #[test]
    fn setup_covers_both_x86_emulators_and_every_qemu() {
        let pkgs: BTreeSet<&str> = Needs::everything().requirements().iter().map(|r| r.package).collect();
        for p in ["bochs", "bochsbios", "vgabios", "qemu-system-x86", "qemu-system-arm", "xorriso"] {
            assert!(pkgs.contains(p), "{p}");
        }
    }

    #[test]
    fn the_manual_command_names_backports_on_bookworm_only_for_qemu() {
        let cmd = manual_command(&[DTC], &["arm64"]);
        assert!(cmd.starts_with("sudo dpkg --add-architecture arm64 && sudo apt-get update"));
        assert!(cmd.ends_with("sudo apt-get install -y device-tree-compiler"));
    }
}
