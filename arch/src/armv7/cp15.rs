//! Each vCPU's CP15 context: the Non-secure PL1&0 system registers a guest programs (MMU,
//! fault reporting, vectors, thread IDs, coprocessor access), switched when the vCPU on the
//! CPU changes ([`super::switched`]).
//!
//! HYP mode reaches the guest's copies with the ordinary encodings and does not translate
//! through them, so they stay on the CPU across exits. CPACR is among them: which of cp10 and
//! cp11 (VFP/Advanced SIMD) the guest granted itself belongs to the vCPU, like FPEXC. The
//! virtual timer is here too: it keeps counting toward the guest's compare value while the
//! hypervisor handles an exit, and only another vCPU's entry replaces it.

use super::MAX_CPUS;
use super::switched::{OnCpu, Switched};
use super::sysreg;
use crate::arm::vfp::Residency;

/// The guest's SCTLR at reset: MMU, caches and alignment checks off, reserved-one bits set
/// (bits 4, 5, 11, 16, 18, 22, 23 of the ARMv7 SCTLR).
const SCTLR_RESET: u32 = 0x00c5_0830;

/// Per physical CPU: whose CP15 context it holds.
static RESIDENT: [spin::Mutex<Residency<usize>>; MAX_CPUS] = [const { spin::Mutex::new(Residency::new()) }; MAX_CPUS];

/// Defines [`Cp15State`] over 32-bit and 64-bit registers, each a reader and a writer in
/// [`sysreg`].
macro_rules! cp15_state {
    ($($field:ident: $ty:ty = $read:ident / $write:ident),* $(,)?) => {
        #[derive(Clone, Copy, Debug, Default)]
        pub struct Cp15State {
            $($field: $ty,)*
        }
        impl Cp15State {
            fn read_cpu(&mut self) {
                $(self.$field = sysreg::$read();)*
            }
            fn write_cpu(&self) {
                $(sysreg::$write(self.$field);)*
            }
        }
    };
}

cp15_state! {
    sctlr: u32 = sctlr / write_sctlr,
    cpacr: u32 = cpacr / write_cpacr,
    ttbr0: u64 = ttbr0 / write_ttbr0,
    ttbr1: u64 = ttbr1 / write_ttbr1,
    ttbcr: u32 = ttbcr / write_ttbcr,
    dacr: u32 = dacr / write_dacr,
    dfsr: u32 = dfsr / write_dfsr,
    ifsr: u32 = ifsr / write_ifsr,
    adfsr: u32 = adfsr / write_adfsr,
    aifsr: u32 = aifsr / write_aifsr,
    dfar: u32 = dfar / write_dfar,
    ifar: u32 = ifar / write_ifar,
    par: u64 = par / write_par,
    mair0: u32 = mair0 / write_mair0,
    mair1: u32 = mair1 / write_mair1,
    amair0: u32 = amair0 / write_amair0,
    amair1: u32 = amair1 / write_amair1,
    vbar: u32 = vbar / write_vbar,
    contextidr: u32 = contextidr / write_contextidr,
    tpidrurw: u32 = tpidrurw / write_tpidrurw,
    tpidruro: u32 = tpidruro / write_tpidruro,
    tpidrprw: u32 = tpidrprw / write_tpidrprw,
    csselr: u32 = csselr / write_csselr,
    cntkctl: u32 = cntkctl / write_cntkctl,
    cntv_cval: u64 = cntv_cval / write_cntv_cval,
    cntv_ctl: u32 = cntv_ctl / write_cntv_ctl,
}

impl Cp15State {
    /// The guest's virtual timer as this copy has it: `(CNTV_CTL, CNTV_CVAL)`.
    pub fn virtual_timer(&self) -> (u32, u64) {
        (self.cntv_ctl, self.cntv_cval)
    }
}

/// One vCPU's CP15 context, on the CPU while it runs.
pub type GuestCp15 = Switched<Cp15State>;

/// A CPU out of reset: MMU and caches off, no coprocessor access granted, all else zero.
pub fn reset() -> GuestCp15 {
    Switched::new(Cp15State { sctlr: SCTLR_RESET, ..Cp15State::default() })
}

impl OnCpu for Cp15State {
    fn residents() -> &'static [spin::Mutex<Residency<usize>>; MAX_CPUS] {
        &RESIDENT
    }

    unsafe fn save(state: *mut Self) {
        // SAFETY: the caller passes a valid state nobody else refers to.
        unsafe { (*state).read_cpu() };
    }

    unsafe fn restore(state: *const Self) {
        // SAFETY: the caller passes a valid state.
        unsafe { (*state).write_cpu() };
        // The TLBs may hold the previous vCPU's stage-1 translations under this VMID (two
        // vCPUs of one domain share it, and global entries ignore the ASID).
        sysreg::dsb();
        sysreg::tlbiallnsnh(0);
        sysreg::dsb();
        sysreg::isb();
    }
}
