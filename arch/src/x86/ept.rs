//! Building second-level tables (guest-physical → host-physical, 4 levels): Intel EPT and
//! AMD nested page tables (NPT).
//!
//! Both are radix trees of 512 8-byte entries with the address in bits 51:12 and bit 7 marking
//! a 2 MiB leaf in a PD entry; they differ only in the permission/type bits, which a
//! [`Format`] names. Mappings use 2 MiB leaves wherever both addresses and the remaining length
//! allow it, 4 KiB leaves elsewhere. All leaves are read/write/execute, write-back.

/// Where EPT tables live: bare metal hands out identity-mapped pages, tests use vectors.
pub trait TableMemory {
    /// A fresh, zeroed 4 KiB table; returns its physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, value: u64);
}

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const EXEC: u64 = 1 << 2;
const RWX: u64 = READ | WRITE | EXEC;
/// Memory type write-back (6) in bits 5:3 of a leaf.
const MEMTYPE_WB: u64 = 6 << 3;
/// Bit 7 in a PDPTE/PDE: the entry maps a 1 GiB / 2 MiB page.
const LARGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The bits that make an entry present, and what intermediate entries and leaves carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// Any of these set: the entry is present.
    present: u64,
    /// Bits of an entry that points to the next table.
    table: u64,
    /// Bits of a leaf, besides the address and (for 2 MiB) [`LARGE`].
    leaf: u64,
    /// The leaf bit that allows writes (a read-only leaf lacks it).
    write: u64,
}

/// EPT: R/W/X in bits 2:0 (any of them = present), memory type WB in leaves.
pub const EPT: Format = Format { present: RWX, table: RWX, leaf: RWX | MEMTYPE_WB, write: WRITE };

/// NPT entries are ordinary long-mode entries: P, R/W, and U/S, which every level needs
/// because the CPU checks nested-table walks as user accesses. PAT/PCD/PWT = 0 is WB.
pub const NPT: Format =
    Format { present: NPT_P, table: NPT_P | NPT_RW | NPT_US, leaf: NPT_P | NPT_RW | NPT_US, write: NPT_RW };
const NPT_P: u64 = 1 << 0;
const NPT_RW: u64 = 1 << 1;
const NPT_US: u64 = 1 << 2;

const PAGE_4K: u64 = 1 << 12;
const PAGE_2M: u64 = 1 << 21;
/// Guest-physical addresses EPT with a 4-level walk can reach.
const GPA_LIMIT: u64 = 1 << 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// The table allocator ran dry.
    OutOfTables,
    /// An address or size is not 4 KiB aligned, or goes past 2^48.
    BadRange,
    /// Part of the range is already mapped.
    Overlap,
}

/// The EPT pointer for a root table: WB paging-structure memory type, 4-level walk.
pub const fn eptp(root: u64) -> u64 {
    (root & ADDR_MASK) | (3 << 3) | 6
}

/// Index into the table at `level` (3 = PML4 .. 0 = PT) for `gpa`.
const fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * level)) & 0x1ff) as usize
}

/// nCR3 for a root table: the PML4 address, cacheable (PWT = PCD = 0).
pub const fn ncr3(root: u64) -> u64 {
    root & ADDR_MASK
}

/// Map `size` bytes at guest-physical `gpa` to host-physical `hpa` under the EPT PML4 at `root`.
pub fn map<M: TableMemory>(mem: &mut M, root: u64, gpa: u64, hpa: u64, size: u64) -> Result<(), EptError> {
    map_with(EPT, mem, root, gpa, hpa, size)
}

/// [`map`] for tables of format `fmt`.
pub fn map_with<M: TableMemory>(
    fmt: Format,
    mem: &mut M,
    root: u64,
    gpa: u64,
    hpa: u64,
    size: u64,
) -> Result<(), EptError> {
    let aligned = |x: u64| x.is_multiple_of(PAGE_4K);
    if !aligned(gpa) || !aligned(hpa) || !aligned(size) {
        return Err(EptError::BadRange);
    }
    if gpa.checked_add(size).is_none_or(|end| end > GPA_LIMIT) {
        return Err(EptError::BadRange);
    }
    let mut done = 0;
    while done < size {
        let (g, h, left) = (gpa + done, hpa + done, size - done);
        let step =
            if g.is_multiple_of(PAGE_2M) && h.is_multiple_of(PAGE_2M) && left >= PAGE_2M { PAGE_2M } else { PAGE_4K };
        map_one(fmt, mem, root, g, h, step)?;
        done += step;
    }
    Ok(())
}

/// Install one leaf of `page` bytes (4 KiB or 2 MiB), creating intermediate tables.
fn map_one<M: TableMemory>(fmt: Format, mem: &mut M, root: u64, gpa: u64, hpa: u64, page: u64) -> Result<(), EptError> {
    let leaf_level = if page == PAGE_2M { 1 } else { 0 };
    let mut table = root;
    for level in (leaf_level + 1..=3).rev() {
        table = next_table(fmt, mem, table, index(gpa, level))?;
    }
    let i = index(gpa, leaf_level);
    if mem.read(table, i) & fmt.present != 0 {
        return Err(EptError::Overlap);
    }
    let large = if leaf_level == 1 { LARGE } else { 0 };
    mem.write(table, i, (hpa & ADDR_MASK) | fmt.leaf | large);
    Ok(())
}

/// The table an intermediate entry points to, allocating it if the entry is empty.
fn next_table<M: TableMemory>(fmt: Format, mem: &mut M, table: u64, i: usize) -> Result<u64, EptError> {
    let entry = mem.read(table, i);
    if entry & fmt.present == 0 {
        let new = mem.alloc_table().ok_or(EptError::OutOfTables)?;
        mem.write(table, i, (new & ADDR_MASK) | fmt.table);
        return Ok(new);
    }
    if entry & LARGE != 0 {
        return Err(EptError::Overlap);
    }
    Ok(entry & ADDR_MASK)
}

/// Map the 4 KiB page at `gpa` to `hpa`, replacing whatever maps it: a 2 MiB leaf covering
/// it is first split into 512 4 KiB leaves with the same targets, missing tables are created.
/// The caller flushes the TLB (the old translation may be cached).
pub fn remap_4k<M: TableMemory>(fmt: Format, mem: &mut M, root: u64, gpa: u64, hpa: u64) -> Result<(), EptError> {
    let pt = split_for_4k(fmt, mem, root, gpa, hpa)?;
    mem.write(pt, index(gpa, 0), (hpa & ADDR_MASK) | fmt.leaf);
    Ok(())
}

/// As [`remap_4k`], for a page another domain lends: read-only unless `writable`.
pub fn map_granted_4k<M: TableMemory>(
    fmt: Format,
    mem: &mut M,
    root: u64,
    gpa: u64,
    hpa: u64,
    writable: bool,
) -> Result<(), EptError> {
    let pt = split_for_4k(fmt, mem, root, gpa, hpa)?;
    let leaf = if writable { fmt.leaf } else { fmt.leaf & !fmt.write };
    mem.write(pt, index(gpa, 0), (hpa & ADDR_MASK) | leaf);
    Ok(())
}

/// Leave the 4 KiB page at `gpa` unmapped (an access exits to the hypervisor). Only a
/// 4 KiB leaf is removed; nothing mapped, or a 2 MiB leaf, is refused.
pub fn unmap_4k<M: TableMemory>(fmt: Format, mem: &mut M, root: u64, gpa: u64) -> Result<(), EptError> {
    if !gpa.is_multiple_of(PAGE_4K) || gpa >= GPA_LIMIT {
        return Err(EptError::BadRange);
    }
    let mut table = root;
    for level in (1..=3).rev() {
        let entry = mem.read(table, index(gpa, level));
        if entry & fmt.present == 0 || (level == 1 && entry & LARGE != 0) {
            return Err(EptError::BadRange);
        }
        table = entry & ADDR_MASK;
    }
    if mem.read(table, index(gpa, 0)) & fmt.present == 0 {
        return Err(EptError::BadRange);
    }
    mem.write(table, index(gpa, 0), 0);
    Ok(())
}

/// The page table holding `gpa`'s 4 KiB leaf, created (and a 2 MiB leaf over it split) as
/// needed.
fn split_for_4k<M: TableMemory>(fmt: Format, mem: &mut M, root: u64, gpa: u64, hpa: u64) -> Result<u64, EptError> {
    if !gpa.is_multiple_of(PAGE_4K) || !hpa.is_multiple_of(PAGE_4K) || gpa >= GPA_LIMIT {
        return Err(EptError::BadRange);
    }
    let mut table = root;
    for level in (2..=3).rev() {
        table = next_table(fmt, mem, table, index(gpa, level))?;
    }
    // `table` is the PD: split a 2 MiB leaf there.
    let i = index(gpa, 1);
    let pde = mem.read(table, i);
    if pde & fmt.present != 0 && pde & LARGE != 0 {
        let pt = mem.alloc_table().ok_or(EptError::OutOfTables)?;
        let base = pde & ADDR_MASK & !(PAGE_2M - 1);
        for j in 0..512 {
            mem.write(pt, j, (base + j as u64 * PAGE_4K) | fmt.leaf);
        }
        mem.write(table, i, (pt & ADDR_MASK) | fmt.table);
    }
    next_table(fmt, mem, table, i)
}

/// Translate `gpa` through EPT tables as the CPU would; `None` when unmapped.
pub fn translate<M: TableMemory>(mem: &M, root: u64, gpa: u64) -> Option<u64> {
    translate_with(EPT, mem, root, gpa)
}

/// [`translate`] for tables of format `fmt`.
pub fn translate_with<M: TableMemory>(fmt: Format, mem: &M, root: u64, gpa: u64) -> Option<u64> {
    if gpa >= GPA_LIMIT {
        return None;
    }
    let mut table = root;
    for level in (0..=3).rev() {
        let entry = mem.read(table, index(gpa, level));
        if entry & fmt.present == 0 {
            return None;
        }
        let leaf = level == 0 || entry & LARGE != 0;
        if leaf {
            let span = 1u64 << (12 + 9 * level);
            return Some((entry & ADDR_MASK & !(span - 1)) | (gpa & (span - 1)));
        }
        table = entry & ADDR_MASK;
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Tables as a vector of pages at fake physical addresses 0x1000, 0x2000, ...
    struct VecTables {
        pages: Vec<[u64; 512]>,
        limit: usize,
    }

    impl VecTables {
        fn new(limit: usize) -> (Self, u64) {
            let mut t = Self { pages: Vec::new(), limit };
            let root = t.alloc_table().unwrap();
            (t, root)
        }
        fn slot(table: u64) -> usize {
            (table / PAGE_4K) as usize - 1
        }
        /// Every leaf entry, as (level, entry).
        fn leaves(&self, root: u64) -> Vec<(u32, u64)> {
            let mut out = Vec::new();
            self.collect(root, 3, &mut out);
            out
        }
        fn collect(&self, table: u64, level: u32, out: &mut Vec<(u32, u64)>) {
            for &e in self.pages[Self::slot(table)].iter().filter(|e| **e & RWX != 0) {
                if level == 0 || e & LARGE != 0 {
                    out.push((level, e));
                } else {
                    self.collect(e & ADDR_MASK, level - 1, out);
                }
            }
        }
    }

    impl TableMemory for VecTables {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.pages.len() >= self.limit {
                return None;
            }
            self.pages.push([0; 512]);
            Some(self.pages.len() as u64 * PAGE_4K)
        }
        fn read(&self, table: u64, index: usize) -> u64 {
            self.pages[Self::slot(table)][index]
        }
        fn write(&mut self, table: u64, index: usize, value: u64) {
            self.pages[Self::slot(table)][index] = value;
        }
    }

    const MB: u64 = 1 << 20;

    #[test]
    fn aligned_ram_uses_only_2m_leaves_with_wb_rwx() {
        let (mut t, root) = VecTables::new(16);
        map(&mut t, root, 0, 0x0400_0000, 64 * MB).unwrap();
        let leaves = t.leaves(root);
        assert_eq!(leaves.len(), 32);
        assert!(leaves.iter().all(|&(level, e)| level == 1 && e & 0x7f == RWX | MEMTYPE_WB && e & LARGE != 0));
        // PML4 + PDPT + one PD.
        assert_eq!(t.pages.len(), 3);
    }

    #[test]
    fn translation_follows_the_mapping_and_stops_at_its_end() {
        let (mut t, root) = VecTables::new(16);
        map(&mut t, root, 0, 0x0400_0000, 64 * MB).unwrap();
        assert_eq!(translate(&t, root, 0), Some(0x0400_0000));
        assert_eq!(translate(&t, root, 0x12_3456), Some(0x0412_3456));
        assert_eq!(translate(&t, root, 64 * MB - 1), Some(0x0800_0000 - 1));
        assert_eq!(translate(&t, root, 64 * MB), None);
        assert_eq!(translate(&t, root, 0x8000_0000), None);
    }

    #[test]
    fn unaligned_edges_fall_back_to_4k_pages() {
        let (mut t, root) = VecTables::new(16);
        // Starts 4 KiB below a 2 MiB boundary, so: one 4K page, one 2M page, three 4K pages.
        map(&mut t, root, 0x1f_f000, 0x11f_f000, PAGE_4K + PAGE_2M + 3 * PAGE_4K).unwrap();
        let mut levels: Vec<u32> = t.leaves(root).iter().map(|l| l.0).collect();
        levels.sort();
        assert_eq!(levels, [0, 0, 0, 0, 1]);
        assert_eq!(translate(&t, root, 0x1f_f010), Some(0x11f_f010));
        assert_eq!(translate(&t, root, 0x40_2abc), Some(0x140_2abc));
        assert_eq!(translate(&t, root, 0x40_3000), None);
    }

    #[test]
    fn misaligned_host_address_never_gets_a_2m_leaf() {
        let (mut t, root) = VecTables::new(16);
        map(&mut t, root, 0, 0x1000, PAGE_2M).unwrap();
        assert!(t.leaves(root).iter().all(|l| l.0 == 0));
        assert_eq!(translate(&t, root, 0x1f_ffff), Some(0x20_0fff));
    }

    #[test]
    fn ranges_above_4g_get_their_own_pdpt_entries() {
        let (mut t, root) = VecTables::new(16);
        map(&mut t, root, 0x1_0000_0000 - PAGE_2M, 0x2000_0000, 2 * PAGE_2M).unwrap();
        assert_eq!(translate(&t, root, 0xffff_ffff), Some(0x2020_0000 - 1));
        assert_eq!(translate(&t, root, 0x1_0000_0000), Some(0x2020_0000));
    }

    #[test]
    fn errors_are_reported_not_panics() {
        let (mut t, root) = VecTables::new(2);
        assert_eq!(map(&mut t, root, 0x10, 0, PAGE_4K), Err(EptError::BadRange));
        assert_eq!(map(&mut t, root, GPA_LIMIT - PAGE_4K, 0, 2 * PAGE_4K), Err(EptError::BadRange));
        assert_eq!(map(&mut t, root, !0xfff, 0, 2 * PAGE_4K), Err(EptError::BadRange));
        // Two tables allowed: PML4 + PDPT, no room for a PD.
        assert_eq!(map(&mut t, root, 0, 0, PAGE_2M), Err(EptError::OutOfTables));
        let (mut t, root) = VecTables::new(16);
        map(&mut t, root, 0, 0, PAGE_2M).unwrap();
        assert_eq!(map(&mut t, root, 0x1000, 0, PAGE_4K), Err(EptError::Overlap));
        assert_eq!(map(&mut t, root, 0, 0, PAGE_2M), Err(EptError::Overlap));
    }

    /// Every entry (table pointers and leaves) of an NPT tree, as (level, entry).
    fn npt_entries(t: &VecTables, table: u64, level: u32, out: &mut Vec<(u32, u64)>) {
        for &e in t.pages[VecTables::slot(table)].iter().filter(|e| **e & NPT_P != 0) {
            out.push((level, e));
            if level > 0 && e & LARGE == 0 {
                npt_entries(t, e & ADDR_MASK, level - 1, out);
            }
        }
    }

    #[test]
    fn npt_uses_long_mode_entries_user_writable_at_every_level() {
        let (mut t, root) = VecTables::new(16);
        map_with(NPT, &mut t, root, 0, 0x0400_0000, 4 * MB + PAGE_4K).unwrap();
        let mut all = Vec::new();
        npt_entries(&t, root, 3, &mut all);
        // PML4E, PDPTE, PDE → PT; two 2 MiB leaves; one PDE → PT holding one 4 KiB leaf.
        assert_eq!(all.len(), 6);
        assert!(all.iter().all(|&(_, e)| e & 0xfff & !LARGE == NPT_P | NPT_RW | NPT_US));
        assert!(all.iter().all(|&(_, e)| e >> 52 == 0), "no NX, no software bits");
        let big: Vec<_> = all.iter().filter(|(l, e)| *l == 1 && e & LARGE != 0).collect();
        assert_eq!(big.len(), 2);
        assert_eq!(translate_with(NPT, &t, root, 0x20_1234), Some(0x0420_1234));
        assert_eq!(translate_with(NPT, &t, root, 4 * MB + 0x10), Some(0x0440_0010));
        assert_eq!(translate_with(NPT, &t, root, 4 * MB + PAGE_4K), None);
        assert_eq!(translate_with(NPT, &t, root, 0x8000_0000), None);
    }

    #[test]
    fn npt_and_ept_agree_on_structure_but_not_on_bits() {
        let (mut e, eroot) = VecTables::new(16);
        let (mut n, nroot) = VecTables::new(16);
        map(&mut e, eroot, 0x1f_f000, 0x11f_f000, PAGE_2M + 2 * PAGE_4K).unwrap();
        map_with(NPT, &mut n, nroot, 0x1f_f000, 0x11f_f000, PAGE_2M + 2 * PAGE_4K).unwrap();
        assert_eq!(e.pages.len(), n.pages.len());
        for gpa in [0x1f_f000, 0x20_0000, 0x3f_ffff, 0x40_0000, 0x40_1000] {
            assert_eq!(translate(&e, eroot, gpa), translate_with(NPT, &n, nroot, gpa));
        }
        // Leaves differ: EPT carries its memory type, NPT its U/S bit and none of bits 5:3.
        assert_ne!(e.leaves(eroot), n.leaves(nroot));
        assert_eq!(map_with(NPT, &mut n, nroot, 0x20_0000, 0, PAGE_4K), Err(EptError::Overlap));
        assert_eq!(ncr3(0x12_3fff), 0x12_3000);
    }

    #[test]
    fn remap_4k_splits_a_2m_leaf_and_keeps_its_neighbours() {
        for fmt in [EPT, NPT] {
            let (mut t, root) = VecTables::new(16);
            map_with(fmt, &mut t, root, 0, 0x0400_0000, 4 * MB).unwrap();
            remap_4k(fmt, &mut t, root, 0x1000, 0x9999_0000).unwrap();
            assert_eq!(translate_with(fmt, &t, root, 0x1234), Some(0x9999_0234));
            assert_eq!(translate_with(fmt, &t, root, 0x0), Some(0x0400_0000));
            assert_eq!(translate_with(fmt, &t, root, 0x2010), Some(0x0400_2010));
            assert_eq!(translate_with(fmt, &t, root, 0x1f_ffff), Some(0x041f_ffff));
            assert_eq!(translate_with(fmt, &t, root, 0x20_0000), Some(0x0420_0000));
            // Again in the now-split range, and outside any mapping (tables are created).
            remap_4k(fmt, &mut t, root, 0x3000, 0x8888_0000).unwrap();
            assert_eq!(translate_with(fmt, &t, root, 0x3008), Some(0x8888_0008));
            remap_4k(fmt, &mut t, root, 0xfeff_f000, 0x7777_0000).unwrap();
            assert_eq!(translate_with(fmt, &t, root, 0xfeff_f100), Some(0x7777_0100));
            assert_eq!(remap_4k(fmt, &mut t, root, 0x10, 0), Err(EptError::BadRange));
        }
    }

    #[test]
    fn granted_pages_map_read_only_or_writable_and_unmap() {
        for fmt in [EPT, NPT] {
            let (mut t, root) = VecTables::new(16);
            map_with(fmt, &mut t, root, 0, 0x0400_0000, 4 * MB).unwrap();
            map_granted_4k(fmt, &mut t, root, 0x5000, 0x9999_0000, false).unwrap();
            map_granted_4k(fmt, &mut t, root, 0x80_0000, 0x9999_1000, true).unwrap();
            assert_eq!(translate_with(fmt, &t, root, 0x5008), Some(0x9999_0008));
            let leaf = |gpa: u64| t.leaves(root).into_iter().find(|&(_, e)| e & ADDR_MASK == gpa).unwrap().1;
            assert_eq!(leaf(0x9999_0000) & fmt.write, 0, "read-only");
            assert_eq!(leaf(0x9999_1000) & fmt.write, fmt.write, "writable");
            // Unmapped: nothing translates there; a 2 MiB leaf or an empty slot is refused.
            unmap_4k(fmt, &mut t, root, 0x80_0000).unwrap();
            assert_eq!(translate_with(fmt, &t, root, 0x80_0000), None);
            assert_eq!(unmap_4k(fmt, &mut t, root, 0x80_0000), Err(EptError::BadRange));
            assert_eq!(unmap_4k(fmt, &mut t, root, 0x20_0000), Err(EptError::BadRange));
            // Over RAM the caller puts the RAM page back with remap_4k.
            remap_4k(fmt, &mut t, root, 0x5000, 0x0400_5000).unwrap();
            assert_eq!(translate_with(fmt, &t, root, 0x5008), Some(0x0400_5008));
        }
    }

    #[test]
    fn eptp_has_wb_and_a_four_level_walk() {
        assert_eq!(eptp(0x12_3000), 0x12_3000 | 0x18 | 6);
    }
}
