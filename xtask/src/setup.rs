//! `cargo xtask setup`: install what building and booting need, skipping what is there.
//!
//! Debian/Ubuntu hosts: QEMU 10 from bookworm-backports, Bochs, GRUB and ISO tools via apt
//! (as root); Rust targets and components via rustup.

use crate::arch::Arch;
use crate::images;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

const TOOLS: [(&str, &str); 7] = [
    ("dtc", "device-tree-compiler"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-system-arm", "qemu-system-arm"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("bochs", "bochs"),
    ("grub-mkrescue", "grub-common"),
    ("xorriso", "xorriso"),
];

/// Packages from the distribution's main suite.
const APT_PACKAGES: [&str; 10] = [
    "bochs",
    "bochs-term",
    "bochsbios",
    "vgabios",
    "grub-pc-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "cpio",
    "device-tree-compiler",
];
const BACKPORTS_PACKAGES: [&str; 2] = ["qemu-system-arm", "qemu-system-x86"];
/// Debian architectures whose guest kernels and busybox we download.
const FOREIGN_ARCHES: [&str; 2] = ["arm64", "armhf"];

pub fn run() -> Result<i32> {
    step(1, "Rust targets and components (rust-toolchain.toml)");
    rust_targets()?;
    step(2, "emulators, firmware and GRUB");
    let missing: Vec<_> = TOOLS.iter().filter(|(bin, _)| !on_path(bin)).collect();
    if missing.is_empty() {
        println!("    all present: {}", TOOLS.map(|t| t.0).join(", "));
    } else {
        println!("    missing: {}", missing.iter().map(|t| t.0).collect::<Vec<_>>().join(", "));
        apt_install()?;
    }
    step(3, "check");
    let still: Vec<_> = TOOLS.iter().filter(|(bin, _)| !on_path(bin)).map(|t| t.0).collect();
    if !still.is_empty() {
        bail!("still missing after setup: {}", still.join(", "));
    }
    step(4, "guest kernels and initramfs from Debian's archive");
    foreign_architectures()?;
    for arch in [Arch::Aarch64, Arch::X86_64] {
        let guest = images::linux_guest(arch)?;
        println!("    {}: {}", arch.name(), guest.kernel.display());
    }
    println!("setup complete");
    Ok(0)
}

fn step(n: u32, what: &str) {
    println!("[{n}/4] {what}");
}

/// ARM guest kernels are Debian's arm64/armhf packages: apt must know those architectures.
fn foreign_architectures() -> Result<()> {
    let have = Command::new("dpkg").arg("--print-foreign-architectures").output().context("running dpkg")?;
    let have = String::from_utf8_lossy(&have.stdout).into_owned();
    let missing: Vec<_> = FOREIGN_ARCHES.iter().filter(|a| !have.lines().any(|l| l.trim() == **a)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "apt needs the {missing:?} architectures: run `sudo dpkg --add-architecture` for them and `sudo apt-get update`"
        );
    }
    for a in missing {
        run_cmd(Command::new("dpkg").args(["--add-architecture", a]))?;
    }
    apt_update();
    Ok(())
}

fn rust_targets() -> Result<()> {
    // rustup installs the pinned toolchain's listed targets and components on first use;
    // asking explicitly also covers older rustup versions.
    let toml = std::fs::read_to_string(crate::build::workspace_root().join("rust-toolchain.toml"))?;
    let list = |key: &str| -> Vec<String> {
        toml.lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(|l| l.split('"').skip(1).step_by(2).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    run_cmd(Command::new("rustup").args(["target", "add"]).args(list("targets")))?;
    run_cmd(Command::new("rustup").args(["component", "add"]).args(list("components")))
}

fn apt_install() -> Result<()> {
    if !is_root() {
        bail!(
            "installing packages needs root: run `sudo cargo xtask setup`, or install: {} {}",
            APT_PACKAGES.join(" "),
            BACKPORTS_PACKAGES.join(" ")
        );
    }
    let backports = add_backports()?;
    apt_update();
    let mut install = Command::new("apt-get");
    install.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y"]).args(APT_PACKAGES);
    run_cmd(&mut install)?;
    let mut qemu = Command::new("apt-get");
    qemu.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y"]);
    if backports {
        qemu.args(["-t", "bookworm-backports"]);
    }
    run_cmd(qemu.args(BACKPORTS_PACKAGES))
}

/// On Debian 12, QEMU 10 comes from bookworm-backports, served by the mirror already in use.
fn add_backports() -> Result<bool> {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !release.contains("VERSION_CODENAME=bookworm") {
        return Ok(false);
    }
    let target = Path::new("/etc/apt/sources.list.d/bookworm-backports.sources");
    if target.exists() {
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
    std::fs::write(target, stanza).context("writing the backports source")?;
    println!("    added bookworm-backports ({uri})");
    Ok(true)
}

/// Mirrors are sometimes mid-sync: retry, then carry on and let the install decide.
fn apt_update() {
    for attempt in 1..=3 {
        if Command::new("apt-get").arg("update").status().is_ok_and(|s| s.success()) {
            return;
        }
        eprintln!("    apt-get update failed (attempt {attempt}/3); retrying in 10 s");
        std::thread::sleep(std::time::Duration::from_secs(10));
    }
    eprintln!("    apt-get update kept failing; trying the install with the lists we have");
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
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
