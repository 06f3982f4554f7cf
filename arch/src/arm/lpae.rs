//! Long-descriptor translation tables with a 4 KiB granule, block mappings only.
//!
//! ARMv8 (stage-1 at EL2 and stage-2) and ARMv7 LPAE (HYP stage-1 and stage-2) share this
//! format: a level-1 entry maps 1 GiB, a level-2 entry 2 MiB, and bits [1:0] say whether an
//! entry is invalid (`x0`), a block (`01`) or a next-level table (`11`). Only the attribute
//! bits of a block differ between the regimes; callers pass them in (see [`attrs`]).
//!
//! Nothing here touches a register, so the logic is unit-tested on the host. Tables refer
//! to each other by address: on the hypervisor physical memory is identity-mapped, so the
//! address of a table in memory is its physical address.

/// Bytes one level-1 entry maps.
pub const L1_BLOCK: u64 = 1 << 30;
/// Bytes one level-2 entry maps.
pub const L2_BLOCK: u64 = 1 << 21;
/// Entries in one 4 KiB table.
pub const ENTRIES: usize = 512;
/// Level-1 entries in the root: two concatenated tables, enough for a 40-bit space.
pub const ROOT_ENTRIES: usize = 2 * ENTRIES;

pub(crate) const VALID: u64 = 1 << 0;
/// With VALID: a next-level table (levels 0-2) rather than a block.
pub(crate) const TABLE: u64 = 1 << 1;
/// Output address bits [47:12] of a descriptor.
pub(crate) const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Block attribute bits (everything but the address and the two type bits) per regime.
pub mod attrs {
    /// Access flag: set, or the first access faults.
    const AF: u64 = 1 << 10;
    /// Shareability [9:8]: inner shareable.
    const SH_INNER: u64 = 0b11 << 8;
    /// Execute-never, stage-1 at EL2/HYP (bit 54; XN[1] at stage-2 too).
    const XN: u64 = 1 << 54;

    /// Stage-1 EL2/HYP, MAIR index 0 (normal write-back): read/write, executable.
    pub const S1_NORMAL: u64 = AF | SH_INNER;
    /// Stage-1 EL2/HYP, MAIR index 1 (device-nGnRE): read/write, never executed.
    pub const S1_DEVICE: u64 = AF | XN | (1 << 2);
    /// The MAIR value that gives [`S1_NORMAL`] and [`S1_DEVICE`] their meaning:
    /// index 0 = 0xff (normal, inner/outer write-back, read/write-allocate),
    /// index 1 = 0x04 (device-nGnRE).
    pub const S1_MAIR: u64 = 0x04_ff;

    /// Stage-2 guest RAM: MemAttr[5:2] = 0b1111 (normal, inner/outer write-back),
    /// S2AP[7:6] = 0b11 (read/write), inner shareable, executable.
    pub const S2_RAM: u64 = AF | SH_INNER | (0b11 << 6) | (0b1111 << 2);
    /// Stage-2 hypervisor page shared with a guest (shared_info, grant frames): as RAM,
    /// but never executed (XN[1], bit 54: neither EL1 nor EL0).
    pub const S2_SHARED_PAGE: u64 = S2_RAM | XN;
    /// Stage-2 page another domain lent read-only: S2AP = 0b01 (read), never executed.
    pub const S2_READONLY_PAGE: u64 = (S2_SHARED_PAGE & !(0b11 << 6)) | (0b01 << 6);
    /// Stage-2 device page passed through to a guest (the GICv2 virtual CPU interface):
    /// MemAttr = 0b0001 (device-nGnRE), read/write, never executed.
    pub const S2_DEVICE_PAGE: u64 = AF | XN | (0b11 << 6) | (0b0001 << 2);
}

/// Why a mapping request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or size are not 2 MiB aligned, or the size is zero.
    Misaligned,
    /// The range goes past what the root can describe (or the output past 48 bits).
    OutOfRange,
    /// Part of the range is already mapped.
    Overlap,
    /// No level-2 table left in the pool.
    NoTables,
}

/// A level-1 root plus a fixed pool of level-2 tables; maps in 1 GiB and 2 MiB blocks.
///
/// The 8 KiB alignment lets the root serve as two concatenated level-1 tables (a 40-bit
/// stage-2 with VTCR.SL0 = 1); a stage-1 root uses only the first 512 entries.
#[repr(C, align(8192))]
pub struct BlockTables<const N: usize> {
    root: [u64; ROOT_ENTRIES],
    level2: [[u64; ENTRIES]; N],
    used: usize,
}

impl<const N: usize> Default for BlockTables<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> BlockTables<N> {
    /// Empty tables: every entry invalid. Zeroed, so it can live in `.bss`.
    pub const fn new() -> Self {
        Self { root: [0; ROOT_ENTRIES], level2: [[0; ENTRIES]; N], used: 0 }
    }

    /// Address of the root table (its physical address under the identity map).
    pub fn root_address(&self) -> u64 {
        self.root.as_ptr() as u64
    }

    /// Bytes of address space the root can describe.
    pub const fn limit() -> u64 {
        ROOT_ENTRIES as u64 * L1_BLOCK
    }

    /// Map `[input, input + size)` to `[output, ...)` with block attributes `attrs`, using
    /// 1 GiB blocks where both sides are 1 GiB aligned and 2 MiB blocks elsewhere.
    pub fn map(&mut self, input: u64, output: u64, size: u64, attrs: u64) -> Result<(), MapError> {
        let aligned = |v: u64| v.is_multiple_of(L2_BLOCK);
        if size == 0 || !aligned(input) || !aligned(output) || !aligned(size) {
            return Err(MapError::Misaligned);
        }
        let in_end = input.checked_add(size).ok_or(MapError::OutOfRange)?;
        let out_end = output.checked_add(size).ok_or(MapError::OutOfRange)?;
        if in_end > Self::limit() || out_end > ADDR_MASK + 0x1000 {
            return Err(MapError::OutOfRange);
        }
        let mut done = 0;
        while done < size {
            let (i, o, left) = (input + done, output + done, size - done);
            let step = if i % L1_BLOCK == 0 && o % L1_BLOCK == 0 && left >= L1_BLOCK {
                self.map_l1_block(i, o, attrs)?;
                L1_BLOCK
            } else {
                self.map_l2_block(i, o, attrs)?;
                L2_BLOCK
            };
            done += step;
        }
        Ok(())
    }

    fn map_l1_block(&mut self, input: u64, output: u64, attrs: u64) -> Result<(), MapError> {
        let slot = &mut self.root[(input / L1_BLOCK) as usize];
        if *slot & VALID != 0 {
            return Err(MapError::Overlap);
        }
        *slot = block_descriptor(output, attrs);
        Ok(())
    }

    fn map_l2_block(&mut self, input: u64, output: u64, attrs: u64) -> Result<(), MapError> {
        let table = self.level2_for(input)?;
        let slot = &mut self.level2[table][((input % L1_BLOCK) / L2_BLOCK) as usize];
        if *slot & VALID != 0 {
            return Err(MapError::Overlap);
        }
        *slot = block_descriptor(output, attrs);
        Ok(())
    }

    /// The level-2 entry covering `input`, creating its level-2 table if needed, for callers
    /// that hang level-3 tables of their own there. A 1 GiB block covering `input` is first
    /// split into a table of the same 512 2 MiB blocks, break-before-make: the root entry is
    /// made invalid and `invalidate(input)` drops what the TLBs hold of it before the table
    /// goes in (tables a CPU may be walking must never show two translations of an address).
    pub fn level2_entry_mut(&mut self, input: u64, invalidate: &mut dyn FnMut(u64)) -> Result<&mut u64, MapError> {
        if input >= Self::limit() {
            return Err(MapError::OutOfRange);
        }
        let r = (input / L1_BLOCK) as usize;
        if self.root[r] & (VALID | TABLE) == VALID {
            self.split_l1_block(r, invalidate)?;
        }
        let table = self.level2_for(input)?;
        Ok(&mut self.level2[table][((input % L1_BLOCK) / L2_BLOCK) as usize])
    }

    /// Replace the 1 GiB block of root entry `r` by a level-2 table of 2 MiB blocks with the
    /// same output and attributes, break-before-make.
    fn split_l1_block(&mut self, r: usize, invalidate: &mut dyn FnMut(u64)) -> Result<(), MapError> {
        if self.used == N {
            return Err(MapError::NoTables);
        }
        let block = self.root[r];
        let base = block & ADDR_MASK & !(L1_BLOCK - 1);
        let idx = self.used;
        self.used += 1;
        for (i, entry) in self.level2[idx].iter_mut().enumerate() {
            *entry = block_descriptor(base + i as u64 * L2_BLOCK, block & !ADDR_MASK);
        }
        let table = (self.level2[idx].as_ptr() as u64 & ADDR_MASK) | TABLE | VALID;
        break_before_make(&mut self.root[r], table, || invalidate(r as u64 * L1_BLOCK));
        Ok(())
    }

    /// The level-2 entry covering `input`, if there is a level-2 table for it.
    pub fn level2_entry(&self, input: u64) -> Option<u64> {
        let entry = *self.root.get((input / L1_BLOCK) as usize)?;
        if entry & (VALID | TABLE) != VALID | TABLE {
            return None;
        }
        let table = &self.level2[self.table_index(entry & ADDR_MASK)?];
        Some(table[((input % L1_BLOCK) / L2_BLOCK) as usize])
    }

    /// Index of the level-2 table under the root entry for `input`, created if needed.
    fn level2_for(&mut self, input: u64) -> Result<usize, MapError> {
        let r = (input / L1_BLOCK) as usize;
        let entry = self.root[r];
        if entry & VALID != 0 {
            if entry & TABLE == 0 {
                return Err(MapError::Overlap); // a 1 GiB block is already there
            }
            return self.table_index(entry & ADDR_MASK).ok_or(MapError::Overlap);
        }
        if self.used == N {
            return Err(MapError::NoTables);
        }
        let idx = self.used;
        self.used += 1;
        self.root[r] = (self.level2[idx].as_ptr() as u64 & ADDR_MASK) | TABLE | VALID;
        Ok(idx)
    }

    fn table_index(&self, address: u64) -> Option<usize> {
        (0..self.used).find(|&i| self.level2[i].as_ptr() as u64 & ADDR_MASK == address)
    }

    /// Walk the tables like the MMU would: the output address and block attributes for
    /// `input`, or `None` when it is not mapped.
    pub fn translate(&self, input: u64) -> Option<(u64, u64)> {
        let entry = *self.root.get((input / L1_BLOCK) as usize)?;
        let (entry, block) = match entry & (VALID | TABLE) {
            v if v == VALID => (entry, L1_BLOCK),
            v if v == VALID | TABLE => {
                let table = &self.level2[self.table_index(entry & ADDR_MASK)?];
                (table[((input % L1_BLOCK) / L2_BLOCK) as usize], L2_BLOCK)
            }
            _ => return None,
        };
        if entry & (VALID | TABLE) != VALID {
            return None;
        }
        let base = entry & ADDR_MASK & !(block - 1);
        Some((base + input % block, entry & !ADDR_MASK & !(VALID | TABLE)))
    }

    /// Level-2 tables taken from the pool so far.
    pub fn tables_used(&self) -> usize {
        self.used
    }
}

/// Replace the valid descriptor `slot` by `new` the way the architecture asks when other
/// CPUs may be walking the tables: make it invalid, let `invalidate` drop every TLB entry it
/// gave, then write `new`. Volatile writes: the invalid value must reach memory although
/// nothing in this program reads it back (the table walkers do).
pub(crate) fn break_before_make(slot: &mut u64, new: u64, invalidate: impl FnOnce()) {
    let slot: *mut u64 = slot;
    // SAFETY: `slot` comes from a live `&mut u64`, so it is valid and aligned for writes.
    unsafe { slot.write_volatile(0) };
    invalidate();
    // SAFETY: as above.
    unsafe { slot.write_volatile(new) };
}

fn block_descriptor(output: u64, attrs: u64) -> u64 {
    (output & ADDR_MASK) | (attrs & !ADDR_MASK & !(VALID | TABLE)) | VALID
}

/// Identity-map `[0, limit)` for the hypervisor's own stage-1: RAM as [`attrs::S1_NORMAL`],
/// everything else as [`attrs::S1_DEVICE`] (so MMIO anywhere is reachable). Uses 1 GiB blocks
/// except in the gigabytes where RAM starts or ends, which get 2 MiB blocks; a 2 MiB block
/// that RAM only partly covers is RAM (DT memory ranges are not expected to share a 2 MiB
/// block with MMIO).
pub fn identity_map<const N: usize>(
    tables: &mut BlockTables<N>,
    ram: &[(u64, u64)],
    limit: u64,
) -> Result<(), MapError> {
    let overlaps = |start: u64, len: u64| ram.iter().any(|&(s, n)| s < start + len && start < s + n);
    let covers = |start: u64, len: u64| ram.iter().any(|&(s, n)| s <= start && start + len <= s + n);
    let attrs = |is_ram: bool| {
        if is_ram { attrs::S1_NORMAL } else { attrs::S1_DEVICE }
    };
    let mut gib = 0;
    while gib < limit {
        if covers(gib, L1_BLOCK) || !overlaps(gib, L1_BLOCK) {
            tables.map(gib, gib, L1_BLOCK, attrs(overlaps(gib, L1_BLOCK)))?;
        } else {
            for block in (gib..gib + L1_BLOCK).step_by(L2_BLOCK as usize) {
                tables.map(block, block, L2_BLOCK, attrs(overlaps(block, L2_BLOCK)))?;
            }
        }
        gib += L1_BLOCK;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;

    const GIB: u64 = L1_BLOCK;
    const MIB: u64 = 1 << 20;

    fn tables<const N: usize>() -> Box<BlockTables<N>> {
        Box::new(BlockTables::new())
    }

    #[test]
    fn root_is_aligned_for_two_concatenated_tables() {
        let t = tables::<1>();
        assert_eq!(t.root_address() % 8192, 0);
    }

    #[test]
    fn two_mib_blocks_go_through_one_level2_table() {
        let mut t = tables::<2>();
        t.map(GIB, 0x8000_0000, 64 * MIB, attrs::S2_RAM).unwrap();
        assert_eq!(t.tables_used(), 1);
        assert_eq!(t.translate(GIB), Some((0x8000_0000, attrs::S2_RAM)));
        assert_eq!(t.translate(GIB + 0x12_3456), Some((0x8012_3456, attrs::S2_RAM)));
        assert_eq!(t.translate(GIB + 64 * MIB - 1), Some((0x8000_0000 + 64 * MIB - 1, attrs::S2_RAM)));
        assert_eq!(t.translate(GIB + 64 * MIB), None);
        assert_eq!(t.translate(GIB - 1), None);
        assert_eq!(t.translate(2 * GIB), None);
    }

    #[test]
    fn root_entry_is_a_table_descriptor_to_the_level2_table() {
        let mut t = tables::<1>();
        t.map(GIB, 0, 2 * MIB, attrs::S2_RAM).unwrap();
        let entry = t.root[1];
        assert_eq!(entry & 0b11, 0b11);
        assert_eq!(entry & ADDR_MASK, t.level2[0].as_ptr() as u64);
        let block = t.level2[0][0];
        assert_eq!(block & 0b11, 0b01);
        assert_eq!(block, attrs::S2_RAM | 0b01);
    }

    #[test]
    fn gigabyte_aligned_ranges_use_level1_blocks() {
        let mut t = tables::<1>();
        t.map(GIB, GIB, GIB + 4 * MIB, attrs::S1_NORMAL).unwrap();
        assert_eq!(t.root[1], GIB | attrs::S1_NORMAL | 0b01);
        assert_eq!(t.tables_used(), 1); // the 4 MiB tail
        assert_eq!(t.translate(2 * GIB + 3 * MIB), Some((2 * GIB + 3 * MIB, attrs::S1_NORMAL)));
    }

    #[test]
    fn stage2_ram_descriptor_bits() {
        // AF, inner shareable, S2AP read/write, MemAttr normal write-back; XN clear.
        assert_eq!(attrs::S2_RAM, 0x7fc);
        assert_eq!(attrs::S1_DEVICE >> 54 & 1, 1);
        assert_eq!(attrs::S1_NORMAL >> 54 & 1, 0);
    }

    #[test]
    fn refuses_misaligned_overlapping_and_too_large() {
        let mut t = tables::<1>();
        assert_eq!(t.map(GIB + 4096, 0, 2 * MIB, 0), Err(MapError::Misaligned));
        assert_eq!(t.map(GIB, 0, 0, 0), Err(MapError::Misaligned));
        assert_eq!(t.map(1024 * GIB, 0, 2 * MIB, 0), Err(MapError::OutOfRange));
        t.map(GIB, 0, 2 * MIB, 0).unwrap();
        assert_eq!(t.map(GIB, 0, 2 * MIB, 0), Err(MapError::Overlap));
        assert_eq!(t.map(4 * GIB, 0, 2 * MIB, 0), Err(MapError::NoTables));
        t.map(8 * GIB, 0, GIB, 0).unwrap();
        assert_eq!(t.map(8 * GIB, 0, 2 * MIB, 0), Err(MapError::Overlap));
    }

    #[test]
    fn identity_map_splits_only_partial_gigabytes() {
        // QEMU virt with 1.5 GiB: RAM 0x4000_0000..0xa000_0000.
        let mut t = tables::<4>();
        identity_map(&mut t, &[(GIB, 3 * GIB / 2)], 512 * GIB).unwrap();
        assert_eq!(t.tables_used(), 1);
        assert_eq!(t.translate(0x0900_0000), Some((0x0900_0000, attrs::S1_DEVICE)));
        assert_eq!(t.translate(0x4008_0000), Some((0x4008_0000, attrs::S1_NORMAL)));
        assert_eq!(t.translate(0x9fff_ffff), Some((0x9fff_ffff, attrs::S1_NORMAL)));
        assert_eq!(t.translate(0xa000_0000), Some((0xa000_0000, attrs::S1_DEVICE)));
        assert_eq!(t.translate(511 * GIB), Some((511 * GIB, attrs::S1_DEVICE)));
        assert_eq!(t.translate(512 * GIB), None);
    }
}
