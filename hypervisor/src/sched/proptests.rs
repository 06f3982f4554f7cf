//! Property tests: random operation sequences against what every decision must satisfy
//! (credit: a reference model of who may run), and ARINC 653 against a direct reference (the
//! window that holds the instant).

use super::{Arinc653, Arinc653Schedule, Credit, CreditParams, Scheduler, Window};
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

const MS: u64 = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    Wake(usize),
    Sleep(usize),
    Block(usize),
    Yield(usize),
    /// Advance time by this many µs, then pick on this pCPU.
    Pick(usize, u64),
}

fn op(nv: usize, nc: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..nv).prop_map(Op::Wake),
        1 => (0..nv).prop_map(Op::Sleep),
        1 => (0..nv).prop_map(Op::Block),
        1 => (0..nv).prop_map(Op::Yield),
        3 => ((0..nc), 0..40_000u64).prop_map(|(c, us)| Op::Pick(c, us)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The model: which vCPUs are runnable, and what each pCPU runs. Whatever credit picks is
    /// runnable, not parked and not running elsewhere; a pCPU idles only if every runnable,
    /// unparked vCPU runs elsewhere (no caps here, so nothing is parked).
    #[test]
    fn credit_picks_only_runnable_vcpus_once_and_never_idles_beside_work(
        nc in 1usize..4,
        weights in proptest::collection::vec(1u16..2000, 1..7),
        ops in proptest::collection::vec(op(6, 3), 1..300),
    ) {
        let nv = weights.len();
        let mut s = Credit::new(nc);
        for (v, w) in weights.iter().enumerate() {
            s.set_credit(v, CreditParams { weight: *w, cap: 0 }).unwrap();
            s.add_vcpu(v, v, 0, 0);
        }
        let mut runnable = vec![false; nv];
        let mut running: Vec<Option<usize>> = vec![None; nc];
        let mut now = 0u64;
        for o in ops {
            match o {
                Op::Wake(v) if v < nv => {
                    s.wake(v, now);
                    runnable[v] = true;
                }
                Op::Sleep(v) | Op::Block(v) if v < nv => {
                    if matches!(o, Op::Sleep(_)) { s.sleep(v, now) } else { s.block(v, now) }
                    runnable[v] = false;
                    running.iter_mut().filter(|r| **r == Some(v)).for_each(|r| *r = None);
                }
                Op::Yield(v) if v < nv => s.yield_now(v, now),
                Op::Pick(c, us) if c < nc => {
                    now += us * 1000;
                    running[c] = None;
                    let d = s.pick(c, now);
                    match d {
                        Some(d) => {
                            prop_assert!(runnable[d.vcpu], "picked a vCPU that cannot run");
                            prop_assert!(!running.contains(&Some(d.vcpu)), "picked a vCPU running elsewhere");
                            prop_assert!(d.slice_ns > 0 && d.slice_ns <= 30 * MS);
                            running[c] = Some(d.vcpu);
                        }
                        None => {
                            let waiting = (0..nv).any(|v| runnable[v] && !running.contains(&Some(v)));
                            prop_assert!(!waiting, "pCPU {} idles while a vCPU waits", c);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Any valid schedule: every pick runs exactly the vCPU whose window holds the instant,
    /// until that window's end, and idles elsewhere until the next window opens.
    #[test]
    fn arinc653_picks_the_window_that_holds_the_instant(
        major_ms in 1u64..50,
        raw in proptest::collection::vec((0u64..50, 1u64..10, 0usize..3), 0..8),
        blocked in 0usize..4,
        times in proptest::collection::vec(0u64..500_000, 1..60),
    ) {
        let major = major_ms * MS;
        // Lay the windows out in order without overlap, cut at the major frame.
        let mut windows = Vec::new();
        let mut at = 0;
        for (gap, len, d) in raw {
            let start = at + gap * MS / 4;
            let end = (start + len * MS).min(major);
            if start >= end {
                break;
            }
            windows.push(Window { start_ns: start, len_ns: end - start, domain: d, vcpu: 0 });
            at = end;
        }
        let mut s = Arinc653::new(1);
        for d in 0..3 {
            s.add_vcpu(d, d, 0, 0);
            if d != blocked {
                s.wake(d, 0);
            }
        }
        s.set_arinc653(Arinc653Schedule { major_frame_ns: major, cpus: vec![windows.clone()] }, 0).unwrap();
        let mut times = times;
        times.sort_unstable();
        for t in times {
            let now = t * 1000;
            let off = now % major;
            let w = windows.iter().find(|w| w.start_ns <= off && off < w.start_ns + w.len_ns);
            let want = w.filter(|w| w.domain != blocked).map(|w| (w.domain, w.start_ns + w.len_ns - off));
            prop_assert_eq!(s.pick(0, now).map(|d| (d.vcpu, d.slice_ns)), want);
            if want.is_none() {
                let next = s.next_event(0, now).unwrap();
                let frame = now - off;
                let reference = windows.iter().map(|w| frame + w.start_ns).find(|&st| st > now).unwrap_or(frame + major);
                prop_assert_eq!(next, reference);
            }
        }
    }
}
