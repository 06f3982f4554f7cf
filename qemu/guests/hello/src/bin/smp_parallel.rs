//! smp-parallel: two vCPUs of one domain really run at the same time, on two pCPUs.
//!
//! vCPU 0 starts vCPU 1 (PSCI CPU_ON on ARM; INIT/STARTUP through the x2APIC on x86),
//! then the two play a lockstep handshake through
//! shared memory: vCPU 0 writes round `n` to `PING` and spins until vCPU 1 answers `n` in
//! `PONG`; vCPU 1 spins until it sees `n`, answers, and waits for `n + 1`. Neither makes a
//! hypercall, a WFI/WFE/HLT or any other exit while it spins, and no timer of theirs is armed.
//! On a single pCPU the other vCPU therefore only runs once the hypervisor preempts the
//! spinning one at the end of its slice (1 ms at the least), so every round trip takes two
//! slices, 2 ms or more of guest time. Measured with the virtual counter (ARM) or Xen
//! system time through pvclock (x86: the TSC, which runs without exits), the best window of
//! [`WINDOW`] consecutive round trips must take less than 1 ms per round trip: impossible
//! unless both vCPUs ran on pCPUs of their own at once.
//!
//! Output: `smp-parallel: ...` figures, then `PASS smp-parallel ...` or
//! `FAIL smp-parallel: ...`, and `SMP-PARALLEL-DONE` at the end.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    guest::main()
}

#[cfg(all(target_os = "none", not(any(target_arch = "aarch64", target_arch = "arm", target_arch = "x86_64"))))]
mod guest {
    use guest_abi::sched;
    use hello_guest::{println, shutdown};

    pub fn main() -> ! {
        println!("smp-parallel: only written for aarch64, ARMv7 and x86_64");
        println!("SMP-PARALLEL-DONE");
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

#[cfg(all(target_os = "none", any(target_arch = "aarch64", target_arch = "arm", target_arch = "x86_64")))]
mod guest {
    use core::sync::atomic::{AtomicU32, Ordering};
    use guest_abi::{hypercall as nr, sched};
    use hello_guest::{hypercall, println, shutdown, simd};

    /// Round trips measured, in windows of [`WINDOW`].
    const ROUNDS: u64 = 2000;
    const WINDOW: u64 = 100;
    /// Give up after this long (guest time): a single pCPU needs about 2 ms per round trip.
    const GIVE_UP_SECS: u64 = 60;
    const STACK: usize = 16 * 1024;
    /// Yields the boot vCPU waits for vCPU 1 to show up.
    const START_YIELDS: u32 = 100_000;

    /// Single-writer words (plain loads and stores: the MMU is off, memory is device-typed;
    /// 32 bits, which ARMv7 stores without exclusives, as it does not a 64-bit atomic).
    static PING: AtomicU32 = AtomicU32::new(0);
    static PONG: AtomicU32 = AtomicU32::new(0);
    static STARTED: AtomicU32 = AtomicU32::new(0);
    /// vCPU 0 gave up: vCPU 1 stops waiting.
    static STOP: AtomicU32 = AtomicU32::new(0);

    #[repr(C, align(16))]
    struct Stack([u8; STACK]);
    static mut SECONDARY_STACK: Stack = Stack([0; STACK]);

    #[cfg(target_arch = "aarch64")]
    fn counter() -> u64 {
        let t: u64;
        // SAFETY: reading the virtual counter has no side effect.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) t, options(nostack, nomem)) };
        t
    }

    #[cfg(target_arch = "aarch64")]
    fn frequency() -> u64 {
        let f: u64;
        // SAFETY: reading the counter frequency has no side effect.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) f, options(nostack, nomem)) };
        f.max(1)
    }

    #[cfg(target_arch = "arm")]
    fn counter() -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: reading the virtual counter (CNTVCT) has no side effect.
        unsafe {
            core::arch::asm!("isb", "mrrc p15, 1, {}, {}, c14", out(reg) lo, out(reg) hi, options(nostack, nomem))
        };
        (u64::from(hi) << 32) | u64::from(lo)
    }

    #[cfg(target_arch = "arm")]
    fn frequency() -> u64 {
        let f: u32;
        // SAFETY: reading the counter frequency (CNTFRQ) has no side effect.
        unsafe { core::arch::asm!("mrc p15, 0, {}, c14, c0, 0", out(reg) f, options(nostack, nomem)) };
        u64::from(f).max(1)
    }

    /// Xen system time in ns (pvclock over the TSC: no exit once the shared info page is
    /// mapped, which the first call does).
    #[cfg(target_arch = "x86_64")]
    fn counter() -> u64 {
        simd::system_time_ns().unwrap_or(0)
    }

    #[cfg(target_arch = "x86_64")]
    fn frequency() -> u64 {
        1_000_000_000
    }

    pub fn main() -> ! {
        if counter() == 0 && cfg!(target_arch = "x86_64") {
            println!("FAIL smp-parallel: no Xen system time (shared info not mapped)");
            println!("SMP-PARALLEL-DONE");
            shutdown(sched::SHUTDOWN_POWEROFF)
        }
        if !start_sibling() {
            println!("FAIL smp-parallel: vCPU 1 did not start");
            println!("SMP-PARALLEL-DONE");
            shutdown(sched::SHUTDOWN_POWEROFF)
        }
        println!("smp-parallel: vCPU 1 started; {} round trips without exits", ROUNDS);
        let freq = frequency();
        let give_up = counter() + GIVE_UP_SECS * freq;
        let mut best = u64::MAX;
        let start = counter();
        let mut window_start = start;
        let mut done = 0;
        'rounds: for n in 1..=ROUNDS {
            PING.store(n as u32, Ordering::Release);
            while PONG.load(Ordering::Acquire) != n as u32 {
                core::hint::spin_loop();
                if counter() > give_up {
                    break 'rounds;
                }
            }
            done = n;
            if n % WINDOW == 0 {
                let now = counter();
                best = best.min(now - window_start);
                window_start = now;
            }
        }
        STOP.store(1, Ordering::Release);
        let us = |ticks: u64| ticks.saturating_mul(1_000_000) / freq;
        let total_us = us(counter() - start);
        if done < ROUNDS {
            println!("FAIL smp-parallel: only {} of {} round trips in {} us", done, ROUNDS, total_us);
        } else {
            let best_us = us(best);
            println!(
                "smp-parallel: {} round trips in {} us; best {} in {} us ({} ns each)",
                ROUNDS,
                total_us,
                WINDOW,
                best_us,
                best_us * 1000 / WINDOW
            );
            // One pCPU: two 1 ms slices per round trip at the least.
            if best_us < WINDOW * 1000 {
                println!("PASS smp-parallel: both vCPUs ran at once ({} ns per round trip)", best_us * 1000 / WINDOW);
            } else {
                println!("FAIL smp-parallel: {} us per round trip is what one pCPU would take", best_us / WINDOW);
            }
        }
        println!("SMP-PARALLEL-DONE rounds={}", done);
        shutdown(sched::SHUTDOWN_POWEROFF)
    }

    /// Start vCPU 1 on its own stack and wait (yielding) until it runs.
    fn start_sibling() -> bool {
        let top = (&raw mut SECONDARY_STACK) as usize + STACK;
        let words = (top - 2 * size_of::<usize>()) as *mut usize;
        // SAFETY: the two top words of vCPU 1's stack, which nothing uses before it starts;
        // `secondary_start` reads them as its entry and argument.
        unsafe {
            words.write_volatile(secondary_main as *const () as usize);
            words.add(1).write_volatile(0);
        }
        if simd::start_vcpu(1, top) != 0 {
            return false;
        }
        for _ in 0..START_YIELDS {
            if STARTED.load(Ordering::Acquire) != 0 {
                return true;
            }
            hypercall(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
        }
        false
    }

    /// vCPU 1: answer every round as soon as it is seen, never leaving the guest.
    extern "C" fn secondary_main(_arg: usize) -> ! {
        STARTED.store(1, Ordering::Release);
        let mut n = 1;
        while n <= ROUNDS && STOP.load(Ordering::Acquire) == 0 {
            if PING.load(Ordering::Acquire) == n as u32 {
                PONG.store(n as u32, Ordering::Release);
                n += 1;
            }
            core::hint::spin_loop();
        }
        loop {
            hypercall(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
        }
    }
}
