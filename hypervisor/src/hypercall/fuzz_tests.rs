//! Property tests of the whole dispatcher: random hypercall sequences (numbers, sub-operations,
//! arguments, and guest memory full of plausible structures) against a domain with its Xen
//! pages and a vCPU that records every guest access. Whatever the input:
//!
//! - no panic (proptest reports one as a failure);
//! - a failure is a negative Xen errno; only `sched_op` yields, blocks or shuts down, and only
//!   with a reason Xen defines;
//! - every access stays in guest memory and within a page of an address the guest named (an
//!   argument, or a word the hypervisor read from guest memory in this sequence); console
//!   reads stay within the buffer and count given;
//! - no byte of guest memory changes outside what the hypervisor wrote through the vCPU;
//! - `map_host_page` only ever maps this domain's own Xen pages, and a bystander domain's
//!   pages never change.

use super::{Outcome, dispatch};
use crate::domain::{Domain, GRANT_FRAMES};
use crate::page::{HostPage, PAGE_SIZE};
use arch::exit::{BadGuestAddress, Exit, HypercallArgs, VirtualCpu};
use guest_abi::{errno, hypercall as nr, sched, xen};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Guest memory: 16 pages at an ARM-like guest address (not 0, so offsets and addresses differ).
const BASE: u64 = 0x4000_0000;
const PAGES: u64 = 16;
const SIZE: u64 = PAGES * PAGE_SIZE as u64;
/// Where the console ring is mapped: outside RAM, like the magic pages.
const CONSOLE_GPA: u64 = 0x3900_0000;
/// The most guest accesses one call may make (console_io: 64 KiB in 128-byte chunks).
const MAX_ACCESSES: usize = 1024;

/// One guest access the hypervisor made: where, how long, writing or not.
#[derive(Clone, Copy, Debug)]
struct Access {
    addr: u64,
    len: usize,
    write: bool,
}

/// A vCPU whose guest memory (virtual = physical) is a byte vector at [`BASE`], recording
/// every access that succeeded and every page mapping asked for.
struct RecordingVcpu {
    mem: Vec<u8>,
    accesses: Vec<Access>,
    /// Bytes the hypervisor read, in order (to learn which addresses it was told about).
    read_bytes: Vec<Vec<u8>>,
    mapped: Vec<(u64, u64)>,
}

impl RecordingVcpu {
    fn new(mem: Vec<u8>) -> Self {
        Self { mem, accesses: Vec::new(), read_bytes: Vec::new(), mapped: Vec::new() }
    }

    fn range(&self, addr: u64, len: usize) -> Result<core::ops::Range<usize>, BadGuestAddress> {
        let off = addr.checked_sub(BASE).ok_or(BadGuestAddress(addr))?;
        let end = off.checked_add(len as u64).ok_or(BadGuestAddress(addr))?;
        if end > self.mem.len() as u64 {
            return Err(BadGuestAddress(addr));
        }
        Ok(off as usize..end as usize)
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.mem[r]);
        self.accesses.push(Access { addr, len: buf.len(), write: false });
        self.read_bytes.push(buf.to_vec());
        Ok(())
    }

    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        let r = self.range(addr, buf.len())?;
        self.mem[r].copy_from_slice(buf);
        self.accesses.push(Access { addr, len: buf.len(), write: true });
        Ok(())
    }
}

impl VirtualCpu for RecordingVcpu {
    fn run(&mut self) -> Exit {
        Exit::PowerOff
    }
    fn set_hypercall_result(&mut self, _value: u64) {}
    fn pc(&self) -> u64 {
        0
    }
    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        self.read(gva, buf)
    }
    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.write(gva, buf)
    }
    fn read_guest_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        self.read(gpa, buf)
    }
    fn write_guest_phys(&mut self, gpa: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.write(gpa, buf)
    }
    fn map_host_page(&mut self, gpa: u64, hpa: u64) -> Result<(), BadGuestAddress> {
        self.mapped.push((gpa, hpa));
        Ok(())
    }
    fn set_xen_timer(&mut self, _deadline_ns: Option<u64>) -> bool {
        true
    }
}

/// A domain with RAM at [`BASE`] and its Xen pages on the heap at fake host addresses
/// starting at `first_hpa`.
fn domain(id: u16, vcpu: &mut RecordingVcpu, first_hpa: u64) -> Domain {
    let mut d = Domain::with_vcpus(id, 2);
    d.set_ram(BASE, SIZE);
    let mut next = first_hpa;
    d.setup_xen_pages(vcpu, CONSOLE_GPA, &mut || {
        next += PAGE_SIZE as u64;
        Some(HostPage::on_heap(next))
    })
    .unwrap();
    d
}

fn xen_hpas(d: &Domain) -> Vec<u64> {
    let x = d.xen.as_ref().unwrap();
    let mut v = vec![x.shared_info.hpa, x.console_ring.hpa];
    v.extend(x.grant_frames.iter().map(|p| p.hpa));
    v
}

fn xen_bytes(d: &Domain) -> Vec<u8> {
    let x = d.xen.as_ref().unwrap();
    let mut v = x.shared_info.data.to_vec();
    v.extend_from_slice(x.console_ring.data);
    for p in &x.grant_frames {
        v.extend_from_slice(p.data);
    }
    v
}

/// Values that break hypervisors, as arguments and as structure words.
const BOUNDARY: [u64; 14] = [
    0,
    1,
    xen::DOMID_SELF as u64,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 7,
    BASE - 1,
    BASE + SIZE - 1,
    BASE + SIZE,
];

/// The families the dispatcher implements, weighted in.
const FAMILIES: [u64; 9] = [
    nr::XEN_VERSION,
    nr::CONSOLE_IO,
    nr::SCHED_OP,
    nr::MEMORY_OP,
    nr::HVM_OP,
    nr::VCPU_OP,
    nr::EVENT_CHANNEL_OP,
    nr::GRANT_TABLE_OP,
    nr::VM_ASSIST,
];

fn word() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0u64..2,
        3 => 0u64..64,
        2 => prop::sample::select(BOUNDARY.to_vec()),
        3 => (0..SIZE / 8).prop_map(|o| BASE + o * 8),
        1 => (0..SIZE).prop_map(|o| BASE + o),
        1 => (1..=PAGES).prop_map(|k| BASE + k * PAGE_SIZE as u64 - 4),
        1 => (0..PAGES).prop_map(|k| (BASE / PAGE_SIZE as u64) + k),
        1 => any::<u64>(),
    ]
}

/// One call, and maybe three structure words to put where its first or second pointer
/// argument points first (a well-formed-looking structure gets past the first checks).
#[derive(Clone, Copy, Debug)]
struct Call {
    args: HypercallArgs,
    prefill: Option<(usize, [u64; 3])>,
}

/// A structure word: two small u32 fields, our domain id and a small field, or anything.
fn field_word() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => (0u64..8, 0u64..8).prop_map(|(a, b)| a | b << 32),
        2 => (0u64..8).prop_map(|b| xen::DOMID_SELF as u64 | b << 32),
        1 => (0..PAGES).prop_map(|k| (BASE / PAGE_SIZE as u64) + k),
        2 => word(),
    ]
}

impl Call {
    /// Put the structure words in guest memory (as much of them as is memory).
    fn prefill_into(&self, vcpu: &mut RecordingVcpu) {
        let Some((arg, words)) = self.prefill else { return };
        for (i, w) in words.iter().enumerate() {
            if let Ok(r) = vcpu.range(self.args.args[arg].wrapping_add(8 * i as u64), 8) {
                vcpu.mem[r].copy_from_slice(&w.to_ne_bytes());
            }
        }
    }
}

fn hypercall() -> impl Strategy<Value = Call> {
    let number = prop_oneof![6 => prop::sample::select(FAMILIES.to_vec()), 1 => 0u64..64, 1 => any::<u64>()];
    let cmd = prop_oneof![4 => 0u64..16, 1 => 0u64..64, 1 => word()];
    // Leaning towards `{ domid = self, small field, small index, any frame }` and
    // `{ frame, offset }`.
    let head = prop_oneof![
        3 => (0u64..4).prop_map(|b| xen::DOMID_SELF as u64 | b << 32),
        1 => (0..PAGES).prop_map(|k| (BASE / PAGE_SIZE as u64) + k),
        1 => field_word(),
    ];
    let index = prop_oneof![2 => 0u64..4, 1 => field_word()];
    let prefill = prop::option::of((1usize..3, (head, index, field_word()).prop_map(|(a, b, c)| [a, b, c])));
    (number, cmd, prop::array::uniform4(word()), prefill).prop_map(|(nr, cmd, [a1, a2, a3, a4], prefill)| Call {
        args: HypercallArgs { nr, args: [cmd, a1, a2, a3, a4], compat: false },
        prefill,
    })
}

/// Guest memory full of structure-like words: our domain id next to small indices, small
/// numbers, pointers and frame numbers into this memory, noise.
fn memory(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut mem = vec![0u8; SIZE as usize];
    for chunk in mem.chunks_mut(8) {
        let r = next();
        let w = match r % 10 {
            // `{ domid, pad, index/space }`: mostly the first few indices.
            0..=2 => xen::DOMID_SELF as u64 | ((r >> 9) % if r & 0x100 != 0 { 4 } else { 48 }) << 32,
            3..=4 => (r >> 8) % 64,
            5..=6 => BASE + (r >> 8) % SIZE,
            7 => BASE / PAGE_SIZE as u64 + (r >> 8) % PAGES,
            _ => next(),
        };
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    mem
}

/// Addresses the guest named so far: arguments, and every u32/u64 at any offset of what the
/// hypervisor read (a frame number names its page too).
#[derive(Default)]
struct Named(BTreeSet<u64>);

impl Named {
    fn learn(&mut self, v: u64) {
        self.0.insert(v);
        if let Some(page) = v.checked_mul(PAGE_SIZE as u64) {
            self.0.insert(page);
        }
    }

    fn learn_bytes(&mut self, bytes: &[u8]) {
        for i in 0..bytes.len() {
            if let Some(b) = bytes.get(i..i + 8) {
                self.learn(u64::from_ne_bytes(b.try_into().unwrap()));
            }
            if let Some(b) = bytes.get(i..i + 4) {
                self.learn(u64::from(u32::from_ne_bytes(b.try_into().unwrap())));
            }
        }
    }

    /// `[addr, addr + len)` lies within the page that starts at a named address.
    fn covers(&self, a: &Access) -> bool {
        let end = a.addr + a.len as u64;
        self.0.range(a.addr.saturating_sub(PAGE_SIZE as u64)..=a.addr).any(|&n| end <= n + PAGE_SIZE as u64)
    }
}

fn check_outcome(call: &HypercallArgs, out: Outcome) -> Result<(), TestCaseError> {
    match out {
        Outcome::Return(v) if v < 0 => {
            prop_assert!(errno::is_xen_errno(-v), "{call:x?} returned {v}, not a Xen errno");
        }
        Outcome::Return(_) => {}
        Outcome::Yield | Outcome::Block => {
            prop_assert_eq!(call.nr, nr::SCHED_OP, "{:x?} yielded or blocked", call);
        }
        Outcome::SchedCtl(n, arg) => {
            prop_assert!(n == nr::SYSCTL || n == nr::DOMCTL, "{call:x?} went to the schedulers");
            prop_assert_eq!((n, arg), (call.nr, call.args[0]));
        }
        Outcome::Shutdown(reason) => {
            prop_assert_eq!(call.nr, nr::SCHED_OP);
            prop_assert_eq!(call.args[0], sched::SCHEDOP_SHUTDOWN);
            prop_assert!(reason <= 0xff, "shutdown reason {} is more than Xen's byte", reason);
        }
    }
    Ok(())
}

/// Run `calls` in order against one domain and check every property after each.
fn run_sequence(mem_seed: u64, calls: &[Call]) -> Result<(), TestCaseError> {
    let mut vcpu = RecordingVcpu::new(memory(mem_seed));
    let mut dom = domain(1, &mut vcpu, 0x10_0000);
    let mut bystander_vcpu = RecordingVcpu::new(vec![0; SIZE as usize]);
    let bystander = domain(2, &mut bystander_vcpu, 0x20_0000);
    let (own_hpas, bystander_before) = (xen_hpas(&dom), xen_bytes(&bystander));
    let mut named = Named::default();
    for c in calls {
        let call = &c.args;
        c.prefill_into(&mut vcpu);
        vcpu.accesses.clear();
        vcpu.read_bytes.clear();
        vcpu.mapped.clear();
        let before = vcpu.mem.clone();
        call.args.iter().for_each(|&a| named.learn(a));
        let out = dispatch(&mut dom, &mut vcpu, *call);
        check_outcome(call, out)?;
        prop_assert!(vcpu.accesses.len() <= MAX_ACCESSES, "{call:x?}: {} accesses", vcpu.accesses.len());
        for bytes in &vcpu.read_bytes {
            named.learn_bytes(bytes);
        }
        check_accesses(call, &vcpu, &named)?;
        check_untouched(call, &before, &vcpu)?;
        for &(gpa, hpa) in &vcpu.mapped {
            prop_assert!(own_hpas.contains(&hpa), "{call:x?} mapped host page {hpa:#x}, not one of ours");
            prop_assert!(gpa.is_multiple_of(PAGE_SIZE as u64), "{call:x?} mapped at {gpa:#x}");
        }
    }
    prop_assert!(xen_bytes(&bystander) == bystander_before, "the bystander domain's Xen pages changed");
    prop_assert_eq!(xen_hpas(&dom).len(), 2 + GRANT_FRAMES);
    Ok(())
}

/// Every access was inside guest memory and near a named address (a console write reads
/// exactly the buffer it was given).
fn check_accesses(call: &HypercallArgs, vcpu: &RecordingVcpu, named: &Named) -> Result<(), TestCaseError> {
    let console_write = call.nr == nr::CONSOLE_IO && call.args[0] == guest_abi::console::CONSOLEIO_WRITE;
    for a in &vcpu.accesses {
        let end = a.addr + a.len as u64;
        prop_assert!(a.addr >= BASE && end <= BASE + SIZE, "{call:x?}: access {a:x?} outside guest memory");
        if console_write {
            let [_, count, buf, ..] = call.args;
            let inside = a.addr >= buf && end <= buf.saturating_add(count & 0xffff_ffff);
            prop_assert!(!a.write && inside, "{call:x?}: console access {a:x?} outside its buffer");
        } else {
            prop_assert!(named.covers(a), "{call:x?}: access {a:x?} to an address nobody named");
        }
    }
    Ok(())
}

/// Bytes that changed were written by the hypervisor through the vCPU, nowhere else.
fn check_untouched(call: &HypercallArgs, before: &[u8], vcpu: &RecordingVcpu) -> Result<(), TestCaseError> {
    for (i, (old, new)) in before.iter().zip(&vcpu.mem).enumerate() {
        if old != new {
            let addr = BASE + i as u64;
            let written = vcpu.accesses.iter().any(|a| a.write && addr >= a.addr && addr < a.addr + a.len as u64);
            prop_assert!(written, "{call:x?}: guest byte at {addr:#x} changed without a write");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_hypercall_sequences_are_answered_and_stay_in_bounds(
        mem_seed in any::<u64>(),
        calls in prop::collection::vec(hypercall(), 1..24),
    ) {
        run_sequence(mem_seed, &calls)?;
    }
}

#[test]
fn the_checks_can_fail() {
    // A write nobody named is caught, and so is a changed byte nobody wrote.
    let mut vcpu = RecordingVcpu::new(vec![0; SIZE as usize]);
    vcpu.write(BASE + 0x2000, &[1]).unwrap();
    let call = HypercallArgs { nr: nr::XEN_VERSION, args: [0; 5], compat: false };
    let mut named = Named::default();
    named.learn(BASE);
    assert!(check_accesses(&call, &vcpu, &named).is_err());
    named.learn(BASE + 0x1ff0);
    assert!(check_accesses(&call, &vcpu, &named).is_ok());
    let before = vec![0; SIZE as usize];
    vcpu.mem[5] = 9;
    assert!(check_untouched(&call, &before, &vcpu).is_err());
    assert!(check_outcome(&call, Outcome::Return(-9999)).is_err());
    assert!(check_outcome(&call, Outcome::Shutdown(0)).is_err());
}

/// The generator is only worth its cases if it gets past the first checks: in a fixed run,
/// each of these operations succeeds at least once.
#[test]
fn the_generator_reaches_the_success_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut succeeded = BTreeSet::new();
    for _ in 0..3000 {
        let calls = prop::collection::vec(hypercall(), 1..24).new_tree(&mut runner).unwrap().current();
        let mut vcpu = RecordingVcpu::new(memory(runner.rng().next_u64()));
        let mut dom = domain(1, &mut vcpu, 0x10_0000);
        for c in calls {
            c.prefill_into(&mut vcpu);
            if matches!(dispatch(&mut dom, &mut vcpu, c.args), Outcome::Return(v) if v >= 0) {
                succeeded.insert((c.args.nr, c.args.args[0]));
            }
        }
    }
    let wanted = [
        (nr::MEMORY_OP, guest_abi::memory::XENMEM_ADD_TO_PHYSMAP),
        (nr::HVM_OP, guest_abi::hvm::HVMOP_GET_PARAM),
        (nr::HVM_OP, guest_abi::hvm::HVMOP_SET_PARAM),
        (nr::VCPU_OP, guest_abi::vcpu::VCPUOP_REGISTER_VCPU_INFO),
        (nr::EVENT_CHANNEL_OP, guest_abi::event_channel::EVTCHNOP_ALLOC_UNBOUND),
        (nr::EVENT_CHANNEL_OP, guest_abi::event_channel::EVTCHNOP_BIND_VIRQ),
        (nr::EVENT_CHANNEL_OP, guest_abi::event_channel::EVTCHNOP_SEND),
        (nr::GRANT_TABLE_OP, guest_abi::grant_table::GNTTABOP_QUERY_SIZE),
        (nr::CONSOLE_IO, guest_abi::console::CONSOLEIO_WRITE),
    ];
    for w in wanted {
        assert!(succeeded.contains(&w), "no successful call {w:?}");
    }
}
