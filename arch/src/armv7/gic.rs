//! The host GICv2 on ARMv7: set up through the shared [`crate::arm::gicv2`] driver, and the
//! interrupts the hypervisor takes itself, all private to each CPU: three PPIs (the guest's
//! virtual timer, the maintenance interrupt, the Hyp physical timer) and the kick SGI another
//! pCPU sends ([`KICK_SGI`]).

use super::console::Console;
use super::dt::{GicVersion, Platform};
use crate::arm::gicv2::{self, Gicv2Regions};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

static VTIMER_INTID: AtomicU32 = AtomicU32::new(27);
static HYP_TIMER_INTID: AtomicU32 = AtomicU32::new(26);
static MAINTENANCE_INTID: AtomicU32 = AtomicU32::new(25);

/// The SGI one pCPU sends another to make it leave its guest (or its idle wait) and look
/// at the scheduler and its vCPU's interrupts again.
pub const KICK_SGI: u32 = 1;

/// Set up the GIC for the boot CPU if it is a GICv2 with virtualization extensions.
pub fn init(p: &Platform) {
    let [dist, cpu, hyp, vcpu] = p.gicv2_regs;
    let is_v2 = p.gic.is_some_and(|(v, _)| v == GicVersion::V2);
    let timers = p.timer_intids.unwrap_or([29, 30, 27, 26]);
    let (vtimer, hyp_timer, maintenance) = (timers[2], timers[3], p.maintenance);
    if !is_v2 || !gicv2::init(Gicv2Regions { dist, cpu, hyp, vcpu }, &[vtimer, maintenance, hyp_timer, KICK_SGI]) {
        let _ = writeln!(Console, "xhv: no GICv2 with virtualization extensions: guests get no interrupts");
        return;
    }
    VTIMER_INTID.store(vtimer, Ordering::Relaxed);
    HYP_TIMER_INTID.store(hyp_timer, Ordering::Relaxed);
    MAINTENANCE_INTID.store(maintenance, Ordering::Relaxed);
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

/// A secondary CPU's banked part of the GIC (its SGIs and PPIs, CPU interface, empty list
/// registers), and its place as a kick target. False without a GIC to run guests with.
pub fn init_secondary(cpu: usize) -> bool {
    let intids = [vtimer_intid(), MAINTENANCE_INTID.load(Ordering::Relaxed), hyp_timer_intid(), KICK_SGI];
    gicv2::init_cpu(cpu, &intids)
}

/// Make logical CPU `cpu` take [`KICK_SGI`].
pub fn send_kick(cpu: usize) {
    // The kick must not overtake the writes that made it necessary (a vCPU put back in its
    // slot, an event marked pending): a DMB does not order the distributor write after them.
    super::sysreg::dsb();
    gicv2::send_sgi_to_cpu(KICK_SGI, cpu);
}

/// Take and complete the kicks pending at this CPU (after an idle wait they ended).
pub fn drain_kicks() {
    if gicv2::ready() {
        gicv2::drain_sgi(KICK_SGI);
    }
}
