//! Exception syndromes (ESR_EL2 / HSR) and the guest-side effects of exceptions, decoded
//! without touching a register so the decisions are unit-tested on the host.

/// Exception classes (ESR.EC, bits [31:26]) the hypervisor handles.
pub mod ec {
    pub const UNKNOWN: u32 = 0x00;
    pub const WFX: u32 = 0x01;
    pub const HVC32: u32 = 0x12;
    pub const SMC32: u32 = 0x13;
    pub const HVC64: u32 = 0x16;
    pub const SMC64: u32 = 0x17;
    pub const SYSREG64: u32 = 0x18;
    pub const IABT_LOWER: u32 = 0x20;
    pub const IABT_CURRENT: u32 = 0x21;
    pub const DABT_LOWER: u32 = 0x24;
    pub const DABT_CURRENT: u32 = 0x25;
}

/// One exception syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome(pub u64);

impl Syndrome {
    /// Exception class.
    pub fn class(self) -> u32 {
        ((self.0 >> 26) & 0x3f) as u32
    }
    /// Instruction-specific syndrome, bits [24:0].
    pub fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }
    /// The trapped instruction was 32 bits long (IL); else a 16-bit T32 instruction.
    pub fn instruction_length(self) -> u64 {
        if self.0 & (1 << 25) != 0 { 4 } else { 2 }
    }
    /// The immediate of a trapped HVC/SMC.
    pub fn imm16(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
    /// Fault status code of an abort (xFSC, bits [5:0]).
    pub fn fault_status(self) -> u32 {
        (self.0 & 0x3f) as u32
    }
    /// Abort raised by a stage-2 translation, access-flag or permission fault, or during
    /// the stage-1 walk (S1PTW): these are the aborts for which HPFAR_EL2 holds the IPA.
    pub fn is_stage2_abort(self) -> bool {
        let stage2_fsc = matches!(self.fault_status(), 0x04..=0x0f);
        let s1ptw = self.0 & (1 << 7) != 0;
        matches!(self.class(), ec::IABT_LOWER | ec::DABT_LOWER) && (stage2_fsc || s1ptw)
    }
}

/// The faulting IPA of a stage-2 abort: HPFAR_EL2.FIPA (bits [43:4] = IPA[51:12]) gives the
/// page, FAR_EL2 the offset in it.
pub fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar >> 4) & 0xff_ffff_ffff_ffff) << 12 | (far & 0xfff)
}

/// SPSR/PSTATE value for AArch64 EL1h with D, A, I and F masked: how a guest CPU starts and
/// how it enters its own exception vectors.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// Offset into VBAR_EL1 of the synchronous-exception vector a guest takes from the state
/// `spsr` describes: current EL with SP_EL0 / SP_EL1, or lower EL AArch64 / AArch32.
pub fn el1_sync_vector_offset(spsr: u64) -> u64 {
    const AARCH32: u64 = 1 << 4;
    match spsr & 0x1f {
        m if m & AARCH32 != 0 => 0x600,
        0b0000 => 0x400, // EL0t
        0b0100 => 0x000, // EL1t
        _ => 0x200,      // EL1h
    }
}

/// ESR_EL1 for an undefined-instruction exception (EC 0, IL as trapped).
pub fn undef_esr(trapped: Syndrome) -> u64 {
    trapped.0 & (1 << 25)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hvc_with_xen_immediate() {
        let s = Syndrome(0x5a00_0ea1); // EC 0x16, IL, imm 0xEA1
        assert_eq!(s.class(), ec::HVC64);
        assert_eq!(s.imm16(), 0xea1);
        assert_eq!(s.instruction_length(), 4);
    }

    #[test]
    fn wfi_trap_and_instruction_length() {
        let s = Syndrome(0x0600_0001);
        assert_eq!(s.class(), ec::WFX);
        assert_eq!(s.instruction_length(), 4);
        assert_eq!(Syndrome(0x0400_0000).instruction_length(), 2);
    }

    #[test]
    fn stage2_translation_fault_is_recognised() {
        // Data abort from lower EL, level-1 translation fault, read.
        let s = Syndrome(0x9200_0005);
        assert_eq!(s.class(), ec::DABT_LOWER);
        assert!(s.is_stage2_abort());
        // An alignment fault (0x21) is not a stage-2 fault.
        assert!(!Syndrome(0x9200_0021).is_stage2_abort());
        // Instruction abort during the stage-1 walk (S1PTW) is.
        assert!(Syndrome(0x8200_0085).is_stage2_abort());
    }

    #[test]
    fn fault_ipa_combines_hpfar_page_and_far_offset() {
        assert_eq!(fault_ipa(0x0080_0000, 0x8000_0000), 0x8000_0000);
        assert_eq!(fault_ipa(0x0080_0010, 0xffff_0000_dead_b123), 0x8000_1123);
    }

    #[test]
    fn vector_offsets_follow_the_interrupted_state() {
        assert_eq!(el1_sync_vector_offset(0x3c5), 0x200);
        assert_eq!(el1_sync_vector_offset(0x3c4), 0x000);
        assert_eq!(el1_sync_vector_offset(0x000), 0x400);
        assert_eq!(el1_sync_vector_offset(0x010), 0x600);
        assert_eq!(undef_esr(Syndrome(0x5a00_0001)), 1 << 25);
    }
}
