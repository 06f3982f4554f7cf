//! The host GICv2 on ARMv7: set up through the shared [`crate::arm::gicv2`] driver, and the
//! three PPIs the hypervisor takes itself (the guest's virtual timer, the maintenance
//! interrupt, the Hyp physical timer).

use super::console::Console;
use super::dt::{GicVersion, Platform};
use crate::arm::gicv2::{self, Gicv2Regions};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

static VTIMER_INTID: AtomicU32 = AtomicU32::new(27);
static HYP_TIMER_INTID: AtomicU32 = AtomicU32::new(26);

/// Set up the GIC for the boot CPU if it is a GICv2 with virtualization extensions.
pub fn init(p: &Platform) {
    let [dist, cpu, hyp, vcpu] = p.gicv2_regs;
    let is_v2 = p.gic.is_some_and(|(v, _)| v == GicVersion::V2);
    let timers = p.timer_intids.unwrap_or([29, 30, 27, 26]);
    let (vtimer, hyp_timer, maintenance) = (timers[2], timers[3], p.maintenance);
    if !is_v2 || !gicv2::init(Gicv2Regions { dist, cpu, hyp, vcpu }, &[vtimer, maintenance, hyp_timer]) {
        let _ = writeln!(Console, "xhv: no GICv2 with virtualization extensions: guests get no interrupts");
        return;
    }
    VTIMER_INTID.store(vtimer, Ordering::Relaxed);
    HYP_TIMER_INTID.store(hyp_timer, Ordering::Relaxed);
    let _ = writeln!(
        Console,
        "(XEN) GICv2: GICD {dist:#x}, GICC {cpu:#x}, GICH {hyp:#x}, GICV {vcpu:#x}; {} list registers; vtimer INTID {vtimer}, maintenance {maintenance}",
        gicv2::lr_count()
    );
}

pub fn vtimer_intid() -> u32 {
    VTIMER_INTID.load(Ordering::Relaxed)
}

pub fn hyp_timer_intid() -> u32 {
    HYP_TIMER_INTID.load(Ordering::Relaxed)
}
