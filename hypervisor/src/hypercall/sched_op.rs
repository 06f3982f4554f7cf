//! `sched_op`: yield, block and shutdown.

use super::{Outcome, args, err};
use crate::domain::Domain;
use arch::exit::VirtualCpu;
use guest_abi::{errno, sched};

pub fn handle(domain: &Domain, vcpu: &mut dyn VirtualCpu, cmd: u64, arg: u64) -> Outcome {
    match cmd {
        sched::SCHEDOP_YIELD => Outcome::Yield,
        sched::SCHEDOP_BLOCK => {
            // Xen's SCHEDOP_block enables event delivery before it blocks (ARM: PSTATE.I is
            // cleared), so the vCPU takes the interrupt that wakes it.
            vcpu.enable_event_delivery();
            Outcome::Block
        }
        sched::SCHEDOP_SHUTDOWN => shutdown(vcpu, arg),
        // Waiting for a port: with one vCPU per CPU, returning at once is a valid spurious wakeup.
        sched::SCHEDOP_POLL => Outcome::Yield,
        // The code only matters to a toolstack; accept it as Xen does.
        sched::SCHEDOP_SHUTDOWN_CODE => Outcome::Return(0),
        sched::SCHEDOP_REMOTE_SHUTDOWN => remote_shutdown(domain, vcpu, arg).into(),
        _ => err(errno::ENOSYS),
    }
}

/// Only a device model may shut another domain down, so a domU always fails; Xen reads the
/// request first (-EFAULT), then looks the domain up by its real id (-ESRCH, DOMID_SELF
/// included), then refuses (-EPERM, itself included).
fn remote_shutdown(domain: &Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> super::HcResult {
    let target = args::read_struct::<sched::SchedRemoteShutdown>(vcpu, arg)?.domain_id;
    Err(if domain.known_domains.contains(&target) { errno::EPERM } else { errno::ESRCH })
}

fn shutdown(vcpu: &mut dyn VirtualCpu, arg: u64) -> Outcome {
    let mut raw = [0u8; 4];
    if vcpu.copy_from_guest(arg, &mut raw).is_err() {
        return err(errno::EFAULT);
    }
    // Xen takes the reason's low byte and shuts the domain down whatever it is (a code past
    // SHUTDOWN_MAX is for the toolstack to judge; ours treats it as a crash).
    Outcome::Shutdown(u32::from_ne_bytes(raw) & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::FakeVcpu;

    #[test]
    fn shutdown_reads_the_reason_from_guest_memory() {
        let mut vcpu = FakeVcpu::new(16);
        vcpu.mem[4..8].copy_from_slice(&sched::SHUTDOWN_CRASH.to_ne_bytes());
        assert_eq!(
            handle(&Domain::new(1), &mut vcpu, sched::SCHEDOP_SHUTDOWN, 4),
            Outcome::Shutdown(sched::SHUTDOWN_CRASH)
        );
    }

    #[test]
    fn shutdown_with_bad_pointer_is_rejected_but_any_reason_shuts_down() {
        let mut vcpu = FakeVcpu::new(16);
        assert_eq!(handle(&Domain::new(1), &mut vcpu, sched::SCHEDOP_SHUTDOWN, 14), err(errno::EFAULT));
        vcpu.mem[0..4].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(handle(&Domain::new(1), &mut vcpu, sched::SCHEDOP_SHUTDOWN, 0), Outcome::Shutdown(77));
        vcpu.mem[0..4].copy_from_slice(&0x1234_5602u32.to_ne_bytes());
        assert_eq!(
            handle(&Domain::new(1), &mut vcpu, sched::SCHEDOP_SHUTDOWN, 0),
            Outcome::Shutdown(sched::SHUTDOWN_SUSPEND),
            "the low byte, as Xen's (u8) cast"
        );
    }

    #[test]
    fn remote_shutdown_reads_then_looks_up_then_refuses() {
        let mut d = Domain::new(1);
        d.known_domains = vec![1, 2];
        let mut vcpu = FakeVcpu::new(16);
        let remote = |vcpu: &mut FakeVcpu, d: &Domain, id: u16, at: u64| {
            vcpu.mem[at as usize..at as usize + 2].copy_from_slice(&id.to_ne_bytes());
            handle(d, vcpu, sched::SCHEDOP_REMOTE_SHUTDOWN, at)
        };
        assert_eq!(handle(&d, &mut vcpu, sched::SCHEDOP_REMOTE_SHUTDOWN, 12), err(errno::EFAULT));
        assert_eq!(remote(&mut vcpu, &d, 2, 0), err(errno::EPERM));
        assert_eq!(remote(&mut vcpu, &d, 1, 0), err(errno::EPERM), "itself too");
        assert_eq!(remote(&mut vcpu, &d, 9, 0), err(errno::ESRCH));
        assert_eq!(remote(&mut vcpu, &d, guest_abi::xen::DOMID_SELF, 0), err(errno::ESRCH));
    }

    #[test]
    fn yield_and_block_map_to_scheduler_outcomes() {
        let mut vcpu = FakeVcpu::new(0);
        assert_eq!(handle(&Domain::new(1), &mut vcpu, sched::SCHEDOP_YIELD, 0), Outcome::Yield);
        assert_eq!(vcpu.event_delivery_enabled, 0);
        assert_eq!(handle(&Domain::new(1), &mut vcpu, sched::SCHEDOP_BLOCK, 0), Outcome::Block);
        assert_eq!(vcpu.event_delivery_enabled, 1, "block enables event delivery first");
        assert_eq!(handle(&Domain::new(1), &mut vcpu, 99, 0), err(errno::ENOSYS));
    }
}
