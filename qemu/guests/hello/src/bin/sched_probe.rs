//! sched-probe: what share of a pCPU a domain gets, and when, measured from inside with the
//! virtual counter (aarch64). The scenario (xtask) compares the figures with the schedule.
//!
//! Command line (`/chosen/bootargs`):
//! - `probe.mode=count probe.from-ms=A probe.to-ms=B`: vCPU 0 spins and counts loop
//!   iterations while its virtual counter is between A and B ms, reads its runstate
//!   (`VCPUOP_get_runstate_info`: nanoseconds it has run) at A and at B, then prints
//!   `SCHED-PROBE ran-us=R count=N from-ms=A to-ms=B`, after spinning on for
//!   `probe.hold-ms` (default 200) more, and powers off. R is the pCPU time the
//!   domain got in those B - A ms. (Under QEMU `-icount` with several CPUs, QEMU executes
//!   them in turn, unevenly, so N follows the instructions QEMU gave it and not only the
//!   time the scheduler gave it: it is printed as a cross-check, not for the shares.)
//! - `probe.mode=windows probe.vcpus=V probe.from-ms=A probe.to-ms=B`: each of V vCPUs
//!   (vCPU 1.. started by PSCI CPU_ON) spins reading the counter; a jump of more than
//!   [`GAP_TICKS`] between two reads means it was not running in between. It records its
//!   runs (first and last counter value of each) from A to B ms of the counter (at most
//!   [`MAX_RUNS`]), then vCPU 0 prints `SCHED-PROBE freq=F` and one line per run,
//!   `SCHED-PROBE run v<i> <first> <last>` (ticks of this domain's virtual counter, which the
//!   hypervisor's `virtual counter offset` line relates to its own clock), and
//!   `SCHED-PROBE done vcpus=V runs=N`. Under QEMU `-icount` with several CPUs, QEMU runs
//!   them in turn, so one vCPU sees its run cut into pieces while QEMU runs the other CPU;
//!   the runs of vCPUs with the same windows on different pCPUs together cover the windows.
//!
//! Neither mode makes any exit while it measures (no hypercall, no WFI, no timer armed):
//! only the hypervisor's own preemption takes the pCPU away.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[path = "fuzz/bootargs.rs"]
#[allow(dead_code)]
mod bootargs;

#[cfg(all(target_os = "none", not(target_arch = "aarch64")))]
mod guest {
    use guest_abi::sched;
    use hello_guest::{println, shutdown};

    #[unsafe(no_mangle)]
    extern "C" fn guest_main() -> ! {
        println!("sched-probe: only written for aarch64");
        shutdown(sched::SHUTDOWN_POWEROFF)
    }
}

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod guest {
    use crate::bootargs;
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use guest_abi::vcpu::{self, VcpuRunstateInfo};
    use guest_abi::{hypercall as nr, sched};
    use hello_guest::{hypercall, println, shutdown, simd};

    /// A jump of the counter larger than this between two reads of the spin loop is a time
    /// the vCPU did not run (62.5 MHz on QEMU `virt`: 20 µs; a read takes a few ns).
    const GAP_TICKS: u64 = 1250;
    const MAX_VCPUS: usize = 4;
    const MAX_RUNS: usize = 128;
    const STACK: usize = 16 * 1024;

    /// Per vCPU: its runs, as (first, last) counter values; written by that vCPU only,
    /// read by vCPU 0 once `DONE` says the vCPU has finished.
    static RUNS: [[[AtomicU64; 2]; MAX_RUNS]; MAX_VCPUS] =
        [const { [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_RUNS] }; MAX_VCPUS];
    static DONE: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
    /// What every vCPU records: from when to when (counter ticks).
    static FROM: AtomicU64 = AtomicU64::new(0);
    static TO: AtomicU64 = AtomicU64::new(0);
    /// Runs each vCPU recorded.
    static RECORDED: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

    #[repr(C, align(16))]
    struct Stack([u8; STACK]);
    static mut STACKS: [Stack; MAX_VCPUS] = [const { Stack([0; STACK]) }; MAX_VCPUS];

    fn counter() -> u64 {
        let t: u64;
        // SAFETY: reading the virtual counter has no side effect.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) t, options(nostack, nomem)) };
        t
    }

    fn frequency() -> u64 {
        let f: u64;
        // SAFETY: reading the counter frequency has no side effect.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) f, options(nostack, nomem)) };
        f.max(1)
    }

    #[unsafe(no_mangle)]
    extern "C" fn guest_main(dtb: usize) -> ! {
        // SAFETY: x0 at entry is the device tree the hypervisor placed in our RAM.
        let args = unsafe { bootargs::from_device_tree(dtb) };
        let ms = frequency() / 1000;
        match args.value("probe.mode") {
            Some(b"count") => {
                let from = args.number("probe.from-ms").unwrap_or(500);
                let to = args.number("probe.to-ms").unwrap_or(1500);
                let (n, ran_ns) = count(from * ms, to * ms);
                // Go on spinning a while, so that domains whose clocks started later (they
                // were built later) measure their interval under the same load.
                let hold = args.number("probe.hold-ms").unwrap_or(200);
                while counter() < (to + hold) * ms {
                    core::hint::spin_loop();
                }
                println!("SCHED-PROBE ran-us={} count={} from-ms={} to-ms={}", ran_ns / 1000, n, from, to);
            }
            Some(b"windows") => {
                let vcpus = (args.number("probe.vcpus").unwrap_or(1) as usize).clamp(1, MAX_VCPUS);
                FROM.store(args.number("probe.from-ms").unwrap_or(100) * ms, Ordering::Relaxed);
                TO.store(args.number("probe.to-ms").unwrap_or(200) * ms, Ordering::Relaxed);
                windows(vcpus);
            }
            _ => println!("FAIL sched-probe: no probe.mode=count|windows on the command line"),
        }
        shutdown(sched::SHUTDOWN_POWEROFF)
    }

    /// Nanoseconds vCPU 0 has run, from its runstate.
    fn running_ns() -> u64 {
        let mut info = VcpuRunstateInfo::default();
        let r = hypercall(
            nr::VCPU_OP,
            [vcpu::VCPUOP_GET_RUNSTATE_INFO, 0, (&raw mut info) as u64, 0, 0],
        );
        if r != 0 {
            println!("FAIL sched-probe: VCPUOP_get_runstate_info returned {}", r);
        }
        // SAFETY: plain loads of the structure the hypervisor wrote (read as volatile: the
        // compiler did not see the hypercall write it).
        unsafe { (&raw const info.time[vcpu::RUNSTATE_RUNNING as usize]).read_volatile() }
    }

    /// Loop iterations while the counter is in `[from, to)`, and the time run meanwhile.
    #[inline(never)]
    fn count(from: u64, to: u64) -> (u64, u64) {
        while counter() < from {
            core::hint::spin_loop();
        }
        let ran = running_ns();
        let mut n = 0u64;
        while counter() < to {
            n += 1;
        }
        (n, running_ns() - ran)
    }

    fn windows(vcpus: usize) {
        for v in 1..vcpus {
            // SAFETY: vCPU v's own stack, which nothing uses before it starts; its two top
            // words are the entry and argument `secondary_start` reads.
            let top = unsafe { (&raw mut STACKS[v]) as usize } + STACK;
            let words = (top - 2 * size_of::<usize>()) as *mut usize;
            // SAFETY: as above.
            unsafe {
                words.write_volatile(secondary_main as *const () as usize);
                words.add(1).write_volatile(v);
            }
            let r = simd::start_vcpu(v as u64, top);
            if r != 0 {
                println!("FAIL sched-probe: CPU_ON for vCPU {} returned {}", v, r);
                return;
            }
        }
        record(0);
        // Spin, not yield, while the others finish: a vCPU making exits in a loop gets QEMU's
        // turns unevenly under -icount, which would starve the other pCPU's measurements.
        for done in &DONE[..vcpus] {
            while done.load(Ordering::Acquire) == 0 {
                core::hint::spin_loop();
            }
        }
        println!("SCHED-PROBE freq={}", frequency());
        let mut total = 0;
        for (v, runs) in RUNS[..vcpus].iter().enumerate() {
            let n = RECORDED[v].load(Ordering::Relaxed) as usize;
            total += n;
            for run in &runs[..n] {
                let (a, b) = (run[0].load(Ordering::Relaxed), run[1].load(Ordering::Relaxed));
                println!("SCHED-PROBE run v{} {} {}", v, a, b);
            }
        }
        println!("SCHED-PROBE done vcpus={} runs={}", vcpus, total);
    }

    extern "C" fn secondary_main(v: usize) -> ! {
        record(v);
        // Spin without exits until the domain ends (see `windows`).
        loop {
            core::hint::spin_loop();
        }
    }

    /// Spin from `FROM` to `TO`, recording each run of this vCPU (clipped to them).
    #[inline(never)]
    fn record(v: usize) {
        let (from, to) = (FROM.load(Ordering::Relaxed), TO.load(Ordering::Relaxed));
        let runs = &RUNS[v];
        let mut last = counter();
        while last < from {
            last = counter();
        }
        let mut start = last;
        let mut n = 0;
        while n < MAX_RUNS {
            let now = counter();
            if now - last > GAP_TICKS || now >= to {
                runs[n][0].store(start, Ordering::Relaxed);
                runs[n][1].store(last, Ordering::Relaxed);
                n += 1;
                start = now;
                if now >= to {
                    break;
                }
            }
            last = now;
        }
        RECORDED[v].store(n as u64, Ordering::Relaxed);
        DONE[v].store(1, Ordering::Release);
    }
}
