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
//! - `probe.mode=control probe.switch-ms=T probe.major-us=M probe.entries=E` (the control
//!   domain): at T ms of its counter it sets a new ARINC 653 schedule for pool 0 with
//!   `XEN_SYSCTL_scheduler_op` putinfo: major frame M µs, entries E, a comma-separated list
//!   of `d<domid>v<vcpu>:<µs>`, `idle:<µs>` (a gap) and `next` (the next pCPU's entries
//!   follow). Before, it checks that a wrong interface version gets -EACCES and a schedule
//!   longer than its major frame -EINVAL; after, that getinfo returns what it set, and
//!   reads pool 0 with `XEN_SYSCTL_cpupool_op` INFO (`SCHED-CTL cpupool-info ...`). It
//!   prints `SCHED-CTL ...` lines, then `PASS sched-ctl` or `FAIL sched-ctl: why`.
//! - In `windows` mode a domain first asks for the ARINC 653 schedule with
//!   `XEN_SYSCTL_scheduler_op` getinfo and prints `SCHED-PROBE sysctl rc=R` (-1, -EPERM,
//!   for a domain without Xen's control capability).
//!
//! Neither measuring mode makes any exit while it measures (no hypercall, no WFI, no timer armed):
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
    use guest_abi::sysctl::{
        ARINC653_MAX_DOMAINS_PER_SCHEDULE, XEN_SCHEDULER_ARINC653, XEN_SYSCTL_CPUPOOL_OP, XEN_SYSCTL_CPUPOOL_OP_INFO,
        XEN_SYSCTL_INTERFACE_VERSION, XEN_SYSCTL_SCHEDOP_GETINFO, XEN_SYSCTL_SCHEDOP_PUTINFO, XEN_SYSCTL_SCHEDULER_OP,
    };
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
            Some(b"control") => control(&args, ms),
            Some(b"windows") => {
                let mut sched = [0u8; 2064];
                let rc = sysctl_arinc653(XEN_SYSCTL_INTERFACE_VERSION, XEN_SYSCTL_SCHEDOP_GETINFO, &mut sched);
                println!("SCHED-PROBE sysctl rc={}", rc);
                let vcpus = (args.number("probe.vcpus").unwrap_or(1) as usize).clamp(1, MAX_VCPUS);
                FROM.store(args.number("probe.from-ms").unwrap_or(100) * ms, Ordering::Relaxed);
                TO.store(args.number("probe.to-ms").unwrap_or(200) * ms, Ordering::Relaxed);
                windows(vcpus);
            }
            _ => println!("FAIL sched-probe: no probe.mode=count|windows|control on the command line"),
        }
        shutdown(sched::SHUTDOWN_POWEROFF)
    }

    /// Nanoseconds vCPU 0 has run, from its runstate.
    fn running_ns() -> u64 {
        let mut info = VcpuRunstateInfo::default();
        let r = hypercall(nr::VCPU_OP, [vcpu::VCPUOP_GET_RUNSTATE_INFO, 0, (&raw mut info) as u64, 0, 0]);
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
            // vCPU v's own stack, which nothing uses before it starts.
            let top = (&raw mut STACKS) as usize + v * size_of::<Stack>() + STACK;
            let words = (top - 2 * size_of::<usize>()) as *mut usize;
            // SAFETY: the two top words of that stack: the entry and argument
            // `secondary_start` reads.
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

    /// `sysctl` `XEN_SYSCTL_scheduler_op` `cmd` on pool 0's ARINC 653 scheduler, with the
    /// schedule (a `xen_sysctl_arinc653_schedule`, 2064 bytes) in `schedule`.
    fn sysctl_arinc653(version: u32, cmd: u32, schedule: &mut [u8; 2064]) -> i64 {
        // struct xen_sysctl: cmd, interface_version, then xen_sysctl_scheduler_op:
        // cpupool_id, sched_id, cmd, padding, the schedule's guest handle.
        let mut op = [0u8; 136];
        op[0..4].copy_from_slice(&XEN_SYSCTL_SCHEDULER_OP.to_ne_bytes());
        op[4..8].copy_from_slice(&version.to_ne_bytes());
        op[12..16].copy_from_slice(&XEN_SCHEDULER_ARINC653.to_ne_bytes());
        op[16..20].copy_from_slice(&cmd.to_ne_bytes());
        op[24..32].copy_from_slice(&(schedule.as_mut_ptr() as u64).to_ne_bytes());
        let r = hypercall(nr::SYSCTL, [op.as_mut_ptr() as u64, 0, 0, 0, 0]);
        // The hypervisor wrote the schedule behind the compiler's back.
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        r
    }

    /// A schedule in Xen's layout from `probe.entries` (see the module's documentation).
    fn schedule_from(major_us: u64, entries: &[u8]) -> Option<([u8; 2064], usize)> {
        let mut s = [0u8; 2064];
        s[0..8].copy_from_slice(&(major_us * 1000).to_ne_bytes());
        let mut n = 0;
        for e in entries.split(|&b| b == b',') {
            if n == ARINC653_MAX_DOMAINS_PER_SCHEDULE {
                return None;
            }
            let at = 16 + 32 * n;
            let (who, us) = match e.iter().position(|&b| b == b':') {
                Some(i) => (&e[..i], bootargs::parse_number(&e[i + 1..])?),
                None => (e, 0),
            };
            let (domid, vcpu_id) = match who {
                b"next" => (0, u32::MAX),
                b"idle" => (0, 0),
                [b'd', rest @ ..] => {
                    let v = rest.iter().position(|&b| b == b'v')?;
                    (bootargs::parse_number(&rest[..v])? as u16, bootargs::parse_number(&rest[v + 1..])? as u32)
                }
                _ => return None,
            };
            // dom_handle: 14 zero bytes, then the domain id big-endian (ours; 0: no domain).
            s[at + 14..at + 16].copy_from_slice(&domid.to_be_bytes());
            s[at + 16..at + 20].copy_from_slice(&vcpu_id.to_ne_bytes());
            s[at + 24..at + 32].copy_from_slice(&(us * 1000).to_ne_bytes());
            n += 1;
        }
        s[8] = n as u8;
        Some((s, n))
    }

    fn control(args: &bootargs::Cmdline, ms: u64) {
        let major_us = args.number("probe.major-us").unwrap_or(0);
        let Some((mut new, n)) = args.value("probe.entries").and_then(|e| schedule_from(major_us, e)) else {
            println!("FAIL sched-ctl: bad probe.entries / probe.major-us");
            return;
        };
        let mut failures = 0;
        let mut expect = |what: &str, rc: i64, want: i64| {
            println!("SCHED-CTL {} rc={}", what, rc);
            if rc != want {
                println!("FAIL sched-ctl: {} returned {}, expected {}", what, rc, want);
                failures += 1;
            }
        };
        let mut scratch = new;
        expect("wrong-version", sysctl_arinc653(0x14, XEN_SYSCTL_SCHEDOP_PUTINFO, &mut scratch), -13);
        // The same entries in a frame one µs shorter than the first pCPU's need: -EINVAL.
        let needed: u64 = (0..n)
            .map(|i| 16 + 32 * i)
            .take_while(|&e| new[e + 16..e + 20] != [0xff; 4])
            .map(|e| u64::from_ne_bytes(new[e + 24..e + 32].try_into().unwrap_or_default()))
            .sum();
        scratch[0..8].copy_from_slice(&(needed - 1000).to_ne_bytes());
        expect(
            "too-long",
            sysctl_arinc653(XEN_SYSCTL_INTERFACE_VERSION, XEN_SYSCTL_SCHEDOP_PUTINFO, &mut scratch),
            -22,
        );
        let switch = args.number("probe.switch-ms").unwrap_or(100) * ms;
        while counter() < switch {
            core::hint::spin_loop();
        }
        let at = counter();
        expect("putinfo", sysctl_arinc653(XEN_SYSCTL_INTERFACE_VERSION, XEN_SYSCTL_SCHEDOP_PUTINFO, &mut new), 0);
        println!("SCHED-CTL put at counter {}", at);
        let mut back = [0u8; 2064];
        expect("getinfo", sysctl_arinc653(XEN_SYSCTL_INTERFACE_VERSION, XEN_SYSCTL_SCHEDOP_GETINFO, &mut back), 0);
        if back[..16 + 32 * n] != new[..16 + 32 * n] {
            println!("FAIL sched-ctl: getinfo returned another schedule than the one set");
            failures += 1;
        }
        // XEN_SYSCTL_cpupool_op INFO on pool 0: its scheduler, domains and CPUs.
        let mut cpumap = [0u8; 8];
        let mut op = [0u8; 136];
        op[0..4].copy_from_slice(&XEN_SYSCTL_CPUPOOL_OP.to_ne_bytes());
        op[4..8].copy_from_slice(&XEN_SYSCTL_INTERFACE_VERSION.to_ne_bytes());
        op[8..12].copy_from_slice(&XEN_SYSCTL_CPUPOOL_OP_INFO.to_ne_bytes());
        op[32..40].copy_from_slice(&(cpumap.as_mut_ptr() as u64).to_ne_bytes());
        op[40..44].copy_from_slice(&64u32.to_ne_bytes());
        let rc = hypercall(nr::SYSCTL, [op.as_mut_ptr() as u64, 0, 0, 0, 0]);
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        let word = |at: usize| u32::from_ne_bytes([op[at], op[at + 1], op[at + 2], op[at + 3]]);
        // SAFETY: a plain load of the byte the hypervisor wrote (volatile: the compiler did
        // not see the hypercall write it).
        let cpus = unsafe { cpumap.as_ptr().read_volatile() };
        println!("SCHED-CTL cpupool-info rc={} sched_id={} n_dom={} cpumap={:#x}", rc, word(16), word(28), cpus);
        if rc != 0 || word(16) != XEN_SCHEDULER_ARINC653 {
            println!("FAIL sched-ctl: cpupool INFO returned {} with scheduler {}", rc, word(16));
            failures += 1;
        }
        if failures == 0 {
            println!("PASS sched-ctl: errors as Xen's, the new schedule set and read back ({} entries)", n);
        }
    }
}
