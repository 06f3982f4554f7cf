//! The hypervisor's own address space: an EL2 stage-1 identity map with caches on, and the
//! cache maintenance that sharing memory with non-cacheable observers needs.
//!
//! RAM (from the DT) is normal write-back memory, everything else below 512 GiB is
//! device-nGnRE, so any MMIO the DT names is reachable at its physical address.

use super::BootCell;
use crate::arm::lpae::{self, BlockTables, MapError, attrs};
use crate::boot::Region;
use aarch64_cpu::asm::barrier::{self, isb};
use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, MAIR_EL2, Readable, SCTLR_EL2, TCR_EL2, TTBR0_EL2, Writeable};

/// Virtual address bits at EL2: 39, so translation starts at level 1 (TCR_EL2.T0SZ = 25).
const VA_BITS: u64 = 39;
/// Level-2 tables for the gigabytes where RAM starts or ends.
const LEVEL2_TABLES: usize = 8;

static TABLES: BootCell<BlockTables<LEVEL2_TABLES>> = BootCell::new(BlockTables::new());

/// The register values that turn the MMU on; secondary CPUs load them (MMU off, so they
/// read memory directly) in `secondary_entry` before they touch their stacks.
#[repr(C)]
pub struct MmuRegs {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub sctlr: u64,
}

pub static MMU_REGS: BootCell<MmuRegs> = BootCell::new(MmuRegs { mair: 0, tcr: 0, ttbr0: 0, sctlr: 0 });

/// SCTLR_EL2 RES1 bits (non-VHE): 4, 5, 11, 16, 18, 22, 23, 28, 29.
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
/// M (MMU), C (data cache), SA (stack alignment check), I (instruction cache).
const SCTLR_EL2_ON: u64 = SCTLR_EL2_RES1 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12);

/// Build the identity map over `ram` and turn on the MMU and caches of the boot CPU.
/// Must run once, on the boot CPU, with the MMU off and no other CPU started.
pub fn enable_boot_cpu(ram: &[Region], image: Region) -> Result<(), MapError> {
    let mut ranges = [(0u64, 0u64); crate::boot::MAX_REGIONS];
    for (slot, r) in ranges.iter_mut().zip(ram) {
        *slot = (r.start, r.size);
    }
    // SAFETY: single-threaded boot, MMU off: nothing else refers to the tables yet.
    let tables = unsafe { TABLES.get_mut() };
    lpae::identity_map(tables, &ranges[..ram.len()], 1 << VA_BITS)?;
    let regs = MmuRegs { mair: attrs::S1_MAIR, tcr: tcr(), ttbr0: tables.root_address(), sctlr: SCTLR_EL2_ON };
    // SAFETY: as above; secondaries read this only after the boot CPU starts them.
    unsafe { *MMU_REGS.get_mut() = regs };
    // Everything was written with the caches off; drop any stale lines the caches might
    // still hold for the image (tables, stack, .bss) before they start being used.
    invalidate_dcache(image.start, image.size);
    // SAFETY: the registers were just filled; see `load`.
    unsafe { load(MMU_REGS.get()) };
    Ok(())
}

/// TCR_EL2: T0SZ = 25, inner/outer write-back walks, inner shareable, 4 KiB granule, PS =
/// the CPU's physical address size (at most 48 bits), RES1 bits 31 and 23.
fn tcr() -> u64 {
    let pa_range = ID_AA64MMFR0_EL1.get() & 0xf;
    (1 << 31) | (1 << 23) | (pa_range.min(5) << 16) | (0b11 << 12) | (0b01 << 10) | (0b01 << 8) | (64 - VA_BITS)
}

/// Program the translation registers and enable the MMU and caches.
///
/// # Safety
/// `regs` must describe tables that identity-map the running code, its stack and data.
unsafe fn load(regs: &MmuRegs) {
    MAIR_EL2.set(regs.mair);
    TCR_EL2.set(regs.tcr);
    TTBR0_EL2.set(regs.ttbr0);
    isb(barrier::SY);
    // SAFETY: invalidating TLBs and the instruction cache only drops cached state; the
    // identity map (caller's promise) keeps the next instruction at the same address.
    unsafe { core::arch::asm!("tlbi alle2", "ic iallu", "dsb nsh", "isb", options(nostack)) };
    SCTLR_EL2.set(regs.sctlr);
    isb(barrier::SY);
}

/// Data cache line size in bytes (CTR_EL0.DminLine).
fn dcache_line() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effect.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    4 << ((ctr >> 16) & 0xf)
}

macro_rules! dcache_by_line {
    ($name:ident, $op:literal, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(start: u64, size: u64) {
            let line = dcache_line();
            let mut addr = start & !(line - 1);
            while addr < start + size {
                // SAFETY: data cache maintenance by VA on identity-mapped memory changes
                // no value a program can observe except through non-coherent observers,
                // which is the point.
                unsafe { core::arch::asm!(concat!("dc ", $op, ", {}"), in(reg) addr, options(nostack)) };
                addr += line;
            }
            barrier::dsb(barrier::SY);
        }
    };
}

dcache_by_line!(invalidate_dcache, "ivac", "Invalidate without writing back (memory holds the truth).");
dcache_by_line!(
    clean_invalidate_dcache,
    "civac",
    "Write back and invalidate, so a non-cacheable observer (a guest with its MMU off, a CPU \
     not yet in the coherency domain) sees our writes and we see its writes afterwards."
);

/// DC ZVA's block size in bytes (DCZID_EL0.BS, log2 of 4-byte words), or `None` when the
/// instruction is prohibited here (DCZID_EL0.DZP).
fn zva_block() -> Option<u64> {
    let dczid: u64;
    // SAFETY: reading DCZID_EL0 has no side effect.
    unsafe { core::arch::asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack)) };
    (dczid & (1 << 4) == 0).then(|| 4 << (dczid & 0xf))
}

/// Zero `[start, start + size)` of RAM (identity-mapped, normal memory, MMU on) and write the
/// zeros back to the point of coherency, leaving no cache line over the range: afterwards a
/// non-cacheable observer (a guest with its MMU off) reads zeros from memory, never what the
/// frames held before, and no stale dirty line can later overwrite them.
///
/// Zeroing a block with DC ZVA puts zeros into the cache (or memory: implementation
/// defined) without reading the old contents, so each block is cleaned right after it is
/// zeroed, in one pass, while the line is still in the cache.
pub fn zero_to_poc(start: u64, size: u64) {
    let end = start + size;
    let line = dcache_line();
    // The part the DC ZVA loop covers; the edges (unaligned, or everything if DC ZVA is
    // prohibited) are zeroed with ordinary stores.
    let mut fast = (start, start);
    if let Some(block) = zva_block() {
        let (lo, hi) = (start.next_multiple_of(block), end & !(block - 1));
        if lo < hi {
            if block == line {
                zva_civac(lo, hi, block);
            } else {
                // Blocks and cache lines differ in size: zero first, then clean by line.
                let mut addr = lo;
                while addr < hi {
                    // SAFETY: zeroes one block of RAM the caller owns (normal memory).
                    unsafe { core::arch::asm!("dc zva, {}", in(reg) addr, options(nostack)) };
                    addr += block;
                }
                clean_invalidate_dcache(lo, hi - lo);
            }
            fast = (lo, hi);
        }
    }
    for (from, to) in [(start, fast.0), (fast.1, end)] {
        if from < to {
            // SAFETY: RAM the caller owns, identity-mapped and writable.
            unsafe { core::ptr::write_bytes(from as *mut u8, 0, (to - from) as usize) };
            clean_invalidate_dcache(from, to - from);
        }
    }
    barrier::dsb(barrier::SY);
}

/// DC ZVA then DC CIVAC on every `block` of `[lo, hi)` (both block-aligned), eight blocks per
/// iteration: three instructions per block, where a memset takes dozens per cache line.
fn zva_civac(lo: u64, hi: u64, block: u64) {
    let mut addr = lo;
    while hi - addr >= 8 * block {
        // SAFETY: zeroes eight blocks of RAM the caller owns (normal memory) and cleans them
        // to the point of coherency. A DC CIVAC is ordered after the DC ZVA to the same line.
        unsafe {
            core::arch::asm!(
                "dc zva, {a}", "dc civac, {a}", "add {a}, {a}, {b}",
                "dc zva, {a}", "dc civac, {a}", "add {a}, {a}, {b}",
                "dc zva, {a}", "dc civac, {a}", "add {a}, {a}, {b}",
                "dc zva, {a}", "dc civac, {a}", "add {a}, {a}, {b}",
                "dc zva, {a}", "dc civac, {a}", "add {a}, {a}, {b}",
                "dc zva, {a}", "dc civac, {a}", "add {a}, {a}, {b}",
                "dc zva, {a}", "dc civac, {a}", "add {a}, {a}, {b}",
                "dc zva, {a}", "dc civac, {a}", "add {a}, {a}, {b}",
                a = inout(reg) addr, b = in(reg) block, options(nostack),
            )
        };
    }
    while addr < hi {
        // SAFETY: as above, for one block.
        unsafe { core::arch::asm!("dc zva, {a}", "dc civac, {a}", a = in(reg) addr, options(nostack)) };
        addr += block;
    }
}
