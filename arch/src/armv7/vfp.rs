//! Each vCPU's VFP/Advanced SIMD registers: d0-d31, FPSCR and FPEXC.
//!
//! The hypervisor is built soft-float (armv7a-none-eabi) and never touches these registers,
//! so after a guest exit the CPU still holds that guest's values. They are moved only when
//! another vCPU is about to run ([`super::switched`]). Their layout is [`VfpState`].
//!
//! HCPTR traps neither cp10/cp11 nor Advanced SIMD ([`init`]), so a guest uses them directly,
//! and HYP mode may move them. HYP needs FPEXC.EN to do that; the guest's own FPEXC, EN
//! clear or set (Linux clears it to catch its processes' first use), is saved and put back
//! as it was. FPEXC.EX and the FPINST registers are left out: VFPv4 on Cortex-A15/A7 has
//! no trapped floating-point exceptions, so EX stays 0.

use super::MAX_CPUS;
use super::switched::{OnCpu, Switched};
use super::sysreg;
use crate::arm::vfp::{Residency, has_d32};
use core::sync::atomic::{AtomicBool, Ordering};

/// HCPTR for every guest: no coprocessor, Advanced SIMD or trace access traps to HYP.
const HCPTR_NO_TRAPS: u32 = 0;

/// The register file of one vCPU while it is not on the CPU. The assembly below depends on
/// this layout: d0-d31 at 0, FPSCR at 256, FPEXC at 260.
#[repr(C, align(8))]
pub struct VfpState {
    d: [u64; 32],
    fpscr: u32,
    fpexc: u32,
}

const _: () = assert!(core::mem::offset_of!(VfpState, fpscr) == 256);
const _: () = assert!(core::mem::offset_of!(VfpState, fpexc) == 260);

/// Per physical CPU: whose VFP registers it holds.
static RESIDENT: [spin::Mutex<Residency<usize>>; MAX_CPUS] = [const { spin::Mutex::new(Residency::new()) }; MAX_CPUS];
/// d16-d31 exist (MVFR0), read once at boot.
static D32: AtomicBool = AtomicBool::new(false);

core::arch::global_asm!(
    r#"
    .text
    .arm
    .fpu neon

    @ void armv7_vfp_save(VfpState *state, u32 d32)
    .global armv7_vfp_save
armv7_vfp_save:
    vmrs r2, fpexc
    orr r3, r2, #{en}
    vmsr fpexc, r3              @ HYP may use the registers whatever the guest left in EN
    isb
    vmrs r3, fpscr
    str r3, [r0, #256]
    str r2, [r0, #260]
    vstmia r0, {{d0-d15}}
    cmp r1, #0
    addne r0, r0, #128
    vstmiane r0, {{d16-d31}}
    bx lr

    @ void armv7_vfp_restore(const VfpState *state, u32 d32)
    .global armv7_vfp_restore
armv7_vfp_restore:
    mov r2, #{en}
    vmsr fpexc, r2
    isb
    vldmia r0, {{d0-d15}}
    cmp r1, #0
    addne r3, r0, #128
    vldmiane r3, {{d16-d31}}
    ldr r2, [r0, #256]
    vmsr fpscr, r2
    ldr r2, [r0, #260]
    vmsr fpexc, r2              @ the guest's own EN, last
    isb
    bx lr
    "#,
    en = const crate::arm::vfp::FPEXC_EN,
);

unsafe extern "C" {
    fn armv7_vfp_save(state: *mut VfpState, d32: u32);
    fn armv7_vfp_restore(state: *const VfpState, d32: u32);
}

/// Boot: let guests (and HYP) use cp10/cp11 untrapped, and learn the register count.
pub fn init() {
    sysreg::write_hcptr(HCPTR_NO_TRAPS);
    sysreg::isb();
    D32.store(has_d32(mvfr0()), Ordering::Relaxed);
}

/// Media and VFP feature register 0 (how many registers, which precisions).
fn mvfr0() -> u32 {
    let v: u32;
    // SAFETY: reading MVFR0 has no side effect; HYP mode may read it with FPEXC.EN clear.
    unsafe { core::arch::asm!(".fpu neon", "vmrs {}, mvfr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// One vCPU's VFP registers, on the CPU while it runs.
pub type GuestVfp = Switched<VfpState>;

/// Registers as after reset: all zero, FPEXC.EN clear (the guest turns VFP on itself).
pub fn reset() -> GuestVfp {
    Switched::new(VfpState { d: [0; 32], fpscr: 0, fpexc: 0 })
}

impl OnCpu for VfpState {
    fn residents() -> &'static [spin::Mutex<Residency<usize>>; MAX_CPUS] {
        &RESIDENT
    }

    unsafe fn save(state: *mut Self) {
        // SAFETY: the caller passes a valid state nobody else refers to; HCPTR does not trap
        // cp10/cp11 (`init`) and the routine sets FPEXC.EN before it moves registers.
        unsafe { armv7_vfp_save(state, d32()) }
    }

    unsafe fn restore(state: *const Self) {
        // SAFETY: as for `save`; the routine ends by writing the guest's own FPEXC.
        unsafe { armv7_vfp_restore(state, d32()) }
    }
}

fn d32() -> u32 {
    u32::from(D32.load(Ordering::Relaxed))
}
