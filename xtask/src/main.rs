//! `cargo xtask`: build, boot and test the hypervisor under QEMU and Bochs.

mod arch;
mod bench;
mod boards;
mod bootcfg_file;
mod bootdt;
mod build;
mod emulator;
mod fuzz;
mod images;
mod prereq;
mod qemu_x86;
mod sched_check;
mod setup;
mod test;
mod uboot;
mod xen;
mod xtf;

use anyhow::Result;
use arch::Arch;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test the xhv hypervisor")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the hypervisor and the test guests for one architecture (or all).
    Build {
        #[arg(long)]
        arch: Option<Arch>,
    },
    /// Build, then boot the hypervisor with a guest under QEMU (x86_64: `--emulator bochs` for VT-x). On
    /// aarch64 the default guest is Debian's Linux kernel with a busybox initramfs, as a
    /// dom0less domU; elsewhere (or with --guest) a built-in test guest.
    Run(RunArgs),
    /// Run the host tests, then every end-to-end scenario.
    Test {
        /// Only run scenarios whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Skip the host tests (`cargo test`).
        #[arg(long)]
        no_host: bool,
        /// Skip the Linux boots (Debian's kernels are downloaded on first use).
        #[arg(long)]
        no_linux: bool,
        /// Run the aarch64 scenarios on real Xen 4.17 instead (the guests' own verdicts; the
        /// lines only our hypervisor prints are not asked for).
        #[arg(long, value_enum, default_value_t)]
        hypervisor: xen::Hypervisor,
    },
    /// Install everything at once: every emulator, firmware, GRUB, Rust targets, guest kernels
    /// (`run` and `test` install what they themselves need, so this is optional).
    Setup,
    /// Fetch Debian's kernel and build the busybox initramfs for an architecture; print their paths.
    FetchLinux {
        #[arg(long, value_enum, default_value_t = Arch::host())]
        arch: Arch,
    },
    /// `cargo fmt --check`, then clippy (warnings denied) on the host and on every bare target.
    Lint,
    /// A hypercall fuzzing campaign: the `fuzz` guest makes `--calls` random hypercalls from
    /// `--seed`; passes when it reports its canaries intact and nothing panicked.
    Fuzz(fuzz::FuzzArgs),
    /// Write a U-Boot script (boot.cmd, and boot.scr through mkimage) that loads the hypervisor,
    /// the board's device tree and every domain's images at computed addresses, adds the
    /// domains to /chosen with `fdt` commands and starts the hypervisor (booti / bootz), next
    /// to copies of those files: the contents of a board's FAT boot partition.
    Uboot(UbootArgs),
    /// Time hypercall, event channel and vGIC round trips in the `bench` guest under QEMU icount
    /// (smp 1), compare with real Xen's figures and write target/xtask/bench.json.
    Bench {
        /// aarch64 (the default: ns = guest instructions, with Xen references) or x86_64 (TSC cycles).
        #[arg(long)]
        arch: Option<Arch>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Also boot the same bench guests on Debian's Xen 4.17 under the same QEMU (aarch64)
        /// and print both columns and their ratio from this one run.
        #[arg(long, value_enum)]
        against: Option<xen::Hypervisor>,
        /// x86_64: `bochs` times the VT-x backend in Bochs (TSC cycles of Bochs' own
        /// instruction-driven clock) instead of AMD-V in QEMU under icount.
        #[arg(long, value_enum)]
        emulator: Option<qemu_x86::Emulator>,
        /// Instead: time one scheduling decision of each policy on the host with 1, 16 and
        /// 256 runnable vCPUs (hypervisor/examples/sched_bench.rs), ns of host time each.
        #[arg(long)]
        sched: bool,
    },
    /// The Xen Test Framework's HVM tests (fetched at a pinned commit and built on first use)
    /// booted one by one on x86_64, each verdict compared with qemu/xtf-expected.txt; writes
    /// target/xtask/xtf-results.json. Needs the network once (GitHub or xenbits).
    Xtf(xtf::XtfArgs),
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// Default: the host's own architecture (aarch64 on other hosts).
    #[arg(long, value_enum, default_value_t = Arch::host())]
    pub arch: Arch,
    /// Guest kernel to boot (default: Debian's).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for the guest (default on ARM: the busybox initramfs).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// A dom0less boot configuration (`.dts` or `.dtb`): `/chosen` nodes with
    /// `compatible = "xen,domain"` whose modules name their images with `xen,uefi-binary`
    /// (aarch64, ARMv7; x86_64 as multiboot2 modules, named by `mb-index`). Replaces the
    /// default domain; see qemu/configs/.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Guest kernel command line.
    #[arg(long)]
    pub append: Option<String>,
    /// CPUs of the emulated machine (and vCPUs of the aarch64 Linux domU).
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// ARM: the emulated machine's GIC version (QEMU `virt` `gic-version=`): 3 on aarch64 and
    /// 2 on ARMv7 by default; `--gic 2` on aarch64 runs guests on the virtual GICv2 (GIC-400).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub gic: Option<u8>,
    /// Deterministic time: one guest instruction is one virtual nanosecond (QEMU only).
    #[arg(long)]
    pub icount: bool,
    /// Boot this built-in test guest (hello, enosys, guest-fault) the way the test scenarios
    /// do, instead of the default guest.
    #[arg(long)]
    pub guest: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// x86_64 only: QEMU (AMD-V under TCG `-cpu max`, the default) or Bochs (VT-x).
    #[arg(long, value_enum)]
    pub emulator: Option<qemu_x86::Emulator>,
    /// x86_64 only: the default Linux guest's architecture. `i386` boots Debian's 686-pae
    /// kernel and an i386 busybox initramfs as a 32-bit PVH guest (default: amd64).
    #[arg(long, value_enum)]
    pub guest_arch: Option<GuestArch>,
    /// Boot the same guests on real Xen 4.17 (Debian's arm64 build) instead of ours, from the
    /// same boot device tree, to compare (aarch64 only).
    #[arg(long, value_enum, default_value_t)]
    pub hypervisor: xen::Hypervisor,
    /// Boot on QEMU's model of a real board (instead of `virt`), from the board's own DTB
    /// out of Debian's kernel package; implies its architecture.
    #[arg(long, value_enum)]
    pub board: Option<boards::Board>,
    /// Boot through a bootloader instead of QEMU's `-kernel`: `u-boot` runs the script
    /// `cargo xtask uboot` writes from a FAT disk image (QEMU `virt`, aarch64 and ARMv7).
    #[arg(long, value_enum)]
    pub firmware: Option<Firmware>,
}

impl RunArgs {
    /// A run of `arch` on one CPU with every other option at its default, for xtask's own
    /// boots (scenarios, benchmarks, XTF), which then set what they need.
    pub fn one_cpu(arch: Arch, timeout: u64) -> Self {
        RunArgs {
            arch,
            kernel: None,
            initrd: None,
            config: None,
            append: None,
            smp: 1,
            gic: None,
            icount: false,
            guest: None,
            timeout,
            emulator: None,
            guest_arch: None,
            hypervisor: xen::Hypervisor::Xhv,
            board: None,
            firmware: None,
        }
    }
}

/// What starts the hypervisor (`--firmware`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// Debian's `u-boot-qemu` (`-bios`), which finds `boot.scr` on a FAT partition of a
    /// virtio disk and runs it: the script `cargo xtask uboot` writes (QEMU `virt` only).
    #[value(name = "u-boot")]
    UBoot,
}

#[derive(clap::Args, Clone)]
pub struct UbootArgs {
    /// A dom0less configuration (as for `run --config`); default: the Debian Linux domU `run`
    /// boots.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The board whose DTB (Debian's, unedited) and RAM the script is for; default: QEMU `virt`.
    #[arg(long, value_enum)]
    pub board: Option<boards::Board>,
    /// The hypervisor's architecture on QEMU `virt` (a board implies its own).
    #[arg(long, value_enum, default_value_t = Arch::Aarch64)]
    pub arch: Arch,
    /// vCPUs of the default Linux domU (and CPUs of the `virt` DTB).
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Where to write the files (default: target/xtask/uboot/<board or virt-arch>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A guest architecture other than the hypervisor's own (`--guest-arch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestArch {
    /// 32-bit x86: Debian's i386 kernel as a 32-bit PVH guest of the x86_64 hypervisor.
    I386,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Build { arch } => build_cmd(arch),
        Cmd::Run(args) => run_cmd(&args),
        Cmd::Test { filter, no_host, no_linux, hypervisor } => {
            test::run(filter.as_deref(), !no_host, no_linux, hypervisor)
        }
        Cmd::Setup => setup::run(),
        Cmd::Uboot(args) => uboot::command(&args),
        Cmd::Lint => prereq::ensure(&prereq::Needs::default()).and_then(|()| build::lint()),
        Cmd::Bench { sched: true, .. } => bench::sched_host(),
        Cmd::Bench { arch, timeout, against, emulator, sched: false } => {
            bench::run(arch, timeout, against == Some(xen::Hypervisor::Xen), emulator)
        }
        Cmd::Fuzz(args) => {
            let mut needs = prereq::Needs::default();
            needs.boot(args.arch, prereq::X86Emulator::of(args.emulator));
            prereq::ensure(&needs).and_then(|()| fuzz::run(&args))
        }
        Cmd::Xtf(args) => xtf::run(&args),
        Cmd::FetchLinux { arch } => images::linux_guest(arch).map(|g| {
            println!("kernel: {}\ninitrd: {}", g.kernel.display(), g.initrd.display());
            0
        }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn build_cmd(arch: Option<Arch>) -> Result<i32> {
    prereq::ensure(&prereq::Needs::default())?;
    let arches = arch.map(|a| vec![a]).unwrap_or_else(|| Arch::ALL.to_vec());
    for a in arches {
        let out = build::hypervisor_and_guests(a)?;
        println!("built {}: {}", a.name(), out.hypervisor.display());
    }
    Ok(0)
}

/// What `cargo xtask run` with these options will use from the host.
fn run_needs(args: &RunArgs) -> prereq::Needs {
    let mut needs = prereq::Needs::default();
    needs.boot(args.arch, prereq::X86Emulator::of(args.emulator));
    let default_linux = args.guest.is_none() && args.config.is_none();
    // Real Xen comes from Debian's arm64 archive, as the guest kernels do.
    let xen = args.hypervisor == xen::Hypervisor::Xen;
    let own_images = args.kernel.is_some() && args.initrd.is_some();
    if args.guest_arch == Some(GuestArch::I386) && default_linux && !own_images {
        needs.linux_i386();
    } else if xen || (default_linux && !own_images) {
        needs.linux(args.arch);
    }
    if args.config.is_some() {
        needs.dtc();
    }
    if args.firmware == Some(Firmware::UBoot) {
        needs.uboot(args.arch, args.board);
    }
    needs
}

fn run_cmd(args: &RunArgs) -> Result<i32> {
    let board_args;
    let args = match args.board {
        Some(b) => {
            board_args = RunArgs { arch: b.profile().arch, ..args.clone() };
            &board_args
        }
        None => args,
    };
    prereq::ensure(&run_needs(args))?;
    let on_xen = args.hypervisor == xen::Hypervisor::Xen;
    anyhow::ensure!(!on_xen || args.arch == Arch::Aarch64, "--hypervisor xen boots aarch64 only");
    anyhow::ensure!(args.guest_arch.is_none() || args.arch == Arch::X86_64, "--guest-arch is for --arch x86_64");
    anyhow::ensure!(
        args.config.is_none() || (args.kernel.is_none() && args.initrd.is_none() && args.append.is_none()),
        "--config names every domain's kernel, ramdisk and bootargs itself (`xen,uefi-binary`, `bootargs`): \
         drop --kernel/--initrd/--append, or write them into the configuration"
    );
    anyhow::ensure!(
        args.firmware.is_none()
            || (matches!(args.board, None | Some(boards::Board::Raspi4b)) && !on_xen && args.arch != Arch::X86_64),
        "--firmware u-boot boots our hypervisor on QEMU `virt` (aarch64, armv7) and raspi4b; for \
         another board, `cargo xtask uboot --board NAME` writes the script and files for its SD card"
    );
    let built = build::hypervisor_and_guests(args.arch)?;
    let mut args = args.clone();
    let guest = match (&args.guest, &args.kernel) {
        _ if args.firmware.is_some() => emulator::Guest::UBoot(uboot::disk_for_run(&built, &args)?),
        _ if args.config.is_some() => emulator::configured(&built, &args, args.config.as_deref().unwrap())?,
        // Xen boots domUs from a boot device tree only: a single guest becomes one.
        (Some(name), _) if on_xen => {
            emulator::Guest::Dom0less(emulator::single_domu(&built, &args, &built.guest(name)?)?)
        }

        (None, _) if matches!(args.arch, Arch::Aarch64 | Arch::Armv7) => {
            emulator::Guest::Dom0less(emulator::linux_domu(&built, &args)?)
        }
        (None, _) if args.arch == Arch::X86_64 => {
            if args.guest_arch == Some(GuestArch::I386) && (args.kernel.is_none() || args.initrd.is_none()) {
                let fetched = images::linux_guest_i386()?;
                args.kernel.get_or_insert(fetched.kernel);
                args.initrd.get_or_insert(fetched.initrd);
            }
            emulator::Guest::Loader { kernel: qemu_x86::linux_guest(&mut args)? }
        }
        (Some(name), _) => emulator::Guest::Loader { kernel: built.guest(name)? },
        (None, Some(kernel)) => emulator::Guest::Loader { kernel: kernel.clone() },
        (None, None) => emulator::Guest::Loader { kernel: built.guest("hello")? },
    };
    // On a board, QEMU's guest-loader never reaches RAM: a single guest becomes a boot DT.
    let guest = match guest {
        emulator::Guest::Loader { kernel } if args.board.is_some() => {
            emulator::Guest::Dom0less(emulator::single_domu(&built, &args, &kernel)?)
        }
        other => other,
    };
    let run = emulator::Boot { arch: args.arch, built: &built, guest, args };
    let outcome = emulator::boot(&run, emulator::Echo::Stream)?;
    eprintln!("xtask: {}", outcome.summary());
    if run.args.icount {
        report_guest_time(&outcome.console);
    }
    Ok(outcome.exit_code())
}

/// Under `-icount` the hypervisor's "ended at" line is exact guest-virtual time: report it
/// next to the init marker, the figure our boot benchmark compares with real Xen.
fn report_guest_time(console: &str) {
    let marker = console.lines().find(|l| l.contains("XHV-INIT-MARKER"));
    let ended = console
        .lines()
        .filter_map(|l| l.split_once(": ended at "))
        .map(|(_, t)| t.split(';').next().unwrap_or(t).trim())
        .next();
    match (marker, ended) {
        (Some(m), Some(t)) => {
            eprintln!("xtask: guest-virtual time (icount) from power-on to the domain's power-off: {t}");
            eprintln!("xtask: (the marker `{}` was printed just before it)", m.trim());
        }
        (None, Some(t)) => eprintln!("xtask: guest-virtual time (icount) from power-on to the domain's end: {t}"),
        _ => eprintln!("xtask: no guest-virtual end time was reported (this backend has no clock yet)"),
    }
}
