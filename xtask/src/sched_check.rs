//! The figures of the scheduler scenarios, checked against the schedule they ran under.
//!
//! `credit-shares-aarch64`: every `sched-probe` domain printed the pCPU time it got in the
//! same second of guest time (`ran-us`, from its runstate); each must be within
//! [`SHARE_TOLERANCE`] of a pCPU of its expected share, and the capped domain at its cap.
//!
//! `arinc653-*-aarch64`: every vCPU printed the instants of its runs in its own virtual
//! counter; with the hypervisor's `virtual counter offset` of its domain and the first major
//! frame's start (`first frame at`), they become instants of the hypervisor's clock. Every
//! run must lie inside one of its domain's windows, and the runs of a domain's vCPUs merged
//! (QEMU executes its CPUs in turn under -icount, cutting each vCPU's run into pieces; the
//! vCPUs have the same windows on different pCPUs) must start and end with each window the
//! recording covers, within [`WINDOW_TOLERANCE_NS`].

use std::collections::BTreeMap;

/// How far a domain's share may be from the expected one, in pCPUs.
pub const SHARE_TOLERANCE: f64 = 0.02;
/// How far a window boundary a guest saw may be from the schedule's: one tick of the
/// guest's gap detection (20 µs; the runs measured show a few µs of entry latency).
pub const WINDOW_TOLERANCE_NS: i64 = 20_000;

const MS: i64 = 1_000_000;

/// The credit-shares configuration (qemu/configs/credit-shares.dts): each domain's expected
/// pCPU share over the measured second, and whether it is the capped one.
pub const CREDIT_SHARES: [(u16, f64, bool); 6] =
    [(1, 0.2, false), (2, 0.4, false), (3, 0.8, false), (4, 0.2, true), (5, 0.2, false), (6, 0.2, false)];

/// The cpupools configuration (qemu/configs/cpupools.dts): the credit pool's two domains
/// share its one pCPU 1:3. Each measures 2 s of its own clock (the domains' clocks start
/// apart): an interval that is not a whole number of credit's 120 ms rounds (three 30 ms
/// slices for domain 5, one for domain 4) is off by up to a slice, 0.015 of 2 s.
pub const CPUPOOLS_CREDIT_SHARES: [(u16, f64, bool); 2] = [(4, 0.25, false), (5, 0.75, false)];

/// Check `ran-us` of every domain against `expected` (domain, pCPUs, capped).
pub fn credit_shares(console: &str, expected: &[(u16, f64, bool)]) -> Result<String, String> {
    let mut got = BTreeMap::new();
    for line in console.lines() {
        let Some((d, rest)) = guest_line(line, "SCHED-PROBE ran-us=") else { continue };
        let ran_us: f64 = word(rest, 0).ok_or_else(|| format!("bad line `{line}`"))?;
        let from: f64 = field(rest, "from-ms=").ok_or_else(|| format!("bad line `{line}`"))?;
        let to: f64 = field(rest, "to-ms=").ok_or_else(|| format!("bad line `{line}`"))?;
        got.insert(d, ran_us / 1000.0 / (to - from));
    }
    let mut figures = Vec::new();
    for &(d, want, capped) in expected {
        let share = *got.get(&d).ok_or_else(|| format!("d{d} printed no share"))?;
        figures.push(format!("d{d} {share:.3}{}", if capped { " (cap)" } else { "" }));
        if (share - want).abs() > SHARE_TOLERANCE {
            return Err(format!(
                "d{d} got {share:.3} of a pCPU, expected {want} ± {SHARE_TOLERANCE} ({})",
                figures.join(", ")
            ));
        }
    }
    Ok(format!("pCPU shares {} (expected ± {SHARE_TOLERANCE})", figures.join(", ")))
}

/// `two-linux-one-cpu-aarch64`: two Linux domains share one pCPU, so each spends time
/// runnable while the other runs, and Linux reads it from the runstate areas the hypervisor
/// keeps as steal time; each of the `domains` markers must report some.
pub fn steal_seen(console: &str, domains: usize) -> Result<String, String> {
    let steals: Vec<(String, u64)> = console
        .lines()
        .filter_map(|l| {
            let at = l.find("XHV-INIT-MARKER ")?;
            let who = l[..at].trim().to_string();
            Some((who, field::<u64>(l, "steal=")?))
        })
        .collect();
    if steals.len() < domains {
        return Err(format!("{} of {domains} markers reported steal time", steals.len()));
    }
    let list: Vec<String> = steals.iter().map(|(who, s)| format!("{who} {s}")).collect();
    if let Some((who, _)) = steals.iter().find(|(_, s)| *s == 0) {
        return Err(format!("{who} saw no steal time ({})", list.join(", ")));
    }
    Ok(format!("steal time (USER_HZ ticks) {}", list.join(", ")))
}

/// One window of an ARINC 653 schedule, in ms from the start of the major frame.
#[derive(Clone, Copy)]
pub struct Win {
    pub start_ms: i64,
    pub len_ms: i64,
    pub domain: u16,
}

/// The example of Xen's ARINC 653 notes (periods 5, 6, 10 ms; 1, 2, 3 ms each period) as
/// qemu/configs/arinc653-frames.dts lays it out for domains 1, 2 and 3 on every pCPU.
pub fn xen_example() -> Vec<Win> {
    const LAYOUT: [(i64, i64, u16); 18] = [
        (0, 1, 1),
        (1, 2, 2),
        (3, 2, 3),
        (5, 1, 1),
        (6, 1, 3),
        (7, 2, 2),
        (10, 1, 1),
        (11, 1, 3),
        (12, 2, 2),
        (14, 1, 3),
        (15, 1, 1),
        (16, 1, 3),
        (18, 2, 2),
        (20, 1, 1),
        (21, 3, 3),
        (24, 1, 2),
        (25, 1, 1),
        (26, 1, 2),
    ];
    LAYOUT.iter().map(|&(start_ms, len_ms, domain)| Win { start_ms, len_ms, domain }).collect()
}

/// A schedule in force from `from_ns` (hypervisor clock) on: its major frame and windows.
pub struct Phase {
    pub from_ns: i64,
    pub major_ms: i64,
    pub windows: Vec<Win>,
}

/// Check every domain's runs against `phases` (the first from the `first frame at` line
/// on; each later one from its own start). Returns a summary of what was checked.
pub fn arinc653_runs(console: &str, phases: &mut [Phase]) -> Result<String, String> {
    runs_checked(console, phases, Boundaries::Exact).map(|(summary, _)| summary)
}

/// [`arinc653_runs`] on a machine whose other CPUs also run guests: QEMU's -icount runs its
/// CPUs in turn, so while a CPU outside the pool has its turn (a few hundred µs) no
/// partition records, and windows show holes and late starts that are not the schedule's
/// (a short window can pass entirely during another CPU's turn). Every run must still lie
/// inside one of its domain's windows; the summary says how many windows had runs.
pub fn arinc653_runs_inside(console: &str, phases: &mut [Phase]) -> Result<String, String> {
    runs_checked(console, phases, Boundaries::Inside).map(|(summary, _)| summary)
}

/// How closely a domain's runs must follow its windows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Boundaries {
    /// Merged, they are the windows, boundaries within [`WINDOW_TOLERANCE_NS`].
    Exact,
    /// They lie inside the windows.
    Inside,
}

/// A domain and the first and last instants it recorded.
type Span = (u16, i64, i64);

/// [`arinc653_runs`], and each domain's span.
fn runs_checked(console: &str, phases: &mut [Phase], how: Boundaries) -> Result<(String, Vec<Span>), String> {
    let epoch: i64 = console
        .lines()
        .find_map(|l| field(l, "first frame at "))
        .ok_or("the hypervisor printed no `first frame at` line")?;
    if let Some(first) = phases.first_mut() {
        first.from_ns = epoch;
    }
    let mut offsets = BTreeMap::new();
    let mut freq = BTreeMap::new();
    let mut runs: BTreeMap<u16, Vec<(i64, i64)>> = BTreeMap::new();
    for line in console.lines() {
        if let Some(rest) = line.strip_prefix("(XEN) d")
            && let Some((d, rest)) = rest.split_once(": virtual counter offset ")
        {
            let d: u16 = d.parse().map_err(|_| format!("bad line `{line}`"))?;
            offsets.insert(d, word::<i64>(rest, 0).ok_or_else(|| format!("bad line `{line}`"))?);
        }
        if let Some((d, rest)) = guest_line(line, "SCHED-PROBE freq=") {
            freq.insert(d, word::<i64>(rest, 0).ok_or_else(|| format!("bad line `{line}`"))?);
        }
        if let Some((d, rest)) = guest_line(line, "SCHED-PROBE run v") {
            let (Some(a), Some(b)) = (word::<i64>(rest, 1), word::<i64>(rest, 2)) else {
                return Err(format!("bad line `{line}`"));
            };
            runs.entry(d).or_default().push((a, b));
        }
    }
    if runs.is_empty() {
        return Err("no domain printed its runs".into());
    }
    let mut checked = 0;
    let mut covered = 0;
    let mut worst = 0i64;
    let mut spans = Vec::new();
    for (&d, rs) in &runs {
        let off = *offsets.get(&d).ok_or_else(|| format!("no counter offset for d{d}"))?;
        let f = *freq.get(&d).ok_or_else(|| format!("d{d} printed no frequency"))?;
        let ns = |ticks: i64| i64::try_from(i128::from(ticks + off) * 1_000_000_000 / i128::from(f)).unwrap_or(0);
        let mut abs: Vec<(i64, i64)> = rs.iter().map(|&(a, b)| (ns(a), ns(b))).collect();
        abs.sort_unstable();
        let (first, last) = (abs[0].0, abs.iter().map(|r| r.1).max().unwrap_or(0));
        spans.push((d, first, last));
        let expected = windows_between(phases, d, first, last);
        // Every piece inside one of the domain's windows.
        for &(a, b) in &abs {
            if !expected.iter().any(|&(s, e)| a >= s - WINDOW_TOLERANCE_NS && b <= e + WINDOW_TOLERANCE_NS) {
                return Err(format!("d{d} ran at {} to {} ms, outside its windows", fmt_ms(a), fmt_ms(b)));
            }
        }
        // Merged, the pieces are the windows (clipped to the recording).
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for &(a, b) in &abs {
            match merged.last_mut() {
                Some(m) if a - m.1 <= WINDOW_TOLERANCE_NS => m.1 = m.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let clipped: Vec<(i64, i64)> =
            expected.iter().map(|&(s, e)| (s.max(first), e.min(last))).filter(|(s, e)| s < e).collect();
        if how == Boundaries::Inside {
            covered += clipped.iter().filter(|&&(s, e)| abs.iter().any(|&(a, b)| a < e && b > s)).count();
            checked += clipped.len();
            continue;
        }
        if merged.len() != clipped.len() {
            return Err(format!(
                "d{d} ran in {} stretches from {} to {} ms, its schedule has {} windows there",
                merged.len(),
                fmt_ms(first),
                fmt_ms(last),
                clipped.len()
            ));
        }
        for (&(a, b), &(s, e)) in merged.iter().zip(&clipped) {
            let dev = (a - s).abs().max((b - e).abs());
            if dev > WINDOW_TOLERANCE_NS {
                return Err(format!(
                    "d{d} ran from {} to {} ms, its window is {} to {} ms",
                    fmt_ms(a),
                    fmt_ms(b),
                    fmt_ms(s),
                    fmt_ms(e)
                ));
            }
            worst = worst.max(dev);
        }
        checked += clipped.len();
    }
    let summary = match how {
        Boundaries::Exact => format!(
            "{checked} windows of {} domains matched, worst boundary {:.1} us off (tolerance {} us)",
            runs.len(),
            worst as f64 / 1000.0,
            WINDOW_TOLERANCE_NS / 1000
        ),
        Boundaries::Inside => {
            format!("every run of {} domains inside its windows; {covered} of {checked} windows had runs", runs.len())
        }
    };
    Ok((summary, spans))
}

/// The arinc653-switch configuration's boot schedule (20 ms frame) and the one its control
/// domain sets at run time (12 ms), for domains 1 (control), 2 and 3 (the same on both pCPUs
/// for 2 and 3; domain 1 prints no runs).
pub fn switch_schedules() -> (Phase, Phase) {
    let w = |start_ms, len_ms, domain| Win { start_ms, len_ms, domain };
    let before = Phase { from_ns: 0, major_ms: 20, windows: vec![w(0, 2, 1), w(2, 8, 2), w(10, 8, 3)] };
    let after = Phase { from_ns: 0, major_ms: 12, windows: vec![w(0, 2, 1), w(2, 3, 3), w(5, 6, 2)] };
    (before, after)
}

/// A schedule set at run time: the hypervisor's `in force from` instant must be a major-frame
/// boundary of the old schedule, every domain's recording must span it, and the runs must
/// follow the old schedule before it and the new one after it.
pub fn arinc653_switch(console: &str, before: Phase, mut after: Phase) -> Result<String, String> {
    let epoch: i64 = console
        .lines()
        .find_map(|l| field(l, "first frame at "))
        .ok_or("the hypervisor printed no `first frame at` line")?;
    let at: i64 = console
        .lines()
        .find_map(|l| field(l, "in force from "))
        .ok_or("no new schedule was set (no `in force from` line)")?;
    let major = before.major_ms * MS;
    if (at - epoch) % major != 0 || at <= epoch {
        return Err(format!(
            "the new schedule came {} ms after the first frame: not on a boundary",
            fmt_ms(at - epoch)
        ));
    }
    after.from_ns = at;
    let mut phases = [before, after];
    let (summary, spans) = runs_checked(console, &mut phases, Boundaries::Exact)?;
    for (d, first, last) in spans {
        if !(first < at && at < last) {
            return Err(format!(
                "d{d} recorded {} to {} ms, not across the switch at {} ms",
                fmt_ms(first),
                fmt_ms(last),
                fmt_ms(at)
            ));
        }
    }
    Ok(format!("switched {} ms after the first frame (frame {}); {summary}", fmt_ms(at - epoch), (at - epoch) / major))
}

/// Domain `d`'s windows overlapping `[first, last]`, as absolute (start, end) instants.
fn windows_between(phases: &[Phase], d: u16, first: i64, last: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for (i, p) in phases.iter().enumerate() {
        let until = phases.get(i + 1).map_or(i64::MAX, |n| n.from_ns);
        let major = p.major_ms * MS;
        let mut frame = p.from_ns + (first - p.from_ns).max(0) / major * major;
        while frame < until && frame <= last {
            for w in p.windows.iter().filter(|w| w.domain == d) {
                let (s, e) = (frame + w.start_ms * MS, frame + (w.start_ms + w.len_ms) * MS);
                if e > first && s < last && s < until {
                    out.push((s, e));
                }
            }
            frame += major;
        }
    }
    out.sort_unstable();
    out
}

fn fmt_ms(ns: i64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// `(dN) <marker>...`: the domain and what follows the marker.
fn guest_line<'a>(line: &'a str, marker: &str) -> Option<(u16, &'a str)> {
    let rest = line.strip_prefix("(d")?;
    let (d, rest) = rest.split_once(") ")?;
    Some((d.parse().ok()?, rest.strip_prefix(marker)?))
}

/// The `i`-th space-separated word of `s`, parsed.
fn word<T: std::str::FromStr>(s: &str, i: usize) -> Option<T> {
    s.split_whitespace().nth(i)?.parse().ok()
}

/// The number after `key` in `s`.
fn field<T: std::str::FromStr>(s: &str, key: &str) -> Option<T> {
    let at = s.find(key)? + key.len();
    word(&s[at..], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_must_be_seen_by_every_domain() {
        let both = "(d1) XHV-INIT-MARKER hypervisor=xen cpus=1 uptime=3.1 steal=12\n\
                    (d2) XHV-INIT-MARKER hypervisor=xen cpus=1 uptime=3.4 steal=9\n";
        assert_eq!(steal_seen(both, 2), Ok("steal time (USER_HZ ticks) (d1) 12, (d2) 9".into()));
        assert!(steal_seen(&both.replace("steal=9", "steal=0"), 2).unwrap_err().contains("(d2) saw no steal"));
        assert!(steal_seen(&both.replace(" steal=9", ""), 2).is_err());
    }

    #[test]
    fn shares_within_tolerance_pass_and_outside_fail() {
        let good = "(d1) SCHED-PROBE ran-us=210000 count=1 from-ms=300 to-ms=1300\n\
                    (d2) SCHED-PROBE ran-us=395000 count=1 from-ms=300 to-ms=1300\n";
        let want = [(1, 0.2, false), (2, 0.4, false)];
        assert!(credit_shares(good, &want).is_ok());
        let bad = good.replace("395000", "300000");
        assert!(credit_shares(&bad, &want).unwrap_err().contains("d2 got 0.300"));
        assert!(credit_shares("", &want).is_err());
    }

    #[test]
    fn runs_must_match_the_windows() {
        // One domain, one window 1-3 ms of a 10 ms frame, counter at 1 GHz, offset 0.
        let phases =
            || vec![Phase { from_ns: 0, major_ms: 10, windows: vec![Win { start_ms: 1, len_ms: 2, domain: 1 }] }];
        let head = "(XEN) arinc653: major frame 10000 us on 1 pCPU(s), first frame at 0 ns\n\
                    (XEN) d1: virtual counter offset 0 ticks\n(d1) SCHED-PROBE freq=1000000000\n";
        let ok = format!(
            "{head}(d1) SCHED-PROBE run v0 1002000 2000000\n(d1) SCHED-PROBE run v0 2000100 3000000\n(d1) SCHED-PROBE run v0 11001000 13000000\n"
        );
        assert!(arinc653_runs(&ok, &mut phases()).is_ok(), "{:?}", arinc653_runs(&ok, &mut phases()));
        let late = ok.replace("11001000", "11100000");
        assert!(arinc653_runs(&late, &mut phases()).is_err());
        let outside = format!("{ok}(d1) SCHED-PROBE run v0 14000000 14500000\n");
        assert!(arinc653_runs(&outside, &mut phases()).unwrap_err().contains("outside its windows"));
        // Inside only: a late start, a hole and a window missed pass, a run outside fails.
        assert!(arinc653_runs_inside(&late, &mut phases()).is_ok());
        assert!(arinc653_runs_inside(&outside, &mut phases()).unwrap_err().contains("outside its windows"));
        let missed = format!("{ok}(d1) SCHED-PROBE run v0 31001000 33000000\n");
        assert!(arinc653_runs_inside(&missed, &mut phases()).unwrap().contains("3 of 4 windows had runs"));
    }
}
