//! Round robin: every runnable vCPU in turn, one fixed slice each; a pool of several pCPUs
//! shares the one queue, each pCPU taking the next in line when it picks. The simplest policy.

use super::{Cpu, Decision, DomainRef, Scheduler, VcpuRef};
use alloc::collections::VecDeque;
use alloc::vec::Vec;

pub struct RoundRobin {
    /// Runnable vCPUs waiting, first in line first; the running ones are not in it.
    queue: VecDeque<VcpuRef>,
    /// What each pCPU runs (indexed by pCPU; grows on demand).
    current: Vec<Option<VcpuRef>>,
    /// Runnable vCPUs, by slot.
    runnable: Vec<bool>,
    slice_ns: u64,
}

impl RoundRobin {
    pub fn new(slice_ns: u64) -> Self {
        Self { queue: VecDeque::new(), current: Vec::new(), runnable: Vec::new(), slice_ns }
    }

    fn set_runnable(&mut self, vcpu: VcpuRef, on: bool) {
        if self.runnable.len() <= vcpu {
            self.runnable.resize(vcpu + 1, false);
        }
        self.runnable[vcpu] = on;
    }

    fn is_running(&self, vcpu: VcpuRef) -> bool {
        self.current.contains(&Some(vcpu))
    }
}

impl Scheduler for RoundRobin {
    fn add_vcpu(&mut self, vcpu: VcpuRef, _domain: DomainRef, _index: usize, _now: u64) {
        self.set_runnable(vcpu, false);
    }

    fn remove_vcpu(&mut self, vcpu: VcpuRef, now: u64) {
        self.sleep(vcpu, now);
    }

    fn wake(&mut self, vcpu: VcpuRef, _now: u64) -> Option<Cpu> {
        if self.runnable.get(vcpu) == Some(&true) {
            return None;
        }
        self.set_runnable(vcpu, true);
        if !self.is_running(vcpu) {
            self.queue.push_back(vcpu);
        }
        // An idle pCPU (its last pick found nothing) takes it at once; else the running slice
        // of pCPU 0 ends, so the woken vCPU's turn comes soon.
        Some(self.current.iter().position(Option::is_none).unwrap_or(0))
    }

    fn sleep(&mut self, vcpu: VcpuRef, _now: u64) {
        self.set_runnable(vcpu, false);
        self.queue.retain(|&v| v != vcpu);
    }

    fn yield_now(&mut self, vcpu: VcpuRef, _now: u64) {
        if let Some(i) = self.queue.iter().position(|&v| v == vcpu) {
            self.queue.remove(i);
            self.queue.push_back(vcpu);
        }
    }

    fn pick(&mut self, cpu: Cpu, _now: u64) -> Option<Decision> {
        if self.current.len() <= cpu {
            self.current.resize(cpu + 1, None);
        }
        // What ran goes to the back of the queue, behind whoever waited.
        if let Some(prev) = self.current[cpu].take()
            && self.runnable.get(prev) == Some(&true)
        {
            self.queue.push_back(prev);
        }
        let vcpu = self.queue.pop_front()?;
        self.current[cpu] = Some(vcpu);
        Some(Decision { vcpu, slice_ns: self.slice_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(n: usize, slice: u64) -> RoundRobin {
        let mut s = RoundRobin::new(slice);
        for v in 0..n {
            s.add_vcpu(v, 0, v, 0);
        }
        s
    }

    #[test]
    fn runnable_vcpus_take_turns() {
        let mut s = rr(2, 1_000_000);
        s.wake(0, 0);
        s.wake(1, 0);
        s.wake(1, 0);
        let order: Vec<_> = (0..4).map(|t| s.pick(0, t).unwrap().vcpu).collect();
        assert_eq!(order, [0, 1, 0, 1]);
        assert_eq!(s.pick(0, 5).unwrap().slice_ns, 1_000_000);
    }

    #[test]
    fn sleeping_vcpus_are_skipped_until_woken() {
        let mut s = rr(2, 10);
        s.wake(0, 0);
        s.wake(1, 0);
        s.sleep(0, 1);
        assert_eq!((0..3).map(|t| s.pick(0, t).unwrap().vcpu).collect::<Vec<_>>(), [1, 1, 1]);
        s.sleep(1, 2);
        assert_eq!(s.pick(0, 3), None);
        s.wake(0, 4);
        assert_eq!(s.pick(0, 5).unwrap().vcpu, 0);
    }

    #[test]
    fn yield_moves_to_the_back_of_the_queue() {
        let mut s = rr(3, 10);
        for v in 0..3 {
            s.wake(v, 0);
        }
        s.yield_now(0, 1);
        assert_eq!((0..3).map(|t| s.pick(0, t).unwrap().vcpu).collect::<Vec<_>>(), [1, 2, 0]);
    }

    #[test]
    fn two_pcpus_share_the_queue_and_a_wake_names_the_idle_one() {
        let mut s = rr(3, 10);
        s.wake(0, 0);
        s.wake(1, 0);
        // Each pCPU takes the next in line; a running vCPU is never given to the other.
        assert_eq!(s.pick(0, 0).unwrap().vcpu, 0);
        assert_eq!(s.pick(1, 0).unwrap().vcpu, 1);
        assert_eq!(s.pick(0, 10).map(|d| d.vcpu), Some(0));
        // vCPU 1 blocks: pCPU 1 finds nothing and idles; a wake names it, not busy pCPU 0.
        s.block(1, 12);
        assert_eq!(s.pick(1, 12), None);
        assert_eq!(s.wake(2, 13), Some(1));
        assert_eq!(s.pick(1, 13).unwrap().vcpu, 2);
        // Nobody idle: pCPU 0 is told to make way.
        assert_eq!(s.wake(1, 14), Some(0));
        assert_eq!(s.pick(0, 15).unwrap().vcpu, 1);
        assert_eq!(s.pick(1, 16).unwrap().vcpu, 0);
    }

    #[test]
    fn a_woken_vcpu_goes_before_the_one_that_ran() {
        let mut s = rr(2, 10);
        s.wake(0, 0);
        assert_eq!(s.pick(0, 0).unwrap().vcpu, 0);
        assert_eq!(s.wake(1, 5), Some(0));
        assert_eq!(s.pick(0, 6).unwrap().vcpu, 1);
        assert_eq!(s.pick(0, 16).unwrap().vcpu, 0);
    }
}
