//! `cargo xtask xtf`: the Xen Test Framework's HVM tests on our hypervisor.
//!
//! XTF (<https://xenbits.xen.org/git-http/xtf.git>, mirrored at github.com/andyhhp/xtf) builds
//! small test kernels; its HVM ones carry a PVH entry note, so they boot exactly as a Linux
//! kernel does (`cargo xtask run --kernel test-hvm64-example`). Each prints
//! `Test result: SUCCESS|SKIP|FAILURE|ERROR` and powers off. We fetch XTF at [`COMMIT`] into
//! `<cache>/xtf-<short>/`, build it with `make`, boot every test of the chosen environments one
//! after another, and compare each verdict with `qemu/xtf-expected.txt`.

use crate::RunArgs;
use crate::arch::Arch;
use crate::bench::json_str;
use crate::build::{self, target_dir, workspace_root};
use crate::emulator::{self, Boot, Echo, Guest};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The XTF commit we run (andyhhp/xtf `master`, 2026).
pub const COMMIT: &str = "453490df6f65fb503a39b1bddf0093441eece9ae";
/// Where it is fetched from, in order.
const SOURCES: [&str; 2] = ["https://github.com/andyhhp/xtf.git", "https://xenbits.xen.org/git-http/xtf.git"];
/// The HVM environments whose tests boot as PVH guests.
pub const HVM_ENVS: [&str; 4] = ["hvm32", "hvm32pae", "hvm32pse", "hvm64"];
/// The expectations, relative to the workspace root.
pub const EXPECTED_FILE: &str = "qemu/xtf-expected.txt";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XtfEmulator {
    /// QEMU TCG `-cpu max` (the AMD-V backend), never KVM, so verdicts are repeatable.
    Qemu,
    /// Bochs (the VT-x backend); much slower.
    Bochs,
}

impl XtfEmulator {
    fn name(self) -> &'static str {
        match self {
            XtfEmulator::Qemu => "qemu",
            XtfEmulator::Bochs => "bochs",
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct XtfArgs {
    /// XTF environments to run, comma-separated (hvm32, hvm32pae, hvm32pse, hvm64), or `all`.
    #[arg(long, value_delimiter = ',', default_value = "hvm64")]
    pub env: Vec<String>,
    /// Only tests whose name (`test-hvm64-xsa-170`) contains this.
    #[arg(long)]
    pub filter: Option<String>,
    #[arg(long, value_enum, default_value_t = XtfEmulator::Qemu)]
    pub emulator: XtfEmulator,
    /// Seconds each test may take before it counts as TIMEOUT.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Clone XTF from this URL or local git directory instead of GitHub / xenbits (it must
    /// hold the pinned commit).
    #[arg(long)]
    pub git: Option<String>,
    /// Use this already built XTF tree as it is (nothing is fetched, built or written there)
    /// instead of the cache.
    #[arg(long)]
    pub xtf_dir: Option<PathBuf>,
}

/// A test's verdict: XTF's own four, or what we saw when it printed none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Success,
    Skip,
    Failure,
    Error,
    /// No result line, and the domain crashed or the emulator ended without one.
    Crash,
    /// No result line before the timeout.
    Timeout,
}

impl Verdict {
    pub const ALL: [Verdict; 6] =
        [Verdict::Success, Verdict::Skip, Verdict::Failure, Verdict::Error, Verdict::Crash, Verdict::Timeout];

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Success => "SUCCESS",
            Verdict::Skip => "SKIP",
            Verdict::Failure => "FAILURE",
            Verdict::Error => "ERROR",
            Verdict::Crash => "CRASH",
            Verdict::Timeout => "TIMEOUT",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.name() == s)
    }

    /// SUCCESS and SKIP need no reason in the expectations.
    fn good(self) -> bool {
        matches!(self, Verdict::Success | Verdict::Skip)
    }
}

/// The verdict in a test's console: its first `Test result: X` line (XTF prints it twice,
/// to port 0xE9 and to the PV console); without one, CRASH when the hypervisor reported the
/// domain crashed or the emulator ended, TIMEOUT when we had to stop it.
pub fn verdict(console: &str, timed_out: bool) -> Verdict {
    let line = console.lines().find_map(|l| l.split_once("Test result: ").map(|(_, r)| r.trim()));
    if let Some(v) = line.and_then(|r| r.split_whitespace().next()).and_then(Verdict::parse) {
        return v;
    }
    if console.contains("domain crashed") || !timed_out { Verdict::Crash } else { Verdict::Timeout }
}

/// One line of the expectations file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub verdict: Verdict,
    pub reason: String,
}

/// `[emulator]` sections of `test-name VERDICT reason...` lines. Any
/// verdict other than SUCCESS or SKIP must say why. A line starting with `#` is a comment
/// (reasons may hold `#`: `#GP, not #SS`). Returns the section of `emulator`.
pub fn parse_expectations(text: &str, emulator: &str) -> Result<Vec<(String, Expectation)>> {
    let mut section: Option<String> = None;
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        let Some(sec) = &section else { bail!("line {}: a test before any [emulator] section", n + 1) };
        let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim_start();
        let (v, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let verdict = Verdict::parse(v).with_context(|| format!("line {}: `{v}` is not a verdict", n + 1))?;
        let reason = reason.trim().to_string();
        if !verdict.good() && reason.is_empty() {
            bail!("line {}: {name} is expected to end {v}: say why", n + 1);
        }
        if sec == emulator {
            if out.iter().any(|(t, _): &(String, Expectation)| t == name) {
                bail!("line {}: {name} is listed twice for {sec}", n + 1);
            }
            out.push((name.to_string(), Expectation { verdict, reason }));
        }
    }
    Ok(out)
}

/// One test's outcome against its expectation (`None`: unlisted, SUCCESS or SKIP accepted).
pub struct Row {
    pub test: String,
    pub verdict: Verdict,
    pub expected: Option<Expectation>,
    pub seconds: f64,
    pub log: PathBuf,
}

impl Row {
    pub fn as_expected(&self) -> bool {
        match &self.expected {
            Some(e) => e.verdict == self.verdict,
            None => self.verdict.good(),
        }
    }

    fn expected_name(&self) -> &'static str {
        self.expected.as_ref().map_or("(unlisted)", |e| e.verdict.name())
    }
}

/// `xtf: 40 as expected (31 SUCCESS, 9 SKIP), 2 known failures, 0 unexpected`.
pub fn summary(rows: &[Row]) -> String {
    let count = |v: Verdict| rows.iter().filter(|r| r.as_expected() && r.verdict == v).count();
    let good = count(Verdict::Success) + count(Verdict::Skip);
    let known = rows.iter().filter(|r| r.as_expected() && !r.verdict.good()).count();
    let unexpected = rows.iter().filter(|r| !r.as_expected()).count();
    format!(
        "xtf: {good} as expected ({} SUCCESS, {} SKIP), {known} known failure{}, {unexpected} unexpected",
        count(Verdict::Success),
        count(Verdict::Skip),
        if known == 1 { "" } else { "s" }
    )
}

fn table(rows: &[Row]) -> String {
    let mut s = format!("{:<42} {:<8} {:<10} {:<8} {:>7}  why\n", "test", "result", "expected", "", "time");
    for r in rows {
        let ok = if r.as_expected() { "OK" } else { "MISMATCH" };
        let _ = write!(
            s,
            "{:<42} {:<8} {:<10} {:<8} {:>5.1} s",
            r.test,
            r.verdict.name(),
            r.expected_name(),
            ok,
            r.seconds
        );
        match &r.expected {
            Some(e) if !e.reason.is_empty() => {
                let _ = writeln!(s, "  ({})", e.reason);
            }
            _ => s.push('\n'),
        }
    }
    s
}

/// `[{test, result, expected, reason, as_expected, seconds, log, emulator, xtf_commit}, ...]`.
pub fn to_json(rows: &[Row], emulator: &str) -> String {
    let mut s = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let (expected, reason) = match &r.expected {
            Some(e) => (json_str(e.verdict.name()), json_str(&e.reason)),
            None => ("null".to_string(), "null".to_string()),
        };
        let _ = write!(
            s,
            "  {{\"test\": {}, \"result\": {}, \"expected\": {}, \"reason\": {}, \"as_expected\": {}, \"seconds\": {:.1}, \"log\": {}, \"emulator\": {}, \"xtf_commit\": {}}}",
            json_str(&r.test),
            json_str(r.verdict.name()),
            expected,
            reason,
            r.as_expected(),
            r.seconds,
            json_str(&r.log.to_string_lossy()),
            json_str(emulator),
            json_str(COMMIT)
        );
        s += if i + 1 < rows.len() { ",\n" } else { "\n" };
    }
    s + "]\n"
}

/// The environments `--env` names (`all`: every HVM one).
pub fn environments(env: &[String]) -> Result<Vec<&'static str>> {
    let mut out = Vec::new();
    for e in env.iter().map(|e| e.trim()) {
        let chosen: Vec<&'static str> = if e == "all" {
            HVM_ENVS.to_vec()
        } else if let Some(h) = HVM_ENVS.iter().find(|h| **h == e) {
            vec![*h]
        } else {
            bail!("--env {e}: one of {} or all (PV tests do not boot as PVH guests)", HVM_ENVS.join(", "));
        };
        for c in chosen {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// The built test kernels `tests/<name>/test-<env>-<name>` of `envs`, sorted by env then name.
fn tests(xtf: &Path, envs: &[&str], filter: Option<&str>) -> Result<Vec<(String, PathBuf)>> {
    let mut names: Vec<String> = std::fs::read_dir(xtf.join("tests"))
        .with_context(|| format!("reading {}/tests", xtf.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for env in envs {
        for name in &names {
            let test = format!("test-{env}-{name}");
            let path = xtf.join("tests").join(name).join(&test);
            if path.is_file() && filter.is_none_or(|f| test.contains(f)) {
                out.push((test, path));
            }
        }
    }
    Ok(out)
}

fn git(dir: Option<&Path>, args: &[&str]) -> Result<bool> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    Ok(cmd.args(args).status().context("running git")?.success())
}

/// `<cache>/xtf-<short commit>/`, cloned at [`COMMIT`] and built (once; later runs reuse it).
fn fetched(git_url: Option<&str>) -> Result<PathBuf> {
    let name = format!("xtf-{}", &COMMIT[..12]);
    let (dir, _lock) = crate::images::locked_cache(&name)?;
    let src = dir.join("xtf");
    if !src.join("Makefile").exists() {
        let tmp = dir.join("xtf.partial");
        let _ = std::fs::remove_dir_all(&tmp);
        let sources: Vec<&str> = match git_url {
            Some(u) => vec![u],
            None => SOURCES.to_vec(),
        };
        let mut done = false;
        for url in sources {
            eprintln!("xtask: fetching XTF {} from {url} into {}", &COMMIT[..12], src.display());
            let tmp_s = tmp.to_string_lossy();
            if git(None, &["clone", "--progress", "--no-checkout", url, &tmp_s])?
                && git(Some(&tmp), &["-c", "advice.detachedHead=false", "checkout", "-q", COMMIT])?
            {
                done = true;
                break;
            }
            eprintln!("xtask: could not fetch XTF from {url}");
            let _ = std::fs::remove_dir_all(&tmp);
        }
        if !done {
            bail!(
                "could not fetch XTF {COMMIT} (tried {}); without network, pass `--git DIR` (a clone holding \
                 that commit) or `--xtf-dir DIR` (a built tree)",
                git_url.map_or(SOURCES.join(", "), str::to_string)
            );
        }
        std::fs::rename(&tmp, &src)?;
    }
    make(&src)?;
    Ok(src)
}

/// Build XTF in `dir` unless it says it is built (`.xhv-built`, written after a clean `make`).
fn make(dir: &Path) -> Result<()> {
    let stamp = dir.join(".xhv-built");
    if stamp.exists() {
        return Ok(());
    }
    eprintln!("xtask: building XTF in {} (make -j2)", dir.display());
    let ok = Command::new("make").args(["-j2"]).current_dir(dir).status().context("running make")?.success();
    if !ok {
        bail!("building XTF failed (make -j2 in {})", dir.display());
    }
    std::fs::write(stamp, COMMIT)?;
    Ok(())
}

pub fn run(args: &XtfArgs) -> Result<i32> {
    let envs = environments(&args.env)?;
    let emulator = args.emulator;
    let mut needs = crate::prereq::Needs::default();
    let x86 = match emulator {
        XtfEmulator::Qemu => crate::prereq::X86Emulator::Qemu,
        XtfEmulator::Bochs => crate::prereq::X86Emulator::Bochs,
    };
    needs.boot(Arch::X86_64, x86).xtf();
    crate::prereq::ensure(&needs)?;
    let expect_path = workspace_root().join(EXPECTED_FILE);
    let text = std::fs::read_to_string(&expect_path).with_context(|| format!("reading {}", expect_path.display()))?;
    let expectations =
        parse_expectations(&text, emulator.name()).with_context(|| format!("in {}", expect_path.display()))?;
    let xtf = match &args.xtf_dir {
        // Used as it is: never written to.
        Some(d) => d.clone(),
        None => fetched(args.git.as_deref())?,
    };
    let chosen = tests(&xtf, &envs, args.filter.as_deref())?;
    if chosen.is_empty() {
        bail!("no built XTF test of {} matches in {} (`make` there?)", envs.join(", "), xtf.display());
    }
    let built = build::hypervisor_and_guests(Arch::X86_64)?;
    let logs = target_dir().join("xtask/logs");
    std::fs::create_dir_all(&logs)?;
    // XTF's HVM tests are single-vCPU: one pCPU keeps the emulator's load down.
    let run_args = RunArgs {
        emulator: Some(match emulator {
            XtfEmulator::Qemu => crate::qemu_x86::Emulator::QemuTcg,
            XtfEmulator::Bochs => crate::qemu_x86::Emulator::Bochs,
        }),
        ..RunArgs::one_cpu(Arch::X86_64, args.timeout)
    };
    eprintln!("xtask: {} XTF test(s) on {} ({} s each at most)", chosen.len(), emulator.name(), args.timeout);
    let mut rows = Vec::new();
    for (i, (test, kernel)) in chosen.iter().enumerate() {
        let boot = Boot {
            arch: Arch::X86_64,
            built: &built,
            guest: Guest::Loader { kernel: kernel.clone() },
            args: run_args.clone(),
        };
        let out = emulator::boot(&boot, Echo::Quiet)?;
        let suffix = if emulator == XtfEmulator::Qemu { "" } else { "-bochs" };
        let log = logs.join(format!("xtf-{test}{suffix}.log"));
        std::fs::write(&log, &out.console)?;
        let v = verdict(&out.console, out.status.is_none());
        let expected = expectations.iter().find(|(t, _)| t == test).map(|(_, e)| e.clone());
        let row = Row { test: test.clone(), verdict: v, expected, seconds: out.elapsed.as_secs_f64(), log };
        let mark = if row.as_expected() { "" } else { "  MISMATCH" };
        eprintln!(
            "xtask: [{}/{}] {test}: {} (expected {}) {:.1} s{mark}",
            i + 1,
            chosen.len(),
            v.name(),
            row.expected_name(),
            row.seconds
        );
        rows.push(row);
    }
    let path = target_dir().join("xtask/xtf-results.json");
    std::fs::write(&path, to_json(&rows, emulator.name())).with_context(|| format!("writing {}", path.display()))?;
    print!("{}", table(&rows));
    println!("{}", summary(&rows));
    eprintln!("xtask: wrote {} (consoles: {}/xtf-*.log)", path.display(), logs.display());
    Ok(if rows.iter().all(Row::as_expected) { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSED: &str = "(XEN) d1: PVH guest\n(d1) --- Xen Test Framework ---\n(d1) Test result: SUCCESS\n\
                          (d1) Test result: SUCCESS\n(XEN) d1: powered off\n";

    #[test]
    fn the_first_result_line_is_the_verdict() {
        assert_eq!(verdict(PASSED, false), Verdict::Success);
        assert_eq!(verdict("(d1) Test result: SKIP\n", false), Verdict::Skip);
        let failed = "(d1) Fail: expected #SS, got #GP\n(d1) Test result: FAILURE\n(d1) Test result: FAILURE\n";
        assert_eq!(verdict(failed, false), Verdict::Failure);
        assert_eq!(verdict("(d1) Test result: ERROR\r\n", true), Verdict::Error);
    }

    #[test]
    fn no_result_line_is_a_crash_or_a_timeout() {
        assert_eq!(verdict("(XEN) d1v0: guest fault\n(XEN) d1: domain crashed\n", true), Verdict::Crash);
        assert_eq!(verdict("(d1) --- Xen Test Framework ---\n", false), Verdict::Crash);
        assert_eq!(verdict("(d1) --- Xen Test Framework ---\n", true), Verdict::Timeout);
        assert_eq!(verdict("(d1) Test result: MAYBE\n", true), Verdict::Timeout);
    }

    const FILE: &str = "# comment\n[qemu]\ntest-hvm64-example SUCCESS\n  test-hvm64-argo   SKIP\n#   test-hvm64-cpuid SKIP\n\
                        test-hvm64-memop-seg FAILURE qemu-tcg: #GP, not #SS\n[bochs]\ntest-hvm64-memop-seg SUCCESS\n";

    #[test]
    fn expectations_are_read_per_emulator() {
        let q = parse_expectations(FILE, "qemu").unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(q[1], ("test-hvm64-argo".into(), Expectation { verdict: Verdict::Skip, reason: String::new() }));
        assert_eq!(q[2].1.verdict, Verdict::Failure);
        assert_eq!(q[2].1.reason, "qemu-tcg: #GP, not #SS");
        let b = parse_expectations(FILE, "bochs").unwrap();
        assert_eq!(
            b,
            vec![("test-hvm64-memop-seg".into(), Expectation { verdict: Verdict::Success, reason: "".into() })]
        );
    }

    #[test]
    fn bad_expectations_are_refused() {
        assert!(parse_expectations("test-hvm64-example SUCCESS\n", "qemu").is_err());
        assert!(parse_expectations("[qemu]\ntest-hvm64-x FAILURE\n", "qemu").is_err());
        assert!(parse_expectations("[qemu]\ntest-hvm64-x PASSED\n", "qemu").is_err());
        assert!(parse_expectations("[qemu]\ntest-hvm64-x SKIP\ntest-hvm64-x SKIP\n", "qemu").is_err());
    }

    fn row(test: &str, v: Verdict, e: Option<Verdict>) -> Row {
        let expected = e.map(|verdict| Expectation { verdict, reason: "why".into() });
        Row { test: test.into(), verdict: v, expected, seconds: 1.0, log: PathBuf::from("l") }
    }

    #[test]
    fn the_summary_counts_known_and_unexpected_results() {
        let rows = [
            row("a", Verdict::Success, Some(Verdict::Success)),
            row("b", Verdict::Skip, None),
            row("c", Verdict::Failure, Some(Verdict::Failure)),
            row("d", Verdict::Timeout, Some(Verdict::Success)),
            row("e", Verdict::Success, Some(Verdict::Failure)),
        ];
        assert_eq!(summary(&rows), "xtf: 2 as expected (1 SUCCESS, 1 SKIP), 1 known failure, 2 unexpected");
        let json = to_json(&rows[..2], "qemu");
        assert!(json.contains("\"test\": \"a\", \"result\": \"SUCCESS\", \"expected\": \"SUCCESS\""));
        assert!(json.contains("\"expected\": null, \"reason\": null, \"as_expected\": true"));
    }

    #[test]
    fn environments_accept_lists_and_all() {
        assert_eq!(environments(&["hvm64".into()]).unwrap(), ["hvm64"]);
        assert_eq!(environments(&["all".into(), "hvm64".into()]).unwrap(), HVM_ENVS);
        assert!(environments(&["pv64".into()]).is_err());
    }
}
