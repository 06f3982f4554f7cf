//! Event channels as a 2-level guest sees them, for the scenarios that talk between domains:
//! the shared info page mapped over a page of the guest's own, a port's pending bit polled
//! and cleared, `SCHEDOP_yield` between polls so that the other end gets the CPU.

use crate::hypercall;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, Ordering};
use guest_abi::event_channel::{self as ev, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnSend};
use guest_abi::memory::{self as mem, XenAddToPhysmap};
use guest_abi::xen::DOMID_SELF;
use guest_abi::{hypercall as nr, sched};

/// Polls of one bit (or of anything else a scenario waits for) before giving up.
pub const PATIENCE: u32 = 100_000;

#[cfg(target_arch = "x86_64")]
const PENDING_OFFSET: usize = offset_of!(guest_abi::shared_info::x86::SharedInfo, evtchn_pending);
#[cfg(not(target_arch = "x86_64"))]
const PENDING_OFFSET: usize = offset_of!(guest_abi::shared_info::arm::SharedInfo, evtchn_pending);

/// The page the shared info page is mapped over.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SHARED: Page = Page([0; 4096]);

pub fn yield_cpu() {
    hypercall(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
}

/// Map the shared info page (2-level pending bits); false if the hypervisor refused.
pub fn map_shared_info() -> bool {
    let xatp = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: mem::XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: (&raw const SHARED) as u64 >> 12,
    };
    hypercall(nr::MEMORY_OP, [mem::XENMEM_ADD_TO_PHYSMAP, &raw const xatp as u64, 0, 0, 0]) == 0
}

/// The 32-bit half of the `evtchn_pending` word holding `port`'s bit (the words are 64-bit
/// on every architecture; halves keep the atomics to what 32-bit ARM has).
fn pending_half(port: u32) -> &'static AtomicU32 {
    let base = (&raw mut SHARED) as *mut u8;
    let offset = PENDING_OFFSET + (port as usize % 4096 / 32) * 4;
    // SAFETY: the offset stays inside the 4 KiB page (4096 ports of 2-level bits) and is
    // 4-byte aligned; the page is shared with the hypervisor, which is why every access to it
    // is atomic.
    unsafe { AtomicU32::from_ptr(base.add(offset).cast()) }
}

/// Clear `port`'s pending bit if it is set; whether it was. The clear is atomic: a plain
/// read-modify-write, preempted between its halves, would write back as clear the bit of
/// another port the hypervisor raised meanwhile (Linux clears with an atomic bitop too).
pub fn poll_event(port: u32) -> bool {
    let bit = 1u32 << (port % 32);
    let half = pending_half(port);
    half.load(Ordering::Relaxed) & bit != 0 && half.fetch_and(!bit, Ordering::AcqRel) & bit != 0
}

/// Wait (yielding) until `port` is pending, then clear it; false if it never came.
pub fn take_event(port: u32) -> bool {
    for _ in 0..PATIENCE {
        if poll_event(port) {
            return true;
        }
        yield_cpu();
    }
    false
}

fn evtchn_op<T>(cmd: u64, arg: &mut T) -> i64 {
    hypercall(nr::EVENT_CHANNEL_OP, [cmd, arg as *mut T as u64, 0, 0, 0])
}

pub fn send(port: u32) -> i64 {
    evtchn_op(ev::EVTCHNOP_SEND, &mut EvtchnSend { port })
}

pub fn alloc_unbound(remote_dom: u16) -> Result<u32, i64> {
    let mut a = EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom, port: 0 };
    match evtchn_op(ev::EVTCHNOP_ALLOC_UNBOUND, &mut a) {
        0 => Ok(a.port),
        e => Err(e),
    }
}

pub fn bind(remote_dom: u16, remote_port: u32) -> Result<u32, i64> {
    let mut b = EvtchnBindInterdomain { remote_dom, _pad0: 0, remote_port, local_port: 0 };
    match evtchn_op(ev::EVTCHNOP_BIND_INTERDOMAIN, &mut b) {
        0 => Ok(b.local_port),
        e => Err(e),
    }
}

/// Bind to the port `peer` offers us (the first of its low ports that binds), waiting for
/// it to be offered; the local port. Xen marks the new local end pending, as a notification.
pub fn bind_offered(peer: u16) -> Option<u32> {
    for _ in 0..PATIENCE {
        if let Some(local) = (1..64).find_map(|p| bind(peer, p).ok()) {
            return Some(local);
        }
        yield_cpu();
    }
    None
}

/// This domain's id, as Xen tells a guest that has no other way to ask: a port left unbound
/// for `DOMID_SELF` is reported as unbound for the caller's own id.
pub fn own_domid() -> Option<u16> {
    use guest_abi::event_channel::{EVTCHNSTAT_UNBOUND, EvtchnClose, EvtchnStatus};
    let port = alloc_unbound(DOMID_SELF).ok()?;
    let mut status = EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() };
    let rc = evtchn_op(ev::EVTCHNOP_STATUS, &mut status);
    evtchn_op(ev::EVTCHNOP_CLOSE, &mut EvtchnClose { port });
    (rc == 0 && status.status == EVTCHNSTAT_UNBOUND).then(|| status.u[0] as u16)
}
