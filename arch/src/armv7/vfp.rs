//! Each vCPU's VFP/Advanced SIMD registers: d0-d31, FPSCR and FPEXC.
//!
//! The hypervisor is built soft-float (armv7a-none-eabi) and never touches these registers,
//! so after a guest exit the CPU still holds that guest's values. They are moved only when
//! another vCPU is about to run ([`GuestVfp::load`]): the CPU's registers go into the state
//! of the vCPU that owned them, and the entering vCPU's are loaded. An exit that returns to
//! the same vCPU costs nothing.
//!
//! HCPTR traps neither cp10/cp11 nor Advanced SIMD ([`init`]), so a guest uses them directly,
//! and HYP mode may move them. HYP needs FPEXC.EN to do that; the guest's own FPEXC, EN
//! clear or set (Linux clears it to catch its processes' first use), is saved and put back
//! as it was. FPEXC.EX and the FPINST registers are left out: VFPv4 on Cortex-A15/A7 has
//! no trapped floating-point exceptions, so EX stays 0.

extern crate alloc;

use super::sysreg;
use crate::arm::vfp::{Residency, Switch, has_d32};
use alloc::boxed::Box;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

/// HCPTR for every guest: no coprocessor, Advanced SIMD or trace access traps to HYP.
const HCPTR_NO_TRAPS: u32 = 0;

/// The register file of one vCPU while it is not on the CPU. The assembly below depends on
/// this layout: d0-d31 at 0, FPSCR at 256, FPEXC at 260.
#[repr(C, align(8))]
struct VfpState {
    d: [u64; 32],
    fpscr: u32,
    fpexc: u32,
}

const _: () = assert!(core::mem::offset_of!(VfpState, fpscr) == 256);
const _: () = assert!(core::mem::offset_of!(VfpState, fpexc) == 260);

/// Whose registers the CPU holds, by the address of that vCPU's [`VfpState`]. Every vCPU
/// runs on the boot CPU; with several physical CPUs this becomes one per CPU.
static RESIDENT: spin::Mutex<Residency<usize>> = spin::Mutex::new(Residency::new());
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

/// One vCPU's VFP registers. The state lives at a fixed heap address (the vCPU itself
/// moves), which names it in [`RESIDENT`] and which another vCPU's [`GuestVfp::load`] saves
/// into while this one is off the CPU.
pub struct GuestVfp {
    state: NonNull<VfpState>,
}

impl GuestVfp {
    /// Registers as after reset: all zero, FPEXC.EN clear (the guest turns VFP on itself).
    pub fn new() -> Self {
        let state = Box::new(VfpState { d: [0; 32], fpscr: 0, fpexc: 0 });
        GuestVfp { state: NonNull::from(Box::leak(state)) }
    }

    /// Make the CPU's VFP registers this vCPU's, saving those of the vCPU that held them.
    pub fn load(&mut self) {
        let switch = RESIDENT.lock().enter(self.key());
        let Switch::Load { save } = switch else { return };
        let d32 = u32::from(D32.load(Ordering::Relaxed));
        if let Some(holder) = save {
            // SAFETY: `holder` is the state of a live vCPU (a dropped one leaves RESIDENT in
            // `drop`), not this one's (Residency never asks to save into the entering vCPU),
            // and no reference to it exists while its vCPU is off the CPU. HCPTR does not
            // trap cp10/cp11 (`init`); the routine sets FPEXC.EN before it moves registers.
            unsafe { armv7_vfp_save(holder as *mut VfpState, d32) };
        }
        // SAFETY: our own state, valid and aligned; as above for the instructions. The
        // registers it overwrites belong to nobody now: they were just saved, or were the
        // boot state, or a dropped vCPU's.
        unsafe { armv7_vfp_restore(self.state.as_ptr(), d32) };
    }

    fn key(&self) -> usize {
        self.state.as_ptr() as usize
    }
}

impl Default for GuestVfp {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for GuestVfp {
    fn drop(&mut self) {
        // Nobody may save into this state once it is freed.
        RESIDENT.lock().forget(self.key());
        // SAFETY: `state` came from `Box::leak` in `new` and is freed only here.
        drop(unsafe { Box::from_raw(self.state.as_ptr()) });
    }
}
