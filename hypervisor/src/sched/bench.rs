//! The cost of one scheduling decision with 1, 16 and 256 runnable vCPUs on one pCPU:
//! `cargo test -p hypervisor --release --lib sched::bench -- --ignored --nocapture`.
//! It prints figures and asserts nothing about time (the host is shared).

use super::{Arinc653, Arinc653Schedule, Credit, RoundRobin, Scheduler, Window};
use alloc::vec::Vec;
use std::println;
use std::time::Instant;

const PICKS: u64 = 200_000;

fn time(name: &str, n: usize, s: &mut dyn Scheduler) {
    let mut now = 0;
    let start = Instant::now();
    for _ in 0..PICKS {
        // Every pick ends the previous slice a little early (a yield, an exit): the worst
        // case for a list, which requeues on every decision.
        let d = s.pick(0, now).expect("always runnable");
        now += d.slice_ns.min(100_000);
    }
    let ns = start.elapsed().as_nanos() as f64 / PICKS as f64;
    println!("{name:>12} {n:>4} runnable vCPUs: {ns:8.1} ns per decision");
}

#[test]
#[ignore = "a benchmark: prints figures"]
fn decision_cost() {
    for n in [1usize, 16, 256] {
        let mut rr = RoundRobin::new(1_000_000);
        let mut credit = Credit::new(1);
        let mut a653 = Arinc653::new(1);
        let windows: Vec<Window> =
            (0..n).map(|d| Window { start_ns: d as u64 * 100_000, len_ns: 100_000, domain: d, vcpu: 0 }).collect();
        for v in 0..n {
            for s in [&mut rr as &mut dyn Scheduler, &mut credit, &mut a653] {
                s.add_vcpu(v, v, 0, 0);
                s.wake(v, 0);
            }
        }
        a653.set_arinc653(Arinc653Schedule { major_frame_ns: n as u64 * 100_000, cpus: alloc::vec![windows] }, 0)
            .unwrap();
        time("round robin", n, &mut rr);
        time("credit", n, &mut credit);
        time("arinc653", n, &mut a653);
    }
}
