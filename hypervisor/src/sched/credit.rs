//! Xen's credit scheduler (`xen/common/sched/credit.c`), written from its semantics:
//!
//! - Every domain has a *weight* (default 256) and a *cap* (percent of one pCPU the whole
//!   domain may use; 0 means no cap).
//! - A vCPU holds *credits*. Running costs 10 credits per millisecond, charged with a
//!   sub-credit remainder so nothing is lost to rounding. Every 10 ms *tick* the vCPU each
//!   pCPU runs is charged, loses a BOOST, and becomes *active* (it takes part in sharing).
//! - Every 3 ticks (30 ms) *accounting* hands out 300 credits per pCPU of the pool among the
//!   active domains in proportion to weight × active vCPUs, at most 300 per active vCPU and
//!   at most the cap's worth (cap% of 300), split evenly among the domain's active vCPUs;
//!   what such a limit keeps from a domain goes to the others by weight.
//!   Credits never fall below -300. A vCPU with negative credit is OVER; one with credit is
//!   UNDER; one over 300 stops being active (it is not using its share) and keeps half.
//!   A vCPU of a capped domain whose credit is below minus the cap's worth is *parked*
//!   (it cannot run) until accounting brings its credit back to zero or more.
//! - Priorities, best first: BOOST, UNDER, OVER. A vCPU woken after blocking that is UNDER
//!   gets BOOST, so an I/O-bound vCPU preempts CPU hogs when its event arrives.
//! - One run queue per pCPU, ordered by priority, first come first served within one. A
//!   pCPU runs its queue's head for a 30 ms slice; when it has nothing UNDER or better to
//!   run, it takes the first better vCPU waiting on another pCPU's queue (load balancing).
//!   A vCPU that yields goes behind one vCPU of lower priority, if there is one.
//! - Ours, not Xen's: at each accounting, waiting vCPUs move from the pCPU whose vCPUs'
//!   fair shares add up to the most to the one where they add up to the least, while that
//!   narrows the gap by over a tenth of a pCPU. Without it a pCPU holding more shares than
//!   it can run keeps cycling its UNDER vCPUs while the other runs OVER ones, and weights
//!   across pCPUs depend on where the vCPUs happened to start.
//!
//! - The context-switch *rate limit* (default 1 ms, as Xen's `sched_ratelimit_us`): a pCPU
//!   asked to decide again keeps a vCPU that has run less than that since it was picked
//!   (unless it yielded, blocked or was parked) until it has, so wake-ups cannot make it
//!   switch faster than that.
//!
//! Left out: soft/hard affinity (every vCPU may run on every pCPU of the pool) and the
//! migration delay. Run queues are lists: a decision costs
//! O(runnable vCPUs on the pCPU) plus a scan of the others' when it steals.

use super::{Cpu, Decision, DomainRef, SchedError, Scheduler, VcpuRef};
use alloc::collections::VecDeque;
use alloc::vec::Vec;

const MS: u64 = 1_000_000;
/// Accounting tick: the running vCPU is charged and its BOOST dropped.
pub const TICK_NS: u64 = 10 * MS;
const TICKS_PER_ACCT: u64 = 3;
/// The slice a picked vCPU runs at most, by default.
pub const TSLICE_NS: u64 = 30 * MS;
const CREDITS_PER_MSEC: u64 = 10;
/// Credits one pCPU hands out per accounting period (30 ms × 10 per ms).
const CREDITS_PER_ACCT: i64 = (CREDITS_PER_MSEC * TICK_NS * TICKS_PER_ACCT / MS) as i64;
pub const DEFAULT_WEIGHT: u16 = 256;
/// Xen's default context-switch rate limit (`sched_ratelimit_us`).
pub const DEFAULT_RATELIMIT_US: u32 = 1000;
/// The shortest slice a rate-limited decision gives (Xen's CSCHED_MIN_TIMER): a shorter
/// timer would cost more than it keeps.
const MIN_TIMER_NS: u64 = 50_000;

/// A domain's credit parameters (Xen's `xen_domctl_sched_credit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditParams {
    pub weight: u16,
    /// Percent of one pCPU; 0: no cap.
    pub cap: u16,
}

impl Default for CreditParams {
    fn default() -> Self {
        Self { weight: DEFAULT_WEIGHT, cap: 0 }
    }
}

/// Better first: the derived order makes `Boost > Under > Over`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Over,
    Under,
    Boost,
}

#[derive(Clone, Debug)]
struct Vcpu {
    domain: DomainRef,
    runnable: bool,
    /// It blocked waiting for an event (a wake may boost it).
    blocked: bool,
    pri: Priority,
    credit: i64,
    /// Nanosecond-credits not yet charged (below one credit).
    residual: u64,
    active: bool,
    parked: bool,
    yielded: bool,
    /// The pCPU whose queue it waits on, or which runs it.
    cpu: Cpu,
    /// Charged up to this time while it runs.
    start: u64,
}

#[derive(Clone, Debug, Default)]
struct Pcpu {
    runq: VecDeque<VcpuRef>,
    current: Option<VcpuRef>,
    /// When `current` was picked (a rate-limited decision keeps it).
    since: u64,
}

pub struct Credit {
    vcpus: Vec<Option<Vcpu>>,
    domains: Vec<CreditParams>,
    cpus: Vec<Pcpu>,
    /// The next tick's time (set by the first call that brings a time).
    next_tick: Option<u64>,
    ticks: u64,
    /// Where the next new vCPU is placed.
    place: Cpu,
    /// The slice a picked vCPU runs at most (`XEN_SYSCTL_scheduler_op` may change it).
    tslice_ns: u64,
    /// The context-switch rate limit, in µs (0: none); `XEN_SYSCTL_scheduler_op` sets it.
    ratelimit_us: u32,
}

impl Credit {
    /// A credit scheduler for a pool of `nr_cpus` pCPUs.
    pub fn new(nr_cpus: usize) -> Self {
        Self {
            vcpus: Vec::new(),
            domains: Vec::new(),
            cpus: (0..nr_cpus.max(1)).map(|_| Pcpu::default()).collect(),
            next_tick: None,
            ticks: 0,
            place: 0,
            tslice_ns: TSLICE_NS,
            ratelimit_us: DEFAULT_RATELIMIT_US,
        }
    }

    /// `vcpu`'s priority and credit (for tests and the debug key).
    pub fn state(&self, vcpu: VcpuRef) -> Option<(Priority, i64, bool)> {
        self.vcpus.get(vcpu)?.as_ref().map(|v| (v.pri, v.credit, v.parked))
    }

    fn v(&mut self, vcpu: VcpuRef) -> Option<&mut Vcpu> {
        self.vcpus.get_mut(vcpu)?.as_mut()
    }

    fn params(&self, d: DomainRef) -> CreditParams {
        self.domains.get(d).copied().unwrap_or_default()
    }

    fn running_on(&self, vcpu: VcpuRef) -> Option<Cpu> {
        self.cpus.iter().position(|c| c.current == Some(vcpu))
    }

    /// The time of the next accounting.
    fn next_acct(&self, now: u64) -> u64 {
        let next = self.next_tick.unwrap_or(now + TICK_NS);
        next + (TICKS_PER_ACCT - (self.ticks + 1) % TICKS_PER_ACCT) % TICKS_PER_ACCT * TICK_NS
    }

    /// Charge `vcpu` for running until `t`.
    fn burn(&mut self, vcpu: VcpuRef, t: u64) {
        let Some(v) = self.v(vcpu) else { return };
        let delta = t.saturating_sub(v.start);
        let val = delta * CREDITS_PER_MSEC + v.residual;
        v.residual = val % MS;
        v.credit -= (val / MS) as i64;
        v.start = t;
    }

    /// Run every tick and accounting due by `now`.
    fn catch_up(&mut self, now: u64) {
        let mut next = *self.next_tick.get_or_insert(now + TICK_NS);
        while next <= now {
            for c in 0..self.cpus.len() {
                if let Some(cur) = self.cpus[c].current {
                    self.burn(cur, next);
                    if let Some(v) = self.v(cur) {
                        v.active = true;
                        if v.pri == Priority::Boost {
                            v.pri = Priority::Under;
                        }
                    }
                }
            }
            self.ticks += 1;
            if self.ticks.is_multiple_of(TICKS_PER_ACCT) {
                self.account();
            }
            next += TICK_NS;
        }
        self.next_tick = Some(next);
    }

    /// Per domain, how many of its vCPUs satisfy `counted`.
    fn count_vcpus(&self, counted: impl Fn(&Vcpu) -> bool) -> Vec<u64> {
        let mut n = Vec::new();
        for v in self.vcpus.iter().flatten().filter(|v| counted(v)) {
            if n.len() <= v.domain {
                n.resize(v.domain + 1, 0u64);
            }
            n[v.domain] += 1;
        }
        n
    }

    /// The pool's credits for one period shared among domains with `counts[d]` vCPUs taking
    /// part, by weight × vCPUs. A domain's fair share by weight is clamped to its cap and to
    /// 300 per vCPU; what clamping leaves over goes to the others by weight again (as Xen's
    /// accounting hands a capped domain's excess back), until no share moves: the pool's
    /// credits then match the CPU time its vCPUs burn, so weights decide the shares.
    fn fair_totals(&self, counts: &[u64]) -> Vec<u64> {
        let weight = |d: usize, n: u64| n * u64::from(self.params(d).weight);
        let limit = |d: usize, n: u64| {
            let p = self.params(d);
            let mut l = n * CREDITS_PER_ACCT as u64;
            if p.cap != 0 {
                l = l.min((u64::from(p.cap) * CREDITS_PER_ACCT as u64).div_ceil(100));
            }
            l
        };
        let mut total: Vec<u64> = alloc::vec![0; counts.len()];
        let mut clamped: Vec<bool> = counts.iter().map(|&n| n == 0).collect();
        let mut left = self.cpus.len() as u64 * CREDITS_PER_ACCT as u64;
        let mut weight_left: u64 = counts.iter().enumerate().map(|(d, &n)| weight(d, n)).sum();
        loop {
            let mut moved = false;
            for (d, &n) in counts.iter().enumerate() {
                if clamped[d] {
                    continue;
                }
                let fair = (left * weight(d, n)).div_ceil(weight_left.max(1));
                if fair > limit(d, n) {
                    total[d] = limit(d, n);
                    clamped[d] = true;
                    left = left.saturating_sub(total[d]);
                    weight_left -= weight(d, n);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        for (d, &n) in counts.iter().enumerate() {
            if !clamped[d] {
                total[d] = (left * weight(d, n)).div_ceil(weight_left.max(1));
            }
        }
        total
    }

    /// Hand out the period's credits among the active vCPUs, then even out the pCPUs' loads.
    fn account(&mut self) {
        let active = self.count_vcpus(|v| v.active);
        if active.iter().all(|&n| n == 0) {
            return;
        }
        let total = self.fair_totals(&active);
        let share: Vec<(i64, i64)> = active
            .iter()
            .enumerate()
            .map(|(d, &n)| {
                if n == 0 {
                    return (0, 0);
                }
                let p = self.params(d);
                let cap_credit = (u64::from(p.cap) * CREDITS_PER_ACCT as u64).div_ceil(100) as i64;
                (total[d].div_ceil(n) as i64, cap_credit)
            })
            .collect();
        for i in 0..self.vcpus.len() {
            let Some(v) = self.vcpus[i].as_mut() else { continue };
            if !v.active {
                continue;
            }
            let (each, cap_credit) = share[v.domain];
            v.credit = (v.credit + each).max(-CREDITS_PER_ACCT);
            if v.credit < 0 {
                v.pri = Priority::Over;
                if cap_credit != 0 && v.credit < -cap_credit && !v.parked {
                    self.park(i);
                }
            } else {
                v.pri = Priority::Under;
                if v.credit > CREDITS_PER_ACCT {
                    v.active = false;
                    v.credit /= 2;
                }
                if v.parked {
                    self.unpark(i);
                }
            }
        }
        self.balance();
        // Priorities changed: reorder every queue (stable, so arrival order stays within one).
        for c in &mut self.cpus {
            let mut q: Vec<VcpuRef> = c.runq.drain(..).collect();
            q.sort_by_key(|&i| core::cmp::Reverse(self.vcpus[i].as_ref().map(|v| v.pri)));
            c.runq.extend(q);
        }
    }

    /// Move waiting vCPUs from the pCPU whose vCPUs' fair shares add up to the most to the
    /// one where they add up to the least, while a move narrows the gap by more than a
    /// tenth of a pCPU. Stealing alone does not get there: a pCPU only steals a vCPU better
    /// than its own best, so one holding more shares than it can run (a heavy domain beside
    /// two light ones) keeps running them all round in turn at UNDER while the other pCPU
    /// runs its OVER vCPUs, and the heavy domain never gets its weight.
    fn balance(&mut self) {
        const MIN_GAIN: u64 = CREDITS_PER_ACCT as u64 / 10;
        let n = self.cpus.len();
        if n < 2 {
            return;
        }
        let runnable = self.count_vcpus(|v| v.runnable && !v.parked);
        let totals = self.fair_totals(&runnable);
        let fair = |v: &Vcpu| totals.get(v.domain).map_or(0, |t| t / runnable[v.domain].max(1));
        let mut load = alloc::vec![0u64; n];
        for v in self.vcpus.iter().flatten().filter(|v| v.runnable && !v.parked) {
            load[v.cpu] += fair(v);
        }
        for _ in 0..self.vcpus.len() {
            let (hi, lo) = (0..n).fold((0, 0), |(h, l), c| {
                (if load[c] > load[h] { c } else { h }, if load[c] < load[l] { c } else { l })
            });
            let gap = load[hi] - load[lo];
            // The waiting vCPU whose move leaves the smallest gap: |gap - 2 share|.
            let best = self.cpus[hi]
                .runq
                .iter()
                .filter_map(|&i| Some((i, fair(self.vcpus[i].as_ref()?))))
                .filter(|&(_, f)| f > 0 && f < gap)
                .min_by_key(|&(_, f)| gap.abs_diff(2 * f));
            let Some((i, f)) = best else { break };
            if gap - gap.abs_diff(2 * f) <= MIN_GAIN {
                break;
            }
            self.cpus[hi].runq.retain(|&o| o != i);
            if let Some(v) = self.v(i) {
                v.cpu = lo;
            }
            self.enqueue(i);
            load[hi] -= f;
            load[lo] += f;
        }
    }

    fn park(&mut self, i: VcpuRef) {
        if let Some(v) = self.v(i) {
            v.parked = true;
        }
        self.dequeue(i);
    }

    fn unpark(&mut self, i: VcpuRef) {
        let Some(v) = self.v(i) else { return };
        v.parked = false;
        if v.runnable && self.running_on(i).is_none() {
            self.enqueue(i);
        }
    }

    fn dequeue(&mut self, i: VcpuRef) {
        for c in &mut self.cpus {
            c.runq.retain(|&v| v != i);
        }
    }

    /// Put `i` on its pCPU's queue: after every vCPU of its priority or better, and behind
    /// one more if it yielded.
    fn enqueue(&mut self, i: VcpuRef) {
        let Some(v) = self.vcpus[i].as_mut() else { return };
        let (pri, cpu, yielded) = (v.pri, v.cpu, core::mem::take(&mut v.yielded));
        // The queue is sorted best first: look from the back for the last vCPU at least as
        // good (O(1) when all share a priority, the usual case).
        let q = &self.cpus[cpu].runq;
        let mut at = q.iter().rposition(|&o| self.pri_of(o) >= pri).map_or(0, |i| i + 1);
        if yielded && at < q.len() {
            at += 1;
        }
        self.cpus[cpu].runq.insert(at, i);
    }

    fn pri_of(&self, i: VcpuRef) -> Priority {
        self.vcpus[i].as_ref().map_or(Priority::Over, |v| v.pri)
    }

    /// The first vCPU waiting on another pCPU's queue that is better than `than`.
    /// `cpu` keeps running its vCPU while it has run less than the rate limit since it was
    /// picked, if it could go on (runnable, not parked, did not yield): for the rest of it.
    fn rate_limited(&mut self, cpu: Cpu, now: u64) -> Option<Decision> {
        let limit = u64::from(self.ratelimit_us) * 1000;
        let (cur, since) = (self.cpus[cpu].current?, self.cpus[cpu].since);
        let v = self.vcpus.get(cur)?.as_ref()?;
        let ran = now.saturating_sub(since);
        if limit == 0 || ran >= limit || !v.runnable || v.parked || v.yielded {
            return None;
        }
        self.burn(cur, now);
        Some(Decision { vcpu: cur, slice_ns: (limit - ran).max(MIN_TIMER_NS) })
    }

    fn steal(&mut self, cpu: Cpu, than: Option<Priority>) -> Option<VcpuRef> {
        let n = self.cpus.len();
        for peer in (1..n).map(|k| (cpu + k) % n) {
            let pos = self.cpus[peer].runq.iter().position(|&o| than.is_none_or(|t| self.pri_of(o) > t));
            if let Some(pos) = pos {
                return self.cpus[peer].runq.remove(pos);
            }
        }
        None
    }
}

impl Scheduler for Credit {
    fn add_vcpu(&mut self, vcpu: VcpuRef, domain: DomainRef, _index: usize, now: u64) {
        if self.vcpus.len() <= vcpu {
            self.vcpus.resize(vcpu + 1, None);
        }
        let cpu = self.place;
        self.place = (self.place + 1) % self.cpus.len();
        self.vcpus[vcpu] = Some(Vcpu {
            domain,
            runnable: false,
            blocked: false,
            pri: Priority::Under,
            credit: 0,
            residual: 0,
            active: false,
            parked: false,
            yielded: false,
            cpu,
            start: now,
        });
    }

    fn remove_vcpu(&mut self, vcpu: VcpuRef, now: u64) {
        self.sleep(vcpu, now);
        if let Some(slot) = self.vcpus.get_mut(vcpu) {
            *slot = None;
        }
    }

    fn wake(&mut self, vcpu: VcpuRef, now: u64) -> Option<Cpu> {
        self.catch_up(now);
        let running = self.running_on(vcpu);
        let v = self.v(vcpu)?;
        if v.runnable {
            return None;
        }
        v.runnable = true;
        if core::mem::take(&mut v.blocked) && v.pri == Priority::Under && !v.parked {
            v.pri = Priority::Boost;
        }
        let (pri, cpu, parked) = (v.pri, v.cpu, v.parked);
        if parked || running.is_some() {
            return None;
        }
        self.enqueue(vcpu);
        // Tickle: its own pCPU if idle, else an idle one (which will steal it), else its own
        // pCPU if it beats what runs there.
        if self.cpus[cpu].current.is_none() {
            return Some(cpu);
        }
        if let Some(idle) = self.cpus.iter().position(|c| c.current.is_none()) {
            return Some(idle);
        }
        let cur = self.cpus[cpu].current.map(|c| self.pri_of(c));
        (cur.is_some_and(|c| pri > c)).then_some(cpu)
    }

    fn sleep(&mut self, vcpu: VcpuRef, now: u64) {
        self.catch_up(now);
        if let Some(cpu) = self.running_on(vcpu) {
            self.burn(vcpu, now);
            self.cpus[cpu].current = None;
        }
        if let Some(v) = self.v(vcpu) {
            v.runnable = false;
            v.blocked = false;
        }
        self.dequeue(vcpu);
    }

    fn block(&mut self, vcpu: VcpuRef, now: u64) {
        self.sleep(vcpu, now);
        if let Some(v) = self.v(vcpu) {
            v.blocked = true;
        }
    }

    fn yield_now(&mut self, vcpu: VcpuRef, now: u64) {
        self.catch_up(now);
        let Some(v) = self.v(vcpu) else { return };
        v.yielded = true;
        if self.cpus.iter().any(|c| c.runq.contains(&vcpu)) {
            self.dequeue(vcpu);
            self.enqueue(vcpu);
        }
    }

    fn tick(&mut self, now: u64) {
        self.catch_up(now);
    }

    fn pick(&mut self, cpu: Cpu, now: u64) -> Option<Decision> {
        if cpu >= self.cpus.len() {
            return None;
        }
        self.catch_up(now);
        if let Some(keep) = self.rate_limited(cpu, now) {
            return Some(keep);
        }
        if let Some(prev) = self.cpus[cpu].current.take() {
            self.burn(prev, now);
            if let Some(v) = self.v(prev)
                && v.runnable
                && !v.parked
            {
                v.cpu = cpu;
                self.enqueue(prev);
            }
        }
        let head = self.cpus[cpu].runq.front().map(|&h| self.pri_of(h));
        let stolen = match head {
            Some(Priority::Under | Priority::Boost) => None,
            other => self.steal(cpu, other),
        };
        let next = match stolen {
            Some(v) => v,
            None => self.cpus[cpu].runq.pop_front()?,
        };
        let v = self.vcpus[next].as_mut()?;
        v.cpu = cpu;
        v.start = now;
        let domain = v.domain;
        let capped = self.params(domain).cap != 0;
        self.cpus[cpu].current = Some(next);
        self.cpus[cpu].since = now;
        // A capped vCPU comes back at the next accounting, which may park it.
        let slice = if capped { self.tslice_ns.min(self.next_acct(now) - now) } else { self.tslice_ns };
        Some(Decision { vcpu: next, slice_ns: slice })
    }

    fn next_event(&self, _cpu: Cpu, now: u64) -> Option<u64> {
        self.vcpus.iter().flatten().any(|v| v.parked && v.runnable).then(|| self.next_acct(now))
    }

    fn set_credit(&mut self, domain: DomainRef, params: CreditParams) -> Result<(), SchedError> {
        if params.weight == 0 {
            return Err(SchedError::Invalid("weight 0"));
        }
        if self.domains.len() <= domain {
            self.domains.resize(domain + 1, CreditParams::default());
        }
        self.domains[domain] = params;
        Ok(())
    }

    fn kind(&self) -> Option<super::SchedKind> {
        Some(super::SchedKind::Credit)
    }

    fn credit(&self, domain: DomainRef) -> Option<CreditParams> {
        Some(self.params(domain))
    }

    fn credit_globals(&self) -> Option<(u32, u32)> {
        Some(((self.tslice_ns / MS) as u32, self.ratelimit_us))
    }

    fn set_credit_globals(&mut self, tslice_ms: u32, ratelimit_us: u32) -> Result<(), SchedError> {
        if tslice_ms == 0 {
            return Err(SchedError::Invalid("timeslice of 0 ms"));
        }
        self.tslice_ns = u64::from(tslice_ms) * MS;
        self.ratelimit_us = ratelimit_us;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const S: u64 = 1_000_000_000;

    /// `n` vCPUs, one per domain, with these params, all runnable at 0.
    fn hogs(cpus: usize, params: &[CreditParams]) -> Credit {
        let mut s = Credit::new(cpus);
        for (d, p) in params.iter().enumerate() {
            s.set_credit(d, *p).unwrap();
            s.add_vcpu(d, d, 0, 0);
            s.wake(d, 0);
        }
        s
    }

    fn w(weight: u16) -> CreditParams {
        CreditParams { weight, cap: 0 }
    }

    /// Simulate always-runnable vCPUs on `cpus` pCPUs until `end`: every pCPU runs what it
    /// picks for its whole slice. Returns the time each vCPU ran, and each pCPU's idle time.
    fn simulate(s: &mut Credit, n: usize, cpus: usize, end: u64) -> (Vec<u64>, Vec<u64>) {
        simulate_between(s, n, cpus, 0, end)
    }

    /// [`simulate`], counting only what falls in `[from, end)`.
    fn simulate_between(s: &mut Credit, n: usize, cpus: usize, from: u64, end: u64) -> (Vec<u64>, Vec<u64>) {
        let mut used = vec![0; n];
        let mut idle = vec![0; cpus];
        let mut free_at = vec![0u64; cpus];
        loop {
            let (cpu, &now) = free_at.iter().enumerate().min_by_key(|&(_, t)| *t).unwrap();
            if now >= end {
                break;
            }
            match s.pick(cpu, now) {
                Some(d) => {
                    let until = (now + d.slice_ns).min(end);
                    used[d.vcpu] += until - now.max(from).min(until);
                    free_at[cpu] = until;
                }
                None => {
                    let until = s.next_event(cpu, now).unwrap_or(end).max(now + 1).min(end);
                    idle[cpu] += until - now.max(from).min(until);
                    free_at[cpu] = until;
                }
            }
        }
        (used, idle)
    }

    fn assert_share(used: &[u64], i: usize, expected: f64, tol: f64) {
        let total: u64 = used.iter().sum();
        let share = used[i] as f64 / total as f64;
        assert!((share - expected).abs() <= tol, "vCPU {i}: share {share:.4}, expected {expected:.4}; {used:?}");
    }

    #[test]
    fn shares_follow_weights_1_2_4_within_2_percent_over_10_seconds() {
        let mut s = hogs(1, &[w(256), w(512), w(1024)]);
        let (used, idle) = simulate(&mut s, 3, 1, 10 * S);
        assert_eq!(idle, [0]);
        assert_eq!(used.iter().sum::<u64>(), 10 * S);
        for (i, e) in [1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0].into_iter().enumerate() {
            assert_share(&used, i, e, 0.02);
        }
    }

    #[test]
    fn equal_weights_share_equally_and_default_weight_is_256() {
        let mut s = hogs(1, &[CreditParams::default(), w(256)]);
        let (used, _) = simulate(&mut s, 2, 1, 10 * S);
        assert_share(&used, 0, 0.5, 0.01);
    }

    #[test]
    fn cap_50_holds_a_lone_vcpu_to_half_a_cpu_and_parks_it() {
        let mut s = hogs(1, &[CreditParams { weight: 256, cap: 50 }]);
        let (used, idle) = simulate(&mut s, 1, 1, 10 * S);
        let share = used[0] as f64 / (10 * S) as f64;
        assert!((share - 0.5).abs() < 0.02, "share {share}, idle {idle:?}");
        // It is parked at some point (and a parked vCPU is never picked).
        let mut s = hogs(1, &[CreditParams { weight: 256, cap: 50 }]);
        let mut now = 0;
        let mut parked_seen = false;
        while now < S {
            match s.pick(0, now) {
                Some(d) => {
                    assert!(!s.state(d.vcpu).unwrap().2, "a parked vCPU was picked at {now}");
                    now += d.slice_ns;
                }
                None => {
                    parked_seen |= s.state(0).unwrap().2;
                    now = s.next_event(0, now).expect("a parked vCPU has an unpark time");
                }
            }
        }
        assert!(parked_seen);
    }

    #[test]
    fn a_capped_domain_beside_a_hog_gets_its_cap_and_the_hog_the_rest() {
        let mut s = hogs(1, &[CreditParams { weight: 256, cap: 25 }, w(256)]);
        let (used, idle) = simulate(&mut s, 2, 1, 10 * S);
        assert_eq!(idle, [0]);
        assert_share(&used, 0, 0.25, 0.02);
    }

    #[test]
    fn a_woken_io_vcpu_boosts_ahead_of_cpu_hogs() {
        let mut s = hogs(1, &[w(256), w(256)]);
        s.add_vcpu(2, 2, 0, 0);
        // It starts blocked, waiting for its first event.
        s.block(2, 0);
        let mut now = 0;
        let mut latencies = Vec::new();
        let mut io_runs = 0;
        // The I/O vCPU gets an event every 50 ms, works 1 ms and blocks again.
        let mut next_event = 5 * MS;
        while now < 2 * S {
            let d = s.pick(0, now).unwrap();
            if d.vcpu == 2 {
                io_runs += 1;
                latencies.push(now - (next_event - 50 * MS));
                now += MS;
                s.block(2, now);
                continue;
            }
            let end = now + d.slice_ns;
            if next_event < end {
                now = next_event;
                let tickled = s.wake(2, now);
                assert_eq!(tickled, Some(0), "a boosted vCPU preempts a hog at {now}");
                assert_eq!(s.state(2).unwrap().0, Priority::Boost);
                next_event += 50 * MS;
            } else {
                now = end;
            }
        }
        assert!(io_runs >= 39, "{io_runs}");
        assert!(latencies.iter().all(|&l| l == 0), "every wake ran at once: {latencies:?}");
    }

    #[test]
    fn only_a_wake_from_block_boosts() {
        let mut s = Credit::new(1);
        s.add_vcpu(0, 0, 0, 0);
        s.wake(0, 0);
        assert_eq!(s.state(0).unwrap().0, Priority::Under, "created, not blocked: no boost");
        s.sleep(0, 1);
        s.wake(0, 2);
        assert_eq!(s.state(0).unwrap().0, Priority::Under, "paused, not blocked: no boost");
        s.block(0, 3);
        s.wake(0, 4);
        assert_eq!(s.state(0).unwrap().0, Priority::Boost);
        // Running through a tick ends the boost.
        s.pick(0, 5);
        s.tick(TICK_NS);
        assert_eq!(s.state(0).unwrap().0, Priority::Under);
    }

    #[test]
    fn yield_goes_behind_one_lower_priority_vcpu() {
        let mut s = Credit::new(1);
        // Decisions 1 ns apart: no rate limit.
        s.set_credit_globals(30, 0).unwrap();
        for v in 0..3 {
            s.add_vcpu(v, v, 0, 0);
            s.wake(v, 0);
        }
        // Equal priority: a yielding vCPU goes to the back of the queue.
        assert_eq!(s.pick(0, 0).unwrap().vcpu, 0);
        s.yield_now(0, 1);
        assert_eq!(s.pick(0, 1).unwrap().vcpu, 1);
        assert_eq!(s.pick(0, 2).unwrap().vcpu, 2);
        assert_eq!(s.pick(0, 3).unwrap().vcpu, 0);
    }

    #[test]
    fn the_rate_limit_keeps_a_vcpu_that_ran_less_than_it_unless_it_yields() {
        let mut s = hogs(1, &[w(256)]);
        s.add_vcpu(1, 1, 0, 0);
        s.block(1, 0);
        assert_eq!(s.pick(0, 0).unwrap().vcpu, 0);
        // A boosted wake 200 µs in: the pCPU decides again, and keeps the hog for the 800 µs
        // left of Xen's default 1 ms; then the woken vCPU runs.
        let at = 200_000;
        assert_eq!(s.wake(1, at), Some(0));
        assert_eq!(s.pick(0, at), Some(Decision { vcpu: 0, slice_ns: 800_000 }));
        assert_eq!(s.pick(0, MS).unwrap().vcpu, 1);
        // Less than the shortest timer left: the slice is that timer.
        s.block(1, MS + 10_000);
        assert_eq!(s.pick(0, MS + 10_000).unwrap().vcpu, 0);
        assert_eq!(s.pick(0, 2 * MS), Some(Decision { vcpu: 0, slice_ns: MIN_TIMER_NS }));
        // A vCPU that yields is not kept.
        let mut s = hogs(1, &[w(256), w(256)]);
        assert_eq!(s.pick(0, 0).unwrap().vcpu, 0);
        s.yield_now(0, 1000);
        assert_eq!(s.pick(0, 1000).unwrap().vcpu, 1);
        // Rate limit 0: every decision may switch.
        s.set_credit_globals(30, 0).unwrap();
        assert_eq!(s.pick(0, 2000).unwrap().vcpu, 0);
    }

    #[test]
    fn an_idle_pcpu_steals_work_from_a_busy_one() {
        // Four vCPUs placed 0,1,0,1; the two on pCPU 1 block: pCPU 1 takes one from pCPU 0.
        let mut s = Credit::new(2);
        for v in 0..4 {
            s.add_vcpu(v, v, 0, 0);
            s.wake(v, 0);
        }
        s.block(1, 0);
        s.block(3, 0);
        assert_eq!(s.pick(0, 0).unwrap().vcpu, 0);
        assert_eq!(s.pick(1, 0).unwrap().vcpu, 2, "pCPU 1 pulls vCPU 2 from pCPU 0's queue");
        assert_eq!(s.pick(0, 30 * MS).unwrap().vcpu, 0, "nothing left to pull back");
    }

    #[test]
    fn three_hogs_on_two_pcpus_keep_both_busy_and_share_by_weight() {
        let mut s = hogs(2, &[w(256), w(256), w(256)]);
        let (used, idle) = simulate(&mut s, 3, 2, 10 * S);
        assert_eq!(idle, [0, 0]);
        for i in 0..3 {
            assert_share(&used, i, 1.0 / 3.0, 0.02);
        }
        // Weighted: 1:1:2 of two pCPUs = 0.5, 0.5, 1.0 pCPU.
        let mut s = hogs(2, &[w(256), w(256), w(512)]);
        let (used, idle) = simulate(&mut s, 3, 2, 10 * S);
        assert_eq!(idle, [0, 0]);
        assert_share(&used, 2, 0.5, 0.02);
    }

    #[test]
    fn six_domains_on_two_pcpus_one_capped_share_by_weight() {
        // The credit-shares-aarch64 scenario's pool: weights 256, 512, 1024 (1:2:4), 1024
        // capped at 20%, 256, 256. The capped domain gets its 0.2 pCPU; the other 1.8 go by
        // weight, 0.2 pCPU per 256 (its excess over the cap handed back to the others).
        let capped = CreditParams { weight: 1024, cap: 20 };
        let mut s = hogs(2, &[w(256), w(512), w(1024), capped, w(256), w(256)]);
        let (used, idle) = simulate(&mut s, 6, 2, 10 * S);
        assert_eq!(idle, [0, 0]);
        for (i, want) in [0.2, 0.4, 0.8, 0.2, 0.2, 0.2].into_iter().enumerate() {
            let got = used[i] as f64 / (10 * S) as f64;
            assert!((got - want).abs() < 0.02, "vCPU {i}: {got:.4} of a pCPU, expected {want}; {used:?}");
        }
    }

    /// The credit-shares-aarch64 pool, as the hypervisor starts it: vCPUs woken 1 ms apart
    /// as their domains are built, pCPU 1 entering its loop `late_ms` after pCPU 0. Each
    /// vCPU's pCPU time in `[from, end)`.
    fn six_domains_started(late_ms: u64, from: u64, end: u64) -> Vec<u64> {
        let capped = CreditParams { weight: 1024, cap: 20 };
        let params = [w(256), w(512), w(1024), capped, w(256), w(256)];
        let mut s = Credit::new(2);
        for (d, p) in params.iter().enumerate() {
            s.set_credit(d, *p).unwrap();
            s.add_vcpu(d, d, 0, 0);
            s.wake(d, d as u64 * MS);
        }
        let mut used = vec![0; 6];
        let mut free_at = [7 * MS, (7 + late_ms) * MS];
        loop {
            let (cpu, &now) = free_at.iter().enumerate().min_by_key(|&(_, t)| *t).unwrap();
            if now >= end {
                return used;
            }
            let until = match s.pick(cpu, now) {
                Some(d) => {
                    let until = (now + d.slice_ns).min(end);
                    used[d.vcpu] += until - now.max(from).min(until);
                    until
                }
                None => s.next_event(cpu, now).unwrap_or(end).max(now + 1).min(end),
            };
            free_at[cpu] = until;
        }
    }

    #[test]
    fn a_heavy_domain_gets_its_weight_however_the_pcpus_started() {
        // With pCPU 1 starting 50 ms late, domain 3 (weight 1024, 0.8 of a pCPU) used to
        // share its pCPU round robin with two UNDER vCPUs for good (0.6 of a pCPU, the
        // light ones 0.3) while the other pCPU ran OVER vCPUs: stealing takes only vCPUs
        // better than the thief's own. Accounting now moves waiting vCPUs to even out the
        // pCPUs' fair shares. Measured as credit-shares-aarch64 does, 1 to 3 s.
        for late_ms in [0, 1, 5, 13, 20, 37, 50, 100] {
            let used = six_domains_started(late_ms, S, 3 * S);
            for (i, want) in [0.2, 0.4, 0.8, 0.2, 0.2, 0.2].into_iter().enumerate() {
                let got = used[i] as f64 / (2 * S) as f64;
                assert!(
                    (got - want).abs() < 0.02,
                    "late {late_ms} ms: vCPU {i}: {got:.4} of a pCPU, want {want}; {used:?}"
                );
            }
        }
    }

    #[test]
    fn tick_charges_ten_credits_per_millisecond() {
        let mut s = hogs(1, &[w(256), w(256)]);
        let d = s.pick(0, 0).unwrap();
        s.tick(10 * MS);
        assert_eq!(s.state(d.vcpu).unwrap().1, -100);
        s.tick(10 * MS + 55_000);
        s.sleep(d.vcpu, 10 * MS + 55_000);
        assert_eq!(s.state(d.vcpu).unwrap().1, -100, "0.55 credit is kept as a remainder");
        // Accounting at 30 ms: only the vCPU that ran through a tick is active, so it gets
        // the whole pCPU's 300 (its upper bound, one pCPU's worth), the other none.
        s.tick(30 * MS);
        assert_eq!(s.state(d.vcpu).unwrap().1, 200);
        assert_eq!(s.state(1 - d.vcpu).unwrap().1, 0);
    }

    #[test]
    fn weight_zero_is_refused() {
        assert_eq!(Credit::new(1).set_credit(0, w(0)), Err(SchedError::Invalid("weight 0")));
    }
}
