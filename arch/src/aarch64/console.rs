//! The physical console: the PL011 named by the device tree, polled, lock-free.
//!
//! Deliberately tiny rather than `arm-pl011-uart`: this writer must work with the MMU off
//! (before stage-1 is up, and on the early error path), from any CPU, and while the core's
//! log lock is held, without claiming the unique ownership of the device that the crate's
//! `UniqueMmioPointer` requires. Firmware (or QEMU) has already configured the UART's baud
//! rate and enabled it, as for Linux's earlycon.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

/// PL011 data register.
const UARTDR: u64 = 0x00;
/// PL011 flag register; TXFF (bit 5) = transmit FIFO full.
const UARTFR: u64 = 0x18;
const TXFF: u32 = 1 << 5;

/// Physical (= virtual, identity map) base of the PL011, 0 until the device tree named one.
static BASE: AtomicU64 = AtomicU64::new(0);

/// Use the PL011 at `base` from now on. Plain store, safe with the MMU off.
pub fn set_base(base: u64) {
    BASE.store(base, Ordering::Relaxed);
}

pub fn has_uart() -> bool {
    BASE.load(Ordering::Relaxed) != 0
}

/// Write bytes to the UART, `\n` as `\r\n`; dropped if there is no UART.
pub fn write(bytes: &[u8]) {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    for &b in bytes {
        if b == b'\n' {
            put(base, b'\r');
        }
        put(base, b);
    }
}

fn put(base: u64, byte: u8) {
    let fr = (base + UARTFR) as *const u32;
    let dr = (base + UARTDR) as *mut u32;
    // SAFETY: `base` is the PL011 the device tree describes, identity-mapped as device
    // memory (or reached with the MMU off); FR and DR are 32-bit registers inside its page.
    // Polling FR and writing DR has no effect on memory Rust knows about.
    unsafe {
        while core::ptr::read_volatile(fr) & TXFF != 0 {
            core::hint::spin_loop();
        }
        core::ptr::write_volatile(dr, u32::from(byte));
    }
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
