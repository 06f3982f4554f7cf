//! FIFO event channels: the port ABI that replaces the 2-level bitmaps with per-port event
//! words linked into per-vCPU priority queues (Xen 4.4+, Linux `events_fifo.c`).
//!
//! The guest owns the memory: an event array (pages of 1024 32-bit words, added one page at a
//! time with `EVTCHNOP_expand_array`) and one control block per vCPU (`EVTCHNOP_init_control`:
//! a READY bitmap and the HEAD port of each of the 16 priority queues). An event word holds
//! PENDING, MASKED, LINKED and BUSY flags and a 17-bit LINK to the next port of its queue.
//! The hypervisor keeps only each queue's TAIL and, per port, its priority and the queue it
//! was last linked on.
//!
//! The guest consumes while we link (on another CPU), so every change to a word is a
//! compare-and-exchange, and we respect what the guest may do to a LINKED word: set or clear
//! MASKED, clear PENDING, clear LINKED with LINK. To link after a tail, the tail must still be
//! LINKED; while we retry we set BUSY, which holds off the guest's unmask, so the exchange
//! succeeds within a few tries. READY is set only when a port becomes a queue's new HEAD, and
//! the upcall is raised only when that bit was clear, so the guest never follows a stale HEAD.
//!
//! This module is the policy over an abstract [`FifoMemory`]; where the pages are and how they
//! are mapped is the caller's business.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
use guest_abi::errno;
use guest_abi::event_channel::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_QUEUES,
    EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MIN,
    EvtchnFifoControlBlock,
};

/// Event words in one 4 KiB page of the event array.
pub const WORDS_PER_PAGE: u32 = 1024;
/// Pages the event array can grow to: enough for every port a LINK can name.
pub const MAX_PAGES: u32 = EVTCHN_FIFO_NR_CHANNELS / WORDS_PER_PAGE;

pub const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
pub const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
pub const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
pub const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;

/// Words in a control block: READY, a reserved word, then the HEAD of each queue.
pub const CONTROL_WORDS: usize = size_of::<EvtchnFifoControlBlock>() / 4;

/// A vCPU's control block as both sides touch it: word by word, atomically, in guest memory.
#[derive(Clone, Copy)]
pub struct ControlBlock<'a>(&'a [AtomicU32]);

impl<'a> ControlBlock<'a> {
    /// The block at the start of `words`, if they hold one.
    pub fn new(words: &'a [AtomicU32]) -> Option<Self> {
        words.get(..CONTROL_WORDS).map(ControlBlock)
    }
    pub fn ready(&self) -> &'a AtomicU32 {
        &self.0[0]
    }
    pub fn head(&self, priority: usize) -> &'a AtomicU32 {
        &self.0[2 + priority]
    }
}

/// The guest memory the FIFO ABI lives in.
pub trait FifoMemory {
    /// The event word of `port`, if the array page holding it has been added.
    fn event_word(&self, port: u32) -> Option<&AtomicU32>;
    /// `vcpu`'s control block, once `init_control` registered it.
    fn control_block(&self, vcpu: u32) -> Option<ControlBlock<'_>>;
}

/// The guest pages a domain gave for FIFO events, as the hypervisor holds them.
pub struct FifoPages {
    /// The event array, one page of [`WORDS_PER_PAGE`] words per `expand_array`.
    pub array: Vec<&'static [AtomicU32]>,
    /// Each vCPU's control block (its words from the offset the guest gave).
    pub blocks: Vec<Option<&'static [AtomicU32]>>,
}

impl FifoMemory for FifoPages {
    fn event_word(&self, port: u32) -> Option<&AtomicU32> {
        self.array.get((port / WORDS_PER_PAGE) as usize)?.get((port % WORDS_PER_PAGE) as usize)
    }
    fn control_block(&self, vcpu: u32) -> Option<ControlBlock<'_>> {
        ControlBlock::new(self.blocks.get(vcpu as usize).copied().flatten()?)
    }
}

/// One queue: a vCPU and a priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QueueId {
    vcpu: u16,
    priority: u8,
}

/// What the hypervisor remembers of a port (6 bytes: a domain with all 2^17 ports pays
/// 768 KiB for it).
#[derive(Clone, Copy, Debug)]
struct PortState {
    priority: u8,
    /// Raised before the array page holding it was added: linked when the page arrives.
    deferred: bool,
    /// The queue the port was last linked on: if it is still that queue's tail when it is
    /// linked elsewhere, that tail is stale.
    last: QueueId,
}

const FRESH_PORT: PortState = PortState {
    priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
    deferred: false,
    last: QueueId { vcpu: 0, priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8 },
};

/// A domain's FIFO bookkeeping: queue tails, per-port priorities, the array's size.
pub struct Fifo {
    /// Tail port of each queue of each vCPU; 0 when the queue is empty (port 0 is never bound).
    tails: Vec<[u32; EVTCHN_FIFO_MAX_QUEUES]>,
    /// One entry per port the array covers, reserved page by page as the guest adds them,
    /// so that nothing allocates on the paths that raise events.
    ports: Vec<PortState>,
    /// Ports beyond the array that were given a priority or raised: moved in with their page.
    early: BTreeMap<u32, PortState>,
}

impl Fifo {
    /// Bytes of hypervisor heap the queues and per-port states hold.
    pub fn heap_bytes(&self) -> usize {
        self.tails.capacity() * size_of::<[u32; EVTCHN_FIFO_MAX_QUEUES]>()
            + self.ports.capacity() * size_of::<PortState>()
            + self.early.len() * (4 + size_of::<PortState>() + 16)
    }

    pub fn new(nr_vcpus: usize) -> Self {
        Self {
            tails: alloc::vec![[0; EVTCHN_FIFO_MAX_QUEUES]; nr_vcpus.min(usize::from(u16::MAX))],
            ports: Vec::new(),
            early: BTreeMap::new(),
        }
    }

    /// Ports the event array covers so far.
    pub fn nr_ports(&self) -> u32 {
        self.ports.len() as u32
    }

    /// The event array grew by one page (the caller maps it once this succeeds): returns the
    /// ports raised before it existed, which the caller raises again on their vCPUs. `-ENOMEM`
    /// when the hypervisor cannot hold the page's bookkeeping.
    pub fn page_added(&mut self) -> Result<Vec<u32>, i64> {
        if self.nr_ports() >= EVTCHN_FIFO_NR_CHANNELS {
            return Err(errno::ENOSPC);
        }
        let range = self.nr_ports()..self.nr_ports() + WORDS_PER_PAGE;
        let moved: Vec<u32> = self.early.range(range.clone()).map(|(&p, _)| p).collect();
        let mut deferred = Vec::new();
        deferred.try_reserve_exact(moved.len()).map_err(|_| errno::ENOMEM)?;
        self.ports.try_reserve_exact(WORDS_PER_PAGE as usize).map_err(|_| errno::ENOMEM)?;
        self.ports.resize(range.end as usize, FRESH_PORT);
        for p in moved {
            if let Some(mut st) = self.early.remove(&p) {
                if core::mem::take(&mut st.deferred) {
                    deferred.push(p);
                }
                self.ports[p as usize] = st;
            }
        }
        Ok(deferred)
    }

    /// The bookkeeping of `port`, kept aside for a port beyond the array.
    fn state(&mut self, port: u32) -> Option<&mut PortState> {
        if port >= EVTCHN_FIFO_NR_CHANNELS {
            return None;
        }
        match self.ports.get_mut(port as usize) {
            Some(st) => Some(st),
            None => Some(self.early.entry(port).or_insert(FRESH_PORT)),
        }
    }

    /// `port` was pending before FIFO took over (in the 2-level bitmap): link it once its
    /// array page exists.
    pub fn defer(&mut self, port: u32) {
        if let Some(st) = self.state(port) {
            st.deferred = true;
        }
    }

    /// A port was (re)bound: it starts at the default priority, nothing deferred.
    pub fn bound(&mut self, port: u32) {
        if let Some(st) = self.state(port) {
            *st = PortState { last: st.last, ..FRESH_PORT };
        }
    }

    /// Future events of `port` go to queue `priority`; one already linked stays where it is.
    pub fn set_priority(&mut self, port: u32, priority: u32) -> Result<(), i64> {
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(errno::EINVAL);
        }
        self.state(port).ok_or(errno::EINVAL)?.priority = priority as u8;
        Ok(())
    }

    pub fn priority(&self, port: u32) -> u32 {
        let st = self.ports.get(port as usize).or_else(|| self.early.get(&port));
        st.map_or(EVTCHN_FIFO_PRIORITY_DEFAULT, |s| u32::from(s.priority))
    }

    /// Raise `port` for `vcpu`: set PENDING and, if it is unmasked and not on a queue yet,
    /// link it at the tail of its priority's queue. Returns true when the caller must mark
    /// events pending on `vcpu` (set `evtchn_upcall_pending`, raise the upcall).
    pub fn set_pending(&mut self, mem: &impl FifoMemory, port: u32, vcpu: u32) -> bool {
        let Some(word) = mem.event_word(port).filter(|_| port < self.nr_ports()) else {
            self.defer(port);
            return false;
        };
        word.fetch_or(PENDING, SeqCst);
        let Some(cb) = mem.control_block(vcpu) else {
            // The guest may not unmask before its control block exists: nothing to link.
            return false;
        };
        if vcpu as usize >= self.tails.len() || word.load(SeqCst) & MASKED != 0 {
            return false;
        }
        if word.fetch_or(LINKED, SeqCst) & LINKED != 0 {
            return false;
        }
        let st = &mut self.ports[port as usize];
        let q = QueueId { vcpu: vcpu as u16, priority: st.priority };
        let last = core::mem::replace(&mut st.last, q);
        if let Some(tails) = self.tails.get_mut(usize::from(last.vcpu))
            && tails[last.priority as usize] == port
        {
            tails[last.priority as usize] = 0;
        }
        let tail = self.tails[q.vcpu as usize][q.priority as usize];
        let linked_after_tail = tail != 0 && mem.event_word(tail).is_some_and(|t| set_link(t, port));
        self.tails[q.vcpu as usize][q.priority as usize] = port;
        if linked_after_tail {
            return false;
        }
        cb.head(q.priority as usize).store(port, SeqCst);
        let bit = 1 << q.priority;
        cb.ready().fetch_or(bit, SeqCst) & bit == 0
    }

    /// `EVTCHNOP_unmask`: clear MASKED and link the port if it is pending meanwhile.
    pub fn unmask(&mut self, mem: &impl FifoMemory, port: u32, vcpu: u32) -> bool {
        let Some(word) = mem.event_word(port) else { return false };
        word.fetch_and(!MASKED, SeqCst);
        word.load(SeqCst) & PENDING != 0 && self.set_pending(mem, port, vcpu)
    }

    /// The guest will skip a consumed port that is no longer pending: no unlinking needed.
    pub fn clear_pending(&self, mem: &impl FifoMemory, port: u32) {
        if let Some(word) = mem.event_word(port) {
            word.fetch_and(!PENDING, SeqCst);
        }
    }

    pub fn is_pending(&self, mem: &impl FifoMemory, port: u32) -> bool {
        mem.event_word(port).is_some_and(|w| w.load(SeqCst) & PENDING != 0)
    }

    /// A port without an array word yet counts as masked: nothing can be delivered through it.
    pub fn is_masked(&self, mem: &impl FifoMemory, port: u32) -> bool {
        mem.event_word(port).is_none_or(|w| w.load(SeqCst) & MASKED != 0)
    }
}

/// Point `tail`'s LINK at `port` if `tail` is still LINKED (still on its queue). False when
/// the guest has consumed it meanwhile: `port` then starts the queue afresh.
fn set_link(tail: &AtomicU32, port: u32) -> bool {
    let link = |w: u32| (w & !(BUSY | EVTCHN_FIFO_LINK_MASK)) | port;
    let mut seen = tail.load(SeqCst);
    if seen & LINKED == 0 {
        return false;
    }
    if tail.compare_exchange(seen, link(seen), SeqCst, SeqCst).is_ok() {
        return true;
    }
    // The guest is changing the word. BUSY holds off its unmask, leaving it only the
    // transitions listed above, so a few more tries are enough.
    tail.fetch_or(BUSY, SeqCst);
    for _ in 0..4 {
        seen = tail.load(SeqCst);
        if seen & LINKED == 0 {
            tail.fetch_and(!BUSY, SeqCst);
            return false;
        }
        if tail.compare_exchange(seen, link(seen), SeqCst, SeqCst).is_ok() {
            return true;
        }
    }
    // Still changing: treat the tail as consumed and let the port start the queue; the guest
    // skips whatever it finds not LINKED.
    tail.fetch_and(!BUSY, SeqCst);
    false
}

#[cfg(test)]
mod tests;
