//! AArch64: an arm64 `Image` header, `_start`, and `hvc #0xEA1`.
//!
//! The hypervisor loads an arm64 `Image` at guest RAM + text_offset (0x80000) and enters its
//! first byte at EL1 with the MMU off and x0 = device tree, as Xen does for Linux. The image
//! is linked to run at that address (guest RAM starts at 0x4000_0000).

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       1f
    .word   0
    .quad   0x80000                 // text_offset: where in RAM we must be loaded
    .quad   __image_size            // image_size, .bss and stack included
    .quad   0x2                     // flags: little-endian, 4 KiB pages
    .quad   0
    .quad   0
    .quad   0
    .ascii  "ARMd"                  // 0x38: magic "ARM\x64"
    .word   0
1:  mov     x1, #(3 << 20)          // CPACR_EL1.FPEN: Rust code uses FP/SIMD registers
    msr     cpacr_el1, x1
    adrp    x1, hello_guest_vectors   // VBAR_EL1: see the vector table below
    add     x1, x1, :lo12:hello_guest_vectors
    msr     vbar_el1, x1
    isb
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    strb    wzr, [x1], #1           // byte stores: the MMU is off, memory is device-typed
    b       2b
3:  bl      guest_main
4:  wfi
    b       4b

    // The exception vectors every vCPU starts with. Our guests run with IRQs masked at
    // PSTATE, but a hypercall may unmask them: on Xen, SCHEDOP_block enables event delivery
    // (it clears PSTATE.I in the saved state, `local_event_delivery_enable`), so the vCPU
    // comes back from it with IRQs on and takes the interrupt that woke it at once. The IRQ
    // vector masks IRQs again in the state it returns to and leaves the interrupt pending at
    // the GIC, where the code that armed it acknowledges it. Anything else is unexpected:
    // it is reported and the domain crashes, rather than spinning silently.
    .section .text.vectors, "ax"
    .balign 0x800
    .global hello_guest_vectors
hello_guest_vectors:
    .irp    vector, 0x000, 0x080, 0x100, 0x180, 0x200
    .balign 0x80
    mov     x0, #\vector
    b       hello_guest_unexpected_vector
    .endr
    .balign 0x80                    // 0x280: current EL with SP_ELx, IRQ
    str     x0, [sp, #-16]!
    mrs     x0, spsr_el1
    orr     x0, x0, #(1 << 7)       // SPSR_EL1.I: back with IRQs masked
    msr     spsr_el1, x0
    ldr     x0, [sp], #16
    eret
    .irp    vector, 0x300, 0x380, 0x400, 0x480, 0x500, 0x580, 0x600, 0x680, 0x700, 0x780
    .balign 0x80
    mov     x0, #\vector
    b       hello_guest_unexpected_vector
    .endr
hello_guest_unexpected_vector:
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    bl      hello_guest_exception
    "#
);

/// An exception no vector expects: say which and crash the domain (a data abort at
/// [`crate::EXPECTED_FAULT_ADDRESS`] is the one the scenario asked for).
#[unsafe(no_mangle)]
extern "C" fn hello_guest_exception(vector: u64, esr: u64, elr: u64, far: u64) -> ! {
    const SYNC_CURRENT_EL: u64 = 0x200;
    const EC_DABT_CURRENT_EL: u64 = 0x25;
    let expected = crate::EXPECTED_FAULT_ADDRESS.load(core::sync::atomic::Ordering::Relaxed);
    if vector == SYNC_CURRENT_EL && esr >> 26 == EC_DABT_CURRENT_EL && far == expected {
        crate::println!("GUEST-FAULT-ABORTED {far:#x}: the hypervisor injected a data abort (ESR {esr:#x})");
    } else {
        crate::println!("FAIL guest exception: vector {vector:#x} ESR {esr:#x} ELR {elr:#x} FAR {far:#x}");
    }
    crate::shutdown(guest_abi::sched::SHUTDOWN_CRASH)
}

/// Issue Xen hypercall `nr` with five arguments; returns x0.
///
/// ARM's Xen ABI: `hvc #0xEA1`, number in x16, arguments in x0..x4, result in x0; the
/// hypervisor preserves every other register.
pub fn hypercall(nr: u64, args: [u64; 5]) -> i64 {
    let result: u64;
    // SAFETY: `hvc` traps to the hypervisor, which reads (and may write) only the guest
    // memory the arguments point to, then returns here with x0 changed and nothing else.
    unsafe {
        core::arch::asm!(
            "hvc #0xea1",
            inout("x0") args[0] => result,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x16") nr,
            options(nostack),
        );
    }
    result as i64
}

/// Vector registers for the `simd-isolation` guest: q0-q31, FPCR and FPSR, filled, kept
/// across one event (a spin, a hypercall, a WFI) and read back, all inside one `asm!` block
/// so that no compiled code (which may use these registers itself) runs in between.
pub mod simd {
    use crate::simd::{Event, Regs};

    /// q0-q31 as 64 words (low half first), then FPCR, FPSR, and EL1/EL0 system registers a
    /// guest sets freely and the hypervisor switches between vCPUs: TPIDR_EL0, TPIDRRO_EL0,
    /// TPIDR_EL1, CONTEXTIDR_EL1.
    pub const WORDS: usize = 70;
    const FPCR: usize = 64;
    const FPSR: usize = 65;
    const CONTEXTIDR: usize = 69;
    /// FPCR bits a guest may set without changing how code traps: AHP, DN, FZ, RMode.
    const FPCR_MASK: u64 = 0x07c0_0000;
    /// FPSR cumulative flags: QC, IDC, IXC, UFC, OFC, DZC, IOC.
    const FPSR_MASK: u64 = 0x0800_009f;

    /// Xen's guest GICv3 layout: distributor, and one redistributor (RD and SGI frames) per
    /// vCPU.
    const GICD: u64 = 0x0300_1000;
    const GICR: u64 = 0x0302_0000;
    const GICR_STRIDE: u64 = 0x2_0000;
    const GICR_SGI_FRAME: u64 = 0x1_0000;
    const VTIMER_PPI: u64 = 27;

    /// FP/SIMD is already on (the entry code set CPACR_EL1.FPEN). A blocking wait ends on the
    /// virtual timer's interrupt, so it is enabled in the GIC for this vCPU: WFI wakes on an
    /// interrupt the GIC signals, even while PSTATE.I keeps it from being taken.
    pub fn enable(vcpu: usize) -> &'static str {
        let gicr = GICR + vcpu as u64 * GICR_STRIDE;
        let sgi = gicr + GICR_SGI_FRAME;
        // SAFETY: vGIC registers of this domain (the hypervisor emulates each access):
        // distributor on (ARE, group 1), this redistributor awake, PPI 27 enabled.
        unsafe {
            (GICD as *mut u32).write_volatile((1 << 4) | (1 << 1) | 1);
            ((gicr + 0x14) as *mut u32).write_volatile(0);
            ((sgi + 0x400 + VTIMER_PPI) as *mut u8).write_volatile(0xa0);
            ((sgi + 0x100) as *mut u32).write_volatile(1 << VTIMER_PPI);
        }
        // SAFETY: this vCPU's own GIC CPU interface: system registers on, every priority
        // let through, group 1 on. IRQs stay masked at PSTATE; if a hypercall unmasks them
        // (Xen's SCHEDOP_block), the IRQ vector masks them again and leaves the interrupt
        // pending for `disarm_wakeup`.
        unsafe {
            core::arch::asm!(
                "mrs {t}, icc_sre_el1", "orr {t}, {t}, #1", "msr icc_sre_el1, {t}", "isb",
                "mov {t}, #0xff", "msr icc_pmr_el1, {t}",
                "mov {t}, #1", "msr icc_igrpen1_el1, {t}", "isb",
                t = out(reg) _,
                options(nostack, nomem),
            )
        };
        "q0-q31, fpcr, fpsr, tpidr_el0, tpidrro_el0, tpidr_el1, contextidr_el1"
    }

    /// The register the `i`th word belongs to.
    pub fn name(i: usize, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        match i {
            FPCR => write!(out, "fpcr"),
            FPSR => write!(out, "fpsr"),
            66 => write!(out, "tpidr_el0"),
            67 => write!(out, "tpidrro_el0"),
            68 => write!(out, "tpidr_el1"),
            CONTEXTIDR => write!(out, "contextidr_el1"),
            _ => write!(out, "q{}.{}", i / 2, if i.is_multiple_of(2) { "lo" } else { "hi" }),
        }
    }

    /// Keep the control words to bits that hold what is written.
    pub fn sanitize(_vcpu: usize, r: &mut Regs) {
        r[FPCR] &= FPCR_MASK;
        r[FPSR] &= FPSR_MASK;
        r[CONTEXTIDR] &= 0xffff_ffff; // PROCID: the upper half is RES0
    }

    /// The FP unit can be turned off around a hypercall ([`Event::HypercallFpOff`]).
    pub const FP_OFF: bool = true;

    /// Load `input`, go through `event`, store what the registers hold into `out`.
    /// `heartbeat` is written on every spin iteration (so another vCPU can see this one run).
    pub fn roundtrip(input: &Regs, event: Event, heartbeat: &core::sync::atomic::AtomicU32, out: &mut Regs) {
        let (mode, count_or_nr, a0, a1) = event.encode();
        // SAFETY: the block reads `input` and writes `out` (both WORDS long) and the
        // heartbeat word; it clobbers the vector registers (declared) and puts FPCR back as
        // it found it; the thread-ID and context-ID registers it loads are unused by this
        // guest otherwise. The hypercall and WFI trap to the hypervisor, which preserves every
        // register but x0 (declared) and returns here.
        unsafe {
            core::arch::asm!(
                "mrs {saved}, fpcr",
                "ldp q0, q1, [{inp}, #0]", "ldp q2, q3, [{inp}, #32]",
                "ldp q4, q5, [{inp}, #64]", "ldp q6, q7, [{inp}, #96]",
                "ldp q8, q9, [{inp}, #128]", "ldp q10, q11, [{inp}, #160]",
                "ldp q12, q13, [{inp}, #192]", "ldp q14, q15, [{inp}, #224]",
                "ldp q16, q17, [{inp}, #256]", "ldp q18, q19, [{inp}, #288]",
                "ldp q20, q21, [{inp}, #320]", "ldp q22, q23, [{inp}, #352]",
                "ldp q24, q25, [{inp}, #384]", "ldp q26, q27, [{inp}, #416]",
                "ldp q28, q29, [{inp}, #448]", "ldp q30, q31, [{inp}, #480]",
                "ldr {t}, [{inp}, #512]", "msr fpcr, {t}",
                "ldr {t}, [{inp}, #520]", "msr fpsr, {t}",
                "ldr {t}, [{inp}, #528]", "msr tpidr_el0, {t}",
                "ldr {t}, [{inp}, #536]", "msr tpidrro_el0, {t}",
                "ldr {t}, [{inp}, #544]", "msr tpidr_el1, {t}",
                "ldr {t}, [{inp}, #552]", "msr contextidr_el1, {t}",
                "cbnz {mode}, 2f",
                "1: str w16, [{hb}]",
                "subs x16, x16, #1",
                "b.ne 1b",
                "b 4f",
                "2: cmp {mode}, #1",
                "b.ne 5f",
                "hvc #0xea1",
                "b 4f",
                // The hypercall with FP/SIMD off at EL1 (CPACR_EL1.FPEN = 0): the registers
                // must survive it all the same.
                "5: cmp {mode}, #4",
                "b.ne 3f",
                "mrs {t}, cpacr_el1",
                "bic {t}, {t}, #(3 << 20)",
                "msr cpacr_el1, {t}",
                "isb",
                "hvc #0xea1",
                "mrs {t}, cpacr_el1",
                "orr {t}, {t}, #(3 << 20)",
                "msr cpacr_el1, {t}",
                "isb",
                "b 4f",
                "3: wfi",
                "4: stp q0, q1, [{out}, #0]", "stp q2, q3, [{out}, #32]",
                "stp q4, q5, [{out}, #64]", "stp q6, q7, [{out}, #96]",
                "stp q8, q9, [{out}, #128]", "stp q10, q11, [{out}, #160]",
                "stp q12, q13, [{out}, #192]", "stp q14, q15, [{out}, #224]",
                "stp q16, q17, [{out}, #256]", "stp q18, q19, [{out}, #288]",
                "stp q20, q21, [{out}, #320]", "stp q22, q23, [{out}, #352]",
                "stp q24, q25, [{out}, #384]", "stp q26, q27, [{out}, #416]",
                "stp q28, q29, [{out}, #448]", "stp q30, q31, [{out}, #480]",
                "mrs {t}, fpcr", "str {t}, [{out}, #512]",
                "mrs {t}, fpsr", "str {t}, [{out}, #520]",
                "mrs {t}, tpidr_el0", "str {t}, [{out}, #528]",
                "mrs {t}, tpidrro_el0", "str {t}, [{out}, #536]",
                "mrs {t}, tpidr_el1", "str {t}, [{out}, #544]",
                "mrs {t}, contextidr_el1", "str {t}, [{out}, #552]",
                "msr fpcr, {saved}",
                inp = in(reg) input.as_ptr(),
                out = in(reg) out.as_mut_ptr(),
                hb = in(reg) heartbeat.as_ptr(),
                mode = in(reg) mode,
                t = out(reg) _,
                saved = out(reg) _,
                inout("x16") count_or_nr => _,
                inout("x0") a0 => _,
                in("x1") a1,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _,
                out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _, out("v14") _, out("v15") _, out("v16") _, out("v17") _,
                out("v18") _, out("v19") _, out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                out("v24") _, out("v25") _, out("v26") _, out("v27") _, out("v28") _, out("v29") _,
                out("v30") _, out("v31") _,
                options(nostack),
            );
        }
    }

    /// Arm the EL1 virtual timer to fire in `micros` µs (a WFI or SCHEDOP_block then sleeps
    /// until it is due); only the wake-up matters: the interrupt is never handled (after
    /// SCHEDOP_block, which unmasks IRQs, the IRQ vector just masks them again).
    pub fn arm_wakeup(_vcpu: usize, micros: u64) -> bool {
        let (now, freq): (u64, u64);
        // SAFETY: reading the virtual counter and its frequency has no side effect.
        unsafe {
            core::arch::asm!("isb", "mrs {}, cntvct_el0", "mrs {}, cntfrq_el0", out(reg) now, out(reg) freq,
                options(nostack, nomem))
        };
        let due = now + freq * micros / 1_000_000;
        // SAFETY: the EL1 virtual timer is this guest's own; enabling it without unmasking
        // IRQs at PSTATE only makes an interrupt pending.
        unsafe {
            core::arch::asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) due, in(reg) 1u64, options(nostack, nomem))
        };
        true
    }

    /// Stop the timer [`arm_wakeup`] armed and complete its interrupt if the GIC raised it,
    /// so the next wait sleeps again; true if the timer had fired (ISTATUS).
    pub fn disarm_wakeup(_vcpu: usize) -> bool {
        let ctl: u64;
        // SAFETY: as in `arm_wakeup`: the guest's own timer.
        unsafe {
            core::arch::asm!("mrs {}, cntv_ctl_el0", "msr cntv_ctl_el0, xzr", "isb", out(reg) ctl, options(nostack, nomem))
        };
        loop {
            let intid: u64;
            // SAFETY: acknowledging a pending group-1 interrupt at this vCPU's own CPU
            // interface (1023: none) and completing it; no handler is involved.
            unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nostack, nomem)) };
            if intid >= 1020 {
                break;
            }
            // SAFETY: as above: ends the interrupt just acknowledged.
            unsafe { core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) intid, options(nostack, nomem)) };
        }
        ctl & 4 != 0
    }

    /// PSCI CPU_ON (SMC64 calling convention through `hvc #0`) for vCPU `mpidr`, entering
    /// [`secondary_start`] with `stack_top` in x0; the stack's top two words hold the Rust
    /// entry and its argument. Returns the PSCI status.
    pub fn start_vcpu(mpidr: u64, stack_top: usize) -> i64 {
        const CPU_ON_64: u64 = 0xc400_0003;
        let result: i64;
        // SAFETY: a PSCI call: the hypervisor creates the vCPU and returns a status in x0;
        // x1-x3 may be clobbered by the SMC calling convention (declared).
        unsafe {
            core::arch::asm!(
                "hvc #0",
                inout("x0") CPU_ON_64 => result,
                inout("x1") mpidr => _,
                inout("x2") secondary_start as *const () as u64 => _,
                inout("x3") stack_top as u64 => _,
                options(nostack),
            )
        };
        result
    }

    unsafe extern "C" {
        fn secondary_start();
    }

    core::arch::global_asm!(
        r#"
        .text
        .global secondary_start
    secondary_start:                 // x0 = stack top; [sp] = entry, [sp, #8] = its argument
        mov     x1, #(3 << 20)          // CPACR_EL1.FPEN, as on the boot vCPU
        msr     cpacr_el1, x1
        adrp    x1, hello_guest_vectors   // and its exception vectors
        add     x1, x1, :lo12:hello_guest_vectors
        msr     vbar_el1, x1
        isb
        sub     sp, x0, #16
        ldp     x1, x0, [sp]
        blr     x1
    1:  wfi
        b       1b
        "#
    );
}
