//! PSCI as the hypervisor offers it to a guest (`hvc #0`), decided without touching a register.
//!
//! Function IDs and return codes are those of Arm DEN 0022 (PSCI). A domain has one vCPU for
//! now, so CPU_ON and friends are not offered; the calls Linux makes while booting and
//! powering off are.

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const CPU_OFF: u32 = 0x8400_0002;
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const SYSTEM_OFF: u32 = 0x8400_0008;
pub const SYSTEM_RESET: u32 = 0x8400_0009;
pub const PSCI_FEATURES: u32 = 0x8400_000a;

pub const SUCCESS: i64 = 0;
pub const NOT_SUPPORTED: i64 = -1;
pub const INVALID_PARAMETERS: i64 = -2;
/// AFFINITY_INFO: the node is on.
pub const AFFINITY_ON: i64 = 0;
/// MIGRATE_INFO_TYPE: no Trusted OS that would need migrating.
pub const NO_TRUSTED_OS: i64 = 2;

/// The version we implement: 1.0 (major in bits [31:16]).
pub const VERSION_1_0: i64 = 1 << 16;

/// MPIDR affinity fields Aff3..Aff0 (the rest are flags).
const AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// What the hypervisor must do for one PSCI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put this value in x0/r0 and resume the guest.
    Return(i64),
    /// The guest powered the system off.
    PowerOff,
    /// The guest asked for a system reset.
    Reset,
}

/// Decide on PSCI call `function` (from w0) with first argument `arg1` (x1), for a vCPU
/// whose virtual MPIDR is `vcpu_mpidr`.
pub fn handle(function: u32, arg1: u64, vcpu_mpidr: u64) -> Action {
    match function {
        PSCI_VERSION => Action::Return(VERSION_1_0),
        PSCI_FEATURES => Action::Return(features(arg1 as u32)),
        AFFINITY_INFO_32 | AFFINITY_INFO_64 => Action::Return(affinity_info(arg1, function, vcpu_mpidr)),
        MIGRATE_INFO_TYPE => Action::Return(NO_TRUSTED_OS),
        SYSTEM_OFF => Action::PowerOff,
        SYSTEM_RESET => Action::Reset,
        _ => Action::Return(NOT_SUPPORTED),
    }
}

fn features(function: u32) -> i64 {
    match function {
        PSCI_VERSION | PSCI_FEATURES | AFFINITY_INFO_32 | AFFINITY_INFO_64 | MIGRATE_INFO_TYPE | SYSTEM_OFF
        | SYSTEM_RESET => SUCCESS,
        _ => NOT_SUPPORTED,
    }
}

/// Only the calling vCPU exists, and it is on.
fn affinity_info(target: u64, function: u32, vcpu_mpidr: u64) -> i64 {
    let target = if function == AFFINITY_INFO_32 { target & 0xffff_ffff } else { target };
    if target & AFFINITY_MASK == vcpu_mpidr & AFFINITY_MASK { AFFINITY_ON } else { INVALID_PARAMETERS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_features_and_unknown() {
        assert_eq!(handle(PSCI_VERSION, 0, 0), Action::Return(0x1_0000));
        assert_eq!(handle(PSCI_FEATURES, u64::from(SYSTEM_OFF), 0), Action::Return(SUCCESS));
        assert_eq!(handle(PSCI_FEATURES, 0xc400_0003, 0), Action::Return(NOT_SUPPORTED));
        assert_eq!(handle(0xc400_0003, 1, 0), Action::Return(NOT_SUPPORTED));
        assert_eq!(handle(0x1234, 0, 0), Action::Return(NOT_SUPPORTED));
    }

    #[test]
    fn power_off_and_reset() {
        assert_eq!(handle(SYSTEM_OFF, 0, 0), Action::PowerOff);
        assert_eq!(handle(SYSTEM_RESET, 0, 0), Action::Reset);
    }

    #[test]
    fn affinity_info_knows_only_the_calling_vcpu() {
        let me = 0x8000_0000; // MPIDR bit 31 is RES1, not affinity
        assert_eq!(handle(AFFINITY_INFO_64, 0, me), Action::Return(AFFINITY_ON));
        assert_eq!(handle(AFFINITY_INFO_64, 1, me), Action::Return(INVALID_PARAMETERS));
        assert_eq!(handle(AFFINITY_INFO_32, 0xffff_ffff_0000_0000, me), Action::Return(AFFINITY_ON));
    }
}
