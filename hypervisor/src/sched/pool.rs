//! A CPU pool's scheduler: one of the policies, chosen at boot by name (Xen's
//! `cpupool-sched`), behind the one [`Scheduler`] interface.

use super::{Arinc653, Arinc653Schedule, Cpu, Credit, CreditParams, Decision, DomainRef, RoundRobin};
use super::{SchedError, Scheduler, VcpuRef};

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
}
