//! The HYP vector table and the world switch between the hypervisor and a guest.
//!
//! A guest runs until something traps to HYP mode. Exceptions from the guest (PL0/PL1) enter
//! at the Hyp Trap, IRQ or FIQ vectors; exceptions from HYP mode itself (undefined
//! instruction, HVC/SVC, aborts) are hypervisor bugs and end in [`hyp_fault`].
//!
//! `armv7_enter_guest` saves the host's callee-saved registers and leaves the `GuestRegs`
//! pointer on top of the HYP stack, then `eret`s. SP_hyp is not visible to the guest, so
//! when a trap comes back the stack is exactly as it was left: the exit path stores the
//! guest's registers through that pointer and returns from `armv7_enter_guest`.

use super::console::Console;
use super::sysreg;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

/// Why `armv7_enter_guest` returned.
pub const EXIT_TRAP: u32 = 1;
pub const EXIT_IRQ: u32 = 2;
pub const EXIT_FIQ: u32 = 3;

/// HSCTLR.TE: take HYP exceptions in Thumb state. Our vectors are ARM code.
const HSCTLR_TE: u32 = 1 << 30;

/// Everything of the guest's register file the hypervisor switches (not CP15 state).
/// The assembly below depends on this exact layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    /// r0..r12 (r8..r12 of every mode but FIQ).
    pub r: [u32; 13],
    /// r14 of User/System mode (the `lr` HYP mode sees).
    pub lr_usr: u32,
    pub sp_usr: u32,
    /// Where the guest resumes: ELR_hyp.
    pub pc: u32,
    /// The guest's CPSR, restored from SPSR_hyp.
    pub cpsr: u32,
    /// SP, LR, SPSR of SVC, ABT, UND and IRQ modes, in that order.
    pub banked: [[u32; 3]; 4],
    /// r8..r12, SP, LR and SPSR of FIQ mode.
    pub fiq: [u32; 8],
}

const _: () = assert!(core::mem::size_of::<GuestRegs>() == 4 * (13 + 4 + 12 + 8));
const _: () = assert!(core::mem::offset_of!(GuestRegs, lr_usr) == 52);
const _: () = assert!(core::mem::offset_of!(GuestRegs, sp_usr) == 56);
const _: () = assert!(core::mem::offset_of!(GuestRegs, banked) == 68);

core::arch::global_asm!(
    r#"
    .section .text.hyp_vectors, "ax"
    .arm
    .arch_extension virt
    .balign 32
    .global armv7_hyp_vectors
armv7_hyp_vectors:
    b 10f                       @ 0x00 reset: not used in HYP
    b 11f                       @ 0x04 undefined instruction in HYP
    b 12f                       @ 0x08 HVC or SVC in HYP
    b 13f                       @ 0x0c prefetch abort in HYP
    b 14f                       @ 0x10 data abort in HYP
    b 20f                       @ 0x14 Hyp Trap: an exception from the guest
    b 21f                       @ 0x18 IRQ
    b 22f                       @ 0x1c FIQ

10: mov r0, #0
    b 15f
11: mov r0, #1
    b 15f
12: mov r0, #2
    b 15f
13: mov r0, #3
    b 15f
14: mov r0, #4
15: mrs r1, elr_hyp
    mrs r2, spsr
    bic sp, sp, #7
    bl {hyp_fault}

20: push {{r0, r1}}
    mov r0, #{trap}
    b 30f
21: push {{r0, r1}}
    mov r0, #{irq}
    b 30f
22: push {{r0, r1}}
    mov r0, #{fiq}

    @ Guest exit. Stack: guest r0, guest r1, GuestRegs pointer, host r4-r11, host lr.
30: ldr r1, [sp, #8]
    add r1, r1, #8
    stmia r1, {{r2-r12}}
    sub r1, r1, #8
    mov r12, r0                 @ exit reason
    pop {{r2, r3}}
    stmia r1, {{r2, r3}}
    str lr, [r1, #52]
    add r0, r1, #56
    mrs r2, sp_usr
    mrs r3, elr_hyp
    mrs r4, spsr
    stmia r0!, {{r2-r4}}
    mrs r2, sp_svc
    mrs r3, lr_svc
    mrs r4, spsr_svc
    stmia r0!, {{r2-r4}}
    mrs r2, sp_abt
    mrs r3, lr_abt
    mrs r4, spsr_abt
    stmia r0!, {{r2-r4}}
    mrs r2, sp_und
    mrs r3, lr_und
    mrs r4, spsr_und
    stmia r0!, {{r2-r4}}
    mrs r2, sp_irq
    mrs r3, lr_irq
    mrs r4, spsr_irq
    stmia r0!, {{r2-r4}}
    mrs r2, r8_fiq
    mrs r3, r9_fiq
    mrs r4, r10_fiq
    mrs r5, r11_fiq
    mrs r6, r12_fiq
    mrs r7, sp_fiq
    mrs r8, lr_fiq
    mrs r9, spsr_fiq
    stmia r0!, {{r2-r9}}
    mov r0, r12
    add sp, sp, #4              @ drop the GuestRegs pointer
    pop {{r4-r11, pc}}

    @ u32 armv7_enter_guest(GuestRegs *regs)
    .global armv7_enter_guest
armv7_enter_guest:
    push {{r4-r11, lr}}
    push {{r0}}
    add r1, r0, #56
    ldmia r1!, {{r2-r4}}
    msr sp_usr, r2
    msr elr_hyp, r3
    msr spsr_fsxc, r4
    ldmia r1!, {{r2-r4}}
    msr sp_svc, r2
    msr lr_svc, r3
    msr spsr_svc, r4
    ldmia r1!, {{r2-r4}}
    msr sp_abt, r2
    msr lr_abt, r3
    msr spsr_abt, r4
    ldmia r1!, {{r2-r4}}
    msr sp_und, r2
    msr lr_und, r3
    msr spsr_und, r4
    ldmia r1!, {{r2-r4}}
    msr sp_irq, r2
    msr lr_irq, r3
    msr spsr_irq, r4
    ldmia r1!, {{r2-r9}}
    msr r8_fiq, r2
    msr r9_fiq, r3
    msr r10_fiq, r4
    msr r11_fiq, r5
    msr r12_fiq, r6
    msr sp_fiq, r7
    msr lr_fiq, r8
    msr spsr_fiq, r9
    ldr lr, [r0, #52]
    ldmia r0, {{r0-r12}}
    eret
    "#,
    hyp_fault = sym hyp_fault,
    trap = const EXIT_TRAP,
    irq = const EXIT_IRQ,
    fiq = const EXIT_FIQ,
);

unsafe extern "C" {
    static armv7_hyp_vectors: u8;
    /// Run the guest described by `regs` until it traps; returns an `EXIT_*` reason.
    pub fn armv7_enter_guest(regs: *mut GuestRegs) -> u32;
}

/// Point HVBAR at our vectors; HYP exceptions are taken in ARM state.
pub fn install() {
    sysreg::write_hsctlr(sysreg::hsctlr() & !HSCTLR_TE);
    sysreg::write_hvbar((&raw const armv7_hyp_vectors) as u32);
    sysreg::isb();
}

/// An exception taken in HYP mode from HYP mode: a hypervisor bug. Report it and stop.
extern "C" fn hyp_fault(vector: u32, elr: u32, spsr: u32) -> ! {
    static IN_FAULT: AtomicBool = AtomicBool::new(false);
    if IN_FAULT.swap(true, Ordering::Relaxed) {
        // Faulted while reporting a fault (or semihosting is missing): stop quietly.
        loop {
            core::hint::spin_loop();
        }
    }
    let what = ["reset", "undefined instruction", "HVC/SVC", "prefetch abort", "data abort"];
    let what = what.get(vector as usize).copied().unwrap_or("?");
    // Straight to the UART: this may happen before the core has set up its log.
    let _ = writeln!(
        Console,
        "\n(XEN) hypervisor {what} in HYP mode: HSR {:#010x} ELR_hyp {elr:#010x} SPSR {spsr:#010x} HDFAR {:#010x} HIFAR {:#010x}",
        sysreg::hsr(),
        sysreg::hdfar(),
        sysreg::hifar()
    );
    panic!("exception taken in HYP mode from HYP mode ({what})")
}
