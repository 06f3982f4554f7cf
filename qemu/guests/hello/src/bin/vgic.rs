//! vGIC: the virtual GICv3's registers, the virtual timer's interrupt and a self-sent SGI,
//! taken through a real EL1 IRQ vector. AArch64 only; elsewhere it says so and powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(all(target_os = "none", not(target_arch = "aarch64")))]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    hello_guest::println!("VGIC-GUEST-SKIPPED (aarch64 only)");
    hello_guest::shutdown(guest_abi::sched::SHUTDOWN_POWEROFF)
}

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    guest::main()
}

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod guest {
    use core::cell::UnsafeCell;
    use guest_abi::sched;
    use hello_guest::{check, println, shutdown};

    /// Xen's guest GICv3 layout.
    const GICD: u64 = 0x0300_1000;
    const GICR: u64 = 0x0302_0000;
    const GICR_SGI: u64 = GICR + 0x1_0000;
    const VTIMER_PPI: u32 = 27;
    const TEST_SGI: u32 = 1;

    /// A word the IRQ handler writes and the main flow polls. The MMU is off, so memory is
    /// device-typed: plain volatile accesses, no atomics (exclusives need normal memory).
    struct Flag(UnsafeCell<u32>);
    // SAFETY: one CPU; the handler and the main flow access it with single volatile word
    // accesses only.
    unsafe impl Sync for Flag {}
    impl Flag {
        const fn new() -> Self {
            Self(UnsafeCell::new(0))
        }
        fn get(&self) -> u32 {
            // SAFETY: a valid, aligned static word (see `Sync`).
            unsafe { self.0.get().read_volatile() }
        }
        fn set(&self, v: u32) {
            // SAFETY: as `get`.
            unsafe { self.0.get().write_volatile(v) }
        }
    }

    static TIMER_INTID: Flag = Flag::new();
    static SGI_INTID: Flag = Flag::new();
    static OTHER_INTID: Flag = Flag::new();
    /// SGIs 2-7 taken, one bit each.
    static BURST_TAKEN: Flag = Flag::new();
    /// More SGIs than the hardware has list registers (QEMU: 4): the rest need a refill.
    const BURST: core::ops::RangeInclusive<u32> = 2..=7;

    macro_rules! mrs {
        ($reg:literal) => {{
            let v: u64;
            // SAFETY: reading an EL1/EL0 system register the guest owns.
            unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nostack)) };
            v
        }};
    }
    macro_rules! msr {
        ($reg:literal, $v:expr) => {{
            let v: u64 = $v;
            // SAFETY: writing an EL1/EL0 system register the guest owns; followed by an ISB.
            unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) v, options(nostack)) };
        }};
    }

    fn read32(addr: u64) -> u32 {
        // SAFETY: a vGIC register; the hypervisor emulates the access.
        unsafe { (addr as *const u32).read_volatile() }
    }
    fn read64(addr: u64) -> u64 {
        // SAFETY: as `read32`.
        unsafe { (addr as *const u64).read_volatile() }
    }
    fn write32(addr: u64, v: u32) {
        // SAFETY: as `read32`.
        unsafe { (addr as *mut u32).write_volatile(v) }
    }
    fn write8(addr: u64, v: u8) {
        // SAFETY: as `read32` (priority registers are byte-accessible).
        unsafe { (addr as *mut u8).write_volatile(v) }
    }

    // EL1 vectors: only "current EL with SP_ELx, IRQ" is expected; anything else fails the
    // test. The IRQ path saves every caller-saved register, FP/SIMD included (Rust uses them).
    core::arch::global_asm!(
        r#"
    .section .text.vectors, "ax"
    .balign 2048
    .global vgic_guest_vectors
vgic_guest_vectors:
    .rept 5
    .balign 0x80
    b       vgic_unexpected
    .endr
    .balign 0x80                // 0x280: current EL, SP_ELx, IRQ
    b       vgic_irq_entry
    .rept 10
    .balign 0x80
    b       vgic_unexpected
    .endr

vgic_unexpected:
    mrs     x0, esr_el1
    mrs     x1, elr_el1
    bl      vgic_guest_unexpected
    b       .

vgic_irq_entry:
    sub     sp, sp, #704
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    str     x30, [sp, #160]
    add     x0, sp, #176
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    bl      vgic_guest_irq
    add     x0, sp, #176
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x29, [sp, #144]
    ldr     x30, [sp, #160]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #704
    eret
"#
    );

    unsafe extern "C" {
        static vgic_guest_vectors: u8;
    }

    #[unsafe(no_mangle)]
    extern "C" fn vgic_guest_irq() {
        let iar = mrs!("icc_iar1_el1");
        let intid = (iar & 0xff_ffff) as u32;
        match intid {
            VTIMER_PPI => {
                msr!("cntv_ctl_el0", 0b10); // masked and off: it must not fire again
                TIMER_INTID.set(intid);
            }
            TEST_SGI => SGI_INTID.set(intid),
            2..=7 => BURST_TAKEN.set(BURST_TAKEN.get() | (1 << intid)),
            1020.. => return, // spurious: nothing to complete
            _ => OTHER_INTID.set(intid),
        }
        msr!("icc_eoir1_el1", iar);
    }

    #[unsafe(no_mangle)]
    extern "C" fn vgic_guest_unexpected(esr: u64, elr: u64) -> ! {
        println!("FAIL vgic: unexpected exception, ESR {:#x} at {:#x}", esr, elr);
        shutdown(sched::SHUTDOWN_CRASH)
    }

    pub fn main() -> ! {
        check_registers();
        setup_interrupts();
        timer_interrupt();
        self_sgi();
        sgi_burst();
        block_unmasks();
        let other = OTHER_INTID.get();
        if other != 0 {
            println!("FAIL vgic: unexpected interrupt {}", other);
        }
        println!("VGIC-GUEST-DONE");
        shutdown(sched::SHUTDOWN_POWEROFF)
    }

    /// SCHEDOP_block with IRQs masked and the timer armed: Xen enables event delivery before
    /// it blocks (PSTATE.I cleared in the state it returns to), so the call comes back with
    /// IRQs on and the vector takes the timer's interrupt.
    fn block_unmasks() {
        TIMER_INTID.set(0);
        // SAFETY: masks IRQs; the hypercall below is expected to unmask them.
        unsafe { core::arch::asm!("msr daifset, #2", "isb", options(nostack)) };
        let freq = mrs!("cntfrq_el0");
        msr!("cntv_cval_el0", mrs!("cntvct_el0") + freq / 1000);
        msr!("cntv_ctl_el0", 1);
        hello_guest::hypercall(guest_abi::hypercall::SCHED_OP, [sched::SCHEDOP_BLOCK, 0, 0, 0, 0]);
        let daif = mrs!("daif");
        let start = mrs!("cntvct_el0");
        while TIMER_INTID.get() == 0 && mrs!("cntvct_el0") < start + freq {
            core::hint::spin_loop();
        }
        // SAFETY: IRQs on, as for the rest of the guest, whatever the call left.
        unsafe { core::arch::asm!("msr daifclr, #2", "isb", options(nostack)) };
        let got = TIMER_INTID.get();
        let why = format_args!("DAIF {:#x} after SCHEDOP_block, timer IAR {}", daif, got);
        check("vgic-block-unmasks", daif & (1 << 7) == 0 && got == VTIMER_PPI, why);
    }

    fn check_registers() {
        let typer = read32(GICD + 0x4);
        let pidr2 = read32(GICD + 0xffe8);
        let rtyper = read64(GICR + 0x8);
        write32(GICR + 0x14, 0); // GICR_WAKER: clear ProcessorSleep
        let waker = read32(GICR + 0x14);
        let ok = typer & 0x1f >= 2
            && typer & (1 << 17) == 0
            && pidr2 & 0xf0 == 0x30
            && rtyper & (1 << 4) != 0
            && rtyper >> 32 == 0
            && waker & (1 << 2) == 0;
        let why = format_args!("TYPER {:#x} PIDR2 {:#x} GICR_TYPER {:#x} WAKER {:#x}", typer, pidr2, rtyper, waker);
        check("vgic-regs", ok, why);
    }

    /// Distributor on, PPI 27 and SGI 1 enabled with a priority, our CPU interface on,
    /// IRQ vector installed, IRQs unmasked.
    fn setup_interrupts() {
        write32(GICD, (1 << 4) | (1 << 1) | 1);
        write8(GICR_SGI + 0x400 + u64::from(VTIMER_PPI), 0xa0);
        write8(GICR_SGI + 0x400 + u64::from(TEST_SGI), 0xa0);
        let burst = BURST.fold(0, |m, i| m | (1 << i));
        write32(GICR_SGI + 0x100, (1 << VTIMER_PPI) | (1 << TEST_SGI) | burst);
        msr!("icc_sre_el1", mrs!("icc_sre_el1") | 1);
        msr!("icc_pmr_el1", 0xff);
        msr!("icc_igrpen1_el1", 1);
        msr!("vbar_el1", &raw const vgic_guest_vectors as u64);
        // SAFETY: unmasks IRQs; the vector above handles them.
        unsafe { core::arch::asm!("msr daifclr, #2", "isb", options(nostack)) };
    }

    /// Arm the virtual timer ~1 ms ahead, wait in WFI, expect INTID 27 within a second.
    fn timer_interrupt() {
        let freq = mrs!("cntfrq_el0");
        let start = mrs!("cntvct_el0");
        msr!("cntv_cval_el0", start + freq / 1000);
        msr!("cntv_ctl_el0", 1);
        while TIMER_INTID.get() == 0 && mrs!("cntvct_el0") < start + freq {
            // SAFETY: waits for an interrupt; IRQs are unmasked and handled.
            unsafe { core::arch::asm!("wfi", options(nostack)) };
        }
        let got = TIMER_INTID.get();
        let waited = mrs!("cntvct_el0") - start;
        check("vgic-timer", got == VTIMER_PPI, format_args!("IAR {} after {} ticks", got, waited));
    }

    /// Send SGI 1 to ourselves (target list bit 0 = Aff0 0) and take it.
    fn self_sgi() {
        let start = mrs!("cntvct_el0");
        let freq = mrs!("cntfrq_el0");
        msr!("icc_sgi1r_el1", (u64::from(TEST_SGI) << 24) | 1);
        while SGI_INTID.get() == 0 && mrs!("cntvct_el0") < start + freq {
            core::hint::spin_loop();
        }
        let got = SGI_INTID.get();
        check("vgic-sgi", got == TEST_SGI, format_args!("IAR {}", got));
    }

    /// With IRQs masked, make six SGIs pending, then unmask: all six must arrive.
    fn sgi_burst() {
        // SAFETY: masks IRQs so the SGIs pile up.
        unsafe { core::arch::asm!("msr daifset, #2", "isb", options(nostack)) };
        for sgi in BURST {
            msr!("icc_sgi1r_el1", (u64::from(sgi) << 24) | 1);
        }
        // SAFETY: unmasks IRQs again; the vector handles them.
        unsafe { core::arch::asm!("msr daifclr, #2", "isb", options(nostack)) };
        let (start, freq) = (mrs!("cntvct_el0"), mrs!("cntfrq_el0"));
        let all = BURST.fold(0, |m, i| m | (1 << i));
        while BURST_TAKEN.get() != all && mrs!("cntvct_el0") < start + freq {
            core::hint::spin_loop();
        }
        let got = BURST_TAKEN.get();
        check("vgic-sgi-burst", got == all, format_args!("took SGIs {:#x} of {:#x}", got, all));
    }
}
