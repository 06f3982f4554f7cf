//! Round robin: every runnable vCPU in turn, one fixed slice each. The default until the
//! credit and ARINC 653 schedulers arrive.

use super::{Decision, Scheduler, VcpuRef};
use alloc::collections::VecDeque;

pub struct RoundRobin {
    queue: VecDeque<VcpuRef>,
    slice_ns: u64,
}

impl RoundRobin {
    pub fn new(slice_ns: u64) -> Self {
        Self { queue: VecDeque::new(), slice_ns }
    }
}

impl Scheduler for RoundRobin {
    fn wake(&mut self, vcpu: VcpuRef, _now: u64) {
        if !self.queue.contains(&vcpu) {
            self.queue.push_back(vcpu);
        }
    }

    fn sleep(&mut self, vcpu: VcpuRef, _now: u64) {
        self.queue.retain(|&v| v != vcpu);
    }

    fn yield_now(&mut self, vcpu: VcpuRef, _now: u64) {
        if let Some(i) = self.queue.iter().position(|&v| v == vcpu) {
            self.queue.remove(i);
            self.queue.push_back(vcpu);
        }
    }

    fn pick(&mut self, _now: u64) -> Option<Decision> {
        // Rotate so the one picked goes to the back: the next pick is someone else.
        let vcpu = self.queue.pop_front()?;
        self.queue.push_back(vcpu);
        Some(Decision { vcpu, slice_ns: self.slice_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runnable_vcpus_take_turns() {
        let mut s = RoundRobin::new(1_000_000);
        s.wake(0, 0);
        s.wake(1, 0);
        s.wake(1, 0);
        let order: Vec<_> = (0..4).map(|t| s.pick(t).unwrap().vcpu).collect();
        assert_eq!(order, [0, 1, 0, 1]);
        assert_eq!(s.pick(5).unwrap().slice_ns, 1_000_000);
    }

    #[test]
    fn sleeping_vcpus_are_skipped_until_woken() {
        let mut s = RoundRobin::new(10);
        s.wake(0, 0);
        s.wake(1, 0);
        s.sleep(0, 1);
        assert_eq!((0..3).map(|t| s.pick(t).unwrap().vcpu).collect::<Vec<_>>(), [1, 1, 1]);
        s.sleep(1, 2);
        assert_eq!(s.pick(3), None);
        s.wake(0, 4);
        assert_eq!(s.pick(5).unwrap().vcpu, 0);
    }

    #[test]
    fn yield_moves_to_the_back_of_the_queue() {
        let mut s = RoundRobin::new(10);
        for v in 0..3 {
            s.wake(v, 0);
        }
        s.yield_now(0, 1);
        assert_eq!((0..3).map(|t| s.pick(t).unwrap().vcpu).collect::<Vec<_>>(), [1, 2, 0]);
    }
}
