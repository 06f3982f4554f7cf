//! grant-ring: a shared ring on a granted page between two domains, 10 000 messages,
//! checksummed, with an interdomain event channel for the notifications.
//!
//! Two domains from qemu/configs/grant-ring.dts run this binary and tell their roles apart by
//! their size: 16 MiB is the frontend (domain 1), 24 MiB the backend (domain 2). The frontend
//! grants its ring page writable (reference 8) and a page of known bytes read-only
//! (reference 9) to the backend and offers it an unbound port. The backend binds the port,
//! maps both grants over pages of its own, checks the read-only page, and says it is
//! connected. Then the frontend fills the ring, notifies, and waits for the backend to have
//! emptied it, until every message went through; the backend checks each message and the
//! checksum the frontend leaves in the ring, unmaps both grants and notifies a last time.
//! The frontend sees `GTF_reading`/`GTF_writing` set in its entries while the backend holds
//! them, and cleared once it has unmapped them.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::mem::offset_of;
    use core::sync::atomic::{Ordering, fence};
    use guest_abi::grant_table::{self as gt, GnttabMapGrantRef, GnttabUnmapGrantRef};
    use guest_abi::{hypercall as nr, sched};
    use hello_guest::events;
    use hello_guest::grants::{self, Page, frame};
    use hello_guest::{check, hypercall, println, shutdown};

    const FRONTEND: u16 = 1;
    const BACKEND: u16 = 2;
    /// Linux keeps the first 8 references for itself; so do we.
    const RING_REF: u32 = 8;
    const INFO_REF: u32 = 9;
    const MESSAGES: u32 = 10_000;

    /// The ring: indices that only grow, a flag and checksum for the end, then the slots.
    #[repr(C, align(4096))]
    struct Ring {
        prod: u32,
        cons: u32,
        done: u32,
        _pad: u32,
        checksum: u64,
        _pad2: [u64; 1],
        slots: [u64; SLOTS],
    }
    const SLOTS: usize = (4096 - 32) / 8;

    // Frontend: its grant table, the ring it lends, a read-only page it lends.
    static mut TABLE: Page = Page([0; 4096]);
    static mut RING: Ring = Ring { prod: 0, cons: 0, done: 0, _pad: 0, checksum: 0, _pad2: [0], slots: [0; SLOTS] };
    static mut INFO: Page = Page([0; 4096]);
    // Backend: the pages of its own the grants are mapped over.
    static mut RING_MAP: Page = Page([0; 4096]);
    static mut INFO_MAP: Page = Page([0; 4096]);

    fn message(i: u32) -> u64 {
        u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a
    }

    fn mix(sum: u64, value: u64) -> u64 {
        (sum.rotate_left(5) ^ value).wrapping_mul(0x100_0000_01b3)
    }

    fn info_byte(i: usize) -> u8 {
        (i as u8).wrapping_mul(7) ^ 0x96
    }

    /// Field `offset` (an `offset_of!(Ring, ..)`) of the ring at `ring`: the frontend's own
    /// page, or the backend's mapping of it.
    fn field<T>(ring: *mut Ring, offset: usize) -> *mut T {
        ring.cast::<u8>().wrapping_add(offset).cast()
    }

    fn slot(ring: *mut Ring, i: u32) -> *mut u64 {
        field::<u64>(ring, offset_of!(Ring, slots)).wrapping_add(i as usize % SLOTS)
    }

    fn read(field: *const u32) -> u32 {
        // SAFETY: `field` points into a ring page both domains share; volatile, as the peer
        // writes it.
        unsafe { field.read_volatile() }
    }

    fn write(field: *mut u32, value: u32) {
        // SAFETY: as in `read`.
        unsafe { field.write_volatile(value) }
    }

    // ---- frontend ----

    fn grant(gref: u32, flags: u16, domid: u16, gfn: u64) {
        grants::write_entry(&raw mut TABLE, gref, flags, domid, gfn);
    }

    fn entry_flags(gref: u32) -> u16 {
        grants::entry_flags(&raw const TABLE, gref)
    }

    fn check_flags(when: &str, gref: u32, want: u16) {
        let busy = entry_flags(gref) & (gt::GTF_READING | gt::GTF_WRITING);
        check(
            "grant-ring flags",
            busy == want,
            format_args!("{}: ref {} reading/writing bits {:#x}, expected {:#x}", when, gref, busy, want),
        );
    }

    fn frontend() -> bool {
        if !events::map_shared_info() {
            check("grant-ring shared-info", false, format_args!("cannot map shared info"));
            return false;
        }
        let r = grants::map_table(&raw mut TABLE);
        check("grant-ring map-table", r == 0, format_args!("add_to_physmap grant table: {}", r));
        for i in 0..4096 {
            // SAFETY: our own page, not yet granted.
            unsafe { (&raw mut INFO.0[i]).write_volatile(info_byte(i)) };
        }
        grant(RING_REF, gt::GTF_PERMIT_ACCESS, BACKEND, frame(&raw const RING));
        grant(INFO_REF, gt::GTF_PERMIT_ACCESS | gt::GTF_READONLY, BACKEND, frame(&raw const INFO));
        // Before the port exists: the backend cannot have mapped anything yet.
        println!("grant-ring: frontend grants ring ref {} and info ref {}", RING_REF, INFO_REF);
        let Ok(port) = events::alloc_unbound(BACKEND) else {
            check("grant-ring alloc_unbound", false, format_args!("no port"));
            return false;
        };
        println!("grant-ring: frontend offers port {}", port);
        if !events::take_event(port) {
            check("grant-ring connect", false, format_args!("the backend never said it was connected"));
            return false;
        }
        check_flags("mapped", RING_REF, gt::GTF_READING | gt::GTF_WRITING);
        check_flags("mapped read-only", INFO_REF, gt::GTF_READING);
        let ring = &raw mut RING;
        let mut sent = 0u32;
        let mut sum = 0u64;
        while sent < MESSAGES {
            let cons = read(field(ring, offset_of!(Ring, cons)));
            let n = (SLOTS as u32 - (sent - cons)).min(MESSAGES - sent);
            for i in sent..sent + n {
                // SAFETY: a slot of our ring the backend has consumed.
                unsafe { slot(ring, i).write_volatile(message(i)) };
                sum = mix(sum, message(i));
            }
            sent += n;
            fence(Ordering::SeqCst);
            if sent == MESSAGES {
                // SAFETY: a field of our own ring page, read by the backend once `done` is set.
                unsafe { field::<u64>(ring, offset_of!(Ring, checksum)).write_volatile(sum) };
                write(field(ring, offset_of!(Ring, done)), 1);
            }
            write(field(ring, offset_of!(Ring, prod)), sent);
            fence(Ordering::SeqCst);
            if events::send(port) != 0 || !events::take_event(port) {
                check("grant-ring progress", false, format_args!("stuck after {} messages", sent));
                return false;
            }
        }
        // The last event comes after the backend unmapped both pages.
        check_flags("unmapped", RING_REF, 0);
        check_flags("unmapped", INFO_REF, 0);
        println!("grant-ring: frontend sent {} messages, checksum {:#x}", sent, sum);
        true
    }

    // ---- backend ----

    fn map(gref: u32, at: u64, readonly: bool) -> GnttabMapGrantRef {
        let ro = if readonly { gt::GNTMAP_READONLY } else { 0 };
        let mut op = GnttabMapGrantRef {
            host_addr: at,
            flags: gt::GNTMAP_HOST_MAP | ro,
            r#ref: gref,
            dom: FRONTEND,
            ..Default::default()
        };
        let r = hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_MAP_GRANT_REF, &raw mut op as u64, 1, 0, 0]);
        check("grant-ring map call", r == 0, format_args!("rc {}", r));
        // SAFETY: the hypervisor wrote the outputs behind the compiler's back.
        unsafe { (&raw const op).read_volatile() }
    }

    fn unmap(handle: u32, at: u64) -> i16 {
        let mut op = GnttabUnmapGrantRef { host_addr: at, handle, ..Default::default() };
        hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_UNMAP_GRANT_REF, &raw mut op as u64, 1, 0, 0]);
        // SAFETY: as in `map`.
        unsafe { (&raw const op.status).read_volatile() }
    }

    /// Bad maps and unmaps get Xen's statuses and map nothing.
    fn refusals(scratch: u64) {
        let mut bad_dom = GnttabMapGrantRef {
            host_addr: scratch,
            flags: gt::GNTMAP_HOST_MAP,
            r#ref: RING_REF,
            dom: 0x3ff,
            ..Default::default()
        };
        hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_MAP_GRANT_REF, &raw mut bad_dom as u64, 1, 0, 0]);
        // SAFETY: as in `map`.
        let bad_dom = unsafe { (&raw const bad_dom.status).read_volatile() };
        let cases = [
            ("no such domain", bad_dom, gt::GNTST_BAD_DOMAIN),
            ("past the table", map(1 << 20, scratch, true).status, gt::GNTST_BAD_GNTREF),
            ("never granted", map(20, scratch, true).status, gt::GNTST_GENERAL_ERROR),
            ("read-only grant mapped writable", map(INFO_REF, scratch, false).status, gt::GNTST_GENERAL_ERROR),
            ("no such handle", unmap(0x7fff, scratch), gt::GNTST_BAD_HANDLE),
        ];
        for (what, got, want) in cases {
            check("grant-ring refusal", got == want, format_args!("{}: status {}, expected {}", what, got, want));
        }
    }

    fn backend() -> bool {
        if !events::map_shared_info() {
            check("grant-ring shared-info", false, format_args!("cannot map shared info"));
            return false;
        }
        let Some(port) = events::bind_offered(FRONTEND) else {
            check("grant-ring connect", false, format_args!("no port of d{} would bind", FRONTEND));
            return false;
        };
        check("grant-ring bind-notifies", events::take_event(port), format_args!("port {} not pending", port));
        let (ring_at, info_at) = ((&raw const RING_MAP) as u64, (&raw const INFO_MAP) as u64);
        refusals(info_at);
        let ring_map = map(RING_REF, ring_at, false);
        let info_map = map(INFO_REF, info_at, true);
        check("grant-ring map", ring_map.status == gt::GNTST_OKAY, format_args!("ring: status {}", ring_map.status));
        check("grant-ring map-ro", info_map.status == gt::GNTST_OKAY, format_args!("info: status {}", info_map.status));
        if ring_map.status != gt::GNTST_OKAY || info_map.status != gt::GNTST_OKAY {
            return false;
        }
        let info_ok = (0..4096).all(|i| {
            // SAFETY: the frontend's page, mapped read-only over INFO_MAP.
            unsafe { (&raw const INFO_MAP.0[i]).read_volatile() == info_byte(i) }
        });
        check("grant-ring read-only-page", info_ok, format_args!("the lent page's bytes differ"));
        println!("grant-ring: backend mapped ring (handle {}) and info (handle {})", ring_map.handle, info_map.handle);
        events::send(port);
        let ring = ring_at as *mut Ring;
        let (mut cons, mut sum, mut wrong) = (0u32, 0u64, 0u32);
        loop {
            if !events::take_event(port) {
                check("grant-ring progress", false, format_args!("no event after {} messages", cons));
                return false;
            }
            let done = read(field(ring, offset_of!(Ring, done)));
            fence(Ordering::SeqCst);
            let prod = read(field(ring, offset_of!(Ring, prod)));
            fence(Ordering::SeqCst);
            while cons != prod && cons < MESSAGES {
                // SAFETY: a slot of the mapped ring the frontend has filled.
                let v = unsafe { slot(ring, cons).read_volatile() };
                wrong += u32::from(v != message(cons));
                sum = mix(sum, v);
                cons += 1;
            }
            fence(Ordering::SeqCst);
            write(field(ring, offset_of!(Ring, cons)), cons);
            if done == 1 && cons == prod {
                break;
            }
            events::send(port);
        }
        // SAFETY: the mapped ring's checksum, written before `done`.
        let their_sum = unsafe { field::<u64>(ring, offset_of!(Ring, checksum)).read_volatile() };
        let unmapped = [unmap(ring_map.handle, ring_at), unmap(info_map.handle, info_at)];
        let again = unmap(ring_map.handle, ring_at);
        check("grant-ring unmap", unmapped == [gt::GNTST_OKAY; 2], format_args!("statuses {:?}", unmapped));
        check("grant-ring unmap-twice", again == gt::GNTST_BAD_HANDLE, format_args!("status {}", again));
        let ok = cons == MESSAGES && wrong == 0 && sum == their_sum;
        check(
            "grant-ring messages",
            ok,
            format_args!("{} messages, {} wrong, checksum {:#x} vs {:#x}", cons, wrong, sum, their_sum),
        );
        println!("grant-ring: backend received {} messages, checksum {:#x}", cons, sum);
        let all_ok = ok && info_ok && unmapped == [gt::GNTST_OKAY; 2];
        // The last notification lets the frontend check its entries and finish, after us.
        println!("GRANT-RING-DONE backend messages={} ok={}", MESSAGES, all_ok);
        events::send(port);
        all_ok
    }

    pub fn main() -> ! {
        match grants::own_pages() {
            4096 => {
                let ok = frontend();
                println!("GRANT-RING-DONE frontend messages={} ok={}", MESSAGES, ok);
            }
            6144 => {
                // It says when it is done itself, before it lets the frontend go.
                if !backend() {
                    println!("GRANT-RING-DONE backend ok=false");
                }
            }
            n => check("grant-ring", false, format_args!("{} pages: not a size this test knows", n)),
        }
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    guest::main()
}
