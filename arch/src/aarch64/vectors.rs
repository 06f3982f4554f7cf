//! EL2 exception vectors, guest entry (`enter_guest`) and guest exit.
//!
//! A guest runs between `enter_guest`, which saves the host's callee-saved state in the
//! vCPU's [`Context`] and `eret`s, and an exception from the lower EL, which saves the
//! guest's registers into the same `Context` (found through TPIDR_EL2), restores the host
//! state and returns from `enter_guest` with the kind of exception. Floating-point/SIMD
//! registers are not touched here: the hypervisor is built soft-float, so a guest's stay in
//! the CPU across its exits and are switched with its EL1 state (`vcpu.rs`).
//!
//! An exception taken from EL2 itself is a hypervisor bug: it is reported and panics.

use super::vcpu::Context;
use core::mem::offset_of;

/// What took the CPU out of the guest (`enter_guest`'s return value).
pub mod kind {
    pub const SYNC: u64 = 0;
    pub const IRQ: u64 = 1;
    pub const FIQ: u64 = 2;
    #[allow(dead_code)] // documents the fourth vector; handled as "anything else"
    pub const SERROR: u64 = 3;
}

unsafe extern "C" {
    /// Run the guest whose state `ctx` holds until it traps; returns a [`kind`].
    pub fn enter_guest(ctx: *mut Context) -> u64;
    /// Save the CPU's FP/SIMD registers, FPCR and FPSR into `ctx` (its guest's).
    pub fn fp_save(ctx: *mut Context);
    /// Load `ctx`'s FP/SIMD registers, FPCR and FPSR into the CPU.
    pub fn fp_restore(ctx: *const Context);
    /// Base of the EL2 vector table (2 KiB aligned), for VBAR_EL2.
    pub static el2_vectors: [u8; 2048];
}

core::arch::global_asm!(
    r#"
// Host state kept across a guest run: x19-x30 and sp (AAPCS64 callee-saved; the hypervisor
// is built soft-float and has no FP/SIMD state of its own).
.macro save_host base
    stp x19, x20, [\base, #0]
    stp x21, x22, [\base, #16]
    stp x23, x24, [\base, #32]
    stp x25, x26, [\base, #48]
    stp x27, x28, [\base, #64]
    stp x29, x30, [\base, #80]
    mov x3, sp
    str x3, [\base, #96]
.endm

.macro load_host base
    ldp x19, x20, [\base, #0]
    ldp x21, x22, [\base, #16]
    ldp x23, x24, [\base, #32]
    ldp x25, x26, [\base, #48]
    ldp x27, x28, [\base, #64]
    ldp x29, x30, [\base, #80]
    ldr x3, [\base, #96]
    mov sp, x3
.endm

// A vector that leaves the guest: x0/x1 go on the (host) stack, x1 = kind.
.macro guest_vector kind
    .balign 0x80
    stp x0, x1, [sp, #-16]!
    mov x1, #\kind
    b guest_exit
.endm

// A vector for an exception taken at EL2: a hypervisor bug.
.macro el2_vector kind
    .balign 0x80
    sub sp, sp, #(32 * 8)
    stp x0, x1, [sp]
    mov x0, #\kind
    b el2_exception
.endm

.section .text.vectors, "ax"
.balign 2048
.global el2_vectors
el2_vectors:
    el2_vector 0        // current EL with SP_EL0: sync, IRQ, FIQ, SError
    el2_vector 1
    el2_vector 2
    el2_vector 3
    el2_vector 0        // current EL with SP_EL2
    el2_vector 1
    el2_vector 2
    el2_vector 3
    guest_vector 0      // lower EL, AArch64
    guest_vector 1
    guest_vector 2
    guest_vector 3
    guest_vector 0      // lower EL, AArch32 (a 32-bit EL0 under a 64-bit guest kernel)
    guest_vector 1
    guest_vector 2
    guest_vector 3

.text
.balign 4
.global enter_guest
enter_guest:
    add x2, x0, #{host}
    save_host x2
    msr tpidr_el2, x0
    ldp x2, x3, [x0, #{elr}]
    msr elr_el2, x2
    msr spsr_el2, x3
    ldp x2, x3, [x0, #16]
    ldp x4, x5, [x0, #32]
    ldp x6, x7, [x0, #48]
    ldp x8, x9, [x0, #64]
    ldp x10, x11, [x0, #80]
    ldp x12, x13, [x0, #96]
    ldp x14, x15, [x0, #112]
    ldp x16, x17, [x0, #128]
    ldp x18, x19, [x0, #144]
    ldp x20, x21, [x0, #160]
    ldp x22, x23, [x0, #176]
    ldp x24, x25, [x0, #192]
    ldp x26, x27, [x0, #208]
    ldp x28, x29, [x0, #224]
    ldr x30, [x0, #240]
    ldp x0, x1, [x0]
    eret

// x1 = kind; the guest's x0/x1 are on the stack; every other guest register is live.
guest_exit:
    mrs x0, tpidr_el2
    stp x2, x3, [x0, #16]
    stp x4, x5, [x0, #32]
    stp x6, x7, [x0, #48]
    stp x8, x9, [x0, #64]
    stp x10, x11, [x0, #80]
    stp x12, x13, [x0, #96]
    stp x14, x15, [x0, #112]
    stp x16, x17, [x0, #128]
    stp x18, x19, [x0, #144]
    stp x20, x21, [x0, #160]
    stp x22, x23, [x0, #176]
    stp x24, x25, [x0, #192]
    stp x26, x27, [x0, #208]
    stp x28, x29, [x0, #224]
    str x30, [x0, #240]
    ldp x2, x3, [sp], #16
    stp x2, x3, [x0]
    mrs x2, elr_el2
    mrs x3, spsr_el2
    stp x2, x3, [x0, #{elr}]
    add x2, x0, #{host}
    load_host x2
    mov x0, x1
    ret

// x0 = kind; x0/x1 saved at [sp]; build the rest of a 32-register frame and report.
el2_exception:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    str x30, [sp, #240]
    mov x1, sp
    bl {report}
    b .
"#,
    host = const offset_of!(Context, host),
    elr = const offset_of!(Context, elr),
    report = sym el2_exception_report,
);

/// An exception taken at EL2: print what is known and panic (the panic handler stops the
/// emulator with a failure status).
extern "C" fn el2_exception_report(kind: u64, frame: &[u64; 32]) -> ! {
    use aarch64_cpu::registers::{ELR_EL2, ESR_EL2, FAR_EL2, Readable};
    let what = ["synchronous exception", "IRQ", "FIQ", "SError"].get(kind as usize).copied().unwrap_or("exception");
    let (esr, elr, far) = (ESR_EL2.get(), ELR_EL2.get(), FAR_EL2.get());
    if kind == self::kind::SYNC && esr >> 26 == 0 && is_semihosting_call(elr) {
        // `exit_emulator`'s HLT trapped: the emulator has no semihosting. Not a bug.
        super::console::early_log!("no semihosting (QEMU needs -semihosting): powering off through PSCI");
        super::exit_emulator(crate::ExitStatus::Failure);
    }
    super::console::early_log!("hypervisor bug: {} at EL2: ESR {:#x} ELR {:#x} FAR {:#x}", what, esr, elr, far);
    super::console::early_log!("x0 {:#x} x1 {:#x} x2 {:#x} x30 {:#x}", frame[0], frame[1], frame[2], frame[30]);
    panic!("{} taken at EL2 (ESR {:#x}, ELR {:#x}, FAR {:#x})", what, esr, elr, far)
}

/// The instruction at `pc` (in our own image) is the semihosting call `hlt #0xf000`.
fn is_semihosting_call(pc: u64) -> bool {
    const HLT_F000: u32 = 0xd45e_0000;
    let image = super::entry::image_region();
    // SAFETY: `pc` lies inside the hypervisor image (checked), which is mapped, readable
    // and 4-byte aligned code.
    (image.start..image.end()).contains(&pc)
        && pc.is_multiple_of(4)
        && unsafe { core::ptr::read_volatile(pc as *const u32) } == HLT_F000
}

// The only FP/SIMD instructions of the hypervisor (its Rust code is soft-float): a guest's
// registers are moved when the CPU changes hands, never on an exit.
core::arch::global_asm!(
    r#"
.arch_extension fp
.arch_extension simd
.text
.balign 4
.global fp_save
fp_save:
    add x1, x0, #{fp}
    stp q0, q1, [x1, #0]
    stp q2, q3, [x1, #32]
    stp q4, q5, [x1, #64]
    stp q6, q7, [x1, #96]
    stp q8, q9, [x1, #128]
    stp q10, q11, [x1, #160]
    stp q12, q13, [x1, #192]
    stp q14, q15, [x1, #224]
    stp q16, q17, [x1, #256]
    stp q18, q19, [x1, #288]
    stp q20, q21, [x1, #320]
    stp q22, q23, [x1, #352]
    stp q24, q25, [x1, #384]
    stp q26, q27, [x1, #416]
    stp q28, q29, [x1, #448]
    stp q30, q31, [x1, #480]
    mrs x2, fpcr
    mrs x3, fpsr
    stp x2, x3, [x0, #{fpcr}]
    ret

.global fp_restore
fp_restore:
    add x1, x0, #{fp}
    ldp q0, q1, [x1, #0]
    ldp q2, q3, [x1, #32]
    ldp q4, q5, [x1, #64]
    ldp q6, q7, [x1, #96]
    ldp q8, q9, [x1, #128]
    ldp q10, q11, [x1, #160]
    ldp q12, q13, [x1, #192]
    ldp q14, q15, [x1, #224]
    ldp q16, q17, [x1, #256]
    ldp q18, q19, [x1, #288]
    ldp q20, q21, [x1, #320]
    ldp q22, q23, [x1, #352]
    ldp q24, q25, [x1, #384]
    ldp q26, q27, [x1, #416]
    ldp q28, q29, [x1, #448]
    ldp q30, q31, [x1, #480]
    ldp x2, x3, [x0, #{fpcr}]
    msr fpcr, x2
    msr fpsr, x3
    ret
"#,
    fpcr = const offset_of!(Context, fpcr),
    fp = const offset_of!(Context, fp),
);
