//! The run loop: pick a vCPU, enter it, decide on its exit, until every domain has ended.
//!
//! The core owns this loop; arch only enters the guest and decodes exits. Every pCPU of the
//! pool runs its own copy of it ([`run_cpu`]) over one shared [`RunLoop`] and the domains,
//! behind one lock (the *core lock*, see [`run_cpu`]): a pCPU holds it to pick a vCPU and to
//! decide on an exit, and lets go of it while its vCPU runs in the guest or while it idles.
//! A vCPU leaves its slot while it runs, so only one pCPU holds it. A [`Scheduler`] picks
//! among the runnable vCPUs for each pCPU and each runs until its slice ends (arch preempts
//! it), it halts, yields or stops. A halted vCPU sleeps until an interrupt is pending for it
//! (its timer, an SGI, an upcall); a pCPU with nothing to run idles until the earliest timer
//! or a kick from another pCPU ([`Host::kick`]): when a vCPU becomes runnable for it, or an
//! event or virtual interrupt targets the vCPU it runs. Time comes from the [`Host`], never
//! from the scheduler. On one pCPU ([`RunLoop::run`]) this is the same loop.

use crate::domain::{Domain, DomainEnd, Others, pair_mut};
use crate::hvlog;
use crate::hypercall::grant_map;
use crate::hypercall::{self, Outcome};
use crate::runstate::State;
use crate::sched::{Cpu, OnePool, PoolControl, Scheduler, VcpuRef};
use alloc::boxed::Box;
use alloc::vec::Vec;
use arch::exit::{AfterExit, CpuOnResult, Exit, FaultKind, GuestFault, VirtualCpu};
use guest_abi::sched;

/// What the run loop needs from the physical CPU it runs on.
pub trait Host {
    /// The platform clock, in nanoseconds.
    fn now_ns(&mut self) -> u64;
    /// Wait until `deadline_ns` (`None`: no deadline), an interrupt or a kick; may return
    /// early.
    fn idle(&mut self, deadline_ns: Option<u64>);
    /// Make pCPU `cpu` of the pool (never the caller's own) leave its guest or its idle
    /// wait and look again. A kick sent while that pCPU is between the two is not lost: it
    /// ends its next guest entry or idle wait at once.
    fn kick(&mut self, _cpu: Cpu) {}
}

/// A vCPU's power and scheduling state, as the core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    /// Not created yet, or powered off: only a CPU_ON brings it back.
    Off,
    /// In the scheduler's hands.
    Runnable,
    /// Waiting for an interrupt (WFI/HLT, SCHEDOP_block).
    Halted,
}

struct Slot<V> {
    /// Index of its domain (in the `domains` given to [`RunLoop::run`]).
    domain: usize,
    /// Its index in that domain.
    index: usize,
    /// Boxed: it leaves its slot while it runs, and a pointer moves cheaper than a vCPU.
    vcpu: Option<Box<V>>,
    power: Power,
    /// The pCPU running it (it is out of its slot then).
    running_on: Option<Cpu>,
    /// An upcall raised while it was out of its slot: raised on it before its next entry.
    upcall: bool,
    /// The pCPU that ran it last.
    last_cpu: Option<Cpu>,
}

/// After an exit: keep running the vCPU, or go back to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Reschedule,
    /// The vCPU yielded: the scheduler hears of it, then picks.
    Yield,
}

/// Every vCPU of the domains it was given, and the policy choosing among them.
pub struct RunLoop<V, S> {
    slots: Vec<Slot<V>>,
    /// Slot of each domain's vCPU 0; its vCPU n is at `first[d] + n`.
    first: Vec<usize>,
    nr_vcpus: Vec<usize>,
    ends: Vec<Option<DomainEnd>>,
    /// The domain's teardown (channels, grants) was done, by the pCPU that ended it.
    torn_down: Vec<bool>,
    /// vCPUs in [`Power::Halted`]: with none, no exit needs to look for sleepers to wake.
    halted: usize,
    /// The runnable vCPUs were handed to the scheduler ([`RunLoop::start`]).
    started: bool,
    /// The pCPU that holds the core lock and works on the loop now.
    cpu: Cpu,
    /// pCPUs to kick (bit n: pCPU n) once the current step is done.
    kicks: u64,
    /// Grant mappings of an ended domain (mapper domain, guest-physical address) to remove
    /// from the mapper's stage 2 when one of its vCPUs is next in hand (none was in its slot
    /// at the teardown: they all ran on other pCPUs).
    pending_unmaps: Vec<(usize, u64)>,
    /// pCPUs of the pool whose loops run it ([`RunLoop::set_cpus`]).
    nr_cpus: usize,
    /// Per domain: how many times one of its vCPUs ran on another pCPU than the last time.
    moves: Vec<u64>,
    sched: S,
}

/// One pCPU's own state in the loop: the vCPU it runs and when that slice ends.
pub struct PerCpu {
    pub cpu: Cpu,
    current: Option<(VcpuRef, u64)>,
    /// The vCPU back in its slot whose state the last run left loaded in this pCPU: if the
    /// scheduler picks it again here it enters at no cost; else it is unloaded before the
    /// core lock is let go, so that any pCPU may take it.
    loaded: Option<VcpuRef>,
    /// A hypercall handled in place woke a vCPU the scheduler wants on this pCPU: the exit
    /// that follows goes back to the scheduler.
    resched: bool,
}

impl PerCpu {
    pub fn new(cpu: Cpu) -> Self {
        Self { cpu, current: None, loaded: None, resched: false }
    }
}

/// What a pCPU does next, as [`RunLoop::next_step`] decides under the core lock.
pub enum Step<V> {
    /// Enter `vcpu` (taken out of its slot `slot`) without the lock, then hand its exit to
    /// [`RunLoop::exited`].
    Run { slot: VcpuRef, vcpu: Box<V> },
    /// Nothing to run: idle until this time (`None`: until a kick or an interrupt).
    Idle(Option<u64>),
    /// Every domain has ended.
    Done,
}

/// The state every pCPU's loop shares, behind the core lock: the run loop (slots,
/// scheduler) and the domains.
pub struct Core<'a, V, S> {
    pub run_loop: &'a mut RunLoop<V, S>,
    pub domains: &'a mut [Domain],
}

/// Run pCPU `cpu`'s loop (pCPU `cpu` of the scheduler's pool) until every domain has ended;
/// returns how each ended. Call [`RunLoop::start`] first, once.
///
/// `core` is the *core lock*, the one lock of the core. Lock order: the core lock first;
/// under it a vCPU's arch state may take its domain's own lock (the aarch64 `DomainSpace`
/// spin lock: it takes no other but the leaves and is not held while a guest runs); the
/// leaves, the heap's allocator lock and the log's line lock, are taken (and let go)
/// anywhere. The core lock is never held while a guest runs or while the pCPU idles, and
/// never taken with a domain's lock held.
pub fn run_cpu<V: VirtualCpu, S: Scheduler>(
    cpu: Cpu,
    core: &spin::Mutex<Core<'_, V, S>>,
    host: &mut impl Host,
) -> Vec<DomainEnd> {
    let mut pc = PerCpu::new(cpu);
    let mut guard = core.lock();
    loop {
        let now = host.now_ns();
        let Core { run_loop, domains } = &mut *guard;
        let step = run_loop.next_step(&mut pc, domains, now);
        let kicks = run_loop.take_kicks();
        match step {
            Step::Done => return run_loop.ends(),
            Step::Idle(deadline) => {
                drop(guard);
                send_kicks(kicks, host);
                host.idle(deadline);
            }
            Step::Run { mut vcpu, .. } => {
                drop(guard);
                send_kicks(kicks, host);
                let exit = vcpu.run_with(&mut |v, exit| in_place(core, &mut pc, host, v, exit));
                guard = core.lock();
                let now = host.now_ns();
                let Core { run_loop, domains } = &mut *guard;
                run_loop.exited(&mut pc, vcpu, &exit, domains, now);
                let kicks = run_loop.take_kicks();
                send_kicks(kicks, host);
                // The next step follows under the same hold of the lock: a vCPU left
                // loaded here is picked again or unloaded before anyone else sees it.
                continue;
            }
        }
        guard = core.lock();
    }
}

/// The per-exit fast path, offered every exit while the vCPU stays loaded in this pCPU: a
/// hypercall that always returns to its caller is handled under the core lock and the guest
/// resumes, with no scheduling decision and nothing put away. Anything else, or anything
/// that needs the full path (an upcall or unmap left for this vCPU, its domain ended), leaves.
fn in_place<V: VirtualCpu, S: Scheduler>(
    core: &spin::Mutex<Core<'_, V, S>>,
    pc: &mut PerCpu,
    host: &mut impl Host,
    vcpu: &mut V,
    exit: &mut Exit,
) -> AfterExit {
    let Exit::Hypercall(call) = *exit else { return AfterExit::Leave };
    let Some((i, _)) = pc.current else { return AfterExit::Leave };
    if !hypercall::returns_in_place(call.nr) {
        return AfterExit::Leave;
    }
    let mut guard = core.lock();
    let Core { run_loop, domains } = &mut *guard;
    let after = run_loop.hypercall_in_place(pc, i, vcpu, exit, domains, host);
    let kicks = run_loop.take_kicks();
    drop(guard);
    send_kicks(kicks, host);
    after
}

/// Count vCPU `index` of domain `d`'s time in its current runstate up to `now`.
fn charge(domains: &mut [Domain], d: usize, index: usize, now: u64) {
    if let Some(x) = domains.get_mut(d).and_then(|dom| dom.vcpus.get_mut(index)) {
        x.runstate.charge(now);
    }
}

/// Move vCPU `index` of `domain` (`vcpu`) to runstate `state` at `now`, and if that is a
/// change, copy the record to the area the guest registered.
fn runstate_to(domain: &mut Domain, index: usize, vcpu: &mut dyn VirtualCpu, state: State, now: u64) {
    let flag = domain.runstate_update_flag();
    if let Some(x) = domain.vcpus.get_mut(index)
        && x.runstate.enter(state, now)
        && x.runstate.area.is_some()
    {
        x.runstate.publish(vcpu, flag);
    }
}

fn send_kicks(mut kicks: u64, host: &mut impl Host) {
    while kicks != 0 {
        let cpu = kicks.trailing_zeros() as usize;
        kicks &= kicks - 1;
        host.kick(cpu);
    }
}

impl<V: VirtualCpu, S: Scheduler> RunLoop<V, S> {
    pub fn new(sched: S) -> Self {
        Self {
            slots: Vec::new(),
            first: Vec::new(),
            nr_vcpus: Vec::new(),
            ends: Vec::new(),
            torn_down: Vec::new(),
            halted: 0,
            started: false,
            cpu: 0,
            kicks: 0,
            pending_unmaps: Vec::new(),
            nr_cpus: 1,
            moves: Vec::new(),
            sched,
        }
    }

    /// How many pCPUs run this loop (pCPUs 0 .. n of the scheduler's pool).
    pub fn set_cpus(&mut self, n: usize) {
        self.nr_cpus = n.max(1);
    }

    /// Add the next domain (its index is the number added before): `vcpu0` is runnable, its
    /// other `nr_vcpus - 1` vCPUs are off until a CPU_ON names them.
    pub fn add_domain(&mut self, nr_vcpus: usize, vcpu0: V) -> usize {
        let domain = self.first.len();
        self.first.push(self.slots.len());
        self.nr_vcpus.push(nr_vcpus.max(1));
        self.ends.push(None);
        self.torn_down.push(false);
        self.moves.push(0);
        let mut vcpu0 = Some(Box::new(vcpu0));
        for index in 0..nr_vcpus.max(1) {
            let vcpu = vcpu0.take();
            let power = if vcpu.is_some() { Power::Runnable } else { Power::Off };
            self.sched.add_vcpu(self.slots.len(), domain, index, 0);
            self.slots.push(Slot { domain, index, vcpu, power, running_on: None, upcall: false, last_cpu: None });
        }
        domain
    }

    /// The scheduler, to set its parameters (weights, caps, an ARINC 653 schedule).
    pub fn sched_mut(&mut self) -> &mut S {
        &mut self.sched
    }

    /// vCPU `index` of domain `domain`, if it exists, is on and is in its slot.
    pub fn vcpu(&self, domain: usize, index: usize) -> Option<&V> {
        let slot = self.slot_of(domain, index)?;
        self.slots[slot].vcpu.as_deref()
    }

    fn slot_of(&self, domain: usize, index: usize) -> Option<usize> {
        (index < *self.nr_vcpus.get(domain)?).then(|| self.first[domain] + index)
    }

    /// Run on this one pCPU (pCPU 0 of the pool) until every domain has ended;
    /// `domains[d]` is the domain added `d`-th.
    pub fn run(&mut self, domains: &mut [Domain], host: &mut impl Host) -> Vec<DomainEnd> {
        assert_eq!(domains.len(), self.first.len(), "one Domain per added domain");
        self.start(domains, host.now_ns());
        let core = spin::Mutex::new(Core { run_loop: self, domains });
        run_cpu(0, &core, host)
    }

    /// Hand the runnable vCPUs to the scheduler, before any pCPU's loop starts; every
    /// vCPU's runstate times count from `now` (building the domains is nobody's steal time).
    pub fn start(&mut self, domains: &mut [Domain], now: u64) {
        if core::mem::replace(&mut self.started, true) {
            return;
        }
        domains.iter_mut().flat_map(|d| d.vcpus.iter_mut()).for_each(|x| x.runstate.restart(now));
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.power == Power::Runnable {
                self.sched.wake(i, now);
            }
        }
    }

    /// How each domain ended (a domain still running counts as crashed).
    pub fn ends(&self) -> Vec<DomainEnd> {
        self.ends.iter().map(|e| e.unwrap_or(DomainEnd::Crashed)).collect()
    }

    /// The pCPUs other than the current one that must look again (and forget them).
    pub fn take_kicks(&mut self) -> u64 {
        core::mem::take(&mut self.kicks) & !(1u64 << (self.cpu % 64))
    }

    /// The scheduler named pCPU `tickled` for a woken vCPU: true if that is the current
    /// pCPU (its running vCPU should make way), else that pCPU is kicked.
    fn tickle(&mut self, tickled: Option<Cpu>) -> bool {
        match tickled {
            Some(c) if c == self.cpu => true,
            Some(c) => {
                self.kicks |= 1u64 << (c % 64);
                false
            }
            None => false,
        }
    }

    /// Under the core lock: what pCPU `pc.cpu` does next at `now`: go on with the vCPU it
    /// runs, or pick one, or idle.
    pub fn next_step(&mut self, pc: &mut PerCpu, domains: &mut [Domain], now: u64) -> Step<V> {
        self.cpu = pc.cpu;
        if self.ends.iter().all(Option::is_some) {
            pc.current = None;
            pc.loaded = None;
            return Step::Done;
        }
        // A vCPU picked now that is not the one this pCPU just put back changes runstate.
        let mut switched_in = false;
        let (i, slice_end) = match pc.current {
            Some(current) => current,
            None => {
                self.wake_halted(domains, now);
                let picked = self.sched.pick(pc.cpu, now);
                let loaded = pc.loaded.take();
                if let Some(l) = loaded
                    && picked.is_none_or(|d| d.vcpu != l)
                {
                    self.descheduled(l, domains, now);
                }
                switched_in = picked.is_some_and(|d| Some(d.vcpu) != loaded);
                match picked {
                    Some(d) => *pc.current.insert((d.vcpu, now.saturating_add(d.slice_ns))),
                    None => {
                        // Until a sleeper's timer, or until the policy has something (an
                        // ARINC 653 window opens, a capped vCPU is unparked), or a kick.
                        let policy = self.sched.next_event(pc.cpu, now);
                        let timer = self.earliest_timer();
                        return Step::Idle(match (policy, timer) {
                            (Some(p), Some(t)) => Some(p.min(t)),
                            (p, t) => p.or(t),
                        });
                    }
                }
            }
        };
        // A sleeper's timer also ends the slice, so that it wakes on time.
        let deadline = self.earliest_timer().map_or(slice_end, |t| t.min(slice_end));
        let Some(mut vcpu) = self.slots[i].vcpu.take() else {
            // Not in its slot (its domain is gone): back to the scheduler.
            pc.current = None;
            return Step::Idle(Some(now));
        };
        if core::mem::take(&mut self.slots[i].upcall) {
            vcpu.raise_upcall();
        }
        let slot = &mut self.slots[i];
        slot.running_on = Some(pc.cpu);
        if slot.last_cpu.replace(pc.cpu).is_some_and(|c| c != pc.cpu) {
            self.moves[slot.domain] += 1;
        }
        if switched_in {
            runstate_to(&mut domains[slot.domain], slot.index, &mut *vcpu, State::Running, now);
        }
        vcpu.set_preemption_deadline(Some(deadline));
        Step::Run { slot: i, vcpu }
    }

    /// Under the core lock: the vCPU [`RunLoop::next_step`] gave pCPU `pc.cpu` left the
    /// guest with `exit` at `now`. Decide on it, wake whom it woke, and put the vCPU back
    /// in its slot. If the scheduler is to look again, the vCPU stays loaded in this pCPU
    /// until the next step, which must follow under the same hold of the core lock.
    pub fn exited(&mut self, pc: &mut PerCpu, mut vcpu: Box<V>, exit: &Exit, domains: &mut [Domain], now: u64) {
        self.cpu = pc.cpu;
        let resched = core::mem::take(&mut pc.resched);
        let Some((i, slice_end)) = pc.current else { return };
        self.slots[i].running_on = None;
        if core::mem::take(&mut self.slots[i].upcall) {
            vcpu.raise_upcall();
        }
        let d = self.slots[i].domain;
        if self.ends[d].is_some() {
            // Its domain ended on another pCPU while it ran: `vcpu` goes with it.
            pc.current = None;
            return;
        }
        charge(domains, d, self.slots[i].index, now);
        if !self.pending_unmaps.is_empty() {
            self.pending_unmaps.retain(|&(o, gpa)| {
                if o == d {
                    let _ = vcpu.unmap_grant(gpa);
                }
                o != d
            });
        }
        let next = self.decide(i, &mut vcpu, exit, domains, now);
        // Virtual interrupts it made pending for siblings running elsewhere.
        let siblings = vcpu.take_sibling_kicks();
        self.kick_running(d, siblings);
        // Events may have reached this domain's other vCPUs, or other domains.
        for (dd, dom) in domains.iter_mut().enumerate() {
            if dom.remote_upcalls != 0 {
                self.raise_remote_upcalls(dd, dom);
            }
        }
        if self.ends[d].is_some() {
            // The domain ended: `vcpu` goes with it.
            if !core::mem::replace(&mut self.torn_down[d], true) {
                self.tear_down(d, domains);
            }
            pc.current = None;
            return;
        }
        self.slots[i].vcpu = Some(vcpu);
        let woke = self.wake_halted(domains, now);
        if next == Next::Yield && self.slots[i].power == Power::Runnable {
            self.sched.yield_now(i, now);
        }
        if next != Next::Continue || woke || resched || now >= slice_end {
            // Back to the scheduler, which requeues vCPU `i` if it is still runnable and may
            // give it to another pCPU (the next step unloads it unless it runs here again).
            pc.loaded = Some(i);
            pc.current = None;
        }
    }

    /// Under the core lock, vCPU `i` still loaded in pCPU `pc.cpu` (see [`in_place`]): handle
    /// the hypercall `exit` reports, one for which [`hypercall::returns_in_place`] holds,
    /// unless the full path has something to do on this exit.
    fn hypercall_in_place(
        &mut self,
        pc: &mut PerCpu,
        i: VcpuRef,
        vcpu: &mut V,
        exit: &mut Exit,
        domains: &mut [Domain],
        host: &mut impl Host,
    ) -> AfterExit {
        self.cpu = pc.cpu;
        let Exit::Hypercall(call) = *exit else { return AfterExit::Leave };
        let (d, index) = (self.slots[i].domain, self.slots[i].index);
        if self.slots[i].upcall || self.ends[d].is_some() || !self.pending_unmaps.is_empty() {
            return AfterExit::Leave;
        }
        if call.nr == guest_abi::hypercall::VCPU_OP {
            // Its running time so far, for a runstate read in place (the only reader; other
            // calls leave the clock unread).
            charge(domains, d, index, host.now_ns());
        }
        let (domain, mut peers) = Others::split(domains, d);
        domain.current_vcpu = index;
        let result = hypercall::dispatch_returning(domain, &mut peers, vcpu, call);
        vcpu.set_hypercall_result(hypercall::result_register(result.unwrap_or_else(|e| -e)));
        // What the full path does after any exit: kicks for siblings, upcalls for others,
        // sleepers woken.
        let siblings = vcpu.take_sibling_kicks();
        self.kick_running(d, siblings);
        for (dd, dom) in domains.iter_mut().enumerate() {
            if dom.remote_upcalls != 0 {
                self.raise_remote_upcalls(dd, dom);
            }
        }
        if self.halted != 0 && self.wake_halted(domains, host.now_ns()) {
            // The scheduler wants this pCPU for the one woken.
            pc.resched = true;
            *exit = Exit::Preempted;
            return AfterExit::Leave;
        }
        AfterExit::Resume
    }

    /// Kick the pCPUs running the vCPUs of domain `d` in `mask` (bit n: vCPU n), but this one.
    fn kick_running(&mut self, d: usize, mut mask: u64) {
        while mask != 0 {
            let n = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(c) = self.slot_of(d, n).and_then(|s| self.slots[s].running_on)
                && c != self.cpu
            {
                self.kicks |= 1u64 << (c % 64);
            }
        }
    }

    /// Act on one exit of vCPU `i` (out of its slot while this runs).
    fn decide(&mut self, i: VcpuRef, vcpu: &mut V, exit: &Exit, domains: &mut [Domain], now: u64) -> Next {
        let (d, index) = (self.slots[i].domain, self.slots[i].index);
        let (domain, mut peers) = Others::split(domains, d);
        domain.current_vcpu = index;
        match *exit {
            Exit::Hypercall(call) => match hypercall::dispatch_with(domain, &mut peers, vcpu, call) {
                Outcome::Return(v) => vcpu.set_hypercall_result(hypercall::result_register(v)),
                Outcome::Yield => {
                    vcpu.set_hypercall_result(0);
                    return Next::Yield;
                }
                Outcome::Block => {
                    vcpu.set_hypercall_result(0);
                    return self.halt(i, vcpu, domain, now);
                }
                Outcome::Shutdown(reason) => {
                    let end = shutdown_end(domain, reason);
                    self.end_domain(d, domain, end, now);
                }
                Outcome::SchedCtl(nr, arg) => return self.sched_ctl(d, index, vcpu, nr, arg, domains, now),
            },
            Exit::Halt => return self.halt(i, vcpu, domain, now),
            Exit::Preempted => {
                if vcpu.take_expired_timer() {
                    domain.raise_virq(vcpu, guest_abi::event_channel::VIRQ_TIMER);
                }
            }
            Exit::Yield => return Next::Yield,
            Exit::PowerOff => {
                hvlog!("d{}: powered off", domain.id);
                self.end_domain(d, domain, DomainEnd::PoweredOff, now);
            }
            Exit::Reset => {
                hvlog!("d{}: asked for a reset; reboot is not supported, destroying it", domain.id);
                self.end_domain(d, domain, DomainEnd::PoweredOff, now);
            }
            Exit::Fault(fault) => {
                report_fault(domain, index, &fault);
                self.end_domain(d, domain, DomainEnd::Crashed, now);
            }
            Exit::Mmio(access) => {
                if let Err(fault) = domain.mmio(vcpu, access) {
                    report_fault(domain, index, &fault);
                    self.end_domain(d, domain, DomainEnd::Crashed, now);
                }
            }
            Exit::CpuOn { target, entry, context } => {
                let result = self.cpu_on(d, vcpu, target, entry, context, now);
                if result == CpuOnResult::Started {
                    hvlog!("d{}v{}: powered on by v{} at {:#x}", domain.id, target, index, entry);
                    if let Some(t) = self.slot_of(d, target).and_then(|t| self.slots[t].vcpu.as_deref_mut()) {
                        runstate_to(domain, target, t, State::Runnable, now);
                    }
                }
                vcpu.complete_cpu_on(result);
            }
            Exit::CpuOff => {
                self.set_power(i, Power::Off);
                self.sched.sleep(i, now);
                let first = self.first[d];
                let all_off = self.slots[first..first + self.nr_vcpus[d]].iter().all(|s| s.power == Power::Off);
                if all_off {
                    hvlog!("d{}: every vCPU is off", domain.id);
                    self.end_domain(d, domain, DomainEnd::PoweredOff, now);
                }
                return Next::Reschedule;
            }
        }
        Next::Continue
    }

    /// `sysctl`/`domctl` from vCPU `index` of domain `d`: the scheduler's control operations.
    #[allow(clippy::too_many_arguments)]
    fn sched_ctl(
        &mut self,
        d: usize,
        index: usize,
        vcpu: &mut V,
        nr: u64,
        arg: u64,
        domains: &mut [Domain],
        now: u64,
    ) -> Next {
        use hypercall::sched_ctl::{self, Changed, SchedCtl};
        let domids: Vec<u16> = domains.iter().map(|x| x.id).collect();
        let nr_cpus = self.nr_cpus;
        let domain = &mut domains[d];
        domain.current_vcpu = index;
        domain.call_compat = false;
        let call = |pools: &mut dyn PoolControl, vcpu: &mut V| {
            let mut ctl = SchedCtl { pools, domids: &domids, now };
            if nr == guest_abi::hypercall::SYSCTL {
                sched_ctl::sysctl(domain, vcpu, arg, &mut ctl)
            } else {
                sched_ctl::domctl(domain, vcpu, arg, &mut ctl)
            }
        };
        let (result, changed) = match self.sched.control() {
            Some(pools) => call(pools, vcpu),
            None => call(&mut OnePool { sched: &mut self.sched, nr_cpus }, vcpu),
        };
        match changed {
            Changed::Nothing => {}
            Changed::Arinc653 { major_frame_ns, at } => hvlog!(
                "d{}: new ARINC 653 schedule (major frame {} us) in force from {} ns on every pCPU",
                domain.id,
                major_frame_ns / 1000,
                at
            ),
            Changed::CreditGlobals(t, r) => hvlog!("d{}: credit timeslice {} ms, rate limit {} us", domain.id, t, r),
            Changed::Credit(id, p) => hvlog!("d{}: d{} weight {} cap {}", domain.id, id, p.weight, p.cap),
        }
        let v = match result {
            Ok(v) => v,
            Err(e) => -e,
        };
        vcpu.set_hypercall_result(hypercall::result_register(v));
        // A new schedule may change what every pCPU runs: all look again.
        if matches!(changed, Changed::Nothing) {
            Next::Continue
        } else {
            self.kicks |= if nr_cpus >= 64 { u64::MAX } else { (1u64 << nr_cpus) - 1 };
            Next::Reschedule
        }
    }

    /// PSCI CPU_ON from a vCPU of domain `d` for its vCPU `target`.
    fn cpu_on(&mut self, d: usize, caller: &mut V, target: usize, entry: u64, context: u64, now: u64) -> CpuOnResult {
        let Some(t) = self.slot_of(d, target) else { return CpuOnResult::NoSuchCpu };
        if self.slots[t].power != Power::Off {
            return CpuOnResult::AlreadyOn;
        }
        let Some(vcpu) = caller.power_on_sibling(target, entry, context) else { return CpuOnResult::Failed };
        self.slots[t].vcpu = Some(Box::new(vcpu));
        self.slots[t].power = Power::Runnable;
        // Another pCPU may be idle for it; this one goes on with the caller.
        let tickled = self.sched.wake(t, now);
        self.tickle(tickled);
        CpuOnResult::Started
    }

    /// The vCPU waits for an interrupt: it sleeps unless one is already pending, or an event
    /// upcall is due (it may have been marked while the vCPU could take no interrupt).
    fn halt(&mut self, i: VcpuRef, vcpu: &mut V, domain: &mut Domain, now: u64) -> Next {
        if vcpu.interrupt_pending() || domain.upcall_due(Some(vcpu), self.slots[i].index) {
            return Next::Continue;
        }
        self.set_power(i, Power::Halted);
        self.sched.block(i, now);
        Next::Reschedule
    }

    /// Make halted vCPUs with a pending interrupt or a due upcall runnable; true if one should
    /// preempt what runs (the scheduler tickled this CPU).
    fn wake_halted(&mut self, domains: &mut [Domain], now: u64) -> bool {
        if self.halted == 0 {
            return false;
        }
        let mut woke = false;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.power != Power::Halted {
                continue;
            }
            let Some(vcpu) = slot.vcpu.as_deref_mut() else { continue };
            if vcpu.interrupt_pending() || domains[slot.domain].upcall_due(Some(vcpu), slot.index) {
                runstate_to(&mut domains[slot.domain], slot.index, vcpu, State::Runnable, now);
                slot.power = Power::Runnable;
                self.halted -= 1;
                let tickled = self.sched.wake(i, now);
                woke |= self.tickle(tickled);
            }
        }
        woke
    }

    /// vCPU `l`, which this pCPU ran until its last exit and kept loaded, was not picked
    /// again: it is put away, and its runstate follows its power state (runnable, blocked,
    /// offline) from `now`.
    fn descheduled(&mut self, l: VcpuRef, domains: &mut [Domain], now: u64) {
        let slot = &mut self.slots[l];
        let Some(vcpu) = slot.vcpu.as_deref_mut() else { return };
        vcpu.unload();
        let state = match slot.power {
            Power::Runnable => State::Runnable,
            Power::Halted => State::Blocked,
            Power::Off => State::Offline,
        };
        runstate_to(&mut domains[slot.domain], slot.index, vcpu, state, now);
    }

    /// Change slot `i`'s power state, keeping count of the halted ones.
    fn set_power(&mut self, i: usize, power: Power) {
        let old = core::mem::replace(&mut self.slots[i].power, power);
        self.halted = self.halted + usize::from(power == Power::Halted) - usize::from(old == Power::Halted);
    }

    /// The earliest timer of a halted vCPU: when the CPU must look again.
    fn earliest_timer(&self) -> Option<u64> {
        if self.halted == 0 {
            return None;
        }
        self.slots
            .iter()
            .filter(|s| s.power == Power::Halted)
            .filter_map(|s| s.vcpu.as_ref()?.timer_deadline_ns())
            .min()
    }

    /// Raise the upcalls domain `d`'s event channels left for vCPUs other than the one whose
    /// exit was handled (a vCPU that is off gets none: its `vcpu_info` keeps the event).
    fn raise_remote_upcalls(&mut self, d: usize, domain: &mut Domain) {
        let mut mask = core::mem::take(&mut domain.remote_upcalls);
        while mask != 0 {
            let n = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let Some(s) = self.slot_of(d, n) else { continue };
            let slot = &mut self.slots[s];
            if let Some(vcpu) = slot.vcpu.as_mut() {
                vcpu.raise_upcall();
            } else if slot.power != Power::Off {
                // Out of its slot: running on a pCPU (this one's, in hand, or another's,
                // which must leave the guest to take it). Raised before its next entry.
                slot.upcall = true;
                if let Some(c) = slot.running_on
                    && c != self.cpu
                {
                    self.kicks |= 1u64 << (c % 64);
                }
            }
        }
    }

    /// Domain `d` has ended: its channels' far ends wait again, what it mapped of others'
    /// grants is released, and every domain that mapped its pages loses them.
    fn tear_down(&mut self, d: usize, domains: &mut [Domain]) {
        let (domain, mut peers) = Others::split(domains, d);
        domain.dying = true;
        domain.disconnect_peers(&mut peers);
        grant_map::release_held(domain, &mut peers);
        let id = domain.id;
        for o in 0..domains.len() {
            if o == d || !domains[o].grants.mappings().any(|(_, m)| m.granter == id) {
                continue;
            }
            // Any vCPU of the mapper changes its domain's address space.
            let slots = (0..self.nr_vcpus[o]).filter_map(|n| self.slot_of(o, n));
            let holder = slots.into_iter().find(|&s| self.slots[s].vcpu.is_some());
            if holder.is_none() {
                // Every vCPU of the mapper runs on another pCPU: the first of them to exit
                // unmaps these pages from its domain's stage 2 (they are kicked to exit).
                let gpas = domains[o].grants.mappings().filter(|(_, m)| m.granter == id).map(|(_, m)| m.gpa);
                self.pending_unmaps.extend(gpas.map(|gpa| (o, gpa)));
                let running: u64 = (0..self.nr_vcpus[o])
                    .map(|n| self.slot_of(o, n).and_then(|s| self.slots[s].running_on))
                    .fold(0, |acc, c| acc | c.map_or(0, |c| 1u64 << (c % 64)));
                self.kicks |= running;
            }
            let vcpu = holder.and_then(|s| self.slots[s].vcpu.as_deref_mut()).map(|v| v as &mut dyn VirtualCpu);
            let (lender, mapper) = pair_mut(domains, d, o);
            grant_map::revoke_lent(lender, mapper, vcpu);
        }
    }

    /// Domain `d` is over: its vCPUs stop for good.
    fn end_domain(&mut self, d: usize, domain: &mut Domain, end: DomainEnd, now: u64) {
        let first = self.first[d];
        for i in first..first + self.nr_vcpus[d] {
            self.set_power(i, Power::Off);
            self.slots[i].vcpu = None;
            self.slots[i].upcall = false;
            if let Some(c) = self.slots[i].running_on {
                // It runs on another pCPU, which drops it at its next exit: make that soon.
                self.kicks |= 1u64 << (c % 64);
            }
            self.sched.remove_vcpu(i, now);
        }
        domain.console_flush();
        if self.moves[d] > 0 {
            hvlog!("d{}: its vCPUs moved between pCPUs {} times", domain.id, self.moves[d]);
        }
        // Where the host has a clock, say when: under QEMU's -icount this is the exact
        // guest-virtual time since power-on (the boot benchmark reads it).
        if now > 0 {
            hvlog!(
                "d{}: ended at {}.{:06} s since power-on; its event channels and grants held {} KiB",
                domain.id,
                now / 1_000_000_000,
                now % 1_000_000_000 / 1000,
                domain.heap_bytes().div_ceil(1024)
            );
        }
        self.ends[d] = Some(end);
        if self.ends.iter().all(Option::is_some) {
            // The last one: every other pCPU, idle ones included, must see that it is done.
            self.kicks = u64::MAX;
        }
    }
}

fn shutdown_end(domain: &Domain, reason: u32) -> DomainEnd {
    let (what, end) = match reason {
        sched::SHUTDOWN_POWEROFF => ("poweroff", DomainEnd::PoweredOff),
        sched::SHUTDOWN_REBOOT => ("reboot (not supported: destroyed)", DomainEnd::PoweredOff),
        sched::SHUTDOWN_CRASH => ("crash", DomainEnd::Crashed),
        _ => ("other", DomainEnd::Crashed),
    };
    hvlog!("d{}: shutdown requested, reason {} ({})", domain.id, reason, what);
    end
}

fn report_fault(domain: &Domain, vcpu_id: usize, f: &GuestFault) {
    let what = match f.kind {
        FaultKind::UnmappedGuestPhysical => "access outside its memory",
        FaultKind::UnhandledTrap => "unhandled trap",
        FaultKind::FatalState => "fatal vCPU state",
    };
    hvlog!(
        "d{}v{}: guest fault: {} at gpa {:#x}, pc {:#x}, syndrome {:#x}",
        domain.id,
        vcpu_id,
        what,
        f.gpa,
        f.pc,
        f.syndrome
    );
    hvlog!("d{}: domain crashed", domain.id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::HostPage;
    use crate::sched::RoundRobin;
    use alloc::collections::VecDeque;
    use alloc::format;
    use alloc::rc::Rc;
    use alloc::string::String;
    use arch::exit::{BadGuestAddress, HypercallArgs};
    use core::cell::{Cell, RefCell};
    use guest_abi::{errno, event_channel as ev, hypercall as nr};

    const SLICE: u64 = 1_000_000;

    /// What the test vCPUs share: the clock and a log of what happened, in order.
    #[derive(Clone, Default)]
    struct World {
        clock: Rc<Cell<u64>>,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl World {
        fn note(&self, s: String) {
            self.log.borrow_mut().push(s);
        }
        fn log(&self) -> Vec<String> {
            self.log.borrow().clone()
        }
    }

    impl Host for World {
        fn now_ns(&mut self) -> u64 {
            self.clock.get()
        }
        fn idle(&mut self, deadline_ns: Option<u64>) {
            let until = deadline_ns.unwrap_or_else(|| panic!("idle with nothing to wake a vCPU: {:?}", self.log()));
            self.note(format!("idle until {until}"));
            self.clock.set(self.clock.get().max(until));
        }
    }

    /// A vCPU that replays a script of exits (then powers off) and logs what it is told.
    struct Scripted {
        id: usize,
        world: World,
        exits: VecDeque<Exit>,
        mem: Vec<u8>,
        /// Its timer fires at this time.
        timer: Option<u64>,
        upcalls: usize,
        /// False: the guest set no upcall vector, so a raised upcall interrupts nothing.
        upcall_vector: bool,
        deadline: Option<u64>,
        /// The siblings CPU_ON creates (by their `id`).
        siblings: Vec<Scripted>,
    }

    impl Scripted {
        fn new(world: &World, id: usize, exits: Vec<Exit>) -> Self {
            Scripted {
                id,
                world: world.clone(),
                exits: exits.into(),
                mem: vec![0; 64],
                timer: None,
                upcalls: 0,
                upcall_vector: true,
                deadline: None,
                siblings: vec![],
            }
        }
    }

    impl VirtualCpu for Scripted {
        fn run(&mut self) -> Exit {
            let exit = self.exits.pop_front().unwrap_or(Exit::PowerOff);
            let clock = &self.world.clock;
            match exit {
                // Preempted: the slice ran out.
                Exit::Preempted => clock.set(self.deadline.expect("a slice deadline").max(clock.get())),
                _ => clock.set(clock.get() + 1_000),
            }
            self.world.note(format!("v{} {:?}", self.id, exit));
            exit
        }
        fn set_hypercall_result(&mut self, value: u64) {
            self.world.note(format!("v{} result {:#x}", self.id, value));
        }
        fn pc(&self) -> u64 {
            0x1000
        }
        fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
            let s = gva as usize;
            let src = self.mem.get(s..s + buf.len()).ok_or(BadGuestAddress(gva))?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
            let s = gva as usize;
            let dst = self.mem.get_mut(s..s + buf.len()).ok_or(BadGuestAddress(gva))?;
            dst.copy_from_slice(buf);
            Ok(())
        }
        fn map_host_page(&mut self, _gpa: u64, _hpa: u64) -> Result<(), BadGuestAddress> {
            Ok(())
        }
        fn raise_upcall(&mut self) {
            self.upcalls += usize::from(self.upcall_vector);
            self.world.note(format!("v{} upcall", self.id));
        }
        fn complete_cpu_on(&mut self, result: CpuOnResult) {
            self.world.note(format!("v{} cpu_on {:?}", self.id, result));
        }
        fn power_on_sibling(&mut self, index: usize, entry: u64, context: u64) -> Option<Self> {
            let pos = self.siblings.iter().position(|s| s.id == index)?;
            self.world.note(format!("v{index} created at {entry:#x} with {context:#x}"));
            Some(self.siblings.remove(pos))
        }
        fn interrupt_pending(&self) -> bool {
            self.upcalls > 0 || self.timer.is_some_and(|t| self.world.clock.get() >= t)
        }
        fn timer_deadline_ns(&self) -> Option<u64> {
            self.timer
        }
        fn set_preemption_deadline(&mut self, deadline_ns: Option<u64>) {
            self.deadline = deadline_ns;
        }
    }

    fn hc(nr: u64, args: [u64; 5]) -> Exit {
        Exit::Hypercall(HypercallArgs { nr, args, compat: false })
    }

    fn cpu_on(target: usize) -> Exit {
        Exit::CpuOn { target, entry: 0x4008_0000, context: 0x77 }
    }

    /// Run one domain of `nr_vcpus` whose vCPU 0 is `vcpu0`.
    fn run_domain(world: &World, dom: &mut Domain, vcpu0: Scripted) -> DomainEnd {
        let mut rl = RunLoop::new(RoundRobin::new(SLICE));
        rl.add_domain(dom.vcpus.len(), vcpu0);
        rl.run(core::slice::from_mut(dom), &mut world.clone())[0]
    }

    fn sibling(world: &World, exits: Vec<Exit>, timer: Option<u64>) -> Scripted {
        let mut v = Scripted::new(world, 1, exits);
        v.timer = timer;
        v
    }

    fn runs(log: &[String]) -> Vec<&str> {
        log.iter().filter(|l| l.ends_with("Preempted")).map(|l| &l[..2]).collect()
    }

    #[test]
    fn hello_sequence_ends_powered_off_with_results_delivered() {
        let world = World::default();
        let mut vcpu = Scripted::new(
            &world,
            0,
            vec![
                hc(nr::XEN_VERSION, [0; 5]),
                hc(nr::CONSOLE_IO, [0, 3, 0, 0, 0]),
                hc(nr::MMU_UPDATE, [0; 5]),
                hc(nr::SCHED_OP, [sched::SCHEDOP_SHUTDOWN, 16, 0, 0, 0]),
            ],
        );
        vcpu.mem[0..3].copy_from_slice(b"hi\n");
        vcpu.mem[16..20].copy_from_slice(&sched::SHUTDOWN_POWEROFF.to_ne_bytes());
        assert_eq!(run_domain(&world, &mut Domain::new(1), vcpu), DomainEnd::PoweredOff);
        let results: Vec<String> = world.log().into_iter().filter(|l| l.contains("result")).collect();
        let enosys = (-errno::ENOSYS) as u64;
        assert_eq!(
            results,
            [format!("v0 result {:#x}", (4 << 16) | 17), "v0 result 0x0".into(), format!("v0 result {enosys:#x}")]
        );
    }

    #[test]
    fn a_guest_fault_crashes_only_the_domain() {
        let world = World::default();
        let fault = GuestFault { kind: FaultKind::UnmappedGuestPhysical, gpa: 0xdead_0000, pc: 0x1000, syndrome: 0 };
        let vcpu = Scripted::new(&world, 0, vec![Exit::Fault(fault)]);
        assert_eq!(run_domain(&world, &mut Domain::new(1), vcpu), DomainEnd::Crashed);
    }

    #[test]
    fn crash_shutdown_reason_is_a_crash() {
        let world = World::default();
        let mut vcpu = Scripted::new(&world, 0, vec![hc(nr::SCHED_OP, [sched::SCHEDOP_SHUTDOWN, 0, 0, 0, 0])]);
        vcpu.mem[0..4].copy_from_slice(&sched::SHUTDOWN_CRASH.to_ne_bytes());
        assert_eq!(run_domain(&world, &mut Domain::new(1), vcpu), DomainEnd::Crashed);
    }

    #[test]
    fn cpu_on_creates_a_runnable_vcpu() {
        let world = World::default();
        let mut vcpu0 = Scripted::new(&world, 0, vec![cpu_on(1), Exit::Halt]);
        vcpu0.siblings.push(sibling(&world, vec![Exit::PowerOff], None));
        assert_eq!(run_domain(&world, &mut Domain::with_vcpus(1, 2), vcpu0), DomainEnd::PoweredOff);
        assert_eq!(
            world.log(),
            [
                "v0 CpuOn { target: 1, entry: 1074266112, context: 119 }",
                "v1 created at 0x40080000 with 0x77",
                "v0 cpu_on Started",
                "v0 Halt",
                "v1 PowerOff",
            ]
        );
    }

    #[test]
    fn cpu_on_an_online_or_missing_vcpu_is_refused() {
        let world = World::default();
        let mut vcpu0 = Scripted::new(&world, 0, vec![cpu_on(1), cpu_on(1), cpu_on(0), cpu_on(2), Exit::PowerOff]);
        vcpu0.siblings.push(sibling(&world, vec![Exit::Halt], None));
        assert_eq!(run_domain(&world, &mut Domain::with_vcpus(1, 2), vcpu0), DomainEnd::PoweredOff);
        let answers: Vec<String> = world.log().into_iter().filter(|l| l.contains("cpu_on")).collect();
        assert_eq!(answers, ["v0 cpu_on Started", "v0 cpu_on AlreadyOn", "v0 cpu_on AlreadyOn", "v0 cpu_on NoSuchCpu"]);
    }

    #[test]
    fn preempted_vcpus_take_turns() {
        let world = World::default();
        let mut vcpu0 = Scripted::new(&world, 0, vec![cpu_on(1), Exit::Preempted, Exit::Preempted, Exit::Preempted]);
        vcpu0.siblings.push(sibling(&world, vec![Exit::Preempted, Exit::Preempted, Exit::Preempted, Exit::Halt], None));
        let end = run_domain(&world, &mut Domain::with_vcpus(1, 2), vcpu0);
        assert_eq!(end, DomainEnd::PoweredOff);
        let log = world.log();
        assert_eq!(runs(&log), ["v0", "v1", "v0", "v1", "v0", "v1"]);
        // Each got a full slice: the clock advanced by one slice per turn.
        assert!(world.clock.get() >= 6 * SLICE);
    }

    #[test]
    fn each_vcpu_is_charged_the_time_it_held_the_pcpu_for_its_runstate() {
        let world = World::default();
        // Two domains on one pCPU, 1 ms slices: d1 runs 0-1 ms and 2-2.001 ms (its power
        // off), d2 runs 1-2 ms and 2.001-2.002 ms.
        let mut doms = vec![Domain::with_vcpus(1, 1), Domain::with_vcpus(2, 1)];
        let mut rl = RunLoop::new(RoundRobin::new(SLICE));
        rl.add_domain(1, Scripted::new(&world, 0, vec![Exit::Preempted]));
        rl.add_domain(1, Scripted::new(&world, 1, vec![Exit::Preempted]));
        rl.run(&mut doms, &mut world.clone());
        assert_eq!(runs(&world.log()), ["v0", "v1"], "{:?}", world.log());
        let time = |d: usize| doms[d].vcpus[0].runstate.time;
        let (running, runnable) = (State::Running as usize, State::Runnable as usize);
        assert_eq!((time(0)[running], time(1)[running]), (SLICE + 1_000, SLICE + 1_000));
        // Each waited while the other ran.
        assert_eq!((time(0)[runnable], time(1)[runnable]), (SLICE, SLICE + 1_000));
    }

    #[test]
    fn a_vcpu_is_offline_until_cpu_on_and_blocked_while_halted() {
        let world = World::default();
        let mut vcpu0 = Scripted::new(&world, 0, vec![cpu_on(1), Exit::Halt]);
        vcpu0.siblings.push(sibling(&world, vec![Exit::Halt, Exit::PowerOff], Some(50 * SLICE)));
        let mut dom = Domain::with_vcpus(1, 2);
        assert_eq!(run_domain(&world, &mut dom, vcpu0), DomainEnd::PoweredOff);
        let v1 = dom.vcpus[1].runstate;
        // Off from the start until v0's CPU_ON, blocked from its halt until its timer woke it
        // at 50 slices, then runnable and running until it powered the domain off.
        assert!(v1.time[State::Offline as usize] > 0, "{v1:?}");
        let blocked = v1.time[State::Blocked as usize];
        assert!(blocked > 45 * SLICE && blocked < 50 * SLICE, "{v1:?}");
        assert_eq!(v1.state, State::Running);
        assert!(v1.entry_ns >= 50 * SLICE, "{v1:?}");
        assert_eq!(dom.vcpus[0].runstate.state, State::Blocked);
    }

    #[test]
    fn sysctl_from_the_control_domain_reaches_the_scheduler_and_others_get_eperm() {
        use guest_abi::sysctl as x;
        let world = World::default();
        // A sysctl getinfo of the credit parameters, at guest address 0 (136 bytes).
        let mut op = [0u8; 136];
        op[0..4].copy_from_slice(&x::XEN_SYSCTL_SCHEDULER_OP.to_ne_bytes());
        op[4..8].copy_from_slice(&x::XEN_SYSCTL_INTERFACE_VERSION.to_ne_bytes());
        op[12..16].copy_from_slice(&x::XEN_SCHEDULER_CREDIT.to_ne_bytes());
        op[16..20].copy_from_slice(&x::XEN_SYSCTL_SCHEDOP_GETINFO.to_ne_bytes());
        let caller = |id| {
            let mut v = Scripted::new(&world, id, vec![hc(nr::SYSCTL, [0; 5])]);
            v.mem = vec![0; 256];
            v.mem[..136].copy_from_slice(&op);
            v
        };
        let mut doms = vec![Domain::with_vcpus(1, 1), Domain::with_vcpus(2, 1)];
        doms[0].privileged = true;
        let mut rl = RunLoop::new(crate::sched::PoolScheduler::new(crate::sched::SchedKind::Credit, 1, SLICE));
        rl.add_domain(1, caller(0));
        rl.add_domain(1, caller(1));
        rl.run(&mut doms, &mut world.clone());
        let log = world.log();
        assert!(log.contains(&"v0 result 0x0".to_string()), "{log:?}");
        assert!(log.contains(&format!("v1 result {:#x}", (-errno::EPERM) as u64)), "{log:?}");
    }

    #[test]
    fn a_halted_vcpu_sleeps_until_its_timer_then_runs_again() {
        let world = World::default();
        let mut vcpu0 = Scripted::new(&world, 0, vec![cpu_on(1), Exit::Halt]);
        vcpu0.siblings.push(sibling(&world, vec![Exit::Halt, Exit::PowerOff], Some(50 * SLICE)));
        assert_eq!(run_domain(&world, &mut Domain::with_vcpus(1, 2), vcpu0), DomainEnd::PoweredOff);
        let log = world.log();
        let tail: Vec<&str> = log.iter().skip(3).map(String::as_str).collect();
        let idle = format!("idle until {}", 50 * SLICE);
        assert_eq!(tail, ["v0 Halt", "v1 Halt", idle.as_str(), "v1 PowerOff"]);
    }

    /// Round robin that notes each pick in the world's log.
    struct NotedPicks {
        inner: RoundRobin,
        world: World,
    }

    impl Scheduler for NotedPicks {
        fn add_vcpu(&mut self, vcpu: VcpuRef, domain: usize, index: usize, now: u64) {
            self.inner.add_vcpu(vcpu, domain, index, now);
        }
        fn remove_vcpu(&mut self, vcpu: VcpuRef, now: u64) {
            self.inner.remove_vcpu(vcpu, now);
        }
        fn wake(&mut self, vcpu: VcpuRef, now: u64) -> Option<Cpu> {
            self.inner.wake(vcpu, now)
        }
        fn sleep(&mut self, vcpu: VcpuRef, now: u64) {
            self.inner.sleep(vcpu, now);
        }
        fn yield_now(&mut self, vcpu: VcpuRef, now: u64) {
            self.inner.yield_now(vcpu, now);
        }
        fn pick(&mut self, cpu: Cpu, now: u64) -> Option<crate::sched::Decision> {
            self.world.note("pick".into());
            self.inner.pick(cpu, now)
        }
    }

    #[test]
    fn hypercalls_that_return_are_answered_in_place_without_a_scheduling_decision() {
        let world = World::default();
        let yield_ = hc(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
        let version = hc(nr::XEN_VERSION, [0; 5]);
        let vcpu = Scripted::new(&world, 0, vec![version, version, hc(nr::MMU_UPDATE, [0; 5]), yield_, version]);
        let mut rl = RunLoop::new(NotedPicks { inner: RoundRobin::new(SLICE), world: world.clone() });
        let mut dom = Domain::new(1);
        rl.add_domain(1, vcpu);
        assert_eq!(rl.run(core::slice::from_mut(&mut dom), &mut world.clone()), [DomainEnd::PoweredOff]);
        let log = world.log();
        let seen: Vec<&str> = log.iter().map(String::as_str).filter(|l| *l == "pick" || l.contains("result")).collect();
        let enosys = format!("v0 result {:#x}", (-errno::ENOSYS) as u64);
        let version = format!("v0 result {:#x}", (4 << 16) | 17);
        // One pick to start, one after the yield (which is not a call that returns in place),
        // none for the others: they were answered while the vCPU stayed in hand.
        assert_eq!(
            seen,
            ["pick", version.as_str(), version.as_str(), enosys.as_str(), "v0 result 0x0", "pick", version.as_str()],
            "{log:?}"
        );
    }

    #[test]
    fn an_event_for_a_halted_sibling_wakes_it() {
        let world = World::default();
        // vCPU 1 binds an IPI port to vCPU 0, sends on it (the port the binding wrote at 4), halts.
        let bind = hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_IPI, 0, 0, 0, 0]);
        let send = hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, 4, 0, 0, 0]);
        let mut vcpu0 = Scripted::new(&world, 0, vec![cpu_on(1), Exit::Halt, Exit::PowerOff]);
        vcpu0.siblings.push(sibling(&world, vec![bind, send, Exit::Halt], None));
        let mut dom = Domain::with_vcpus(1, 2);
        let mut next = 0x10_0000u64;
        dom.setup_xen_pages(&mut vcpu0, 0x3900_0000, &mut || {
            next += 0x1000;
            Some(HostPage::on_heap(next))
        })
        .unwrap();
        let end = run_domain(&world, &mut dom, vcpu0);
        assert_eq!(end, DomainEnd::PoweredOff);
        let log = world.log();
        let tail: Vec<&str> = log.iter().skip(3).map(String::as_str).collect();
        assert_eq!(tail[0], "v0 Halt");
        assert!(tail.contains(&"v0 upcall"), "{log:?}");
        assert_eq!(tail.last(), Some(&"v0 PowerOff"), "{log:?}");
    }

    #[test]
    fn a_halted_vcpu_with_an_upcall_due_runs_on_even_with_no_upcall_vector() {
        let world = World::default();
        // vCPU 0 binds an IPI port to itself and sends on it (the port the binding wrote at
        // 4): its upcall flag is set, though no interrupt can tell it. Its HLT returns.
        let bind = hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_IPI, 0, 0, 0, 0]);
        let send = hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, 4, 0, 0, 0]);
        let mut vcpu0 = Scripted::new(&world, 0, vec![bind, send, Exit::Halt, Exit::PowerOff]);
        vcpu0.upcall_vector = false;
        let mut dom = Domain::new(1);
        let mut next = 0x10_0000u64;
        dom.setup_xen_pages(&mut vcpu0, 0x3900_0000, &mut || {
            next += 0x1000;
            Some(HostPage::on_heap(next))
        })
        .unwrap();
        // Had the HLT slept, the world's idle would panic: nothing could wake the vCPU.
        assert_eq!(run_domain(&world, &mut dom, vcpu0), DomainEnd::PoweredOff);
        let log = world.log();
        assert!(log.ends_with(&["v0 Halt".to_string(), "v0 PowerOff".to_string()]), "{log:?}");
        assert!(!log.iter().any(|l| l.starts_with("idle")), "{log:?}");
    }

    /// Two pCPUs stepping one run loop by hand, as `run_cpu` does on each under the lock.
    struct TwoCpus {
        world: World,
        rl: RunLoop<Scripted, RoundRobin>,
        cpus: [PerCpu; 2],
    }

    impl TwoCpus {
        fn new(world: &World) -> Self {
            TwoCpus {
                world: world.clone(),
                rl: RunLoop::new(RoundRobin::new(SLICE)),
                cpus: [PerCpu::new(0), PerCpu::new(1)],
            }
        }

        /// pCPU `c` steps: the vCPU it is to enter (out of its slot), if any.
        fn step(&mut self, c: usize, doms: &mut [Domain]) -> Option<Box<Scripted>> {
            let now = self.world.clock.get();
            match self.rl.next_step(&mut self.cpus[c], doms, now) {
                Step::Run { vcpu, .. } => Some(vcpu),
                Step::Idle(_) => {
                    self.world.note(format!("cpu{c} idle"));
                    None
                }
                Step::Done => {
                    self.world.note(format!("cpu{c} done"));
                    None
                }
            }
        }

        /// The guest of pCPU `c` leaves with its next exit; returns the pCPUs to kick.
        fn exit(&mut self, c: usize, mut vcpu: Box<Scripted>, doms: &mut [Domain]) -> u64 {
            let exit = vcpu.run();
            let now = self.world.clock.get();
            self.rl.exited(&mut self.cpus[c], vcpu, &exit, doms, now);
            self.rl.take_kicks()
        }
    }

    fn with_xen_pages(dom: &mut Domain, vcpu0: &mut Scripted) {
        let mut next = 0x10_0000u64;
        dom.setup_xen_pages(vcpu0, 0x3900_0000, &mut || {
            next += 0x1000;
            Some(HostPage::on_heap(next))
        })
        .unwrap();
    }

    #[test]
    fn on_two_pcpus_both_vcpus_run_at_once_and_an_event_for_the_running_one_kicks_its_pcpu() {
        let world = World::default();
        // vCPU 1 binds an IPI port to vCPU 0 and sends on it (the port the binding wrote at 4).
        let bind = hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_IPI, 0, 0, 0, 0]);
        let send = hc(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, 4, 0, 0, 0]);
        let mut vcpu0 = Scripted::new(&world, 0, vec![cpu_on(1), Exit::Preempted, Exit::PowerOff]);
        vcpu0.siblings.push(sibling(&world, vec![bind, send, Exit::Preempted], None));
        let mut doms = [Domain::with_vcpus(1, 2)];
        with_xen_pages(&mut doms[0], &mut vcpu0);
        let mut m = TwoCpus::new(&world);
        m.rl.add_domain(2, vcpu0);
        m.rl.start(&mut doms, 0);
        // pCPU 0 runs vCPU 0, which starts vCPU 1 and goes on.
        let v0 = m.step(0, &mut doms).expect("vCPU 0 for pCPU 0");
        assert_eq!(m.exit(0, v0, &mut doms), 0);
        let v0 = m.step(0, &mut doms).expect("vCPU 0 goes on");
        // pCPU 1 takes vCPU 1: both are out of their slots, in two guests at once.
        let v1 = m.step(1, &mut doms).expect("vCPU 1 for pCPU 1");
        assert_eq!((v0.id, v1.id), (0, 1));
        assert!(m.rl.vcpu(0, 0).is_none() && m.rl.vcpu(0, 1).is_none());
        // vCPU 1's bind, then its send: vCPU 0 runs on pCPU 0, which is kicked; the upcall
        // waits for vCPU 0's exit and is raised before it enters again.
        assert_eq!(m.exit(1, v1, &mut doms), 0);
        let v1 = m.step(1, &mut doms).unwrap();
        assert_eq!(m.exit(1, v1, &mut doms), 1 << 0, "pCPU 0 is kicked");
        assert!(!world.log().contains(&"v0 upcall".to_string()));
        assert_eq!(m.exit(0, v0, &mut doms), 0);
        let log = world.log();
        let exit = log.iter().position(|l| l == "v0 Preempted").unwrap();
        assert_eq!(log[exit + 1], "v0 upcall", "{log:?}");
    }

    #[test]
    fn a_vcpu_woken_for_an_idle_pcpu_kicks_it_and_runs_there() {
        let world = World::default();
        let mut vcpu0 = Scripted::new(&world, 0, vec![Exit::Preempted, cpu_on(1), Exit::PowerOff]);
        vcpu0.siblings.push(sibling(&world, vec![Exit::PowerOff], None));
        let mut doms = [Domain::with_vcpus(1, 2)];
        let mut m = TwoCpus::new(&world);
        m.rl.add_domain(2, vcpu0);
        m.rl.start(&mut doms, 0);
        let v0 = m.step(0, &mut doms).unwrap();
        // Nothing for pCPU 1: it idles (the scheduler now knows it is idle).
        assert!(m.step(1, &mut doms).is_none());
        assert_eq!(m.exit(0, v0, &mut doms), 0, "a preemption kicks nobody");
        let v0 = m.step(0, &mut doms).unwrap();
        assert_eq!(m.exit(0, v0, &mut doms), 1 << 1, "CPU_ON's new vCPU is for idle pCPU 1");
        let v1 = m.step(1, &mut doms).expect("pCPU 1 runs vCPU 1");
        assert_eq!(v1.id, 1);
    }

    #[test]
    fn a_domain_ended_on_one_pcpu_kicks_the_other_which_drops_its_vcpu() {
        let world = World::default();
        let mut vcpu0 = Scripted::new(&world, 0, vec![cpu_on(1), Exit::Preempted, Exit::PowerOff]);
        vcpu0.siblings.push(sibling(&world, vec![Exit::Preempted, Exit::Preempted], None));
        let mut doms = [Domain::with_vcpus(1, 2)];
        let mut m = TwoCpus::new(&world);
        m.rl.add_domain(2, vcpu0);
        m.rl.start(&mut doms, 0);
        let v0 = m.step(0, &mut doms).unwrap();
        m.exit(0, v0, &mut doms);
        let v0 = m.step(0, &mut doms).unwrap();
        let v1 = m.step(1, &mut doms).unwrap();
        m.exit(0, v0, &mut doms);
        // vCPU 0 powers the domain off while vCPU 1 runs on pCPU 1: pCPU 1 is kicked.
        let v0 = m.step(0, &mut doms).unwrap();
        assert_ne!(m.exit(0, v0, &mut doms) & (1 << 1), 0);
        // pCPU 1's exit drops vCPU 1 with its domain; both pCPUs are done.
        assert_eq!(m.exit(1, v1, &mut doms), 0);
        assert!(m.step(1, &mut doms).is_none() && m.step(0, &mut doms).is_none());
        assert_eq!(m.rl.ends(), [DomainEnd::PoweredOff]);
        assert!(world.log().ends_with(&["cpu1 done".to_string(), "cpu0 done".to_string()]), "{:?}", world.log());
    }

    #[test]
    fn the_last_domain_to_end_kicks_the_idle_pcpu_so_that_it_stops_too() {
        let world = World::default();
        let mut doms = [Domain::new(1), Domain::new(2)];
        let mut m = TwoCpus::new(&world);
        m.rl.add_domain(1, Scripted::new(&world, 0, vec![Exit::Preempted, Exit::PowerOff]));
        m.rl.add_domain(1, Scripted::new(&world, 1, vec![Exit::PowerOff]));
        m.rl.start(&mut doms, 0);
        let a = m.step(0, &mut doms).unwrap();
        let b = m.step(1, &mut doms).unwrap();
        // Domain 2 ends on pCPU 1: domain 1 runs on and nobody is kicked; pCPU 1 idles.
        assert_eq!(m.exit(1, b, &mut doms), 0);
        assert!(m.step(1, &mut doms).is_none());
        assert_eq!(m.exit(0, a, &mut doms), 0);
        // Domain 1 ends on pCPU 0, the last: idle pCPU 1 is kicked, and finds it done.
        let a = m.step(0, &mut doms).unwrap();
        assert_ne!(m.exit(0, a, &mut doms) & (1 << 1), 0);
        assert!(m.step(1, &mut doms).is_none());
        assert!(
            world.log().ends_with(&[
                "cpu1 idle".to_string(),
                "v0 Preempted".into(),
                "v0 PowerOff".into(),
                "cpu1 done".into()
            ]),
            "{:?}",
            world.log()
        );
    }

    #[test]
    fn under_arinc653_each_domain_runs_only_in_its_windows_and_the_cpu_idles_between() {
        use crate::sched::{Arinc653, Arinc653Schedule, Scheduler, Window};
        const MS: u64 = 1_000_000;
        let world = World::default();
        let mut rl = RunLoop::new(Arinc653::new(1));
        rl.add_domain(1, Scripted::new(&world, 0, vec![Exit::Preempted; 3]));
        rl.add_domain(1, Scripted::new(&world, 1, vec![Exit::Preempted; 3]));
        let windows = vec![
            Window { start_ns: 0, len_ns: 3 * MS, domain: 0, vcpu: 0 },
            Window { start_ns: 5 * MS, len_ns: 3 * MS, domain: 1, vcpu: 0 },
        ];
        rl.sched_mut().set_arinc653(Arinc653Schedule { major_frame_ns: 10 * MS, cpus: vec![windows] }, 0).unwrap();
        let mut doms = [Domain::new(1), Domain::new(2)];
        assert_eq!(rl.run(&mut doms, &mut world.clone()), [DomainEnd::PoweredOff, DomainEnd::PoweredOff]);
        let idle = |ms: u64| format!("idle until {}", ms * MS);
        let mut want = Vec::new();
        for frame in 0..3 {
            want.extend([
                "v0 Preempted".to_string(),
                idle(10 * frame + 5),
                "v1 Preempted".to_string(),
                idle(10 * frame + 10),
            ]);
        }
        // Domain 0 ends at 30.001 ms, inside its window: the CPU idles until domain 1's.
        want.extend(["v0 PowerOff".to_string(), idle(35), "v1 PowerOff".to_string()]);
        assert_eq!(world.log(), want);
    }

    #[test]
    fn under_credit_two_hogs_with_weights_256_and_512_share_the_cpu_1_to_2() {
        use crate::sched::{Credit, CreditParams, Scheduler};
        let world = World::default();
        let mut rl = RunLoop::new(Credit::new(1));
        rl.add_domain(1, Scripted::new(&world, 0, vec![Exit::Preempted; 400]));
        rl.add_domain(1, Scripted::new(&world, 1, vec![Exit::Preempted; 400]));
        rl.sched_mut().set_credit(0, CreditParams { weight: 256, cap: 0 }).unwrap();
        rl.sched_mut().set_credit(1, CreditParams { weight: 512, cap: 0 }).unwrap();
        let mut doms = [Domain::new(1), Domain::new(2)];
        rl.run(&mut doms, &mut world.clone());
        // Every slice is credit's 30 ms: the first 300 (9 s) split 100:200, within 2%.
        let log = world.log();
        let first: Vec<&str> = runs(&log).into_iter().take(300).collect();
        let v1 = first.iter().filter(|&&v| v == "v1").count();
        assert!((194..=206).contains(&v1), "v1 ran {v1} of 300 slices");
    }
}
