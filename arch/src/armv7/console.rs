//! The physical console: the PL011 the device tree names in `/chosen/stdout-path`.

use arm_pl011_uart::{PL011Registers, Uart, UniqueMmioPointer};
use core::ptr::NonNull;
use spin::Mutex;

static UART: Mutex<Option<Uart<'static>>> = Mutex::new(None);

/// Take the PL011 at physical `base` as the console. Firmware (QEMU) already enabled it, so
/// its line settings are left alone.
///
/// # Safety
/// `base` must be the address of a PL011's register block, identity-mapped (or the MMU off),
/// and nothing else may drive that UART.
pub unsafe fn init(base: usize) {
    let Some(regs) = NonNull::new(base as *mut PL011Registers) else {
        return;
    };
    // SAFETY: the caller promised a PL011 at `base` that only this console uses.
    let regs = unsafe { UniqueMmioPointer::new(regs) };
    *UART.lock() = Some(Uart::new(regs));
}

/// Write bytes to the console; dropped while no console is set up.
pub fn console_write(bytes: &[u8]) {
    let mut uart = UART.lock();
    let Some(uart) = uart.as_mut() else {
        return;
    };
    for &b in bytes {
        while uart.is_tx_fifo_full() {
            core::hint::spin_loop();
        }
        uart.write_word(b);
    }
}

/// `core::fmt` onto the console, for the few messages arch prints before the core's log.
pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        console_write(s.as_bytes());
        Ok(())
    }
}
