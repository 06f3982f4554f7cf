//! evtchn-pingpong: an event bounced between two ends of an interdomain channel, N times.
//!
//! Two domains from one configuration (qemu/configs/evtchn-pingpong.dts) run this binary; they
//! tell their roles apart by their size, as the configuration gives it: 16 MiB is the `ping`
//! end (domain 1, which offers an unbound port to domain 2), 24 MiB the `pong` end (domain 2,
//! which finds that port and binds to it). Any other size runs both ends in one domain over a
//! loopback channel (`DOMID_SELF`), so a backend that boots one domain checks the same path.
//!
//! Events are seen as Linux's 2-level code sees them (`hello_guest::events`): the shared info
//! page is mapped over one of the guest's own pages and the port's bit in `evtchn_pending` is
//! polled and cleared, with `SCHEDOP_yield` between polls so that the other end gets the CPU.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use guest_abi::event_channel::{self as ev, EVTCHNSTAT_INTERDOMAIN, EvtchnStatus};
    use guest_abi::memory as mem;
    use guest_abi::xen::DOMID_SELF;
    use guest_abi::{errno, hypercall as nr, sched};
    use hello_guest::events::{alloc_unbound, bind, bind_offered, map_shared_info, send, take_event};
    use hello_guest::{check, hypercall, println, shutdown};

    /// Round trips each run makes.
    const ROUNDS: u32 = 1000;

    enum Role {
        Ping { peer: u16 },
        Pong { peer: u16 },
        Loopback,
    }

    fn role() -> Role {
        let domid = DOMID_SELF;
        let pages = hypercall(nr::MEMORY_OP, [mem::XENMEM_CURRENT_RESERVATION, &raw const domid as u64, 0, 0, 0]);
        match pages {
            4096 => Role::Ping { peer: 2 },
            6144 => Role::Pong { peer: 1 },
            _ => Role::Loopback,
        }
    }

    fn evtchn_op<T>(cmd: u64, arg: &mut T) -> i64 {
        hypercall(nr::EVENT_CHANNEL_OP, [cmd, arg as *mut T as u64, 0, 0, 0])
    }

    fn connected(port: u32) -> bool {
        let mut s = EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() };
        evtchn_op(ev::EVTCHNOP_STATUS, &mut s) == 0 && s.status == EVTCHNSTAT_INTERDOMAIN
    }

    /// Ping: offer a port to the peer and wait for its first event (it is connected and has
    /// taken its bind notification), then send and wait N times.
    fn ping(peer: u16) -> u32 {
        let port = alloc_unbound(peer).expect("alloc_unbound");
        println!("evtchn-pingpong: ping offers port {} to d{}", port, peer);
        let ready = take_event(port);
        check("evtchn-pingpong connect", ready && connected(port), format_args!("d{} never signalled", peer));
        (0..ROUNDS).take_while(|_| send(port) == 0 && take_event(port)).count() as u32
    }

    /// Pong: find the port the peer offers (the first one that binds), say it is ready, then
    /// answer each event.
    fn pong(peer: u16) -> u32 {
        let Some(local) = bind_offered(peer) else {
            check("evtchn-pingpong connect", false, format_args!("no port of d{} would bind", peer));
            return 0;
        };
        println!("evtchn-pingpong: pong bound local port {} to d{}", local, peer);
        // Xen marks a freshly bound end pending: take that notification first.
        check("evtchn-pingpong bind-notifies", take_event(local), format_args!("port {} not pending", local));
        // Only now may the peer's events come: none coalesces with that notification.
        send(local);
        (0..ROUNDS).take_while(|_| take_event(local) && send(local) == 0).count() as u32
    }

    /// Both ends in this domain.
    fn loopback() -> u32 {
        let a = alloc_unbound(DOMID_SELF).expect("alloc_unbound");
        let b = bind(DOMID_SELF, a).expect("bind_interdomain");
        println!("evtchn-pingpong: loopback ports {} <-> {}", a, b);
        check("evtchn-pingpong bind-notifies", take_event(b), format_args!("port {} not pending", b));
        (0..ROUNDS).take_while(|_| send(a) == 0 && take_event(b) && send(b) == 0 && take_event(a)).count() as u32
    }

    /// Bad input gets Xen's error codes.
    fn refusals() {
        let cases = [
            ("no such domain", bind(0x3ff, 1), -errno::ESRCH),
            ("not unbound", bind(DOMID_SELF, 1), -errno::EINVAL),
            ("no such port", bind(DOMID_SELF, 100_000), -errno::EINVAL),
        ];
        for (what, got, want) in cases {
            check("evtchn-pingpong refusal", got == Err(want), format_args!("{}: {:?}, expected {}", what, got, want));
        }
    }

    pub fn main() -> ! {
        if !map_shared_info() {
            check("evtchn-pingpong", false, format_args!("cannot map shared info"));
            shutdown(sched::SHUTDOWN_CRASH);
        }
        refusals();
        let (name, rounds) = match role() {
            Role::Ping { peer } => ("ping", ping(peer)),
            Role::Pong { peer } => ("pong", pong(peer)),
            Role::Loopback => ("loopback", loopback()),
        };
        check(
            "evtchn-pingpong",
            rounds == ROUNDS,
            format_args!("{} stopped after {} of {} round trips", name, rounds, ROUNDS),
        );
        println!("EVTCHN-PINGPONG-DONE {} rounds={}", name, rounds);
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    guest::main()
}
