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
