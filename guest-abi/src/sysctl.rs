//! The scheduler parts of `sysctl` and `domctl` (`xen/include/public/sysctl.h`,
//! `xen/include/public/domctl.h`, Xen 4.17): the hypercall headers, `XEN_SYSCTL_scheduler_op`
//! with the ARINC 653 and credit structures, `XEN_SYSCTL_cpupool_op`, and
//! `XEN_DOMCTL_scheduler_op` with the credit structure.
//!
//! The headers' unions are fixed-size byte arrays here (`u`); the operation structures are
//! read from and written to their start.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17: a sysctl naming another is refused (-EACCES).
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x0000_0015;
/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x0000_0015;

/// `struct xen_sysctl` commands.
pub const XEN_SYSCTL_CPUPOOL_OP: u32 = 18;
pub const XEN_SYSCTL_SCHEDULER_OP: u32 = 19;
/// `struct xen_domctl` command.
pub const XEN_DOMCTL_SCHEDULER_OP: u32 = 16;

/// `XEN_SCHEDULER_*` (domctl.h): a pool's scheduler.
pub const XEN_SCHEDULER_CREDIT: u32 = 5;
pub const XEN_SCHEDULER_CREDIT2: u32 = 6;
pub const XEN_SCHEDULER_ARINC653: u32 = 7;
pub const XEN_SCHEDULER_RTDS: u32 = 8;
pub const XEN_SCHEDULER_NULL: u32 = 9;

pub const XEN_SYSCTL_SCHEDOP_PUTINFO: u32 = 0;
pub const XEN_SYSCTL_SCHEDOP_GETINFO: u32 = 1;
pub const XEN_DOMCTL_SCHEDOP_PUTINFO: u32 = 0;
pub const XEN_DOMCTL_SCHEDOP_GETINFO: u32 = 1;
pub const XEN_DOMCTL_SCHEDOP_PUTVCPUINFO: u32 = 2;
pub const XEN_DOMCTL_SCHEDOP_GETVCPUINFO: u32 = 3;

/// `XEN_SYSCTL_CPUPOOL_OP_*`.
pub const XEN_SYSCTL_CPUPOOL_OP_CREATE: u32 = 1;
pub const XEN_SYSCTL_CPUPOOL_OP_DESTROY: u32 = 2;
pub const XEN_SYSCTL_CPUPOOL_OP_INFO: u32 = 3;
pub const XEN_SYSCTL_CPUPOOL_OP_ADDCPU: u32 = 4;
pub const XEN_SYSCTL_CPUPOOL_OP_RMCPU: u32 = 5;
pub const XEN_SYSCTL_CPUPOOL_OP_MOVEDOMAIN: u32 = 6;
pub const XEN_SYSCTL_CPUPOOL_OP_FREEINFO: u32 = 7;

/// Credit's limits on its global parameters.
pub const XEN_SYSCTL_CSCHED_TSLICE_MAX: u32 = 1000;
pub const XEN_SYSCTL_CSCHED_TSLICE_MIN: u32 = 1;
pub const XEN_SYSCTL_SCHED_RATELIMIT_MAX: u32 = 500_000;
pub const XEN_SYSCTL_SCHED_RATELIMIT_MIN: u32 = 100;
pub const XEN_SYSCTL_CSCHED_MGR_DLY_MAX_US: u32 = 100 * 1000;

/// Entries an ARINC 653 schedule holds at most.
pub const ARINC653_MAX_DOMAINS_PER_SCHEDULE: usize = 64;

/// `struct xen_sysctl`: command, interface version, and the operation's union.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenSysctl {
    pub cmd: u32,
    pub interface_version: u32,
    pub u: [u8; 128],
}

/// `struct xen_domctl`: command, interface version, the domain, and the operation's union.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenDomctl {
    pub cmd: u32,
    pub interface_version: u32,
    pub domain: u16,
    pub _pad: [u16; 3],
    pub u: [u8; 128],
}

/// `struct xen_sysctl_scheduler_op`; `u` is `sched_arinc653.schedule` (a guest handle to a
/// [`XenSysctlArinc653Schedule`]) or `sched_credit` ([`XenSysctlCreditSchedule`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenSysctlSchedulerOp {
    pub cpupool_id: u32,
    pub sched_id: u32,
    pub cmd: u32,
    pub _pad0: u32,
    pub u: [u64; 2],
}

/// `struct xen_sysctl_credit_schedule`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenSysctlCreditSchedule {
    pub tslice_ms: u32,
    pub ratelimit_us: u32,
    pub vcpu_migr_delay_us: u32,
}

/// One entry of `struct xen_sysctl_arinc653_schedule`: `runtime` ns for vCPU `vcpu_id` of
/// the domain whose handle (UUID) is `dom_handle`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Arinc653Entry {
    pub dom_handle: [u8; 16],
    pub vcpu_id: u32,
    pub _pad0: u32,
    pub runtime: u64,
}

/// `struct xen_sysctl_arinc653_schedule`: the major frame (ns) and its entries, which run
/// one after the other from the frame's start.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenSysctlArinc653Schedule {
    pub major_frame: u64,
    pub num_sched_entries: u8,
    pub _pad0: [u8; 7],
    pub sched_entries: [Arinc653Entry; ARINC653_MAX_DOMAINS_PER_SCHEDULE],
}

/// `struct xenctl_bitmap`: a guest handle to the bytes and their number of bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenctlBitmap {
    pub bitmap: u64,
    pub nr_bits: u32,
    pub _pad0: u32,
}

/// `struct xen_sysctl_cpupool_op`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenSysctlCpupoolOp {
    pub op: u32,
    pub cpupool_id: u32,
    pub sched_id: u32,
    pub domid: u32,
    pub cpu: u32,
    pub n_dom: u32,
    pub cpumap: XenctlBitmap,
}

/// `struct xen_domctl_scheduler_op` with its credit member (`u.credit`, at `u`'s start).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenDomctlSchedulerOp {
    pub sched_id: u32,
    pub cmd: u32,
    pub u: [u64; 2],
}

/// `struct xen_domctl_sched_credit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenDomctlSchedCredit {
    pub weight: u16,
    pub cap: u16,
}

layout_checks! {
    test layouts;
    all, "struct xen_sysctl", XenSysctl, 136, { cmd: 0, interface_version: 4, u: 8 };
    all, "struct xen_domctl", XenDomctl, 144, { cmd: 0, interface_version: 4, domain: 8, u: 16 };
    all, "struct xen_sysctl_scheduler_op", XenSysctlSchedulerOp, 32, {
        cpupool_id: 0,
        sched_id: 4,
        cmd: 8,
        u: 16,
    };
    all, "struct xen_sysctl_credit_schedule", XenSysctlCreditSchedule, 12, {
        tslice_ms: 0,
        ratelimit_us: 4,
        vcpu_migr_delay_us: 8,
    };
    all, "struct xen_sysctl_arinc653_schedule", XenSysctlArinc653Schedule, 2064, {
        major_frame: 0,
        num_sched_entries: 8,
        sched_entries: 16,
    };
    all, "(sched_entries[0])", Arinc653Entry, 32, { dom_handle: 0, vcpu_id: 16, runtime: 24 };
    all, "struct xenctl_bitmap", XenctlBitmap, 16, { bitmap: 0, nr_bits: 8 };
    all, "struct xen_sysctl_cpupool_op", XenSysctlCpupoolOp, 40, {
        op: 0,
        cpupool_id: 4,
        sched_id: 8,
        domid: 12,
        cpu: 16,
        n_dom: 20,
        cpumap: 24,
    };
    all, "struct xen_domctl_scheduler_op", XenDomctlSchedulerOp, 24, { sched_id: 0, cmd: 4, u: 8 };
    all, "struct xen_domctl_sched_credit", XenDomctlSchedCredit, 4, { weight: 0, cap: 2 };
}
