//! A CPU pool's scheduler: one of the policies, chosen at boot by name (Xen's
//! `cpupool-sched`), behind the one [`Scheduler`] interface.

use super::{Arinc653, Arinc653Schedule, Cpu, Credit, CreditParams, Decision, DomainRef, RoundRobin};
use super::{Pools, SchedError, Scheduler, VcpuRef, Window};
use crate::bootcfg::SchedConfig;
use alloc::format;
use alloc::string::{String, ToString};
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

/// Where the pools [`plan_pools`] made sit: their CPUs, and the configuration's pools and
/// CPUs in them.
pub struct PoolPlan {
    /// The logical CPU of each of the loop's pCPUs (loop pCPU `i` is `loop_cpus[i]`).
    pub loop_cpus: Vec<usize>,
    /// For each pool of the configuration, its index in `pools` (`None`: not made, none of
    /// its CPUs is up).
    pub of_config: Vec<Option<usize>>,
    /// The index in `pools` of the boot pool, which runs the domains of pools not made.
    pub boot: usize,
    /// For each pool of the configuration and each of its CPUs (`cpupool-cpus` order), that
    /// CPU's pCPU number in its pool, if it is up.
    pub local: Vec<Vec<Option<Cpu>>>,
    /// What could not be honoured, to log.
    pub notes: Vec<String>,
}

impl PoolPlan {
    /// The index in `pools` of the pool that runs the domain named `name`.
    pub fn pool_of(&self, cfg: Option<&SchedConfig>, name: &str) -> usize {
        let Some(cfg) = cfg else { return self.boot };
        let pool = cfg.domains.iter().find(|d| d.domain == name).map_or(cfg.boot_pool, |d| d.pool);
        self.runs_in(pool)
    }

    /// The index in `pools` of the pool that runs configuration pool `i`'s domains.
    pub fn runs_in(&self, i: usize) -> usize {
        self.of_config.get(i).copied().flatten().unwrap_or(self.boot)
    }
}

/// Xen's id of configuration pool `i`: pools are numbered in DT order (the implicit pool of
/// leftover CPUs last), then the boot CPU's pool and pool 0 swap ids, so the boot CPU is in
/// pool 0 (Xen's boot-time cpupools do the same).
pub fn pool_id(cfg: &SchedConfig, i: usize) -> u32 {
    let id = if i == cfg.boot_pool {
        0
    } else if i == 0 {
        cfg.boot_pool
    } else {
        i
    };
    id as u32
}

/// Plan the pools: every configuration pool with a CPU up gets a scheduler of its policy
/// over those CPUs. `up` lists (logical CPU, `reg` of its DT node or APIC id) of the CPUs
/// up and able to run guests; `boot_cpu` (logical) is always in the boot pool. Without a
/// configuration, one round-robin pool (id 0) runs on every CPU up. A pool whose CPUs are
/// all down is not made: its domains run in the boot pool (noted). When the boot pool is the
/// implicit one (`Pool-0`, no `xen,cpupool` holds the boot CPU), it also takes CPUs up that
/// no pool names, as Xen's does (x86: the configuration's `/cpus` need not list the
/// machine's CPUs, which come from the ACPI MADT).
pub fn plan_pools(
    cfg: Option<&SchedConfig>,
    up: &[(usize, u64)],
    boot_cpu: usize,
    rr_slice_ns: u64,
) -> (Pools, PoolPlan) {
    let mut pools = Pools::new();
    let mut plan =
        PoolPlan { loop_cpus: Vec::new(), of_config: Vec::new(), boot: 0, local: Vec::new(), notes: Vec::new() };
    let Some(cfg) = cfg else {
        let mut cpus: Vec<usize> = up.iter().map(|&(c, _)| c).collect();
        if !cpus.contains(&boot_cpu) {
            cpus.insert(0, boot_cpu);
        }
        let sched = PoolScheduler::new(SchedKind::RoundRobin, cpus.len(), rr_slice_ns);
        add_pool(&mut pools, &mut plan, 0, "Pool-0", sched, &cpus);
        return (pools, plan);
    };
    let logical = |reg: u64| up.iter().find(|&&(_, r)| r == reg).map(|&(c, _)| c);
    let mut made = alloc::vec![None; cfg.pools.len()];
    // The boot pool first: the boot CPU is the loop's pCPU 0.
    let order = core::iter::once(cfg.boot_pool).chain((0..cfg.pools.len()).filter(|&i| i != cfg.boot_pool));
    plan.local = alloc::vec![Vec::new(); cfg.pools.len()];
    for i in order {
        let pool = &cfg.pools[i];
        let mut cpus: Vec<usize> = Vec::new();
        for &reg in &pool.cpus {
            let c = logical(reg).filter(|c| !plan.loop_cpus.contains(c) && !cpus.contains(c));
            plan.local[i].push(c.map(|_| cpus.len()));
            cpus.extend(c);
        }
        if i == cfg.boot_pool {
            if !cpus.contains(&boot_cpu) {
                cpus.insert(0, boot_cpu);
                plan.local[i].iter_mut().flatten().for_each(|l| *l += 1);
            }
            if pool.name == "Pool-0" {
                let named = |reg: u64| cfg.pools.iter().any(|p| p.cpus.contains(&reg));
                let left: Vec<usize> =
                    up.iter().filter(|&&(c, reg)| !named(reg) && !cpus.contains(&c)).map(|&(c, _)| c).collect();
                cpus.extend(left);
            }
        }
        if cpus.len() < pool.cpus.len() {
            plan.notes.push(format!(
                "cpupool {}: {} CPUs, but only {} run guests (the others did not come up able to)",
                pool.name,
                pool.cpus.len(),
                cpus.len()
            ));
        }
        if cpus.is_empty() {
            continue;
        }
        let sched = PoolScheduler::new(pool.sched, cpus.len(), rr_slice_ns);
        made[i] = Some(add_pool(&mut pools, &mut plan, pool_id(cfg, i), &pool.name, sched, &cpus));
    }
    let boot = made[cfg.boot_pool].unwrap_or(0);
    for (i, m) in made.iter().enumerate() {
        if m.is_none() {
            plan.notes.push(format!(
                "cpupool {}: none of its CPUs is up: its domains run in {}",
                cfg.pools[i].name, cfg.pools[cfg.boot_pool].name
            ));
        }
    }
    plan.boot = boot;
    plan.of_config = made;
    (pools, plan)
}

fn add_pool(
    pools: &mut Pools,
    plan: &mut PoolPlan,
    id: u32,
    name: &str,
    sched: PoolScheduler,
    cpus: &[usize],
) -> usize {
    let first = plan.loop_cpus.len();
    plan.loop_cpus.extend_from_slice(cpus);
    let ids = cpus.iter().map(|&c| c as u32).collect();
    pools.add_pool(id, name.to_string(), sched, (first..first + cpus.len()).collect(), ids)
}

/// Apply the boot DT's per-domain and per-pool parameters to the pools `plan` made, once
/// the domains are built and placed: `names[d]` is the node name of the run loop's domain
/// `d`. Credit weights and caps go to credit pools (elsewhere they are noted as ignored);
/// each ARINC 653 pool gets its schedule, whose windows must name domains of that pool.
/// Returns lines to log or the reason to refuse the boot.
pub fn apply_boot_config(
    pools: &mut Pools,
    plan: &PoolPlan,
    cfg: &SchedConfig,
    names: &[&str],
    now: u64,
) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for (d, name) in names.iter().enumerate() {
        let Some(dc) = cfg.domains.iter().find(|c| c.domain == *name) else { continue };
        if dc.weight.is_none() && dc.cap.is_none() {
            continue;
        }
        let pool = pools.pool_mut(plan.runs_in(dc.pool)).ok_or("no pool")?;
        if pool.sched.kind() == SchedKind::Credit {
            let weight = dc.weight.unwrap_or(super::credit::DEFAULT_WEIGHT);
            let params = CreditParams { weight, cap: dc.cap.unwrap_or(0) };
            pool.sched.set_credit(d, params).map_err(|e| format!("{name}: credit parameters refused: {e:?}"))?;
        } else {
            notes.push(format!("{name}: weight/cap ignored: {} is not a credit pool", pool.name));
        }
    }
    for (i, pc) in cfg.pools.iter().enumerate() {
        // A pool not made has no pCPU to run a schedule on.
        let made = plan.of_config[i].and_then(|p| pools.pool_mut(p));
        let Some(pool) = made.filter(|p| p.sched.kind() == SchedKind::Arinc653) else { continue };
        let Some(a) = &pc.arinc653 else { return Err(format!("cpupool {}: no ARINC 653 schedule", pc.name)) };
        let mut cpus = alloc::vec![Vec::new(); pool.cpus().len()];
        for w in &a.windows {
            let Some(windows) = plan.local[i].get(w.cpu).copied().flatten().and_then(|l| cpus.get_mut(l)) else {
                notes.push(format!(
                    "cpupool {}: a window on its pCPU {} does not run (that CPU is not up)",
                    pc.name, w.cpu
                ));
                continue;
            };
            let Some(d) = names.iter().position(|n| *n == w.domain) else {
                return Err(format!("cpupool {}: window for {}, which was not built", pc.name, w.domain));
            };
            windows.push(Window { start_ns: w.start_ns, len_ns: w.len_ns, domain: d, vcpu: w.vcpu as usize });
        }
        let schedule = Arinc653Schedule { major_frame_ns: a.major_frame_ns, cpus };
        pool.sched
            .set_arinc653(schedule, now)
            .map_err(|e| format!("cpupool {}: ARINC 653 schedule refused: {e:?}", pc.name))?;
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootcfg::{Arinc653Config, DomainSchedConfig, PoolConfig, SchedConfig, WindowConfig};
    use crate::sched::PoolControl;
    use alloc::string::ToString;
    use alloc::vec;

    const MS: u64 = 1_000_000;

    fn pool(name: &str, cpus: Vec<u64>, sched: SchedKind, arinc653: Option<Arinc653Config>) -> PoolConfig {
        PoolConfig { name: name.to_string(), cpus, sched, arinc653 }
    }

    fn domain(name: &str, pool: usize, weight: Option<u16>) -> DomainSchedConfig {
        DomainSchedConfig { domain: name.to_string(), pool, weight, cap: None, control: false }
    }

    fn config(sched: SchedKind, arinc653: Option<Arinc653Config>) -> SchedConfig {
        SchedConfig {
            pools: vec![pool("p", vec![0, 1], sched, arinc653)],
            boot_pool: 0,
            domains: vec![domain("a", 0, Some(256)), domain("b", 0, Some(512))],
        }
    }

    /// The pools for `cfg` with CPUs `up` (logical = reg), and one runnable vCPU per domain
    /// of `names`, placed as the boot path places them.
    fn build(cfg: &SchedConfig, up: &[u64], names: &[&str]) -> (Pools, PoolPlan) {
        let up: Vec<(usize, u64)> = up.iter().map(|&r| (r as usize, r)).collect();
        let (mut pools, plan) = plan_pools(Some(cfg), &up, 0, MS);
        for (d, name) in names.iter().enumerate() {
            pools.place(d, plan.pool_of(Some(cfg), name));
            pools.add_vcpu(d, d, 0, 0);
            pools.wake(d, 0);
        }
        (pools, plan)
    }

    #[test]
    fn credit_weights_from_the_dt_split_the_cpu() {
        let cfg = config(SchedKind::Credit, None);
        let (mut s, plan) = build(&cfg, &[0], &["a", "b"]);
        assert_eq!(plan.notes, ["cpupool p: 2 CPUs, but only 1 run guests (the others did not come up able to)"]);
        assert_eq!(apply_boot_config(&mut s, &plan, &cfg, &["a", "b"], 0), Ok(vec![]));
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
        let (mut s, plan) = build(&cfg, &[0], &["a", "b"]);
        let notes = apply_boot_config(&mut s, &plan, &cfg, &["a", "b"], 0).unwrap();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(notes[2], "cpupool p: a window on its pCPU 1 does not run (that CPU is not up)");
        assert_eq!(s.pick(0, 10 * MS), Some(Decision { vcpu: 1, slice_ns: 2 * MS }));
        assert_eq!(s.pick(0, 12 * MS), None);
        assert_eq!(s.next_event(0, 12 * MS), Some(15 * MS));
        assert_eq!(s.pick(0, 15 * MS), Some(Decision { vcpu: 0, slice_ns: 3 * MS }));
        // With both CPUs of the pool up, its pCPU 1 runs its window too.
        let (mut s, plan) = build(&cfg, &[0, 1], &["a", "b"]);
        let notes = apply_boot_config(&mut s, &plan, &cfg, &["a", "b"], 0).unwrap();
        assert_eq!(notes.len(), 2, "the weights only: {notes:?}");
        assert_eq!(s.pick(1, 10 * MS), Some(Decision { vcpu: 0, slice_ns: 3 * MS }));
        assert_eq!(s.pick(0, 10 * MS), Some(Decision { vcpu: 1, slice_ns: 2 * MS }));
        // A window for a domain that was not built refuses the boot.
        let (mut s, plan) = build(&cfg, &[0], &["a"]);
        assert!(apply_boot_config(&mut s, &plan, &cfg, &["a"], 0).is_err());
    }

    #[test]
    fn weights_in_a_round_robin_pool_are_reported_not_applied() {
        let cfg = config(SchedKind::RoundRobin, None);
        let (mut s, plan) = build(&cfg, &[0, 1], &["a", "b"]);
        assert_eq!(apply_boot_config(&mut s, &plan, &cfg, &["a", "b"], 0).unwrap().len(), 2);
    }

    /// Xen's example shape: an ARINC 653 pool first in the DT (CPUs 1 and 2), the boot
    /// CPU's credit pool second; domain `rt` in the first, `x` and `y` in the second.
    fn two_pool_config() -> SchedConfig {
        let windows = vec![
            WindowConfig { cpu: 0, start_ns: 0, len_ns: 4 * MS, domain: "rt".to_string(), vcpu: 0 },
            WindowConfig { cpu: 1, start_ns: 4 * MS, len_ns: 4 * MS, domain: "rt".to_string(), vcpu: 0 },
        ];
        SchedConfig {
            pools: vec![
                pool(
                    "a653",
                    vec![1, 2],
                    SchedKind::Arinc653,
                    Some(Arinc653Config { major_frame_ns: 10 * MS, windows }),
                ),
                pool("general", vec![0], SchedKind::Credit, None),
            ],
            boot_pool: 1,
            domains: vec![domain("rt", 0, None), domain("x", 1, Some(256)), domain("y", 1, Some(768))],
        }
    }

    #[test]
    fn each_pool_gets_xen_s_id_its_cpus_and_its_domains() {
        let cfg = two_pool_config();
        let (mut s, plan) = build(&cfg, &[0, 1, 2], &["rt", "x", "y"]);
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
        assert_eq!(apply_boot_config(&mut s, &plan, &cfg, &["rt", "x", "y"], 0), Ok(vec![]));
        // The boot CPU's pool is pool 0 and the loop's pCPU 0; the DT's first pool took id 1.
        assert_eq!(plan.loop_cpus, [0, 1, 2]);
        assert_eq!((pool_id(&cfg, 0), pool_id(&cfg, 1)), (1, 0));
        assert_eq!(s.pool_ids(), [0, 1]);
        assert_eq!(s.pool_cpu_ids(1), [1, 2]);
        assert_eq!([s.pool_of(0), s.pool_of(1), s.pool_of(2)], [1, 0, 0]);
        // pCPU 0 shares itself 1:3 between x and y; the rt windows open on 1 and 2 alone.
        let mut used = [0u64; 3];
        let mut now = 0;
        while now < 3_000 * MS {
            let d = s.pick(0, now).unwrap();
            assert_ne!(d.vcpu, 0, "the ARINC 653 domain ran in the credit pool");
            used[d.vcpu] += d.slice_ns;
            now += d.slice_ns;
        }
        assert!((used[2] as f64 / now as f64 - 0.75).abs() < 0.02, "{used:?}");
        let frame = 3_000 * MS;
        assert_eq!(s.pick(1, frame), Some(Decision { vcpu: 0, slice_ns: 4 * MS }));
        assert_eq!(s.pick(2, frame), None);
        assert_eq!(s.next_event(2, frame), Some(frame + 4 * MS));
    }

    #[test]
    fn a_window_for_a_domain_of_another_pool_refuses_the_boot() {
        let mut cfg = two_pool_config();
        cfg.domains[0].pool = 1;
        let (mut s, plan) = build(&cfg, &[0, 1, 2], &["rt", "x", "y"]);
        let why = apply_boot_config(&mut s, &plan, &cfg, &["rt", "x", "y"], 0).unwrap_err();
        assert!(why.contains("ARINC 653 schedule refused"), "{why}");
    }

    #[test]
    fn a_pool_with_no_cpu_up_has_its_domains_run_in_the_boot_pool() {
        let cfg = two_pool_config();
        let (mut s, plan) = build(&cfg, &[0], &["rt", "x", "y"]);
        assert_eq!(plan.notes.last().unwrap(), "cpupool a653: none of its CPUs is up: its domains run in general");
        assert_eq!(s.pool_ids(), [0]);
        assert_eq!(s.pool_of(0), 0);
        assert_eq!(plan.loop_cpus, [0]);
        // Its schedule has no pool to run in; the boot pool runs rt with the others.
        assert_eq!(apply_boot_config(&mut s, &plan, &cfg, &["rt", "x", "y"], 0), Ok(vec![]));
        let picked: Vec<usize> = (0..30).filter_map(|t| s.pick(0, t * 30 * MS)).map(|d| d.vcpu).collect();
        assert!(picked.contains(&0), "{picked:?}");
    }

    #[test]
    fn the_implicit_pool_0_takes_the_cpus_no_pool_names() {
        // x86: the configuration lists one pool of CPU 2; the machine has CPUs 0 to 3.
        let cfg = SchedConfig {
            pools: vec![
                pool("rt", vec![2], SchedKind::Credit, None),
                pool("Pool-0", vec![0], SchedKind::RoundRobin, None),
            ],
            boot_pool: 1,
            domains: vec![],
        };
        let (s, plan) = build(&cfg, &[0, 1, 2, 3], &[]);
        assert_eq!(plan.loop_cpus, [0, 1, 3, 2]);
        assert_eq!(s.pool_cpu_ids(0), [0, 1, 3]);
        assert_eq!(s.pool_cpu_ids(1), [2]);
    }

    #[test]
    fn without_a_configuration_one_round_robin_pool_runs_on_every_cpu_up() {
        let (mut s, plan) = plan_pools(None, &[(0, 0), (1, 1)], 0, MS);
        assert_eq!(plan.loop_cpus, [0, 1]);
        assert_eq!(s.pool_ids(), [0]);
        assert_eq!(s.pool_sched(0).unwrap().kind(), Some(SchedKind::RoundRobin));
        assert_eq!(plan.pool_of(None, "anything"), 0);
    }
}
