//! The hypervisor's own address space: HYP stage-1, an LPAE identity map of the low 4 GiB.
//!
//! The tables come from [`crate::arm::lpae`] (shared with aarch64): RAM as the device tree
//! describes it is Normal write-back cacheable, the rest Device, in 1 GiB blocks except
//! where RAM starts or ends inside a gigabyte.

use super::dt::ADDRESS_LIMIT;
use super::sysreg;
use crate::arm::lpae::{BlockTables, attrs, identity_map};
use crate::boot::{MAX_REGIONS, Region};
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

/// HTCR: T0SZ = 0 (32-bit input, the walk starts at level 1 with four entries), walks
/// inner-shareable write-back write-allocate; bits 31 and 23 are reserved-one.
const HTCR: u32 = 1 << 31 | 1 << 23 | 0b11 << 12 | 0b01 << 10 | 0b01 << 8;

// HSCTLR bits.
const HSCTLR_M: u32 = 1 << 0;
const HSCTLR_A: u32 = 1 << 1;
const HSCTLR_C: u32 = 1 << 2;
const HSCTLR_I: u32 = 1 << 12;
const HSCTLR_WXN: u32 = 1 << 19;

/// Four level-2 tables: the worst case, where RAM starts or ends inside every gigabyte.
static TABLES: Mutex<BlockTables<4>> = Mutex::new(BlockTables::new());

/// What a secondary CPU loads to join the boot CPU's HYP address space, in this order:
/// HMAIR0, HMAIR1, HTCR, HTTBR (low, high word), HSCTLR. Written by the boot CPU and
/// cleaned to memory before any secondary starts; its entry reads it with the MMU off.
pub static SECONDARY_REGS: [AtomicU32; 6] = [const { AtomicU32::new(0) }; 6];

/// Build the identity map and turn on the HYP MMU and caches. Called once, at boot.
pub fn enable(ram: &[Region]) {
    let mut ranges = [(0u64, 0u64); MAX_REGIONS];
    for (slot, r) in ranges.iter_mut().zip(ram) {
        *slot = (r.start, r.size);
    }
    let mut tables = TABLES.lock();
    // Cannot fail: four level-2 tables cover every split the 4 GiB can need.
    if identity_map(&mut tables, &ranges[..ram.len().min(MAX_REGIONS)], ADDRESS_LIMIT).is_err() {
        panic!("HYP identity map does not fit its tables");
    }
    let root = tables.root_address();
    // The tables stay where they are for good; the lock only guarded building them.
    drop(tables);
    sysreg::write_hmair0(attrs::S1_MAIR as u32);
    sysreg::write_hmair1(0);
    sysreg::write_htcr(HTCR);
    sysreg::write_httbr(root);
    sysreg::dsb();
    sysreg::tlbiallh(0);
    sysreg::iciallu(0);
    sysreg::dsb();
    sysreg::isb();
    let hsctlr = (sysreg::hsctlr() & !(HSCTLR_A | HSCTLR_WXN)) | HSCTLR_M | HSCTLR_C | HSCTLR_I;
    sysreg::write_hsctlr(hsctlr);
    sysreg::isb();
    let regs = [attrs::S1_MAIR as u32, 0, HTCR, root as u32, (root >> 32) as u32, hsctlr];
    for (slot, value) in SECONDARY_REGS.iter().zip(regs) {
        slot.store(value, Ordering::Relaxed);
    }
    super::time::clean_invalidate_dcache((&raw const SECONDARY_REGS) as u64, 24);
}
