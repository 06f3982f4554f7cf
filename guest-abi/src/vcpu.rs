//! `vcpu_op` sub-operations and their arguments (`xen/include/public/vcpu.h`).
//!
//! `vcpu_op(cmd, vcpuid, arg)`; the numbers below are `cmd`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Set up a vCPU's initial register state (argument: arch `vcpu_guest_context`).
pub const VCPUOP_INITIALISE: u64 = 0;
/// Start an initialised vCPU.
pub const VCPUOP_UP: u64 = 1;
/// Stop a vCPU.
pub const VCPUOP_DOWN: u64 = 2;
/// Returns 1 if the vCPU is up, 0 if not.
pub const VCPUOP_IS_UP: u64 = 3;
/// Copy the vCPU's [`VcpuRunstateInfo`] to the argument.
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
/// Ask Xen to keep a [`VcpuRunstateInfo`] up to date at a guest virtual address
/// (argument: [`VcpuRegisterRunstateMemoryArea`]).
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
/// Argument: [`VcpuSetPeriodicTimer`].
pub const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
/// No argument.
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
/// Argument: [`VcpuSetSingleshotTimer`].
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
/// No argument.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
/// Move the vCPU's `vcpu_info` into guest memory, once per vCPU; it must not cross a page
/// boundary (argument: [`VcpuRegisterVcpuInfo`]).
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;
/// Send an NMI to the vCPU; no argument.
pub const VCPUOP_SEND_NMI: u64 = 11;
/// Argument: [`VcpuGetPhysid`] (privileged guests).
pub const VCPUOP_GET_PHYSID: u64 = 12;
/// Ask Xen to keep a copy of `vcpu_time_info` at a guest virtual address (argument:
/// [`VcpuRegisterTimeMemoryArea`]).
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u64 = 13;
/// Like `VCPUOP_register_runstate_memory_area`, but the address is guest-physical
/// (all-ones unregisters).
pub const VCPUOP_REGISTER_RUNSTATE_PHYS_AREA: u64 = 14;
/// Like `VCPUOP_register_vcpu_time_memory_area`, but the address is guest-physical
/// (all-ones unregisters).
pub const VCPUOP_REGISTER_VCPU_TIME_PHYS_AREA: u64 = 15;

/// The vCPU is running on a physical CPU.
pub const RUNSTATE_RUNNING: i32 = 0;
/// The vCPU could run but is waiting for a physical CPU.
pub const RUNSTATE_RUNNABLE: i32 = 1;
/// The vCPU is blocked (waiting for an event).
pub const RUNSTATE_BLOCKED: i32 = 2;
/// The vCPU is neither runnable nor blocked (hot-unplugged, paused, ...).
pub const RUNSTATE_OFFLINE: i32 = 3;

/// Set in [`VcpuRunstateInfo::state_entry_time`] while Xen rewrites a registered runstate
/// area (when `VMASST_TYPE_runstate_update_flag` is on).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// [`VcpuSetSingleshotTimer::flags`]: fail with `-ETIME` if the timeout is already past
/// (the hypervisor may ignore this).
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `struct vcpu_runstate_info`: time accounting for one vCPU (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*`.
    pub state: i32,
    /// Implicit C padding before the 8-byte field (on x86_64 and ARM; 32-bit x86 has none).
    pub _pad0: u32,
    /// System time (ns) at which `state` was entered.
    pub state_entry_time: u64,
    /// Nanoseconds spent in each `RUNSTATE_*`, indexed by state.
    pub time: [u64; 4],
}

/// `struct vcpu_register_runstate_memory_area`, also the argument of
/// `VCPUOP_register_runstate_phys_area`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Where to keep the [`VcpuRunstateInfo`]: a guest virtual address, or a guest-physical
    /// one for the `_phys_area` form (a union of handle, pointer and `uint64_t` in C).
    pub addr: u64,
}

/// `struct vcpu_register_time_memory_area`, also the argument of
/// `VCPUOP_register_vcpu_time_phys_area`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegisterTimeMemoryArea {
    /// Where to keep the `vcpu_time_info` copy (virtual, or physical for `_phys_area`).
    pub addr: u64,
}

/// `struct vcpu_set_periodic_timer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuSetPeriodicTimer {
    pub period_ns: u64,
}

/// `struct vcpu_set_singleshot_timer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute system time (ns) of the timeout.
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*`.
    pub flags: u32,
    /// Implicit C tail padding.
    pub _pad0: u32,
}

/// `struct vcpu_register_vcpu_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegisterVcpuInfo {
    /// Guest frame to hold the `vcpu_info`.
    pub mfn: u64,
    /// Byte offset of the `vcpu_info` within that frame.
    pub offset: u32,
    /// Unused.
    pub rsvd: u32,
}

/// `struct vcpu_get_physid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuGetPhysid {
    /// x86: APIC id in bits 31:0, ACPI id in bits 63:32.
    pub phys_id: u64,
}

layout_checks! {
    test layouts;
    // `int` then `uint64_t`: the u64 fields are 8-aligned on x86_64 and on ARM (EABI).
    all, "struct vcpu_runstate_info", VcpuRunstateInfo, 48, {
        state: 0,
        _pad0: 4,
        state_entry_time: 8,
        time: 16,
    };
    all, "struct vcpu_register_runstate_memory_area", VcpuRegisterRunstateMemoryArea, 8, {
        addr: 0,
    };
    all, "struct vcpu_register_time_memory_area", VcpuRegisterTimeMemoryArea, 8, {
        addr: 0,
    };
    all, "struct vcpu_set_periodic_timer", VcpuSetPeriodicTimer, 8, { period_ns: 0 };
    all, "struct vcpu_set_singleshot_timer", VcpuSetSingleshotTimer, 16, {
        timeout_abs_ns: 0,
        flags: 8,
        _pad0: 12,
    };
    all, "struct vcpu_register_vcpu_info", VcpuRegisterVcpuInfo, 16, {
        mfn: 0,
        offset: 8,
        rsvd: 12,
    };
    all, "struct vcpu_get_physid", VcpuGetPhysid, 8, { phys_id: 0 };
}
