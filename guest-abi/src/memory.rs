//! `memory_op` sub-operations and their arguments (`xen/include/public/memory.h`).
//!
//! In these structures `xen_pfn_t` and `xen_ulong_t` are 8 bytes (x86_64 and ARM) and a guest
//! handle is a `u64` guest address: on ARM handles are 8 bytes and 8-byte aligned even for
//! 32-bit guests, which gives the same offsets as x86_64.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Argument: [`XenMemoryReservation`].
pub const XENMEM_INCREASE_RESERVATION: u64 = 0;
/// Argument: [`XenMemoryReservation`].
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
/// Returns the largest machine frame number; argument: a `domid_t`.
pub const XENMEM_MAXIMUM_RAM_PAGE: u64 = 2;
/// Returns the domain's current page count; argument: a `domid_t`.
pub const XENMEM_CURRENT_RESERVATION: u64 = 3;
/// Returns the domain's page limit; argument: a `domid_t`.
pub const XENMEM_MAXIMUM_RESERVATION: u64 = 4;
pub const XENMEM_MACHPHYS_MFN_LIST: u64 = 5;
/// Argument: [`XenMemoryReservation`].
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
/// Argument: [`XenAddToPhysmap`].
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// Fills the caller's memory map (argument: [`XenMemoryMap`]).
pub const XENMEM_MEMORY_MAP: u64 = 9;
/// Fills the host memory map (privileged; argument: [`XenMemoryMap`]).
pub const XENMEM_MACHINE_MEMORY_MAP: u64 = 10;
pub const XENMEM_EXCHANGE: u64 = 11;
pub const XENMEM_MACHPHYS_MAPPING: u64 = 12;
/// Toolstack: set a domain's memory map.
pub const XENMEM_SET_MEMORY_MAP: u64 = 13;
/// Returns the largest guest frame number in use; argument: a `domid_t`.
pub const XENMEM_MAXIMUM_GPFN: u64 = 14;
/// Argument: [`XenRemoveFromPhysmap`].
pub const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;
pub const XENMEM_SET_POD_TARGET: u64 = 16;
pub const XENMEM_GET_POD_TARGET: u64 = 17;
pub const XENMEM_GET_SHARING_FREED_PAGES: u64 = 18;
pub const XENMEM_GET_SHARING_SHARED_PAGES: u64 = 19;
pub const XENMEM_PAGING_OP: u64 = 20;
pub const XENMEM_ACCESS_OP: u64 = 21;
pub const XENMEM_SHARING_OP: u64 = 22;
pub const XENMEM_ADD_TO_PHYSMAP_BATCH: u64 = 23;
pub const XENMEM_CLAIM_PAGES: u64 = 24;
pub const XENMEM_MACHPHYS_COMPAT_MFN_LIST: u64 = 25;
pub const XENMEM_GET_VNUMAINFO: u64 = 26;
pub const XENMEM_RESERVED_DEVICE_MEMORY_MAP: u64 = 27;
pub const XENMEM_ACQUIRE_RESOURCE: u64 = 28;

// [`XenAddToPhysmap::space`] values (`enum phys_map_space`).
/// The shared info page (`idx` 0).
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// A grant-table frame (`idx` = frame number, or'ed with
/// [`XENMAPIDX_GRANT_TABLE_STATUS`] for a v2 status frame).
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// One of the caller's own frames (`idx` = its current gfn).
pub const XENMAPSPACE_GMFN: u32 = 2;
/// `size` consecutive frames (`XENMEM_add_to_physmap` only).
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// A frame of another domain (`XENMEM_add_to_physmap_batch` only).
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// ARM: device MMIO, mapped at stage 2 as normal write-back cacheable memory.
pub const XENMAPSPACE_DEV_MMIO: u32 = 5;

/// Or'ed into [`XenAddToPhysmap::idx`] with `XENMAPSPACE_grant_table` to map a status frame.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

/// `XENMEMF_address_bits(n)`, for [`XenMemoryReservation::mem_flags`]: bits 7:0 give the maximum
/// address width of the allocation (0: no limit).
pub const fn xenmemf_address_bits(bits: u32) -> u32 {
    bits
}
/// `XENMEMF_node(n)`: prefer NUMA node `n` (stored as `n + 1` in bits 15:8).
pub const fn xenmemf_node(node: u32) -> u32 {
    (node + 1) << 8
}
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
/// The node from `xenmemf_node` is a requirement, not a preference.
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
/// The node from `xenmemf_node` is a virtual NUMA node.
pub const XENMEMF_VNODE: u32 = 1 << 18;

/// `struct xen_memory_reservation`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenMemoryReservation {
    /// Guest handle: array of `xen_pfn_t` (frame numbers in or out, per sub-operation).
    pub extent_start: u64,
    /// Number of extents.
    pub nr_extents: u64,
    /// Each extent is `2^extent_order` pages.
    pub extent_order: u32,
    /// `XENMEMF_*`.
    pub mem_flags: u32,
    /// Usually `DOMID_SELF`.
    pub domid: u16,
    /// Implicit C tail padding.
    pub _pad0: [u16; 3],
}

/// `struct xen_add_to_physmap`: map a page of `space` at guest frame `gpfn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenAddToPhysmap {
    /// The domain whose physmap changes (usually `DOMID_SELF`).
    pub domid: u16,
    /// Number of pages for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index within `space` (a `xen_ulong_t`).
    pub idx: u64,
    /// Guest frame where the page should appear (a `xen_pfn_t`).
    pub gpfn: u64,
}

/// `struct xen_remove_from_physmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenRemoveFromPhysmap {
    pub domid: u16,
    /// Implicit C padding before the 8-byte `gpfn`.
    pub _pad0: [u16; 3],
    /// The guest frame to unmap.
    pub gpfn: u64,
}

/// `struct xen_memory_map`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryMap {
    /// In: capacity of `buffer` in entries; out: entries written.
    pub nr_entries: u32,
    /// Implicit C padding before the 8-byte handle.
    pub _pad0: u32,
    /// Guest handle: array of E820-style entries (8-byte address, 8-byte size, 4-byte type).
    pub buffer: u64,
}

/// `struct xen_foreign_memory_map` (toolstack).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenForeignMemoryMap {
    pub domid: u16,
    /// Implicit C padding before the 8-aligned `map`.
    pub _pad0: [u16; 3],
    pub map: XenMemoryMap,
}

/// `struct xen_machphys_mapping`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMachphysMapping {
    pub v_start: u64,
    pub v_end: u64,
    pub max_mfn: u64,
}

layout_checks! {
    test layouts;
    all, "struct xen_memory_reservation", XenMemoryReservation, 32, {
        extent_start: 0,
        nr_extents: 8,
        extent_order: 16,
        mem_flags: 20,
        domid: 24,
        _pad0: 26,
    };
    all, "struct xen_add_to_physmap", XenAddToPhysmap, 24, {
        domid: 0,
        size: 2,
        space: 4,
        idx: 8,
        gpfn: 16,
    };
    all, "struct xen_remove_from_physmap", XenRemoveFromPhysmap, 16, {
        domid: 0,
        _pad0: 2,
        gpfn: 8,
    };
    all, "struct xen_memory_map", XenMemoryMap, 16, {
        nr_entries: 0,
        _pad0: 4,
        buffer: 8,
    };
    all, "struct xen_foreign_memory_map", XenForeignMemoryMap, 24, {
        domid: 0,
        _pad0: 2,
        map: 8,
    };
    all, "struct xen_machphys_mapping", XenMachphysMapping, 24, {
        v_start: 0,
        v_end: 8,
        max_mfn: 16,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memf() {
        assert_eq!(xenmemf_node(0), 0x100);
        assert_eq!(xenmemf_address_bits(32) | xenmemf_node(1), 0x220);
    }
}
