//! The physical console: the UART the device tree names, polled, lock-free, through the
//! register models of [`crate::arm::uart`] (PL011, 16550 incl. the BCM2835 mini UART,
//! Cadence, i.MX).
//!
//! Deliberately tiny rather than `arm-pl011-uart`: this writer must work with the MMU off
//! (before stage-1 is up, and on the early error path), from any CPU, and while the core's
//! log lock is held, without claiming the unique ownership of the device that the crate's
//! `UniqueMmioPointer` requires. Firmware (or QEMU) has already configured the UART's baud
//! rate and enabled it, as for Linux's earlycon.

use crate::arm::uart::{Uart, console};
use core::fmt::{self, Write};

/// Use `uart` from now on (none: output is dropped). Safe with the MMU off.
pub fn set_uart(uart: Option<Uart>) {
    console::set(uart);
}

pub fn has_uart() -> bool {
    console::has_uart()
}

/// Write bytes to the UART, `\n` as `\r\n`; dropped if there is no UART.
pub fn write(bytes: &[u8]) {
    console::write(bytes, true);
}

/// `fmt::Write` over [`write`], for the arch's own log lines.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write(s.as_bytes());
        Ok(())
    }
}

/// One `(XEN) ...` line from arch code (boot, secondary CPUs), before or beside the core's
/// log. Lines from several CPUs are not interleaved because the boot CPU waits for each
/// secondary's line before it goes on.
pub fn line(args: fmt::Arguments) {
    let _ = Console.write_str("(XEN) ");
    let _ = Console.write_fmt(args);
    let _ = Console.write_str("\n");
}

macro_rules! early_log {
    ($($arg:tt)*) => { $crate::aarch64::console::line(format_args!($($arg)*)) };
}
pub(crate) use early_log;

/// Print a message through semihosting (SYS_WRITE0): the only way to say anything when no
/// UART could be found. QEMU runs us with `-semihosting`.
pub fn semihosting_print(msg: &str) {
    let mut buf = [0u8; 160];
    let n = msg.len().min(buf.len() - 1);
    buf[..n].copy_from_slice(&msg.as_bytes()[..n]);
    // SAFETY: SYS_WRITE0 (x0 = 4) reads the NUL-terminated string at x1, which is `buf`,
    // alive and terminated; the debugger/emulator may write x0, declared clobbered.
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") 4u64 => _, in("x1") buf.as_ptr(), options(nostack));
    }
}
