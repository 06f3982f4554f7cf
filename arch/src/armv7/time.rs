//! The platform clock (the physical counter, in nanoseconds), idling until a deadline with
//! the Hyp physical timer (CNTHP), which also ends a vCPU's slice, and the cache maintenance
//! that guests running with their caches off need.

use super::sysreg;
use crate::arm::counter::Scale;

/// CNTHP_CTL.ENABLE.
const ENABLE: u32 = 1;

/// The counter's conversion, worked out once: every exit reads the clock.
static SCALE: spin::Once<Scale> = spin::Once::new();

fn scale() -> Scale {
    *SCALE.call_once(|| Scale::of(u64::from(sysreg::cntfrq())))
}

/// The physical counter converted to nanoseconds (rounded down, saturating).
pub fn count_to_ns(count: u64) -> u64 {
    scale().to_ns(count)
}

/// The counter value at `ns` (rounded up, so a deadline is never early).
pub fn ns_to_count(ns: u64) -> u64 {
    scale().to_ticks(ns)
}

/// Nanoseconds since the counter started: the `now` the core's scheduler is given.
pub fn now_ns() -> u64 {
    sysreg::isb();
    count_to_ns(sysreg::cntpct())
}

/// Wait with interrupts masked until `deadline_ns` or until some interrupt is pending
/// (`None`: only the latter). The caller re-checks what it waits for.
pub fn idle_until(deadline_ns: Option<u64>) {
    if let Some(deadline) = deadline_ns {
        let count = ns_to_count(deadline);
        if sysreg::cntpct() >= count {
            return;
        }
        sysreg::write_cnthp_cval(count);
        sysreg::write_cnthp_ctl(ENABLE);
        sysreg::isb();
    }
    sysreg::dsb();
    // SAFETY: WFI only waits; a pending interrupt (the Hyp timer's PPI is enabled at the GIC)
    // ends it even with IRQs masked in CPSR.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack, preserves_flags)) };
    sysreg::write_cnthp_ctl(0);
    sysreg::isb();
    // A kick from another CPU may have ended the wait: the caller looks again anyway.
    super::gic::drain_kicks();
}

/// Clean and invalidate `[addr, addr + size)` (identity-mapped RAM) to the point of
/// coherency, so an observer with its caches off (a guest with its MMU off) sees what the
/// hypervisor wrote, and the hypervisor then reads what such an observer wrote.
pub fn clean_invalidate_dcache(addr: u64, size: u64) {
    let line = 4u64 << ((sysreg::ctr() >> 16) & 0xf);
    let (Ok(start), Some(end)) = (u32::try_from(addr & !(line - 1)), addr.checked_add(size)) else { return };
    sysreg::dsb();
    let mut va = u64::from(start);
    while va < end {
        sysreg::dccimvac(va as u32);
        va += line;
    }
    sysreg::dsb();
}
