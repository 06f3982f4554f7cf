//! Scheduling: which vCPU a physical CPU runs next, and for how long.
//!
//! The core keeps a table of vCPUs and their states; a [`Scheduler`] only decides among the
//! runnable ones. Time is a parameter (`now`, in nanoseconds), never read here, so policies
//! are tested on the host in simulated time. Xen keeps one scheduler core and plugs policies
//! in as an ops table; this trait is that table.

mod round_robin;

pub use round_robin::RoundRobin;

/// Names one vCPU: its index in the core's vCPU table.
pub type VcpuRef = usize;

/// A scheduling decision: run `vcpu` until `now + slice_ns` at the latest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub vcpu: VcpuRef,
    pub slice_ns: u64,
}

/// A scheduling policy.
pub trait Scheduler {
    /// `vcpu` can run (it was created, woken, or its slice ended).
    fn wake(&mut self, vcpu: VcpuRef, now: u64);
    /// `vcpu` cannot run until woken (it blocked, halted or went offline).
    fn sleep(&mut self, vcpu: VcpuRef, now: u64);
    /// `vcpu` gave up the rest of its slice but stays runnable.
    fn yield_now(&mut self, vcpu: VcpuRef, now: u64);
    /// Pick what runs next; `None` when nothing is runnable (the CPU idles).
    fn pick(&mut self, now: u64) -> Option<Decision>;
}
