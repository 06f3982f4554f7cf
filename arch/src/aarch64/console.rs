//! The physical console: the UART the device tree names, polled, lock-free, through the
//! register models of [`crate::arm::uart`] (PL011, 16550 incl. the BCM2835 mini UART,
//! Cadence, i.MX).
//!
//! Deliberately tiny rather than `arm-pl011-uart`: this writer must work with the MMU off
//! (before stage-1 is up, and on the early error path), from any CPU, and while the core's
//! log lock is held, without claiming the unique ownership of the device that the crate's
//! `UniqueMmioPointer` requires. Firmware (or QEMU) has already configured the UART's baud
//! rate and enabled it, as for Linux's earlycon.

use crate::arm::uart::{Mmio, Reg, Uart, UartKind, Width};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

/// Physical (= virtual, identity map) base of the UART, 0 until the device tree named one.
static BASE: AtomicU64 = AtomicU64::new(0);
/// Its model, encoded by [`encode`].
static KIND: AtomicU64 = AtomicU64::new(0);
/// Status polls per byte before it is written anyway (an unclocked UART never blocks us).
const MAX_POLLS: u32 = 1_000_000;

fn encode(kind: UartKind) -> u64 {
    match kind {
        UartKind::Pl011 => 0,
        UartKind::Ns16550 { reg_shift } => 0x100 | u64::from(reg_shift),
        UartKind::Cadence => 2,
        UartKind::Imx => 3,
    }
}

fn decode(v: u64) -> UartKind {
    match v {
        2 => UartKind::Cadence,
        3 => UartKind::Imx,
        v if v & 0x100 != 0 => UartKind::Ns16550 { reg_shift: v as u8 },
        _ => UartKind::Pl011,
    }
}

/// Use `uart` from now on (none: output is dropped). Plain stores, safe with the MMU off.
pub fn set_uart(uart: Option<Uart>) {
    if let Some(u) = uart {
        u.kind.init(&mut Device(u.base));
        KIND.store(encode(u.kind), Ordering::Relaxed);
    }
    BASE.store(uart.map_or(0, |u| u.base), Ordering::Relaxed);
}

pub fn has_uart() -> bool {
    BASE.load(Ordering::Relaxed) != 0
}

/// The device at `base`, by physical address.
struct Device(u64);

impl Mmio for Device {
    fn read(&mut self, reg: Reg) -> u32 {
        let addr = self.0 + reg.offset;
        // SAFETY: `self.0` is the UART the device tree describes, identity-mapped as device
        // memory (or reached with the MMU off); `reg` is one of its registers, read at the
        // width its model gives. Reading a status register has no effect on Rust's memory.
        unsafe {
            match reg.width {
                Width::U8 => u32::from(core::ptr::read_volatile(addr as *const u8)),
                Width::U32 => core::ptr::read_volatile(addr as *const u32),
            }
        }
    }
    fn write(&mut self, reg: Reg, value: u32) {
        let addr = self.0 + reg.offset;
        // SAFETY: as `read`, for its transmit register.
        unsafe {
            match reg.width {
                Width::U8 => core::ptr::write_volatile(addr as *mut u8, value as u8),
                Width::U32 => core::ptr::write_volatile(addr as *mut u32, value),
            }
        }
    }
}

/// Write bytes to the UART, `\n` as `\r\n`; dropped if there is no UART.
pub fn write(bytes: &[u8]) {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    let kind = decode(KIND.load(Ordering::Relaxed));
    let mut dev = Device(base);
    for &b in bytes {
        if b == b'\n' {
            kind.put(&mut dev, b'\r', MAX_POLLS);
        }
        kind.put(&mut dev, b, MAX_POLLS);
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
