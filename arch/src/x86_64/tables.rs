//! 4 KiB pages on the hypervisor heap: VMCS/VMCB-sized control pages and EPT/NPT tables.

use super::alloc::boxed::Box;
use super::alloc::vec::Vec;
use crate::x86::ept::TableMemory;

#[repr(C, align(4096))]
pub struct Page(pub [u64; 512]);

impl Page {
    pub fn new() -> Box<Page> {
        Box::new(Page([0; 512]))
    }
    /// A zeroed page, or `None` when the heap is exhausted (a guest's request must not panic
    /// the hypervisor by asking for one table too many).
    pub fn try_new() -> Option<Box<Page>> {
        let layout = core::alloc::Layout::new::<Page>();
        // SAFETY: `Page` has a non-zero size; the result is checked for null below.
        let ptr = unsafe { super::alloc::alloc::alloc_zeroed(layout) }.cast::<Page>();
        // SAFETY: a fresh, zeroed allocation of exactly `Page`'s layout (all-zero is a valid
        // `Page`), owned by nobody else; Box frees it with the same layout.
        (!ptr.is_null()).then(|| unsafe { Box::from_raw(ptr) })
    }
    /// Physical address: the heap is identity mapped.
    pub fn addr(&self) -> u64 {
        self as *const Page as u64
    }
}

/// Tables a domain may add to those mapping its RAM, for the hypervisor pages it maps
/// elsewhere (`add_to_physmap`): each new place can cost three. Unbounded, a guest naming
/// thousands of far-apart frames exhausted the heap and panicked the hypervisor.
pub const EXTRA_TABLES: usize = 64;

/// Second-level tables (EPT or NPT), owned by the vCPU whose control structure points at them.
pub struct TablePages {
    pages: Vec<Box<Page>>,
    /// No more tables than this (set once RAM is mapped).
    limit: usize,
}

impl Default for TablePages {
    fn default() -> Self {
        Self { pages: Vec::new(), limit: usize::MAX }
    }
}

impl TablePages {
    fn page(&self, addr: u64) -> &Page {
        self.pages.iter().find(|p| p.addr() == addr).expect("table address not ours")
    }

    /// From now on allow only `extra` tables more than there are.
    pub fn limit_growth(&mut self, extra: usize) {
        self.limit = self.pages.len() + extra;
    }
}

impl TableMemory for TablePages {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.pages.len() >= self.limit {
            return None;
        }
        let page = Page::try_new()?;
        let addr = page.addr();
        self.pages.push(page);
        Some(addr)
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        self.page(table).0[index]
    }
    fn write(&mut self, table: u64, index: usize, value: u64) {
        let page = self.pages.iter_mut().find(|p| p.addr() == table).expect("table address not ours");
        page.0[index] = value;
    }
}

/// Tables mapping the domain's RAM, built in `fmt`; returns them with their root.
pub fn second_level(
    fmt: crate::x86::ept::Format,
    ram: &super::guestmem::GuestRam,
) -> Result<(TablePages, u64), &'static str> {
    use crate::x86::ept::{EptError, map_with};
    let mut tables = TablePages::default();
    let root = tables.alloc_table().ok_or("out of memory for nested page tables")?;
    map_with(fmt, &mut tables, root, ram.guest, ram.host, ram.size).map_err(|e| match e {
        EptError::OutOfTables => "out of memory for nested page tables",
        EptError::BadRange | EptError::Overlap => "domain RAM cannot be mapped by nested paging",
    })?;
    tables.limit_growth(EXTRA_TABLES);
    Ok((tables, root))
}
