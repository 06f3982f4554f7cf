//! The FIFO port ABI against a guest that consumes as Linux's `events_fifo.c` does, a
//! reference model of queues and flags, and a consumer on another thread.

use super::*;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Guest memory on the host: leaked pages standing in for the guest's.
type Mem = FifoPages;

fn words(n: u32) -> &'static [AtomicU32] {
    Box::leak((0..n).map(|_| AtomicU32::new(0)).collect())
}

impl FifoPages {
    fn new(nr_vcpus: usize) -> Self {
        Self { array: Vec::new(), blocks: alloc::vec![None; nr_vcpus] }
    }

    /// The guest registers every vCPU's control block and adds `pages` array pages.
    fn ready(fifo: &mut Fifo, nr_vcpus: usize, pages: u32) -> Self {
        let mut mem = Mem::new(nr_vcpus);
        for v in 0..nr_vcpus {
            mem.blocks[v] = Some(words(CONTROL_WORDS as u32));
        }
        for _ in 0..pages {
            mem.add_page(fifo);
        }
        mem
    }

    fn add_page(&mut self, fifo: &mut Fifo) -> Vec<u32> {
        self.array.push(words(WORDS_PER_PAGE));
        fifo.page_added().unwrap()
    }

    fn word(&self, port: u32) -> u32 {
        self.event_word(port).unwrap().load(SeqCst)
    }

    fn cb(&self, vcpu: u32) -> ControlBlock<'_> {
        self.control_block(vcpu).unwrap()
    }
}

/// One vCPU's consumer as Linux writes it: READY taken with an exchange and kept locally,
/// each queue's head cached locally, LINKED and LINK cleared together, then the event handled
/// only if it is pending and unmasked.
#[derive(Default, Clone)]
struct Consumer {
    ready: u32,
    head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

impl Consumer {
    /// The next port off the highest-priority non-empty queue, and whether it was delivered.
    fn consume_one(&mut self, mem: &Mem, vcpu: u32) -> Option<(u32, bool)> {
        let cb = mem.cb(vcpu);
        self.ready |= cb.ready().swap(0, SeqCst);
        if self.ready == 0 {
            return None;
        }
        let q = self.ready.trailing_zeros() as usize;
        let port = match self.head[q] {
            0 => cb.head(q).load(SeqCst),
            h => h,
        };
        let word = mem.event_word(port).expect("queued port has a word");
        let next = clear_linked(word);
        if next == 0 {
            self.ready &= !(1 << q);
        }
        self.head[q] = next;
        let w = word.load(SeqCst);
        let delivered = w & PENDING != 0 && w & MASKED == 0;
        if delivered {
            word.fetch_and(!PENDING, SeqCst);
        }
        Some((port, delivered))
    }

    fn drain(&mut self, mem: &Mem, vcpu: u32) -> Vec<u32> {
        core::iter::from_fn(|| self.consume_one(mem, vcpu)).filter(|&(_, d)| d).map(|(p, _)| p).collect()
    }
}

/// Clear LINKED and LINK in one exchange; the LINK that was there.
fn clear_linked(word: &AtomicU32) -> u32 {
    let mut w = word.load(SeqCst);
    loop {
        match word.compare_exchange(w, w & !(LINKED | EVTCHN_FIFO_LINK_MASK), SeqCst, SeqCst) {
            Ok(_) => return w & EVTCHN_FIFO_LINK_MASK,
            Err(now) => w = now,
        }
    }
}

/// The guest masks a port (it may do so at any time).
fn guest_mask(mem: &Mem, port: u32) {
    mem.event_word(port).unwrap().fetch_or(MASKED, SeqCst);
}

#[test]
fn first_event_becomes_head_sets_ready_and_asks_for_the_upcall() {
    let mut fifo = Fifo::new(1);
    let mem = Mem::ready(&mut fifo, 1, 1);
    assert!(fifo.set_pending(&mem, 5, 0));
    let q = EVTCHN_FIFO_PRIORITY_DEFAULT as usize;
    assert_eq!(mem.cb(0).head(q).load(SeqCst), 5);
    assert_eq!(mem.cb(0).ready().load(SeqCst), 1 << q);
    assert_eq!(mem.word(5), PENDING | LINKED);
    // A second event joins the queue behind it: no new upcall, LINK points on.
    assert!(!fifo.set_pending(&mem, 9, 0));
    assert_eq!(mem.word(5) & EVTCHN_FIFO_LINK_MASK, 9);
    // Raising a pending, linked port again changes nothing.
    assert!(!fifo.set_pending(&mem, 5, 0));
    assert_eq!(Consumer::default().drain(&mem, 0), [5, 9]);
    assert_eq!(mem.word(5), 0);
}

#[test]
fn higher_priorities_are_consumed_first_and_fifo_within_one() {
    let mut fifo = Fifo::new(1);
    let mem = Mem::ready(&mut fifo, 1, 1);
    fifo.set_priority(3, 9).unwrap();
    fifo.set_priority(4, 2).unwrap();
    fifo.set_priority(6, 2).unwrap();
    for port in [3, 4, 5, 6] {
        fifo.set_pending(&mem, port, 0);
    }
    assert_eq!(Consumer::default().drain(&mem, 0), [4, 6, 5, 3]);
}

#[test]
fn masked_ports_stay_pending_off_queue_until_unmasked() {
    let mut fifo = Fifo::new(1);
    let mem = Mem::ready(&mut fifo, 1, 1);
    guest_mask(&mem, 7);
    assert!(!fifo.set_pending(&mem, 7, 0));
    assert_eq!(mem.word(7), PENDING | MASKED);
    assert!(fifo.is_pending(&mem, 7) && fifo.is_masked(&mem, 7));
    assert_eq!(mem.cb(0).ready().load(SeqCst), 0);
    assert!(fifo.unmask(&mem, 7, 0), "pending on unmask: linked and signalled");
    assert_eq!(Consumer::default().drain(&mem, 0), [7]);
    assert!(!fifo.unmask(&mem, 7, 0), "not pending: nothing to signal");
}

#[test]
fn a_port_masked_while_queued_is_skipped_by_the_consumer() {
    let mut fifo = Fifo::new(1);
    let mem = Mem::ready(&mut fifo, 1, 1);
    fifo.set_pending(&mem, 1, 0);
    fifo.set_pending(&mem, 2, 0);
    guest_mask(&mem, 1);
    let mut c = Consumer::default();
    assert_eq!(c.drain(&mem, 0), [2]);
    assert_eq!(mem.word(1), PENDING | MASKED, "still pending, off the queue");
    assert!(fifo.unmask(&mem, 1, 0));
    assert_eq!(c.drain(&mem, 0), [1]);
}

#[test]
fn an_emptied_queue_restarts_at_head_with_a_new_upcall() {
    let mut fifo = Fifo::new(1);
    let mem = Mem::ready(&mut fifo, 1, 1);
    let mut c = Consumer::default();
    assert!(fifo.set_pending(&mem, 1, 0));
    assert_eq!(c.drain(&mem, 0), [1]);
    // The tail we remember (1) is no longer LINKED: 2 becomes the head.
    assert!(fifo.set_pending(&mem, 2, 0));
    assert_eq!(mem.word(1) & EVTCHN_FIFO_LINK_MASK, 0);
    assert_eq!(c.drain(&mem, 0), [2]);
}

#[test]
fn a_stale_tail_moved_to_another_vcpu_does_not_capture_the_old_queue() {
    let mut fifo = Fifo::new(2);
    let mem = Mem::ready(&mut fifo, 2, 1);
    let (mut c0, mut c1) = (Consumer::default(), Consumer::default());
    fifo.set_pending(&mem, 1, 0);
    assert_eq!(c0.drain(&mem, 0), [1]);
    // Port 1 now raised on vCPU 1 (EVTCHNOP_bind_vcpu), while vCPU 0's tail still says 1.
    assert!(fifo.set_pending(&mem, 1, 1));
    assert!(fifo.set_pending(&mem, 2, 0), "vCPU 0's queue was empty: 2 is its new head");
    assert_eq!(c0.drain(&mem, 0), [2]);
    assert_eq!(c1.drain(&mem, 1), [1]);
}

#[test]
fn a_priority_change_applies_to_the_next_link_not_a_queued_event() {
    let mut fifo = Fifo::new(1);
    let mem = Mem::ready(&mut fifo, 1, 1);
    fifo.set_pending(&mem, 1, 0);
    fifo.set_pending(&mem, 2, 0);
    fifo.set_priority(2, 0).unwrap();
    let mut c = Consumer::default();
    assert_eq!(c.drain(&mem, 0), [1, 2], "2 was queued at the default priority");
    fifo.set_pending(&mem, 1, 0);
    fifo.set_pending(&mem, 2, 0);
    assert_eq!(c.drain(&mem, 0), [2, 1]);
}

#[test]
fn events_before_their_page_wait_for_it() {
    let mut fifo = Fifo::new(1);
    let mut mem = Mem::ready(&mut fifo, 1, 1);
    assert!(!fifo.set_pending(&mem, 1500, 0));
    assert!(!fifo.is_pending(&mem, 1500) && fifo.is_masked(&mem, 1500));
    assert_eq!(mem.add_page(&mut fifo), [1500]);
    assert!(fifo.set_pending(&mem, 1500, 0));
    assert_eq!(Consumer::default().drain(&mem, 0), [1500]);
}

#[test]
fn without_a_control_block_the_event_is_only_marked_pending() {
    let mut fifo = Fifo::new(1);
    let mut mem = Mem::new(1);
    mem.add_page(&mut fifo);
    assert!(!fifo.set_pending(&mem, 3, 0));
    assert_eq!(mem.word(3), PENDING);
}

#[test]
fn the_array_stops_at_two_to_the_seventeen_ports() {
    let mut fifo = Fifo::new(1);
    for _ in 0..MAX_PAGES {
        fifo.page_added().unwrap();
    }
    assert_eq!(fifo.nr_ports(), 1 << 17);
    assert_eq!(fifo.page_added(), Err(errno::ENOSPC));
}

#[test]
fn priorities_beyond_the_lowest_are_refused() {
    let mut fifo = Fifo::new(1);
    assert_eq!(fifo.set_priority(1, 16), Err(errno::EINVAL));
    assert_eq!(fifo.set_priority(1 << 17, 0), Err(errno::EINVAL));
    assert_eq!(fifo.set_priority(1, 15), Ok(()));
    assert_eq!(fifo.priority(1), 15);
    fifo.bound(1);
    assert_eq!(fifo.priority(1), EVTCHN_FIFO_PRIORITY_DEFAULT, "a rebound port starts at the default");
}

#[test]
fn the_last_port_of_a_full_array_is_delivered() {
    let mut fifo = Fifo::new(1);
    let mem = Mem::ready(&mut fifo, 1, MAX_PAGES);
    let last = (1 << 17) - 1;
    assert!(fifo.set_pending(&mem, last, 0));
    assert!(!fifo.set_pending(&mem, 1, 0));
    assert_eq!(mem.word(last) & EVTCHN_FIFO_LINK_MASK, 1);
    assert_eq!(Consumer::default().drain(&mem, 0), [last, 1]);
}

/// What a guest and the hypervisor do, one step at a time.
#[derive(Clone, Debug)]
enum Op {
    Send(u32),
    Mask(u32),
    Unmask(u32),
    SetPriority(u32, u32),
    BindVcpu(u32, u32),
    ConsumeOne(u32),
}

const PORTS: u32 = 12;
const VCPUS: u32 = 2;

fn op() -> impl Strategy<Value = Op> {
    let port = 1..PORTS;
    prop_oneof![
        4 => port.clone().prop_map(Op::Send),
        1 => port.clone().prop_map(Op::Mask),
        1 => port.clone().prop_map(Op::Unmask),
        1 => (port.clone(), 0..16u32).prop_map(|(p, q)| Op::SetPriority(p, q)),
        1 => (port, 0..VCPUS).prop_map(|(p, v)| Op::BindVcpu(p, v)),
        3 => (0..VCPUS).prop_map(Op::ConsumeOne),
    ]
}

/// The reference: plain queues of ports, pending and masked sets.
#[derive(Default)]
struct Model {
    pending: BTreeSet<u32>,
    masked: BTreeSet<u32>,
    linked: BTreeSet<u32>,
    queues: Vec<[VecDeque<u32>; EVTCHN_FIFO_MAX_QUEUES]>,
    priority: Vec<u32>,
    vcpu: Vec<u32>,
}

impl Model {
    fn new() -> Self {
        Self {
            queues: (0..VCPUS).map(|_| Default::default()).collect(),
            priority: alloc::vec![EVTCHN_FIFO_PRIORITY_DEFAULT; PORTS as usize],
            vcpu: alloc::vec![0; PORTS as usize],
            ..Default::default()
        }
    }

    fn raise(&mut self, port: u32) {
        self.pending.insert(port);
        if !self.masked.contains(&port) && self.linked.insert(port) {
            let (v, q) = (self.vcpu[port as usize], self.priority[port as usize]);
            self.queues[v as usize][q as usize].push_back(port);
        }
    }

    fn consume(&mut self, vcpu: u32) -> Option<(u32, bool)> {
        let queue = self.queues[vcpu as usize].iter_mut().find(|q| !q.is_empty())?;
        let port = queue.pop_front().unwrap();
        self.linked.remove(&port);
        let delivered = self.pending.contains(&port) && !self.masked.contains(&port);
        if delivered {
            self.pending.remove(&port);
        }
        Some((port, delivered))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any interleaving of sends, masks, unmasks, priority and vCPU changes and consumption:
    /// the guest sees the same ports in the same order as plain queues give, the flags in the
    /// words match, and every non-empty queue is visible through READY.
    #[test]
    fn fifo_agrees_with_a_model_of_plain_queues(ops in proptest::collection::vec(op(), 1..200)) {
        let mut fifo = Fifo::new(VCPUS as usize);
        let mem = Mem::ready(&mut fifo, VCPUS as usize, 1);
        let mut consumers = alloc::vec![Consumer::default(); VCPUS as usize];
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Send(p) => {
                    fifo.set_pending(&mem, p, model.vcpu[p as usize]);
                    model.raise(p);
                }
                Op::Mask(p) => {
                    guest_mask(&mem, p);
                    model.masked.insert(p);
                }
                Op::Unmask(p) => {
                    fifo.unmask(&mem, p, model.vcpu[p as usize]);
                    model.masked.remove(&p);
                    if model.pending.contains(&p) {
                        model.raise(p);
                    }
                }
                Op::SetPriority(p, q) => {
                    fifo.set_priority(p, q).unwrap();
                    model.priority[p as usize] = q;
                }
                Op::BindVcpu(p, v) => model.vcpu[p as usize] = v,
                Op::ConsumeOne(v) => {
                    let got = consumers[v as usize].consume_one(&mem, v);
                    prop_assert_eq!(got, model.consume(v));
                }
            }
            for p in 1..PORTS {
                let w = mem.word(p);
                prop_assert_eq!(w & PENDING != 0, model.pending.contains(&p), "pending {}", p);
                prop_assert_eq!(w & MASKED != 0, model.masked.contains(&p), "masked {}", p);
                prop_assert_eq!(w & LINKED != 0, model.linked.contains(&p), "linked {}", p);
            }
            for v in 0..VCPUS {
                let visible = consumers[v as usize].ready | mem.cb(v).ready().load(SeqCst);
                for (q, queue) in model.queues[v as usize].iter().enumerate() {
                    prop_assert!(queue.is_empty() || visible & (1 << q) != 0, "queue {} of vCPU {} hidden", q, v);
                }
            }
        }
    }
}

/// The hypervisor links on one thread while the guest consumes (and masks and unmasks, as
/// Linux does around a handler) on another: every port raised is delivered at least once
/// after its last raise, nothing is delivered twice per raise, and the queues stay whole.
#[test]
fn linking_while_the_guest_consumes_loses_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    const N: u32 = 64;
    const ROUNDS: u32 = 20_000;
    let mut fifo = Fifo::new(1);
    let mem = Arc::new(Mem::ready(&mut fifo, 1, 1));
    let done = Arc::new(AtomicBool::new(false));
    let raised: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
    let seen: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
    let guest = {
        let (mem, done, seen) = (mem.clone(), done.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut c = Consumer::default();
            loop {
                let finished = done.load(SeqCst);
                match c.consume_one(&mem, 0) {
                    Some((port, true)) => {
                        seen[port as usize].fetch_add(1, SeqCst);
                    }
                    Some((_, false)) => {}
                    None if finished => break,
                    None => std::thread::yield_now(),
                }
            }
        })
    };
    let mut x = 0x2545_f491_u32;
    for _ in 0..ROUNDS {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let port = 1 + x % (N - 1);
        raised[port as usize].fetch_add(1, SeqCst);
        fifo.set_pending(&*mem, port, 0);
    }
    done.store(true, SeqCst);
    guest.join().unwrap();
    for port in 1..N {
        let (r, s) = (raised[port as usize].load(SeqCst), seen[port as usize].load(SeqCst));
        assert!(r == 0 || s >= 1, "port {port} raised {r} times, never delivered");
        assert!(s <= r, "port {port} delivered {s} times for {r} raises");
        assert_eq!(mem.word(port) & (PENDING | LINKED | BUSY), 0, "port {port} left behind");
    }
}
