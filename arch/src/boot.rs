//! What the boot CPU learned about the machine, handed from arch to the core.

/// A range of physical memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub size: u64,
}

impl Region {
    pub const fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// A boot module: a guest kernel, an initrd or a boot device tree placed by the loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    pub region: Region,
    pub kind: ModuleKind,
    /// Command line the loader attached to the module (NUL-free, at most [`CMDLINE_MAX`]).
    pub cmdline: [u8; CMDLINE_MAX],
    pub cmdline_len: usize,
}

impl Default for Module {
    fn default() -> Self {
        Self { region: Region::default(), kind: ModuleKind::Kernel, cmdline: [0; CMDLINE_MAX], cmdline_len: 0 }
    }
}

impl Module {
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }
}

pub const CMDLINE_MAX: usize = 256;
pub const MAX_REGIONS: usize = 32;
/// A boot configuration, and a kernel and a ramdisk for each of several domains.
pub const MAX_MODULES: usize = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModuleKind {
    #[default]
    Kernel,
    Ramdisk,
    DeviceTree,
}

/// Everything the core needs from boot: RAM, what is already taken, modules, CPUs.
#[derive(Clone, Debug, Default)]
pub struct BootInfo {
    /// Usable RAM as firmware/bootloader described it.
    pub ram: [Region; MAX_REGIONS],
    pub ram_count: usize,
    /// RAM that must not be handed out (hypervisor image, boot structures, DTB).
    pub reserved: [Region; MAX_REGIONS],
    pub reserved_count: usize,
    pub modules: [Module; MAX_MODULES],
    pub module_count: usize,
    /// The device tree the boot loader handed over (ARM), for the core to read the boot
    /// configuration from; `None` where there is none (x86 multiboot, where a configuration
    /// comes as a module of kind [`ModuleKind::DeviceTree`] instead).
    pub dtb: Option<Region>,
    /// CPUs found (online or not).
    pub cpu_count: usize,
    /// Privilege level the hypervisor runs at, for the banner ("EL2", "HYP", "VMX root").
    pub privilege: &'static str,
    /// Virtualization features worth a banner line ("EPT unrestricted-guest VPID", "GICv3").
    pub features: &'static str,
}

impl BootInfo {
    pub fn ram(&self) -> &[Region] {
        &self.ram[..self.ram_count]
    }
    pub fn reserved(&self) -> &[Region] {
        &self.reserved[..self.reserved_count]
    }
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }
    pub fn add_ram(&mut self, r: Region) {
        if self.ram_count < MAX_REGIONS && r.size > 0 {
            self.ram[self.ram_count] = r;
            self.ram_count += 1;
        }
    }
    pub fn add_reserved(&mut self, r: Region) {
        if self.reserved_count < MAX_REGIONS && r.size > 0 {
            self.reserved[self.reserved_count] = r;
            self.reserved_count += 1;
        }
    }
    pub fn add_module(&mut self, region: Region, kind: ModuleKind, cmdline: &[u8]) {
        if self.module_count < MAX_MODULES {
            let n = cmdline.len().min(CMDLINE_MAX);
            let mut m = Module { region, kind, cmdline: [0; CMDLINE_MAX], cmdline_len: n };
            m.cmdline[..n].copy_from_slice(&cmdline[..n]);
            self.modules[self.module_count] = m;
            self.module_count += 1;
            self.add_reserved(region);
        }
    }
}

/// How the arch backend must build a guest: the core has already placed the image.
#[derive(Clone, Copy, Debug)]
pub struct GuestSetup {
    /// Host-physical start of the domain's RAM (contiguous for now).
    pub ram_host: u64,
    /// Guest-physical address where that RAM appears.
    pub ram_guest: u64,
    pub ram_size: u64,
    /// Guest-physical entry point.
    pub entry: u64,
    /// First argument register (x0 on aarch64, r2 on ARMv7 = DT; EBX on x86 = start info).
    pub boot_arg: u64,
    pub domain_id: u16,
    pub vcpu_id: u16,
    /// vCPUs the domain has (the interrupt controller is sized for them); at least 1.
    pub nr_vcpus: u16,
    /// x86: the domain's vCPUs start with their local APIC in xAPIC mode (as Xen starts every
    /// HVM vCPU) rather than x2APIC mode (what 64-bit guests here have always been given, and
    /// take as "enabled by firmware"). 32-bit kernels need it: i386 Linux has no x2APIC
    /// support at all.
    pub xapic_at_reset: bool,
}
