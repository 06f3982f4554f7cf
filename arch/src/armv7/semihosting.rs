//! Arm semihosting, enough to end QEMU (`-semihosting`) with an exit status.
//!
//! On A-profile cores in ARM state the semihosting trap is `svc #0x123456`; QEMU intercepts
//! it before it becomes an exception, in any mode, HYP included. (`bkpt #0xab`, which the
//! `qemu-exit` crate emits on 32-bit ARM, is the M-profile trap.)

use core::arch::asm;

/// SYS_EXIT: on AArch32 the second argument is the reason itself, not a pointer to a block.
const SYS_EXIT: u32 = 0x18;
/// ADP_Stopped_ApplicationExit: QEMU exits with status 0.
const APPLICATION_EXIT: u32 = 0x2_0026;
/// ADP_Stopped_RunTimeErrorUnknown: QEMU exits with status 1.
const RUNTIME_ERROR: u32 = 0x2_0023;

/// Ask the debugger (QEMU) to stop the machine; spins if no debugger answers.
pub fn exit(success: bool) -> ! {
    let reason = if success { APPLICATION_EXIT } else { RUNTIME_ERROR };
    // SAFETY: the semihosting call only reads r0/r1 and, under QEMU, does not return. Without
    // a semihosting host the SVC is taken as an exception to HYP's vector 0x08, which reports
    // a hypervisor fault; either way no Rust state is affected.
    unsafe {
        asm!("svc #0x123456", inout("r0") SYS_EXIT => _, in("r1") reason, options(nostack));
    }
    loop {
        core::hint::spin_loop();
    }
}
