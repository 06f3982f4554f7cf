//! Hardware discovery from the flattened device tree the loader passed in r2.
//!
//! `fdt` walks the tree; `reg` values are decoded here because the crate assumes they fit a
//! pointer and uses the spec's default cell sizes where a parent omits them, while QEMU's
//! `/chosen/module@..` nodes (and Linux) rely on the sizes inherited from further up.

use crate::boot::{BootInfo, ModuleKind, Region};
use fdt::Fdt;
use fdt::node::FdtNode;

/// `#address-cells` / `#size-cells` that apply to a node's `reg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cells {
    addr: usize,
    size: usize,
}

/// Cells at the root before it says anything: the devicetree specification's defaults.
const SPEC_DEFAULT: Cells = Cells { addr: 2, size: 1 };

/// The hypervisor reaches physical memory through a 32-bit identity map.
pub const ADDRESS_LIMIT: u64 = 1 << 32;

/// Which generation of GIC the tree describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

/// What the rest of boot needs besides [`BootInfo`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Platform {
    /// Physical address of the console PL011.
    pub uart: Option<u64>,
    /// The interrupt controller and its first `reg` entry (distributor).
    pub gic: Option<(GicVersion, u64)>,
    /// A GICv2's first four `reg` entries: distributor, CPU interface, GICH, GICV (0 if
    /// absent), and its maintenance interrupt as an INTID.
    pub gicv2_regs: [u64; 4],
    pub maintenance: u32,
    /// Timer INTIDs: secure physical, non-secure physical, virtual, hypervisor.
    pub timer_intids: Option<[u32; 4]>,
}

const GICV2_COMPATIBLE: [&str; 4] = ["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a7-gic", "arm,cortex-a9-gic"];
const GICV3_COMPATIBLE: [&str; 1] = ["arm,gic-v3"];

/// Parse the tree at `dtb` and fill `boot` with RAM, reservations, modules and CPUs.
pub fn discover(dt: &Fdt, boot: &mut BootInfo) -> Platform {
    let Some(root) = dt.find_node("/") else {
        return Platform::default();
    };
    let cells = child_cells(root, SPEC_DEFAULT);
    for node in root.children().filter(|n| is_memory(*n)) {
        for r in regs(node, cells) {
            boot.add_ram(r);
        }
    }
    reserve_firmware_regions(dt, boot);
    boot.cpu_count = count_cpus(dt);
    add_modules(dt, cells, boot);
    let mut p = Platform { uart: stdout_uart(dt), maintenance: 25, ..Platform::default() };
    walk(root, cells, &mut |node, c| {
        if p.gic.is_none() {
            p.gic = gic_of(node, c);
            if p.gic.is_some_and(|(v, _)| v == GicVersion::V2) {
                for (slot, r) in p.gicv2_regs.iter_mut().zip(regs(node, c)) {
                    *slot = r.start;
                }
                if let ([[kind, number, _], ..], 1..) = interrupt_specs(node) {
                    p.maintenance = if kind == 1 { 16 + number } else { 32 + number };
                }
            }
        }
        if p.timer_intids.is_none()
            && compatible_with(node, &["arm,armv7-timer", "arm,armv8-timer"])
            && let (specs, 4) = interrupt_specs(node)
        {
            p.timer_intids = Some(specs.map(|[kind, number, _]| if kind == 1 { 16 + number } else { 32 + number }));
        }
    });
    p
}

/// A node's first four `interrupts` as three-cell GIC specifiers (type, number, flags).
/// Runs before the heap exists: no allocation.
fn interrupt_specs(node: FdtNode) -> ([[u32; 3]; 4], usize) {
    let value = node.property("interrupts").map_or(&[][..], |p| p.value);
    let mut specs = [[0u32; 3]; 4];
    let mut count = 0;
    for (slot, c) in specs.iter_mut().zip(value.chunks_exact(12)) {
        *slot = [0, 1, 2].map(|i| u32::from_be_bytes([c[4 * i], c[4 * i + 1], c[4 * i + 2], c[4 * i + 3]]));
        count += 1;
    }
    (specs, count)
}

/// Cell sizes a node's children use: its own properties, else what applied to it.
fn child_cells(node: FdtNode, inherited: Cells) -> Cells {
    let read = |name| node.property(name).and_then(|p| p.as_usize());
    Cells {
        addr: read("#address-cells").unwrap_or(inherited.addr),
        size: read("#size-cells").unwrap_or(inherited.size),
    }
}

/// Visit every node below `node` with the cells that apply to its `reg`.
fn walk<'b, 'a>(node: FdtNode<'b, 'a>, cells: Cells, visit: &mut dyn FnMut(FdtNode<'b, 'a>, Cells)) {
    for child in node.children() {
        visit(child, cells);
        walk(child, child_cells(child, cells), visit);
    }
}

/// Decode a `reg` property; entries wider than 64 bits are skipped.
fn regs<'a>(node: FdtNode<'_, 'a>, cells: Cells) -> impl Iterator<Item = Region> + 'a {
    let value = node.property("reg").map_or(&[][..], |p| p.value);
    let entry = (cells.addr + cells.size) * 4;
    let usable = cells.addr <= 2 && cells.size <= 2 && entry > 0;
    let chunks = if usable { value.chunks_exact(entry) } else { [].chunks_exact(1) };
    chunks.map(move |e| {
        let (a, s) = e.split_at(cells.addr * 4);
        Region { start: be_cells(a), size: be_cells(s) }
    })
}

/// A big-endian number of one or two 32-bit cells.
fn be_cells(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

fn is_memory(node: FdtNode) -> bool {
    node.property("device_type").and_then(|p| p.as_str()) == Some("memory")
}

fn compatible_with(node: FdtNode, names: &[&str]) -> bool {
    node.compatible().is_some_and(|c| c.all().any(|s| names.contains(&s)))
}

/// `/memreserve/` entries and `/reserved-memory` children (firmware's own memory).
fn reserve_firmware_regions(dt: &Fdt, boot: &mut BootInfo) {
    for r in dt.memory_reservations() {
        boot.add_reserved(Region { start: r.address() as u64, size: r.size() as u64 });
    }
    if let Some((node, cells)) = find_with_cells(dt, "/reserved-memory") {
        let cells = child_cells(node, cells);
        for child in node.children() {
            for r in regs(child, cells) {
                boot.add_reserved(r);
            }
        }
    }
}

fn count_cpus(dt: &Fdt) -> usize {
    let Some(cpus) = crate::arm::dtpath::node(dt, "/cpus") else {
        return 1;
    };
    let is_cpu = |n: &FdtNode| n.property("device_type").and_then(|p| p.as_str()) == Some("cpu");
    cpus.children().filter(is_cpu).count().max(1)
}

/// `/chosen/module@..` nodes (Xen's multiboot binding, which QEMU's `guest-loader` writes).
fn add_modules(dt: &Fdt, root_cells: Cells, boot: &mut BootInfo) {
    let Some(chosen) = crate::arm::dtpath::node(dt, "/chosen") else {
        return;
    };
    let cells = child_cells(chosen, root_cells);
    for node in chosen.children() {
        let Some(kind) = module_kind(node) else {
            continue;
        };
        let bootargs = node.property("bootargs").and_then(|p| p.as_str()).unwrap_or("");
        let reachable = |r: &Region| r.start.checked_add(r.size).is_some_and(|end| end <= ADDRESS_LIMIT);
        if let Some(region) = regs(node, cells).next().filter(reachable) {
            boot.add_module(region, kind, bootargs.as_bytes());
        }
    }
}

fn module_kind(node: FdtNode) -> Option<ModuleKind> {
    if !compatible_with(node, &["multiboot,module"]) {
        return None;
    }
    let is = |name: &str| compatible_with(node, &[name]);
    if is("multiboot,ramdisk") {
        Some(ModuleKind::Ramdisk)
    } else if is("multiboot,device-tree") {
        Some(ModuleKind::DeviceTree)
    } else {
        Some(ModuleKind::Kernel)
    }
}

fn gic_of(node: FdtNode, cells: Cells) -> Option<(GicVersion, u64)> {
    node.property("interrupt-controller")?;
    let version = if compatible_with(node, &GICV2_COMPATIBLE) {
        GicVersion::V2
    } else if compatible_with(node, &GICV3_COMPATIBLE) {
        GicVersion::V3
    } else {
        return None;
    };
    Some((version, regs(node, cells).next()?.start))
}

/// The PL011 `/chosen/stdout-path` names (a path or an alias, `:options` ignored).
fn stdout_uart(dt: &Fdt) -> Option<u64> {
    let chosen = crate::arm::dtpath::node(dt, "/chosen")?;
    let path = chosen.property("stdout-path").and_then(|p| p.as_str())?;
    let path = path.split(':').next().unwrap_or(path);
    let path = if path.starts_with('/') { path } else { dt.aliases()?.resolve(path)? };
    let (node, cells) = find_with_cells(dt, path)?;
    if !compatible_with(node, &["arm,pl011"]) {
        return None;
    }
    Some(regs(node, cells).next()?.start)
}

/// Find the node at `path` and the cells that apply to its `reg`.
fn find_with_cells<'b, 'a>(dt: &'b Fdt<'a>, path: &str) -> Option<(FdtNode<'b, 'a>, Cells)> {
    let mut node = dt.find_node("/")?;
    let mut cells = SPEC_DEFAULT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cells = child_cells(node, cells);
        node = node.children().find(|c| name_matches(c.name, part))?;
    }
    Some((node, cells))
}

/// `pl011@9000000` matches itself, and `pl011` matches it when the unit address is left out.
fn name_matches(name: &str, part: &str) -> bool {
    name == part || (!part.contains('@') && name.split('@').next() == Some(part))
}
