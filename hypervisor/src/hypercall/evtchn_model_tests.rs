//! Event channels between three domains (2-level ABI) against a reference model: random
//! sequences of alloc_unbound, bind_interdomain, bind_ipi, send, close, mask/unmask, the guest
//! consuming its events, and domains ending. After every step each live domain's ports (as
//! `EVTCHNOP_status` reports them), its pending and mask bitmaps, its selector and its upcall
//! flag must be what the model says.

use super::event_channel_op::handle_with;
use crate::domain::{Domain, Others};
use crate::hypercall::testing::{FakeVcpu, domain_with_xen_pages};
use crate::page::vcpu_info;
use alloc::vec::Vec;
use guest_abi::errno;
use guest_abi::event_channel::{
    self as ev, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI, EVTCHNSTAT_UNBOUND, EvtchnAllocUnbound,
    EvtchnBindInterdomain, EvtchnBindIpi, EvtchnSend, EvtchnStatus,
};
use guest_abi::xen::DOMID_SELF;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Ports the test looks at (the console is port 1; guests get 2 and up).
const PORTS: u32 = 24;
const DOMAINS: u16 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Unbound { remote: u16 },
    Inter { remote: u16, port: u32 },
    Ipi,
}

#[derive(Default)]
struct DomainModel {
    ports: BTreeMap<u32, Bound>,
    pending: BTreeSet<u32>,
    masked: BTreeSet<u32>,
    /// Selector words flagged, and the upcall flag.
    sel: u64,
    upcall: bool,
    dead: bool,
}

impl DomainModel {
    fn lowest_free(&self) -> u32 {
        (2..).find(|p| !self.ports.contains_key(p)).unwrap()
    }

    /// Xen's 2-level delivery: a new pending bit on an unmasked port flags its word, and a
    /// newly flagged word raises the upcall flag.
    fn raise(&mut self, port: u32) {
        if !self.pending.insert(port) || self.masked.contains(&port) {
            return;
        }
        self.flag(port);
    }

    fn flag(&mut self, port: u32) {
        let word = 1u64 << (port / 64);
        if self.sel & word == 0 {
            self.sel |= word;
            self.upcall = true;
        }
    }
}

struct Model([DomainModel; DOMAINS as usize]);

impl Model {
    fn d(&mut self, id: u16) -> &mut DomainModel {
        &mut self.0[usize::from(id - 1)]
    }
}

#[derive(Clone, Debug)]
enum Op {
    AllocUnbound {
        d: u16,
        remote: u16,
    },
    /// Bind to the `pick`-th port of `remote` (existing or not).
    Bind {
        d: u16,
        remote: u16,
        pick: u32,
    },
    BindIpi {
        d: u16,
    },
    Send {
        d: u16,
        port: u32,
    },
    Close {
        d: u16,
        port: u32,
    },
    Mask {
        d: u16,
        port: u32,
    },
    Unmask {
        d: u16,
        port: u32,
    },
    Consume {
        d: u16,
    },
    /// The guest takes its upcall flag and selector but has not scanned the bits yet.
    TakeSelector {
        d: u16,
    },
    End {
        d: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dom = 1u16..=DOMAINS;
    // Mostly the low ports, where the bound ones are.
    let port = prop_oneof![4 => 0u32..8, 1 => 0u32..PORTS];
    prop_oneof![
        3 => (dom.clone(), prop_oneof![1u16..=DOMAINS, Just(DOMID_SELF)]).prop_map(|(d, remote)| Op::AllocUnbound { d, remote }),
        4 => (dom.clone(), prop_oneof![1u16..=DOMAINS, Just(DOMID_SELF), Just(9)], port.clone())
            .prop_map(|(d, remote, pick)| Op::Bind { d, remote, pick }),
        1 => dom.clone().prop_map(|d| Op::BindIpi { d }),
        6 => (dom.clone(), port.clone()).prop_map(|(d, port)| Op::Send { d, port }),
        2 => (dom.clone(), port.clone()).prop_map(|(d, port)| Op::Close { d, port }),
        1 => (dom.clone(), port.clone()).prop_map(|(d, port)| Op::Mask { d, port }),
        1 => (dom.clone(), port.clone()).prop_map(|(d, port)| Op::Unmask { d, port }),
        2 => dom.clone().prop_map(|d| Op::Consume { d }),
        1 => dom.clone().prop_map(|d| Op::TakeSelector { d }),
        1 => dom.prop_map(|d| Op::End { d }),
    ]
}

struct World {
    domains: Vec<Domain>,
    vcpu: FakeVcpu,
}

impl World {
    fn new() -> Self {
        let mut vcpu = FakeVcpu::new(256);
        let mut domains: Vec<Domain> = (1..=DOMAINS)
            .map(|id| {
                let mut d = domain_with_xen_pages(&mut vcpu);
                d.id = id;
                d
            })
            .collect();
        let ids: Vec<u16> = domains.iter().map(|d| d.id).collect();
        domains.iter_mut().for_each(|d| d.known_domains.clone_from(&ids));
        World { domains, vcpu }
    }

    /// Issue `cmd` from domain `d` with `arg` as its argument; the result and the argument as
    /// the guest reads it back.
    fn call<T: IntoBytes + FromBytes + Immutable>(&mut self, d: u16, cmd: u64, arg: T) -> (Result<i64, i64>, T) {
        let n = size_of::<T>();
        self.vcpu.mem[..n].copy_from_slice(arg.as_bytes());
        let (domain, mut peers) = Others::split(&mut self.domains, usize::from(d - 1));
        domain.current_vcpu = 0;
        let r = handle_with(domain, &mut peers, &mut self.vcpu, cmd, 0);
        (r, T::read_from_bytes(&self.vcpu.mem[..n]).unwrap())
    }

    fn shared(&mut self, d: u16) -> (&mut crate::page::HostPage, crate::page::GuestAbi) {
        let dom = &mut self.domains[usize::from(d - 1)];
        (&mut dom.xen.as_mut().unwrap().shared_info, dom.abi)
    }
}

fn expected_status(m: &DomainModel, port: u32) -> (u32, [u32; 2]) {
    match m.ports.get(&port) {
        None => (EVTCHNSTAT_CLOSED, [0, 0]),
        Some(Bound::Unbound { remote }) => (EVTCHNSTAT_UNBOUND, [u32::from(*remote), 0]),
        Some(Bound::Inter { remote, port }) => (EVTCHNSTAT_INTERDOMAIN, [u32::from(*remote), *port]),
        Some(Bound::Ipi) => (EVTCHNSTAT_IPI, [0, 0]),
    }
}

/// Run `op` on both the hypervisor and the model; the hypercall's result must agree.
fn step(w: &mut World, m: &mut Model, op: Op) -> Result<(), TestCaseError> {
    let resolve = |d: u16, id: u16| if id == DOMID_SELF { d } else { id };
    match op {
        Op::AllocUnbound { d, remote } => {
            let (r, out) = w.call(
                d,
                ev::EVTCHNOP_ALLOC_UNBOUND,
                EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: remote, port: 0 },
            );
            let port = m.d(d).lowest_free();
            prop_assert_eq!(r, Ok(0));
            prop_assert_eq!(out.port, port);
            m.d(d).ports.insert(port, Bound::Unbound { remote: resolve(d, remote) });
        }
        Op::Bind { d, remote, pick } => {
            let rid = resolve(d, remote);
            let b = EvtchnBindInterdomain { remote_dom: remote, _pad0: 0, remote_port: pick, local_port: 0 };
            let (r, out) = w.call(d, ev::EVTCHNOP_BIND_INTERDOMAIN, b);
            if rid > DOMAINS {
                prop_assert_eq!(r, Err(errno::ESRCH));
                return Ok(());
            }
            if m.d(rid).dead {
                // An ended domain is gone, whatever its table still holds.
                prop_assert_eq!(r, Err(errno::ESRCH));
                return Ok(());
            }
            let offered = m.d(rid).ports.get(&pick) == Some(&Bound::Unbound { remote: d });
            let local = m.d(d).lowest_free();
            if !offered {
                prop_assert_eq!(r, Err(errno::EINVAL));
                return Ok(());
            }
            prop_assert_eq!(r, Ok(0));
            prop_assert_eq!(out.local_port, local);
            m.d(d).ports.insert(local, Bound::Inter { remote: rid, port: pick });
            m.d(rid).ports.insert(pick, Bound::Inter { remote: d, port: local });
            // Xen marks the new local end pending: events sent before may have been lost.
            m.d(d).raise(local);
        }
        Op::BindIpi { d } => {
            let (r, out) = w.call(d, ev::EVTCHNOP_BIND_IPI, EvtchnBindIpi { vcpu: 0, port: 0 });
            let port = m.d(d).lowest_free();
            prop_assert_eq!((r, out.port), (Ok(0), port));
            m.d(d).ports.insert(port, Bound::Ipi);
        }
        Op::Send { d, port } => {
            let (r, _) = w.call(d, ev::EVTCHNOP_SEND, EvtchnSend { port });
            match m.d(d).ports.get(&port).copied() {
                None if port == 1 => prop_assert_eq!(r, Ok(0), "the console"),
                None => prop_assert_eq!(r, Err(errno::EINVAL)),
                Some(Bound::Unbound { .. }) => prop_assert_eq!(r, Ok(0)),
                Some(Bound::Ipi) => {
                    prop_assert_eq!(r, Ok(0));
                    m.d(d).raise(port);
                }
                Some(Bound::Inter { remote, port: rp }) => {
                    prop_assert_eq!(r, Ok(0));
                    if !m.d(remote).dead {
                        m.d(remote).raise(rp);
                    }
                }
            }
        }
        Op::Close { d, port } => {
            if port == 1 {
                return Ok(()); // the console stays
            }
            let (r, _) = w.call(d, ev::EVTCHNOP_CLOSE, EvtchnSend { port });
            match m.d(d).ports.remove(&port) {
                None => prop_assert_eq!(r, Err(errno::EINVAL)),
                Some(b) => {
                    prop_assert_eq!(r, Ok(0));
                    if let Bound::Inter { remote, port: rp } = b {
                        m.d(remote).ports.insert(rp, Bound::Unbound { remote: d });
                    }
                }
            }
        }
        Op::Mask { d, port } => {
            // The guest sets the bit itself.
            let (shared, abi) = w.shared(d);
            let at = abi.evtchn_mask_offset() + (port / 64) as usize * 8;
            shared.set_u64(at, shared.u64_at(at) | 1 << (port % 64));
            m.d(d).masked.insert(port);
        }
        Op::Unmask { d, port } => {
            let (r, _) = w.call(d, ev::EVTCHNOP_UNMASK, EvtchnSend { port });
            if port != 1 && !m.d(d).ports.contains_key(&port) {
                prop_assert_eq!(r, Err(errno::EINVAL));
                return Ok(());
            }
            prop_assert_eq!(r, Ok(0));
            let md = m.d(d);
            if md.masked.remove(&port) && md.pending.contains(&port) {
                md.flag(port);
            }
        }
        Op::Consume { d } => {
            // The guest as Linux's 2-level handler: upcall flag, selector, then the bits.
            let (shared, abi) = w.shared(d);
            shared.data[vcpu_info::UPCALL_PENDING] = 0;
            shared.set_u64(vcpu_info::PENDING_SEL, 0);
            for word in 0..(PORTS as usize).div_ceil(64) {
                shared.set_u64(abi.evtchn_pending_offset() + word * 8, 0);
            }
            let md = m.d(d);
            md.pending.clear();
            md.sel = 0;
            md.upcall = false;
        }
        Op::TakeSelector { d } => {
            let (shared, _) = w.shared(d);
            shared.data[vcpu_info::UPCALL_PENDING] = 0;
            shared.set_u64(vcpu_info::PENDING_SEL, 0);
            let md = m.d(d);
            md.sel = 0;
            md.upcall = false;
        }
        Op::End { d } => {
            let (domain, mut peers) = Others::split(&mut w.domains, usize::from(d - 1));
            domain.dying = true;
            domain.disconnect_peers(&mut peers);
            let ports: Vec<(u32, Bound)> = m.d(d).ports.iter().map(|(p, b)| (*p, *b)).collect();
            for (port, b) in ports {
                if let Bound::Inter { remote, port: rp } = b
                    && remote != d
                    && m.d(remote).ports.get(&rp) == Some(&Bound::Inter { remote: d, port })
                {
                    m.d(remote).ports.insert(rp, Bound::Unbound { remote: d });
                }
            }
            m.d(d).dead = true;
        }
    }
    Ok(())
}

fn check(w: &mut World, m: &mut Model) -> Result<(), TestCaseError> {
    for d in 1..=DOMAINS {
        if m.d(d).dead {
            continue;
        }
        for port in 2..PORTS {
            let (r, s) = w.call(d, ev::EVTCHNOP_STATUS, EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() });
            prop_assert_eq!(r, Ok(0));
            prop_assert_eq!((s.status, s.u), expected_status(m.d(d), port), "d{} port {}", d, port);
        }
        let (shared, abi) = w.shared(d);
        let pending = shared.u64_at(abi.evtchn_pending_offset());
        let masked = shared.u64_at(abi.evtchn_mask_offset());
        let sel = shared.u64_at(vcpu_info::PENDING_SEL);
        let upcall = shared.data[vcpu_info::UPCALL_PENDING] != 0;
        let bits = |set: &BTreeSet<u32>| set.iter().fold(0u64, |acc, p| acc | 1 << p);
        let md = m.d(d);
        prop_assert_eq!(pending & !0b11, bits(&md.pending), "d{} pending", d);
        prop_assert_eq!(masked, bits(&md.masked), "d{} masked", d);
        prop_assert_eq!((sel, upcall), (md.sel, md.upcall), "d{} selector and upcall flag", d);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn interdomain_channels_follow_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut w = World::new();
        let mut m = Model(Default::default());
        for op in ops {
            let d = match op {
                Op::AllocUnbound { d, .. } | Op::Bind { d, .. } | Op::BindIpi { d } | Op::Send { d, .. }
                | Op::Close { d, .. } | Op::Mask { d, .. } | Op::Unmask { d, .. } | Op::Consume { d }
                | Op::TakeSelector { d } | Op::End { d } => d,
            };
            if m.d(d).dead {
                continue;
            }
            step(&mut w, &mut m, op)?;
            check(&mut w, &mut m)?;
        }
    }
}
