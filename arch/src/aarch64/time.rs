//! The platform clock (the physical counter, in nanoseconds) and idling until a deadline with
//! the EL2 physical timer (CNTHP), which is also what ends a vCPU's slice.

use aarch64_cpu::asm::barrier::{self, dsb, isb};
use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, Readable};

/// CNTHP_CTL_EL2.ENABLE.
const ENABLE: u64 = 1;

/// Counter ticks per second (firmware sets CNTFRQ; never 0 on a sane platform).
fn frequency() -> u64 {
    CNTFRQ_EL0.get().max(1)
}

/// The physical counter converted to nanoseconds.
pub fn count_to_ns(count: u64) -> u64 {
    crate::arm::counter::ticks_to_ns(count, frequency())
}

/// The counter value at `ns` (rounded up, so a deadline is never early).
pub fn ns_to_count(ns: u64) -> u64 {
    crate::arm::counter::ns_to_ticks(ns, frequency())
}

/// Nanoseconds since the counter started: the `now` the core's scheduler is given.
pub fn now_ns() -> u64 {
    isb(barrier::SY);
    count_to_ns(CNTPCT_EL0.get())
}

/// Wait with interrupts masked until `deadline_ns` or until some interrupt is pending
/// (`None`: only the latter). The caller re-checks what it waits for: this may return early.
pub fn idle_until(deadline_ns: Option<u64>) {
    if let Some(deadline) = deadline_ns {
        let count = ns_to_count(deadline);
        if CNTPCT_EL0.get() >= count {
            return;
        }
        // SAFETY: programs the EL2 physical timer, which only the hypervisor uses; its PPI is
        // enabled at the GIC, so it ends the WFI below even though IRQs stay masked.
        unsafe {
            core::arch::asm!("msr cnthp_cval_el2, {}", "msr cnthp_ctl_el2, {}", "isb",
                in(reg) count, in(reg) ENABLE, options(nomem, nostack));
        }
    }
    dsb(barrier::SY);
    aarch64_cpu::asm::wfi();
    // SAFETY: stops the EL2 physical timer (dropping its interrupt line).
    unsafe { core::arch::asm!("msr cnthp_ctl_el2, xzr", "isb", options(nomem, nostack)) };
    // A kick from another CPU may have ended the wait: the caller looks again anyway.
    super::gic::drain_kicks();
}
