//! Booting as on a real board: a U-Boot script that loads the hypervisor, the board's device
//! tree and every domain's images from the boot partition, adds the dom0less domain nodes to
//! the tree's `/chosen` with `fdt` commands (what Xen's ImageBuilder writes for Xen), and
//! starts the hypervisor with `booti` (aarch64: an arm64 `Image`) or `bootz` (ARMv7: a
//! zImage header).
//!
//! `cargo xtask uboot` writes the script (`boot.cmd`, and `boot.scr` through `mkimage`) next
//! to the files it loads; `cargo xtask run --firmware u-boot` puts them on a FAT partition of
//! a disk image and boots Debian's `u-boot-qemu` on QEMU `virt`, whose distro boot finds
//! `boot.scr` there by itself.
//!
//! The domain nodes are the ones `bootdt::with_domains` writes for `cargo xtask run` (the same
//! [`DomainSpec`]s, placed by [`Layout`]), so the two paths describe domains identically.

use crate::arch::Arch;
use crate::boards::Board;
use crate::bootcfg_file::ConfigDomain;
use crate::bootdt::{DomainSpec, Module};
use crate::build::Built;
use crate::emulator;
use crate::{RunArgs, UbootArgs};
use anyhow::{Context, Result, bail, ensure};
use dtoolkit::{Node, Property};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every image starts on a 2 MiB boundary (arm64's `Image` must, and it keeps the rest tidy).
const ALIGN: u64 = 2 << 20;
/// What the script's `fdt resize` adds to the tree for the domain nodes.
const FDT_GROWTH: u64 = 64 << 10;
/// U-Boot relocates itself, its heap, stack and its own copy of the device tree to the top
/// of RAM (36 MiB of 1 GiB on QEMU `virt`): nothing is loaded into the last 64 MiB.
const UBOOT_TOP: u64 = 64 << 20;

/// Where U-Boot and the hypervisor run: QEMU `virt` or one of the board profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub arch: Arch,
    pub board: Option<Board>,
}

impl Target {
    /// The RAM the board's device tree describes (the part U-Boot loads into).
    pub fn ram(self) -> (u64, u64) {
        match self.board {
            Some(b) => b.profile().ram,
            // xtask's QEMU `virt` machines: 1 GiB at 0x4000_0000.
            None => (0x4000_0000, 1 << 30),
        }
    }

    /// Where the hypervisor is loaded: RAM + 0x80000 for the arm64 `Image` (its
    /// text_offset, on a 2 MiB boundary), the link address for the ARMv7 image.
    pub fn hypervisor_addr(self) -> u64 {
        let (base, _) = self.ram();
        match self.arch {
            Arch::Aarch64 => base + 0x8_0000,
            _ => base + 0x1_0000,
        }
    }

    /// The device U-Boot reads the files from when the script is not run by distro boot
    /// (which says where it found the script in `devtype`, `devnum` and `distro_bootpart`).
    pub fn default_device(self) -> &'static str {
        match self.board {
            None => "virtio 0:1",
            Some(_) => "mmc 0:1",
        }
    }

    fn name(self) -> String {
        match self.board {
            Some(b) => b.name().to_string(),
            None => format!("virt-{}", self.arch.name()),
        }
    }
}

/// One file the script loads, under its name on the boot partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

/// Where everything goes in the board's RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The hypervisor image, `size` covering its .bss and boot stack.
    pub hypervisor: Load,
    /// The device tree, `size` its room (file, `fdt resize` growth and U-Boot's padding).
    pub dtb: Load,
    /// The domains, their modules placed.
    pub domains: Vec<DomainSpec>,
    /// Every module file to load, each once per domain that names it.
    pub modules: Vec<Load>,
}

/// Place the hypervisor (`hv_size` bytes in memory), the tree (`dtb_size` bytes as a file)
/// and the domains' files one after another on 2 MiB boundaries above the hypervisor, and
/// check that all of it lies in the board's RAM below where U-Boot keeps itself. `names`
/// gives each file's name on the boot partition and `size` its length.
pub fn layout(
    target: Target,
    hv_size: u64,
    dtb: (&str, u64),
    domains: &[ConfigDomain],
    names: &dyn Fn(&Path) -> String,
    size: &dyn Fn(&Path) -> Result<u64>,
) -> Result<Layout> {
    let (ram_base, ram_size) = target.ram();
    let top = ram_base + ram_size.saturating_sub(UBOOT_TOP);
    let hv_addr = target.hypervisor_addr();
    let hypervisor = Load { name: "xhv".into(), addr: hv_addr, size: hv_size };
    let mut next = (hv_addr + hv_size).next_multiple_of(ALIGN);
    // U-Boot grows a tree it does not move by CONFIG_SYS_FDT_PAD (12 KiB) before booting.
    let dtb = Load { name: dtb.0.to_string(), addr: next, size: dtb.1 + FDT_GROWTH + 0x3000 };
    next = (dtb.addr + dtb.size).next_multiple_of(ALIGN);
    let mut modules = Vec::new();
    let mut place = |file: &Path| -> Result<Module> {
        let m = Module { addr: next, size: size(file)? };
        modules.push(Load { name: names(file), addr: m.addr, size: m.size });
        next = (m.addr + m.size).next_multiple_of(ALIGN);
        Ok(m)
    };
    let mut specs = Vec::new();
    for d in domains {
        let kernel = place(&d.kernel)?;
        let ramdisk = d.ramdisk.as_deref().map(&mut place).transpose()?;
        specs.push(DomainSpec::placed(d, kernel, ramdisk));
    }
    let end = modules.last().map_or(dtb.addr + dtb.size, |m| m.addr + m.size);
    ensure!(
        end <= top,
        "the images end at {end:#x}, past {top:#x} (the board's RAM {ram_base:#x}+{ram_size:#x} less the \
         64 MiB U-Boot keeps at its top)"
    );
    Ok(Layout { hypervisor, dtb, domains: specs, modules })
}

/// The script's text: load everything, add the domains to `/chosen`, boot. `has_chosen`:
/// whether the board's tree already has a `/chosen` node (most have, for `stdout-path`).
pub fn script(target: Target, layout: &Layout, has_chosen: bool) -> Result<String> {
    let mut s = String::new();
    let w = &mut s;
    let (boot, fdt_high) = match target.arch {
        Arch::Aarch64 => ("booti", "0xffffffffffffffff"),
        _ => ("bootz", "0xffffffff"),
    };
    writeln!(w, "# xhv on {}, written by `cargo xtask uboot`: load the hypervisor, the device", target.name())?;
    writeln!(w, "# tree and the domains' images, add the domains to /chosen (Xen's dom0less binding),")?;
    writeln!(w, "# start the hypervisor with {boot}. Run by distro boot, or `load ...; source ...`.")?;
    writeln!(w, "echo \"xhv: U-Boot script for {}\"", target.name())?;
    // Distro boot says where it found us; by hand, the board's usual boot partition.
    writeln!(w, "setenv xhv_dev \"{}\"", target.default_device())?;
    writeln!(w, "if test -n \"${{devtype}}\" && test -n \"${{distro_bootpart}}\"; then")?;
    writeln!(w, "  setenv xhv_dev \"${{devtype}} ${{devnum}}:${{distro_bootpart}}\"")?;
    writeln!(w, "fi")?;
    for l in std::iter::once(&layout.hypervisor).chain([&layout.dtb]).chain(&layout.modules) {
        ensure!(plain_name(&l.name), "{:?}: a file name on the boot partition must be plain", l.name);
        writeln!(w, "load ${{xhv_dev}} {:#x} {}", l.addr, l.name)?;
    }
    writeln!(w, "fdt addr {:#x}", layout.dtb.addr)?;
    writeln!(w, "fdt resize {FDT_GROWTH}")?;
    if !has_chosen {
        writeln!(w, "fdt mknode / chosen")?;
    }
    // `fdt mknode` puts a new node before its siblings (libfdt's fdt_add_subnode): made last
    // to first, the domains end up in the configuration's order, which gives them their ids.
    for d in layout.domains.iter().rev() {
        domain_commands(w, d).with_context(|| format!("domain {}", d.name))?;
    }
    // Keep the tree where it is (U-Boot would copy it below its own idea of the top).
    writeln!(w, "setenv fdt_high {fdt_high}")?;
    writeln!(w, "{boot} {:#x} - {:#x}", layout.hypervisor.addr, layout.dtb.addr)?;
    Ok(s)
}

/// The `fdt` commands that make the node [`crate::bootdt`] would write for `d`.
fn domain_commands(w: &mut String, d: &DomainSpec) -> Result<()> {
    ensure!(plain_name(&d.name), "a domain node name must be letters, digits and `,._+-`");
    let node = format!("/chosen/{}", d.name);
    writeln!(w, "fdt mknode /chosen {}", d.name)?;
    writeln!(w, "fdt set {node} compatible \"xen,domain\"")?;
    // `#` would start a comment in U-Boot's shell: quoted, it is part of the name.
    writeln!(w, "fdt set {node} \"#address-cells\" <0x2>")?;
    writeln!(w, "fdt set {node} \"#size-cells\" <0x2>")?;
    writeln!(w, "fdt set {node} memory <{:#x} {:#x}>", d.memory_kib >> 32, d.memory_kib & 0xffff_ffff)?;
    writeln!(w, "fdt set {node} cpus <{:#x}>", d.cpus)?;
    if d.vpl011 {
        writeln!(w, "fdt set {node} vpl011")?;
    }
    let mut module = |kind: &str, m: Module, bootargs: Option<&str>| -> Result<()> {
        let name = format!("module@{:x}", m.addr);
        writeln!(w, "fdt mknode {node} {name}")?;
        let path = format!("{node}/{name}");
        writeln!(w, "fdt set {path} compatible \"{kind}\" \"multiboot,module\"")?;
        let cells = |v: u64| format!("{:#x} {:#x}", v >> 32, v & 0xffff_ffff);
        writeln!(w, "fdt set {path} reg <{} {}>", cells(m.addr), cells(m.size))?;
        if let Some(args) = bootargs {
            // Inside double quotes U-Boot's shell still expands `$` and ends at `"`.
            if let Some(c) = args.chars().find(|c| matches!(c, '"' | '$' | '\\' | '\n' | '\0')) {
                bail!("bootargs {args:?}: {c:?} cannot be written into a U-Boot script");
            }
            writeln!(w, "fdt set {path} bootargs \"{args}\"")?;
        }
        Ok(())
    };
    // Last to first, as the domains.
    if let Some(r) = d.ramdisk {
        module("multiboot,ramdisk", r, None)?;
    }
    module("multiboot,kernel", d.kernel, d.bootargs.as_deref())?;
    Ok(())
}

/// Letters, digits and `,._+-@` (node names, FAT file names), nothing the shell would read.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 31 && s.chars().all(|c| c.is_ascii_alphanumeric() || ",._+-@".contains(c))
}

/// The in-memory size of a hypervisor image, from its header: the arm64 `Image`'s
/// image_size (offset 16), the zImage header's end - start (0x2c - 0x28).
pub fn image_size(arch: Arch, image: &[u8]) -> Result<u64> {
    let u32_at = |o: usize| image.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| image.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    match arch {
        Arch::Aarch64 => {
            ensure!(image.get(0x38..0x3c) == Some(b"ARM\x64"), "not an arm64 Image (no ARM\\x64 magic at 0x38)");
            let size = u64_at(16).unwrap_or(0);
            ensure!(size >= image.len() as u64, "the Image header's image_size ({size:#x}) is below its file size");
            Ok(size)
        }
        Arch::Armv7 => {
            ensure!(u32_at(0x24) == Some(0x016f_2818), "not a zImage (no magic 0x016f2818 at 0x24)");
            let (start, end) = (u32_at(0x28).unwrap_or(0), u32_at(0x2c).unwrap_or(0));
            ensure!(end > start && u64::from(end - start) >= image.len() as u64, "bad zImage start/end");
            Ok(u64::from(end - start))
        }
        Arch::X86_64 => bail!("U-Boot boots the ARM hypervisors"),
    }
}

/// The zImage header's start address: where an ARMv7 image must be loaded.
pub fn zimage_start(image: &[u8]) -> Option<u64> {
    image.get(0x28..0x2c).map(|b| u64::from(u32::from_le_bytes(b.try_into().unwrap())))
}

/// What `cargo xtask uboot` (and `run --firmware u-boot`) writes into `dir`.
pub struct Written {
    pub dir: PathBuf,
    /// Every file for the boot partition: the script (`boot.scr`, `boot.cmd`), the
    /// hypervisor, the tree and the modules.
    pub files: Vec<PathBuf>,
    pub layout: Layout,
}

/// Write the boot partition's files into `dir`: `hypervisor` as `xhv`, `dtb` (the board's
/// tree, unedited) under its own name, each domain's images, `boot.cmd` and `boot.scr`.
pub fn write(target: Target, hypervisor: &Path, dtb: &Path, domains: &[ConfigDomain], dir: &Path) -> Result<Written> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let image = std::fs::read(hypervisor).with_context(|| format!("reading {}", hypervisor.display()))?;
    let hv_size = image_size(target.arch, &image).with_context(|| format!("{}", hypervisor.display()))?;
    if target.arch == Arch::Armv7 {
        let start = zimage_start(&image).unwrap_or(0);
        let want = target.hypervisor_addr();
        ensure!(start == want, "{} is linked at {start:#x}, the board loads it at {want:#x}", hypervisor.display());
    }
    let tree = std::fs::read(dtb).with_context(|| format!("reading {}", dtb.display()))?;
    let fdt = dtoolkit::fdt::Fdt::new(&tree).with_context(|| format!("{} is not a device tree", dtb.display()))?;
    let has_chosen = fdt.find_node("/chosen").is_some();
    let dtb_name = dtb.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "board.dtb".into());
    // Each file once on the partition, named after the first domain that loads it.
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for d in domains {
        for (file, role) in std::iter::once((&d.kernel, "kernel")).chain(d.ramdisk.as_ref().map(|r| (r, "ramdisk"))) {
            if !files.iter().any(|(f, _)| f == file) {
                files.push((file.clone(), format!("{}-{role}", d.name)));
            }
        }
    }
    let names = |p: &Path| files.iter().find(|(f, _)| f == p).map(|(_, n)| n.clone()).unwrap_or_default();
    let size = |p: &Path| Ok(std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?.len());
    let layout = layout(target, hv_size, (&dtb_name, tree.len() as u64), domains, &names, &size)?;
    let text = script(target, &layout, has_chosen)?;
    let mut written = Vec::new();
    let mut copy = |from: &Path, name: &str| -> Result<()> {
        let to = dir.join(name);
        std::fs::copy(from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        written.push(to);
        Ok(())
    };
    copy(hypervisor, "xhv")?;
    copy(dtb, &dtb_name)?;
    for (file, name) in &files {
        copy(file, name)?;
    }
    let cmd = dir.join("boot.cmd");
    std::fs::write(&cmd, &text).with_context(|| format!("writing {}", cmd.display()))?;
    let scr = dir.join("boot.scr");
    let arch = if target.arch == Arch::Aarch64 { "arm64" } else { "arm" };
    let out = Command::new("mkimage")
        .args(["-A", arch, "-O", "linux", "-T", "script", "-C", "none", "-n", "xhv boot script", "-d"])
        .arg(&cmd)
        .arg(&scr)
        .output()
        .context("running mkimage (u-boot-tools)")?;
    ensure!(out.status.success(), "mkimage failed:\n{}", String::from_utf8_lossy(&out.stderr));
    written.push(cmd);
    written.push(scr);
    Ok(Written { dir: dir.to_path_buf(), files: written, layout })
}

/// A disk image with one FAT partition (MBR, type 0x0c, marked bootable, from 1 MiB) holding
/// `files` in its root: what U-Boot's distro boot scans for `boot.scr`.
pub fn disk_image(files: &[PathBuf], out: &Path) -> Result<()> {
    const START_SECTOR: u64 = 2048;
    let total: u64 = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    // FAT32 wants at least 32 MiB; leave room for the allocation tables and cluster slack.
    let sectors = ((total + total / 8 + (32 << 20)) / 512).next_multiple_of(2048);
    let part = out.with_extension("part");
    let _ = std::fs::remove_file(&part);
    // mtools' mformat makes the file system in a file of its own (-C), FAT32 (-F), with the
    // partition's start as its hidden sectors (-H), as a partitioning tool would.
    let res = Command::new("mformat")
        .args(["-C", "-F", "-v", "XHVBOOT", "-h", "64", "-s", "32"])
        .args(["-T", &sectors.to_string(), "-H", &START_SECTOR.to_string(), "-i"])
        .arg(&part)
        .arg("::")
        .output()
        .context("running mformat (mtools)")?;
    ensure!(res.status.success(), "mformat failed:\n{}", String::from_utf8_lossy(&res.stderr));
    let res =
        Command::new("mcopy").arg("-i").arg(&part).args(files).arg("::").output().context("running mcopy (mtools)")?;
    ensure!(res.status.success(), "mcopy failed:\n{}", String::from_utf8_lossy(&res.stderr));
    let fat = std::fs::read(&part)?;
    let _ = std::fs::remove_file(&part);
    let mut disk = mbr(START_SECTOR, fat.len() as u64 / 512)?;
    disk.resize((START_SECTOR * 512) as usize, 0);
    disk.extend_from_slice(&fat);
    std::fs::write(out, &disk).with_context(|| format!("writing {}", out.display()))?;
    // QEMU's SD card model takes only power-of-two sizes: pad (sparsely) to one.
    let f = std::fs::OpenOptions::new().write(true).open(out)?;
    f.set_len((disk.len() as u64).next_power_of_two()).with_context(|| format!("padding {}", out.display()))
}

/// A master boot record with one bootable FAT32 (LBA) partition.
fn mbr(start: u64, sectors: u64) -> Result<Vec<u8>> {
    let (start, sectors) = (u32::try_from(start)?, u32::try_from(sectors).context("partition too large")?);
    let mut m = vec![0u8; 512];
    let entry = &mut m[446..462];
    entry[0] = 0x80; // bootable
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS: use the LBA fields
    entry[4] = 0x0c; // FAT32 with LBA
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&start.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    Ok(m)
}

/// A disk image for `run --firmware u-boot`.
pub struct Disk {
    pub image: PathBuf,
    /// How many domains the script describes.
    pub domains: usize,
}

/// The domains to boot: a configuration's, or the Linux domU `run` boots by default.
fn domains(built: &Built, args: &RunArgs) -> Result<Vec<ConfigDomain>> {
    match &args.config {
        Some(config) => {
            refuse_pools(config)?;
            emulator::config_domains(built, config)
        }
        None => Ok(vec![emulator::linux_domain(args)?]),
    }
}

/// CPU pools and scheduler properties need phandles the `fdt` commands do not write yet.
fn refuse_pools(config: &Path) -> Result<()> {
    let dtb = crate::bootcfg_file::compile(config)?;
    let fdt = dtoolkit::fdt::Fdt::new(&dtb).context("the configuration is not a valid device tree")?;
    let Some(chosen) = fdt.find_node("/chosen") else { return Ok(()) };
    for node in chosen.children() {
        let pool = node.property("compatible").is_some_and(|p| p.value().starts_with(b"xen,cpupool"));
        let sched = ["domain-cpupool", "xhv,sched-weight", "xhv,sched-cap"].iter().any(|n| node.property(n).is_some());
        ensure!(
            !pool && !sched,
            "{}: /chosen/{} has CPU pool or scheduler properties, which the U-Boot script does not \
             carry yet (boot it with `cargo xtask run --config`)",
            config.display(),
            node.name()
        );
    }
    Ok(())
}

/// The board's DTB (Debian's, unedited), or the one QEMU builds for xtask's `virt` machine.
fn board_dtb(target: Target, args: &RunArgs, cpus: u32, dir: &Path) -> Result<PathBuf> {
    match target.board {
        Some(board) => board.dtb(),
        None => {
            let out = dir.join("virt.dtb");
            emulator::dump_dtb(target.arch, args.gic, cpus, &out)?;
            Ok(out)
        }
    }
}

/// The hypervisor image for the target: ARMv7 images are linked where they are loaded.
fn hypervisor_image(built: &Built, target: Target) -> Result<PathBuf> {
    match target.board.and_then(|b| b.profile().link_base) {
        Some(base) => crate::build::armv7_image_at(base),
        None => Ok(built.hypervisor.clone()),
    }
}

/// Everything for the boot partition, in `dir` (and the script's parts in `dir/../`).
fn prepare(built: &Built, args: &RunArgs, dir: &Path) -> Result<Written> {
    let target = Target { arch: args.arch, board: args.board };
    let domains = domains(built, args)?;
    let cpus = domains.iter().map(|d| d.cpus).max().unwrap_or(1).max(args.smp);
    let scratch = dir.with_extension("work");
    std::fs::create_dir_all(&scratch)?;
    let dtb = board_dtb(target, args, cpus, &scratch)?;
    let hypervisor = hypervisor_image(built, target)?;
    let written = write(target, &hypervisor, &dtb, &domains, dir)?;
    let l = &written.layout;
    eprintln!(
        "xtask: U-Boot script for {}: hypervisor at {:#x}, device tree {} at {:#x}",
        target.name(),
        l.hypervisor.addr,
        l.dtb.name,
        l.dtb.addr
    );
    for m in &l.modules {
        eprintln!("xtask:   {} at {:#x} ({} bytes)", m.name, m.addr, m.size);
    }
    Ok(written)
}

/// `cargo xtask uboot`.
pub fn command(a: &UbootArgs) -> Result<i32> {
    let arch = a.board.map_or(a.arch, |b| b.profile().arch);
    ensure!(matches!(arch, Arch::Aarch64 | Arch::Armv7), "U-Boot scripts are for the ARM hypervisors");
    let mut needs = crate::prereq::Needs::default();
    needs.boot(arch, crate::prereq::X86Emulator::Qemu).uboot_script();
    if a.config.is_none() {
        needs.linux(arch);
    }
    crate::prereq::ensure(&needs)?;
    let built = crate::build::hypervisor_and_guests(arch)?;
    let args = run_args(arch, a.board, a.config.clone(), a.smp);
    let target = Target { arch, board: a.board };
    let dir = a.out.clone().unwrap_or_else(|| crate::build::target_dir().join("xtask/uboot").join(target.name()));
    let written = prepare(&built, &args, &dir)?;
    println!("wrote {} for U-Boot:", written.dir.display());
    for f in &written.files {
        println!("  {}", f.file_name().unwrap_or_default().to_string_lossy());
    }
    println!("copy them to the FAT boot partition; U-Boot's distro boot runs boot.scr, or by hand:");
    println!("  load {} ${{scriptaddr}} boot.scr; source ${{scriptaddr}}", target.default_device());
    Ok(0)
}

/// The `run` options `cargo xtask uboot` stands for.
fn run_args(arch: Arch, board: Option<Board>, config: Option<PathBuf>, smp: u32) -> RunArgs {
    RunArgs {
        arch,
        kernel: None,
        initrd: None,
        config,
        append: None,
        smp,
        gic: None,
        icount: false,
        guest: None,
        timeout: 600,
        emulator: None,
        guest_arch: None,
        hypervisor: crate::xen::Hypervisor::Xhv,
        board,
        firmware: None,
    }
}

/// `run --firmware u-boot`: the boot partition's files on a disk image in the run's directory.
pub fn disk_for_run(built: &Built, args: &RunArgs) -> Result<Disk> {
    let dir = built.run_dir.join("uboot");
    let written = prepare(built, args, &dir)?;
    let image = built.run_dir.join("uboot-disk.img");
    disk_image(&written.files, &image)?;
    eprintln!("xtask: FAT disk image for U-Boot -> {}", image.display());
    Ok(Disk { image, domains: written.layout.domains.len() })
}

/// The QEMU options that start U-Boot with the disk: on `virt`, Debian's `u-boot-qemu` build
/// as `-bios` (QEMU hands it its own DTB) and the disk on virtio-mmio; on raspi4b, Debian's
/// `u-boot-rpi` build where the Pi's firmware would put it (`-kernel`: RAM + 0x80000, the
/// secondaries in QEMU's spin-table stub), the board's DTB as the firmware would pass it, and
/// the disk as the SD card.
pub fn qemu_args(target: Target, disk: &Disk) -> Result<Vec<String>> {
    let image = disk.image.to_string_lossy().replace(',', ",,");
    Ok(match (target.board, target.arch) {
        (None, arch) => vec![
            "-bios".into(),
            qemu_firmware(arch)?.into(),
            "-drive".into(),
            format!("if=none,format=raw,id=xhvboot,file={image}"),
            "-device".into(),
            "virtio-blk-device,drive=xhvboot".into(),
            "-nic".into(),
            "none".into(),
        ],
        (Some(Board::Raspi4b), _) => vec![
            "-kernel".into(),
            RPI4_UBOOT.into(),
            "-dtb".into(),
            Board::Raspi4b.dtb()?.to_string_lossy().into_owned(),
            "-drive".into(),
            format!("if=sd,format=raw,file={image}"),
        ],
        (Some(b), _) => bail!("--firmware u-boot runs on QEMU `virt` and raspi4b, not on {}", b.name()),
    })
}

/// Debian's `u-boot-qemu` build for QEMU `virt` of this architecture.
pub fn qemu_firmware(arch: Arch) -> Result<&'static str> {
    match arch {
        Arch::Aarch64 => Ok(QEMU_ARM64_UBOOT),
        Arch::Armv7 => Ok(QEMU_ARM_UBOOT),
        Arch::X86_64 => bail!("--firmware u-boot boots the ARM hypervisors"),
    }
}

pub const QEMU_ARM64_UBOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
pub const QEMU_ARM_UBOOT: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";
/// Debian's `u-boot-rpi` (arm64) build for the Raspberry Pi 4.
pub const RPI4_UBOOT: &str = "/usr/lib/u-boot/rpi_4/u-boot.bin";

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str, kernel: &str, ramdisk: Option<&str>) -> ConfigDomain {
        ConfigDomain {
            name: name.into(),
            cpus: 2,
            memory_kib: 512 << 10,
            vpl011: true,
            kernel: kernel.into(),
            bootargs: Some("console=hvc0 xhv.stress=8".into()),
            ramdisk: ramdisk.map(PathBuf::from),
        }
    }

    fn sizes(p: &Path) -> Result<u64> {
        Ok(match p.to_str().unwrap() {
            "Image" => 30 << 20,
            "initrd" => 3 << 20,
            _ => 0x1234,
        })
    }

    fn names(p: &Path) -> String {
        p.to_string_lossy().into_owned()
    }

    fn two() -> Vec<ConfigDomain> {
        vec![domain("domU1", "Image", Some("initrd")), domain("domU2", "small", None)]
    }

    #[test]
    fn everything_is_aligned_apart_above_the_hypervisor_and_inside_ram() {
        for target in [
            Target { arch: Arch::Aarch64, board: None },
            Target { arch: Arch::Armv7, board: None },
            Target { arch: Arch::Aarch64, board: Some(Board::Raspi4b) },
            Target { arch: Arch::Armv7, board: Some(Board::VexpressA15) },
        ] {
            let l = layout(target, 0x23_4000, ("board.dtb", 0x10_0000), &two(), &names, &sizes).unwrap();
            let (base, size) = target.ram();
            let mut all = vec![l.hypervisor.clone(), l.dtb.clone()];
            all.extend(l.modules.iter().cloned());
            assert_eq!(all.len(), 5);
            for (i, a) in all.iter().enumerate() {
                assert!(a.addr >= base && a.addr + a.size <= base + size - UBOOT_TOP, "{target:?} {a:?}");
                if i > 0 {
                    assert_eq!(a.addr % ALIGN, 0, "{a:?}");
                    assert!(a.addr >= all[i - 1].addr + all[i - 1].size, "{a:?} overlaps");
                }
            }
            assert_eq!(l.hypervisor.addr, target.hypervisor_addr());
            // The domains' modules are the loads, in order.
            let d1 = &l.domains[0];
            assert_eq!((d1.kernel.addr, d1.kernel.size), (l.modules[0].addr, 30 << 20));
            assert_eq!(d1.ramdisk.map(|m| m.addr), Some(l.modules[1].addr));
            assert_eq!(l.domains[1].kernel.addr, l.modules[2].addr);
        }
        // An arm64 Image at RAM + text_offset, an ARMv7 one where virt's QEMU loads it.
        assert_eq!(Target { arch: Arch::Aarch64, board: None }.hypervisor_addr(), 0x4008_0000);
        assert_eq!(Target { arch: Arch::Armv7, board: None }.hypervisor_addr(), 0x4001_0000);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let huge = |p: &Path| Ok(if p.to_str() == Some("Image") { 1 << 30 } else { 1 });
        let t = Target { arch: Arch::Aarch64, board: None };
        assert!(layout(t, 0x20_0000, ("b.dtb", 0x1000), &two(), &names, &huge).is_err());
    }

    /// Run the script's `fdt` commands over the tree as U-Boot would (a small interpreter
    /// of the forms the script uses) and check the hypervisor's own parser reads the same
    /// domains `bootdt::with_domains` would have written.
    #[test]
    fn the_scripts_fdt_commands_build_what_run_builds() {
        use dtoolkit::fdt::Fdt;
        use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};

        let t = Target { arch: Arch::Aarch64, board: None };
        let l = layout(t, 0x20_0000, ("virt.dtb", 0x1000), &two(), &names, &sizes).unwrap();
        let text = script(t, &l, true).unwrap();
        let mut tree = DeviceTree::new();
        tree.root.add_property(DeviceTreeProperty::new("#address-cells", 2u32).unwrap());
        tree.root.add_property(DeviceTreeProperty::new("#size-cells", 2u32).unwrap());
        tree.root.add_child(DeviceTreeNode::new("chosen").unwrap());
        let host = tree.to_dtb();
        for line in text.lines().filter(|l| l.starts_with("fdt ")) {
            let words = shell_words(line);
            match words[1].as_str() {
                "addr" | "resize" => {}
                "mknode" => {
                    // libfdt's fdt_add_subnode puts the new node before its siblings.
                    let parent = node_at(&mut tree.root, &words[2]);
                    let names: Vec<String> = (*parent).children().map(|c| c.name().to_string()).collect();
                    let siblings: Vec<_> = names.iter().filter_map(|n| parent.remove_child(n)).collect();
                    parent.add_child(DeviceTreeNode::new(words[3].as_str()).unwrap());
                    for c in siblings {
                        parent.add_child(c);
                    }
                }
                "set" => {
                    let node = node_at(&mut tree.root, &words[2]);
                    let value: Vec<u8> = match words.get(4) {
                        None => Vec::new(),
                        Some(v) if v.starts_with('<') => v
                            .trim_matches(|c| c == '<' || c == '>')
                            .split_whitespace()
                            .flat_map(|c| u32::from_str_radix(c.trim_start_matches("0x"), 16).unwrap().to_be_bytes())
                            .collect(),
                        Some(_) => words[4..].iter().flat_map(|s| s.bytes().chain([0])).collect(),
                    };
                    node.add_property(DeviceTreeProperty::new(words[3].as_str(), value.as_slice()).unwrap());
                }
                other => panic!("unexpected fdt {other}"),
            }
        }
        let by_script = tree.to_dtb();
        let by_run = crate::bootdt::with_domains(&host, &l.domains).unwrap();
        let parse = |b: &[u8]| hypervisor::bootcfg::parse_domains(b).unwrap();
        assert_eq!(parse(&by_script), parse(&by_run));
        assert_eq!(parse(&by_script).len(), 2);
        // Node for node, property for property.
        assert_eq!(
            DeviceTree::from_fdt(&Fdt::new(&by_script).unwrap()),
            DeviceTree::from_fdt(&Fdt::new(&by_run).unwrap())
        );
        assert!(text.contains("\nbooti 0x40080000 - 0x40400000\n"), "{text}");
        assert!(text.contains("load ${xhv_dev} 0x40080000 xhv\n"));
    }

    /// The node at `path` (absolute) under `root`.
    fn node_at<'a>(
        root: &'a mut dtoolkit::model::DeviceTreeNode,
        path: &str,
    ) -> &'a mut dtoolkit::model::DeviceTreeNode {
        let mut n = root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            n = n.child_mut(part).unwrap_or_else(|| panic!("no {path}"));
        }
        n
    }

    /// Split a script line the way U-Boot's shell does for the forms we write: words
    /// separated by blanks, double quotes group (and are removed), `<...>` kept whole.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let (mut quoted, mut cells, mut started) = (false, false, false);
        for c in line.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    started = true;
                }
                '<' if !quoted => {
                    cells = true;
                    cur.push(c);
                    started = true;
                }
                '>' if !quoted => {
                    cells = false;
                    cur.push(c);
                }
                ' ' if !quoted && !cells => {
                    if started {
                        words.push(std::mem::take(&mut cur));
                        started = false;
                    }
                }
                _ => {
                    cur.push(c);
                    started = true;
                }
            }
        }
        if started {
            words.push(cur);
        }
        words
    }

    #[test]
    fn refuses_bootargs_the_shell_would_change() {
        let mut d = domain("domU1", "Image", None);
        d.bootargs = Some("init=/bin/sh -c \"$x\"".into());
        let t = Target { arch: Arch::Aarch64, board: None };
        let l = layout(t, 0x20_0000, ("virt.dtb", 0x1000), &[d], &names, &sizes).unwrap();
        assert!(script(t, &l, true).is_err());
    }

    #[test]
    fn reads_the_image_headers() {
        let mut arm64 = vec![0u8; 64];
        arm64[16..24].copy_from_slice(&0x30_0000u64.to_le_bytes());
        arm64[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(image_size(Arch::Aarch64, &arm64).unwrap(), 0x30_0000);
        let mut z = vec![0u8; 64];
        z[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
        z[0x28..0x2c].copy_from_slice(&0x4001_0000u32.to_le_bytes());
        z[0x2c..0x30].copy_from_slice(&0x4021_0000u32.to_le_bytes());
        assert_eq!(image_size(Arch::Armv7, &z).unwrap(), 0x20_0000);
        assert_eq!(zimage_start(&z), Some(0x4001_0000));
        assert!(image_size(Arch::Armv7, &arm64).is_err() && image_size(Arch::Aarch64, &z).is_err());
    }

    #[test]
    fn the_mbr_has_one_bootable_fat32_partition() {
        let m = mbr(2048, 100_000).unwrap();
        assert_eq!((m[446], m[450], &m[510..]), (0x80, 0x0c, &[0x55, 0xaa][..]));
        assert_eq!(u32::from_le_bytes(m[454..458].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(m[458..462].try_into().unwrap()), 100_000);
    }
}
