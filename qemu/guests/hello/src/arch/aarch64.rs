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
    "#
);

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
