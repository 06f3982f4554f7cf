//! The ARMv7 VFP/Advanced SIMD register file as the hypervisor switches it between vCPUs,
//! decided without touching a register: which vCPU's registers the CPU holds, what
//! entering a vCPU costs, and the facts of FPEXC and MVFR0 that shape the switch.
//!
//! The registers are switched eagerly but only when the vCPU on the CPU changes: an exit
//! that returns to the same vCPU costs nothing, because the hypervisor itself never uses
//! them (it is built soft-float).

/// FPEXC.EN: VFP and Advanced SIMD instructions are enabled (ARM ARM B6.1.45). A guest
/// clears it to trap its own first use (Linux's lazy VFP switch); HYP mode needs it set to
/// move the registers, so the switch sets it and then puts the guest's value back.
pub const FPEXC_EN: u32 = 1 << 30;

/// Whether the implementation has 32 doubleword registers (d16-d31 exist), from MVFR0's
/// "A_SIMD registers" field, bits \[3:0\]: 1 = 16 registers, 2 = 32 registers.
pub fn has_d32(mvfr0: u32) -> bool {
    mvfr0 & 0xf == 2
}

/// What entering a vCPU asks of the register file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch<T> {
    /// The CPU already holds this vCPU's registers: nothing to move.
    Keep,
    /// Store the CPU's registers into `save` (the vCPU that held them, if one did), then
    /// load the entering vCPU's.
    Load { save: Option<T> },
}

/// Which vCPU (named by `T`) the CPU's register file currently belongs to.
#[derive(Debug)]
pub struct Residency<T> {
    holder: Option<T>,
}

impl<T: Copy + PartialEq> Residency<T> {
    /// Nobody's registers yet: what the CPU holds at boot belongs to no guest.
    pub const fn new() -> Self {
        Residency { holder: None }
    }

    /// `vcpu` is about to run: what to move so that the CPU holds its registers.
    pub fn enter(&mut self, vcpu: T) -> Switch<T> {
        if self.holder == Some(vcpu) {
            return Switch::Keep;
        }
        let save = self.holder.replace(vcpu);
        Switch::Load { save }
    }

    /// Whether the CPU holds `vcpu`'s registers.
    pub fn holds(&self, vcpu: T) -> bool {
        self.holder == Some(vcpu)
    }

    /// `vcpu` is going away: its registers on the CPU need saving nowhere.
    pub fn forget(&mut self, vcpu: T) {
        if self.holder == Some(vcpu) {
            self.holder = None;
        }
    }
}

impl<T: Copy + PartialEq> Default for Residency<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_vcpu_loads_without_saving_the_boot_state() {
        let mut r = Residency::new();
        assert_eq!(r.enter(1), Switch::Load { save: None });
    }

    #[test]
    fn re_entering_the_same_vcpu_moves_nothing() {
        let mut r = Residency::new();
        r.enter(1);
        assert_eq!(r.enter(1), Switch::Keep);
        assert_eq!(r.enter(1), Switch::Keep);
    }

    #[test]
    fn a_switch_saves_the_previous_holder_then_loads() {
        let mut r = Residency::new();
        r.enter(1);
        assert_eq!(r.enter(2), Switch::Load { save: Some(1) });
        assert_eq!(r.enter(1), Switch::Load { save: Some(2) });
        assert_eq!(r.enter(1), Switch::Keep);
    }

    #[test]
    fn a_forgotten_holder_is_never_saved_into() {
        let mut r = Residency::new();
        r.enter(1);
        r.forget(2); // not the holder: no effect
        assert_eq!(r.enter(1), Switch::Keep);
        r.forget(1);
        assert_eq!(r.enter(2), Switch::Load { save: None });
        // A vCPU that reuses the dead one's name starts from its own state too.
        r.forget(2);
        assert_eq!(r.enter(2), Switch::Load { save: None });
    }

    #[test]
    fn mvfr0_register_count() {
        // Cortex-A15: MVFR0 = 0x10110222 (32 registers); Cortex-A8 VFPv3-D16 parts report 1.
        assert!(has_d32(0x1011_0222));
        assert!(!has_d32(0x1011_0221));
        assert!(!has_d32(0));
    }
}
