//! ARINC 653 partition scheduling, after Xen's `sched/arinc653.c`: a fixed *major frame*
//! repeats for ever; within it, *windows* (Xen's minor frames) each give one vCPU of one
//! domain the pCPU from a fixed offset for a fixed length. Outside every window, or when the
//! window's vCPU is not runnable, the pCPU idles: no work moves between partitions, so each
//! partition's windows open at the same instants whatever the others do (the temporal
//! isolation avionics need, and a defence against timing side channels).
//!
//! Different from Xen's: Xen runs one schedule on one pCPU and a new schedule replaces the
//! old one at once. Here the schedule has one window list per pCPU of the pool, all sharing
//! the major frame and its start, and a new schedule takes effect at the next major-frame
//! boundary on every pCPU together. Windows carry explicit offsets (so gaps are explicit);
//! schedules whose windows overlap on a pCPU, run past the major frame, name a vCPU the
//! scheduler does not know, name a pCPU outside the pool, or put one vCPU in two windows at
//! the same instant are refused.

use super::{Cpu, Decision, DomainRef, SchedError, Scheduler, VcpuRef};
use alloc::vec::Vec;

/// One window: `domain`'s vCPU `vcpu` owns the pCPU from `start_ns` (from the start of the
/// major frame) for `len_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start_ns: u64,
    pub len_ns: u64,
    pub domain: DomainRef,
    pub vcpu: usize,
}

impl Window {
    fn end(&self) -> u64 {
        self.start_ns + self.len_ns
    }
}

/// A schedule for a pool: `cpus[c]` is pCPU `c`'s windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Arinc653Schedule {
    pub major_frame_ns: u64,
    pub cpus: Vec<Vec<Window>>,
}

/// The window open at an instant, and the slot of its vCPU.
type OpenWindow = Option<(Window, VcpuRef)>;

#[derive(Clone, Debug)]
struct Active {
    schedule: Arinc653Schedule,
    /// When its first major frame started.
    epoch: u64,
    /// The slot of each window's vCPU (`slots[c][i]` for `schedule.cpus[c][i]`).
    slots: Vec<Vec<VcpuRef>>,
}

pub struct Arinc653 {
    nr_cpus: usize,
    active: Option<Active>,
    /// A schedule waiting for its major-frame boundary (the time it takes effect), with the
    /// slots of its windows' vCPUs.
    pending: Option<(Arinc653Schedule, u64, Vec<Vec<VcpuRef>>)>,
    /// Every vCPU: (domain, index) -> slot.
    vcpus: Vec<(DomainRef, usize, VcpuRef)>,
    runnable: Vec<bool>,
}

impl Arinc653 {
    pub fn new(nr_cpus: usize) -> Self {
        Self { nr_cpus: nr_cpus.max(1), active: None, pending: None, vcpus: Vec::new(), runnable: Vec::new() }
    }

    fn slot(&self, domain: DomainRef, index: usize) -> Option<VcpuRef> {
        self.vcpus.iter().find(|&&(d, i, _)| d == domain && i == index).map(|&(_, _, s)| s)
    }

    fn is_runnable(&self, v: VcpuRef) -> bool {
        self.runnable.get(v) == Some(&true)
    }

    /// Check `s` against the pool and the known vCPUs; windows come back sorted.
    pub fn validate(&self, mut s: Arinc653Schedule) -> Result<Arinc653Schedule, SchedError> {
        if s.major_frame_ns == 0 {
            return Err(SchedError::Invalid("major frame of length 0"));
        }
        if s.cpus.len() > self.nr_cpus {
            return Err(SchedError::CpuOutsidePool(s.cpus.len() - 1));
        }
        for windows in &mut s.cpus {
            windows.sort_by_key(|w| w.start_ns);
            for w in windows.iter() {
                if w.len_ns == 0 {
                    return Err(SchedError::Invalid("window of length 0"));
                }
                if w.start_ns.checked_add(w.len_ns).is_none_or(|e| e > s.major_frame_ns) {
                    return Err(SchedError::Invalid("window past the end of the major frame"));
                }
                if !self.vcpus.iter().any(|&(d, _, _)| d == w.domain) {
                    return Err(SchedError::UnknownDomain(w.domain));
                }
                if self.slot(w.domain, w.vcpu).is_none() {
                    return Err(SchedError::Invalid("window for a vCPU the domain does not have"));
                }
            }
            if windows.windows(2).any(|p| p[0].end() > p[1].start_ns) {
                return Err(SchedError::Invalid("windows overlap"));
            }
        }
        for (c, ws) in s.cpus.iter().enumerate() {
            for w in ws {
                let clash = s.cpus[c + 1..]
                    .iter()
                    .flatten()
                    .any(|o| o.domain == w.domain && o.vcpu == w.vcpu && o.start_ns < w.end() && w.start_ns < o.end());
                if clash {
                    return Err(SchedError::Invalid("one vCPU in two windows at the same time"));
                }
            }
        }
        Ok(s)
    }

    /// Apply a pending schedule whose boundary has come.
    fn advance(&mut self, now: u64) {
        if self.pending.as_ref().is_some_and(|&(_, at, _)| now >= at) {
            let (schedule, epoch, slots) = self.pending.take().unwrap_or_default();
            self.active = Some(Active { schedule, epoch, slots });
        }
    }

    /// The window open on `cpu` at `now` (with its vCPU's slot), the start of the current
    /// major frame, and the offset into it. Windows are sorted: a binary search finds it.
    fn window_at(&self, cpu: Cpu, now: u64) -> Option<(OpenWindow, u64, u64)> {
        let a = self.active.as_ref()?;
        let offset = now.checked_sub(a.epoch)? % a.schedule.major_frame_ns;
        let ws = a.schedule.cpus.get(cpu).map_or(&[][..], Vec::as_slice);
        let i = ws.partition_point(|w| w.start_ns <= offset);
        let w = i.checked_sub(1).filter(|&i| offset < ws[i].end()).map(|i| (ws[i], a.slots[cpu][i]));
        Some((w, now - offset, offset))
    }

    /// The schedule in force and the time its major frame started (for the hypercalls).
    pub fn schedule(&self) -> Option<(&Arinc653Schedule, u64)> {
        self.active.as_ref().map(|a| (&a.schedule, a.epoch))
    }
}

impl Scheduler for Arinc653 {
    fn add_vcpu(&mut self, vcpu: VcpuRef, domain: DomainRef, index: usize, _now: u64) {
        self.vcpus.retain(|&(_, _, s)| s != vcpu);
        self.vcpus.push((domain, index, vcpu));
        if self.runnable.len() <= vcpu {
            self.runnable.resize(vcpu + 1, false);
        }
    }

    fn remove_vcpu(&mut self, vcpu: VcpuRef, now: u64) {
        self.sleep(vcpu, now);
        self.vcpus.retain(|&(_, _, s)| s != vcpu);
    }

    fn wake(&mut self, vcpu: VcpuRef, now: u64) -> Option<Cpu> {
        self.advance(now);
        let was = core::mem::replace(self.runnable.get_mut(vcpu)?, true);
        if was {
            return None;
        }
        // Its window may be open somewhere: that pCPU runs it now.
        (0..self.nr_cpus).find(|&c| self.window_at(c, now).and_then(|(w, _, _)| w).map(|(_, s)| s) == Some(vcpu))
    }

    fn sleep(&mut self, vcpu: VcpuRef, _now: u64) {
        if let Some(r) = self.runnable.get_mut(vcpu) {
            *r = false;
        }
    }

    fn yield_now(&mut self, _vcpu: VcpuRef, _now: u64) {
        // The window stays its own: a yield is only a chance for the pCPU to look again.
    }

    fn pick(&mut self, cpu: Cpu, now: u64) -> Option<Decision> {
        self.advance(now);
        let (w, _, offset) = self.window_at(cpu, now)?;
        let (w, vcpu) = w?;
        self.is_runnable(vcpu).then(|| Decision { vcpu, slice_ns: w.end() - offset })
    }

    fn next_event(&self, cpu: Cpu, now: u64) -> Option<u64> {
        let pending = self.pending.as_ref().map(|&(_, at, _)| at);
        let Some((_, frame_start, offset)) = self.window_at(cpu, now) else { return pending };
        let a = self.active.as_ref()?;
        let ws = a.schedule.cpus.get(cpu).map_or(&[][..], Vec::as_slice);
        let next_start = ws.iter().map(|w| w.start_ns).find(|&s| s > offset).map(|s| frame_start + s);
        // The next frame (or the pending schedule) starts at the boundary.
        let boundary = frame_start + a.schedule.major_frame_ns;
        Some(next_start.map_or(boundary, |s| s.min(boundary)))
    }

    fn set_arinc653(&mut self, schedule: Arinc653Schedule, now: u64) -> Result<(), SchedError> {
        let schedule = self.validate(schedule)?;
        self.advance(now);
        let at = match &self.active {
            None => now,
            Some(a) => {
                let major = a.schedule.major_frame_ns;
                let since = now.saturating_sub(a.epoch);
                a.epoch + since.div_ceil(major) * major
            }
        };
        let slots = schedule
            .cpus
            .iter()
            .map(|ws| ws.iter().map(|w| self.slot(w.domain, w.vcpu).unwrap_or(usize::MAX)).collect())
            .collect();
        self.pending = Some((schedule, at, slots));
        self.advance(now);
        Ok(())
    }

    fn kind(&self) -> Option<super::SchedKind> {
        Some(super::SchedKind::Arinc653)
    }

    fn arinc653_schedule(&self) -> Option<(Arinc653Schedule, u64)> {
        match (&self.pending, &self.active) {
            (Some((s, at, _)), _) => Some((s.clone(), *at)),
            (None, Some(a)) => Some((a.schedule.clone(), a.epoch)),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const MS: u64 = 1_000_000;

    fn win(start_ms: u64, len_ms: u64, domain: DomainRef, vcpu: usize) -> Window {
        Window { start_ns: start_ms * MS, len_ns: len_ms * MS, domain, vcpu }
    }

    /// Three domains of two vCPUs each; slot = 2 * domain + vcpu; all runnable.
    fn three_domains(cpus: usize) -> Arinc653 {
        let mut s = Arinc653::new(cpus);
        for d in 0..3 {
            for i in 0..2 {
                s.add_vcpu(2 * d + i, d, i, 0);
                s.wake(2 * d + i, 0);
            }
        }
        s
    }

    /// Xen's ARINC 653 example: domains with periods 5, 6 and 10 ms needing 1, 2 and 3 ms
    /// each period, in a 30 ms major frame (earliest-deadline-first layout, 25 ms busy).
    fn xen_example(vcpu: usize) -> Vec<Window> {
        let (a, b, c) = (0, 1, 2);
        let layout = [
            (0, 1, a),
            (1, 2, b),
            (3, 2, c),
            (5, 1, a),
            (6, 1, c),
            (7, 2, b),
            (10, 1, a),
            (11, 1, c),
            (12, 2, b),
            (14, 1, c),
            (15, 1, a),
            (16, 1, c),
            (18, 2, b),
            (20, 1, a),
            (21, 3, c),
            (24, 1, b),
            (25, 1, a),
            (26, 1, b),
        ];
        layout.iter().map(|&(s, l, d)| win(s, l, d, vcpu)).collect()
    }

    /// Run every pCPU from 0 to `end`, each running what it picks for the whole slice.
    /// Returns the timeline: (pCPU, start, end, slot), in start order per pCPU.
    fn simulate(s: &mut Arinc653, cpus: usize, end: u64) -> Vec<(Cpu, u64, u64, VcpuRef)> {
        let mut out = Vec::new();
        let mut t = vec![0u64; cpus];
        loop {
            let (cpu, &now) = t.iter().enumerate().min_by_key(|&(_, t)| *t).unwrap();
            if now >= end {
                break;
            }
            match s.pick(cpu, now) {
                Some(d) => {
                    out.push((cpu, now, now + d.slice_ns, d.vcpu));
                    t[cpu] = now + d.slice_ns;
                }
                None => t[cpu] = s.next_event(cpu, now).unwrap_or(end),
            }
        }
        out.sort_by_key(|&(c, s, _, _)| (c, s));
        out
    }

    fn expected(windows: &[Vec<Window>], major: u64, frames: u64, skip: &[VcpuRef]) -> Vec<(Cpu, u64, u64, VcpuRef)> {
        let mut out = Vec::new();
        for (c, ws) in windows.iter().enumerate() {
            for f in 0..frames {
                for w in ws {
                    let slot = 2 * w.domain + w.vcpu;
                    if !skip.contains(&slot) {
                        out.push((c, f * major + w.start_ns, f * major + w.end(), slot));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn xen_example_runs_window_for_window_on_two_pcpus() {
        let mut s = three_domains(2);
        let sched = Arinc653Schedule { major_frame_ns: 30 * MS, cpus: vec![xen_example(0), xen_example(1)] };
        s.set_arinc653(sched.clone(), 0).unwrap();
        let got = simulate(&mut s, 2, 90 * MS);
        assert_eq!(got, expected(&sched.cpus, 30 * MS, 3, &[]));
        // Each domain's share per period, checked from the timeline: 1 of 5, 2 of 6, 3 of 10.
        for (d, period, need) in [(0, 5, 1), (1, 6, 2), (2, 10, 3)] {
            for k in 0..90 / period {
                let (lo, hi) = (k * period * MS, (k + 1) * period * MS);
                let ran: u64 = got
                    .iter()
                    .filter(|&&(c, _, _, v)| c == 0 && v == 2 * d)
                    .map(|&(_, a, b, _)| b.min(hi).saturating_sub(a.max(lo)))
                    .sum();
                assert_eq!(ran, need * MS, "domain {d} period {k}");
            }
        }
    }

    #[test]
    fn windows_open_at_the_same_instants_when_a_partition_blocks() {
        let mut s = three_domains(2);
        let sched = Arinc653Schedule { major_frame_ns: 30 * MS, cpus: vec![xen_example(0), xen_example(1)] };
        s.set_arinc653(sched.clone(), 0).unwrap();
        // Domain 1 blocks for good: its windows idle, nobody else gets them.
        s.block(2, 0);
        s.block(3, 0);
        let got = simulate(&mut s, 2, 90 * MS);
        assert_eq!(got, expected(&sched.cpus, 30 * MS, 3, &[2, 3]));
    }

    #[test]
    fn a_vcpu_woken_inside_its_window_runs_for_the_rest_of_it() {
        let mut s = three_domains(1);
        let sched = Arinc653Schedule { major_frame_ns: 10 * MS, cpus: vec![vec![win(0, 4, 0, 0), win(4, 6, 1, 0)]] };
        s.set_arinc653(sched, 0).unwrap();
        s.block(0, 0);
        assert_eq!(s.pick(0, 0), None);
        assert_eq!(s.next_event(0, 0), Some(4 * MS));
        assert_eq!(s.wake(0, MS), Some(0), "its window is open on pCPU 0");
        assert_eq!(s.pick(0, MS), Some(Decision { vcpu: 0, slice_ns: 3 * MS }));
        assert_eq!(s.pick(0, 4 * MS), Some(Decision { vcpu: 2, slice_ns: 6 * MS }));
        assert_eq!(s.wake(4, 5 * MS), None);
    }

    #[test]
    fn a_new_schedule_lands_on_the_next_major_frame_boundary_on_every_pcpu() {
        let mut s = three_domains(2);
        let old = Arinc653Schedule {
            major_frame_ns: 20 * MS,
            cpus: vec![vec![win(0, 10, 0, 0), win(10, 10, 1, 0)], vec![win(0, 20, 2, 1)]],
        };
        let new = Arinc653Schedule {
            major_frame_ns: 12 * MS,
            cpus: vec![vec![win(0, 6, 2, 0), win(6, 6, 0, 0)], vec![win(2, 4, 1, 1)]],
        };
        s.set_arinc653(old, 0).unwrap();
        let mut got = Vec::new();
        let mut t = [0u64; 2];
        let end = 64 * MS;
        let mut changed = false;
        loop {
            let (cpu, now) = if t[0] <= t[1] { (0, t[0]) } else { (1, t[1]) };
            if now >= end {
                break;
            }
            if !changed && now >= 25 * MS {
                // Set at 25 ms, inside the second major frame: it waits for 40 ms.
                s.set_arinc653(new.clone(), 25 * MS).unwrap();
                changed = true;
            }
            match s.pick(cpu, now) {
                Some(d) => {
                    got.push((cpu, now, now + d.slice_ns, d.vcpu));
                    t[cpu] = now + d.slice_ns;
                }
                None => t[cpu] = s.next_event(cpu, now).unwrap(),
            }
        }
        got.sort_by_key(|&(c, s, _, _)| (c, s));
        let want = vec![
            (0, 0, 10 * MS, 0),
            (0, 10 * MS, 20 * MS, 2),
            (0, 20 * MS, 30 * MS, 0),
            (0, 30 * MS, 40 * MS, 2),
            (0, 40 * MS, 46 * MS, 4),
            (0, 46 * MS, 52 * MS, 0),
            (0, 52 * MS, 58 * MS, 4),
            (0, 58 * MS, 64 * MS, 0),
            (1, 0, 20 * MS, 5),
            (1, 20 * MS, 40 * MS, 5),
            (1, 42 * MS, 46 * MS, 3),
            (1, 54 * MS, 58 * MS, 3),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn bad_schedules_are_refused() {
        let s = three_domains(2);
        let one = |cpus: Vec<Vec<Window>>| s.validate(Arinc653Schedule { major_frame_ns: 10 * MS, cpus });
        assert_eq!(one(vec![vec![win(0, 5, 0, 0), win(4, 2, 1, 0)]]), Err(SchedError::Invalid("windows overlap")));
        assert_eq!(
            one(vec![vec![win(0, 5, 0, 0), win(5, 6, 1, 0)]]),
            Err(SchedError::Invalid("window past the end of the major frame"))
        );
        assert_eq!(one(vec![vec![win(0, 5, 7, 0)]]), Err(SchedError::UnknownDomain(7)));
        assert_eq!(
            one(vec![vec![win(0, 5, 0, 2)]]),
            Err(SchedError::Invalid("window for a vCPU the domain does not have"))
        );
        assert_eq!(one(vec![vec![], vec![], vec![win(0, 1, 0, 0)]]), Err(SchedError::CpuOutsidePool(2)));
        assert_eq!(
            one(vec![vec![win(0, 5, 0, 0)], vec![win(4, 5, 0, 0)]]),
            Err(SchedError::Invalid("one vCPU in two windows at the same time"))
        );
        assert_eq!(one(vec![vec![win(0, 0, 0, 0)]]), Err(SchedError::Invalid("window of length 0")));
        assert!(one(vec![vec![win(0, 5, 0, 0)], vec![win(5, 5, 0, 0)]]).is_ok());
    }

    #[test]
    fn without_a_schedule_nothing_runs() {
        let mut s = three_domains(1);
        assert_eq!(s.pick(0, 0), None);
        assert_eq!(s.next_event(0, 0), None);
    }
}
