//! Reading GRUB's multiboot2 boot information into [`BootInfo`].

use crate::boot::{BootInfo, ModuleKind, Region};
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

/// What else boot needs from the information besides what goes into `BootInfo`.
pub struct Found {
    /// Physical address of the ACPI RSDP (GRUB copies it into a tag).
    pub rsdp: Option<u64>,
}

/// Fill `boot` from the information at physical `addr`: RAM, modules, reserved ranges.
pub fn read(addr: u64, boot: &mut BootInfo) -> Found {
    // SAFETY: GRUB passed this address in EBX; the structure lives in RAM below 4 GiB (identity
    // mapped) and nothing writes it: it is reserved below before any allocation.
    let mbi = unsafe { BootInformation::load(addr as *const BootInformationHeader) }
        .unwrap_or_else(|e| panic!("bad multiboot2 information at {addr:#x}: {e:?}"));
    let start = mbi.start_address() as u64;
    boot.add_reserved(Region { start, size: mbi.end_address() as u64 - start });
    if let Some(map) = mbi.memory_map_tag() {
        for area in map.memory_areas().iter().filter(|a| a.typ() == MemoryAreaType::Available) {
            boot.add_ram(Region { start: area.start_address(), size: area.size() });
        }
    }
    for module in mbi.module_tags() {
        let region = Region { start: module.start_address() as u64, size: module.module_size() as u64 };
        let cmdline = module.cmdline().unwrap_or("");
        // A module that is a flattened device tree is the boot configuration (the first one
        // is taken; no kernel format starts with the FDT magic). `module2 /boot/initrd initrd`
        // (how xtask's GRUB config names it) is the ramdisk of the kernel module before it.
        let kind = if is_fdt(region) {
            ModuleKind::DeviceTree
        } else if cmdline == "initrd" {
            ModuleKind::Ramdisk
        } else {
            ModuleKind::Kernel
        };
        boot.add_module(region, kind, cmdline.as_bytes());
    }
    Found { rsdp: rsdp_address(&mbi) }
}

/// Whether the module starts with the flattened device tree magic (big-endian 0xd00dfeed).
fn is_fdt(module: Region) -> bool {
    if module.size < 4 || module.end() > 1 << 32 {
        return false;
    }
    // SAFETY: GRUB placed the module in RAM below 4 GiB (checked above), identity mapped by
    // the boot page tables, and nothing has written to it yet; four bytes are read.
    let magic = unsafe { core::ptr::read_unaligned(module.start as *const [u8; 4]) };
    u32::from_be_bytes(magic) == 0xd00d_feed
}

/// The RSDP tags hold a copy of the RSDP; its fields are read from the tag itself.
fn rsdp_address(mbi: &BootInformation) -> Option<u64> {
    // Tag payload starts after the 8-byte tag header.
    if let Some(v2) = mbi.rsdp_v2_tag() {
        return Some((v2 as *const _ as *const u8 as u64) + 8);
    }
    mbi.rsdp_v1_tag().map(|v1| (v1 as *const _ as *const u8 as u64) + 8)
}
