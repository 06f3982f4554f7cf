//! Scheduling: which vCPU a physical CPU runs next, and for how long.
//!
//! The core keeps a table of vCPUs and their states; a [`Scheduler`] only decides among the
//! runnable ones. Time is a parameter (`now`, in nanoseconds), never read here, so policies
//! are tested on the host in simulated time. Xen keeps one scheduler core and plugs policies
//! in as an ops table; this trait is that table, and a CPU pool owns one instance of it.
//!
//! The model every policy follows (Xen's): a vCPU is *runnable* from [`Scheduler::wake`]
//! until [`Scheduler::sleep`] or [`Scheduler::block`]; a pCPU runs what
//! [`Scheduler::pick`] returned for it until it calls `pick` again, which also ends the
//! previous decision on that pCPU (the time between the two calls is what the vCPU used).
//! The running vCPU is not on any run queue while it runs.

mod arinc653;
mod credit;
mod pool;
mod pools;
#[cfg(test)]
mod proptests;
mod round_robin;

pub use arinc653::{Arinc653, Arinc653Schedule, Window};
pub use credit::{Credit, CreditParams};
pub use pool::{PoolPlan, PoolScheduler, SchedKind, apply_boot_config, plan_pools, pool_id};
pub use pools::{OnePool, Pool, PoolControl, Pools};
pub use round_robin::RoundRobin;

/// Names one vCPU: its index in the core's vCPU table (the run loop's slot).
pub type VcpuRef = usize;
/// Names one domain: its index in the core's domain table (the order domains were added).
pub type DomainRef = usize;
/// Names one physical CPU of the scheduler's pool: 0 .. the pool's CPU count.
pub type Cpu = usize;

/// A scheduling decision: run `vcpu` until `now + slice_ns` at the latest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub vcpu: VcpuRef,
    pub slice_ns: u64,
}

/// Why a scheduler refused parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// The policy has no such parameter (e.g. a weight for ARINC 653).
    NotSupported,
    /// A domain or vCPU the scheduler does not know.
    UnknownDomain(DomainRef),
    /// A pCPU outside the pool.
    CpuOutsidePool(Cpu),
    /// A value out of range (weight 0, cap over the pool, a window of length 0, ...).
    Invalid(&'static str),
}

/// A scheduling policy: Xen's `struct scheduler` ops for one CPU pool.
pub trait Scheduler {
    /// A new vCPU, index `index` of domain `domain`; it is not runnable until woken.
    fn add_vcpu(&mut self, vcpu: VcpuRef, domain: DomainRef, index: usize, now: u64);
    /// The vCPU is gone for good (its domain was destroyed).
    fn remove_vcpu(&mut self, vcpu: VcpuRef, now: u64);
    /// `vcpu` can run (it was created, powered on, or woken). Returns the pCPU that should
    /// call [`Scheduler::pick`] again now (Xen's "tickle"): the new vCPU should preempt
    /// what it runs, or it is idle. `None`: nothing needs to change before the current slices end.
    fn wake(&mut self, vcpu: VcpuRef, now: u64) -> Option<Cpu>;
    /// `vcpu` cannot run until woken (it went offline, or its domain ended).
    fn sleep(&mut self, vcpu: VcpuRef, now: u64);
    /// `vcpu` waits for an event (WFI/HLT, SCHEDOP_block); unlike [`Scheduler::sleep`], a
    /// policy may favour it when that event wakes it (credit's BOOST).
    fn block(&mut self, vcpu: VcpuRef, now: u64) {
        self.sleep(vcpu, now);
    }
    /// `vcpu` gives up the rest of its slice but stays runnable.
    fn yield_now(&mut self, vcpu: VcpuRef, now: u64);
    /// Periodic accounting up to `now` (credit's 10 ms tick). Policies also catch up on any
    /// call, so a caller that only calls [`Scheduler::pick`] loses nothing.
    fn tick(&mut self, _now: u64) {}
    /// Pick what pCPU `cpu` runs next at `now`, ending what it ran before; `None` when it
    /// should idle (until [`Scheduler::next_event`] or a wake that names it).
    fn pick(&mut self, cpu: Cpu, now: u64) -> Option<Decision>;
    /// When an idle `cpu` must call `pick` again although nothing woke (an ARINC 653 window
    /// opens, a capped vCPU is unparked). `None`: only a wake changes its answer.
    fn next_event(&self, _cpu: Cpu, _now: u64) -> Option<u64> {
        None
    }
    /// Set credit parameters (weight, cap) for `domain`.
    fn set_credit(&mut self, _domain: DomainRef, _params: CreditParams) -> Result<(), SchedError> {
        Err(SchedError::NotSupported)
    }
    /// Set a new ARINC 653 schedule, taking effect at the next major-frame boundary.
    fn set_arinc653(&mut self, _schedule: Arinc653Schedule, _now: u64) -> Result<(), SchedError> {
        Err(SchedError::NotSupported)
    }
    /// The policy, for the control hypercalls (`None`: a policy they cannot name).
    fn kind(&self) -> Option<SchedKind> {
        None
    }
    /// `domain`'s credit parameters.
    fn credit(&self, _domain: DomainRef) -> Option<CreditParams> {
        None
    }
    /// Credit's global parameters: timeslice (ms) and context-switch rate limit (µs).
    fn credit_globals(&self) -> Option<(u32, u32)> {
        None
    }
    /// Set them (the caller checked their ranges).
    fn set_credit_globals(&mut self, _tslice_ms: u32, _ratelimit_us: u32) -> Result<(), SchedError> {
        Err(SchedError::NotSupported)
    }
    /// The ARINC 653 schedule set last (in force, or waiting for its boundary) and the time
    /// it takes (or took) effect.
    fn arinc653_schedule(&self) -> Option<(Arinc653Schedule, u64)> {
        None
    }
    /// The CPU pools behind this scheduler, for the control operations; `None`: a lone
    /// policy, which they see as pool 0 ([`OnePool`]).
    fn control(&mut self) -> Option<&mut dyn PoolControl> {
        None
    }
}
