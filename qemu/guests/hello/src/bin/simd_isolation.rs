//! simd-isolation: a guest's vector registers are its own.
//!
//! Each vCPU fills every vector and FP control register it has with a pattern of its own
//! (seeded by its domain's size and its vCPU number), then goes through events that give the
//! CPU to someone else: long spins (timer preemption), `SCHEDOP_yield`, and blocking waits
//! (WFI or `SCHEDOP_block` with a timer armed, where the backend has a timer), and on ARM
//! yields with the FP unit turned off (FPEXC.EN / CPACR_EL1.FPEN clear). After each it
//! reads every register back and compares. vCPU 1 is started with the arch's CPU_ON where
//! the domain has a second vCPU; several domains running this guest side by side check the
//! same across domains.
//!
//! Output: `PASS simd-isolation v<n> round <r> <event>` per check,
//! `FAIL simd-isolation: <register> expected <x> got <y>` per wrong register, and
//! `SIMD-ISOLATION-DONE failures=<n> checks=<n> ...` at the end.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    guest::main()
}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, Ordering};
    use guest_abi::{hypercall as nr, memory, sched, xen};
    use hello_guest::simd::{self, Event, Regs};
    use hello_guest::{hypercall, println, shutdown};

    /// Rounds per vCPU; they cycle through [`Kind`].
    const ROUNDS: u32 = 16;
    /// Spin iterations: several 1 ms slices of the run loop under QEMU TCG and Bochs.
    const SPIN: u32 = 3_000_000;
    /// How far ahead a blocking wait's timer is armed.
    const WAIT_US: u64 = 2_000;
    /// At most this many wrong registers are printed per check.
    const REPORTED: usize = 4;
    const VCPUS: usize = 2;
    const STACK: usize = 16 * 1024;
    /// Yields the boot vCPU waits for vCPU 1 to show up.
    const START_YIELDS: u32 = 1000;

    #[derive(Clone, Copy)]
    enum Kind {
        Spin,
        Yield,
        Wfi,
        Block,
        YieldFpOff,
    }

    impl Kind {
        fn of(round: u32) -> Kind {
            [Kind::Spin, Kind::Yield, Kind::Wfi, Kind::Block, Kind::YieldFpOff][round as usize % 5]
        }
        fn name(self) -> &'static str {
            match self {
                Kind::Spin => "spin",
                Kind::Yield => "yield",
                Kind::Wfi => "wfi",
                Kind::Block => "block",
                Kind::YieldFpOff => "yield with the FP unit off",
            }
        }
    }

    /// What the vCPUs share (single-writer words: plain loads and stores, no exclusives, as
    /// the MMU is off on ARM and memory is device-typed).
    struct VcpuStats {
        heartbeat: AtomicU32,
        rounds: AtomicU32,
        failures: AtomicU32,
        /// Checks during which another vCPU of the domain ran.
        switched: AtomicU32,
        /// Spins during which another vCPU ran: the hypervisor preempted this one.
        preempted: AtomicU32,
        blocked: AtomicU32,
        started: AtomicU32,
        done: AtomicU32,
    }

    impl VcpuStats {
        const fn new() -> Self {
            VcpuStats {
                heartbeat: zero(),
                rounds: zero(),
                failures: zero(),
                switched: zero(),
                preempted: zero(),
                blocked: zero(),
                started: zero(),
                done: zero(),
            }
        }
        fn bump(counter: &AtomicU32) {
            counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    const fn zero() -> AtomicU32 {
        AtomicU32::new(0)
    }

    static STATS: [VcpuStats; VCPUS] = [VcpuStats::new(), VcpuStats::new()];

    #[repr(C, align(16))]
    struct Stack([u8; STACK]);
    static mut SECONDARY_STACK: Stack = Stack([0; STACK]);

    pub fn main() -> ! {
        let regs = simd::enable(0);
        let seed = domain_seed();
        println!("simd-isolation: checking {regs}; domain seed {seed:#x}");
        let sibling = start_sibling(seed);
        exercise(0, seed);
        if sibling {
            while STATS[1].done.load(Ordering::Acquire) == 0 {
                sched_op(sched::SCHEDOP_YIELD);
            }
        }
        report(if sibling { 2 } else { 1 });
        shutdown(sched::SHUTDOWN_POWEROFF)
    }

    /// A number only this domain has: its size in pages (domains in one test differ in size).
    fn domain_seed() -> u64 {
        let domid: xen::DomId = xen::DOMID_SELF;
        let pages = hypercall(nr::MEMORY_OP, [memory::XENMEM_CURRENT_RESERVATION, &raw const domid as u64, 0, 0, 0]);
        (pages as u64).wrapping_mul(0x1_0000_0001)
    }

    /// Start vCPU 1 on its own stack; false if the domain has none (or the call failed).
    fn start_sibling(seed: u64) -> bool {
        let top = (&raw mut SECONDARY_STACK) as usize + STACK;
        let words = (top - 2 * size_of::<usize>()) as *mut usize;
        // SAFETY: the two top words of vCPU 1's stack, which nothing uses before it starts;
        // `secondary_start` reads them as its entry and argument.
        unsafe {
            words.write_volatile(secondary_main as *const () as usize);
            words.add(1).write_volatile(seed as usize);
        }
        let status = simd::start_vcpu(1, top);
        if status != 0 {
            println!("simd-isolation: no vCPU 1 (CPU_ON said {status}): one vCPU");
            return false;
        }
        // Until it runs (x86 cannot tell from the STARTUP whether a vCPU 1 exists).
        for _ in 0..START_YIELDS {
            if STATS[1].started.load(Ordering::Acquire) != 0 {
                println!("simd-isolation: vCPU 1 started");
                return true;
            }
            sched_op(sched::SCHEDOP_YIELD);
        }
        println!("simd-isolation: no vCPU 1 (it never ran): one vCPU");
        false
    }

    extern "C" fn secondary_main(seed: usize) -> ! {
        STATS[1].started.store(1, Ordering::Release);
        simd::enable(1);
        exercise(1, seed as u64);
        loop {
            sched_op(sched::SCHEDOP_YIELD);
        }
    }

    fn sched_op(cmd: u64) -> i64 {
        hypercall(nr::SCHED_OP, [cmd, 0, 0, 0, 0])
    }

    /// Every round of vCPU `v`: fill, event, read back, compare.
    fn exercise(v: usize, seed: u64) {
        let me = &STATS[v];
        let mut pattern: Regs = [0; simd::WORDS];
        simd::fill(seed ^ ((v as u64 + 1) << 56), &mut pattern);
        simd::sanitize(v, &mut pattern);
        for round in 0..ROUNDS {
            let kind = Kind::of(round);
            let others = others_progress(v);
            let mut got: Regs = [0; simd::WORDS];
            let event = event(v, kind);
            simd::roundtrip(&pattern, event, &me.heartbeat, &mut got);
            if matches!(kind, Kind::Wfi | Kind::Block) && simd::disarm_wakeup(v) {
                VcpuStats::bump(&me.blocked);
            }
            if others != others_progress(v) {
                VcpuStats::bump(&me.switched);
                if matches!(kind, Kind::Spin) {
                    VcpuStats::bump(&me.preempted);
                }
            }
            let wrong = compare(&pattern, &got);
            if wrong == 0 {
                println!("PASS simd-isolation v{} round {} {}", v, round, label(kind, event));
            }
            me.failures.store(me.failures.load(Ordering::Relaxed) + wrong, Ordering::Relaxed);
            VcpuStats::bump(&me.rounds);
        }
        me.done.store(1, Ordering::Release);
    }

    /// The event for a round of `kind`; a blocking wait needs a timer to end it.
    fn event(v: usize, kind: Kind) -> Event {
        let hypercall = |cmd| Event::Hypercall { nr: nr::SCHED_OP, args: [cmd, 0] };
        match kind {
            Kind::Spin => Event::Spin(SPIN),
            Kind::Yield => hypercall(sched::SCHEDOP_YIELD),
            Kind::YieldFpOff if simd::FP_OFF => {
                Event::HypercallFpOff { nr: nr::SCHED_OP, args: [sched::SCHEDOP_YIELD, 0] }
            }
            Kind::YieldFpOff => hypercall(sched::SCHEDOP_YIELD),
            Kind::Wfi if simd::arm_wakeup(v, WAIT_US) => Event::WaitForInterrupt,
            Kind::Block if simd::arm_wakeup(v, WAIT_US) => hypercall(sched::SCHEDOP_BLOCK),
            // No timer on this backend: nothing would end the wait.
            Kind::Wfi | Kind::Block => hypercall(sched::SCHEDOP_YIELD),
        }
    }

    fn label(kind: Kind, event: Event) -> &'static str {
        match (kind, event) {
            (Kind::Wfi | Kind::Block, Event::Hypercall { args: [sched::SCHEDOP_YIELD, _], .. }) => {
                "yield (no timer for a blocking wait)"
            }
            (Kind::YieldFpOff, Event::Hypercall { .. }) => "yield",
            _ => kind.name(),
        }
    }

    /// Everything the other vCPUs have done so far (it changes only while they run).
    fn others_progress(v: usize) -> u64 {
        let mut sum = 0u64;
        for (i, s) in STATS.iter().enumerate().filter(|(i, _)| *i != v) {
            sum = sum.wrapping_add(u64::from(s.heartbeat.load(Ordering::Relaxed)) << (i * 8));
            sum = sum.wrapping_add(u64::from(s.rounds.load(Ordering::Relaxed)));
        }
        sum
    }

    /// Report every register that lost its value; returns how many did.
    fn compare(expected: &Regs, got: &Regs) -> u32 {
        let mut wrong = 0;
        for (i, (e, g)) in expected.iter().zip(got).enumerate().filter(|(_, (e, g))| e != g) {
            if (wrong as usize) < REPORTED {
                let mut line = hello_guest::Line::new();
                let _ = simd::name(i, &mut line);
                let name = core::str::from_utf8(line.as_bytes()).unwrap_or("?");
                println!("FAIL simd-isolation: {} expected {:#018x} got {:#018x}", name, e, g);
            }
            wrong += 1;
        }
        wrong
    }

    fn report(vcpus: usize) {
        let sum = |f: fn(&VcpuStats) -> u32| STATS[..vcpus].iter().map(f).sum::<u32>();
        let failures = sum(|s| s.failures.load(Ordering::Relaxed));
        let checks = sum(|s| s.rounds.load(Ordering::Relaxed));
        let switched = sum(|s| s.switched.load(Ordering::Relaxed));
        let preempted = sum(|s| s.preempted.load(Ordering::Relaxed));
        let blocked = sum(|s| s.blocked.load(Ordering::Relaxed));
        if switched > 0 {
            println!("PASS simd-isolation-switched: the other vCPU ran during {} checks", switched);
        }
        if preempted > 0 {
            println!("PASS simd-isolation-preempted: the other vCPU ran during {} spins", preempted);
        }
        if blocked > 0 {
            println!("PASS simd-isolation-blocked: {} waits ended by their timer", blocked);
        }
        println!(
            "SIMD-ISOLATION-DONE failures={} checks={} vcpus={} switched={} preempted={} blocked={}",
            failures, checks, vcpus, switched, preempted, blocked
        );
    }
}
