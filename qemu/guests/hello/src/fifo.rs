//! The guest side of FIFO event channels, as Linux's `events_fifo.c` does it: a control block
//! and an event array in the guest's own pages, registered with `EVTCHNOP_init_control` and
//! `EVTCHNOP_expand_array`, and a consumer that takes the head of the highest-priority ready
//! queue. Used by the `evtchn-limits` and `bench` guests.

use crate::hypercall;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use guest_abi::event_channel::{
    self as ev, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING,
    EvtchnAllocUnbound, EvtchnExpandArray, EvtchnInitControl,
};
use guest_abi::hypercall as nr;
use guest_abi::xen::DOMID_SELF;

/// Event words per page.
pub const WORDS_PER_PAGE: usize = 1024;
/// Pages for every port a 17-bit LINK can name.
pub const ARRAY_PAGES: usize = EVTCHN_FIFO_NR_CHANNELS as usize / WORDS_PER_PAGE;

#[repr(C, align(4096))]
struct Pages<const N: usize>([[AtomicU32; WORDS_PER_PAGE]; N]);

/// The event array and vCPU 0's control block: this guest's memory, shared with the
/// hypervisor word by word.
static ARRAY: Pages<ARRAY_PAGES> = Pages([const { [const { AtomicU32::new(0) }; WORDS_PER_PAGE] }; ARRAY_PAGES]);
static CONTROL: Pages<1> = Pages([const { [const { AtomicU32::new(0) }; WORDS_PER_PAGE] }; 1]);

fn evtchn_op<T>(cmd: u64, arg: &mut T) -> i64 {
    hypercall(nr::EVENT_CHANNEL_OP, [cmd, arg as *mut T as u64, 0, 0, 0])
}

fn frame<T>(page: &T) -> u64 {
    page as *const T as u64 >> 12
}

/// `EVTCHNOP_init_control` for vCPU 0: the result and the LINK width the hypervisor gave.
pub fn init_control() -> (i64, u8) {
    let mut init =
        EvtchnInitControl { control_gfn: frame(&CONTROL.0[0]), offset: 0, vcpu: 0, link_bits: 0, _pad: [0; 7] };
    let r = evtchn_op(ev::EVTCHNOP_INIT_CONTROL, &mut init);
    // SAFETY: the hypervisor wrote `link_bits` behind the compiler's back.
    (r, unsafe { (&raw const init.link_bits).read_volatile() })
}

/// Array pages the hypervisor has taken so far, in order.
static PAGES: AtomicUsize = AtomicUsize::new(0);

/// Add array pages until `ports` ports are covered (or the hypervisor refuses): the pages
/// the array has then.
pub fn expand_to(ports: usize) -> usize {
    let want = ports.div_ceil(WORDS_PER_PAGE).min(ARRAY_PAGES);
    while PAGES.load(SeqCst) < want {
        let mut expand = EvtchnExpandArray { array_gfn: frame(&ARRAY.0[PAGES.load(SeqCst)]) };
        if evtchn_op(ev::EVTCHNOP_EXPAND_ARRAY, &mut expand) != 0 {
            break;
        }
        PAGES.fetch_add(1, SeqCst);
    }
    PAGES.load(SeqCst)
}

/// An unbound port for this domain itself.
pub fn alloc_unbound() -> Result<u32, i64> {
    let mut a = EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_SELF, port: 0 };
    match evtchn_op(ev::EVTCHNOP_ALLOC_UNBOUND, &mut a) {
        0 => Ok(a.port),
        e => Err(e),
    }
}

/// The event word of `port`.
pub fn word(port: u32) -> &'static AtomicU32 {
    &ARRAY.0[port as usize / WORDS_PER_PAGE][port as usize % WORDS_PER_PAGE]
}

/// vCPU 0's READY bitmap and the HEAD of queue `q`.
pub fn ready() -> u32 {
    CONTROL.0[0][0].load(SeqCst)
}
pub fn head(q: usize) -> u32 {
    CONTROL.0[0][2 + q].load(SeqCst)
}

/// A consumer for vCPU 0 (one per guest: it keeps the heads it has walked to).
#[derive(Default)]
pub struct Consumer {
    ready: u32,
    head: [u32; 16],
}

impl Iterator for Consumer {
    type Item = u32;

    /// Take the next event off the highest-priority ready queue: its port if it was pending
    /// (and is now cleared), `None` when every queue is empty.
    fn next(&mut self) -> Option<u32> {
        loop {
            self.ready |= CONTROL.0[0][0].swap(0, SeqCst);
            if self.ready == 0 {
                return None;
            }
            let q = self.ready.trailing_zeros() as usize;
            let port = match self.head[q] {
                0 => head(q),
                h => h,
            };
            let w = word(port);
            let mut seen = w.load(SeqCst);
            let next = loop {
                let cleared = seen & !((1 << EVTCHN_FIFO_LINKED) | EVTCHN_FIFO_LINK_MASK);
                match w.compare_exchange(seen, cleared, SeqCst, SeqCst) {
                    Ok(_) => break seen & EVTCHN_FIFO_LINK_MASK,
                    Err(now) => seen = now,
                }
            };
            if next == 0 {
                self.ready &= !(1 << q);
            }
            self.head[q] = next;
            if w.fetch_and(!(1 << EVTCHN_FIFO_PENDING), SeqCst) & (1 << EVTCHN_FIFO_PENDING) != 0 {
                return Some(port);
            }
        }
    }
}
