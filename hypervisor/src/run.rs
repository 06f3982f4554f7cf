//! The run loop: enter a vCPU, decide on its exit, resume it.
//!
//! The core owns this loop; arch only enters the guest and decodes exits.

use crate::domain::{Domain, DomainEnd};
use crate::hvlog;
use crate::hypercall::{self, Outcome};
use arch::exit::{Exit, FaultKind, GuestFault, VirtualCpu};
use guest_abi::sched;

/// Run one vCPU of `domain` until the domain ends.
pub fn run_vcpu<V: VirtualCpu>(domain: &mut Domain, vcpu_id: u16, vcpu: &mut V) -> DomainEnd {
    let end = loop {
        match vcpu.run() {
            Exit::Hypercall(call) => match hypercall::dispatch(domain, vcpu, call) {
                Outcome::Return(v) => vcpu.set_hypercall_result(hypercall::result_register(v)),
                // One vCPU per CPU for now: yielding or blocking resumes the guest at once.
                Outcome::Yield | Outcome::Block => vcpu.set_hypercall_result(0),
                Outcome::Shutdown(reason) => break shutdown_end(domain, reason),
            },
            Exit::Halt | Exit::Preempted => {}
            Exit::PowerOff => {
                hvlog!("d{}: powered off", domain.id);
                break DomainEnd::PoweredOff;
            }
            Exit::Reset => {
                hvlog!("d{}: asked for a reset; reboot is not supported, destroying it", domain.id);
                break DomainEnd::PoweredOff;
            }
            Exit::Fault(fault) => {
                report_fault(domain, vcpu_id, &fault);
                break DomainEnd::Crashed;
            }
            Exit::Mmio(access) => {
                if let Err(fault) = domain.mmio(vcpu, access) {
                    report_fault(domain, vcpu_id, &fault);
                    break DomainEnd::Crashed;
                }
            }
        }
    };
    domain.console_flush();
    end
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

fn report_fault(domain: &Domain, vcpu_id: u16, f: &GuestFault) {
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
    use arch::exit::{BadGuestAddress, HypercallArgs};
    use guest_abi::{errno, hypercall as nr};

    /// A vCPU that replays a script of exits and records the results it was given.
    struct Scripted {
        exits: Vec<Exit>,
        results: Vec<u64>,
        mem: Vec<u8>,
    }

    impl VirtualCpu for Scripted {
        fn run(&mut self) -> Exit {
            self.exits.remove(0)
        }
        fn set_hypercall_result(&mut self, value: u64) {
            self.results.push(value);
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
    }

    fn hc(nr: u64, args: [u64; 5]) -> Exit {
        Exit::Hypercall(HypercallArgs { nr, args })
    }

    #[test]
    fn hello_sequence_ends_powered_off_with_results_delivered() {
        let mut mem = vec![0u8; 64];
        mem[0..3].copy_from_slice(b"hi\n");
        mem[16..20].copy_from_slice(&sched::SHUTDOWN_POWEROFF.to_ne_bytes());
        let mut vcpu = Scripted {
            exits: vec![
                hc(nr::XEN_VERSION, [0; 5]),
                hc(nr::CONSOLE_IO, [0, 3, 0, 0, 0]),
                hc(nr::MMU_UPDATE, [0; 5]),
                hc(nr::SCHED_OP, [sched::SCHEDOP_SHUTDOWN, 16, 0, 0, 0]),
            ],
            results: vec![],
            mem,
        };
        let mut dom = Domain::new(1);
        assert_eq!(run_vcpu(&mut dom, 0, &mut vcpu), DomainEnd::PoweredOff);
        assert_eq!(vcpu.results, vec![(4 << 16) | 17, 0, (-errno::ENOSYS) as u64]);
    }

    #[test]
    fn a_guest_fault_crashes_only_the_domain() {
        let fault = GuestFault { kind: FaultKind::UnmappedGuestPhysical, gpa: 0xdead_0000, pc: 0x1000, syndrome: 0 };
        let mut vcpu = Scripted { exits: vec![Exit::Fault(fault)], results: vec![], mem: vec![] };
        let mut dom = Domain::new(1);
        assert_eq!(run_vcpu(&mut dom, 0, &mut vcpu), DomainEnd::Crashed);
    }

    #[test]
    fn crash_shutdown_reason_is_a_crash() {
        let mut mem = vec![0u8; 8];
        mem[0..4].copy_from_slice(&sched::SHUTDOWN_CRASH.to_ne_bytes());
        let mut vcpu =
            Scripted { exits: vec![hc(nr::SCHED_OP, [sched::SCHEDOP_SHUTDOWN, 0, 0, 0, 0])], results: vec![], mem };
        assert_eq!(run_vcpu(&mut Domain::new(1), 0, &mut vcpu), DomainEnd::Crashed);
    }
}
