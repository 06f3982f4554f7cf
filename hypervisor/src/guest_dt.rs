//! The device tree a domain boots with: what Linux needs to find its memory, CPUs, interrupt
//! controller, timer, PSCI, the Xen interfaces and (optionally) the virtual PL011.
//!
//! The layout follows the guest memory map Xen uses on ARM (see
//! `/work/shared/spec/arm-xen-domu.md`), so tools and kernels that know Xen guests find
//! things where they expect them. Everything is computed from a [`GuestDtConfig`]; nothing is
//! read from the host's tree, so a guest learns nothing about the machine it runs on.
//!
//! The addresses and interrupt numbers below are a contract with the arch backend: its vGIC
//! must emulate the distributor and redistributors where this tree says they are, inject the
//! timer and upcall PPIs listed here, and route [`VPL011_SPI`]. Those values are re-exported
//! from `arch::arm::vgic`, the one place they are defined; the rest (GICv2 CPU interface,
//! vpl011 page, grant-table region, the other timer PPIs) are only the tree's business.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use dtoolkit::ToPropertyValue;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};

// The vGIC's side of the contract: the GICv3 distributor and redistributor frames, and the
// INTIDs it injects. Taken from arch so the tree and the emulation cannot disagree.
pub use arch::arm::vgic::{
    GUEST_GICC_BASE, GUEST_GICC_SIZE, GUEST_GICD_BASE, GUEST_GICD_SIZE, GUEST_GICR_BASE, GUEST_GICR_REGION_SIZE,
    GUEST_GICR_STRIDE, GUEST_GICV2_GICD_SIZE, GicVersion, UPCALL_PPI, VPL011_SPI, VTIMER_PPI,
};

/// The virtual PL011 (SBSA UART) and its one 4 KiB register page.
pub const VPL011_BASE: u64 = 0x2200_0000;
pub const VPL011_SIZE: u64 = 0x1000;

/// Xen's grant-table region, announced in `/hypervisor`'s `reg` (16 MiB).
pub const GUEST_GNTTAB_BASE: u64 = 0x3800_0000;
pub const GUEST_GNTTAB_SIZE: u64 = 0x0100_0000;

/// Xen's "magic pages" region (GUEST_MAGIC_BASE); the PV console ring is its first page.
/// Not in the tree: the guest finds the ring through `HVM_PARAM_CONSOLE_PFN`.
pub const GUEST_MAGIC_BASE: u64 = 0x3900_0000;
pub const GUEST_CONSOLE_RING: u64 = GUEST_MAGIC_BASE;

/// Architected timer interrupts as INTIDs, in the order the timer binding lists them:
/// secure physical, non-secure physical, virtual ([`VTIMER_PPI`]), hypervisor.
pub const SEC_PTIMER_PPI: u32 = 29;
pub const PTIMER_PPI: u32 = 30;
pub const HYP_TIMER_PPI: u32 = 26;

/// The phandle of the interrupt controller node (the only node anything refers to).
pub const GIC_PHANDLE: u32 = 1;

/// Xen version the `/hypervisor` node and the root `compatible` announce.
const XEN_COMPATIBLE: [&str; 2] = ["xen,xen-4.17", "xen,xen"];
const ROOT_COMPATIBLE: [&str; 2] = ["xen,xenvm-4.17", "xen,xenvm"];
const PSCI_COMPATIBLE: [&str; 3] = ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];
/// PSCI 0.1 function IDs, for kernels too old for the standard ones (Xen offers these).
const PSCI_0_1_CPU_OFF: u32 = 1;
const PSCI_0_1_CPU_ON: u32 = 2;
/// The vpl011's announced line speed (the model ignores it: bytes go out at once).
const VPL011_BAUD: u32 = 115_200;

/// Interrupt specifier cells (GIC binding): type, number within the type, flags.
const DT_SPI: u32 = 0;
const DT_PPI: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;
const IRQ_LEVEL_LOW: u32 = 8;

/// The largest number of vCPUs a tree describes (GICv2 can target at most 8 CPUs, and the
/// vGIC has as many redistributors).
pub const MAX_VCPUS: u32 = arch::arm::vgic::MAX_VCPUS as u32;

/// Which kind of guest the tree is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestArch {
    /// AArch64.
    Arm64,
    /// AArch32 (ARMv7 with virtualization extensions).
    Arm32,
}

/// What goes into a domain's tree. Addresses are guest-physical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestDtConfig<'a> {
    pub arch: GuestArch,
    /// The interrupt controller the vGIC emulates (that of the host's virtualization
    /// interface).
    pub gic: GicVersion,
    pub ram_base: u64,
    pub ram_size: u64,
    pub cpus: u32,
    pub vpl011: bool,
    pub bootargs: Option<&'a str>,
    /// The initrd's first byte and one past its last.
    pub initrd: Option<(u64, u64)>,
}

/// Why no tree could be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestDtError {
    BadCpuCount(u32),
    EmptyMemory,
    BadInitrd,
    /// The command line holds a NUL byte.
    BadBootargs,
    /// The DT model rejected a name or value (a bug here rather than bad input).
    Model(String),
}

impl fmt::Display for GuestDtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestDtError::BadCpuCount(n) => write!(f, "{n} vCPUs (the device tree describes 1 to {MAX_VCPUS})"),
            GuestDtError::EmptyMemory => f.write_str("no memory"),
            GuestDtError::BadInitrd => f.write_str("initrd range is empty or reversed"),
            GuestDtError::BadBootargs => f.write_str("bootargs contain a NUL byte"),
            GuestDtError::Model(e) => write!(f, "device tree model: {e}"),
        }
    }
}

type Result<T> = core::result::Result<T, GuestDtError>;

/// The flattened tree for `cfg`.
pub fn build(cfg: &GuestDtConfig<'_>) -> Result<Vec<u8>> {
    if cfg.cpus == 0 || cfg.cpus > MAX_VCPUS {
        return Err(GuestDtError::BadCpuCount(cfg.cpus));
    }
    if cfg.ram_size == 0 || cfg.ram_base.checked_add(cfg.ram_size).is_none() {
        return Err(GuestDtError::EmptyMemory);
    }
    if cfg.initrd.is_some_and(|(start, end)| end <= start) {
        return Err(GuestDtError::BadInitrd);
    }
    if cfg.bootargs.is_some_and(|a| a.contains('\0')) {
        return Err(GuestDtError::BadBootargs);
    }
    let mut tree = DeviceTree::new();
    let root = &mut tree.root;
    root.add_property(prop("compatible", ROOT_COMPATIBLE.as_slice())?);
    root.add_property(prop("#address-cells", 2u32)?);
    root.add_property(prop("#size-cells", 2u32)?);
    root.add_property(prop("interrupt-parent", GIC_PHANDLE)?);
    root.add_child(chosen(cfg)?);
    if cfg.vpl011 {
        let mut aliases = node("aliases")?;
        aliases.add_property(prop("serial0", vpl011_path().as_str())?);
        root.add_child(aliases);
    }
    root.add_child(memory(cfg)?);
    root.add_child(cpus(cfg)?);
    root.add_child(psci()?);
    root.add_child(gic(cfg)?);
    root.add_child(timer(cfg.arch)?);
    root.add_child(hypervisor()?);
    if cfg.vpl011 {
        root.add_child(vpl011()?);
    }
    Ok(tree.to_dtb())
}

fn chosen(cfg: &GuestDtConfig<'_>) -> Result<DeviceTreeNode> {
    let mut chosen = node("chosen")?;
    if let Some(args) = cfg.bootargs {
        chosen.add_property(prop("bootargs", args)?);
    }
    if let Some((start, end)) = cfg.initrd {
        chosen.add_property(prop("linux,initrd-start", start)?);
        chosen.add_property(prop("linux,initrd-end", end)?);
    }
    if cfg.vpl011 {
        // `earlycon` without options and the console default both follow this.
        chosen.add_property(prop("stdout-path", "serial0:115200n8")?);
    }
    Ok(chosen)
}

fn memory(cfg: &GuestDtConfig<'_>) -> Result<DeviceTreeNode> {
    let mut mem = node(&alloc::format!("memory@{:x}", cfg.ram_base))?;
    mem.add_property(prop("device_type", "memory")?);
    mem.add_property(prop("reg", reg(&[(cfg.ram_base, cfg.ram_size)]).as_slice())?);
    Ok(mem)
}

/// vCPU `i` has MPIDR affinity 0.0.0.i (what the arch backend puts in VMPIDR).
fn cpus(cfg: &GuestDtConfig<'_>) -> Result<DeviceTreeNode> {
    let mut cpus = node("cpus")?;
    cpus.add_property(prop("#address-cells", 1u32)?);
    cpus.add_property(prop("#size-cells", 0u32)?);
    let compatible = match cfg.arch {
        GuestArch::Arm64 => "arm,armv8",
        GuestArch::Arm32 => "arm,cortex-a15",
    };
    for i in 0..cfg.cpus {
        let mut cpu = node(&alloc::format!("cpu@{i:x}"))?;
        cpu.add_property(prop("device_type", "cpu")?);
        cpu.add_property(prop("compatible", compatible)?);
        cpu.add_property(prop("reg", i)?);
        cpu.add_property(prop("enable-method", "psci")?);
        cpus.add_child(cpu);
    }
    Ok(cpus)
}

fn psci() -> Result<DeviceTreeNode> {
    let mut psci = node("psci")?;
    psci.add_property(prop("compatible", PSCI_COMPATIBLE.as_slice())?);
    psci.add_property(prop("method", "hvc")?);
    psci.add_property(prop("cpu_off", PSCI_0_1_CPU_OFF)?);
    psci.add_property(prop("cpu_on", PSCI_0_1_CPU_ON)?);
    Ok(psci)
}

fn gic(cfg: &GuestDtConfig<'_>) -> Result<DeviceTreeNode> {
    let mut gic = node(&alloc::format!("interrupt-controller@{GUEST_GICD_BASE:x}"))?;
    // Xen's domU GICv2 node says "arm,gic-400"; the Cortex-A15 name is for older kernels.
    let (compatible, regs): (&[&str], _) = match cfg.gic {
        GicVersion::V3 => {
            (&["arm,gic-v3"], reg(&[(GUEST_GICD_BASE, GUEST_GICD_SIZE), (GUEST_GICR_BASE, GUEST_GICR_REGION_SIZE)]))
        }
        GicVersion::V2 => (
            &["arm,gic-400", "arm,cortex-a15-gic"],
            reg(&[(GUEST_GICD_BASE, GUEST_GICV2_GICD_SIZE), (GUEST_GICC_BASE, GUEST_GICC_SIZE)]),
        ),
    };
    gic.add_property(prop("compatible", compatible)?);
    gic.add_property(prop("#interrupt-cells", 3u32)?);
    // No interrupt-map refers into the GIC; zero address cells says so to dtc and Linux.
    gic.add_property(prop("#address-cells", 0u32)?);
    gic.add_property(prop("interrupt-controller", [0u8; 0])?);
    gic.add_property(prop("reg", regs.as_slice())?);
    gic.add_property(prop("phandle", GIC_PHANDLE)?);
    Ok(gic)
}

fn timer(arch: GuestArch) -> Result<DeviceTreeNode> {
    let mut timer = node("timer")?;
    let compatible = match arch {
        GuestArch::Arm64 => "arm,armv8-timer",
        GuestArch::Arm32 => "arm,armv7-timer",
    };
    timer.add_property(prop("compatible", compatible)?);
    let ppis = [SEC_PTIMER_PPI, PTIMER_PPI, VTIMER_PPI, HYP_TIMER_PPI];
    let cells: Vec<u32> = ppis.iter().flat_map(|&p| ppi(p, IRQ_LEVEL_LOW)).collect();
    timer.add_property(prop("interrupts", cells)?);
    Ok(timer)
}

/// `/hypervisor`: Linux looks for exactly this name at depth 1 (a unit address would hide
/// it), so the node has a `reg` without one; dtc's `unit_address_vs_reg` check disagrees.
fn hypervisor() -> Result<DeviceTreeNode> {
    let mut hv = node("hypervisor")?;
    hv.add_property(prop("compatible", XEN_COMPATIBLE.as_slice())?);
    hv.add_property(prop("reg", reg(&[(GUEST_GNTTAB_BASE, GUEST_GNTTAB_SIZE)]).as_slice())?);
    hv.add_property(prop("interrupts", ppi(UPCALL_PPI, IRQ_LEVEL_LOW).as_slice())?);
    Ok(hv)
}

fn vpl011_path() -> String {
    alloc::format!("/sbsa-uart@{VPL011_BASE:x}")
}

fn vpl011() -> Result<DeviceTreeNode> {
    let mut uart = node(&vpl011_path()[1..])?;
    uart.add_property(prop("compatible", "arm,sbsa-uart")?);
    uart.add_property(prop("reg", reg(&[(VPL011_BASE, VPL011_SIZE)]).as_slice())?);
    uart.add_property(prop("interrupts", [DT_SPI, VPL011_SPI - 32, IRQ_LEVEL_HIGH])?);
    uart.add_property(prop("current-speed", VPL011_BAUD)?);
    Ok(uart)
}

/// A PPI by INTID as three interrupt cells.
fn ppi(intid: u32, flags: u32) -> [u32; 3] {
    [DT_PPI, intid - 16, flags]
}

/// `reg` cells for 2 address and 2 size cells.
fn reg(ranges: &[(u64, u64)]) -> Vec<u32> {
    ranges.iter().flat_map(|&(a, s)| [(a >> 32) as u32, a as u32, (s >> 32) as u32, s as u32]).collect()
}

fn node(name: &str) -> Result<DeviceTreeNode> {
    DeviceTreeNode::new(name).map_err(|e| GuestDtError::Model(e.to_string()))
}

fn prop(name: &str, value: impl ToPropertyValue) -> Result<DeviceTreeProperty> {
    DeviceTreeProperty::new(name, value).map_err(|e| GuestDtError::Model(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtoolkit::fdt::Fdt;
    use dtoolkit::{Node, Property};
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn linux_cfg() -> GuestDtConfig<'static> {
        GuestDtConfig {
            arch: GuestArch::Arm64,
            gic: GicVersion::V3,
            ram_base: 0x4000_0000,
            ram_size: 512 << 20,
            cpus: 2,
            vpl011: true,
            bootargs: Some("console=ttyAMA0 earlycon"),
            initrd: Some((0x5f00_0000, 0x5f12_3456)),
        }
    }

    fn cells(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    fn value(fdt: &Fdt<'_>, path: &str, name: &str) -> Vec<u8> {
        let node = fdt.find_node(path).unwrap_or_else(|| panic!("no {path}"));
        node.property(name).unwrap_or_else(|| panic!("no {path} {name}")).value().to_vec()
    }

    #[test]
    fn describes_a_xen_arm64_guest() {
        let dtb = build(&linux_cfg()).unwrap();
        let fdt = Fdt::new(&dtb).unwrap();
        assert_eq!(value(&fdt, "/", "compatible"), b"xen,xenvm-4.17\0xen,xenvm\0");
        assert_eq!(value(&fdt, "/", "#address-cells"), cells(&[2]));
        assert_eq!(value(&fdt, "/", "#size-cells"), cells(&[2]));
        assert_eq!(value(&fdt, "/", "interrupt-parent"), cells(&[GIC_PHANDLE]));

        assert_eq!(value(&fdt, "/memory@40000000", "device_type"), b"memory\0");
        assert_eq!(value(&fdt, "/memory@40000000", "reg"), cells(&[0, 0x4000_0000, 0, 0x2000_0000]));

        for i in 0..2u32 {
            let cpu = format!("/cpus/cpu@{i}");
            assert_eq!(value(&fdt, &cpu, "reg"), cells(&[i]));
            assert_eq!(value(&fdt, &cpu, "enable-method"), b"psci\0");
            assert_eq!(value(&fdt, &cpu, "device_type"), b"cpu\0");
        }
        assert!(fdt.find_node("/cpus/cpu@2").is_none());

        assert_eq!(value(&fdt, "/psci", "compatible"), b"arm,psci-1.0\0arm,psci-0.2\0arm,psci\0");
        assert_eq!(value(&fdt, "/psci", "method"), b"hvc\0");

        let gic = "/interrupt-controller@3001000";
        assert_eq!(value(&fdt, gic, "compatible"), b"arm,gic-v3\0");
        assert_eq!(value(&fdt, gic, "#interrupt-cells"), cells(&[3]));
        assert_eq!(value(&fdt, gic, "interrupt-controller"), b"");
        assert_eq!(value(&fdt, gic, "reg"), cells(&[0, 0x0300_1000, 0, 0x1_0000, 0, 0x0302_0000, 0, 0x100_0000]));
        assert_eq!(value(&fdt, gic, "phandle"), cells(&[GIC_PHANDLE]));

        assert_eq!(value(&fdt, "/timer", "compatible"), b"arm,armv8-timer\0");
        assert_eq!(value(&fdt, "/timer", "interrupts"), cells(&[1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8]));

        assert_eq!(value(&fdt, "/hypervisor", "compatible"), b"xen,xen-4.17\0xen,xen\0");
        assert_eq!(value(&fdt, "/hypervisor", "reg"), cells(&[0, 0x3800_0000, 0, 0x0100_0000]));
        assert_eq!(value(&fdt, "/hypervisor", "interrupts"), cells(&[1, 15, 8]));

        let uart = "/sbsa-uart@22000000";
        assert_eq!(value(&fdt, uart, "compatible"), b"arm,sbsa-uart\0");
        assert_eq!(value(&fdt, uart, "reg"), cells(&[0, 0x2200_0000, 0, 0x1000]));
        assert_eq!(value(&fdt, uart, "interrupts"), cells(&[0, 0, 4]));
        assert_eq!(value(&fdt, uart, "current-speed"), cells(&[115_200]));
        assert_eq!(value(&fdt, "/aliases", "serial0"), b"/sbsa-uart@22000000\0");

        assert_eq!(value(&fdt, "/chosen", "bootargs"), b"console=ttyAMA0 earlycon\0");
        assert_eq!(value(&fdt, "/chosen", "linux,initrd-start"), cells(&[0, 0x5f00_0000]));
        assert_eq!(value(&fdt, "/chosen", "linux,initrd-end"), cells(&[0, 0x5f12_3456]));
        assert_eq!(value(&fdt, "/chosen", "stdout-path"), b"serial0:115200n8\0");
    }

    #[test]
    fn leaves_out_what_the_domain_does_not_have() {
        let cfg = GuestDtConfig { vpl011: false, bootargs: None, initrd: None, cpus: 1, ..linux_cfg() };
        let dtb = build(&cfg).unwrap();
        let fdt = Fdt::new(&dtb).unwrap();
        assert!(fdt.find_node("/sbsa-uart@22000000").is_none());
        assert!(fdt.find_node("/aliases").is_none());
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(chosen.properties().count(), 0);
    }

    #[test]
    fn arm32_gets_gicv2_and_the_v7_timer() {
        let cfg = GuestDtConfig { arch: GuestArch::Arm32, gic: GicVersion::V2, ..linux_cfg() };
        let dtb = build(&cfg).unwrap();
        let fdt = Fdt::new(&dtb).unwrap();
        let gic = "/interrupt-controller@3001000";
        assert_eq!(value(&fdt, gic, "compatible"), b"arm,gic-400\0arm,cortex-a15-gic\0");
        // Xen's domU GICv2 layout: a 4 KiB distributor, the 8 KiB CPU interface after it.
        assert_eq!(value(&fdt, gic, "reg"), cells(&[0, 0x0300_1000, 0, 0x1000, 0, 0x0300_2000, 0, 0x2000]));
        assert_eq!(value(&fdt, "/timer", "compatible"), b"arm,armv7-timer\0");
    }

    #[test]
    fn arm64_on_a_gicv2_host_gets_a_gic400() {
        let cfg = GuestDtConfig { gic: GicVersion::V2, ..linux_cfg() };
        let dtb = build(&cfg).unwrap();
        let fdt = Fdt::new(&dtb).unwrap();
        let gic = "/interrupt-controller@3001000";
        assert_eq!(value(&fdt, gic, "compatible"), b"arm,gic-400\0arm,cortex-a15-gic\0");
        assert_eq!(value(&fdt, gic, "reg"), cells(&[0, 0x0300_1000, 0, 0x1000, 0, 0x0300_2000, 0, 0x2000]));
        assert_eq!(value(&fdt, "/timer", "compatible"), b"arm,armv8-timer\0");
    }

    #[test]
    fn rejects_what_it_cannot_describe() {
        let bad = |cfg: GuestDtConfig<'static>| build(&cfg).unwrap_err();
        assert_eq!(bad(GuestDtConfig { cpus: 0, ..linux_cfg() }), GuestDtError::BadCpuCount(0));
        assert_eq!(bad(GuestDtConfig { cpus: 9, ..linux_cfg() }), GuestDtError::BadCpuCount(9));
        assert_eq!(bad(GuestDtConfig { ram_size: 0, ..linux_cfg() }), GuestDtError::EmptyMemory);
        assert_eq!(bad(GuestDtConfig { ram_base: u64::MAX, ..linux_cfg() }), GuestDtError::EmptyMemory);
        assert_eq!(bad(GuestDtConfig { initrd: Some((5, 5)), ..linux_cfg() }), GuestDtError::BadInitrd);
        assert_eq!(bad(GuestDtConfig { bootargs: Some("a\0b"), ..linux_cfg() }), GuestDtError::BadBootargs);
    }

    #[test]
    fn fits_linux_limits() {
        // arm64 booting.rst: at most 2 MiB; we place it 8-byte aligned.
        let dtb = build(&GuestDtConfig { cpus: MAX_VCPUS, ..linux_cfg() }).unwrap();
        assert!(dtb.len() < 4096, "{} bytes", dtb.len());
    }

    /// `dtc` reads the blob back without a warning, apart from the one check Linux's
    /// `/hypervisor` lookup forces us to fail (see [`hypervisor`]).
    #[test]
    fn dtc_accepts_it() {
        if std::env::var_os("XHV_SKIP_DTC").is_some_and(|v| v == "1") {
            eprintln!("XHV_SKIP_DTC=1: skipping the dtc cross-check");
            return;
        }
        for (arch, gic) in [(GuestArch::Arm64, GicVersion::V3), (GuestArch::Arm32, GicVersion::V2)] {
            let dtb = build(&GuestDtConfig { arch, gic, ..linux_cfg() }).unwrap();
            let mut child = Command::new("dtc")
                .args(["-I", "dtb", "-O", "dts", "-W", "no-unit_address_vs_reg"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dtc not found: apt-get install device-tree-compiler (or set XHV_SKIP_DTC=1)");
            child.stdin.take().unwrap().write_all(&dtb).unwrap();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && stderr.is_empty(), "dtc: {stderr}");
            let dts = String::from_utf8(out.stdout).unwrap();
            assert!(dts.contains("hypervisor {"), "{dts}");
        }
    }
}
