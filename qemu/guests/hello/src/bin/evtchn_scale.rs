//! evtchn-scale: one backend domain and many client domains from one configuration
//! (qemu/configs/evtchn-64-domains.dts: 1 + 63). Every client offers the backend a port and
//! grants it a ring page; the backend binds every client's port, maps every client's ring, and
//! answers each client's requests through its ring until the client says it is done. Then it
//! unmaps that ring, and the client sees its grant entry released.
//!
//! The domains tell their roles apart by their size: 16 MiB is the backend (domain 1, first in
//! DT order), 6 MiB a client (Xen 4.17 cannot place a smaller domU's boot data). The backend
//! finds its clients by domain id, from 2 up to the first id no domain has
//! (`bind_interdomain` says -ESRCH there).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use guest_abi::grant_table::{self as gt, GnttabMapGrantRef, GnttabUnmapGrantRef};
    use guest_abi::{errno, hypercall as nr, sched};
    use hello_guest::events::{self, PATIENCE};
    use hello_guest::grants::{self, Page, frame};
    use hello_guest::{check, hypercall, println, shutdown};

    const BACKEND: u16 = 1;
    /// Clients this backend can serve (ids 2..=64).
    const MAX_CLIENTS: usize = 63;
    /// Request/response round trips each client makes.
    const ROUNDS: u32 = 100;
    const RING_REF: u32 = 8;
    /// What a client writes as its last request.
    const DONE: u32 = u32::MAX;

    // Client: its grant table and the ring it lends (words: [0] request, [1] response).
    static mut TABLE: Page = Page([0; 4096]);
    static mut RING: Page = Page([0; 4096]);
    // Backend: the pages of its own each client's ring is mapped over.
    static mut RINGS: [Page; MAX_CLIENTS] = [const { Page([0; 4096]) }; MAX_CLIENTS];

    fn answer(request: u32) -> u32 {
        request.wrapping_mul(2_654_435_761).rotate_left(7)
    }

    fn word(page: *mut Page, i: usize) -> *mut u32 {
        page.cast::<u32>().wrapping_add(i)
    }

    fn read(at: *mut u32) -> u32 {
        // SAFETY: a word of a ring page shared between a client and the backend.
        unsafe { at.read_volatile() }
    }

    fn write(at: *mut u32, value: u32) {
        // SAFETY: as in `read`.
        unsafe { at.write_volatile(value) }
    }

    // ---- client ----

    fn client() -> bool {
        let r = grants::map_table(&raw mut TABLE);
        if r != 0 {
            check("evtchn-scale map-table", false, format_args!("add_to_physmap grant table: {}", r));
            return false;
        }
        grants::write_entry(&raw mut TABLE, RING_REF, gt::GTF_PERMIT_ACCESS, BACKEND, frame(&raw const RING));
        let Ok(port) = events::alloc_unbound(BACKEND) else {
            check("evtchn-scale alloc_unbound", false, format_args!("no port"));
            return false;
        };
        if !events::take_event(port) {
            check("evtchn-scale connect", false, format_args!("the backend never connected port {}", port));
            return false;
        }
        let ring = &raw mut RING;
        let mut good = 0;
        for i in 1..=ROUNDS {
            write(word(ring, 0), i);
            if events::send(port) != 0 || !events::take_event(port) {
                break;
            }
            good += u32::from(read(word(ring, 1)) == answer(i));
        }
        write(word(ring, 0), DONE);
        events::send(port);
        let released = events::take_event(port);
        let busy = grants::entry_flags(&raw const TABLE, RING_REF) & (gt::GTF_READING | gt::GTF_WRITING);
        let ok = good == ROUNDS && released && busy == 0;
        check(
            "evtchn-scale client",
            ok,
            format_args!("{} of {} answers right, released {}, entry bits {:#x}", good, ROUNDS, released, busy),
        );
        ok
    }

    // ---- backend ----

    struct Client {
        domid: u16,
        port: u32,
        handle: u32,
        ring: *mut Page,
        done: bool,
    }

    /// Bind client `domid`'s offered port and map its ring at `ring`; `None` when no domain
    /// has that id (the end of the clients), `Some(Err)` when it never offers.
    fn connect(domid: u16, ring: *mut Page) -> Option<Result<Client, ()>> {
        let mut port = None;
        for _ in 0..PATIENCE {
            match (1..8).map(|p| events::bind(domid, p)).find(|r| !matches!(r, Err(e) if *e == -errno::EINVAL)) {
                Some(Err(e)) if e == -errno::ESRCH => return None,
                Some(Ok(p)) => {
                    port = Some(p);
                    break;
                }
                _ => events::yield_cpu(),
            }
        }
        let Some(port) = port else { return Some(Err(())) };
        events::poll_event(port); // the bind notification
        let mut op = GnttabMapGrantRef {
            host_addr: ring as u64,
            flags: gt::GNTMAP_HOST_MAP,
            r#ref: RING_REF,
            dom: domid,
            ..Default::default()
        };
        // The client grants before it offers the port, so its grant is there by now.
        hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_MAP_GRANT_REF, &raw mut op as u64, 1, 0, 0]);
        // SAFETY: the hypervisor wrote the outputs behind the compiler's back.
        let op = unsafe { (&raw const op).read_volatile() };
        if op.status != gt::GNTST_OKAY {
            check("evtchn-scale map", false, format_args!("d{}: status {}", domid, op.status));
            return Some(Err(()));
        }
        events::send(port);
        Some(Ok(Client { domid, port, handle: op.handle, ring, done: false }))
    }

    fn serve(c: &mut Client) -> u32 {
        let request = read(word(c.ring, 0));
        if request != DONE {
            write(word(c.ring, 1), answer(request));
            events::send(c.port);
            return 1;
        }
        let mut op = GnttabUnmapGrantRef { host_addr: c.ring as u64, handle: c.handle, ..Default::default() };
        hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_UNMAP_GRANT_REF, &raw mut op as u64, 1, 0, 0]);
        // SAFETY: as in `connect`.
        let status = unsafe { (&raw const op.status).read_volatile() };
        check("evtchn-scale unmap", status == gt::GNTST_OKAY, format_args!("d{}: status {}", c.domid, status));
        c.done = true;
        events::send(c.port);
        0
    }

    fn backend() -> bool {
        let mut clients: [Option<Client>; MAX_CLIENTS] = [const { None }; MAX_CLIENTS];
        let mut count = 0;
        for (k, slot) in clients.iter_mut().enumerate() {
            // SAFETY: only the address of our own page is taken.
            let ring = unsafe { &raw mut RINGS[k] };
            match connect(BACKEND + 1 + k as u16, ring) {
                None => break,
                Some(Ok(c)) => {
                    *slot = Some(c);
                    count += 1;
                }
                Some(Err(())) => return false,
            }
        }
        println!("evtchn-scale: backend connected {} clients", count);
        let (mut answered, mut idle) = (0u32, 0u32);
        while clients.iter().flatten().any(|c| !c.done) && idle < PATIENCE {
            let mut any = false;
            for c in clients.iter_mut().flatten().filter(|c| !c.done) {
                if events::poll_event(c.port) {
                    answered += serve(c);
                    any = true;
                }
            }
            idle = if any { 0 } else { idle + 1 };
            events::yield_cpu();
        }
        let ok = count > 0 && answered == count * ROUNDS;
        check("evtchn-scale backend", ok, format_args!("{} answers for {} clients", answered, count));
        println!("EVTCHN-SCALE-DONE backend clients={} answers={}", count, answered);
        ok
    }

    pub fn main() -> ! {
        if !events::map_shared_info() {
            check("evtchn-scale shared-info", false, format_args!("cannot map shared info"));
            shutdown(sched::SHUTDOWN_CRASH);
        }
        match grants::own_pages() {
            4096 => {
                backend();
            }
            1536 => {
                let ok = client();
                println!("EVTCHN-SCALE-DONE client rounds={} ok={}", ROUNDS, ok);
            }
            n => check("evtchn-scale", false, format_args!("{} pages: not a size this test knows", n)),
        }
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    guest::main()
}
