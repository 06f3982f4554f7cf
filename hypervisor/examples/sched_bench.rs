//! The cost of one scheduling decision on the host: `pick` (which ends the previous decision
//! on that pCPU and chooses the next) with 1, 16 and 256 runnable vCPUs, per policy, in
//! simulated time. Run by `cargo xtask bench --sched`; prints one line per policy and size,
//! `sched-bench <policy> vcpus=<n> ns_per_pick=<f>`.
//!
//! Each vCPU is a domain of its own on one pCPU, always runnable; simulated time advances
//! 1 ms per decision (so credit's 10 ms tick and 30 ms accounting, O(vCPUs) each, are paid
//! every 10th and 30th decision, as on a pCPU that reschedules every millisecond). ARINC 653
//! gets one 1 ms window per vCPU in a major frame of n ms.

use hypervisor::sched::{Arinc653, Arinc653Schedule, Credit, RoundRobin, Scheduler, Window};
use std::hint::black_box;
use std::time::Instant;

const MS: u64 = 1_000_000;

fn setup(s: &mut dyn Scheduler, n: usize) {
    for v in 0..n {
        s.add_vcpu(v, v, 0, 0);
        s.wake(v, 0);
    }
}

/// Nanoseconds of host time per `pick`, over enough decisions to take ~0.2 s.
fn time(s: &mut dyn Scheduler) -> f64 {
    let mut now = 0;
    // Warm up (and reach the steady state of credit's priorities).
    for _ in 0..10_000 {
        black_box(s.pick(0, now));
        now += MS;
    }
    let mut iters = 10_000u64;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(s.pick(0, black_box(now)));
            now += MS;
        }
        let took = start.elapsed();
        if took.as_millis() >= 200 || iters >= 100_000_000 {
            return took.as_nanos() as f64 / iters as f64;
        }
        iters *= 4;
    }
}

fn main() {
    for n in [1usize, 16, 256] {
        let mut rr = RoundRobin::new(MS);
        setup(&mut rr, n);
        println!("sched-bench round-robin vcpus={n} ns_per_pick={:.1}", time(&mut rr));

        let mut credit = Credit::new(1);
        setup(&mut credit, n);
        println!("sched-bench credit vcpus={n} ns_per_pick={:.1}", time(&mut credit));

        let mut a653 = Arinc653::new(1);
        setup(&mut a653, n);
        let windows = (0..n).map(|v| Window { start_ns: v as u64 * MS, len_ns: MS, domain: v, vcpu: 0 }).collect();
        let schedule = Arinc653Schedule { major_frame_ns: n as u64 * MS, cpus: vec![windows] };
        if let Err(e) = a653.set_arinc653(schedule, 0) {
            eprintln!("sched-bench: ARINC 653 schedule refused: {e:?}");
            std::process::exit(1);
        }
        println!("sched-bench arinc653 vcpus={n} ns_per_pick={:.1}", time(&mut a653));
    }
}
