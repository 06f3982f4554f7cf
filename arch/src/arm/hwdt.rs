//! Hardware discovery from the host's flattened device tree: memory (with `/memreserve/` and
//! `/reserved-memory`), CPUs and how they are started, the GIC, the architected timer's
//! interrupts and the console UART. Plain logic over the blob (no registers, no allocation),
//! so it runs on the boot CPU with the MMU off and in host tests over real board DTBs alike.
//!
//! Only what the hypervisor needs is read; every node with `status` other than `okay` is
//! ignored. Device addresses are translated to CPU physical addresses through the `ranges`
//! of every bus above them (the Raspberry Pi 4's `/soc` gives bus addresses 0x7e...).

use crate::arm::uart::{Uart, UartKind};
use crate::boot::{BootInfo, MAX_REGIONS, ModuleKind, Region};
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::{Node, Property};

/// CPUs we track (and can start); the DT may list more.
pub const MAX_CPUS: usize = 8;

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Smc,
    Hvc,
}

/// How a secondary CPU is brought up (its node's `enable-method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EnableMethod {
    /// `psci`: CPU_ON through the PSCI conduit.
    Psci,
    /// `spin-table`: the CPU waits in firmware for an entry address at `cpu-release-addr`.
    SpinTable { release_addr: u64 },
    /// Anything else (or nothing): we do not know how to start it.
    #[default]
    Unknown,
}

/// The interrupt controller, recorded for the banner and the vGIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gic {
    #[default]
    None,
    V2 {
        dist: u64,
        cpu: u64,
        /// Size of the CPU interface's `reg` entry: 128 KiB where each 4 KiB page is aliased
        /// over 64 KiB (GIC-400 on ZynqMP), see [`crate::arm::gicv2::contiguous_base`].
        cpu_size: u64,
        /// Virtual interface control (GICH) and virtual CPU interface (GICV); 0 when the
        /// GIC has no virtualization extensions.
        hyp: u64,
        vcpu: u64,
        vcpu_size: u64,
        /// The virtualization maintenance interrupt (a PPI), as an INTID.
        maintenance: u32,
    },
    V3 {
        dist: u64,
        redist: u64,
        /// The virtualization maintenance interrupt (a PPI), as an INTID.
        maintenance: u32,
    },
}

/// What arch keeps about the machine beyond [`BootInfo`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Platform {
    pub ram: [Region; MAX_REGIONS],
    pub ram_count: usize,
    /// The console UART, if one was found.
    pub uart: Option<Uart>,
    pub gic: Gic,
    /// Timer INTIDs: secure physical, non-secure physical, virtual, hypervisor.
    pub timer_intids: Option<[u32; 4]>,
    pub psci: Option<Conduit>,
    /// MPIDR affinity of each CPU node, in DT order.
    pub mpidrs: [u64; MAX_CPUS],
    /// Each CPU's `enable-method`, in DT order.
    pub enable: [EnableMethod; MAX_CPUS],
    /// CPU nodes in the DT (may exceed [`MAX_CPUS`]).
    pub cpu_count: usize,
    pub dtb: Region,
}

impl Platform {
    pub fn ram(&self) -> &[Region] {
        &self.ram[..self.ram_count]
    }
    pub fn mpidrs(&self) -> &[u64] {
        &self.mpidrs[..self.cpu_count.min(MAX_CPUS)]
    }
    /// The secondaries' enable method when they share one (the boot CPU's own is moot).
    pub fn enable_method(&self) -> EnableMethod {
        let n = self.cpu_count.min(MAX_CPUS);
        match self.enable[..n].iter().find(|m| !matches!(m, EnableMethod::Unknown)) {
            Some(EnableMethod::SpinTable { .. }) => EnableMethod::SpinTable { release_addr: 0 },
            Some(m) => *m,
            None => EnableMethod::Unknown,
        }
    }
}

/// Read `fdt` (found at `dtb`), fill `boot` (RAM, reserved ranges, modules, CPU count) and
/// return the rest.
pub fn discover(fdt: Fdt, dtb: Region, boot: &mut BootInfo) -> Platform {
    let mut p = Platform { dtb, ..Platform::default() };
    boot.add_reserved(dtb);
    boot.dtb = Some(dtb);
    find_memory(fdt, boot, &mut p);
    // Physical page 0 (RAM at 0 on raspi4b and zcu102) cannot be handed out: a slice or
    // reference at address 0 is null to Rust. Keep it, like firmware's own pages, reserved.
    if p.ram().iter().any(|r| r.start == 0) {
        boot.add_reserved(Region { start: 0, size: NULL_PAGE });
    }
    find_reserved(fdt, boot);
    p.uart = find_uart(fdt);
    p.gic = find_gic(fdt);
    p.timer_intids = find_timer(fdt);
    p.psci = find_psci(fdt);
    find_cpus(fdt, &mut p);
    boot.cpu_count = p.cpu_count;
    find_modules(fdt, boot);
    p
}

/// The page at physical address 0 that [`discover`] keeps out of use.
pub const NULL_PAGE: u64 = 0x1000;

/// Deeper than any real device tree.
const MAX_DEPTH: usize = 16;

/// A node with every ancestor up to the root: what cell sizes and address translation need
/// (FDT nodes do not link upward).
#[derive(Clone, Copy)]
struct Path<'a> {
    nodes: [Option<FdtNode<'a>>; MAX_DEPTH],
    /// `nodes[..len]` is root ..= node.
    len: usize,
}

impl<'a> Path<'a> {
    fn root(fdt: Fdt<'a>) -> Self {
        let mut nodes = [None; MAX_DEPTH];
        nodes[0] = Some(fdt.root());
        Path { nodes, len: 1 }
    }

    fn node(&self) -> FdtNode<'a> {
        self.nodes[self.len - 1].expect("a path holds its node")
    }

    /// The `i`-th ancestor upward (0: the node itself).
    fn up(&self, i: usize) -> Option<FdtNode<'a>> {
        if i < self.len { self.nodes[self.len - 1 - i] } else { None }
    }

    fn child(&self, node: FdtNode<'a>) -> Option<Self> {
        if self.len == MAX_DEPTH {
            return None;
        }
        let mut next = *self;
        next.nodes[next.len] = Some(node);
        next.len += 1;
        Some(next)
    }
}

/// Call `f` on every node, depth first from the root, until it returns `Some`.
fn find_map<'a, T>(fdt: Fdt<'a>, f: &mut impl FnMut(&Path<'a>) -> Option<T>) -> Option<T> {
    fn walk<'a, T>(path: &Path<'a>, f: &mut impl FnMut(&Path<'a>) -> Option<T>) -> Option<T> {
        if let Some(hit) = f(path) {
            return Some(hit);
        }
        for child in path.node().children() {
            if let Some(hit) = path.child(child).and_then(|p| walk(&p, f)) {
                return Some(hit);
            }
        }
        None
    }
    walk(&Path::root(fdt), f)
}

/// Call `f` on every node.
fn for_each<'a>(fdt: Fdt<'a>, mut f: impl FnMut(&Path<'a>)) {
    find_map::<()>(fdt, &mut |p| {
        f(p);
        None
    });
}

/// The first enabled node compatible with one of `names`.
fn find_compatible<'a>(fdt: Fdt<'a>, names: &[&str]) -> Option<Path<'a>> {
    find_map(fdt, &mut |p| (is_compatible(&p.node(), names) && is_enabled(&p.node())).then_some(*p))
}

/// The node at the absolute `path` (unit addresses may be left out, as `child` allows).
fn lookup<'a>(fdt: Fdt<'a>, path: &str) -> Option<Path<'a>> {
    let mut at = Path::root(fdt);
    for name in path.split('/').filter(|n| !n.is_empty()) {
        let child = at.node().child(name)?;
        at = at.child(child)?;
    }
    Some(at)
}

fn find_memory(fdt: Fdt, boot: &mut BootInfo, p: &mut Platform) {
    for_each(fdt, |path| {
        let node = path.node();
        if prop_str(&node, "device_type") != Some("memory") || !is_enabled(&node) {
            return;
        }
        for r in regs(path) {
            boot.add_ram(r);
            if p.ram_count < MAX_REGIONS && r.size > 0 {
                p.ram[p.ram_count] = r;
                p.ram_count += 1;
            }
        }
    });
}

/// `/memreserve/` entries and `/reserved-memory` children (firmware, secure world...).
fn find_reserved(fdt: Fdt, boot: &mut BootInfo) {
    for r in fdt.memory_reservations() {
        boot.add_reserved(Region { start: r.address(), size: r.size() });
    }
    if let Some(parent) = lookup(fdt, "/reserved-memory") {
        for child in parent.node().children().filter(is_enabled) {
            for r in parent.child(child).iter().flat_map(regs) {
                boot.add_reserved(r);
            }
        }
    }
}

/// The console: the node `/chosen/stdout-path` names (options after ':' dropped; an alias
/// resolved), else the `serial0`, `serial1`, ... aliases in order, else the first enabled UART
/// of a kind we drive. A named UART of a kind we do not drive gives none.
fn find_uart(fdt: Fdt) -> Option<Uart> {
    let of = |path: &Path| -> Option<Uart> {
        let node = path.node();
        if !is_enabled(&node) {
            return None;
        }
        let kind = uart_kind(&node)?;
        let base = regs(path).next()?.start;
        Some(Uart { kind, base })
    };
    let chosen = lookup(fdt, "/chosen").map(|p| p.node());
    let stdout = chosen
        .and_then(|c| prop_str(&c, "stdout-path").or_else(|| prop_str(&c, "linux,stdout-path")))
        .map(|s| s.split(':').next().unwrap_or(s));
    if let Some(path) = stdout.and_then(|path| lookup_path_or_alias(fdt, path)) {
        return of(&path);
    }
    let aliases = lookup(fdt, "/aliases").map(|p| p.node());
    for i in 0..8u8 {
        let name = [b's', b'e', b'r', b'i', b'a', b'l', b'0' + i];
        let name = core::str::from_utf8(&name).unwrap_or("serial0");
        let target = aliases.as_ref().and_then(|a| prop_str(a, name));
        if let Some(uart) = target.and_then(|t| lookup(fdt, t)).and_then(|p| of(&p)) {
            return Some(uart);
        }
    }
    find_map(fdt, &mut |p| of(p))
}

/// The UART register model a node's `compatible` calls for.
fn uart_kind(node: &FdtNode) -> Option<UartKind> {
    let reg_shift = cell(node, "reg-shift").unwrap_or(0) as u8;
    node.compatible()?.find_map(|c| match c {
        "arm,pl011" | "arm,sbsa-uart" => Some(UartKind::Pl011),
        // The BCM2835 auxiliary "mini UART": an 8250 subset with 32-bit registers.
        "brcm,bcm2835-aux-uart" => Some(UartKind::Ns16550 { reg_shift: 2 }),
        "ns16550a" | "ns16550" | "ns8250" | "snps,dw-apb-uart" => Some(UartKind::Ns16550 { reg_shift }),
        "cdns,uart-r1p12" | "cdns,uart-r1p8" | "xlnx,xuartps" => Some(UartKind::Cadence),
        "fsl,imx6q-uart" | "fsl,imx21-uart" | "fsl,imx7d-uart" => Some(UartKind::Imx),
        _ => None,
    })
}

/// `path` as a full path, or as an alias whose value is one.
fn lookup_path_or_alias<'a>(fdt: Fdt<'a>, path: &str) -> Option<Path<'a>> {
    if path.starts_with('/') {
        return lookup(fdt, path);
    }
    let aliases = lookup(fdt, "/aliases")?.node();
    lookup(fdt, prop_str(&aliases, path)?)
}

fn find_gic(fdt: Fdt) -> Gic {
    if let Some(path) = find_compatible(fdt, &["arm,gic-v3"]) {
        let mut r = regs(&path);
        if let (Some(dist), Some(redist)) = (r.next(), r.next()) {
            return Gic::V3 { dist: dist.start, redist: redist.start, maintenance: maintenance_intid(&path.node()) };
        }
    }
    if let Some(path) =
        find_compatible(fdt, &["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a7-gic", "arm,cortex-a9-gic"])
    {
        let mut r = regs(&path);
        if let (Some(dist), Some(cpu)) = (r.next(), r.next()) {
            let (hyp, vcpu) = (r.next().unwrap_or_default(), r.next().unwrap_or_default());
            return Gic::V2 {
                dist: dist.start,
                cpu: cpu.start,
                cpu_size: cpu.size,
                hyp: hyp.start,
                vcpu: vcpu.start,
                vcpu_size: vcpu.size,
                maintenance: maintenance_intid(&path.node()),
            };
        }
    }
    Gic::None
}

/// The GIC node's own interrupt, the maintenance PPI; INTID 25 (what SBSA recommends and
/// QEMU uses) when the node does not say.
fn maintenance_intid(node: &FdtNode) -> u32 {
    const DEFAULT: u32 = 25;
    let Some(spec) = raw(node, "interrupts").filter(|v| v.len() >= 12) else {
        return DEFAULT;
    };
    if be32(&spec[0..4]) == 1 { 16 + be32(&spec[4..8]) } else { DEFAULT }
}

/// The architected timer's four PPIs, as INTIDs (DT numbers PPIs from 0; INTID = 16 + n).
fn find_timer(fdt: Fdt) -> Option<[u32; 4]> {
    let node = find_compatible(fdt, &["arm,armv8-timer", "arm,armv7-timer"])?.node();
    let cells = raw(&node, "interrupts")?;
    let mut intids = [0u32; 4];
    for (i, spec) in cells.chunks_exact(12).take(4).enumerate() {
        let number = be32(&spec[4..8]);
        intids[i] = if be32(&spec[0..4]) == 1 { 16 + number } else { 32 + number };
    }
    Some(intids)
}

fn find_psci(fdt: Fdt) -> Option<Conduit> {
    let node = find_compatible(fdt, &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?.node();
    match prop_str(&node, "method")? {
        "smc" => Some(Conduit::Smc),
        "hvc" => Some(Conduit::Hvc),
        _ => None,
    }
}

fn find_cpus(fdt: Fdt, p: &mut Platform) {
    let Some(cpus) = lookup(fdt, "/cpus").map(|c| c.node()) else {
        p.cpu_count = 1; // the one running this
        return;
    };
    let cells = cell(&cpus, "#address-cells").unwrap_or(1) as usize;
    let shared_method = prop_str(&cpus, "enable-method");
    for cpu in cpus.children().filter(|n| prop_str(n, "device_type") == Some("cpu") && is_enabled(n)) {
        let mpidr = cpu.property("reg").map(|r| read_cells(r.value(), cells)).unwrap_or(0);
        let method = match prop_str(&cpu, "enable-method").or(shared_method) {
            Some("psci") => EnableMethod::Psci,
            Some("spin-table") => match cpu.property("cpu-release-addr") {
                Some(a) => EnableMethod::SpinTable { release_addr: read_cells(a.value(), a.value().len() / 4) },
                None => EnableMethod::Unknown,
            },
            _ => EnableMethod::Unknown,
        };
        if p.cpu_count < MAX_CPUS {
            p.mpidrs[p.cpu_count] = mpidr;
            p.enable[p.cpu_count] = method;
        }
        p.cpu_count += 1;
    }
    p.cpu_count = p.cpu_count.max(1);
}

/// `/chosen/module@...` nodes (Xen's multiboot bindings, as QEMU's guest-loader writes them).
fn find_modules(fdt: Fdt, boot: &mut BootInfo) {
    let Some(chosen) = lookup(fdt, "/chosen") else {
        return;
    };
    for node in chosen.node().children() {
        let kind = if is_compatible(&node, &["multiboot,kernel"]) {
            ModuleKind::Kernel
        } else if is_compatible(&node, &["multiboot,ramdisk"]) {
            ModuleKind::Ramdisk
        } else if is_compatible(&node, &["multiboot,device-tree"]) {
            ModuleKind::DeviceTree
        } else {
            continue;
        };
        let bootargs = prop_str(&node, "bootargs").unwrap_or("");
        if let Some(region) = chosen.child(node).and_then(|p| regs(&p).next()) {
            boot.add_module(region, kind, bootargs.as_bytes());
        }
    }
}

/// The `reg` entries of the node at `path` as CPU physical addresses: sized by the nearest
/// ancestor that declares `#address-cells` / `#size-cells` (QEMU's `/chosen` declares none
/// and relies on the root's), translated through the `ranges` of every bus above it. An
/// entry no `ranges` covers is dropped.
fn regs<'a>(path: &Path<'a>) -> impl Iterator<Item = Region> + 'a {
    let path = *path;
    let ac = inherited_cells(&path, 1, "#address-cells", 2).min(2);
    let sc = inherited_cells(&path, 1, "#size-cells", 1).min(2);
    let value = raw(&path.node(), "reg").unwrap_or(&[]);
    let stride = 4 * (ac + sc);
    value.chunks_exact(stride.max(4)).filter(move |_| stride > 0).filter_map(move |entry| {
        let start = read_cells(&entry[..4 * ac], ac);
        let size = read_cells(&entry[4 * ac..], sc);
        Some(Region { start: translate(&path, start)?, size })
    })
}

/// `name` from the `from`-th ancestor of the path's node or the nearest one above it that has
/// it; `default` if none does.
fn inherited_cells(path: &Path, from: usize, name: &str, default: u32) -> usize {
    (from..path.len).find_map(|i| path.up(i).and_then(|n| cell(&n, name))).unwrap_or(default) as usize
}

/// Translate `addr`, an address in the node's parent bus, up to the root: each bus with a
/// non-empty `ranges` maps child windows into its own parent's space; a bus with an empty
/// `ranges` (or none, leniently) is identity.
fn translate(path: &Path, mut addr: u64) -> Option<u64> {
    // up(1) is the bus the node's `reg` is on; stop below the root (up(len - 1)).
    for level in 1..path.len.saturating_sub(1) {
        let bus = path.up(level)?;
        let ranges = raw(&bus, "ranges").unwrap_or(&[]);
        if ranges.is_empty() {
            continue;
        }
        let child_ac = inherited_cells(path, level, "#address-cells", 2).min(3);
        let sc = inherited_cells(path, level, "#size-cells", 1).min(2);
        let parent_ac = inherited_cells(path, level + 1, "#address-cells", 2).min(3);
        let entry = 4 * (child_ac + parent_ac + sc);
        // Addresses of 3 cells (PCI) carry flags in their first cell: use the low two.
        let low = |b: &[u8], cells: usize| read_cells(&b[4 * cells.saturating_sub(2)..], cells.min(2));
        addr = ranges.chunks_exact(entry).find_map(|e| {
            let child = low(&e[..4 * child_ac], child_ac);
            let parent = low(&e[4 * child_ac..4 * (child_ac + parent_ac)], parent_ac);
            let size = read_cells(&e[4 * (child_ac + parent_ac)..], sc);
            (child <= addr && addr - child < size).then(|| addr - child + parent)
        })?;
    }
    Some(addr)
}

/// A property's bytes, borrowed from the blob.
fn raw<'a>(node: &FdtNode<'a>, name: &str) -> Option<&'a [u8]> {
    node.property(name)?.value_as::<&'a [u8]>().ok()
}

fn cell(node: &FdtNode, name: &str) -> Option<u32> {
    node.property(name).map(|p| read_cells(p.value(), 1) as u32)
}

fn prop_str<'a>(node: &FdtNode<'a>, name: &str) -> Option<&'a str> {
    let value = raw(node, name)?;
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    core::str::from_utf8(&value[..end]).ok()
}

fn is_compatible(node: &FdtNode, any_of: &[&str]) -> bool {
    node.compatible().is_some_and(|mut c| c.any(|s| any_of.contains(&s)))
}

fn is_enabled(node: &FdtNode) -> bool {
    matches!(prop_str(node, "status"), None | Some("okay") | Some("ok"))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A big-endian number of `cells` 32-bit cells (at most two are meaningful here).
fn read_cells(bytes: &[u8], cells: usize) -> u64 {
    bytes.chunks_exact(4).take(cells).fold(0, |acc, c| (acc << 32) | u64::from(be32(c)))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;
    use vm_fdt::{FdtReserveEntry, FdtWriter};

    fn discover_in(dtb: &[u8]) -> (Platform, BootInfo) {
        let fdt = crate::fdtcheck::open(dtb).expect("a valid DT");
        let mut boot = BootInfo::default();
        let p = discover(fdt, Region { start: 0x0800_0000, size: dtb.len() as u64 }, &mut boot);
        (p, boot)
    }

    fn strings(list: &[&str]) -> Vec<std::string::String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The shape of Debian's `bcm2711-rpi-4-b.dtb` as QEMU's raspi4b hands it over: `/soc`
    /// with bus addresses translated by `ranges`, the GIC-400 there, a mini UART named by
    /// `stdout-path = "serial1:..."`, a PL011 as serial0, spin-table CPUs with release
    /// addresses, `/memreserve/` of page 0, a disabled `reserved-memory` child, a disabled
    /// second mini UART, RAM at 0.
    fn raspi4b_like(stdout_path: bool) -> Vec<u8> {
        let mut w = FdtWriter::new_with_mem_reserv(&[FdtReserveEntry::new(0, 0x1000).unwrap()]).unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.property_string("compatible", "raspberrypi,4-model-b").unwrap();
        let aliases = w.begin_node("aliases").unwrap();
        w.property_string("serial0", "/soc/serial@7e201000").unwrap();
        w.property_string("serial1", "/soc/serial@7e215040").unwrap();
        w.end_node(aliases).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        if stdout_path {
            w.property_string("stdout-path", "serial1:115200n8").unwrap();
        }
        w.end_node(chosen).unwrap();
        let rm = w.begin_node("reserved-memory").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.property_null("ranges").unwrap();
        let nvram = w.begin_node("nvram@0").unwrap();
        w.property_array_u32("reg", &[0, 0x0300_0000, 0x1000]).unwrap();
        w.property_string("status", "disabled").unwrap();
        w.end_node(nvram).unwrap();
        w.end_node(rm).unwrap();
        let soc = w.begin_node("soc").unwrap();
        w.property_string("compatible", "simple-bus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.property_array_u32(
            "ranges",
            &[0x7e00_0000, 0, 0xfe00_0000, 0x0180_0000, 0x4000_0000, 0, 0xff80_0000, 0x0080_0000],
        )
        .unwrap();
        for (name, compat, reg, status) in [
            ("serial@7e201000", "arm,pl011", 0x7e20_1000, "okay"),
            ("serial@7e215040", "brcm,bcm2835-aux-uart", 0x7e21_5040, "okay"),
            ("serial@7e201400", "arm,pl011", 0x7e20_1400, "disabled"),
        ] {
            let n = w.begin_node(name).unwrap();
            w.property_string_list("compatible", strings(&[compat, "arm,primecell"])).unwrap();
            w.property_array_u32("reg", &[reg, 0x200]).unwrap();
            w.property_string("status", status).unwrap();
            w.end_node(n).unwrap();
        }
        let gic = w.begin_node("interrupt-controller@40041000").unwrap();
        w.property_string("compatible", "arm,gic-400").unwrap();
        w.property_array_u32(
            "reg",
            &[0x4004_1000, 0x1000, 0x4004_2000, 0x2000, 0x4004_4000, 0x2000, 0x4004_6000, 0x2000],
        )
        .unwrap();
        w.property_array_u32("interrupts", &[1, 9, 0xf04]).unwrap();
        w.end_node(gic).unwrap();
        w.end_node(soc).unwrap();
        let timer = w.begin_node("timer").unwrap();
        w.property_string("compatible", "arm,armv8-timer").unwrap();
        w.property_array_u32("interrupts", &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08]).unwrap();
        w.end_node(timer).unwrap();
        let cpus = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        for i in 0..4u32 {
            let cpu = w.begin_node(&std::format!("cpu@{i}")).unwrap();
            w.property_string("device_type", "cpu").unwrap();
            w.property_u32("reg", i).unwrap();
            w.property_string("enable-method", "spin-table").unwrap();
            w.property_array_u32("cpu-release-addr", &[0, 0xd8 + 8 * i]).unwrap();
            w.end_node(cpu).unwrap();
        }
        w.end_node(cpus).unwrap();
        let mem = w.begin_node("memory@0").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u32("reg", &[0, 0, 0x3c00_0000]).unwrap();
        w.end_node(mem).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn raspi4b_devices_are_found_at_cpu_addresses_through_soc_ranges() {
        let (p, boot) = discover_in(&raspi4b_like(true));
        // stdout-path "serial1" is the mini UART (16550 registers 4 bytes apart), 0x7e.. -> 0xfe..
        assert_eq!(p.uart, Some(Uart { kind: UartKind::Ns16550 { reg_shift: 2 }, base: 0xfe21_5040 }));
        assert_eq!(
            p.gic,
            Gic::V2 {
                dist: 0xff84_1000,
                cpu: 0xff84_2000,
                cpu_size: 0x2000,
                hyp: 0xff84_4000,
                vcpu: 0xff84_6000,
                vcpu_size: 0x2000,
                maintenance: 25,
            }
        );
        assert_eq!(p.timer_intids, Some([29, 30, 27, 26]));
        assert_eq!(p.ram(), &[Region { start: 0, size: 0x3c00_0000 }]);
        assert_eq!(p.cpu_count, 4);
        assert_eq!(p.mpidrs(), &[0, 1, 2, 3]);
        assert_eq!(p.enable[3], EnableMethod::SpinTable { release_addr: 0xf0 });
        assert_eq!(p.enable_method(), EnableMethod::SpinTable { release_addr: 0 });
        assert_eq!(p.psci, None);
        // The DTB itself, page 0 (RAM at 0, and /memreserve/); not the disabled nvram.
        let reserved = boot.reserved();
        assert!(reserved.contains(&Region { start: 0, size: 0x1000 }));
        assert!(reserved.contains(&p.dtb));
        assert!(!reserved.iter().any(|r| r.start == 0x0300_0000), "a disabled reserved-memory node");
        assert_eq!(boot.cpu_count, 4);
    }

    #[test]
    fn without_stdout_path_the_serial_aliases_decide_and_disabled_uarts_are_skipped() {
        let (p, _) = discover_in(&raspi4b_like(false));
        // serial0: the PL011 at bus 0x7e201000.
        assert_eq!(p.uart, Some(Uart { kind: UartKind::Pl011, base: 0xfe20_1000 }));
    }

    /// The shape of Debian's `zynqmp-zcu102-rev1.0.dtb`: 2/2 cells, `/axi` with an empty
    /// `ranges`, a GIC-400 whose GICC and GICV are 128 KiB (64 KiB-aliased pages), a Cadence
    /// UART as serial0, PSCI by SMC, two RAM banks, a disabled device with interrupts.
    fn zcu102_like() -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("stdout-path", "serial0:115200n8").unwrap();
        w.end_node(chosen).unwrap();
        let aliases = w.begin_node("aliases").unwrap();
        w.property_string("serial0", "/axi/serial@ff000000").unwrap();
        w.end_node(aliases).unwrap();
        let psci = w.begin_node("psci").unwrap();
        w.property_string("compatible", "arm,psci-0.2").unwrap();
        w.property_string("method", "smc").unwrap();
        w.end_node(psci).unwrap();
        let cpus = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        for i in 0..4u32 {
            let cpu = w.begin_node(&std::format!("cpu@{i}")).unwrap();
            w.property_string("device_type", "cpu").unwrap();
            w.property_u32("reg", i).unwrap();
            w.property_string("enable-method", "psci").unwrap();
            w.end_node(cpu).unwrap();
        }
        w.end_node(cpus).unwrap();
        let axi = w.begin_node("axi").unwrap();
        w.property_string("compatible", "simple-bus").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_null("ranges").unwrap();
        let gic = w.begin_node("interrupt-controller@f9010000").unwrap();
        w.property_string("compatible", "arm,gic-400").unwrap();
        w.property_array_u64(
            "reg",
            &[0xf901_0000, 0x1_0000, 0xf902_0000, 0x2_0000, 0xf904_0000, 0x2_0000, 0xf906_0000, 0x2_0000],
        )
        .unwrap();
        w.property_array_u32("interrupts", &[1, 9, 0xf04]).unwrap();
        w.end_node(gic).unwrap();
        let dma = w.begin_node("dma-controller@ffa80000").unwrap();
        w.property_string("compatible", "xlnx,zynqmp-dma-1.0").unwrap();
        w.property_string("status", "disabled").unwrap();
        w.property_array_u64("reg", &[0xffa8_0000, 0x1000]).unwrap();
        w.end_node(dma).unwrap();
        let uart = w.begin_node("serial@ff000000").unwrap();
        w.property_string_list("compatible", strings(&["xlnx,zynqmp-uart", "cdns,uart-r1p12"])).unwrap();
        w.property_string("status", "okay").unwrap();
        w.property_array_u64("reg", &[0xff00_0000, 0x1000]).unwrap();
        w.end_node(uart).unwrap();
        w.end_node(axi).unwrap();
        let timer = w.begin_node("timer").unwrap();
        w.property_string("compatible", "arm,armv8-timer").unwrap();
        w.property_array_u32("interrupts", &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08]).unwrap();
        w.end_node(timer).unwrap();
        let mem = w.begin_node("memory@0").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u64("reg", &[0, 0x8000_0000, 0x8_0000_0000, 0x8000_0000]).unwrap();
        w.end_node(mem).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn zcu102_cadence_uart_aliased_gicc_psci_and_two_ram_banks() {
        let (p, boot) = discover_in(&zcu102_like());
        assert_eq!(p.uart, Some(Uart { kind: UartKind::Cadence, base: 0xff00_0000 }));
        let Gic::V2 { cpu, cpu_size, vcpu, vcpu_size, .. } = p.gic else { panic!("{:?}", p.gic) };
        assert_eq!((cpu, cpu_size, vcpu, vcpu_size), (0xf902_0000, 0x2_0000, 0xf906_0000, 0x2_0000));
        assert_eq!(p.psci, Some(Conduit::Smc));
        assert_eq!(p.enable_method(), EnableMethod::Psci);
        assert_eq!(
            p.ram(),
            &[Region { start: 0, size: 0x8000_0000 }, Region { start: 0x8_0000_0000, size: 0x8000_0000 }]
        );
        assert_eq!(boot.ram(), p.ram());
        // No /memreserve/, but page 0 is still kept out of use.
        assert!(boot.reserved().contains(&Region { start: 0, size: NULL_PAGE }));
    }

    #[test]
    fn a_stdout_uart_we_do_not_drive_gives_no_console_and_a_dt_without_cpus_one_cpu() {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("stdout-path", "/uart@1000").unwrap();
        w.end_node(chosen).unwrap();
        let uart = w.begin_node("uart@1000").unwrap();
        w.property_string("compatible", "acme,uart").unwrap();
        w.property_array_u32("reg", &[0x1000, 0x100]).unwrap();
        w.end_node(uart).unwrap();
        let pl011 = w.begin_node("pl011@2000").unwrap();
        w.property_string("compatible", "arm,pl011").unwrap();
        w.property_array_u32("reg", &[0x2000, 0x100]).unwrap();
        w.end_node(pl011).unwrap();
        let mem = w.begin_node("memory@80000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u32("reg", &[0x8000_0000, 0x1000_0000]).unwrap();
        w.end_node(mem).unwrap();
        w.end_node(root).unwrap();
        let (p, boot) = discover_in(&w.finish().unwrap());
        assert_eq!(p.uart, None, "stdout-path names an unknown UART: say nothing rather than guess");
        assert_eq!(p.cpu_count, 1);
        assert_eq!(p.gic, Gic::None);
        assert_eq!(p.ram(), &[Region { start: 0x8000_0000, size: 0x1000_0000 }]);
        assert!(!boot.reserved().iter().any(|r| r.start == 0), "RAM not at 0: page 0 is no concern");
    }
}
