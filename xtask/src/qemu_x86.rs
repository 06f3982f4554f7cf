//! x86_64 under QEMU: the AMD-V (SVM + nested paging) backend, booted from the same GRUB
//! multiboot2 ISO as Bochs' VT-x runs.
//!
//! QEMU's TCG emulates SVM with nested paging under `-cpu max` (vendor AMD). `--emulator qemu`
//! uses `-accel kvm -cpu host` instead when KVM can work (/dev/kvm exists and the host CPU
//! shows vmx or svm: a VM without nested virtualization may have the first but not the
//! second, and QEMU then aborts); the host's vendor then picks the backend. Test scenarios use
//! `qemu-tcg`, always TCG, so that `-svm` scenarios really run SVM. The hypervisor ends the run through isa-debug-exit at
//! port 0xf4, after which QEMU exits with `(value << 1) | 1`: value 0 (success) → 1,
//! value 1 (failure) → 3. We map that back to 0 / 1 so callers see what Bochs runs report.

use crate::arch::Arch;
use crate::emulator::{self, Boot, Echo, Outcome};
use anyhow::{Context, Result};
use clap::ValueEnum;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Which emulator runs an x86_64 boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emulator {
    /// QEMU: KVM `-cpu host` when usable, else TCG `-cpu max` (AMD-V with nested paging).
    Qemu,
    /// QEMU with TCG `-cpu max` whatever the host offers: always the AMD-V backend.
    QemuTcg,
    /// Bochs: the VT-x backend.
    Bochs,
}

/// The isa-debug-exit device the hypervisor writes its status to (see `exit_emulator`).
const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";
/// Test scenarios with this suffix (or this infix before a variant, `-svm-smp2`) run on
/// QEMU's SVM; other x86 ones on Bochs' VT-x.
pub const SVM_SUFFIX: &str = "-svm";

/// Whether `run` goes to QEMU: x86_64 with `--emulator qemu` or no choice (QEMU is the default).
pub fn wants_qemu(run: &Boot) -> bool {
    run.arch == Arch::X86_64 && run.args.emulator.unwrap_or(Emulator::Qemu) != Emulator::Bochs
}

/// The emulator a test scenario's name asks for.
pub fn emulator_for_scenario(name: &str) -> Emulator {
    let variant = name.contains(&format!("{SVM_SUFFIX}-"));
    if name.ends_with(SVM_SUFFIX) || variant { Emulator::QemuTcg } else { Emulator::Bochs }
}

/// Boot the GRUB ISO under QEMU and follow COM1 on stdio.
pub fn boot(run: &Boot, echo: Echo) -> Result<Outcome> {
    let iso = emulator::grub_iso(run, &run.built.run_dir, echo)?;
    let kvm = run.args.emulator != Some(Emulator::QemuTcg) && kvm_usable();
    let mut cmd = command(&iso, kvm, run.args.smp, run.args.icount);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    emulator::announce(&cmd, echo);
    let mut child = cmd.spawn().context("starting qemu-system-x86_64 (run `cargo xtask setup`?)")?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let source = emulator::Source::Pipe(emulator::pipe_reader(stdout));
    let mut outcome = emulator::watch(child, source, echo, Duration::from_secs(run.args.timeout))?;
    outcome.status = outcome.status.map(debug_exit_status);
    Ok(outcome)
}

/// Debian's cloud kernel as a PVH guest (console on the Xen PV console, quiet, no crypto
/// self-tests: they take most of the boot under emulation).
pub const DEFAULT_LINUX_APPEND: &str = "console=hvc0 quiet cryptomgr.notests";

/// The default x86_64 guest: Debian's kernel and the busybox initramfs unless `--kernel` /
/// `--initrd` name others, with [`DEFAULT_LINUX_APPEND`] unless `--append` is given.
/// Fills `args` and returns the kernel.
pub fn linux_guest(args: &mut crate::RunArgs) -> Result<std::path::PathBuf> {
    let (kernel, initrd) = match (&args.kernel, &args.initrd) {
        (Some(k), Some(i)) => (k.clone(), i.clone()),
        (k, i) => {
            let fetched = crate::images::linux_guest(Arch::X86_64)?;
            (k.clone().unwrap_or(fetched.kernel), i.clone().unwrap_or(fetched.initrd))
        }
    };
    args.initrd = Some(initrd);
    args.append.get_or_insert_with(|| DEFAULT_LINUX_APPEND.to_string());
    Ok(kernel)
}

/// KVM can run guests here: the device exists and the CPU shows its virtualization extension.
fn kvm_usable() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_ext = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    Path::new("/dev/kvm").exists() && has_ext
}

fn command(iso: &Path, kvm: bool, smp: u32, icount: bool) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    if kvm && !icount {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg", "-cpu", "max"]);
    }
    // A 512 MiB Linux domain besides the hypervisor and the boot modules.
    cmd.args(["-m", "1G", "-nographic", "-no-reboot", "-serial", "stdio", "-monitor", "none"])
        .args(["-smp", &smp.max(1).to_string()])
        .args(["-device", DEBUG_EXIT, "-boot", "d"])
        .arg("-cdrom")
        .arg(iso);
    if icount {
        cmd.args(["-icount", "shift=0,sleep=off", "-seed", "1", "-rtc", "clock=vm"]);
    }
    cmd
}

/// QEMU's status after isa-debug-exit, as the hypervisor meant it: 1 → 0 (success),
/// 3 → 1 (failure). Anything else (QEMU's own errors, a signal) is passed through, except 0,
/// which QEMU returns when it stops without the device (e.g. a triple fault with -no-reboot)
/// and must not read as success.
pub fn debug_exit_status(qemu: i32) -> i32 {
    match qemu {
        1 => 0,
        3 => 1,
        0 => 2,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exit_codes_map_back_to_the_hypervisors_status() {
        assert_eq!(debug_exit_status(1), 0);
        assert_eq!(debug_exit_status(3), 1);
        assert_eq!(debug_exit_status(0), 2);
        assert_eq!(debug_exit_status(128), 128);
    }

    #[test]
    fn scenario_names_pick_the_emulator() {
        assert_eq!(emulator_for_scenario("hello-x86_64-svm"), Emulator::QemuTcg);
        assert_eq!(emulator_for_scenario("hello-x86_64"), Emulator::Bochs);
        assert_eq!(emulator_for_scenario("linux-x86_64-pvh-svm-smp2"), Emulator::QemuTcg);
    }
}
