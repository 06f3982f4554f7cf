//! Bench: times N round trips of the hypervisor's cheapest paths and prints one
//! `BENCH <name> <unit>=<value>` line each, which `cargo xtask bench` reads.
//!
//! Alone, it times the single-domain paths. Booted twice from qemu/configs/bench-pair.dts it
//! times an event's round trip between two domains on one CPU instead: the 16 MiB domain
//! sends and waits for the answer, the 24 MiB one answers. As one 20 MiB domain of two vCPUs
//! (qemu/configs/bench-smp2.dts) it times yielding between its vCPUs.
//!
//! AArch64: the virtual counter (CNTVCT_EL0 / CNTFRQ_EL0) around each loop, reported as
//! `ns_per_op` (under QEMU `-icount shift=0` one ns is one guest instruction). x86_64: the
//! TSC, reported as `cycles_per_op` (the guest does not know the TSC's frequency); the vGIC
//! figure is aarch64 only. ARMv7 reads its virtual counter through CP15 and reports
//! `ns_per_op` like aarch64.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

/// Round trips per figure.
#[cfg(target_os = "none")]
const N: u64 = 10_000;

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    use guest_abi::event_channel::{self as ev, EvtchnBindIpi, EvtchnSend};
    use guest_abi::{hypercall as nr, sched, version};
    use hello_guest::{hypercall, println, shutdown, xen_version};

    match hello_guest::grants::own_pages() {
        4096 => pair::runner(),
        6144 => pair::echo(),
        5120 => switch::run(),
        _ => {}
    }
    // Warm up, and make sure the calls work before timing them.
    let v = xen_version(version::XENVER_VERSION, 0);
    if v <= 0 {
        println!("FAIL bench: xen_version returned {}", v);
        shutdown(sched::SHUTDOWN_CRASH);
    }
    time::report("xen_version", || {
        xen_version(version::XENVER_VERSION, 0);
    });
    time::report("sched_yield", || {
        hypercall(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
    });

    // Loopback: an IPI port bound to our own vCPU 0; sending on it notifies ourselves. The
    // upcall may be raised, but interrupts stay masked (DAIF / RFLAGS.IF), so it is never taken.
    let mut bind = EvtchnBindIpi { vcpu: 0, port: 0 };
    let rc = hypercall(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_IPI, &raw mut bind as u64, 0, 0, 0]);
    // SAFETY: the hypervisor wrote the port into `bind` behind the compiler's back.
    let port = unsafe { (&raw const bind.port).read_volatile() };
    let send = EvtchnSend { port };
    let arg = &raw const send as u64;
    let rc2 = if rc == 0 { hypercall(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, arg, 0, 0, 0]) } else { rc };
    if rc == 0 && rc2 == 0 {
        time::report("evtchn_send", || {
            hypercall(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, arg, 0, 0, 0]);
        });
    } else {
        println!("FAIL bench: loopback port: bind_ipi {} send {}", rc, rc2);
    }

    interdomain();
    grants();
    fifo();

    #[cfg(target_arch = "aarch64")]
    time::report("gicd_typer_read", || {
        // SAFETY: GICD_TYPER of the guest's vGICv3 distributor (Xen's layout: GICD at
        // 0x0300_1000); the hypervisor emulates the read.
        unsafe { ((0x0300_1000 + 0x4) as *const u32).read_volatile() };
    });

    println!("BENCH-DONE");
    shutdown(sched::SHUTDOWN_POWEROFF)
}

/// `EVTCHNOP_send` on one end of an interdomain channel whose other end is this domain's
/// too (loopback through `bind_interdomain`): the interdomain delivery path.
#[cfg(target_os = "none")]
fn interdomain() {
    use guest_abi::event_channel::{self as ev, EvtchnBindInterdomain, EvtchnSend};
    use guest_abi::{hypercall as nr, xen::DOMID_SELF};
    use hello_guest::{fifo, hypercall, println};
    let Ok(remote_port) = fifo::alloc_unbound() else {
        println!("FAIL bench: alloc_unbound");
        return;
    };
    let mut bind = EvtchnBindInterdomain { remote_dom: DOMID_SELF, _pad0: 0, remote_port, local_port: 0 };
    let rc = hypercall(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_INTERDOMAIN, &raw mut bind as u64, 0, 0, 0]);
    // SAFETY: the hypervisor wrote the port into `bind` behind the compiler's back.
    let port = unsafe { (&raw const bind.local_port).read_volatile() };
    if rc != 0 {
        println!("FAIL bench: bind_interdomain {}", rc);
        return;
    }
    let send = EvtchnSend { port };
    time::report("evtchn_send_interdomain", || {
        hypercall(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, &raw const send as u64, 0, 0, 0]);
    });
}

/// Grants of our own pages to ourselves: map + unmap of one page, and a 4 KiB copy from a
/// granted page to one of our frames.
#[cfg(target_os = "none")]
fn grants() {
    use guest_abi::grant_table::{self as gt, GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabUnmapGrantRef};
    use guest_abi::hypercall as nr;
    use guest_abi::xen::DOMID_SELF;
    use hello_guest::grants::{self, Page, frame};
    use hello_guest::{events, hypercall, println};

    static mut TABLE: Page = Page([0; 4096]);
    static mut SOURCE: Page = Page([0; 4096]);
    static mut SINK: Page = Page([0; 4096]);
    static mut WINDOW: Page = Page([0; 4096]);
    const REF: u32 = 8;

    let Some(me) = events::own_domid() else {
        println!("FAIL bench: own domain id");
        return;
    };
    let rc = grants::map_table(&raw mut TABLE);
    if rc != 0 {
        println!("FAIL bench: grant table: {}", rc);
        return;
    }
    grants::write_entry(&raw mut TABLE, REF, gt::GTF_PERMIT_ACCESS, me, frame(&raw const SOURCE));
    let window = (&raw const WINDOW) as u64;
    let map_unmap = || {
        let mut map = GnttabMapGrantRef {
            host_addr: window,
            flags: gt::GNTMAP_HOST_MAP,
            r#ref: REF,
            dom: me,
            ..Default::default()
        };
        hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_MAP_GRANT_REF, &raw mut map as u64, 1, 0, 0]);
        // SAFETY: the hypervisor wrote the outputs behind the compiler's back.
        let map = unsafe { (&raw const map).read_volatile() };
        let mut unmap = GnttabUnmapGrantRef { host_addr: window, handle: map.handle, ..Default::default() };
        hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_UNMAP_GRANT_REF, &raw mut unmap as u64, 1, 0, 0]);
        // SAFETY: as above.
        (map.status, unsafe { (&raw const unmap.status).read_volatile() })
    };
    let first = map_unmap();
    if first != (gt::GNTST_OKAY, gt::GNTST_OKAY) {
        println!("FAIL bench: grant map/unmap statuses {:?}", first);
        return;
    }
    time::report("grant_map_unmap", || {
        map_unmap();
    });
    let mut copy = GnttabCopy {
        source: GnttabCopyPtr { u: u64::from(REF), domid: me, offset: 0, _pad0: 0 },
        dest: GnttabCopyPtr { u: frame(&raw const SINK), domid: DOMID_SELF, offset: 0, _pad0: 0 },
        len: 4096,
        flags: gt::GNTCOPY_SOURCE_GREF,
        ..Default::default()
    };
    let arg = &raw mut copy as u64;
    hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_COPY, arg, 1, 0, 0]);
    // SAFETY: as above.
    let status = unsafe { (&raw const copy.status).read_volatile() };
    if status != gt::GNTST_OKAY {
        println!("FAIL bench: grant copy status {}", status);
        return;
    }
    time::report("grant_copy_4k", || {
        hypercall(nr::GRANT_TABLE_OP, [gt::GNTTABOP_COPY, arg, 1, 0, 0]);
    });
}

/// The two-vCPU boot (qemu/configs/bench-smp2.dts, 20 MiB): vCPU 1 yields forever, and each
/// yield of vCPU 0 gives the CPU to it and takes it back: two vCPU switches per round trip.
#[cfg(target_os = "none")]
mod switch {
    use core::sync::atomic::{AtomicU32, Ordering};
    use guest_abi::{hypercall as nr, sched};
    use hello_guest::{hypercall, println, shutdown, simd};

    const STACK: usize = 16 * 1024;
    #[repr(C, align(16))]
    struct Stack([u8; STACK]);
    static mut SECONDARY_STACK: Stack = Stack([0; STACK]);
    static STARTED: AtomicU32 = AtomicU32::new(0);

    fn yield_cpu() {
        hypercall(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
    }

    extern "C" fn secondary(_: usize) -> ! {
        STARTED.store(1, Ordering::Release);
        loop {
            yield_cpu();
        }
    }

    pub fn run() -> ! {
        let top = (&raw mut SECONDARY_STACK) as usize + STACK;
        let words = (top - 2 * size_of::<usize>()) as *mut usize;
        // SAFETY: the two top words of vCPU 1's stack, unused until it starts; its start code
        // reads them as its entry and argument.
        unsafe {
            words.write_volatile(secondary as *const () as usize);
            words.add(1).write_volatile(0);
        }
        let status = simd::start_vcpu(1, top);
        for _ in 0..10_000 {
            if STARTED.load(Ordering::Acquire) != 0 {
                break;
            }
            yield_cpu();
        }
        if status != 0 || STARTED.load(Ordering::Acquire) == 0 {
            println!("FAIL bench: vCPU 1 did not start (status {})", status);
            shutdown(sched::SHUTDOWN_CRASH);
        }
        super::time::report("vcpu_switch_yield", yield_cpu);
        println!("BENCH-SWITCH-DONE");
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

/// The two-domain boot: an event's round trip between two domains sharing one CPU.
#[cfg(target_os = "none")]
mod pair {
    use guest_abi::sched;
    use hello_guest::{events, println, shutdown};

    const RUNNER: u16 = 1;
    const ECHO: u16 = 2;

    fn connect_or_fail(ok: bool, what: &str) {
        if !ok {
            println!("FAIL bench: pair: {}", what);
            shutdown(sched::SHUTDOWN_CRASH);
        }
    }

    /// Offer a port to the echo domain, wait for it to say it is there, then time sending
    /// and waiting for the answer.
    pub fn runner() -> ! {
        connect_or_fail(events::map_shared_info(), "shared info");
        let port = events::alloc_unbound(ECHO);
        connect_or_fail(port.is_ok(), "alloc_unbound");
        let port = port.unwrap_or(0);
        connect_or_fail(events::take_event(port), "the echo domain never connected");
        let mut lost = 0;
        super::time::report("evtchn_roundtrip_interdomain", || {
            if events::send(port) != 0 || !events::take_event(port) {
                lost += 1;
            }
        });
        connect_or_fail(lost == 0, "answers lost");
        println!("BENCH-PAIR-DONE");
        shutdown(sched::SHUTDOWN_POWEROFF)
    }

    /// Bind the runner's port and answer every event, as many as the runner sends.
    pub fn echo() -> ! {
        connect_or_fail(events::map_shared_info(), "shared info");
        let port = events::bind_offered(RUNNER);
        connect_or_fail(port.is_some(), "no port of the runner would bind");
        let port = port.unwrap_or(0);
        events::poll_event(port); // the bind notification
        events::send(port);
        for _ in 0..super::N {
            if !events::take_event(port) {
                break;
            }
            events::send(port);
        }
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

/// FIFO events: send on an IPI port and consume it from the queue, with 10, 1000 and
/// 100 000 ports bound: the cost must not grow with the number of ports.
#[cfg(target_os = "none")]
fn fifo() {
    use guest_abi::event_channel::{self as ev, EvtchnBindIpi, EvtchnSend};
    use guest_abi::hypercall as nr;
    use hello_guest::{fifo, hypercall, println};
    let (rc, _) = fifo::init_control();
    if rc != 0 {
        println!("FAIL bench: FIFO init_control {}", rc);
        return;
    }
    let mut consumer = fifo::Consumer::default();
    for (name, ports) in
        [("fifo_send_consume_10", 10), ("fifo_send_consume_1000", 1000), ("fifo_send_consume_100000", 100_000)]
    {
        fifo::expand_to(ports + 2);
        let mut last = 0u32;
        while (last as usize) + 1 < ports {
            match fifo::alloc_unbound() {
                Ok(p) => last = p,
                Err(e) => {
                    println!("FAIL bench: {} ports: refused at {}: {}", ports, last, e);
                    return;
                }
            }
        }
        let mut bind = EvtchnBindIpi { vcpu: 0, port: 0 };
        hypercall(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_IPI, &raw mut bind as u64, 0, 0, 0]);
        // SAFETY: the hypervisor wrote the port into `bind` behind the compiler's back.
        let port = unsafe { (&raw const bind.port).read_volatile() };
        let send = EvtchnSend { port };
        // Events raised before the switch (the console's, the channel above) come first.
        while consumer.next().is_some() {}
        let mut lost = 0;
        time::report(name, || {
            hypercall(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND, &raw const send as u64, 0, 0, 0]);
            if consumer.next() != Some(port) {
                lost += 1;
            }
        });
        if lost != 0 {
            println!("FAIL bench: {}: {} events not consumed from the queue", name, lost);
        }
    }
}

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod time {
    fn counter() -> u64 {
        let v: u64;
        // SAFETY: reads the virtual counter, which EL1 may always read; the ISB keeps it in order.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nostack)) };
        v
    }

    fn frequency() -> u64 {
        let v: u64;
        // SAFETY: reads the counter's frequency.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v, options(nostack)) };
        v
    }

    /// Run `op` N times between two counter reads; print ns per op with one decimal.
    pub fn report(name: &str, op: impl FnMut()) {
        super::report_counter(name, counter, frequency(), op);
    }
}

/// Run `op` N times between two reads of an ARM generic-timer `counter` of `freq` Hz; print
/// ns per op with one decimal.
#[cfg(all(target_os = "none", any(target_arch = "aarch64", target_arch = "arm")))]
fn report_counter(name: &str, counter: fn() -> u64, freq: u64, mut op: impl FnMut()) {
    let start = counter();
    for _ in 0..N {
        op();
    }
    let ticks = counter() - start;
    let freq = freq.max(1);
    let tenths = u128::from(ticks) * 10_000_000_000 / (u128::from(freq) * u128::from(N));
    hello_guest::println!(
        "BENCH {} ns_per_op={}.{} ticks={} cntfrq={} n={}",
        name,
        tenths / 10,
        tenths % 10,
        ticks,
        freq,
        N
    );
}

/// ARMv7: the virtual counter (CNTVCT, CNTFRQ through CP15), as on aarch64.
#[cfg(all(target_os = "none", target_arch = "arm"))]
mod time {
    fn counter() -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: reads the virtual counter, which PL1 may always read; the ISB keeps it in order.
        unsafe { core::arch::asm!("isb", "mrrc p15, 1, {}, {}, c14", out(reg) lo, out(reg) hi, options(nostack)) };
        u64::from(hi) << 32 | u64::from(lo)
    }

    fn frequency() -> u64 {
        let v: u32;
        // SAFETY: reads the counter's frequency (CNTFRQ).
        unsafe { core::arch::asm!("mrc p15, 0, {}, c14, c0, 0", out(reg) v, options(nostack)) };
        u64::from(v)
    }

    /// Run `op` N times between two counter reads; print ns per op with one decimal.
    pub fn report(name: &str, op: impl FnMut()) {
        super::report_counter(name, counter, frequency(), op);
    }
}

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod time {
    use hello_guest::println;

    /// Run `op` N times between two TSC reads; print TSC cycles per op with one decimal.
    pub fn report(name: &str, mut op: impl FnMut()) {
        // SAFETY: RDTSC is unprivileged and always present on x86_64.
        let start = unsafe { core::arch::x86_64::_rdtsc() };
        for _ in 0..super::N {
            op();
        }
        // SAFETY: as above.
        let cycles = unsafe { core::arch::x86_64::_rdtsc() } - start;
        let tenths = cycles * 10 / super::N;
        println!("BENCH {} cycles_per_op={}.{} cycles={} n={}", name, tenths / 10, tenths % 10, cycles, super::N);
    }
}
