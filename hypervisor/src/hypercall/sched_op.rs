//! `sched_op`: yield, block and shutdown.

use super::{Outcome, err};
use arch::exit::VirtualCpu;
use guest_abi::{errno, sched};

pub fn handle(vcpu: &mut dyn VirtualCpu, cmd: u64, arg: u64) -> Outcome {
    match cmd {
        sched::SCHEDOP_YIELD => Outcome::Yield,
        sched::SCHEDOP_BLOCK => Outcome::Block,
        sched::SCHEDOP_SHUTDOWN => shutdown(vcpu, arg),
        // Waiting for a port: with one vCPU per CPU, returning at once is a valid spurious wakeup.
        sched::SCHEDOP_POLL => Outcome::Yield,
        // The code only matters to a toolstack; accept it as Xen does.
        sched::SCHEDOP_SHUTDOWN_CODE => Outcome::Return(0),
        sched::SCHEDOP_REMOTE_SHUTDOWN => err(errno::EPERM),
        _ => err(errno::ENOSYS),
    }
}

fn shutdown(vcpu: &mut dyn VirtualCpu, arg: u64) -> Outcome {
    let mut raw = [0u8; 4];
    if vcpu.copy_from_guest(arg, &mut raw).is_err() {
        return err(errno::EFAULT);
    }
    match u32::from_ne_bytes(raw) {
        reason @ sched::SHUTDOWN_POWEROFF..=sched::SHUTDOWN_SOFT_RESET => Outcome::Shutdown(reason),
        _ => err(errno::EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;

    #[test]
    fn shutdown_reads_the_reason_from_guest_memory() {
        let mut vcpu = FakeVcpu::new(16);
        vcpu.mem[4..8].copy_from_slice(&sched::SHUTDOWN_CRASH.to_ne_bytes());
        assert_eq!(handle(&mut vcpu, sched::SCHEDOP_SHUTDOWN, 4), Outcome::Shutdown(sched::SHUTDOWN_CRASH));
    }

    #[test]
    fn shutdown_with_bad_pointer_or_reason_is_rejected() {
        let mut vcpu = FakeVcpu::new(16);
        assert_eq!(handle(&mut vcpu, sched::SCHEDOP_SHUTDOWN, 14), err(errno::EFAULT));
        vcpu.mem[0..4].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(handle(&mut vcpu, sched::SCHEDOP_SHUTDOWN, 0), err(errno::EINVAL));
    }

    #[test]
    fn yield_and_block_map_to_scheduler_outcomes() {
        let mut vcpu = FakeVcpu::new(0);
        assert_eq!(handle(&mut vcpu, sched::SCHEDOP_YIELD, 0), Outcome::Yield);
        assert_eq!(handle(&mut vcpu, sched::SCHEDOP_BLOCK, 0), Outcome::Block);
        assert_eq!(handle(&mut vcpu, 99, 0), err(errno::ENOSYS));
    }
}
