//! Xen ELF note types (`xen/include/public/elfnote.h`).
//!
//! A guest kernel image carries these as notes named `"Xen"` (in a `PT_NOTE` segment or
//! `.note.Xen` section); the value is the note's `n_type`. Numeric notes hold a 4- or 8-byte
//! integer, string notes a NUL-terminated string.

/// String: a `NAME=VALUE` pair.
pub const XEN_ELFNOTE_INFO: u32 = 0;
/// Numeric: virtual address of the (PV) entry point.
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
/// Numeric: virtual address of the hypercall page.
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
/// Numeric: virtual address the image is to be mapped at.
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
/// Numeric: offset between virtual and physical addresses of the image.
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
/// String: the Xen version the image expects (`"xen-3.0"`).
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
/// String: the guest OS name (e.g. `"linux"`).
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
/// String: the guest OS version.
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
/// String: the loader type (`"generic"`).
pub const XEN_ELFNOTE_LOADER: u32 = 8;
/// String, x86-32 only: PAE support (`"yes"`, `"no"` or `"bimodal"`).
pub const XEN_ELFNOTE_PAE_MODE: u32 = 9;
/// String: `|`-separated `XENFEAT_*` names (without the prefix) the kernel supports; a
/// leading `!` marks a required one.
pub const XEN_ELFNOTE_FEATURES: u32 = 10;
/// String: whether the symbol table must be loaded (`"yes"` or `"no"`).
pub const XEN_ELFNOTE_BSD_SYMTAB: u32 = 11;
/// Numeric: lowest address the hypervisor hole may start at (x86 PAE PV).
pub const XEN_ELFNOTE_HV_START_LOW: u32 = 12;
/// Numeric: mask/value pairs recognising non-present L1 entries that hold valid MFNs.
pub const XEN_ELFNOTE_L1_MFN_VALID: u32 = 13;
/// Numeric: the guest supports cooperative suspend cancellation.
pub const XEN_ELFNOTE_SUSPEND_CANCEL: u32 = 14;
/// Numeric: where to place the initial phys-to-machine map (x86-64 PV).
pub const XEN_ELFNOTE_INIT_P2M: u32 = 15;
/// Numeric: the guest copes with an initrd its initial page tables do not map.
pub const XEN_ELFNOTE_MOD_START_PFN: u32 = 16;
/// Numeric: a bitmap of `XENFEAT_*` the guest supports.
pub const XEN_ELFNOTE_SUPPORTED_FEATURES: u32 = 17;
/// Numeric (32-bit): physical address of the PVH entry point, entered in 32-bit protected
/// mode with paging off and `%ebx` pointing at an `hvm_start_info`.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Up to three 32-bit values: PVH relocation constraints (start alignment, lowest start
/// address, highest end address); its presence says the image can be relocated.
pub const XEN_ELFNOTE_PHYS32_RELOC: u32 = 19;
/// The largest note type of the range above.
pub const XEN_ELFNOTE_MAX: u32 = XEN_ELFNOTE_PHYS32_RELOC;

/// Notes the hypervisor's kexec/kdump code writes on a crash.
pub const XEN_ELFNOTE_CRASH_INFO: u32 = 0x100_0001;
pub const XEN_ELFNOTE_CRASH_REGS: u32 = 0x100_0002;

/// Notes written into domain core dumps by the toolstack.
pub const XEN_ELFNOTE_DUMPCORE_NONE: u32 = 0x200_0000;
pub const XEN_ELFNOTE_DUMPCORE_HEADER: u32 = 0x200_0001;
pub const XEN_ELFNOTE_DUMPCORE_XEN_VERSION: u32 = 0x200_0002;
pub const XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: u32 = 0x200_0003;

/// The name every Xen ELF note carries (`n_namesz` = 4, including the NUL).
pub const XEN_ELFNOTE_NAME: &[u8; 4] = b"Xen\0";
