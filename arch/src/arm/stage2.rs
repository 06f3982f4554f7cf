//! Stage-2 translation for one domain: guest RAM in 2 MiB (or 1 GiB) blocks, plus single
//! 4 KiB hypervisor pages (shared_info, grant frames, console ring) outside RAM.
//!
//! The same tables serve ARMv8 (VTTBR_EL2/VTCR_EL2) and ARMv7 LPAE (VTTBR/VTCR): a 40-bit
//! IPA space starting at level 1 with two concatenated level-1 tables. Anything the guest
//! touches outside what is mapped faults to the hypervisor with the IPA.
//!
//! Other CPUs may be running the domain while its tables change (a grant mapped over RAM
//! splits a 2 MiB block). Every change of a valid descriptor is break-before-make: the
//! descriptor goes invalid, the caller's `tlb(ipa)` drops what any CPU's TLB holds of it,
//! then the new descriptor goes in. A vCPU that touches the range in between takes a
//! stage-2 translation fault, which the backend answers by letting it try again once the
//! change is complete. Filling an invalid descriptor needs no invalidation (TLBs never hold
//! a translation fault).

use super::lpae::{ADDR_MASK, BlockTables, ENTRIES, L2_BLOCK, MapError, TABLE, VALID, attrs, break_before_make};

/// Level-2 tables per domain: guest RAM may span this many gigabytes of IPA space.
pub const LEVEL2_TABLES: usize = 4;
/// Level-3 tables per domain, each covering 2 MiB of 4 KiB pages: enough for the grant
/// region (16 MiB) and the magic-page range next to it.
pub const LEVEL3_TABLES: usize = 12;
/// Bytes one level-3 entry maps.
pub const PAGE: u64 = 0x1000;
/// Level-3 descriptor type bits: a page.
const PAGE_TYPE: u64 = VALID | TABLE;

/// One 4 KiB level-3 table.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct PageTable([u64; ENTRIES]);

/// One domain's stage-2 tables. All-zero bytes are a valid, empty value.
#[repr(C, align(8192))]
pub struct Stage2Tables {
    blocks: BlockTables<LEVEL2_TABLES>,
    pages: [PageTable; LEVEL3_TABLES],
    pages_used: usize,
}

impl Default for Stage2Tables {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage2Tables {
    pub const fn new() -> Self {
        Self { blocks: BlockTables::new(), pages: [PageTable([0; ENTRIES]); LEVEL3_TABLES], pages_used: 0 }
    }

    /// Address of the root table, for VTTBR.
    pub fn root_address(&self) -> u64 {
        self.blocks.root_address()
    }

    /// Level-2 tables used so far (by RAM blocks and by page tables' parents).
    pub fn tables_used(&self) -> usize {
        self.blocks.tables_used()
    }

    /// Walk like the MMU: host-physical address and attribute bits for `ipa`.
    pub fn translate(&self, ipa: u64) -> Option<(u64, u64)> {
        if let Some(found) = self.blocks.translate(ipa) {
            return Some(found);
        }
        let l2 = self.blocks.level2_entry(ipa)?;
        if l2 & (VALID | TABLE) != VALID | TABLE {
            return None;
        }
        let table = self.page_table_index(l2 & ADDR_MASK)?;
        let entry = self.pages[table].0[((ipa / PAGE) % ENTRIES as u64) as usize];
        (entry & PAGE_TYPE == PAGE_TYPE)
            .then_some(((entry & ADDR_MASK) | (ipa % PAGE), entry & !ADDR_MASK & !PAGE_TYPE))
    }

    /// Walk guest-physical `[ipa, ipa + len)` like the MMU, in pieces that never cross a
    /// page, for copies the hypervisor makes on a guest's behalf: `f(host_pa, offset, n)` for
    /// each piece. Every piece must translate and satisfy `allowed(host_pa, n)` (the domain's
    /// own RAM: a hypervisor page mapped over RAM is then refused, and so is the RAM beneath
    /// it, which the guest no longer sees) before `f` sees any, so a refused copy touches
    /// nothing. `Err` carries the first IPA refused.
    pub fn for_each_host_piece(
        &self,
        ipa: u64,
        len: usize,
        allowed: impl Fn(u64, usize) -> bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), u64> {
        let piece = |done: usize| -> Result<(u64, usize), u64> {
            let at = ipa.checked_add(done as u64).ok_or(ipa)?;
            let n = ((PAGE - at % PAGE) as usize).min(len - done);
            let (pa, _) = self.translate(at).ok_or(at)?;
            if allowed(pa, n) { Ok((pa, n)) } else { Err(at) }
        };
        let mut done = 0;
        while done < len {
            done += piece(done)?.1;
        }
        done = 0;
        while done < len {
            let (pa, n) = piece(done)?;
            f(pa, done, n);
            done += n;
        }
        Ok(())
    }

    /// Map the 4 KiB page at `ipa` onto host page `pa` (read/write, never executed),
    /// replacing any page mapped there. Inside a 2 MiB RAM block the block is first split
    /// into pages (Linux puts shared_info in a page of its own RAM).
    pub fn map_page(&mut self, ipa: u64, pa: u64, tlb: &mut dyn FnMut(u64)) -> Result<(), MapError> {
        self.set_page(ipa, pa, attrs::S2_SHARED_PAGE, tlb)
    }

    /// Map the 4 KiB page at `ipa` onto another domain's RAM page `pa`, lent by a grant:
    /// never executed, and read-only unless `writable`. Replaces what was there, as
    /// [`Self::map_page`] does.
    pub fn map_granted_page(
        &mut self,
        ipa: u64,
        pa: u64,
        writable: bool,
        tlb: &mut dyn FnMut(u64),
    ) -> Result<(), MapError> {
        let attrs = if writable { attrs::S2_SHARED_PAGE } else { attrs::S2_READONLY_PAGE };
        self.set_page(ipa, pa, attrs, tlb)
    }

    /// Map the 4 KiB device page `pa` at `ipa` (device memory, read/write, never executed):
    /// hardware the guest uses directly, the GICv2 virtual CPU interface.
    pub fn map_device_page(&mut self, ipa: u64, pa: u64, tlb: &mut dyn FnMut(u64)) -> Result<(), MapError> {
        self.set_page(ipa, pa, attrs::S2_DEVICE_PAGE, tlb)
    }

    /// Put RAM page `pa` back at `ipa` with RAM's attributes (after a grant mapping over it
    /// ends).
    pub fn restore_ram_page(&mut self, ipa: u64, pa: u64, tlb: &mut dyn FnMut(u64)) -> Result<(), MapError> {
        self.set_page(ipa, pa, attrs::S2_RAM, tlb)
    }

    /// End a grant mapping at `ipa`: inside the domain's RAM (`ram`: its guest address, host
    /// address and size) its own page comes back, anywhere else nothing is left mapped.
    pub fn end_grant(&mut self, ipa: u64, ram: (u64, u64, u64), tlb: &mut dyn FnMut(u64)) -> Result<(), MapError> {
        let (ram_ipa, ram_pa, size) = ram;
        match ipa.checked_sub(ram_ipa).filter(|&off| off < size) {
            Some(off) => self.restore_ram_page(ipa, ram_pa + off, tlb),
            None => self.unmap_page(ipa, tlb),
        }
    }

    /// Leave nothing mapped at the 4 KiB page `ipa` (which a page, not a block, maps): an
    /// access there faults to the hypervisor again.
    pub fn unmap_page(&mut self, ipa: u64, tlb: &mut dyn FnMut(u64)) -> Result<(), MapError> {
        let slot = self.blocks.level2_entry(ipa).ok_or(MapError::OutOfRange)?;
        if slot & (VALID | TABLE) != VALID | TABLE {
            return Err(MapError::Overlap);
        }
        let table = self.page_table_index(slot & ADDR_MASK).ok_or(MapError::Overlap)?;
        let entry = &mut self.pages[table].0[((ipa / PAGE) % ENTRIES as u64) as usize];
        if *entry & VALID != 0 {
            break_before_make(entry, 0, || tlb(ipa & !(PAGE - 1)));
        }
        Ok(())
    }

    /// `[ipa]` -> page `pa` with `attrs`, whatever mapped it before (nothing, a page, or a
    /// RAM block then split).
    fn set_page(&mut self, ipa: u64, pa: u64, attrs: u64, tlb: &mut dyn FnMut(u64)) -> Result<(), MapError> {
        if !ipa.is_multiple_of(PAGE) || !pa.is_multiple_of(PAGE) {
            return Err(MapError::Misaligned);
        }
        if ipa >= 1 << IPA_BITS || pa > ADDR_MASK {
            return Err(MapError::OutOfRange);
        }
        let slot = *self.blocks.level2_entry_mut(ipa, tlb)?;
        let table = match slot & (VALID | TABLE) {
            v if v == VALID | TABLE => self.page_table_index(slot & ADDR_MASK).ok_or(MapError::Overlap)?,
            v if v & VALID != 0 => self.split_block(ipa, slot, tlb)?,
            _ => self.new_page_table(ipa, 0, tlb)?,
        };
        let new = (pa & ADDR_MASK) | (attrs & !ADDR_MASK & !PAGE_TYPE) | PAGE_TYPE;
        let entry = &mut self.pages[table].0[((ipa / PAGE) % ENTRIES as u64) as usize];
        if *entry & VALID != 0 && *entry != new {
            break_before_make(entry, new, || tlb(ipa));
        } else {
            *entry = new;
        }
        Ok(())
    }

    /// Replace the 2 MiB block descriptor `block` covering `ipa` by a level-3 table that maps
    /// the same 512 pages with the same attributes.
    fn split_block(&mut self, ipa: u64, block: u64, tlb: &mut dyn FnMut(u64)) -> Result<usize, MapError> {
        if self.pages_used == LEVEL3_TABLES {
            return Err(MapError::NoTables);
        }
        let index = self.pages_used;
        let base = block & ADDR_MASK & !(L2_BLOCK - 1);
        let attrs = block & !ADDR_MASK & !(VALID | TABLE);
        for (i, entry) in self.pages[index].0.iter_mut().enumerate() {
            *entry = (base + i as u64 * PAGE) | attrs | PAGE_TYPE;
        }
        self.new_page_table(ipa, block, tlb)
    }

    /// Take a level-3 table from the pool and hang it under the level-2 entry for `ipa`,
    /// which holds `old` (0, or the valid block the table replaces).
    fn new_page_table(&mut self, ipa: u64, old: u64, tlb: &mut dyn FnMut(u64)) -> Result<usize, MapError> {
        if self.pages_used == LEVEL3_TABLES {
            return Err(MapError::NoTables);
        }
        let index = self.pages_used;
        self.pages_used += 1;
        let table = (self.pages[index].0.as_ptr() as u64 & ADDR_MASK) | TABLE | VALID;
        let slot = self.blocks.level2_entry_mut(ipa, tlb)?;
        if old & VALID != 0 {
            break_before_make(slot, table, || tlb(ipa & !(L2_BLOCK - 1)));
        } else {
            *slot = table;
        }
        Ok(index)
    }

    fn page_table_index(&self, address: u64) -> Option<usize> {
        (0..self.pages_used).find(|&i| self.pages[i].0.as_ptr() as u64 == address)
    }
}

/// IPA bits the tables describe (VTCR T0SZ = 64 - 40 on v8, -8 on v7).
pub const IPA_BITS: u32 = 40;

/// VTCR_EL2 for these tables: T0SZ = 24 (40-bit IPA), SL0 = 1 (start at level 1),
/// inner/outer write-back walks, inner shareable, 4 KiB granule, PS = 40-bit, RES1 bit 31.
pub const VTCR_EL2: u64 = 0x8002_3558;
/// ARMv7 VTCR for the same tables: T0SZ = -8 with its sign bit S, SL0 = 1, same caching.
pub const VTCR_V7: u32 = 0x8000_3558;

/// Map guest RAM `[ram_guest, +size)` onto host RAM at `ram_host`, read/write/execute.
pub fn map_guest_ram(tables: &mut Stage2Tables, ram_guest: u64, ram_host: u64, size: u64) -> Result<(), MapError> {
    if ![ram_guest, ram_host, size].iter().all(|v| v.is_multiple_of(L2_BLOCK)) {
        return Err(MapError::Misaligned);
    }
    if ram_guest.checked_add(size).is_none_or(|end| end > 1 << IPA_BITS) {
        return Err(MapError::OutOfRange);
    }
    tables.blocks.map(ram_guest, ram_host, size, attrs::S2_RAM)
}

/// VTTBR value: root table address with the VMID in bits [55:48] (8-bit VMIDs).
pub fn vttbr(root: u64, vmid: u8) -> u64 {
    root | (u64::from(vmid) << 48)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    /// For changes made where no CPU can have cached anything.
    fn no_tlb(_: u64) {}

    #[test]
    fn guest_ram_at_1gib_maps_to_host_block_by_block() {
        let mut t = Box::new(Stage2Tables::new());
        map_guest_ram(&mut t, 0x4000_0000, 0x4800_0000, 64 * MIB).unwrap();
        for off in (0..64 * MIB).step_by(2 * MIB as usize) {
            assert_eq!(t.translate(0x4000_0000 + off + 8), Some((0x4800_0000 + off + 8, attrs::S2_RAM)));
        }
        // The guest-fault test's address, and just outside RAM on both sides.
        assert_eq!(t.translate(0x8000_0000), None);
        assert_eq!(t.translate(0x4000_0000 + 64 * MIB), None);
        assert_eq!(t.translate(0x3fff_ffff), None);
        assert_eq!(t.translate(0), None);
    }

    #[test]
    fn a_whole_gigabyte_is_one_level1_block() {
        let mut t = Box::new(Stage2Tables::new());
        map_guest_ram(&mut t, 0x4000_0000, 0x8000_0000, 1 << 30).unwrap();
        assert_eq!(t.tables_used(), 0);
        assert_eq!(t.translate(0x7fff_fff0), Some((0xbfff_fff0, attrs::S2_RAM)));
    }

    #[test]
    fn rejects_misaligned_and_beyond_40_bits() {
        let mut t = Box::new(Stage2Tables::new());
        assert_eq!(map_guest_ram(&mut t, 0x4000_1000, 0, 2 * MIB), Err(MapError::Misaligned));
        assert_eq!(map_guest_ram(&mut t, 0x4000_0000, 0x1000, 2 * MIB), Err(MapError::Misaligned));
        assert_eq!(map_guest_ram(&mut t, 0x4000_0000, 0, MIB), Err(MapError::Misaligned));
        assert_eq!(map_guest_ram(&mut t, (1 << 40) - 2 * MIB, 0, 4 * MIB), Err(MapError::OutOfRange));
    }

    #[test]
    fn vttbr_and_vtcr_fields() {
        assert_eq!(vttbr(0x4010_2000, 3), 0x0003_0000_4010_2000);
        assert_eq!(VTCR_EL2 & 0x3f, 64 - u64::from(IPA_BITS)); // T0SZ
        assert_eq!((VTCR_EL2 >> 6) & 3, 1); // SL0: start at level 1
        assert_eq!((VTCR_EL2 >> 14) & 3, 0); // TG0: 4 KiB
        assert_eq!((VTCR_EL2 >> 16) & 7, 2); // PS: 40 bits
        assert_eq!((VTCR_V7 >> 6) & 3, 1);
    }

    #[test]
    fn pages_map_outside_ram_and_can_be_replaced() {
        let mut t = Box::new(Stage2Tables::new());
        map_guest_ram(&mut t, 0x4000_0000, 0x4800_0000, 64 * MIB).unwrap();
        t.map_page(0x3800_0000, 0x4a00_0000, &mut no_tlb).unwrap();
        t.map_page(0x3800_1000, 0x4a00_5000, &mut no_tlb).unwrap();
        t.map_page(0x3900_0000, 0x4a00_7000, &mut no_tlb).unwrap();
        let page = attrs::S2_SHARED_PAGE;
        assert_eq!(t.translate(0x3800_0123), Some((0x4a00_0123, page)));
        assert_eq!(t.translate(0x3800_1ff8), Some((0x4a00_5ff8, page)));
        assert_eq!(t.translate(0x3900_0000), Some((0x4a00_7000, page)));
        assert_eq!(t.translate(0x3800_2000), None);
        // Replacing a page (the core moves shared_info) takes effect.
        t.map_page(0x3800_0000, 0x4a00_9000, &mut no_tlb).unwrap();
        assert_eq!(t.translate(0x3800_0004), Some((0x4a00_9004, page)));
        // RAM is untouched by pages outside it.
        assert_eq!(t.translate(0x4000_0000), Some((0x4800_0000, attrs::S2_RAM)));
    }

    #[test]
    fn a_page_inside_a_ram_block_splits_the_block_and_keeps_its_neighbours() {
        let mut t = Box::new(Stage2Tables::new());
        map_guest_ram(&mut t, 0x4000_0000, 0x4800_0000, 64 * MIB).unwrap();
        t.map_page(0x4020_3000, 0x4a00_0000, &mut no_tlb).unwrap();
        assert_eq!(t.translate(0x4020_3010), Some((0x4a00_0010, attrs::S2_SHARED_PAGE)));
        // Every other page of the split 2 MiB block still maps its old RAM, as RAM.
        for ipa in [0x4020_0000u64, 0x4020_2ff8, 0x4020_4000, 0x403f_f000] {
            assert_eq!(t.translate(ipa), Some((ipa - 0x4000_0000 + 0x4800_0000, attrs::S2_RAM)), "{ipa:#x}");
        }
        // Neighbouring blocks are not split.
        assert_eq!(t.translate(0x4040_0000), Some((0x4840_0000, attrs::S2_RAM)));
        assert_eq!(t.translate(0x401f_f000), Some((0x481f_f000, attrs::S2_RAM)));
        // A second page in the same block reuses the table.
        t.map_page(0x4020_5000, 0x4a00_1000, &mut no_tlb).unwrap();
        assert_eq!(t.translate(0x4020_5000), Some((0x4a00_1000, attrs::S2_SHARED_PAGE)));
        assert_eq!(t.translate(0x4020_3000), Some((0x4a00_0000, attrs::S2_SHARED_PAGE)));
    }

    /// The pieces `for_each_host_piece` hands out, or the IPA it refused.
    fn pieces(t: &Stage2Tables, ipa: u64, len: usize, ram: (u64, u64)) -> Result<Vec<(u64, usize, usize)>, u64> {
        let mut out = Vec::new();
        let in_ram = |pa: u64, n: usize| pa >= ram.0 && pa + n as u64 <= ram.0 + ram.1;
        t.for_each_host_piece(ipa, len, in_ram, |pa, off, n| out.push((pa, off, n))).map(|()| out)
    }

    #[test]
    fn guest_physical_copies_walk_ram_page_by_page() {
        let mut t = Box::new(Stage2Tables::new());
        let ram = (0x4800_0000, 64 * MIB);
        map_guest_ram(&mut t, 0x4000_0000, ram.0, ram.1).unwrap();
        assert_eq!(pieces(&t, 0x4000_0010, 8, ram), Ok(vec![(0x4800_0010, 0, 8)]));
        // Across a page end, and across a 2 MiB block end.
        assert_eq!(pieces(&t, 0x4000_0ffc, 8, ram), Ok(vec![(0x4800_0ffc, 0, 4), (0x4800_1000, 4, 4)]));
        assert_eq!(pieces(&t, 0x401f_fff8, 16, ram), Ok(vec![(0x481f_fff8, 0, 8), (0x4820_0000, 8, 8)]));
        assert_eq!(pieces(&t, 0x4000_0000, 0, ram), Ok(vec![]));
        // Outside RAM, running off its end, wrapping the address space.
        assert_eq!(pieces(&t, 0x3fff_fff8, 16, ram), Err(0x3fff_fff8));
        assert_eq!(pieces(&t, 0x43ff_fffc, 8, ram), Err(0x4400_0000));
        assert_eq!(pieces(&t, u64::MAX - 3, 8, ram), Err(u64::MAX - 3));
    }

    #[test]
    fn a_hypervisor_page_over_ram_hides_the_ram_beneath_from_copies() {
        let mut t = Box::new(Stage2Tables::new());
        let ram = (0x4800_0000, 64 * MIB);
        map_guest_ram(&mut t, 0x4000_0000, ram.0, ram.1).unwrap();
        // shared_info over guest page 0x4020_3000, from a frame outside the domain's RAM.
        t.map_page(0x4020_3000, 0x4c00_0000, &mut no_tlb).unwrap();
        assert_eq!(pieces(&t, 0x4020_3000, 8, ram), Err(0x4020_3000));
        assert_eq!(pieces(&t, 0x4020_3ff8, 8, ram), Err(0x4020_3ff8));
        // A copy that only straddles into it is refused whole: nothing of it is done.
        assert_eq!(pieces(&t, 0x4020_2ffc, 8, ram), Err(0x4020_3000));
        // Its neighbours in the split block are RAM as before.
        assert_eq!(pieces(&t, 0x4020_2ff8, 8, ram), Ok(vec![(0x4820_2ff8, 0, 8)]));
        assert_eq!(pieces(&t, 0x4020_4000, 8, ram), Ok(vec![(0x4820_4000, 0, 8)]));
        // A page outside RAM is refused too: the walk finds it, `allowed` does not.
        t.map_page(0x3800_0000, 0x4c00_1000, &mut no_tlb).unwrap();
        assert_eq!(pieces(&t, 0x3800_0000, 8, ram), Err(0x3800_0000));
        let anywhere = |_: u64, _: usize| true;
        assert_eq!(t.for_each_host_piece(0x3800_0008, 8, anywhere, |pa, _, _| assert_eq!(pa, 0x4c00_1008)), Ok(()));
    }

    #[test]
    fn granted_pages_map_read_only_or_writable_and_unmap_back_to_ram() {
        let mut t = Box::new(Stage2Tables::new());
        map_guest_ram(&mut t, 0x4000_0000, 0x4800_0000, 64 * MIB).unwrap();
        t.map_granted_page(0x4020_3000, 0x5000_0000, false, &mut no_tlb).unwrap();
        t.map_granted_page(0x3800_0000, 0x5000_1000, true, &mut no_tlb).unwrap();
        let (pa, ro) = t.translate(0x4020_3008).unwrap();
        assert_eq!((pa, ro >> 6 & 3, ro >> 54 & 1), (0x5000_0008, 0b01, 1), "read-only, never executed");
        let (pa, rw) = t.translate(0x3800_0000).unwrap();
        assert_eq!((pa, rw >> 6 & 3), (0x5000_1000, 0b11));
        // Over RAM the RAM page comes back; outside it nothing is left.
        t.end_grant(0x4020_3000, (0x4000_0000, 0x4800_0000, 64 * MIB), &mut no_tlb).unwrap();
        assert_eq!(t.translate(0x4020_3000), Some((0x4820_3000, attrs::S2_RAM)));
        t.end_grant(0x3800_0000, (0x4000_0000, 0x4800_0000, 64 * MIB), &mut no_tlb).unwrap();
        assert_eq!(t.translate(0x3800_0000), None);
        // A block is not a page to unmap, and neither is nothing.
        assert_eq!(t.unmap_page(0x4100_0000, &mut no_tlb), Err(MapError::Overlap));
        assert!(t.unmap_page(0x2000_0000, &mut no_tlb).is_err());
    }

    #[test]
    fn page_descriptor_bits_and_refusals() {
        let mut t = Box::new(Stage2Tables::new());
        t.map_page(0x3800_0000, 0x4a00_0000, &mut no_tlb).unwrap();
        let (_, attrs) = t.translate(0x3800_0000).unwrap();
        assert_eq!(attrs >> 54 & 1, 1, "never executed");
        assert_eq!(attrs & 0x7fc, attrs::S2_RAM & 0x7fc);
        assert_eq!(t.map_page(0x3800_0800, 0, &mut no_tlb), Err(MapError::Misaligned));
        assert_eq!(t.map_page(0x3800_0000, 0x10, &mut no_tlb), Err(MapError::Misaligned));
        assert_eq!(t.map_page(1 << 40, 0, &mut no_tlb), Err(MapError::OutOfRange));
        for i in 1..LEVEL3_TABLES as u64 {
            t.map_page(0x3800_0000 + i * 2 * MIB, 0, &mut no_tlb).unwrap();
        }
        assert_eq!(t.map_page(0x3800_0000 + LEVEL3_TABLES as u64 * 2 * MIB, 0, &mut no_tlb), Err(MapError::NoTables));
    }

    /// Records the IPAs the tables asked the TLBs to forget, in order.
    #[derive(Default)]
    struct Invalidations(Vec<u64>);

    impl Invalidations {
        fn tlb(&mut self) -> impl FnMut(u64) + '_ {
            |ipa| self.0.push(ipa)
        }
    }

    #[test]
    fn changing_a_valid_descriptor_invalidates_between_break_and_make() {
        let mut t = Box::new(Stage2Tables::new());
        map_guest_ram(&mut t, 0x4000_0000, 0x4800_0000, 64 * MIB).unwrap();
        let mut seen = Invalidations::default();
        // Filling nothing (outside RAM) needs no invalidation.
        t.map_page(0x3800_0000, 0x4a00_0000, &mut seen.tlb()).unwrap();
        assert_eq!(seen.0, Vec::<u64>::new());
        // Over RAM: the 2 MiB block goes (one invalidation, of its start), then the RAM page
        // the new one replaces (a second, of that page).
        t.map_granted_page(0x4020_3000, 0x5000_0000, true, &mut seen.tlb()).unwrap();
        assert_eq!(seen.0, [0x4020_0000, 0x4020_3000]);
        // Mapping the same thing again changes nothing; ending the grant does.
        seen.0.clear();
        t.map_granted_page(0x4020_3000, 0x5000_0000, true, &mut seen.tlb()).unwrap();
        assert_eq!(seen.0, Vec::<u64>::new());
        t.end_grant(0x4020_3000, (0x4000_0000, 0x4800_0000, 64 * MIB), &mut seen.tlb()).unwrap();
        t.end_grant(0x3800_0000, (0x4000_0000, 0x4800_0000, 64 * MIB), &mut seen.tlb()).unwrap();
        assert_eq!(seen.0, [0x4020_3000, 0x3800_0000]);
        assert_eq!(t.translate(0x4020_3000), Some((0x4820_3000, attrs::S2_RAM)));
    }

    #[test]
    fn a_page_inside_a_gigabyte_block_splits_it_twice() {
        let mut t = Box::new(Stage2Tables::new());
        map_guest_ram(&mut t, 0x4000_0000, 0x8000_0000, 1 << 30).unwrap();
        assert_eq!(t.tables_used(), 0, "one 1 GiB block");
        let mut seen = Invalidations::default();
        t.map_page(0x4020_3000, 0x4a00_0000, &mut seen.tlb()).unwrap();
        // The 1 GiB block, the 2 MiB block, the page.
        assert_eq!(seen.0, [0x4000_0000, 0x4020_0000, 0x4020_3000]);
        assert_eq!(t.translate(0x4020_3008), Some((0x4a00_0008, attrs::S2_SHARED_PAGE)));
        for ipa in [0x4000_0000u64, 0x4020_2000, 0x4020_4000, 0x4040_0000, 0x7fff_f000] {
            assert_eq!(t.translate(ipa), Some((ipa + 0x4000_0000, attrs::S2_RAM)), "{ipa:#x}");
        }
    }
}
