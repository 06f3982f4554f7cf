//! A CPU pool's scheduler: one of the policies, chosen at boot by name (Xen's
//! `cpupool-sched`), behind the one [`Scheduler`] interface.

use super::{Arinc653, Arinc653Schedule, Cpu, Credit, CreditParams, Decision, DomainRef, RoundRobin};
use super::{SchedError, Scheduler, VcpuRef, Window};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The policies a pool can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedKind {
    /// Ours: every runnable vCPU in turn, `slice` each (`cpupool-sched = "round-robin"`).
    RoundRobin,
    /// Xen's credit scheduler (`"credit"`).
    Credit,
    /// ARINC 653 (`"arinc653"`).
    Arinc653,
}

impl SchedKind {
    /// The policy `cpupool-sched` names; Xen's other schedulers (credit2, rtds, null) are not
    /// implemented.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "credit" => Some(Self::Credit),
            "arinc653" => Some(Self::Arinc653),
            "round-robin" => Some(Self::RoundRobin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::Credit => "credit",
            Self::Arinc653 => "arinc653",
        }
    }
}

pub enum PoolScheduler {
    RoundRobin(RoundRobin),
    Credit(Credit),
    Arinc653(Arinc653),
}

impl PoolScheduler {
    /// A `kind` scheduler for a pool of `nr_cpus` pCPUs; `rr_slice_ns` is round robin's slice.
    pub fn new(kind: SchedKind, nr_cpus: usize, rr_slice_ns: u64) -> Self {
        match kind {
            SchedKind::RoundRobin => Self::RoundRobin(RoundRobin::new(rr_slice_ns)),
            SchedKind::Credit => Self::Credit(Credit::new(nr_cpus)),
            SchedKind::Arinc653 => Self::Arinc653(Arinc653::new(nr_cpus)),
        }
    }

    pub fn kind(&self) -> SchedKind {
        match self {
            Self::RoundRobin(_) => SchedKind::RoundRobin,
            Self::Credit(_) => SchedKind::Credit,
            Self::Arinc653(_) => SchedKind::Arinc653,
        }
    }

    fn inner(&mut self) -> &mut dyn Scheduler {
        match self {
            Self::RoundRobin(s) => s,
            Self::Credit(s) => s,
            Self::Arinc653(s) => s,
        }
    }

    fn inner_ref(&self) -> &dyn Scheduler {
        match self {
            Self::RoundRobin(s) => s,
            Self::Credit(s) => s,
            Self::Arinc653(s) => s,
        }
    }
}

impl Scheduler for PoolScheduler {
    fn add_vcpu(&mut self, vcpu: VcpuRef, domain: DomainRef, index: usize, now: u64) {
        self.inner().add_vcpu(vcpu, domain, index, now);
    }
    fn remove_vcpu(&mut self, vcpu: VcpuRef, now: u64) {
        self.inner().remove_vcpu(vcpu, now);
    }
    fn wake(&mut self, vcpu: VcpuRef, now: u64) -> Option<Cpu> {
        self.inner().wake(vcpu, now)
    }
    fn sleep(&mut self, vcpu: VcpuRef, now: u64) {
        self.inner().sleep(vcpu, now);
    }
    fn block(&mut self, vcpu: VcpuRef, now: u64) {
        self.inner().block(vcpu, now);
    }
    fn yield_now(&mut self, vcpu: VcpuRef, now: u64) {
        self.inner().yield_now(vcpu, now);
    }
    fn tick(&mut self, now: u64) {
        self.inner().tick(now);
    }
    fn pick(&mut self, cpu: Cpu, now: u64) -> Option<Decision> {
        self.inner().pick(cpu, now)
    }
    fn next_event(&self, cpu: Cpu, now: u64) -> Option<u64> {
        self.inner_ref().next_event(cpu, now)
    }
    fn set_credit(&mut self, domain: DomainRef, params: CreditParams) -> Result<(), SchedError> {
        self.inner().set_credit(domain, params)
    }
    fn set_arinc653(&mut self, schedule: Arinc653Schedule, now: u64) -> Result<(), SchedError> {
        self.inner().set_arinc653(schedule, now)
    }
    fn kind(&self) -> Option<SchedKind> {
        Some(PoolScheduler::kind(self))
    }
    fn credit(&self, domain: DomainRef) -> Option<CreditParams> {
        self.inner_ref().credit(domain)
    }
    fn credit_globals(&self) -> Option<(u32, u32)> {
        self.inner_ref().credit_globals()
    }
    fn set_credit_globals(&mut self, tslice_ms: u32, ratelimit_us: u32) -> Result<(), SchedError> {
        self.inner().set_credit_globals(tslice_ms, ratelimit_us)
    }
    fn arinc653_schedule(&self) -> Option<(Arinc653Schedule, u64)> {
        self.inner_ref().arinc653_schedule()
    }
}

/// Apply the boot DT's scheduling configuration to `sched`, the boot pool's scheduler, on
/// which the run loop runs every domain: `names[d]` is the node name of the run loop's
/// domain `d`, whose vCPUs were added already; `running` is how many of the pool's pCPUs
/// (its first ones, in `cpupool-cpus` order) run the loop. Returns lines to log (what could
/// not be honoured and why) or the reason to refuse the boot.
pub fn apply_boot_config(
    sched: &mut dyn Scheduler,
    kind: SchedKind,
    cfg: &crate::bootcfg::SchedConfig,
    names: &[&str],
    running: usize,
    now: u64,
) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let boot = &cfg.pools[cfg.boot_pool];
    if boot.cpus.len() > running {
        notes.push(format!(
            "cpupool {}: {} CPUs, but only {} run guests (the others did not come up able to)",
            boot.name,
            boot.cpus.len(),
            running
        ));
    }
    for (d, name) in names.iter().enumerate() {
        let Some(dc) = cfg.domains.iter().find(|c| c.domain == *name) else { continue };
        if dc.pool != cfg.boot_pool {
            notes.push(format!(
                "{name}: its cpupool {} has no running CPU yet (only the boot pool runs guests): it runs in {}",
                cfg.pools[dc.pool].name, boot.name
            ));
        }
        if dc.weight.is_some() || dc.cap.is_some() {
            if kind == SchedKind::Credit {
                let params = CreditParams {
                    weight: dc.weight.unwrap_or(super::credit::DEFAULT_WEIGHT),
                    cap: dc.cap.unwrap_or(0),
                };
                sched.set_credit(d, params).map_err(|e| format!("{name}: credit parameters refused: {e:?}"))?;
            } else {
                notes.push(format!("{name}: weight/cap ignored: {} is not a credit pool", boot.name));
            }
        }
    }
    if kind == SchedKind::Arinc653 {
        let Some(a) = &boot.arinc653 else { return Err(format!("cpupool {}: no ARINC 653 schedule", boot.name)) };
        let mut cpus = alloc::vec![Vec::new(); running.max(1)];
        for w in &a.windows {
            let Some(windows) = cpus.get_mut(w.cpu) else {
                notes.push(format!(
                    "cpupool {}: a window on its pCPU {} does not run (that CPU is not up)",
                    boot.name, w.cpu
                ));
                continue;
            };
            let Some(d) = names.iter().position(|n| *n == w.domain) else {
                return Err(format!("cpupool {}: window for {}, which was not built", boot.name, w.domain));
            };
            windows.push(Window { start_ns: w.start_ns, len_ns: w.len_ns, domain: d, vcpu: w.vcpu as usize });
        }
        let schedule = Arinc653Schedule { major_frame_ns: a.major_frame_ns, cpus };
        sched
            .set_arinc653(schedule, now)
            .map_err(|e| format!("cpupool {}: ARINC 653 schedule refused: {e:?}", boot.name))?;
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootcfg::{Arinc653Config, DomainSchedConfig, PoolConfig, SchedConfig, WindowConfig};
    use alloc::string::ToString;
    use alloc::vec;

    const MS: u64 = 1_000_000;

    fn config(sched: SchedKind, arinc653: Option<Arinc653Config>) -> SchedConfig {
        SchedConfig {
            pools: vec![PoolConfig { name: "p".to_string(), cpus: vec![0], sched, arinc653 }],
            boot_pool: 0,
            domains: vec![
                DomainSchedConfig { domain: "a".to_string(), pool: 0, weight: Some(256), cap: None, control: false },
                DomainSchedConfig { domain: "b".to_string(), pool: 0, weight: Some(512), cap: None, control: false },
            ],
        }
    }

    fn with_two_domains(kind: SchedKind) -> PoolScheduler {
        let mut s = PoolScheduler::new(kind, 1, MS);
        s.add_vcpu(0, 0, 0, 0);
        s.add_vcpu(1, 1, 0, 0);
        s.wake(0, 0);
        s.wake(1, 0);
        s
    }

    #[test]
    fn credit_weights_from_the_dt_split_the_cpu() {
        let mut s = with_two_domains(SchedKind::Credit);
        let notes = apply_boot_config(&mut s, SchedKind::Credit, &config(SchedKind::Credit, None), &["a", "b"], 1, 0);
        assert_eq!(notes, Ok(vec![]));
        let mut used = [0u64; 2];
        let mut now = 0;
        while now < 3_000 * MS {
            let d = s.pick(0, now).unwrap();
            used[d.vcpu] += d.slice_ns;
            now += d.slice_ns;
        }
        let share = used[1] as f64 / now as f64;
        assert!((share - 2.0 / 3.0).abs() < 0.02, "{used:?}");
    }

    #[test]
    fn the_arinc653_schedule_from_the_dt_runs_its_windows() {
        let windows = vec![
            WindowConfig { cpu: 0, start_ns: 0, len_ns: 2 * MS, domain: "b".to_string(), vcpu: 0 },
            WindowConfig { cpu: 0, start_ns: 5 * MS, len_ns: 3 * MS, domain: "a".to_string(), vcpu: 0 },
            WindowConfig { cpu: 1, start_ns: 0, len_ns: 3 * MS, domain: "a".to_string(), vcpu: 0 },
        ];
        let cfg = config(SchedKind::Arinc653, Some(Arinc653Config { major_frame_ns: 10 * MS, windows }));
        let mut s = with_two_domains(SchedKind::Arinc653);
        let notes = apply_boot_config(&mut s, SchedKind::Arinc653, &cfg, &["a", "b"], 1, 0).unwrap();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(notes[2], "cpupool p: a window on its pCPU 1 does not run (that CPU is not up)");
        assert_eq!(s.pick(0, 10 * MS), Some(Decision { vcpu: 1, slice_ns: 2 * MS }));
        assert_eq!(s.pick(0, 12 * MS), None);
        assert_eq!(s.next_event(0, 12 * MS), Some(15 * MS));
        assert_eq!(s.pick(0, 15 * MS), Some(Decision { vcpu: 0, slice_ns: 3 * MS }));
        // With both pCPUs of the pool up, pCPU 1 runs its window too.
        let mut s = PoolScheduler::new(SchedKind::Arinc653, 2, MS);
        s.add_vcpu(0, 0, 0, 0);
        s.add_vcpu(1, 1, 0, 0);
        s.wake(0, 0);
        s.wake(1, 0);
        let notes = apply_boot_config(&mut s, SchedKind::Arinc653, &cfg, &["a", "b"], 2, 0).unwrap();
        assert_eq!(notes.len(), 2, "the weights only: {notes:?}");
        assert_eq!(s.pick(1, 10 * MS), Some(Decision { vcpu: 0, slice_ns: 3 * MS }));
        assert_eq!(s.pick(0, 10 * MS), Some(Decision { vcpu: 1, slice_ns: 2 * MS }));
        // A window for a domain that was not built refuses the boot.
        let mut s = with_two_domains(SchedKind::Arinc653);
        assert!(apply_boot_config(&mut s, SchedKind::Arinc653, &cfg, &["a"], 1, 0).is_err());
    }

    #[test]
    fn weights_in_a_round_robin_pool_are_reported_not_applied() {
        let mut s = with_two_domains(SchedKind::RoundRobin);
        let notes =
            apply_boot_config(&mut s, SchedKind::RoundRobin, &config(SchedKind::RoundRobin, None), &["a", "b"], 1, 0);
        assert_eq!(notes.unwrap().len(), 2);
    }
}
