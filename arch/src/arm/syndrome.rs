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
    /// An abort for a translation fault (xFSC 0b0001LL: no valid descriptor at level LL), as
    /// opposed to a permission, access-flag or other fault.
    pub fn is_translation_fault(self) -> bool {
        matches!(self.fault_status(), 0x04..=0x07)
    }

    pub fn is_stage2_abort(self) -> bool {
        let stage2_fsc = matches!(self.fault_status(), 0x04..=0x0f);
        let s1ptw = self.0 & (1 << 7) != 0;
        matches!(self.class(), ec::IABT_LOWER | ec::DABT_LOWER) && (stage2_fsc || s1ptw)
    }
}

/// A data abort's instruction syndrome (ESR ISV = 1): enough to emulate the load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAccess {
    /// Access size in bytes (SAS): 1, 2, 4 or 8.
    pub size: u8,
    /// The transfer register (SRT); 31 is xzr/wzr.
    pub reg: u8,
    pub write: bool,
    /// A load sign-extends (SSE).
    pub sign_extend: bool,
    /// The register is 64 bits wide (SF); else a W register, whose upper half reads as zero.
    pub sixty_four: bool,
}

impl Syndrome {
    /// The decoded access of a data abort that has a valid instruction syndrome (ISV) and did
    /// not happen during a stage-1 table walk; `None` otherwise (the hypervisor cannot
    /// emulate it without decoding the instruction).
    pub fn data_access(self) -> Option<DataAccess> {
        let iss = self.iss();
        let isv = iss & (1 << 24) != 0;
        let s1ptw = iss & (1 << 7) != 0;
        if self.class() != ec::DABT_LOWER || !isv || s1ptw {
            return None;
        }
        Some(DataAccess {
            size: 1 << ((iss >> 22) & 3),
            reg: ((iss >> 16) & 0x1f) as u8,
            write: iss & (1 << 6) != 0,
            sign_extend: iss & (1 << 21) != 0,
            sixty_four: iss & (1 << 15) != 0,
        })
    }

    /// The system-register access of an EC 0x18 trap (MSR/MRS).
    pub fn sysreg_access(self) -> SysRegAccess {
        let iss = self.iss();
        SysRegAccess {
            reg: SysReg {
                op0: ((iss >> 20) & 3) as u8,
                op1: ((iss >> 14) & 7) as u8,
                crn: ((iss >> 10) & 0xf) as u8,
                crm: ((iss >> 1) & 0xf) as u8,
                op2: ((iss >> 17) & 7) as u8,
            },
            rt: ((iss >> 5) & 0x1f) as u8,
            read: iss & 1 != 0,
        }
    }
}

impl DataAccess {
    /// The register value a load of `raw` produces: truncated to the access size, sign
    /// extended if asked, and limited to 32 bits for a W register.
    pub fn load_value(&self, raw: u64) -> u64 {
        let bits = u32::from(self.size) * 8;
        let mut v = if bits == 64 { raw } else { raw & ((1 << bits) - 1) };
        if self.sign_extend && bits < 64 {
            let shift = 64 - bits;
            v = (((v << shift) as i64) >> shift) as u64;
        }
        if !self.sixty_four { v & 0xffff_ffff } else { v }
    }

    /// The bytes a store of register value `reg_value` writes.
    pub fn store_value(&self, reg_value: u64) -> u64 {
        let bits = u32::from(self.size) * 8;
        if bits == 64 { reg_value } else { reg_value & ((1 << bits) - 1) }
    }
}

/// A system register by its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysReg {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

impl SysReg {
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        Self { op0, op1, crn, crm, op2 }
    }
}

/// Registers the GICv3 virtualization traps to EL2 when the guest generates SGIs.
pub mod sysreg {
    use super::SysReg;
    pub const ICC_SGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 5);
    pub const ICC_ASGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 6);
    pub const ICC_SGI0R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 7);
}

/// One trapped MSR/MRS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    pub reg: SysReg,
    /// The general-purpose register (31 = xzr).
    pub rt: u8,
    /// MRS (read) rather than MSR.
    pub read: bool,
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

    #[test]
    fn data_abort_syndrome_decodes_size_register_and_direction() {
        // ISV, SAS = 2 (word), SRT = 3, WnR, level-1 translation fault, EC 0x24, IL.
        let s = Syndrome(0x9300_0000 | (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 5);
        let a = s.data_access().unwrap();
        assert_eq!((a.size, a.reg, a.write, a.sign_extend, a.sixty_four), (4, 3, true, false, false));
        // ldrsb x5: byte, SSE, SF.
        let s = Syndrome(0x9300_0000 | (1 << 24) | (1 << 21) | (5 << 16) | (1 << 15) | 5);
        let a = s.data_access().unwrap();
        assert_eq!((a.size, a.reg, a.write, a.sign_extend, a.sixty_four), (1, 5, false, true, true));
        assert_eq!(a.load_value(0x80), 0xffff_ffff_ffff_ff80);
        // Without ISV, or during a stage-1 walk, there is nothing to emulate.
        assert_eq!(Syndrome(0x9200_0005).data_access(), None);
        assert_eq!(Syndrome(0x9300_0085 | (1 << 24)).data_access(), None);
    }

    #[test]
    fn load_and_store_values() {
        let w = DataAccess { size: 2, reg: 0, write: false, sign_extend: true, sixty_four: false };
        assert_eq!(w.load_value(0x1_8001), 0xffff_8001);
        let x = DataAccess { size: 8, reg: 0, write: true, sign_extend: false, sixty_four: true };
        assert_eq!(x.load_value(u64::MAX), u64::MAX);
        assert_eq!(x.store_value(u64::MAX), u64::MAX);
        let b = DataAccess { size: 1, ..x };
        assert_eq!(b.store_value(0x1234), 0x34);
        assert_eq!(b.load_value(0x1ff), 0xff);
    }

    #[test]
    fn sysreg_trap_decodes_icc_sgi1r() {
        // msr icc_sgi1r_el1, x2: Op0 3, Op2 5, Op1 0, CRn 12, Rt 2, CRm 11, write.
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (2 << 5) | (11 << 1);
        let a = Syndrome(0x6200_0000 | iss).sysreg_access();
        assert_eq!(a.reg, sysreg::ICC_SGI1R_EL1);
        assert_eq!((a.rt, a.read), (2, false));
    }
}
