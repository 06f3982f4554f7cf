//! `event_channel_op`: binding, signalling and masking ports; the FIFO sub-operations are in
//! `event_fifo_op`, the port ABIs in `crate::evtchn` (2-level) and `crate::evtchn_fifo`.

use super::HcResult;
use super::args::{self, is_self};
use super::event_fifo_op;
use crate::domain::Domain;
use crate::evtchn::Binding;
use arch::exit::VirtualCpu;
use core::mem::offset_of;
use guest_abi::errno;
use guest_abi::event_channel::{self as ev, EvtchnAllocUnbound, EvtchnBindIpi, EvtchnBindVirq, EvtchnStatus};

/// `NR_VIRQS`.
const NR_VIRQS: u32 = 24;
const EVTCHNSTAT_CLOSED: u32 = 0;
const EVTCHNSTAT_UNBOUND: u32 = 1;
const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
const EVTCHNSTAT_VIRQ: u32 = 4;
const EVTCHNSTAT_IPI: u32 = 5;

pub fn handle(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, cmd: u64, arg: u64) -> HcResult {
    match cmd {
        ev::EVTCHNOP_SEND => {
            let port = port_arg(vcpu, arg)?;
            domain.send(vcpu, port).map(|_| 0)
        }
        ev::EVTCHNOP_UNMASK => {
            let port = port_arg(vcpu, arg)?;
            domain.unmask(vcpu, port).map(|_| 0)
        }
        ev::EVTCHNOP_CLOSE => {
            let port = port_arg(vcpu, arg)?;
            domain.evtchn.close(port)?;
            // The next binding of this port starts at the default priority.
            if let Some(fifo) = domain.fifo.as_mut() {
                fifo.state.bound(port);
            }
            Ok(0)
        }
        ev::EVTCHNOP_BIND_VIRQ => bind_virq(domain, vcpu, arg),
        ev::EVTCHNOP_BIND_IPI => {
            let mut b = args::read::<{ size_of::<EvtchnBindIpi>() }>(vcpu, arg)?;
            let target = valid_vcpu(domain, args::u32_at(&b, offset_of!(EvtchnBindIpi, vcpu)))?;
            let port = domain.evtchn.allocate(Binding::Ipi, target)?;
            args::put_u32(&mut b, offset_of!(EvtchnBindIpi, port), port);
            args::write(vcpu, arg, &b).map(|_| 0)
        }
        ev::EVTCHNOP_ALLOC_UNBOUND => alloc_unbound(domain, vcpu, arg),
        ev::EVTCHNOP_BIND_VCPU => {
            let b = args::read::<8>(vcpu, arg)?;
            let target = valid_vcpu(domain, args::u32_at(&b, 4))?;
            domain.evtchn.bind_vcpu(args::u32_at(&b, 0), target).map(|_| 0)
        }
        ev::EVTCHNOP_STATUS => status(domain, vcpu, arg),
        ev::EVTCHNOP_INIT_CONTROL => event_fifo_op::init_control(domain, vcpu, arg),
        ev::EVTCHNOP_EXPAND_ARRAY => event_fifo_op::expand_array(domain, vcpu, arg),
        ev::EVTCHNOP_SET_PRIORITY => event_fifo_op::set_priority(domain, vcpu, arg),
        _ => Err(errno::ENOSYS),
    }
}

fn port_arg(vcpu: &mut dyn VirtualCpu, arg: u64) -> Result<u32, i64> {
    Ok(u32::from_ne_bytes(args::read::<4>(vcpu, arg)?))
}

fn valid_vcpu(domain: &Domain, id: u32) -> Result<u32, i64> {
    if (id as usize) < domain.vcpus.len() { Ok(id) } else { Err(errno::ENOENT) }
}

fn bind_virq(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b = args::read::<{ size_of::<EvtchnBindVirq>() }>(vcpu, arg)?;
    let virq = args::u32_at(&b, offset_of!(EvtchnBindVirq, virq));
    let target = valid_vcpu(domain, args::u32_at(&b, offset_of!(EvtchnBindVirq, vcpu)))?;
    if virq >= NR_VIRQS {
        return Err(errno::EINVAL);
    }
    if domain.evtchn.virq_port(virq, target).is_some() {
        return Err(errno::EEXIST);
    }
    let port = domain.evtchn.allocate(Binding::Virq(virq), target)?;
    args::put_u32(&mut b, offset_of!(EvtchnBindVirq, port), port);
    args::write(vcpu, arg, &b).map(|_| 0)
}

fn alloc_unbound(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b = args::read::<{ size_of::<EvtchnAllocUnbound>() }>(vcpu, arg)?;
    if !is_self(domain.id, args::u16_at(&b, offset_of!(EvtchnAllocUnbound, dom))) {
        return Err(errno::EPERM);
    }
    let remote_dom = args::u16_at(&b, offset_of!(EvtchnAllocUnbound, remote_dom));
    let port = domain.evtchn.allocate(Binding::Unbound { remote_dom }, 0)?;
    args::put_u32(&mut b, offset_of!(EvtchnAllocUnbound, port), port);
    args::write(vcpu, arg, &b).map(|_| 0)
}

fn status(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b = args::read::<{ size_of::<EvtchnStatus>() }>(vcpu, arg)?;
    if !is_self(domain.id, args::u16_at(&b, offset_of!(EvtchnStatus, dom))) {
        return Err(errno::EPERM);
    }
    let port = args::u32_at(&b, offset_of!(EvtchnStatus, port));
    let (state, target, u0) = match domain.evtchn.port(port) {
        None => (EVTCHNSTAT_CLOSED, 0, 0),
        Some(p) => match p.binding {
            Binding::Unbound { remote_dom } => (EVTCHNSTAT_UNBOUND, p.vcpu, u32::from(remote_dom)),
            // The hypervisor's end looks like a channel to domain 0, port 0.
            Binding::Hypervisor => (EVTCHNSTAT_INTERDOMAIN, p.vcpu, 0),
            Binding::Virq(virq) => (EVTCHNSTAT_VIRQ, p.vcpu, virq),
            Binding::Ipi => (EVTCHNSTAT_IPI, p.vcpu, 0),
            Binding::Free => (EVTCHNSTAT_CLOSED, 0, 0),
        },
    };
    args::put_u32(&mut b, offset_of!(EvtchnStatus, status), state);
    args::put_u32(&mut b, offset_of!(EvtchnStatus, vcpu), target);
    args::put_u32(&mut b, offset_of!(EvtchnStatus, u), u0);
    args::write(vcpu, arg, &b).map(|_| 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::testing::{FakeVcpu, domain_with_xen_pages};
    use crate::page::vcpu_info;

    #[test]
    fn virq_binding_is_unique_and_validated() {
        let mut vcpu = FakeVcpu::new(64);
        let mut d = domain_with_xen_pages(&mut vcpu);
        args::put_u32(&mut vcpu.mem, 0, ev::VIRQ_TIMER);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_BIND_VIRQ, 0), Ok(0));
        let port = args::u32_at(&vcpu.mem, 8);
        assert_eq!(port, 2, "port 1 is the console");
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_BIND_VIRQ, 0), Err(errno::EEXIST));
        args::put_u32(&mut vcpu.mem, 0, NR_VIRQS);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_BIND_VIRQ, 0), Err(errno::EINVAL));
        args::put_u32(&mut vcpu.mem, 4, 9);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_BIND_VIRQ, 0), Err(errno::ENOENT));
    }

    #[test]
    fn an_expired_xen_timer_raises_the_bound_virq_only() {
        let mut vcpu = FakeVcpu::new(64);
        let mut d = domain_with_xen_pages(&mut vcpu);
        // Unbound: the event is dropped, no upcall.
        d.raise_virq(&mut vcpu, ev::VIRQ_TIMER);
        assert_eq!(vcpu.upcalls, 0);
        args::put_u32(&mut vcpu.mem, 0, ev::VIRQ_TIMER);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_BIND_VIRQ, 0), Ok(0));
        let port = args::u32_at(&vcpu.mem, 8) as usize;
        d.raise_virq(&mut vcpu, ev::VIRQ_TIMER);
        assert_eq!(vcpu.upcalls, 1);
        let shared = &d.xen.as_ref().unwrap().shared_info;
        let pending = shared.u64_at(d.abi.evtchn_pending_offset() + 8 * (port / 64));
        assert_ne!(pending & (1 << (port % 64)), 0);
    }

    #[test]
    fn sending_on_an_ipi_port_raises_the_upcall() {
        let mut vcpu = FakeVcpu::new(64);
        let mut d = domain_with_xen_pages(&mut vcpu);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_BIND_IPI, 0), Ok(0));
        let port = args::u32_at(&vcpu.mem, 4);
        args::put_u32(&mut vcpu.mem, 16, port);
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_SEND, 16), Ok(0));
        assert_eq!(vcpu.upcalls, 1);
        let shared = &d.xen.as_ref().unwrap().shared_info;
        assert_eq!(shared.data[vcpu_info::UPCALL_PENDING], 1);
    }

    #[test]
    fn bad_ports_get_einval() {
        let mut vcpu = FakeVcpu::new(64);
        let mut d = domain_with_xen_pages(&mut vcpu);
        for cmd in [ev::EVTCHNOP_SEND, ev::EVTCHNOP_UNMASK, ev::EVTCHNOP_CLOSE] {
            for port in [0u32, 77, u32::MAX] {
                args::put_u32(&mut vcpu.mem, 0, port);
                assert_eq!(handle(&mut d, &mut vcpu, cmd, 0), Err(errno::EINVAL), "cmd {cmd} port {port}");
            }
        }
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_INIT_CONTROL, 0), Err(errno::EINVAL), "no RAM window");
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_SEND, 62), Err(errno::EFAULT));
    }
}
