//! Hardware discovery from the flattened device tree the boot loader passed in x0.
//!
//! Runs on the boot CPU with the MMU still off (the identity map is built from what is found
//! here), so it only reads the blob and fills plain structures: no locks, no allocation.
//! Device addresses are taken from `reg` as they stand: nodes are expected under the root or
//! under buses with identity `ranges`, as on QEMU `virt` and most boards.

use crate::boot::{BootInfo, MAX_REGIONS, ModuleKind, Region};
use fdt::Fdt;
use fdt::node::FdtNode;

/// CPUs we track (and can start); the DT may list more.
pub const MAX_CPUS: usize = 8;

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Smc,
    Hvc,
}

/// The interrupt controller, recorded for the banner and the future vGIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gic {
    #[default]
    None,
    V2 {
        dist: u64,
        cpu: u64,
        /// Virtual interface control (GICH) and virtual CPU interface (GICV); 0 when the
        /// GIC has no virtualization extensions.
        hyp: u64,
        vcpu: u64,
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
    /// PL011 base, 0 if none.
    pub uart: u64,
    pub gic: Gic,
    /// Timer INTIDs: secure physical, non-secure physical, virtual, hypervisor.
    pub timer_intids: Option<[u32; 4]>,
    pub psci: Option<Conduit>,
    /// MPIDR affinity of each CPU node, in DT order.
    pub mpidrs: [u64; MAX_CPUS],
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
}

/// Parse the DTB at `dtb`, fill `boot` (RAM, reserved ranges, modules, CPU count) and return
/// the rest. Fails only when the blob itself is unusable.
pub fn discover(dtb: u64, boot: &mut BootInfo) -> Result<Platform, &'static str> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return Err("no device tree: x0 at entry is not an 8-byte aligned address");
    }
    // SAFETY: the arm64 boot protocol has the loader place a DTB at x0 and leave it intact;
    // `Fdt::from_ptr` checks the magic and reads only within the header's total size. The
    // blob stays in place for the hypervisor's lifetime: it is reserved below.
    let fdt = unsafe { Fdt::from_ptr(dtb as *const u8) }.map_err(|_| "x0 does not point at a valid device tree")?;
    let mut p = Platform { dtb: Region { start: dtb, size: fdt.total_size() as u64 }, ..Platform::default() };
    boot.add_reserved(p.dtb);
    boot.dtb = Some(p.dtb);
    find_memory(&fdt, boot, &mut p);
    find_reserved(&fdt, boot);
    p.uart = find_uart(&fdt).unwrap_or(0);
    p.gic = find_gic(&fdt);
    p.timer_intids = find_timer(&fdt);
    p.psci = find_psci(&fdt);
    find_cpus(&fdt, &mut p);
    boot.cpu_count = p.cpu_count;
    find_modules(&fdt, boot);
    Ok(p)
}

fn find_memory(fdt: &Fdt, boot: &mut BootInfo, p: &mut Platform) {
    let is_memory = |n: &FdtNode| prop_str(n, "device_type") == Some("memory") && is_enabled(n);
    for node in fdt.all_nodes().filter(is_memory) {
        for r in regs(fdt, &node) {
            boot.add_ram(r);
            if p.ram_count < MAX_REGIONS && r.size > 0 {
                p.ram[p.ram_count] = r;
                p.ram_count += 1;
            }
        }
    }
}

/// `/memreserve/` entries and `/reserved-memory` children (firmware, secure world...).
fn find_reserved(fdt: &Fdt, boot: &mut BootInfo) {
    for r in fdt.memory_reservations() {
        boot.add_reserved(Region { start: r.address() as u64, size: r.size() as u64 });
    }
    if let Some(node) = crate::arm::dtpath::node(fdt, "/reserved-memory") {
        for child in node.children() {
            for r in regs(fdt, &child) {
                boot.add_reserved(r);
            }
        }
    }
}

/// The UART `/chosen/stdout-path` names (options after ':' dropped; aliases resolved), if it
/// is a PL011; else the first enabled PL011.
fn find_uart(fdt: &Fdt) -> Option<u64> {
    const PL011: [&str; 2] = ["arm,pl011", "arm,sbsa-uart"];
    let chosen = crate::arm::dtpath::node(fdt, "/chosen");
    let path = chosen.and_then(|c| prop_str(&c, "stdout-path")).map(|s| s.split(':').next().unwrap_or(s));
    let stdout = path.and_then(|p| crate::arm::dtpath::node(fdt, p)).filter(|n| is_compatible(n, &PL011));
    let node = stdout.or_else(|| fdt.all_nodes().find(|n| is_compatible(n, &PL011) && is_enabled(n)))?;
    regs(fdt, &node).next().map(|r| r.start)
}

fn find_gic(fdt: &Fdt) -> Gic {
    if let Some(node) = fdt.find_compatible(&["arm,gic-v3"]) {
        let mut r = regs(fdt, &node);
        if let (Some(dist), Some(redist)) = (r.next(), r.next()) {
            return Gic::V3 { dist: dist.start, redist: redist.start, maintenance: maintenance_intid(&node) };
        }
    }
    if let Some(node) = fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"]) {
        let mut r = regs(fdt, &node);
        if let (Some(dist), Some(cpu)) = (r.next(), r.next()) {
            let (hyp, vcpu) = (r.next().map_or(0, |h| h.start), r.next().map_or(0, |v| v.start));
            return Gic::V2 { dist: dist.start, cpu: cpu.start, hyp, vcpu, maintenance: maintenance_intid(&node) };
        }
    }
    Gic::None
}

/// The GIC node's own interrupt, the maintenance PPI; INTID 25 (what SBSA recommends and
/// QEMU uses) when the node does not say.
fn maintenance_intid(node: &FdtNode) -> u32 {
    const DEFAULT: u32 = 25;
    let Some(spec) = node.property("interrupts").map(|p| p.value).filter(|v| v.len() >= 12) else {
        return DEFAULT;
    };
    if be32(&spec[0..4]) == 1 { 16 + be32(&spec[4..8]) } else { DEFAULT }
}

/// The architected timer's four PPIs, as INTIDs (DT numbers PPIs from 0; INTID = 16 + n).
fn find_timer(fdt: &Fdt) -> Option<[u32; 4]> {
    let node = fdt.find_compatible(&["arm,armv8-timer", "arm,armv7-timer"])?;
    let cells = node.property("interrupts")?.value;
    let mut intids = [0u32; 4];
    for (i, spec) in cells.chunks_exact(12).take(4).enumerate() {
        let number = be32(&spec[4..8]);
        intids[i] = if be32(&spec[0..4]) == 1 { 16 + number } else { 32 + number };
    }
    Some(intids)
}

fn find_psci(fdt: &Fdt) -> Option<Conduit> {
    let node = fdt.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
    match prop_str(&node, "method")? {
        "smc" => Some(Conduit::Smc),
        "hvc" => Some(Conduit::Hvc),
        _ => None,
    }
}

fn find_cpus(fdt: &Fdt, p: &mut Platform) {
    let Some(cpus) = crate::arm::dtpath::node(fdt, "/cpus") else {
        p.cpu_count = 1; // the one running this
        return;
    };
    let cells = cell_count(&cpus, "#address-cells").unwrap_or(1);
    for cpu in cpus.children().filter(|n| prop_str(n, "device_type") == Some("cpu") && is_enabled(n)) {
        let mpidr = cpu.property("reg").map(|r| read_cells(r.value, cells)).unwrap_or(0);
        if p.cpu_count < MAX_CPUS {
            p.mpidrs[p.cpu_count] = mpidr;
        }
        p.cpu_count += 1;
    }
    p.cpu_count = p.cpu_count.max(1);
}

/// `/chosen/module@...` nodes (Xen's multiboot bindings, as QEMU's guest-loader writes them).
fn find_modules(fdt: &Fdt, boot: &mut BootInfo) {
    let Some(chosen) = crate::arm::dtpath::node(fdt, "/chosen") else {
        return;
    };
    for node in chosen.children() {
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
        if let Some(region) = regs(fdt, &node).next() {
            boot.add_module(region, kind, bootargs.as_bytes());
        }
    }
}

/// The `reg` entries of `node`, sized by the nearest ancestor that declares `#address-cells`
/// / `#size-cells` (QEMU's `/chosen` declares none and relies on the root's).
fn regs<'a>(fdt: &'a Fdt, node: &FdtNode<'_, 'a>) -> impl Iterator<Item = Region> + 'a {
    let (ac, sc) = parent_cells(fdt, node);
    let value = node.property("reg").map(|p| p.value).unwrap_or(&[]);
    let stride = 4 * (ac + sc);
    value
        .chunks_exact(stride.max(4))
        .filter(move |_| stride > 0)
        .map(move |entry| Region { start: read_cells(&entry[..4 * ac], ac), size: read_cells(&entry[4 * ac..], sc) })
}

/// Cell sizes for `node`'s `reg`: its parent's, else the root's, else the DT spec defaults.
fn parent_cells(fdt: &Fdt, node: &FdtNode) -> (usize, usize) {
    let root = fdt.find_node("/");
    let parent = parent_of(fdt, node);
    let get = |name: &str, default: usize| {
        parent
            .as_ref()
            .and_then(|p| cell_count(p, name))
            .or_else(|| root.as_ref().and_then(|r| cell_count(r, name)))
            .unwrap_or(default)
    };
    (get("#address-cells", 2).min(2), get("#size-cells", 1).min(2))
}

/// The parent of `node`: the `fdt` crate does not link nodes upward, so search for the node
/// that has it as a child (same name and same property block).
fn parent_of<'b, 'a>(fdt: &'b Fdt<'a>, node: &FdtNode) -> Option<FdtNode<'b, 'a>> {
    let key = |n: &FdtNode| (n.name.as_ptr(), n.name.len());
    fdt.all_nodes().find(|p| p.children().any(|c| key(&c) == key(node)))
}

fn cell_count(node: &FdtNode, name: &str) -> Option<usize> {
    node.property(name).map(|p| read_cells(p.value, 1) as usize)
}

fn prop_str<'a>(node: &FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    let value = node.property(name)?.value;
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    core::str::from_utf8(&value[..end]).ok()
}

fn is_compatible(node: &FdtNode, any_of: &[&str]) -> bool {
    node.compatible().is_some_and(|c| c.all().any(|s| any_of.contains(&s)))
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
