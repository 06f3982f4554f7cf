//! Walking a guest's own page tables: guest-virtual → guest-physical.
//!
//! Hypercall arguments are guest-virtual pointers. The walk reads table entries through a
//! closure (guest RAM, bounds-checked by the caller) and supports the three x86 paging
//! modes a PVH guest can be in: none, 32-bit (with 4 MiB pages), PAE and 4-level.

/// Which translation the guest's control registers select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG = 0: virtual = physical.
    Off,
    /// 32-bit paging, 2 levels; `pse` allows 4 MiB pages.
    Bits32 { pse: bool },
    /// PAE: 4 PDPTEs, then 2 levels with 2 MiB pages.
    Pae,
    /// IA-32e 4-level paging.
    Level4,
    /// 5-level paging: not supported by this walker.
    Level5,
}

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

const PRESENT: u64 = 1 << 0;
const LARGE: u64 = 1 << 7;
/// Physical-address bits of an entry (NX and software bits cleared).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

impl PagingMode {
    pub fn from_registers(cr0: u64, cr4: u64, efer: u64) -> Self {
        if cr0 & CR0_PG == 0 {
            PagingMode::Off
        } else if efer & EFER_LMA != 0 {
            if cr4 & CR4_LA57 != 0 { PagingMode::Level5 } else { PagingMode::Level4 }
        } else if cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32 { pse: cr4 & CR4_PSE != 0 }
        }
    }
}

/// Reads a page-table entry of `width` bytes (4 or 8) at a guest-physical address.
pub trait EntryReader {
    fn read(&mut self, gpa: u64, width: usize) -> Option<u64>;
}

impl<F: FnMut(u64, usize) -> Option<u64>> EntryReader for F {
    fn read(&mut self, gpa: u64, width: usize) -> Option<u64> {
        self(gpa, width)
    }
}

/// Translate `gva`; `None` if a table is not present or cannot be read, or if `gva` is no
/// address in this mode: above 4 GiB for a 32-bit guest, non-canonical in 4-level paging.
/// (Dropping the high bits instead aliased a hypercall pointer of 2^52 onto address 0.)
pub fn translate(mode: PagingMode, cr3: u64, gva: u64, mem: &mut impl EntryReader) -> Option<u64> {
    let narrow = u32::try_from(gva).ok().map(u64::from);
    match mode {
        PagingMode::Off => narrow,
        PagingMode::Bits32 { pse } => walk32(cr3, narrow?, pse, mem),
        PagingMode::Pae => walk_pae(cr3, narrow?, mem),
        PagingMode::Level4 if !is_canonical_48(gva) => None,
        PagingMode::Level4 => walk_long(cr3 & ADDR_MASK, gva, 3, mem),
        PagingMode::Level5 => None,
    }
}

/// Bits 63:47 all equal, as 4-level paging requires of a linear address.
fn is_canonical_48(gva: u64) -> bool {
    ((gva as i64) << 16 >> 16) as u64 == gva
}

fn walk32(cr3: u64, gva: u64, pse: bool, mem: &mut impl EntryReader) -> Option<u64> {
    let pde = mem.read((cr3 & 0xffff_f000) + ((gva >> 22) & 0x3ff) * 4, 4)?;
    if pde & PRESENT == 0 {
        return None;
    }
    if pse && pde & LARGE != 0 {
        // 4 MiB page; PSE-36 puts physical bits 39:32 in PDE bits 20:13.
        let high = ((pde >> 13) & 0xff) << 32;
        return Some(high | (pde & 0xffc0_0000) | (gva & 0x3f_ffff));
    }
    let pte = mem.read((pde & 0xffff_f000) + ((gva >> 12) & 0x3ff) * 4, 4)?;
    if pte & PRESENT == 0 {
        return None;
    }
    Some((pte & 0xffff_f000) | (gva & 0xfff))
}

fn walk_pae(cr3: u64, gva: u64, mem: &mut impl EntryReader) -> Option<u64> {
    let pdpte = mem.read((cr3 & 0xffff_ffe0) + ((gva >> 30) & 3) * 8, 8)?;
    if pdpte & PRESENT == 0 {
        return None;
    }
    walk_long(pdpte & ADDR_MASK, gva, 1, mem)
}

/// The 64-bit-entry levels shared by PAE (from the PD, `top` = 1) and 4-level (`top` = 3).
fn walk_long(mut table: u64, gva: u64, top: u32, mem: &mut impl EntryReader) -> Option<u64> {
    for level in (0..=top).rev() {
        let shift = 12 + 9 * level;
        let entry = mem.read(table + ((gva >> shift) & 0x1ff) * 8, 8)?;
        if entry & PRESENT == 0 {
            return None;
        }
        // 1 GiB (level 2) and 2 MiB (level 1) pages; at level 0 bit 7 is PAT, not size.
        if level == 0 || (level <= 2 && entry & LARGE != 0) {
            let span = 1u64 << shift;
            return Some((entry & ADDR_MASK & !(span - 1)) | (gva & (span - 1)));
        }
        table = entry & ADDR_MASK;
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A little guest-physical memory that tables are written into.
    struct Mem(Vec<u8>);

    impl Mem {
        fn put32(&mut self, at: u64, v: u32) {
            self.0[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn put64(&mut self, at: u64, v: u64) {
            self.0[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn reader(&self) -> impl FnMut(u64, usize) -> Option<u64> + '_ {
            |gpa, width| {
                let b = self.0.get(gpa as usize..gpa as usize + width)?;
                let mut v = [0u8; 8];
                v[..width].copy_from_slice(b);
                Some(u64::from_le_bytes(v))
            }
        }
    }

    #[test]
    fn mode_follows_cr0_cr4_efer() {
        assert_eq!(PagingMode::from_registers(0x11, 0, 0), PagingMode::Off);
        assert_eq!(PagingMode::from_registers(CR0_PG | 1, 0, 0), PagingMode::Bits32 { pse: false });
        assert_eq!(PagingMode::from_registers(CR0_PG | 1, CR4_PSE, 0), PagingMode::Bits32 { pse: true });
        assert_eq!(PagingMode::from_registers(CR0_PG | 1, CR4_PAE, 0), PagingMode::Pae);
        assert_eq!(PagingMode::from_registers(CR0_PG | 1, CR4_PAE, EFER_LMA | 0x100), PagingMode::Level4);
        assert_eq!(PagingMode::from_registers(CR0_PG | 1, CR4_PAE | CR4_LA57, EFER_LMA), PagingMode::Level5);
    }

    #[test]
    fn paging_off_is_identity() {
        let m = Mem(vec![]);
        assert_eq!(translate(PagingMode::Off, 0, 0x1234_5678, &mut m.reader()), Some(0x1234_5678));
    }

    #[test]
    fn four_level_with_4k_2m_and_1g_pages() {
        let mut m = Mem(vec![0; 0x10000]);
        // PML4 at 0x1000 → PDPT at 0x2000 → PD at 0x3000 → PT at 0x4000.
        m.put64(0x1000, 0x2000 | 3);
        m.put64(0x2000, 0x3000 | 3);
        m.put64(0x2000 + 8, 0x4000_0000 | LARGE | 3); // 1 GiB page at 1 GiB
        m.put64(0x3000, 0x4000 | 3);
        m.put64(0x3000 + 8, 0x60_0000 | LARGE | 3); // 2 MiB page for 0x20_0000
        m.put64(0x4000 + 5 * 8, 0xabc000 | 3 | (1 << 63)); // NX bit is not an address bit
        let mut r = m.reader();
        assert_eq!(translate(PagingMode::Level4, 0x1000, 0x5123, &mut r), Some(0xabc123));
        assert_eq!(translate(PagingMode::Level4, 0x1000, 0x20_1234, &mut r), Some(0x60_1234));
        assert_eq!(translate(PagingMode::Level4, 0x1000, 0x4123_4567, &mut r), Some(0x4123_4567));
        assert_eq!(translate(PagingMode::Level4, 0x1000, 0x6000, &mut r), None);
        assert_eq!(translate(PagingMode::Level4, 0x1000, 0x8000_0000, &mut r), None);
        assert_eq!(translate(PagingMode::Level4, 0x1000, 1 << 39, &mut r), None);
    }

    #[test]
    fn four_level_bit7_in_a_pte_is_pat_not_a_large_page() {
        let mut m = Mem(vec![0; 0x10000]);
        m.put64(0x1000, 0x2000 | 3);
        m.put64(0x2000, 0x3000 | 3);
        m.put64(0x3000, 0x4000 | 3);
        m.put64(0x4000, 0x9000 | LARGE | 3);
        assert_eq!(translate(PagingMode::Level4, 0x1000, 0x10, &mut m.reader()), Some(0x9010));
    }

    #[test]
    fn pae_uses_the_pdpte_selected_by_bits_31_30() {
        let mut m = Mem(vec![0; 0x10000]);
        // CR3 points at 32-byte aligned PDPTEs at 0x1020.
        m.put64(0x1020 + 2 * 8, 0x3000 | 1);
        m.put64(0x3000, 0x4000 | 3);
        m.put64(0x3000 + 8, 0x20_0000 | LARGE | 3);
        m.put64(0x4000 + 8, 0x7000 | 3);
        let mut r = m.reader();
        assert_eq!(translate(PagingMode::Pae, 0x1020, 0x8000_1abc, &mut r), Some(0x7abc));
        assert_eq!(translate(PagingMode::Pae, 0x1020, 0x8020_0010, &mut r), Some(0x20_0010));
        assert_eq!(translate(PagingMode::Pae, 0x1020, 0x1abc, &mut r), None);
    }

    #[test]
    fn bits32_with_and_without_pse() {
        let mut m = Mem(vec![0; 0x10000]);
        m.put32(0x1000 + 4, 0x2000 | 3); // PDE 1 → PT at 0x2000
        m.put32(0x2000 + 3 * 4, 0x0abc_d000 | 3);
        m.put32(0x1000 + 8, 0x0c00_0000 | LARGE as u32 | 3); // PDE 2: 4 MiB page
        let mut r = m.reader();
        let pse = PagingMode::Bits32 { pse: true };
        assert_eq!(translate(pse, 0x1000, 0x0040_3123, &mut r), Some(0x0abc_d123));
        assert_eq!(translate(pse, 0x1000, 0x0081_2345, &mut r), Some(0x0c01_2345));
        // Without CR4.PSE bit 7 is ignored and the PDE points at a page table.
        let nopse = PagingMode::Bits32 { pse: false };
        assert_eq!(translate(nopse, 0x1000, 0x0081_2345, &mut r), None);
        assert_eq!(translate(pse, 0x1000, 0x0000_0123, &mut r), None);
    }

    #[test]
    fn addresses_outside_the_mode_never_alias_low_memory() {
        // Every table maps address 0, so only the address checks can refuse.
        let mut m = Mem(vec![0; 0x10000]);
        m.put64(0x1000, 0x2000 | 3);
        m.put64(0x1000 + 511 * 8, 0x2000 | 3);
        m.put64(0x2000, 0x3000 | 3);
        m.put64(0x2000 + 511 * 8, 0x3000 | 3);
        m.put64(0x3000, LARGE | 3);
        m.put64(0x3000 + 511 * 8, LARGE | 3);
        m.put32(0x5000, 0x83);
        let mut r = m.reader();
        assert_eq!(translate(PagingMode::Level4, 0x1000, 0x10, &mut r), Some(0x10));
        assert_eq!(translate(PagingMode::Level4, 0x1000, 1 << 52, &mut r), None, "the fuzzer's 2^52");
        assert_eq!(translate(PagingMode::Level4, 0x1000, 1 << 47, &mut r), None);
        assert_eq!(translate(PagingMode::Level4, 0x1000, 0x8000_0000_0000_0010, &mut r), None);
        assert!(translate(PagingMode::Level4, 0x1000, 0xffff_ffff_ffe0_0010, &mut r).is_some(), "canonical high half");
        assert_eq!(translate(PagingMode::Off, 0, 0x1_0000_0010, &mut r), None);
        assert_eq!(translate(PagingMode::Bits32 { pse: true }, 0x5000, 0x1_0000_0010, &mut r), None);
        assert_eq!(translate(PagingMode::Bits32 { pse: true }, 0x5000, 0x10, &mut r), Some(0x10));
    }

    #[test]
    fn unreadable_tables_fail_cleanly() {
        let m = Mem(vec![0; 0x100]);
        assert_eq!(translate(PagingMode::Level4, 0x10_0000, 0, &mut m.reader()), None);
        assert_eq!(translate(PagingMode::Level5, 0, 0, &mut m.reader()), None);
    }
}
