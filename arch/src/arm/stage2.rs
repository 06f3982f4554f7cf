//! Stage-2 translation for one domain: guest RAM only, 2 MiB (or 1 GiB) blocks.
//!
//! The same tables serve ARMv8 (VTTBR_EL2/VTCR_EL2) and ARMv7 LPAE (VTTBR/VTCR): a 40-bit
//! IPA space starting at level 1 with two concatenated level-1 tables. Anything the guest
//! touches outside its RAM is unmapped, so it faults to the hypervisor with the IPA.

use super::lpae::{BlockTables, L2_BLOCK, MapError, attrs};

/// Level-2 tables per domain: guest RAM may span this many gigabytes of IPA space.
pub const LEVEL2_TABLES: usize = 4;

/// One domain's stage-2 tables.
pub type Stage2Tables = BlockTables<LEVEL2_TABLES>;

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
    tables.map(ram_guest, ram_host, size, attrs::S2_RAM)
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

    const MIB: u64 = 1 << 20;

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
}
