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
    /// Physical address: the heap is identity mapped.
    pub fn addr(&self) -> u64 {
        self as *const Page as u64
    }
}

/// Second-level tables (EPT or NPT), owned by the vCPU whose control structure points at them.
#[derive(Default)]
pub struct TablePages(Vec<Box<Page>>);

impl TablePages {
    fn page(&self, addr: u64) -> &Page {
        self.0.iter().find(|p| p.addr() == addr).expect("table address not ours")
    }
}

impl TableMemory for TablePages {
    fn alloc_table(&mut self) -> Option<u64> {
        let page = Page::new();
        let addr = page.addr();
        self.0.push(page);
        Some(addr)
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        self.page(table).0[index]
    }
    fn write(&mut self, table: u64, index: usize, value: u64) {
        let page = self.0.iter_mut().find(|p| p.addr() == table).expect("table address not ours");
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
    Ok((tables, root))
}
