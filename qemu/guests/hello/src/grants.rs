//! The granting side of grant tables v1 as a test guest uses it: its grant-table frame
//! mapped over a page of its own, and entries written the way Linux writes them (domain and
//! frame first, the flags last, as the entry is valid once they are).

use crate::hypercall;
use guest_abi::hypercall as nr;
use guest_abi::memory::{self as mem, XenAddToPhysmap};
use guest_abi::xen::DOMID_SELF;

/// A 4 KiB page of the guest's own memory.
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

/// The guest frame of the page at `page` (test guests run with guest virtual = physical).
pub fn frame<T>(page: *const T) -> u64 {
    page as u64 >> 12
}

/// The pages of RAM this domain was given (`XENMEM_current_reservation`): the scenarios'
/// configurations give each role its own size.
pub fn own_pages() -> i64 {
    let domid = DOMID_SELF;
    hypercall(nr::MEMORY_OP, [mem::XENMEM_CURRENT_RESERVATION, &raw const domid as u64, 0, 0, 0])
}

/// Map grant-table frame 0 over `table`; the hypercall's result.
pub fn map_table(table: *mut Page) -> i64 {
    let xatp =
        XenAddToPhysmap { domid: DOMID_SELF, size: 0, space: mem::XENMAPSPACE_GRANT_TABLE, idx: 0, gpfn: frame(table) };
    hypercall(nr::MEMORY_OP, [mem::XENMEM_ADD_TO_PHYSMAP, &raw const xatp as u64, 0, 0, 0])
}

/// Write entry `gref` of the table mapped over `table`: `flags` for domain `domid`, frame `gfn`.
pub fn write_entry(table: *mut Page, gref: u32, flags: u16, domid: u16, gfn: u64) {
    let entry = table.cast::<u8>().wrapping_add(gref as usize * 8);
    // SAFETY: entry `gref` (< 512) of the grant-table frame mapped over `table`; only this
    // vCPU writes it, the hypervisor reads it and updates its flags.
    unsafe {
        entry.add(2).cast::<u16>().write_volatile(domid);
        entry.add(4).cast::<u32>().write_volatile(gfn as u32);
        entry.cast::<u16>().write_volatile(flags);
    }
}

/// The flags of entry `gref` as they are now (the hypervisor sets `GTF_reading`/`GTF_writing`).
pub fn entry_flags(table: *const Page, gref: u32) -> u16 {
    let entry = table.cast::<u8>().wrapping_add(gref as usize * 8);
    // SAFETY: as in `write_entry`.
    unsafe { entry.cast::<u16>().read_volatile() }
}
