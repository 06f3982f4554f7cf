//! The boot configuration: which domains to build, read from the device tree in Xen's
//! dom0less bindings.
//!
//! Every architecture uses this one format (ARM gets the DT from its bootloader, x86 as a
//! multiboot2 module), so configurations written for Xen boot here unchanged. Two layouts are
//! understood:
//!
//! - dom0less: each child of `/chosen` whose `compatible` holds `xen,domain` is a domain, with
//!   `cpus`, `memory` (KiB) and `vpl011` on the node and its kernel, ramdisk and device-tree
//!   fragment as `multiboot,*` module sub-nodes whose `reg` uses the domain node's own
//!   `#address-cells` / `#size-cells` (the binding requires both).
//! - the dom0 layout QEMU's `-device guest-loader` writes: modules directly under `/chosen`.
//!   They become one implicit domain so single-guest boots keep working.
//!
//! ## x86: modules named by their multiboot2 index
//!
//! On x86 the DT is itself a multiboot2 module and GRUB, not the configuration's author,
//! decides where every module lands, so a `reg` cannot be written in advance. There, module
//! sub-nodes name their image by its position in the multiboot2 module chain instead, with
//! the `mb-index` property (one cell) of Xen's hyperlaunch binding
//! (docs/designs/launch/hyperlaunch-devicetree.rst in Xen's tree): it is the property Xen
//! defines for exactly this, so a configuration stays readable to Xen users and no name of
//! ours has to be invented. Indices count from 0 in the order the loader lists the modules
//! (GRUB: the order of the `module2` lines), the configuration DT included, as in the
//! binding's examples, where the DT is module 0. [`parse_multiboot_domains`] reads this
//! form: `reg` is not looked at there (and `#address-cells` / `#size-cells` are not
//! needed), an index past the chain or naming the configuration module itself is an error,
//! and several domains may name one module (the binding's own case: one kernel, per-domain
//! `bootargs`). Only the dom0less layout (`xen,domain` children of `/chosen`, as on ARM) is
//! read, not hyperlaunch's `/chosen/hypervisor` container nor its other properties; its
//! `module,kernel` / `module,ramdisk` / `module,device-tree` compatibles are understood
//! beside the dom0less `multiboot,*` ones.
//!
//! Which module is the configuration is the loader's business: the x86 boot code takes the
//! first multiboot2 module that starts with the FDT magic (0xd00dfeed), which no kernel
//! image format starts with.
//!
//! The blob comes from a bootloader or a user, so every defect is reported as a
//! [`BootCfgError`]; nothing here panics on bad input. Properties this module does not know
//! (Xen's other options, our own scheduler extensions) are ignored.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use dtoolkit::error::FdtParseError;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::{Node, Property};

mod pools;

pub use pools::{Arinc653Config, DomainSchedConfig, PoolConfig, SchedConfig, WindowConfig, parse_sched_config};

/// Name given to the implicit domain built from modules directly under `/chosen`: Xen boots
/// those as dom0, and the first domain built gets id 0 here too.
pub const LOADER_DOMAIN_NAME: &str = "dom0";

/// A region of physical memory the bootloader filled with a module's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleRef {
    pub addr: u64,
    pub size: u64,
}

impl ModuleRef {
    /// One past the last byte; parsing guarantees it does not overflow.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// One domain to build, as the boot configuration describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// The node name (`domU1`), or [`LOADER_DOMAIN_NAME`] for the implicit domain.
    pub name: String,
    pub cpus: u32,
    pub memory_kib: u64,
    /// Whether the guest gets an emulated PL011 (the `vpl011` property is present).
    pub vpl011: bool,
    /// Always present in parsed output; optional so callers can build configs by hand.
    pub kernel: Option<ModuleRef>,
    pub ramdisk: Option<ModuleRef>,
    /// A device-tree fragment for passthrough (`multiboot,device-tree`).
    pub dtb: Option<ModuleRef>,
    pub bootargs: Option<String>,
}

/// What a module sub-node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    Kernel,
    Ramdisk,
    DeviceTree,
}

impl fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModuleKind::Kernel => "kernel",
            ModuleKind::Ramdisk => "ramdisk",
            ModuleKind::DeviceTree => "device-tree",
        })
    }
}

/// Why a boot configuration was rejected. Node names are full paths, so the message points
/// at the line of the `.dts` to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootCfgError {
    /// The blob is not a well-formed flattened device tree.
    InvalidDtb(FdtParseError),
    MissingProperty {
        node: String,
        property: &'static str,
    },
    /// The property has the wrong length or encoding for what the binding says it holds.
    BadProperty {
        node: String,
        property: &'static str,
    },
    /// `#address-cells` / `#size-cells` outside 1..=2 (module addresses are 64-bit at most).
    BadCells {
        node: String,
        property: &'static str,
        cells: u32,
    },
    ZeroCpus {
        domain: String,
    },
    ZeroMemory {
        domain: String,
    },
    MissingKernel {
        domain: String,
    },
    DuplicateModule {
        domain: String,
        kind: ModuleKind,
    },
    /// A module with no bytes, or one that runs past the end of the address space.
    BadModuleRange {
        node: String,
    },
    OverlappingModules {
        first: String,
        second: String,
    },
    DuplicateDomain {
        name: String,
    },
    /// `mb-index` names no module of the loader's chain (x86).
    ModuleIndexOutOfRange {
        node: String,
        index: u32,
        modules: usize,
    },
    /// `mb-index` names the configuration DT itself (x86).
    ModuleIndexIsConfig {
        node: String,
        index: u32,
    },
    /// Neither layout names a kernel: there is nothing to boot.
    NoDomains,
    /// `cpupool-sched` names a scheduler this hypervisor does not have.
    UnknownScheduler {
        node: String,
        name: String,
    },
    /// A phandle names no node, or a node of the wrong kind (not a CPU, pool or domain).
    BadPhandle {
        node: String,
        property: &'static str,
        phandle: u32,
    },
    /// Two pools name one CPU (by its `reg`).
    CpuInTwoPools {
        cpu: u64,
    },
    /// An ARINC 653 window on a CPU its pool does not hold.
    CpuOutsidePool {
        node: String,
        cpu: u64,
    },
}

impl fmt::Display for BootCfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BootCfgError::*;
        match self {
            InvalidDtb(e) => write!(f, "boot configuration is not a valid DTB: {e}"),
            MissingProperty { node, property } => write!(f, "{node}: missing `{property}`"),
            BadProperty { node, property } => write!(f, "{node}: malformed `{property}`"),
            BadCells { node, property, cells } => {
                write!(f, "{node}: `{property}` is {cells}, expected 1 or 2")
            }
            ZeroCpus { domain } => write!(f, "domain {domain}: `cpus` is 0"),
            ZeroMemory { domain } => write!(f, "domain {domain}: `memory` is 0"),
            MissingKernel { domain } => write!(f, "domain {domain}: no kernel module"),
            DuplicateModule { domain, kind } => write!(f, "domain {domain}: more than one {kind}"),
            BadModuleRange { node } => write!(f, "{node}: empty or wrapping module range"),
            OverlappingModules { first, second } => write!(f, "modules overlap: {first} and {second}"),
            DuplicateDomain { name } => write!(f, "two domains named {name}"),
            ModuleIndexOutOfRange { node, index, modules } => {
                write!(f, "{node}: `mb-index` {index} is past the {modules} boot module(s)")
            }
            ModuleIndexIsConfig { node, index } => {
                write!(f, "{node}: `mb-index` {index} is the boot configuration itself")
            }
            NoDomains => f.write_str("boot configuration names no domain"),
            UnknownScheduler { node, name } => write!(f, "{node}: unknown scheduler `{name}`"),
            BadPhandle { node, property, phandle } => {
                write!(f, "{node}: `{property}` phandle {phandle:#x} names no suitable node")
            }
            CpuInTwoPools { cpu } => write!(f, "CPU {cpu:#x} is in two cpupools"),
            CpuOutsidePool { node, cpu } => write!(f, "{node}: window on CPU {cpu:#x}, which is not in the pool"),
        }
    }
}

type Result<T> = core::result::Result<T, BootCfgError>;

/// The dom0less domains (`compatible = "xen,domain"` under `/chosen`), in DT order.
pub fn parse_domains(dtb: &[u8]) -> Result<Vec<DomainConfig>> {
    let fdt = open(dtb)?;
    let domains = xen_domains(&fdt)?;
    check_domains(&domains)?;
    Ok(domains)
}

/// The dom0less domains of a configuration that arrived as multiboot2 module number `config`
/// of `modules` (x86): module sub-nodes name their image with `mb-index` (see the module
/// docs). Errors with [`BootCfgError::NoDomains`] when it describes none.
pub fn parse_multiboot_domains(dtb: &[u8], modules: &[ModuleRef], config: usize) -> Result<Vec<DomainConfig>> {
    let fdt = open(dtb)?;
    let domains = xen_domains_located(&fdt, Locate::Chain { modules, config })?;
    if domains.is_empty() {
        return Err(BootCfgError::NoDomains);
    }
    // Unique names; no overlap check: the loader placed every module apart, and domains may
    // share one.
    for (i, d) in domains.iter().enumerate() {
        if domains[..i].iter().any(|e| e.name == d.name) {
            return Err(BootCfgError::DuplicateDomain { name: d.name.clone() });
        }
    }
    Ok(domains)
}

/// The implicit domain made of modules directly under `/chosen` (QEMU guest-loader's layout),
/// with one vCPU and `memory_kib` of RAM; `None` when `/chosen` holds no module.
pub fn parse_loader_domain(dtb: &[u8], memory_kib: u64) -> Result<Option<DomainConfig>> {
    let fdt = open(dtb)?;
    let domain = loader_domain(&fdt, memory_kib)?;
    check_domains(domain.as_slice())?;
    Ok(domain)
}

/// Everything to boot: the implicit loader domain first (if any), then the dom0less domains.
/// Errors with [`BootCfgError::NoDomains`] when there is nothing to boot.
pub fn parse_boot_config(dtb: &[u8], loader_memory_kib: u64) -> Result<Vec<DomainConfig>> {
    let fdt = open(dtb)?;
    let mut domains: Vec<DomainConfig> = loader_domain(&fdt, loader_memory_kib)?.into_iter().collect();
    domains.extend(xen_domains(&fdt)?);
    if domains.is_empty() {
        return Err(BootCfgError::NoDomains);
    }
    check_domains(&domains)?;
    Ok(domains)
}

/// Validates the blob. Bootloaders hand over a region at least as large as the DTB, so the
/// slice is cut to the header's `totalsize` first (the reader insists on an exact fit).
fn open(dtb: &[u8]) -> Result<Fdt<'_>> {
    let total = dtb.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let exact = total.and_then(|t| dtb.get(..t)).unwrap_or(dtb);
    arch::fdtcheck::open(exact).map_err(BootCfgError::InvalidDtb)
}

/// How module sub-nodes say where their bytes are.
#[derive(Clone, Copy)]
enum Locate<'a> {
    /// `reg`, in these cells (ARM: the bootloader wrote the addresses into the DT).
    Reg(Cells),
    /// `mb-index` into the loader's module chain, whose entry `config` is the DT (x86).
    Chain { modules: &'a [ModuleRef], config: usize },
}

fn xen_domains(fdt: &Fdt<'_>) -> Result<Vec<DomainConfig>> {
    xen_domains_located(fdt, Locate::Reg(Cells { addr: 2, size: 2 }))
}

/// The `xen,domain` children of `/chosen`; `how` says whether modules use `reg` (the cells
/// in it are replaced by each domain node's own) or `mb-index`.
fn xen_domains_located(fdt: &Fdt<'_>, how: Locate<'_>) -> Result<Vec<DomainConfig>> {
    let Some(chosen) = fdt.find_node("/chosen") else {
        return Ok(Vec::new());
    };
    chosen.children().filter(|n| compatible_with(n, &["xen,domain"])).map(|n| xen_domain(&n, how)).collect()
}

/// One `xen,domain` node.
fn xen_domain(node: &FdtNode<'_>, how: Locate<'_>) -> Result<DomainConfig> {
    let name = node.name().to_string();
    let path = format!("/chosen/{name}");
    // The binding asks for the cells because module nodes have `reg`; by index they have none.
    let how = match how {
        Locate::Reg(_) => Locate::Reg(Cells::required(node, &path)?),
        chain => chain,
    };
    let cpus = read_u32(node, &path, "cpus")?.ok_or_else(|| missing(&path, "cpus"))?;
    let memory_kib = read_memory(node, &path)?;
    if cpus == 0 {
        return Err(BootCfgError::ZeroCpus { domain: name });
    }
    if memory_kib == 0 {
        return Err(BootCfgError::ZeroMemory { domain: name });
    }
    let modules = Modules::collect(node, &path, &name, how)?;
    let vpl011 = node.property("vpl011").is_some();
    modules.into_domain(name, cpus, memory_kib, vpl011)
}

/// Modules directly under `/chosen`. Their `reg` cells come from `/chosen` or, as QEMU leaves
/// `/chosen` without them, from the root (Linux and Xen read it the same way).
fn loader_domain(fdt: &Fdt<'_>, memory_kib: u64) -> Result<Option<DomainConfig>> {
    let Some(chosen) = fdt.find_node("/chosen") else {
        return Ok(None);
    };
    let cells = Cells::inherited(&chosen, &fdt.root())?;
    let name = LOADER_DOMAIN_NAME.to_string();
    let mut modules = Modules::collect(&chosen, "/chosen", &name, Locate::Reg(cells))?;
    if modules.is_empty() {
        return Ok(None);
    }
    if modules.bootargs.is_none() {
        modules.bootargs = chosen_bootargs(&chosen)?;
    }
    if memory_kib == 0 {
        return Err(BootCfgError::ZeroMemory { domain: name });
    }
    modules.into_domain(name, 1, memory_kib, false).map(Some)
}

/// Xen's fallback for a dom0 kernel without its own `bootargs`: `xen,dom0-bootargs`, else the
/// plain `bootargs` of `/chosen` (which then belongs to the guest, not the hypervisor).
fn chosen_bootargs(chosen: &FdtNode<'_>) -> Result<Option<String>> {
    match read_string(chosen, "/chosen", "xen,dom0-bootargs")? {
        Some(s) => Ok(Some(s)),
        None => read_string(chosen, "/chosen", "bootargs"),
    }
}

/// Rules that span domains: unique names, and no two modules sharing a byte (a bootloader
/// mistake that would let one guest's image clobber another's).
fn check_domains(domains: &[DomainConfig]) -> Result<()> {
    for (i, d) in domains.iter().enumerate() {
        if domains[..i].iter().any(|e| e.name == d.name) {
            return Err(BootCfgError::DuplicateDomain { name: d.name.clone() });
        }
    }
    check_overlaps(domains)
}

fn check_overlaps(domains: &[DomainConfig]) -> Result<()> {
    let mut all: Vec<(ModuleRef, String)> = Vec::new();
    for d in domains {
        let kinds = [(d.kernel, ModuleKind::Kernel), (d.ramdisk, ModuleKind::Ramdisk), (d.dtb, ModuleKind::DeviceTree)];
        for (m, kind) in kinds {
            if let Some(m) = m {
                all.push((m, format!("{} {kind}", d.name)));
            }
        }
    }
    // Sorted by start, any overlap shows up between neighbours.
    all.sort_by_key(|(m, _)| m.addr);
    match all.windows(2).find(|w| w[0].0.end() > w[1].0.addr) {
        Some(w) => Err(BootCfgError::OverlappingModules { first: w[0].1.clone(), second: w[1].1.clone() }),
        None => Ok(()),
    }
}

/// The modules found under one node, before the domain around them is complete.
#[derive(Default)]
struct Modules {
    kernel: Option<ModuleRef>,
    ramdisk: Option<ModuleRef>,
    dtb: Option<ModuleRef>,
    bootargs: Option<String>,
    /// How many modules with only the generic compatible have been seen.
    generic: usize,
}

/// How a module node's `compatible` classifies it.
enum Class {
    Specific(ModuleKind),
    /// `multiboot,module` alone: Xen takes the first such as the kernel, the second as the
    /// ramdisk, and gives later ones no meaning.
    Generic,
}

impl Modules {
    fn collect(parent: &FdtNode<'_>, parent_path: &str, domain: &str, how: Locate<'_>) -> Result<Self> {
        let mut modules = Modules::default();
        for node in parent.children() {
            let Some(class) = classify(&node) else { continue };
            let path = format!("{parent_path}/{}", node.name());
            let kind = match class {
                Class::Specific(kind) => kind,
                Class::Generic => match modules.next_generic() {
                    Some(kind) => kind,
                    None => continue,
                },
            };
            modules.add(&node, &path, domain, kind, how)?;
        }
        Ok(modules)
    }

    fn next_generic(&mut self) -> Option<ModuleKind> {
        self.generic += 1;
        match self.generic {
            1 => Some(ModuleKind::Kernel),
            2 => Some(ModuleKind::Ramdisk),
            _ => None,
        }
    }

    fn add(&mut self, node: &FdtNode<'_>, path: &str, domain: &str, kind: ModuleKind, how: Locate<'_>) -> Result<()> {
        let region = match how {
            Locate::Reg(cells) => read_reg(node, path, cells)?,
            Locate::Chain { modules, config } => read_index(node, path, modules, config)?,
        };
        let slot = match kind {
            ModuleKind::Kernel => &mut self.kernel,
            ModuleKind::Ramdisk => &mut self.ramdisk,
            ModuleKind::DeviceTree => &mut self.dtb,
        };
        if slot.replace(region).is_some() {
            return Err(BootCfgError::DuplicateModule { domain: domain.to_string(), kind });
        }
        // Only the kernel's command line means anything; Xen ignores the others'.
        if kind == ModuleKind::Kernel {
            self.bootargs = read_string(node, path, "bootargs")?;
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.kernel.is_none() && self.ramdisk.is_none() && self.dtb.is_none()
    }

    fn into_domain(self, name: String, cpus: u32, memory_kib: u64, vpl011: bool) -> Result<DomainConfig> {
        if self.kernel.is_none() {
            return Err(BootCfgError::MissingKernel { domain: name });
        }
        Ok(DomainConfig {
            name,
            cpus,
            memory_kib,
            vpl011,
            kernel: self.kernel,
            ramdisk: self.ramdisk,
            dtb: self.dtb,
            bootargs: self.bootargs,
        })
    }
}

/// Module nodes carry a `multiboot,*` compatible, or Xen 4.4's `xen,*` spellings of the same,
/// which Xen still honours so one DTB can serve old and new versions, or the hyperlaunch
/// binding's `module,*` ones.
fn classify(node: &FdtNode<'_>) -> Option<Class> {
    if compatible_with(node, &["multiboot,kernel", "xen,linux-zimage", "module,kernel"]) {
        Some(Class::Specific(ModuleKind::Kernel))
    } else if compatible_with(node, &["multiboot,ramdisk", "xen,linux-initrd", "module,ramdisk"]) {
        Some(Class::Specific(ModuleKind::Ramdisk))
    } else if compatible_with(node, &["multiboot,device-tree", "module,device-tree"]) {
        Some(Class::Specific(ModuleKind::DeviceTree))
    } else if compatible_with(node, &["multiboot,module", "xen,multiboot-module"]) {
        Some(Class::Generic)
    } else {
        None
    }
}

/// Whether any entry of the node's `compatible` string list is one of `names`.
fn compatible_with(node: &FdtNode<'_>, names: &[&str]) -> bool {
    let Some(prop) = node.property("compatible") else { return false };
    prop.value().split(|&b| b == 0).any(|entry| names.iter().any(|n| n.as_bytes() == entry))
}

/// `#address-cells` / `#size-cells` for the `reg` of a node's children.
#[derive(Clone, Copy, Debug)]
struct Cells {
    addr: u32,
    size: u32,
}

impl Cells {
    /// A `xen,domain` node must state both.
    fn required(node: &FdtNode<'_>, path: &str) -> Result<Self> {
        let get = |name| read_cells(node, path, name)?.ok_or_else(|| missing(path, name));
        Ok(Cells { addr: get("#address-cells")?, size: get("#size-cells")? })
    }

    /// The node's own, else the root's, else the devicetree specification's defaults.
    fn inherited(node: &FdtNode<'_>, root: &FdtNode<'_>) -> Result<Self> {
        let get = |name, default| -> Result<u32> {
            Ok(match read_cells(node, "/chosen", name)? {
                Some(n) => n,
                None => read_cells(root, "/", name)?.unwrap_or(default),
            })
        };
        Ok(Cells { addr: get("#address-cells", 2)?, size: get("#size-cells", 1)? })
    }
}

fn read_cells(node: &FdtNode<'_>, path: &str, property: &'static str) -> Result<Option<u32>> {
    match read_u32(node, path, property)? {
        Some(cells) if !(1..=2).contains(&cells) => {
            Err(BootCfgError::BadCells { node: path.to_string(), property, cells })
        }
        other => Ok(other),
    }
}

/// The first (and only) `reg` entry of a module.
fn read_reg(node: &FdtNode<'_>, path: &str, cells: Cells) -> Result<ModuleRef> {
    let prop = node.property("reg").ok_or_else(|| missing(path, "reg"))?;
    let value = prop.value();
    let addr_bytes = 4 * cells.addr as usize;
    if value.len() != addr_bytes + 4 * cells.size as usize {
        return Err(bad(path, "reg"));
    }
    let (addr, size) = value.split_at(addr_bytes);
    let module = ModuleRef { addr: be_cells(addr), size: be_cells(size) };
    if module.size == 0 || module.addr.checked_add(module.size).is_none() {
        return Err(BootCfgError::BadModuleRange { node: path.to_string() });
    }
    Ok(module)
}

/// The module `mb-index` names in the loader's chain (whose entry `config` is the DT).
fn read_index(node: &FdtNode<'_>, path: &str, modules: &[ModuleRef], config: usize) -> Result<ModuleRef> {
    let index = read_u32(node, path, "mb-index")?.ok_or_else(|| missing(path, "mb-index"))?;
    let at = usize::try_from(index).unwrap_or(usize::MAX);
    if at == config {
        return Err(BootCfgError::ModuleIndexIsConfig { node: path.to_string(), index });
    }
    let module = *modules.get(at).ok_or_else(|| BootCfgError::ModuleIndexOutOfRange {
        node: path.to_string(),
        index,
        modules: modules.len(),
    })?;
    if module.size == 0 || module.addr.checked_add(module.size).is_none() {
        return Err(BootCfgError::BadModuleRange { node: path.to_string() });
    }
    Ok(module)
}

/// `memory` is a 64-bit count of KiB in Xen's binding (two cells); one cell is accepted too.
fn read_memory(node: &FdtNode<'_>, path: &str) -> Result<u64> {
    let prop = node.property("memory").ok_or_else(|| missing(path, "memory"))?;
    let value = prop.value();
    match value.len() {
        4 | 8 => Ok(be_cells(value)),
        _ => Err(bad(path, "memory")),
    }
}

fn read_u32(node: &FdtNode<'_>, path: &str, property: &'static str) -> Result<Option<u32>> {
    let Some(prop) = node.property(property) else { return Ok(None) };
    prop.value_as::<u32>().map(Some).map_err(|_| bad(path, property))
}

fn read_string(node: &FdtNode<'_>, path: &str, property: &'static str) -> Result<Option<String>> {
    let Some(prop) = node.property(property) else { return Ok(None) };
    prop.value_as::<&str>().map(|s| Some(s.to_string())).map_err(|_| bad(path, property))
}

/// Big-endian cells (at most two, checked by the callers) as one number.
fn be_cells(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

fn missing(path: &str, property: &'static str) -> BootCfgError {
    BootCfgError::MissingProperty { node: path.to_string(), property }
}

fn bad(path: &str, property: &'static str) -> BootCfgError {
    BootCfgError::BadProperty { node: path.to_string(), property }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use vm_fdt::FdtWriter;

    /// A module sub-node as a test writes it: raw values, so tests can break any of them.
    #[derive(Clone)]
    struct TMod {
        name: String,
        compatible: Vec<&'static str>,
        reg: Option<Vec<u32>>,
        /// `mb-index`, raw.
        index: Option<Vec<u8>>,
        bootargs: Option<Vec<u8>>,
    }

    fn module(kind: &'static str, addr: u64, size: u64) -> TMod {
        TMod {
            name: format!("module@{addr:x}"),
            compatible: vec![kind, "multiboot,module"],
            reg: Some(vec![(addr >> 32) as u32, addr as u32, (size >> 32) as u32, size as u32]),
            index: None,
            bootargs: None,
        }
    }

    /// A module named by its multiboot2 index, as on x86.
    fn indexed(kind: &'static str, index: u32) -> TMod {
        TMod {
            name: format!("module@{index}"),
            compatible: vec![kind, "multiboot,module"],
            reg: None,
            index: Some(index.to_be_bytes().to_vec()),
            bootargs: None,
        }
    }

    fn with_bootargs(mut m: TMod, args: &str) -> TMod {
        m.bootargs = Some(format!("{args}\0").into_bytes());
        m
    }

    /// A `xen,domain` node as a test writes it; `None` leaves a property out.
    #[derive(Clone)]
    struct TDom {
        name: &'static str,
        address_cells: Option<Vec<u8>>,
        size_cells: Option<Vec<u8>>,
        cpus: Option<Vec<u8>>,
        memory: Option<Vec<u8>>,
        vpl011: bool,
        extra: Vec<(&'static str, Vec<u8>)>,
        modules: Vec<TMod>,
    }

    /// A well-formed domain with 2/2 cells, `cpus` vCPUs, `kib` KiB and a kernel at `kernel`.
    fn domain(name: &'static str, cpus: u32, kib: u64, kernel: u64) -> TDom {
        TDom {
            name,
            address_cells: Some(2u32.to_be_bytes().to_vec()),
            size_cells: Some(2u32.to_be_bytes().to_vec()),
            cpus: Some(cpus.to_be_bytes().to_vec()),
            memory: Some(kib.to_be_bytes().to_vec()),
            vpl011: false,
            extra: Vec::new(),
            modules: vec![module("multiboot,kernel", kernel, 0x10_0000)],
        }
    }

    /// Everything under `/chosen` for one test DTB.
    #[derive(Default)]
    struct TChosen {
        /// `#address-cells` / `#size-cells` of the root; `/chosen` itself declares none, as
        /// QEMU writes it.
        root_cells: Option<(u32, u32)>,
        props: Vec<(&'static str, Vec<u8>)>,
        modules: Vec<TMod>,
        domains: Vec<TDom>,
    }

    fn write_module(w: &mut FdtWriter, m: &TMod) {
        let node = w.begin_node(&m.name).unwrap();
        let compatible = m.compatible.iter().map(|s| s.to_string()).collect();
        w.property_string_list("compatible", compatible).unwrap();
        if let Some(reg) = &m.reg {
            w.property_array_u32("reg", reg).unwrap();
        }
        if let Some(index) = &m.index {
            w.property("mb-index", index).unwrap();
        }
        if let Some(args) = &m.bootargs {
            w.property("bootargs", args).unwrap();
        }
        w.end_node(node).unwrap();
    }

    fn write_domain(w: &mut FdtWriter, d: &TDom) {
        let node = w.begin_node(d.name).unwrap();
        w.property_string("compatible", "xen,domain").unwrap();
        let props = [
            ("#address-cells", &d.address_cells),
            ("#size-cells", &d.size_cells),
            ("cpus", &d.cpus),
            ("memory", &d.memory),
        ];
        for (name, value) in props {
            if let Some(value) = value {
                w.property(name, value).unwrap();
            }
        }
        if d.vpl011 {
            w.property_null("vpl011").unwrap();
        }
        for (name, value) in &d.extra {
            w.property(name, value).unwrap();
        }
        d.modules.iter().for_each(|m| write_module(w, m));
        w.end_node(node).unwrap();
    }

    fn dtb(c: &TChosen) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        let (ac, sc) = c.root_cells.unwrap_or((2, 2));
        w.property_u32("#address-cells", ac).unwrap();
        w.property_u32("#size-cells", sc).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        for (name, value) in &c.props {
            w.property(name, value).unwrap();
        }
        c.modules.iter().for_each(|m| write_module(&mut w, m));
        c.domains.iter().for_each(|d| write_domain(&mut w, d));
        w.end_node(chosen).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn domains(d: Vec<TDom>) -> Vec<u8> {
        dtb(&TChosen { domains: d, ..Default::default() })
    }

    fn one(d: TDom) -> Result<Vec<DomainConfig>> {
        parse_domains(&domains(vec![d]))
    }

    fn m(addr: u64, size: u64) -> Option<ModuleRef> {
        Some(ModuleRef { addr, size })
    }

    fn path(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn one_domain() {
        let got = one(domain("domU1", 2, 0x4_0000, 0x4a00_0000)).unwrap();
        let want = DomainConfig {
            name: path("domU1"),
            cpus: 2,
            memory_kib: 0x4_0000,
            vpl011: false,
            kernel: m(0x4a00_0000, 0x10_0000),
            ramdisk: None,
            dtb: None,
            bootargs: None,
        };
        assert_eq!(got, vec![want]);
    }

    #[test]
    fn two_domains_in_dt_order() {
        let mut a = domain("domU2", 1, 0x1_0000, 0x4c00_0000);
        a.vpl011 = true;
        let b = domain("domU1", 4, 0x2_0000, 0x4a00_0000);
        let got = parse_domains(&domains(vec![a, b])).unwrap();
        let names: Vec<_> = got.iter().map(|d| (d.name.as_str(), d.cpus, d.memory_kib, d.vpl011)).collect();
        assert_eq!(names, [("domU2", 1, 0x1_0000, true), ("domU1", 4, 0x2_0000, false)]);
        assert_eq!(got[1].kernel, m(0x4a00_0000, 0x10_0000));
    }

    #[test]
    fn ramdisk_bootargs_and_device_tree() {
        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.modules[0] = with_bootargs(d.modules[0].clone(), "console=hvc0 init=/bin/sh");
        d.modules.push(module("multiboot,ramdisk", 0x4b00_0000, 0x80_0000));
        d.modules.push(module("multiboot,device-tree", 0xc00_0000, 0x1000));
        let got = one(d).unwrap().remove(0);
        assert_eq!(got.ramdisk, m(0x4b00_0000, 0x80_0000));
        assert_eq!(got.dtb, m(0xc00_0000, 0x1000));
        assert_eq!(got.bootargs.as_deref(), Some("console=hvc0 init=/bin/sh"));
    }

    /// Xen's own example: `#size-cells = <1>`, `reg` of three cells, `memory = <0 131072>`.
    #[test]
    fn mixed_cells_as_in_xens_example() {
        let mut d = domain("domU1", 2, 131_072, 0);
        d.size_cells = Some(1u32.to_be_bytes().to_vec());
        d.modules =
            vec![TMod { reg: Some(vec![0, 0x4a00_0000, 0xff_ffff]), ..module("multiboot,kernel", 0x4a00_0000, 1) }];
        let got = one(d).unwrap().remove(0);
        assert_eq!(got.kernel, m(0x4a00_0000, 0xff_ffff));
        assert_eq!(got.memory_kib, 131_072);
    }

    #[test]
    fn memory_in_one_cell() {
        let mut d = domain("domU1", 1, 0, 0x4a00_0000);
        d.memory = Some(0x8000u32.to_be_bytes().to_vec());
        assert_eq!(one(d).unwrap()[0].memory_kib, 0x8000);
    }

    #[test]
    fn memory_above_4g_kib() {
        let d = domain("big", 1, 0x1_0000_0000, 0x4a00_0000);
        assert_eq!(one(d).unwrap()[0].memory_kib, 0x1_0000_0000);
    }

    #[test]
    fn xen_4_4_compatible_strings() {
        let mut d = domain("domU1", 1, 0x2_0000, 0);
        d.modules = vec![
            TMod { compatible: vec!["xen,linux-zimage", "xen,multiboot-module"], ..module("", 0x4a00_0000, 0x1000) },
            TMod { compatible: vec!["xen,linux-initrd", "xen,multiboot-module"], ..module("", 0x4b00_0000, 0x2000) },
        ];
        d.modules[1].name = path("module@4b000000");
        let got = one(d).unwrap().remove(0);
        assert_eq!((got.kernel, got.ramdisk), (m(0x4a00_0000, 0x1000), m(0x4b00_0000, 0x2000)));
    }

    /// Modules with only `multiboot,module`: first is the kernel, second the ramdisk, others
    /// mean nothing.
    #[test]
    fn generic_modules_by_position() {
        let mut d = domain("domU1", 1, 0x2_0000, 0);
        d.modules = [0x4a00_0000u64, 0x4b00_0000, 0x4c00_0000]
            .iter()
            .map(|&a| TMod { compatible: vec!["multiboot,module"], ..module("", a, 0x1000) })
            .collect();
        let got = one(d).unwrap().remove(0);
        assert_eq!((got.kernel, got.ramdisk, got.dtb), (m(0x4a00_0000, 0x1000), m(0x4b00_0000, 0x1000), None));
    }

    #[test]
    fn unknown_properties_and_nodes_are_ignored() {
        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.extra = vec![("xhv,sched-weight", 256u32.to_be_bytes().to_vec()), ("nr_spis", vec![0, 0, 0, 1])];
        d.modules.push(TMod { compatible: vec!["xen,xsm-policy"], ..module("", 0x4a00_0000, 0x1000) });
        let c = TChosen {
            props: vec![("stdout-path", b"/pl011@9000000\0".to_vec())],
            domains: vec![d],
            ..Default::default()
        };
        let got = parse_domains(&dtb(&c)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kernel, m(0x4a00_0000, 0x10_0000));
    }

    #[test]
    fn no_chosen_means_no_domains() {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        assert_eq!(parse_domains(&blob), Ok(Vec::new()));
        assert_eq!(parse_loader_domain(&blob, 0x1000), Ok(None));
        assert_eq!(parse_boot_config(&blob, 0x1000), Err(BootCfgError::NoDomains));
    }

    /// A bootloader may hand over a region larger than the blob.
    #[test]
    fn trailing_bytes_after_the_blob_are_ignored() {
        let mut blob = domains(vec![domain("domU1", 1, 0x2_0000, 0x4a00_0000)]);
        blob.extend_from_slice(&[0xff; 64]);
        assert_eq!(parse_domains(&blob).unwrap().len(), 1);
    }

    /// QEMU's `-device guest-loader` layout: modules under `/chosen`, cells from the root.
    fn guest_loader(root_cells: (u32, u32)) -> TChosen {
        let (ac, sc) = root_cells;
        let cells = |v: u64, n: u32| if n == 2 { vec![(v >> 32) as u32, v as u32] } else { vec![v as u32] };
        let reg = |a, s| Some([cells(a, ac), cells(s, sc)].concat());
        let kernel = TMod {
            name: path("module@0x48000000"),
            compatible: vec!["multiboot,kernel", "multiboot,module"],
            reg: reg(0x4800_0000, 0x20_0000),
            index: None,
            bootargs: Some(b"console=hvc0\0".to_vec()),
        };
        let initrd = TMod {
            name: path("module@0x49000000"),
            compatible: vec!["multiboot,ramdisk", "multiboot,module"],
            reg: reg(0x4900_0000, 0x40_0000),
            index: None,
            bootargs: None,
        };
        TChosen { root_cells: Some(root_cells), modules: vec![kernel, initrd], ..Default::default() }
    }

    #[test]
    fn guest_loader_layout() {
        for root_cells in [(2, 2), (1, 1), (2, 1)] {
            let got = parse_loader_domain(&dtb(&guest_loader(root_cells)), 0x2_0000).unwrap();
            let want = DomainConfig {
                name: path(LOADER_DOMAIN_NAME),
                cpus: 1,
                memory_kib: 0x2_0000,
                vpl011: false,
                kernel: m(0x4800_0000, 0x20_0000),
                ramdisk: m(0x4900_0000, 0x40_0000),
                dtb: None,
                bootargs: Some(path("console=hvc0")),
            };
            assert_eq!(got, Some(want), "root cells {root_cells:?}");
        }
    }

    /// Cells `/chosen` states itself win over the root's (U-Boot scripts for Xen set them).
    #[test]
    fn guest_loader_with_cells_on_chosen() {
        let mut c = guest_loader((1, 1));
        c.root_cells = Some((2, 2));
        c.props = vec![("#address-cells", vec![0, 0, 0, 1]), ("#size-cells", vec![0, 0, 0, 1])];
        let got = parse_loader_domain(&dtb(&c), 0x2_0000).unwrap().unwrap();
        assert_eq!(got.kernel, m(0x4800_0000, 0x20_0000));
    }

    /// Xen's command-line rules for a dom0 kernel without its own `bootargs`.
    #[test]
    fn guest_loader_bootargs_fallbacks() {
        type ChosenProps = &'static [(&'static str, &'static [u8])];
        let cases: [(ChosenProps, Option<&str>); 3] = [
            (&[("bootargs", b"hyp\0"), ("xen,dom0-bootargs", b"guest\0")], Some("guest")),
            (&[("bootargs", b"guest\0")], Some("guest")),
            (&[], None),
        ];
        for (props, want) in cases {
            let mut c = guest_loader((2, 2));
            c.modules[0].bootargs = None;
            c.props = props.iter().map(|&(n, v)| (n, v.to_vec())).collect();
            let got = parse_loader_domain(&dtb(&c), 0x2_0000).unwrap().unwrap();
            assert_eq!(got.bootargs.as_deref(), want);
        }
        // The module's own command line wins; `/chosen/bootargs` is then the hypervisor's.
        let mut c = guest_loader((2, 2));
        c.props = vec![("bootargs", b"hyp\0".to_vec())];
        let got = parse_loader_domain(&dtb(&c), 0x2_0000).unwrap().unwrap();
        assert_eq!(got.bootargs.as_deref(), Some("console=hvc0"));
    }

    #[test]
    fn boot_config_puts_the_loader_domain_first() {
        let mut c = guest_loader((2, 2));
        c.domains = vec![domain("domU1", 2, 0x1_0000, 0x6000_0000)];
        let blob = dtb(&c);
        let got = parse_boot_config(&blob, 0x2_0000).unwrap();
        let names: Vec<_> = got.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, [LOADER_DOMAIN_NAME, "domU1"]);
        // Each layout on its own sees only its own domains.
        assert_eq!(parse_domains(&blob).unwrap().len(), 1);
        assert_eq!(parse_loader_domain(&blob, 0x2_0000).unwrap().unwrap().name, LOADER_DOMAIN_NAME);
        // Without the loader modules only the dom0less domain is left.
        c.modules.clear();
        assert_eq!(parse_boot_config(&dtb(&c), 0x2_0000).unwrap().len(), 1);
    }

    fn bad_prop(node: &str, property: &'static str) -> BootCfgError {
        BootCfgError::BadProperty { node: path(node), property }
    }

    fn missing_prop(node: &str, property: &'static str) -> BootCfgError {
        BootCfgError::MissingProperty { node: path(node), property }
    }

    #[test]
    fn rejects_blobs_that_are_not_dtbs() {
        let good = domains(vec![domain("domU1", 1, 0x2_0000, 0x4a00_0000)]);
        let inputs: [&[u8]; 4] = [&[], &[0xd0, 0x0d], &[0u8; 64], &good[..good.len() - 8]];
        for input in inputs {
            assert!(matches!(parse_domains(input), Err(BootCfgError::InvalidDtb(_))), "{input:x?}");
        }
    }

    #[test]
    fn rejects_missing_or_bad_cells() {
        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.address_cells = None;
        assert_eq!(one(d), Err(missing_prop("/chosen/domU1", "#address-cells")));

        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.size_cells = None;
        assert_eq!(one(d), Err(missing_prop("/chosen/domU1", "#size-cells")));

        for (cells, property) in [(0, "#address-cells"), (3, "#size-cells")] {
            let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
            let value = Some(u32::to_be_bytes(cells).to_vec());
            if property == "#address-cells" {
                d.address_cells = value;
            } else {
                d.size_cells = value;
            }
            let node = path("/chosen/domU1");
            assert_eq!(one(d), Err(BootCfgError::BadCells { node, property, cells }));
        }

        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.address_cells = Some(vec![0, 2]);
        assert_eq!(one(d), Err(bad_prop("/chosen/domU1", "#address-cells")));

        let mut c = guest_loader((2, 2));
        c.props = vec![("#size-cells", vec![0, 0, 0, 4])];
        let node = path("/chosen");
        let err = BootCfgError::BadCells { node, property: "#size-cells", cells: 4 };
        assert_eq!(parse_loader_domain(&dtb(&c), 0x2_0000), Err(err));
    }

    #[test]
    fn rejects_bad_cpus_and_memory() {
        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.cpus = None;
        assert_eq!(one(d), Err(missing_prop("/chosen/domU1", "cpus")));

        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.cpus = Some(vec![0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(one(d), Err(bad_prop("/chosen/domU1", "cpus")));

        let d = domain("domU1", 0, 0x2_0000, 0x4a00_0000);
        assert_eq!(one(d), Err(BootCfgError::ZeroCpus { domain: path("domU1") }));

        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.memory = None;
        assert_eq!(one(d), Err(missing_prop("/chosen/domU1", "memory")));

        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.memory = Some(vec![0; 12]);
        assert_eq!(one(d), Err(bad_prop("/chosen/domU1", "memory")));

        let d = domain("domU1", 1, 0, 0x4a00_0000);
        assert_eq!(one(d), Err(BootCfgError::ZeroMemory { domain: path("domU1") }));

        let blob = dtb(&guest_loader((2, 2)));
        let err = BootCfgError::ZeroMemory { domain: path(LOADER_DOMAIN_NAME) };
        assert_eq!(parse_loader_domain(&blob, 0), Err(err));
    }

    #[test]
    fn rejects_missing_and_duplicate_modules() {
        let mut d = domain("domU1", 1, 0x2_0000, 0);
        d.modules = vec![module("multiboot,ramdisk", 0x4b00_0000, 0x1000)];
        assert_eq!(one(d), Err(BootCfgError::MissingKernel { domain: path("domU1") }));

        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.modules.clear();
        assert_eq!(one(d), Err(BootCfgError::MissingKernel { domain: path("domU1") }));

        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.modules.push(module("multiboot,kernel", 0x5000_0000, 0x1000));
        let kind = ModuleKind::Kernel;
        assert_eq!(one(d), Err(BootCfgError::DuplicateModule { domain: path("domU1"), kind }));

        let mut c = guest_loader((2, 2));
        c.modules.remove(0);
        let err = BootCfgError::MissingKernel { domain: path(LOADER_DOMAIN_NAME) };
        assert_eq!(parse_loader_domain(&dtb(&c), 0x2_0000), Err(err));
    }

    #[test]
    fn rejects_bad_module_reg() {
        let node = "/chosen/domU1/module@4a000000";
        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.modules[0].reg = None;
        assert_eq!(one(d), Err(missing_prop(node, "reg")));

        for reg in [vec![0, 0x4a00_0000, 0x1000], vec![0, 0x4a00_0000, 0, 0x1000, 0, 0x5000_0000, 0, 0x1000]] {
            let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
            d.modules[0].reg = Some(reg);
            assert_eq!(one(d), Err(bad_prop(node, "reg")));
        }

        for reg in [vec![0, 0x4a00_0000, 0, 0], vec![0xffff_ffff, 0x4a00_0000, 0xffff_ffff, 0]] {
            let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
            d.modules[0].reg = Some(reg);
            assert_eq!(one(d), Err(BootCfgError::BadModuleRange { node: path(node) }));
        }
    }

    #[test]
    fn rejects_bootargs_that_are_not_strings() {
        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.modules[0].bootargs = Some(b"no terminator".to_vec());
        assert_eq!(one(d), Err(bad_prop("/chosen/domU1/module@4a000000", "bootargs")));

        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.modules[0].bootargs = Some(vec![0xff, 0xfe, 0]);
        assert_eq!(one(d), Err(bad_prop("/chosen/domU1/module@4a000000", "bootargs")));
    }

    #[test]
    fn rejects_overlapping_modules() {
        let mut d = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        d.modules.push(module("multiboot,ramdisk", 0x4a0f_ffff, 0x1000));
        let err = BootCfgError::OverlappingModules { first: path("domU1 kernel"), second: path("domU1 ramdisk") };
        assert_eq!(one(d), Err(err));

        // Touching is fine; a module inside another domain's is not.
        let mut a = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        a.modules.push(module("multiboot,ramdisk", 0x4a10_0000, 0x1000));
        assert!(parse_domains(&domains(vec![a.clone()])).is_ok());
        let b = domain("domU2", 1, 0x2_0000, 0x4a00_1000);
        let err = BootCfgError::OverlappingModules { first: path("domU1 kernel"), second: path("domU2 kernel") };
        assert_eq!(parse_domains(&domains(vec![a, b])), Err(err));

        // The loader domain's modules count too.
        let mut c = guest_loader((2, 2));
        c.domains = vec![domain("domU1", 1, 0x2_0000, 0x4900_0000)];
        let err = BootCfgError::OverlappingModules { first: path("dom0 ramdisk"), second: path("domU1 kernel") };
        assert_eq!(parse_boot_config(&dtb(&c), 0x2_0000), Err(err));
    }

    #[test]
    fn rejects_duplicate_domain_names() {
        let a = domain("domU1", 1, 0x2_0000, 0x4a00_0000);
        let b = domain("domU1", 1, 0x2_0000, 0x5000_0000);
        assert_eq!(parse_domains(&domains(vec![a, b])), Err(BootCfgError::DuplicateDomain { name: path("domU1") }));

        let mut c = guest_loader((2, 2));
        c.domains = vec![domain("dom0", 1, 0x2_0000, 0x6000_0000)];
        let err = BootCfgError::DuplicateDomain { name: path(LOADER_DOMAIN_NAME) };
        assert_eq!(parse_boot_config(&dtb(&c), 0x2_0000), Err(err));
    }

    /// The loader's chain for the x86 tests: the DT as module 0, then three images.
    const CHAIN: [ModuleRef; 4] = [
        ModuleRef { addr: 0x80_0000, size: 0x1000 },
        ModuleRef { addr: 0x90_0000, size: 0x2_0000 },
        ModuleRef { addr: 0xa0_0000, size: 0x30_0000 },
        ModuleRef { addr: 0xe0_0000, size: 0x1_0000 },
    ];

    /// A domain whose modules are named by index (x86), with no cells: none are needed.
    fn indexed_domain(name: &'static str, kib: u64, modules: Vec<TMod>) -> TDom {
        TDom { address_cells: None, size_cells: None, modules, ..domain(name, 1, kib, 0) }
    }

    fn chain(d: Vec<TDom>) -> Result<Vec<DomainConfig>> {
        parse_multiboot_domains(&domains(d), &CHAIN, 0)
    }

    #[test]
    fn modules_by_multiboot_index() {
        let mut kernel = with_bootargs(indexed("multiboot,kernel", 1), "console=hvc0");
        kernel.reg = Some(vec![0, 0x4a00_0000, 0, 0x1000]); // not looked at by index
        let a = indexed_domain("domU1", 0x4000, vec![kernel, indexed("multiboot,ramdisk", 2)]);
        // A second domain sharing the first one's kernel, as the hyperlaunch binding allows.
        let b = indexed_domain("domU2", 0x6000, vec![indexed("multiboot,kernel", 1)]);
        let c = indexed_domain("domU3", 0x6000, vec![indexed("multiboot,kernel", 3)]);
        let got = chain(vec![a, b, c]).unwrap();
        let summary: Vec<_> = got.iter().map(|d| (d.name.as_str(), d.memory_kib, d.kernel, d.ramdisk)).collect();
        assert_eq!(
            summary,
            [
                ("domU1", 0x4000, Some(CHAIN[1]), Some(CHAIN[2])),
                ("domU2", 0x6000, Some(CHAIN[1]), None),
                ("domU3", 0x6000, Some(CHAIN[3]), None),
            ]
        );
        assert_eq!(got[0].bootargs.as_deref(), Some("console=hvc0"));
        // Hyperlaunch's own compatible strings, ramdisk first.
        let hl = |kind, i| TMod { compatible: vec![kind, "multiboot,module"], ..indexed("", i) };
        let d = indexed_domain("domB", 0x4000, vec![hl("module,ramdisk", 2), hl("module,kernel", 3)]);
        let got = chain(vec![d]).unwrap().remove(0);
        assert_eq!((got.kernel, got.ramdisk), (Some(CHAIN[3]), Some(CHAIN[2])));
        // The DT need not be module 0.
        let d = indexed_domain("domU1", 0x4000, vec![indexed("multiboot,kernel", 0)]);
        assert_eq!(parse_multiboot_domains(&domains(vec![d]), &CHAIN, 2).unwrap()[0].kernel, Some(CHAIN[0]));
    }

    #[test]
    fn rejects_bad_multiboot_indices() {
        let node = |i: u32| path(&format!("/chosen/domU1/module@{i}"));
        let d = indexed_domain("domU1", 0x4000, vec![indexed("multiboot,kernel", 4)]);
        let err = BootCfgError::ModuleIndexOutOfRange { node: node(4), index: 4, modules: 4 };
        assert_eq!(chain(vec![d]), Err(err));

        let d = indexed_domain("domU1", 0x4000, vec![indexed("multiboot,kernel", u32::MAX)]);
        let err = BootCfgError::ModuleIndexOutOfRange { node: node(u32::MAX), index: u32::MAX, modules: 4 };
        assert_eq!(chain(vec![d]), Err(err));

        let d = indexed_domain("domU1", 0x4000, vec![indexed("multiboot,kernel", 0)]);
        assert_eq!(chain(vec![d]), Err(BootCfgError::ModuleIndexIsConfig { node: node(0), index: 0 }));

        // Neither `mb-index` nor `reg`; then `reg` alone, which names no module by index.
        let mut m = indexed("multiboot,kernel", 1);
        m.index = None;
        let d = indexed_domain("domU1", 0x4000, vec![m]);
        assert_eq!(chain(vec![d]), Err(missing_prop("/chosen/domU1/module@1", "mb-index")));
        let d = indexed_domain("domU1", 0x4000, vec![module("multiboot,kernel", 0x90_0000, 0x2_0000)]);
        assert_eq!(chain(vec![d]), Err(missing_prop("/chosen/domU1/module@900000", "mb-index")));

        // An index that is not one cell.
        let mut m = indexed("multiboot,kernel", 1);
        m.index = Some(vec![0, 0, 0, 0, 0, 0, 0, 1]);
        let d = indexed_domain("domU1", 0x4000, vec![m]);
        assert_eq!(chain(vec![d]), Err(bad_prop("/chosen/domU1/module@1", "mb-index")));

        // An empty module in the chain.
        let empty = [CHAIN[0], ModuleRef { addr: 0x90_0000, size: 0 }];
        let d = indexed_domain("domU1", 0x4000, vec![indexed("multiboot,kernel", 1)]);
        let err = BootCfgError::BadModuleRange { node: node(1) };
        assert_eq!(parse_multiboot_domains(&domains(vec![d]), &empty, 0), Err(err));

        // The ARM form still wants `reg`: an index alone is not enough there.
        let d = TDom { modules: vec![indexed("multiboot,kernel", 1)], ..domain("domU1", 1, 0x4000, 0) };
        assert_eq!(one(d), Err(missing_prop("/chosen/domU1/module@1", "reg")));
    }

    #[test]
    fn multiboot_configs_need_domains_and_unique_names() {
        assert_eq!(chain(Vec::new()), Err(BootCfgError::NoDomains));
        let a = indexed_domain("domU1", 0x4000, vec![indexed("multiboot,kernel", 1)]);
        let err = BootCfgError::DuplicateDomain { name: path("domU1") };
        assert_eq!(chain(vec![a.clone(), a.clone()]), Err(err));
        let mut b = a.clone();
        b.modules = vec![indexed("multiboot,ramdisk", 2)];
        assert_eq!(chain(vec![b]), Err(BootCfgError::MissingKernel { domain: path("domU1") }));
        let mut c = a;
        c.memory = None;
        assert_eq!(chain(vec![c]), Err(missing_prop("/chosen/domU1", "memory")));
        assert!(matches!(parse_multiboot_domains(b"junk", &CHAIN, 0), Err(BootCfgError::InvalidDtb(_))));
    }

    /// Corrupted index-form blobs: errors, never a panic.
    #[test]
    fn corrupted_multiboot_configs_never_panic() {
        let a = indexed_domain("domU1", 0x4000, vec![indexed("multiboot,kernel", 1), indexed("multiboot,ramdisk", 2)]);
        let b = indexed_domain("domU2", 0x6000, vec![indexed("multiboot,kernel", 3)]);
        let good = domains(vec![a, b]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut blob = good.clone();
            let at = (seed as usize) % blob.len();
            blob[at] = (seed >> 32) as u8;
            let _ = parse_multiboot_domains(&blob, &CHAIN, (seed >> 40) as usize % 5);
        }
    }

    /// Corrupting a good blob byte by byte must produce errors, never a panic.
    #[test]
    fn corrupted_blobs_never_panic() {
        let mut d = domain("domU1", 2, 0x2_0000, 0x4a00_0000);
        d.modules[0] = with_bootargs(d.modules[0].clone(), "console=hvc0");
        d.modules.push(module("multiboot,ramdisk", 0x4b00_0000, 0x1000));
        let mut c = guest_loader((2, 2));
        c.domains = vec![d];
        let good = dtb(&c);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut blob = good.clone();
            let at = (seed as usize) % blob.len();
            blob[at] = (seed >> 32) as u8;
            let _ = parse_boot_config(&blob, 0x2_0000);
            let _ = parse_boot_config(&blob[..at], 0x2_0000);
        }
    }

    #[test]
    fn errors_read_well() {
        let e = BootCfgError::BadCells { node: path("/chosen/domU1"), property: "#size-cells", cells: 3 };
        assert_eq!(e.to_string(), "/chosen/domU1: `#size-cells` is 3, expected 1 or 2");
        let e = BootCfgError::DuplicateModule { domain: path("domU1"), kind: ModuleKind::Ramdisk };
        assert_eq!(e.to_string(), "domain domU1: more than one ramdisk");
        let e = BootCfgError::ModuleIndexOutOfRange { node: path("/chosen/domU1/kernel"), index: 7, modules: 3 };
        assert_eq!(e.to_string(), "/chosen/domU1/kernel: `mb-index` 7 is past the 3 boot module(s)");
    }
}
