//! The PVH start-of-day structures (`xen/include/public/arch-x86/hvm/start_info.h`) and the
//! `SIF_*` flags found in their `flags` field (`xen/include/public/xen.h`).
//!
//! A PVH guest is entered at its `XEN_ELFNOTE_PHYS32_ENTRY` ([`crate::elfnote`]) in 32-bit
//! protected mode, paging off, with `%ebx` holding the physical address of an
//! [`HvmStartInfo`]. All addresses in these structures are guest-physical; 0 means absent.

/// [`HvmStartInfo::magic`]: the bytes "xEn3" with the top bit of the "E" set.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// Version 1 added the memory map (`memmap_paddr`, `memmap_entries`, `reserved`).
pub const HVM_START_INFO_VERSION: u32 = 1;

/// Memory-map entry types; the values are the ACPI address range types.
pub const XEN_HVM_MEMMAP_TYPE_RAM: u32 = 1;
pub const XEN_HVM_MEMMAP_TYPE_RESERVED: u32 = 2;
pub const XEN_HVM_MEMMAP_TYPE_ACPI: u32 = 3;
pub const XEN_HVM_MEMMAP_TYPE_NVS: u32 = 4;
pub const XEN_HVM_MEMMAP_TYPE_UNUSABLE: u32 = 5;
pub const XEN_HVM_MEMMAP_TYPE_DISABLED: u32 = 6;
pub const XEN_HVM_MEMMAP_TYPE_PMEM: u32 = 7;

/// The domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// The domain is the initial domain.
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// PV: `mod_start` is a multiboot module list.
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// PV: `mod_start` is a PFN, not a virtual address.
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
/// PV: the toolstack understands a virtually mapped phys-to-machine list.
pub const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;
/// Bits reserved for power-management options.
pub const SIF_PM_MASK: u32 = 0xFF << 8;

/// `struct hvm_start_info`: the start-of-day information `%ebx` points at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmStartInfo {
    /// [`XEN_HVM_START_MAGIC_VALUE`].
    pub magic: u32,
    /// Structure version; newer versions only append fields.
    pub version: u32,
    /// `SIF_*`.
    pub flags: u32,
    /// Number of [`HvmModlistEntry`] at `modlist_paddr`.
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    /// NUL-terminated command line.
    pub cmdline_paddr: u64,
    /// The ACPI RSDP.
    pub rsdp_paddr: u64,
    /// Version 1: array of [`HvmMemmapTableEntry`].
    pub memmap_paddr: u64,
    /// Version 1: entries at `memmap_paddr`; 0 means no memory map.
    pub memmap_entries: u32,
    /// Version 1: must be zero.
    pub reserved: u32,
}

/// `struct hvm_modlist_entry`: one module (e.g. an initrd).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmModlistEntry {
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// NUL-terminated command line of the module, or 0.
    pub cmdline_paddr: u64,
    pub reserved: u64,
}

/// `struct hvm_memmap_table_entry`: one range of the guest's memory map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmMemmapTableEntry {
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// `XEN_HVM_MEMMAP_TYPE_*`.
    pub r#type: u32,
    /// Must be zero.
    pub reserved: u32,
}

layout_checks! {
    test layouts;
    // The header draws these layouts as byte diagrams; the numbers below follow them.
    all, "struct hvm_start_info", HvmStartInfo, 56, {
        magic: 0,
        version: 4,
        flags: 8,
        nr_modules: 12,
        modlist_paddr: 16,
        cmdline_paddr: 24,
        rsdp_paddr: 32,
        memmap_paddr: 40,
        memmap_entries: 48,
        reserved: 52,
    };
    all, "struct hvm_modlist_entry", HvmModlistEntry, 32, {
        paddr: 0,
        size: 8,
        cmdline_paddr: 16,
        reserved: 24,
    };
    all, "struct hvm_memmap_table_entry", HvmMemmapTableEntry, 24, {
        addr: 0,
        size: 8,
        r#type: 16,
        reserved: 20,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_spells_xen3() {
        let bytes = XEN_HVM_START_MAGIC_VALUE.to_le_bytes();
        assert_eq!(bytes, [b'x', b'E' | 0x80, b'n', b'3']);
    }
}
