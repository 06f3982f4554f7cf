//! Booting a built hypervisor with a guest: QEMU for ARM, Bochs (VT-x) for x86_64.
//!
//! The emulator's console streams to the terminal (or only to a log, for tests) while it
//! runs; a run that outlives its timeout is killed and reported as such, never left hanging.

use crate::RunArgs;
use crate::arch::Arch;
use crate::bootcfg_file::{self, ConfigDomain};
use crate::bootdt::{self, DomainSpec, Module};
use crate::build::{Built, workspace_root};
use crate::images;
use crate::xen::{self, Hypervisor};
use anyhow::{Context, Result, bail, ensure};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the guest kernel is placed (by guest-loader or a dom0less `loader` device). QEMU
/// puts its own DTB at RAM + min(RAM/2, 128 MiB) = 0x4800_0000 for a raw `-kernel`, so stay
/// clear of that.
const ARM_KERNEL_ADDR: u64 = 0x4A00_0000;
/// Modules after the kernel start on a 2 MiB boundary.
const MODULE_ALIGN: u64 = 2 << 20;
/// The emulated machine's RAM (the same for the DTB dump and the boot).
const MACHINE_RAM: &str = "1G";
/// QEMU `virt` options of the two ARM machines: binary, machine, CPU.
const QEMU_AARCH64: (&str, &str, &str) = ("qemu-system-aarch64", "virt,virtualization=on,gic-version=3", "cortex-a57");
const QEMU_ARMV7: (&str, &str, &str) = ("qemu-system-arm", "virt,virtualization=on,gic-version=2", "cortex-a15");

/// The Linux domU `cargo xtask run` boots on aarch64.
pub const LINUX_DOMU_NAME: &str = "domU1";
pub const LINUX_DOMU_MEMORY_MIB: u64 = 512;
/// Its default command line: the Xen PV console (`hvc0`, the ring the hypervisor drains).
/// `console=ttyAMA0` uses the vpl011 instead; add `earlycon=pl011,mmio32,0x22000000` to see
/// the earliest messages through it.
pub const DEFAULT_LINUX_BOOTARGS: &str = "console=hvc0";

pub struct Boot<'a> {
    pub arch: Arch,
    pub built: &'a Built,
    pub guest: Guest,
    pub args: RunArgs,
}

/// How the guests reach the hypervisor.
pub enum Guest {
    /// One kernel (and `args.initrd`) that QEMU's guest-loader (ARM) or GRUB (x86) places.
    Loader { kernel: PathBuf },
    /// A boot DTB with dom0less domain nodes, and the images it names (ARM only).
    Dom0less(Dom0less),
    /// x86: a boot configuration DT and the images it names by index, all multiboot2 modules
    /// of the GRUB ISO, the DT first.
    Multiboot(MultibootConfig),
    /// ARM through U-Boot (`--firmware u-boot`): a disk image whose FAT partition holds the
    /// script `cargo xtask uboot` writes and everything it loads.
    UBoot(crate::uboot::Disk),
}

pub struct MultibootConfig {
    /// In GRUB's order: the configuration DTB, then every image it names.
    pub modules: Vec<IsoModule>,
    /// How many domains the configuration describes.
    pub domains: usize,
}

/// One `module2` line of the GRUB configuration.
pub struct IsoModule {
    pub file: PathBuf,
    /// The module's multiboot2 string (a kernel's: its command line).
    pub cmdline: String,
}

pub struct Dom0less {
    pub dtb: PathBuf,
    /// How many domains the DTB describes.
    pub domains: usize,
    /// Each image and the physical address the DTB says it is at.
    pub images: Vec<(PathBuf, u64)>,
}

/// Prepare the ARM Linux domU (aarch64's arm64 Image, ARMv7's zImage): Debian's kernel and our initramfs unless `--kernel` /
/// `--initrd` name others, described by a dom0less node added to the DTB QEMU generates for
/// the same machine, written next to the build output.
pub fn linux_domu(built: &Built, args: &RunArgs) -> Result<Dom0less> {
    dom0less(built, args, &[linux_domain(args)?])
}

/// The ARM Linux domU `run` boots, as a configuration would describe it.
pub fn linux_domain(args: &RunArgs) -> Result<ConfigDomain> {
    ensure!(matches!(args.arch, Arch::Aarch64 | Arch::Armv7), "a Linux domU is ARM's (x86_64 boots PVH)");
    let (kernel, initrd) = match (&args.kernel, &args.initrd) {
        (Some(k), Some(i)) => (k.clone(), i.clone()),
        (k, i) => {
            let fetched = images::linux_guest(args.arch)?;
            (k.clone().unwrap_or(fetched.kernel), i.clone().unwrap_or(fetched.initrd))
        }
    };
    Ok(ConfigDomain {
        name: LINUX_DOMU_NAME.to_string(),
        cpus: args.smp,
        memory_kib: LINUX_DOMU_MEMORY_MIB << 10,
        vpl011: true,
        kernel,
        bootargs: Some(args.append.clone().unwrap_or_else(|| DEFAULT_LINUX_BOOTARGS.to_string())),
        ramdisk: Some(initrd),
    })
}

/// Prepare the domains a hand-written dom0less configuration (`--config F.dts`) describes:
/// a boot DTB for QEMU on ARM, multiboot2 modules of the GRUB ISO on x86.
pub fn configured(built: &Built, args: &RunArgs, config: &Path) -> Result<Guest> {
    match args.arch {
        Arch::X86_64 => Ok(Guest::Multiboot(multiboot_config(built, config)?)),
        Arch::Aarch64 | Arch::Armv7 => Ok(Guest::Dom0less(configured_domus(built, args, config)?)),
    }
}

/// The x86 form of a configuration: the DT rewritten to name its images by multiboot2 module
/// index (module 0 is the DT itself), written next to the build output.
fn multiboot_config(built: &Built, config: &Path) -> Result<MultibootConfig> {
    let indexed = bootcfg_file::load_indexed(config)?;
    for d in &indexed.domains {
        eprintln!(
            "xtask: {}: {} vCPU(s), {} MiB, kernel {}{}, bootargs \"{}\"",
            d.name,
            d.cpus,
            d.memory_kib >> 10,
            d.kernel.display(),
            d.ramdisk.as_deref().map(|p| format!(", initrd {}", p.display())).unwrap_or_default(),
            d.bootargs.as_deref().unwrap_or("")
        );
    }
    let path = built.run_dir.join("boot-config.dtb");
    std::fs::write(&path, &indexed.dtb).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: boot configuration (modules by mb-index) -> {}", path.display());
    let mut modules = vec![IsoModule { file: path, cmdline: "boot-config".into() }];
    for image in indexed.images {
        let image = built.config_image(&image)?;
        let name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        modules.push(IsoModule { file: image, cmdline: grub_word(&name) });
    }
    // arch::boot::MAX_MODULES: the hypervisor drops modules past it.
    ensure!(
        modules.len() <= 16,
        "{} modules (the configuration and its images): the hypervisor takes 16",
        modules.len()
    );
    Ok(MultibootConfig { modules, domains: indexed.domains.len() })
}

/// `s` as one word of a GRUB `module2` line (it has no use for anything else than a label).
fn grub_word(s: &str) -> String {
    let w: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-+,".contains(c) { c } else { '_' }).collect();
    if w.is_empty() { "module".into() } else { w }
}

/// Prepare the domains a hand-written dom0less configuration (`--config F.dts`) describes
/// (ARM: a boot DTB for QEMU).
pub fn configured_domus(built: &Built, args: &RunArgs, config: &Path) -> Result<Dom0less> {
    ensure!(matches!(args.arch, Arch::Aarch64 | Arch::Armv7), "this boot configuration form is ARM's");
    let domains = config_domains(built, config)?;
    let boot = dom0less(built, args, &domains)?;
    // CPU pools and scheduler properties travel from the configuration into the boot DTB.
    let config_dtb = bootcfg_file::compile(config)?;
    let dtb = std::fs::read(&boot.dtb).with_context(|| format!("reading {}", boot.dtb.display()))?;
    let dtb =
        bootdt::with_sched(&dtb, &config_dtb).with_context(|| format!("boot configuration {}", config.display()))?;
    std::fs::write(&boot.dtb, dtb).with_context(|| format!("writing {}", boot.dtb.display()))?;
    Ok(boot)
}

/// The domains of a configuration, their images found (files, or built-in test guests).
pub fn config_domains(built: &Built, config: &Path) -> Result<Vec<ConfigDomain>> {
    let mut domains = bootcfg_file::load(config)?;
    for d in &mut domains {
        d.kernel = built.config_image(&d.kernel)?;
        d.ramdisk = d.ramdisk.as_deref().map(|r| built.config_image(r)).transpose()?;
    }
    Ok(domains)
}

/// Place every domain's images one after another above QEMU's own DTB, describe them with
/// dom0less nodes in the machine's DTB, and write that next to the build output.
fn dom0less(built: &Built, args: &RunArgs, domains: &[ConfigDomain]) -> Result<Dom0less> {
    let cpus = domains.iter().map(|d| d.cpus).max().unwrap_or(1).max(args.smp);
    let (host, mut next) = match args.board {
        // The board's own DTB, byte for byte: only `/chosen` gets the domains.
        Some(board) => {
            let dtb = board.dtb()?;
            eprintln!("xtask: {}: the board's device tree {}", board.name(), dtb.display());
            let bytes = std::fs::read(&dtb).with_context(|| format!("reading {}", dtb.display()))?;
            (bytes, board.profile().module_base)
        }
        None => (dump_dtb(args.arch, args.gic, cpus, &built.run_dir.join("qemu-virt.dtb"))?, ARM_KERNEL_ADDR),
    };
    let mut images = Vec::new();
    let mut place = |file: &Path| -> Result<Module> {
        let m = Module { addr: next, size: file_size(file)? };
        images.push((file.to_path_buf(), next));
        next = (next + m.size).next_multiple_of(MODULE_ALIGN);
        Ok(m)
    };
    let mut specs = Vec::new();
    for d in domains {
        let kernel = place(&d.kernel)?;
        let ramdisk = d.ramdisk.as_deref().map(&mut place).transpose()?;
        eprintln!(
            "xtask: {}: {} vCPU(s), {} MiB{}, kernel {} at {:#x}{}, bootargs \"{}\"",
            d.name,
            d.cpus,
            d.memory_kib >> 10,
            if d.vpl011 { ", vpl011" } else { "" },
            d.kernel.display(),
            kernel.addr,
            d.ramdisk
                .as_deref()
                .zip(ramdisk)
                .map(|(p, m)| format!(", initrd {} at {:#x}", p.display(), m.addr))
                .unwrap_or_default(),
            d.bootargs.as_deref().unwrap_or("")
        );
        specs.push(DomainSpec::placed(d, kernel, ramdisk));
    }
    let mut dtb = bootdt::with_domains(&host, &specs)?;
    if args.hypervisor == Hypervisor::Xen {
        dtb = xen::adapt_dtb(&dtb)?;
    }
    let path = built.run_dir.join("boot.dtb");
    std::fs::write(&path, dtb).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: boot device tree -> {}", path.display());
    Ok(Dom0less { dtb: path, domains: specs.len(), images })
}

/// One domain running `kernel` (a built-in test guest), for a hypervisor that boots domUs
/// from a boot device tree only (real Xen).
pub fn single_domu(built: &Built, args: &RunArgs, kernel: &Path) -> Result<Dom0less> {
    let domain = ConfigDomain {
        name: "domU1".into(),
        cpus: args.smp.max(1),
        memory_kib: 64 << 10,
        vpl011: false,
        kernel: kernel.to_path_buf(),
        bootargs: args.append.clone(),
        ramdisk: args.initrd.clone(),
    };
    dom0less(built, args, &[domain])
}

/// The DTB QEMU builds for the machine `cargo xtask run` boots (`-machine ...,dumpdtb=`).
pub(crate) fn dump_dtb(arch: Arch, gic: Option<u8>, smp: u32, out: &Path) -> Result<Vec<u8>> {
    let (binary, machine, cpu) = qemu_machine(arch, gic)?;
    let _ = std::fs::remove_file(out);
    let res = Command::new(binary)
        .args(["-machine", &format!("{machine},dumpdtb={}", out.display())])
        .args(["-cpu", cpu, "-m", MACHINE_RAM, "-smp", &smp.to_string(), "-nographic"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {binary} (run `cargo xtask setup`?)"))?;
    ensure!(res.status.success(), "{binary} could not dump its DTB:\n{}", String::from_utf8_lossy(&res.stderr));
    std::fs::read(out).with_context(|| format!("reading {}", out.display()))
}

/// Binary, `-machine` and `-cpu` for `arch`, with the GIC version `gic` if one is asked for.
pub(crate) fn qemu_machine(arch: Arch, gic: Option<u8>) -> Result<(&'static str, String, &'static str)> {
    let (binary, machine, cpu) = match arch {
        Arch::Aarch64 => QEMU_AARCH64,
        Arch::Armv7 => QEMU_ARMV7,
        Arch::X86_64 => bail!("x86_64 boots under Bochs, not QEMU"),
    };
    let machine = match gic {
        Some(v) => {
            ensure!(arch == Arch::Aarch64 || v == 2, "ARMv7 (HYP mode) runs with a GICv2 only");
            let base = machine.split(",gic-version=").next().unwrap_or(machine);
            format!("{base},gic-version={v}")
        }
        None => machine.to_string(),
    };
    Ok((binary, machine, cpu))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Copy the console to our stdout as it arrives.
    Stream,
    /// Keep it to ourselves (tests print one line per scenario).
    Quiet,
}

/// Console text after which a guest never recovers (it spins forever): the run is stopped
/// a moment later instead of waiting for the timeout.
const HOPELESS: [&str; 1] = ["---[ end Kernel panic"];
/// What Linux's test `/init` prints once it is up: the end of a boot.
const MARKER: &[u8] = b"XHV-INIT-MARKER";
/// How long the console may keep talking after a [`HOPELESS`] line.
const HOPELESS_GRACE: Duration = Duration::from_secs(2);

pub struct Outcome {
    /// The emulator's exit status; `None` when we killed it (timeout or hopeless guest).
    pub status: Option<i32>,
    /// The [`HOPELESS`] line that made us stop the emulator early.
    pub stopped_on: Option<&'static str>,
    /// We stopped the emulator because the guests had finished (Xen idles after them).
    pub finished: bool,
    pub console: String,
    pub elapsed: Duration,
    /// When the Linux init marker (`XHV-INIT-MARKER`) first appeared: the boot time.
    pub marker_at: Option<Duration>,
}

impl Outcome {
    pub fn summary(&self) -> String {
        if self.finished {
            let secs = self.elapsed.as_secs_f64();
            return format!(
                "the guests finished; emulator stopped after {secs:.1} s (the hypervisor idles after them)"
            );
        }
        match (self.status, self.stopped_on) {
            (None, Some(line)) => {
                format!(
                    "the guest printed `{line}` and cannot recover: emulator stopped after {:.1} s",
                    self.elapsed.as_secs_f64()
                )
            }
            (None, None) => format!("timed out after {:.1} s (emulator killed)", self.elapsed.as_secs_f64()),
            (Some(c), _) => format!("emulator exited with status {c} after {:.1} s", self.elapsed.as_secs_f64()),
        }
    }

    /// What `cargo xtask run` exits with: the emulator's status, 124 on timeout.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Some(code) => code,
            None if self.finished => 0,
            None => 124,
        }
    }
}

pub fn boot(run: &Boot, echo: Echo) -> Result<Outcome> {
    boot_until(run, echo, &|_| false)
}

/// Boot, and also stop the emulator once `done` holds for the console (a hypervisor that idles
/// after its guests end, as Xen does, never exits by itself).
pub fn boot_until(run: &Boot, echo: Echo, done: &dyn Fn(&str) -> bool) -> Result<Outcome> {
    match run.arch {
        Arch::Aarch64 | Arch::Armv7 => qemu_arm(run, echo, done),
        Arch::X86_64 if crate::qemu_x86::wants_qemu(run) => crate::qemu_x86::boot(run, echo),
        Arch::X86_64 => bochs(run, echo),
    }
}

fn qemu_arm(run: &Boot, echo: Echo, done: &dyn Fn(&str) -> bool) -> Result<Outcome> {
    let a = &run.args;
    let (binary, machine, cpu) = qemu_machine(run.arch, run.args.gic)?;
    let hypervisor = match (a.hypervisor, a.board.and_then(|b| b.profile().link_base)) {
        (Hypervisor::Xhv, Some(base)) => crate::build::armv7_image_at(base)?,
        (Hypervisor::Xhv, None) => run.built.hypervisor.clone(),
        (Hypervisor::Xen, _) => xen::image()?,
    };
    let binary = a.board.map_or(binary, |b| b.profile().qemu);
    let mut cmd = Command::new(binary);
    match a.board {
        // The board's own CPUs, RAM and UART wiring.
        Some(board) => {
            let p = board.profile();
            cmd.args(["-machine", p.machine, "-m", p.memory, "-smp", &p.cpus.to_string()])
                .args(["-nographic", "-no-reboot", "-semihosting"])
                .args(p.serial);
        }
        None => {
            cmd.args([
                "-machine",
                &machine,
                "-cpu",
                cpu,
                "-m",
                MACHINE_RAM,
                "-nographic",
                "-no-reboot",
                "-semihosting",
            ])
            .args(["-smp", &a.smp.to_string()]);
        }
    }
    match &run.guest {
        // U-Boot loads the hypervisor and everything else from the disk.
        Guest::UBoot(disk) => {
            let target = crate::uboot::Target { arch: run.arch, board: a.board };
            cmd.args(crate::uboot::qemu_args(target, disk)?);
        }
        _ => {
            cmd.arg("-kernel").arg(&hypervisor);
        }
    }
    match &run.guest {
        Guest::UBoot(_) => {}
        Guest::Loader { .. } if a.board.is_some() => bail!("on a board, guests are described by a boot DT"),
        Guest::Loader { kernel } => {
            let mut loader = format!("guest-loader,addr={ARM_KERNEL_ADDR:#x},kernel={}", qemu_opt(kernel)?);
            if let Some(append) = &a.append {
                loader += &format!(",bootargs={}", append.replace(',', ",,"));
            }
            cmd.args(["-device", &loader]);
            if let Some(initrd) = &a.initrd {
                let addr = (ARM_KERNEL_ADDR + file_size(kernel)?).next_multiple_of(MODULE_ALIGN);
                cmd.args(["-device", &format!("guest-loader,addr={addr:#x},initrd={}", qemu_opt(initrd)?)]);
            }
        }
        Guest::Multiboot(_) => bail!("multiboot2 boot configurations are for x86_64"),
        Guest::Dom0less(d) => {
            cmd.arg("-dtb").arg(&d.dtb);
            for (image, addr) in &d.images {
                cmd.args(["-device", &format!("loader,file={},addr={addr:#x},force-raw=on", qemu_opt(image)?)]);
            }
        }
    }
    if a.icount {
        cmd.args(["-icount", "shift=0,sleep=off", "-seed", "1", "-rtc", "clock=vm"]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    announce(&cmd, echo);
    let mut child = cmd.spawn().with_context(|| format!("starting {binary} (run `cargo xtask setup`?)"))?;
    let stdout = child.stdout.take().unwrap();
    let domains = match &run.guest {
        Guest::Dom0less(d) => d.domains,
        Guest::Multiboot(m) => m.domains,
        Guest::UBoot(d) => d.domains,
        Guest::Loader { .. } => 1,
    };
    let on_xen = a.hypervisor == Hypervisor::Xen;
    let finished = |console: &str| done(console) || (on_xen && xen::ended(console) >= domains);
    watch_until(child, Source::Pipe(pipe_reader(stdout)), echo, Duration::from_secs(a.timeout), &finished)
}

fn bochs(run: &Boot, echo: Echo) -> Result<Outcome> {
    if run.args.icount {
        eprintln!("xtask: --icount is a QEMU option; Bochs runs with `clock: sync=none`, already deterministic");
    }
    let out = &run.built.run_dir;
    let iso = grub_iso(run, out, echo)?;
    let serial = out.join("serial.log");
    let _ = std::fs::remove_file(&serial);
    std::fs::write(&serial, b"")?;
    let qemu_dir = workspace_root().join("qemu/x86");
    let log = std::fs::File::create(out.join("bochs.log"))?;
    let mut cmd = Command::new("bochs");
    cmd.arg("-q")
        .arg("-f")
        .arg(qemu_dir.join("bochsrc"))
        .arg("-rc")
        .arg(qemu_dir.join("bochs.rc"))
        .arg(format!("cpu: count={}, ips=100000000, reset_on_triple_fault=0", run.args.smp.max(1)))
        .env("XHV_ISO", &iso)
        .env("XHV_SERIAL", &serial)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    announce(&cmd, echo);
    let child = cmd.spawn().context("starting bochs (run `cargo xtask setup`?)")?;
    let outcome = watch(child, Source::File(serial, 0), echo, Duration::from_secs(run.args.timeout))?;
    if echo == Echo::Stream && outcome.status != Some(0) {
        eprintln!("xtask: Bochs' own log: {}", out.join("bochs.log").display());
    }
    Ok(outcome)
}

/// The multiboot2 modules of an x86 boot, in order: one guest kernel (its command line from
/// `--append`) and its initrd, or a boot configuration and the images it names.
fn iso_modules(run: &Boot) -> Result<Vec<IsoModule>> {
    match &run.guest {
        Guest::Loader { kernel } => {
            let mut m = vec![IsoModule { file: kernel.clone(), cmdline: run.args.append.clone().unwrap_or_default() }];
            if let Some(initrd) = &run.args.initrd {
                // The hypervisor takes a module called `initrd` as the ramdisk of the kernel before it.
                m.push(IsoModule { file: initrd.clone(), cmdline: "initrd".into() });
            }
            Ok(m)
        }
        Guest::Multiboot(c) => {
            Ok(c.modules.iter().map(|m| IsoModule { file: m.file.clone(), cmdline: m.cmdline.clone() }).collect())
        }
        Guest::Dom0less(_) | Guest::UBoot(_) => bail!("an ARM boot device tree cannot boot x86_64: use --config"),
    }
}

/// A GRUB multiboot2 ISO with the hypervisor and the guest's modules ([`iso_modules`]).
pub(crate) fn grub_iso(run: &Boot, out: &Path, echo: Echo) -> Result<PathBuf> {
    let start = Instant::now();
    let root = out.join("iso");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("boot/grub"))?;
    std::fs::copy(&run.built.hypervisor, root.join("boot/hypervisor.elf"))?;
    let mut modules = String::new();
    let one_guest = matches!(run.guest, Guest::Loader { .. });
    for (i, m) in iso_modules(run)?.iter().enumerate() {
        // A single guest's files keep the names they always had.
        let name = match i {
            0 if one_guest => "kernel".to_string(),
            1 if one_guest => "initrd".to_string(),
            _ => format!("module{i}"),
        };
        std::fs::copy(&m.file, root.join("boot").join(&name))
            .with_context(|| format!("reading {}", m.file.display()))?;
        modules += &format!("  module2 /boot/{name} {}\n", m.cmdline);
    }
    let cfg = format!(
        "set timeout=0\nset default=0\nmenuentry \"xhv\" {{\n  multiboot2 /boot/hypervisor.elf\n{modules}  boot\n}}\n"
    );
    std::fs::write(root.join("boot/grub/grub.cfg"), cfg)?;
    let iso = out.join("xhv.iso");
    let res = Command::new("grub-mkrescue").arg("-o").arg(&iso).arg(&root).output().context("running grub-mkrescue")?;
    if !res.status.success() {
        bail!("grub-mkrescue failed:\n{}", String::from_utf8_lossy(&res.stderr));
    }
    if echo == Echo::Stream {
        let mib = std::fs::metadata(&iso).map(|m| m.len() as f64 / 1048576.0).unwrap_or(0.0);
        eprintln!("xtask: GRUB ISO ({mib:.1} MiB) -> {} in {:.1} s", iso.display(), start.elapsed().as_secs_f64());
    }
    Ok(iso)
}

pub(crate) enum Source {
    Pipe(mpsc::Receiver<Vec<u8>>),
    /// A file the emulator appends to, and how far we have read it.
    File(PathBuf, u64),
}

impl Source {
    fn poll(&mut self) -> Vec<u8> {
        match self {
            Source::Pipe(rx) => rx.try_iter().flatten().collect(),
            Source::File(path, pos) => {
                let mut buf = Vec::new();
                if let Ok(mut f) = std::fs::File::open(&*path) {
                    use std::io::Seek;
                    if f.seek(std::io::SeekFrom::Start(*pos)).is_ok() {
                        let _ = f.read_to_end(&mut buf);
                    }
                }
                *pos += buf.len() as u64;
                buf
            }
        }
    }
}

pub(crate) fn pipe_reader(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Follow the console until the emulator exits or the timeout passes.
pub(crate) fn watch(child: Child, source: Source, echo: Echo, timeout: Duration) -> Result<Outcome> {
    watch_until(child, source, echo, timeout, &|_| false)
}

/// [`watch`], and stop the emulator a moment after `done` holds for the console.
pub(crate) fn watch_until(
    mut child: Child,
    mut source: Source,
    echo: Echo,
    timeout: Duration,
    done: &dyn Fn(&str) -> bool,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut finished: Option<Instant> = None;
    let mut console = Vec::new();
    let mut hopeless: Option<(&'static str, Instant)> = None;
    let mut marker_at = None;
    let mut scanned: usize = 0;
    // Only what arrived since the last look can hold the marker (plus a marker's overlap).
    let mut look_for_marker = |console: &[u8]| {
        if marker_at.is_none()
            && console[scanned.saturating_sub(MARKER.len())..].windows(MARKER.len()).any(|w| w == MARKER)
        {
            marker_at = Some(start.elapsed());
        }
        scanned = console.len();
    };
    let take = |bytes: Vec<u8>, console: &mut Vec<u8>| {
        if echo == Echo::Stream && !bytes.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
        console.extend(bytes);
    };
    let status = loop {
        take(source.poll(), &mut console);
        look_for_marker(&console);
        if let Some(st) = child.try_wait()? {
            break Some(st.code().unwrap_or(128));
        }
        if hopeless.is_none() {
            // Only the tail can hold a new match (plus a marker's length of overlap).
            let tail = &console[console.len().saturating_sub(64 * 1024)..];
            let text = String::from_utf8_lossy(tail);
            hopeless = HOPELESS.iter().find(|h| text.contains(*h)).map(|h| (*h, Instant::now()));
        }
        if finished.is_none() && done(&String::from_utf8_lossy(&console)) {
            finished = Some(Instant::now());
        }
        let given_up = hopeless.is_some_and(|(_, at)| at.elapsed() > HOPELESS_GRACE);
        let over = finished.is_some_and(|at| at.elapsed() > HOPELESS_GRACE);
        if given_up || over || start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The pipe may still hold the last lines.
    std::thread::sleep(Duration::from_millis(100));
    take(source.poll(), &mut console);
    look_for_marker(&console);
    let stopped_on = if status.is_none() { hopeless.map(|(h, _)| h) } else { None };
    Ok(Outcome {
        status,
        stopped_on,
        finished: status.is_none() && finished.is_some(),
        console: String::from_utf8_lossy(&console).into_owned(),
        elapsed: start.elapsed(),
        marker_at,
    })
}

pub(crate) fn announce(cmd: &Command, echo: Echo) {
    if echo == Echo::Stream {
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        eprintln!("xtask: starting {} {}", cmd.get_program().to_string_lossy(), args.join(" "));
        eprintln!("xtask: the console follows (the hypervisor's lines carry (XEN), a guest's (dN))");
    }
}

fn file_size(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?.len())
}

/// A path as a QEMU `-device` option value (commas would split the option).
fn qemu_opt(p: &Path) -> Result<String> {
    let s = p.canonicalize().with_context(|| format!("{} not found", p.display()))?.to_string_lossy().into_owned();
    Ok(s.replace(',', ",,"))
}
