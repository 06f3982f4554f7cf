//! ARMv7 (AArch32, ARM state): a zImage-style header, `_start`, and `hvc #0xEA1`.
//!
//! The hypervisor recognises a 32-bit ARM kernel by the zImage magic at offset 0x24, loads
//! it 32 KiB into guest RAM and enters its first byte in SVC mode with the MMU off
//! (r0 = 0, r1 = ~0, r2 = device tree), as Xen does for a Linux zImage.

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .arm
    .global _start
_start:
    b 1f
    .rept 8
    .word 0                     @ 0x04..0x23: room a real zImage fills with NOPs
    .endr
    .word 0x016f2818            @ 0x24: zImage magic
    .word _start                @ 0x28: address the image is linked to run at
    .word __image_end           @ 0x2c: end of the image
    .word 0x04030201            @ 0x30: endianness marker (little-endian)
1:  ldr sp, =__stack_top
    ldr r4, =__bss_start
    ldr r5, =__bss_end
    mov r6, #0
2:  cmp r4, r5
    strlo r6, [r4], #4
    blo 2b
    bl guest_main
3:  b 3b
    "#
);

/// Issue Xen hypercall `nr` with five arguments; returns r0 sign-extended.
///
/// ARM's Xen ABI: number in r12, arguments in r0..r4, result in r0; the hypervisor keeps
/// every other register. Arguments are 32 bits wide here, so the top halves are dropped.
pub fn hypercall(nr: u64, args: [u64; 5]) -> i64 {
    let result: u32;
    // SAFETY: `hvc` traps to the hypervisor, which reads (and may write) only the guest
    // memory the arguments point to, then returns here with r0 changed and nothing else.
    unsafe {
        core::arch::asm!(
            ".arch_extension virt",
            "hvc #0xea1",
            inout("r0") args[0] as u32 => result,
            in("r1") args[1] as u32,
            in("r2") args[2] as u32,
            in("r3") args[3] as u32,
            in("r4") args[4] as u32,
            in("r12") nr as u32,
            options(nostack),
        );
    }
    i64::from(result as i32)
}

/// Vector registers for the `simd-isolation` guest: d0-d31 and FPSCR (with FPEXC read
/// back), filled, kept across one event (a spin, a hypercall, a WFI) and read back, all
/// inside one `asm!` block. The guest is built soft-float: compiled code never touches them.
pub mod simd {
    use crate::simd::{Event, Regs};

    /// d0-d31, then FPSCR, then FPEXC and CPACR (read back only: VFP must still be enabled,
    /// with the access this vCPU granted itself; after [`Event::HypercallFpOff`] the FPEXC
    /// word holds the FPEXC found after the call with EN inverted, so it must read as EN).
    pub const WORDS: usize = 35;
    const FPSCR: usize = 32;
    const FPEXC: usize = 33;
    const CPACR: usize = 34;
    /// FPSCR bits that hold what is written: N Z C V, QC, AHP, DN, FZ, RMode and the
    /// cumulative exception flags (Len and Stride stay 0, trap enables are RAZ on VFPv4).
    const FPSCR_MASK: u64 = 0xffc0_009f;
    /// FPEXC.EN.
    const FPEXC_EN: u64 = 1 << 30;

    /// CPACR access to cp10 and cp11 per vCPU: full (PL0 and PL1) on vCPU 0, PL1 only on the
    /// others. Both let this PL1 code use VFP; they differ so that a CPACR that is not
    /// switched with its vCPU shows.
    fn cpacr_for(vcpu: usize) -> u32 {
        if vcpu == 0 { 0xf << 20 } else { 0x5 << 20 }
    }

    /// Turn VFP/Advanced SIMD on for this vCPU the way Linux does: CPACR grants access to
    /// cp10 and cp11, then FPEXC.EN.
    pub fn enable(vcpu: usize) -> &'static str {
        // SAFETY: CPACR and FPEXC belong to this vCPU's PL1; enabling the FP unit changes no
        // memory and no register the compiled (soft-float) code relies on.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                "mcr p15, 0, {cpacr}, c1, c0, 2",
                "isb",
                "mov {t}, #(1 << 30)",
                "vmsr fpexc, {t}",
                "isb",
                t = out(reg) _,
                cpacr = in(reg) cpacr_for(vcpu),
                options(nostack),
            )
        };
        "d0-d31, fpscr (fpexc.en, cpacr)"
    }

    /// The register the `i`th word belongs to.
    pub fn name(i: usize, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        match i {
            FPSCR => write!(out, "fpscr"),
            FPEXC => write!(out, "fpexc"),
            CPACR => write!(out, "cpacr"),
            _ => write!(out, "d{i}"),
        }
    }

    /// Keep FPSCR to bits that hold what is written; FPEXC and CPACR must read back as
    /// vCPU `vcpu` set them.
    pub fn sanitize(vcpu: usize, r: &mut Regs) {
        r[FPSCR] &= FPSCR_MASK;
        r[FPEXC] = FPEXC_EN;
        r[CPACR] = u64::from(cpacr_for(vcpu));
    }

    /// The FP unit can be turned off around a hypercall ([`Event::HypercallFpOff`]).
    pub const FP_OFF: bool = true;

    /// Load `input`, go through `event`, store what the registers hold into `out`.
    /// `heartbeat` is written on every spin iteration (so another vCPU can see this one run).
    pub fn roundtrip(input: &Regs, event: Event, heartbeat: &core::sync::atomic::AtomicU32, out: &mut Regs) {
        let (mode, count_or_nr, a0, a1) = event.encode();
        // SAFETY: the block reads `input` and writes `out` (both WORDS long) and the
        // heartbeat word. The VFP registers it overwrites are never used by this soft-float
        // code. The hypercall and WFI trap to the hypervisor, which preserves every
        // register but r0 (declared) and returns here.
        unsafe {
            core::arch::asm!(
                ".fpu neon",
                ".arch_extension virt",
                "vldmia {inp}, {{d0-d15}}",
                "add {t}, {inp}, #128",
                "vldmia {t}, {{d16-d31}}",
                "ldr {t}, [{inp}, #256]",
                "vmsr fpscr, {t}",
                "cmp {mode}, #0",
                "bne 2f",
                "1: str r12, [{hb}]",
                "subs r12, r12, #1",
                "bne 1b",
                "b 4f",
                "2: cmp {mode}, #1",
                "bne 5f",
                "hvc #0xea1",
                "b 4f",
                // The hypercall with VFP off (FPEXC.EN clear, as Linux leaves it between
                // uses): the registers must survive, and EN must come back clear.
                "5: cmp {mode}, #4",
                "bne 3f",
                "vmrs {t}, fpexc",
                "bic {t}, {t}, #(1 << 30)",
                "vmsr fpexc, {t}",
                "isb",
                "hvc #0xea1",
                "vmrs {f}, fpexc",
                "orr {t}, {f}, #(1 << 30)",
                "vmsr fpexc, {t}",
                "isb",
                "b 4f",
                "3: wfi",
                "4: vstmia {out}, {{d0-d15}}",
                "add {t}, {out}, #128",
                "vstmia {t}, {{d16-d31}}",
                "vmrs {t}, fpscr",
                "str {t}, [{out}, #256]",
                "vmrs {t}, fpexc",
                "cmp {mode}, #4",
                "eoreq {t}, {f}, #(1 << 30)", // VFP-off event: EN as found, inverted
                "str {t}, [{out}, #264]",
                "mrc p15, 0, {t}, c1, c0, 2",
                "str {t}, [{out}, #272]",
                "mov {t}, #0",
                "str {t}, [{out}, #260]",
                "str {t}, [{out}, #268]",
                "str {t}, [{out}, #276]",
                inp = in(reg) input.as_ptr(),
                out = in(reg) out.as_mut_ptr(),
                hb = in(reg) heartbeat.as_ptr(),
                mode = in(reg) mode as u32,
                t = out(reg) _,
                f = out(reg) _,
                inout("r12") count_or_nr as u32 => _,
                inout("r0") a0 as u32 => _,
                in("r1") a1 as u32,
                options(nostack),
            );
        }
    }

    /// No timer to wake a blocked vCPU on this backend yet (the hypervisor has no clock on
    /// ARMv7): blocking waits are left out.
    pub fn arm_wakeup(_vcpu: usize, _micros: u64) -> bool {
        false
    }

    pub fn disarm_wakeup(_vcpu: usize) -> bool {
        false
    }

    /// PSCI CPU_ON (SMC32 through `hvc #0`) for vCPU `mpidr`, entering [`secondary_start`]
    /// with `stack_top` in r0; the stack's top two words hold the Rust entry and its argument.
    /// Returns the PSCI status.
    pub fn start_vcpu(mpidr: u64, stack_top: usize) -> i64 {
        const CPU_ON_32: u32 = 0x8400_0003;
        let result: u32;
        // SAFETY: a PSCI call: the hypervisor creates the vCPU and returns a status in r0;
        // r1-r3 may be clobbered by the SMC calling convention (declared).
        unsafe {
            core::arch::asm!(
                ".arch_extension virt",
                "hvc #0",
                inout("r0") CPU_ON_32 => result,
                inout("r1") mpidr as u32 => _,
                inout("r2") secondary_start as *const () as u32 => _,
                inout("r3") stack_top as u32 => _,
                options(nostack),
            )
        };
        i64::from(result as i32)
    }

    unsafe extern "C" {
        fn secondary_start();
    }

    core::arch::global_asm!(
        r#"
        .text
        .arm
        .global secondary_start
    secondary_start:                @ r0 = stack top; [sp] = entry, [sp, #4] = its argument
        sub sp, r0, #8
        ldr r1, [sp]
        ldr r0, [sp, #4]
        blx r1
    1:  wfi
        b 1b
        "#
    );
}
