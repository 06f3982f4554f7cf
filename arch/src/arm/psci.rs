//! PSCI as the hypervisor offers it to a guest (`hvc #0`), decided without touching a register.
//!
//! Function IDs and return codes are those of Arm DEN 0022 (PSCI). [`handle`] serves a
//! backend that runs one vCPU per domain (CPU_ON is not offered); [`handle_smp`] one whose
//! domains have several vCPUs, whose MPIDRs are 0.0.0.n for vCPU n.

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const CPU_OFF: u32 = 0x8400_0002;
pub const CPU_ON_32: u32 = 0x8400_0003;
pub const CPU_ON_64: u32 = 0xc400_0003;
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const SYSTEM_OFF: u32 = 0x8400_0008;
pub const SYSTEM_RESET: u32 = 0x8400_0009;
pub const PSCI_FEATURES: u32 = 0x8400_000a;

pub const SUCCESS: i64 = 0;
pub const NOT_SUPPORTED: i64 = -1;
pub const INVALID_PARAMETERS: i64 = -2;
pub const ALREADY_ON: i64 = -4;
pub const INTERNAL_FAILURE: i64 = -6;

/// The PSCI status a CPU_ON call returns for what the core made of it.
pub fn cpu_on_status(result: crate::exit::CpuOnResult) -> i64 {
    use crate::exit::CpuOnResult;
    match result {
        CpuOnResult::Started => SUCCESS,
        CpuOnResult::AlreadyOn => ALREADY_ON,
        CpuOnResult::NoSuchCpu => INVALID_PARAMETERS,
        CpuOnResult::Failed => INTERNAL_FAILURE,
    }
}
/// AFFINITY_INFO: the node is on.
pub const AFFINITY_ON: i64 = 0;
/// AFFINITY_INFO: the node is off.
pub const AFFINITY_OFF: i64 = 1;
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

/// What the hypervisor must do for one PSCI call when a domain may have several vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpAction {
    /// As for a single vCPU.
    Plain(Action),
    /// Power on vCPU `target` at `entry` with `context` in x0/r0 (the core decides).
    CpuOn { target: usize, entry: u64, context: u64 },
    /// The calling vCPU powers itself off.
    CpuOff,
}

/// Decide on PSCI call `function` with arguments `args` (x1..x3) for a domain of
/// `nr_vcpus` vCPUs, where `is_on(n)` says whether vCPU n is on.
pub fn handle_smp(function: u32, args: [u64; 3], nr_vcpus: usize, is_on: impl Fn(usize) -> bool) -> SmpAction {
    let narrow = |v: u64, f: u32| if f & 0x4000_0000 == 0 { v & 0xffff_ffff } else { v };
    match function {
        CPU_ON_32 | CPU_ON_64 => match vcpu_index(narrow(args[0], function), nr_vcpus) {
            Some(target) => {
                SmpAction::CpuOn { target, entry: narrow(args[1], function), context: narrow(args[2], function) }
            }
            None => SmpAction::Plain(Action::Return(INVALID_PARAMETERS)),
        },
        CPU_OFF => SmpAction::CpuOff,
        AFFINITY_INFO_32 | AFFINITY_INFO_64 => {
            let level = narrow(args[1], function);
            let answer = match vcpu_index(narrow(args[0], function), nr_vcpus) {
                Some(n) if level == 0 => {
                    if is_on(n) {
                        AFFINITY_ON
                    } else {
                        AFFINITY_OFF
                    }
                }
                _ => INVALID_PARAMETERS,
            };
            SmpAction::Plain(Action::Return(answer))
        }
        PSCI_FEATURES if matches!(args[0] as u32, CPU_ON_32 | CPU_ON_64 | CPU_OFF) => {
            SmpAction::Plain(Action::Return(SUCCESS))
        }
        _ => SmpAction::Plain(handle(function, args[0], 0)),
    }
}

/// The vCPU an MPIDR names: affinity 0.0.0.n with n < `nr_vcpus`.
pub fn vcpu_index(mpidr: u64, nr_vcpus: usize) -> Option<usize> {
    let affinity = mpidr & AFFINITY_MASK;
    (affinity < 0x100).then_some(affinity as usize).filter(|&n| n < nr_vcpus)
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

    #[test]
    fn cpu_on_names_a_vcpu_by_mpidr() {
        let on = |n: usize| n == 0;
        assert_eq!(
            handle_smp(CPU_ON_64, [0x8000_0001, 0x4000_1000, 7], 2, on),
            SmpAction::CpuOn { target: 1, entry: 0x4000_1000, context: 7 }
        );
        assert_eq!(
            handle_smp(CPU_ON_32, [1, 0xffff_ffff_4000_1000, 0x1_0000_0007], 2, on),
            SmpAction::CpuOn { target: 1, entry: 0x4000_1000, context: 7 }
        );
        for bad in [2, 0x100, 0x1_0000_0000] {
            assert_eq!(handle_smp(CPU_ON_64, [bad, 0, 0], 2, on), SmpAction::Plain(Action::Return(INVALID_PARAMETERS)));
        }
        assert_eq!(handle_smp(CPU_OFF, [0; 3], 2, on), SmpAction::CpuOff);
    }

    #[test]
    fn smp_affinity_info_and_features() {
        let on = |n: usize| n == 0;
        assert_eq!(handle_smp(AFFINITY_INFO_64, [0, 0, 0], 2, on), SmpAction::Plain(Action::Return(AFFINITY_ON)));
        assert_eq!(handle_smp(AFFINITY_INFO_64, [1, 0, 0], 2, on), SmpAction::Plain(Action::Return(AFFINITY_OFF)));
        assert_eq!(
            handle_smp(AFFINITY_INFO_64, [3, 0, 0], 2, on),
            SmpAction::Plain(Action::Return(INVALID_PARAMETERS))
        );
        assert_eq!(
            handle_smp(PSCI_FEATURES, [u64::from(CPU_ON_64), 0, 0], 2, on),
            SmpAction::Plain(Action::Return(SUCCESS))
        );
        assert_eq!(handle_smp(SYSTEM_OFF, [0; 3], 2, on), SmpAction::Plain(Action::PowerOff));
    }
}
