//! `sched_op` sub-operations, their arguments and the shutdown reasons
//! (`xen/include/public/sched.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Give up the CPU; stay runnable.
pub const SCHEDOP_YIELD: u64 = 0;
/// Block until an event is pending (clears the vCPU's upcall mask first).
pub const SCHEDOP_BLOCK: u64 = 1;
/// Stop the domain; argument [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// Block until one of several event channels is pending or a timeout; argument [`SchedPoll`].
pub const SCHEDOP_POLL: u64 = 3;
/// Shut down another domain; argument [`SchedRemoteShutdown`].
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;
/// Record a shutdown code without shutting down; argument [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN_CODE: u64 = 5;
/// Arm, refresh or destroy a domain watchdog; argument [`SchedWatchdog`].
pub const SCHEDOP_WATCHDOG: u64 = 6;
/// Hardware-domain only: pin the current vCPU to a physical CPU; argument
/// [`SchedPinOverride`].
pub const SCHEDOP_PIN_OVERRIDE: u64 = 7;

/// The domain exited normally.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// Restart the domain.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// Save the domain's state for a later resume.
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// The domain crashed.
pub const SHUTDOWN_CRASH: u32 = 3;
/// The domain's watchdog expired.
pub const SHUTDOWN_WATCHDOG: u32 = 4;
/// Start over: Xen-side state is reset, memory and vCPU contexts are kept.
pub const SHUTDOWN_SOFT_RESET: u32 = 5;
/// The largest valid shutdown reason.
pub const SHUTDOWN_MAX: u32 = 5;

/// `struct sched_shutdown { unsigned int reason; }`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedShutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

/// `struct sched_poll`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SchedPoll {
    /// Guest handle: address of an array of `evtchn_port_t` (u32).
    pub ports: u64,
    /// Number of entries in `ports`.
    pub nr_ports: u32,
    /// Implicit C padding before the 8-byte `timeout`.
    pub _pad0: u32,
    /// Absolute system time (ns) at which to stop waiting (Xen treats 0 as no timeout).
    pub timeout: u64,
}

/// `struct sched_remote_shutdown`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedRemoteShutdown {
    /// The domain to shut down (`domid_t`).
    pub domain_id: u16,
    /// Implicit C padding before `reason`.
    pub _pad0: u16,
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

/// `struct sched_watchdog`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedWatchdog {
    /// 0 to create a watchdog (its id is returned); otherwise the watchdog to refresh.
    pub id: u32,
    /// Seconds until expiry; 0 destroys watchdog `id`.
    pub timeout: u32,
}

/// `struct sched_pin_override`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedPinOverride {
    /// Physical CPU to pin to, or a negative value to undo the override.
    pub pcpu: i32,
}

layout_checks! {
    test layouts;
    all, "struct sched_shutdown", SchedShutdown, 4, { reason: 0 };
    all, "struct sched_poll", SchedPoll, 24, {
        ports: 0,
        nr_ports: 8,
        _pad0: 12,
        timeout: 16,
    };
    all, "struct sched_remote_shutdown", SchedRemoteShutdown, 8, {
        domain_id: 0,
        _pad0: 2,
        reason: 4,
    };
    all, "struct sched_watchdog", SchedWatchdog, 8, { id: 0, timeout: 4 };
    all, "struct sched_pin_override", SchedPinOverride, 4, { pcpu: 0 };
}
