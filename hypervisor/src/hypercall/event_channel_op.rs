//! `event_channel_op`: binding, signalling and masking ports; the FIFO sub-operations are in
//! `event_fifo_op`, the port ABIs in `crate::evtchn` (2-level) and `crate::evtchn_fifo`.

use super::HcResult;
use super::args;
use super::event_fifo_op;
#[cfg(test)]
use crate::domain::NoPeers;
use crate::domain::{Domain, Peers};
use crate::evtchn::Binding;
use arch::exit::VirtualCpu;
use guest_abi::errno;
use guest_abi::event_channel::{
    self as ev, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI, EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ,
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq, EvtchnReset, EvtchnSend,
    EvtchnStatus, NR_VIRQS,
};

/// A call from a domain that has no peers to reach (host tests).
#[cfg(test)]
pub fn handle(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, cmd: u64, arg: u64) -> HcResult {
    handle_with(domain, &mut NoPeers, vcpu, cmd, arg)
}

pub fn handle_with(
    domain: &mut Domain,
    peers: &mut dyn Peers,
    vcpu: &mut dyn VirtualCpu,
    cmd: u64,
    arg: u64,
) -> HcResult {
    match cmd {
        ev::EVTCHNOP_SEND => {
            let port = port_arg(vcpu, arg)?;
            domain.send(vcpu, peers, port).map(|_| 0)
        }
        ev::EVTCHNOP_BIND_INTERDOMAIN => bind_interdomain(domain, peers, vcpu, arg),
        ev::EVTCHNOP_UNMASK => {
            let port = port_arg(vcpu, arg)?;
            domain.unmask(vcpu, port).map(|_| 0)
        }
        ev::EVTCHNOP_CLOSE => {
            let port = port_arg(vcpu, arg)?;
            disconnect(domain, peers, port);
            domain.evtchn.close(port)?;
            // The next binding of this port starts at the default priority.
            if let Some(fifo) = domain.fifo.as_mut() {
                fifo.state.bound(port);
            }
            Ok(0)
        }
        ev::EVTCHNOP_BIND_VIRQ => bind_virq(domain, vcpu, arg),
        ev::EVTCHNOP_BIND_IPI => {
            let mut b: EvtchnBindIpi = args::read_struct(vcpu, arg)?;
            let target = valid_vcpu(domain, b.vcpu)?;
            b.port = domain.evtchn.allocate(Binding::Ipi, target)?;
            args::write_struct(vcpu, arg, &b).map(|_| 0)
        }
        ev::EVTCHNOP_ALLOC_UNBOUND => alloc_unbound(domain, vcpu, arg),
        ev::EVTCHNOP_BIND_VCPU => {
            let b: EvtchnBindVcpu = args::read_struct(vcpu, arg)?;
            let target = valid_vcpu(domain, b.vcpu)?;
            domain.evtchn.bind_vcpu(b.port, target).map(|_| 0)
        }
        ev::EVTCHNOP_STATUS => status(domain, vcpu, arg),
        ev::EVTCHNOP_INIT_CONTROL => event_fifo_op::init_control(domain, vcpu, arg),
        ev::EVTCHNOP_EXPAND_ARRAY => event_fifo_op::expand_array(domain, vcpu, arg),
        ev::EVTCHNOP_SET_PRIORITY => event_fifo_op::set_priority(domain, vcpu, arg),
        ev::EVTCHNOP_RESET => reset(domain, peers, vcpu, arg),
        _ => Err(errno::ENOSYS),
    }
}

/// `EVTCHNOP_bind_interdomain`: connect a new local port to `remote_port` of `remote_dom`,
/// which must be unbound and waiting for this domain. Like Xen, the new local end starts
/// pending: a notification sent to the unbound port before it connected is not lost.
fn bind_interdomain(domain: &mut Domain, peers: &mut dyn Peers, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b: EvtchnBindInterdomain = args::read_struct(vcpu, arg)?;
    let me = domain.id;
    let remote_dom = match b.remote_dom {
        guest_abi::xen::DOMID_SELF => me,
        id => id,
    };
    let remote_port = b.remote_port;
    let waiting_for_us =
        |d: &Domain| d.evtchn.port(remote_port).is_some_and(|p| p.binding == Binding::Unbound { remote_dom: me });
    let local = if remote_dom == me {
        if !waiting_for_us(domain) {
            return Err(errno::EINVAL);
        }
        let local = domain.evtchn.allocate(Binding::Interdomain { remote_dom, remote_port }, 0)?;
        domain.evtchn.rebind(remote_port, Binding::Interdomain { remote_dom: me, remote_port: local })?;
        local
    } else {
        // An ended domain is gone for its peers, whatever its table still holds.
        let peer = peers.peer(remote_dom).filter(|d| !d.dying).ok_or(errno::ESRCH)?;
        if !waiting_for_us(peer) {
            return Err(errno::EINVAL);
        }
        let local = domain.evtchn.allocate(Binding::Interdomain { remote_dom, remote_port }, 0)?;
        peer.evtchn.rebind(remote_port, Binding::Interdomain { remote_dom: me, remote_port: local })?;
        local
    };
    if let Some(fifo) = domain.fifo.as_mut() {
        fifo.state.bound(local);
    }
    b.local_port = local;
    domain.deliver(vcpu, local);
    args::write_struct(vcpu, arg, &b).map(|_| 0)
}

/// `EVTCHNOP_reset` of the caller's own domain (a domU may name no other): every port the
/// guest bound is closed, as `close` would (interdomain peers are left unbound), the ports
/// the hypervisor itself is the other end of (the PV console) stay, and the domain is back
/// on the 2-level ABI, free to choose FIFO again (kexec and resume do this).
fn reset(domain: &mut Domain, peers: &mut dyn Peers, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let r: EvtchnReset = args::read_struct(vcpu, arg)?;
    args::own_domain(domain, r.dom)?;
    let ports: alloc::vec::Vec<u32> =
        domain.evtchn.bound().filter(|(_, p)| p.binding != Binding::Hypervisor).map(|(port, _)| port).collect();
    for port in ports {
        disconnect(domain, peers, port);
        domain.evtchn.close(port)?;
    }
    domain.fifo = None;
    domain.evtchn.set_limit(domain.abi.max_ports_2l());
    Ok(0)
}

/// Closing one end of an interdomain channel leaves the other end unbound, waiting for this
/// domain again (Xen's behaviour).
fn disconnect(domain: &mut Domain, peers: &mut dyn Peers, port: u32) {
    let Some(Binding::Interdomain { remote_dom, remote_port }) = domain.evtchn.port(port).map(|p| p.binding) else {
        return;
    };
    let me = domain.id;
    let other = if remote_dom == me { Some(&mut *domain) } else { peers.peer(remote_dom) };
    if let Some(d) = other
        && d.evtchn
            .port(remote_port)
            .is_some_and(|p| p.binding == Binding::Interdomain { remote_dom: me, remote_port: port })
    {
        let _ = d.evtchn.rebind(remote_port, Binding::Unbound { remote_dom: me });
    }
}

/// The port of `EVTCHNOP_send`, `unmask` and `close` (each argument is a bare port).
fn port_arg(vcpu: &mut dyn VirtualCpu, arg: u64) -> Result<u32, i64> {
    args::read_struct::<EvtchnSend>(vcpu, arg).map(|s| s.port)
}

fn valid_vcpu(domain: &Domain, id: u32) -> Result<u32, i64> {
    if (id as usize) < domain.vcpus.len() { Ok(id) } else { Err(errno::ENOENT) }
}

fn bind_virq(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b: EvtchnBindVirq = args::read_struct(vcpu, arg)?;
    // Xen's order: a bad VIRQ is -EINVAL whatever the vCPU.
    if b.virq >= NR_VIRQS {
        return Err(errno::EINVAL);
    }
    let target = valid_vcpu(domain, b.vcpu)?;
    if domain.evtchn.virq_port(b.virq, target).is_some() {
        return Err(errno::EEXIST);
    }
    b.port = domain.evtchn.allocate(Binding::Virq(b.virq), target)?;
    args::write_struct(vcpu, arg, &b).map(|_| 0)
}

fn alloc_unbound(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b: EvtchnAllocUnbound = args::read_struct(vcpu, arg)?;
    args::own_domain(domain, b.dom)?;
    let remote_dom = match b.remote_dom {
        guest_abi::xen::DOMID_SELF => domain.id,
        id => id,
    };
    b.port = domain.evtchn.allocate(Binding::Unbound { remote_dom }, 0)?;
    args::write_struct(vcpu, arg, &b).map(|_| 0)
}

fn status(domain: &mut Domain, vcpu: &mut dyn VirtualCpu, arg: u64) -> HcResult {
    let mut b: EvtchnStatus = args::read_struct(vcpu, arg)?;
    args::own_domain(domain, b.dom)?;
    (b.status, b.vcpu, b.u) = match domain.evtchn.port(b.port) {
        None => (EVTCHNSTAT_CLOSED, 0, [0, 0]),
        Some(p) => match p.binding {
            Binding::Unbound { remote_dom } => (EVTCHNSTAT_UNBOUND, p.vcpu, [u32::from(remote_dom), 0]),
            // The hypervisor's end looks like a channel to domain 0, port 0.
            Binding::Hypervisor => (EVTCHNSTAT_INTERDOMAIN, p.vcpu, [0, 0]),
            Binding::Interdomain { remote_dom, remote_port } => {
                (EVTCHNSTAT_INTERDOMAIN, p.vcpu, [u32::from(remote_dom), remote_port])
            }
            Binding::Virq(virq) => (EVTCHNSTAT_VIRQ, p.vcpu, [virq, 0]),
            Binding::Ipi => (EVTCHNSTAT_IPI, p.vcpu, [0, 0]),
            Binding::Free => (EVTCHNSTAT_CLOSED, 0, [0, 0]),
        },
    };
    args::write_struct(vcpu, arg, &b).map(|_| 0)
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
        assert_eq!(handle(&mut d, &mut vcpu, ev::EVTCHNOP_BIND_VIRQ, 0), Err(errno::EINVAL), "the VIRQ first");
        args::put_u32(&mut vcpu.mem, 0, ev::VIRQ_DEBUG);
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

    /// Domain 1 (the caller, at index 0) and domain 2, each with its Xen pages.
    fn two_domains(vcpu: &mut FakeVcpu) -> alloc::vec::Vec<Domain> {
        let mut d2 = domain_with_xen_pages(vcpu);
        d2.id = 2;
        alloc::vec![domain_with_xen_pages(vcpu), d2]
    }

    /// EVTCHNOP_bind_interdomain from `domains[caller]` to (`remote`, `port`).
    fn bind(vcpu: &mut FakeVcpu, domains: &mut [Domain], caller: usize, remote: u16, port: u32) -> HcResult {
        args::put_u32(&mut vcpu.mem, 0, u32::from(remote));
        args::put_u32(&mut vcpu.mem, 4, port);
        let (d, mut peers) = crate::domain::Others::split(domains, caller);
        handle_with(d, &mut peers, vcpu, ev::EVTCHNOP_BIND_INTERDOMAIN, 0)
    }

    fn alloc_unbound_for(vcpu: &mut FakeVcpu, d: &mut Domain, remote: u16) -> u32 {
        args::put_u32(&mut vcpu.mem, 0, u32::from(guest_abi::xen::DOMID_SELF) | u32::from(remote) << 16);
        assert_eq!(handle(d, vcpu, ev::EVTCHNOP_ALLOC_UNBOUND, 0), Ok(0));
        args::u32_at(&vcpu.mem, 4)
    }

    fn binding(d: &Domain, port: u32) -> Option<Binding> {
        d.evtchn.port(port).map(|p| p.binding)
    }

    #[test]
    fn an_interdomain_channel_connects_signals_and_survives_its_peer_closing() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = two_domains(&mut vcpu);
        let waiting = alloc_unbound_for(&mut vcpu, &mut ds[1], 1);
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 2, waiting), Ok(0));
        let local = args::u32_at(&vcpu.mem, 8);
        assert_eq!(binding(&ds[0], local), Some(Binding::Interdomain { remote_dom: 2, remote_port: waiting }));
        assert_eq!(binding(&ds[1], waiting), Some(Binding::Interdomain { remote_dom: 1, remote_port: local }));
        // Domain 1 signals: the event lands in domain 2's bitmap, its vCPU 0 gets the upcall.
        ds[1].current_vcpu = 1;
        args::put_u32(&mut vcpu.mem, 16, local);
        let (d1, mut peers) = crate::domain::Others::split(&mut ds, 0);
        assert_eq!(handle_with(d1, &mut peers, &mut vcpu, ev::EVTCHNOP_SEND, 16), Ok(0));
        let shared = &ds[1].xen.as_ref().unwrap().shared_info;
        assert_ne!(shared.u64_at(ds[1].abi.evtchn_pending_offset()) & (1 << waiting), 0);
        assert_eq!(ds[1].remote_upcalls, 1, "raised through the run loop, not on the caller's vCPU");
        // Closing domain 1's end leaves domain 2's waiting for domain 1 again.
        let (d1, mut peers) = crate::domain::Others::split(&mut ds, 0);
        assert_eq!(handle_with(d1, &mut peers, &mut vcpu, ev::EVTCHNOP_CLOSE, 16), Ok(0));
        assert_eq!(binding(&ds[1], waiting), Some(Binding::Unbound { remote_dom: 1 }));
        assert_eq!(binding(&ds[0], local), None);
    }

    #[test]
    fn binding_needs_a_port_unbound_for_the_caller_in_an_existing_domain() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = two_domains(&mut vcpu);
        let for_someone_else = alloc_unbound_for(&mut vcpu, &mut ds[1], 7);
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 9, 1), Err(errno::ESRCH), "no domain 9");
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 2, for_someone_else), Err(errno::EINVAL));
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 2, 1), Err(errno::EINVAL), "the console is not unbound");
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 2, u32::MAX), Err(errno::EINVAL));
        let waiting = alloc_unbound_for(&mut vcpu, &mut ds[1], 1);
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 2, waiting), Ok(0));
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 2, waiting), Err(errno::EINVAL), "already connected");
    }

    #[test]
    fn a_loopback_channel_within_one_domain_delivers_to_itself() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = two_domains(&mut vcpu);
        let waiting = alloc_unbound_for(&mut vcpu, &mut ds[0], 1);
        assert_eq!(bind(&mut vcpu, &mut ds, 0, guest_abi::xen::DOMID_SELF, waiting), Ok(0));
        let local = args::u32_at(&vcpu.mem, 8);
        let upcalls = vcpu.upcalls;
        args::put_u32(&mut vcpu.mem, 16, local);
        assert_eq!(handle(&mut ds[0], &mut vcpu, ev::EVTCHNOP_SEND, 16), Ok(0));
        let shared = &ds[0].xen.as_ref().unwrap().shared_info;
        assert_ne!(shared.u64_at(ds[0].abi.evtchn_pending_offset()) & (1 << waiting), 0);
        assert!(vcpu.upcalls > upcalls || shared.data[vcpu_info::UPCALL_PENDING] == 1);
    }

    #[test]
    fn a_dying_domain_leaves_its_peers_ports_unbound_for_it() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = two_domains(&mut vcpu);
        let waiting = alloc_unbound_for(&mut vcpu, &mut ds[1], 1);
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 2, waiting), Ok(0));
        let (d1, mut peers) = crate::domain::Others::split(&mut ds, 0);
        d1.disconnect_peers(&mut peers);
        assert_eq!(binding(&ds[1], waiting), Some(Binding::Unbound { remote_dom: 1 }));
        args::put_u32(&mut vcpu.mem, 0, 2);
        args::put_u32(&mut vcpu.mem, 4, waiting);
        let (d2, _) = crate::domain::Others::split(&mut ds, 1);
        assert_eq!(status(d2, &mut vcpu, 0), Ok(0));
        assert_eq!(args::u32_at(&vcpu.mem, 8), EVTCHNSTAT_UNBOUND);
        assert_eq!(args::u32_at(&vcpu.mem, 16), 1);
    }

    #[test]
    fn reset_closes_every_guest_port_but_keeps_the_console_and_unbinds_peers() {
        let mut vcpu = FakeVcpu::new(64);
        let mut ds = two_domains(&mut vcpu);
        let waiting = alloc_unbound_for(&mut vcpu, &mut ds[1], 1);
        assert_eq!(bind(&mut vcpu, &mut ds, 0, 2, waiting), Ok(0));
        let local = args::u32_at(&vcpu.mem, 8);
        let spare = alloc_unbound_for(&mut vcpu, &mut ds[0], 2);
        args::put_u32(&mut vcpu.mem, 0, 0);
        assert_eq!(handle(&mut ds[0], &mut vcpu, ev::EVTCHNOP_BIND_IPI, 0), Ok(0));
        ds[0].evtchn.set_limit(1 << 17);
        ds[0].known_domains = alloc::vec![1, 2];
        let reset = |vcpu: &mut FakeVcpu, ds: &mut [Domain], dom: u16| {
            args::put_u32(&mut vcpu.mem, 32, u32::from(dom));
            let (d, mut peers) = crate::domain::Others::split(ds, 0);
            handle_with(d, &mut peers, vcpu, ev::EVTCHNOP_RESET, 32)
        };
        assert_eq!(reset(&mut vcpu, &mut ds, 2), Err(errno::EPERM), "not another domain");
        assert_eq!(reset(&mut vcpu, &mut ds, 9), Err(errno::ESRCH));
        assert_eq!(reset(&mut vcpu, &mut ds, guest_abi::xen::DOMID_SELF), Ok(0));
        assert_eq!(ds[0].evtchn.bound().map(|(port, _)| port).collect::<alloc::vec::Vec<_>>(), [1], "the console");
        assert_eq!(binding(&ds[0], local), None);
        assert_eq!(binding(&ds[0], spare), None);
        assert_eq!(binding(&ds[1], waiting), Some(Binding::Unbound { remote_dom: 1 }));
        assert!(ds[0].fifo.is_none(), "back on the 2-level ABI");
        assert_eq!(alloc_unbound_for(&mut vcpu, &mut ds[0], 2), 2, "ports are handed out from the lowest again");
    }
}
