//! The physical console: the UART the device tree names (`/chosen/stdout-path` or the
//! `serial*` aliases), through the shared register models of [`crate::arm::uart`] (PL011 on
//! `virt` and vexpress, i.MX on the i.MX7 SABRE board).

use crate::arm::uart::{Uart, console};

/// Take `uart` as the console. Firmware (QEMU) already configured it; models that need a
/// switch turned on first (see [`crate::arm::uart::UartKind::init`]) get it here.
pub fn init(uart: Option<Uart>) {
    console::set(uart);
}

/// Write bytes to the console; dropped while no console is set up.
pub fn console_write(bytes: &[u8]) {
    console::write(bytes, false);
}

/// `core::fmt` onto the console, for the few messages arch prints before the core's log.
pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        console_write(s.as_bytes());
        Ok(())
    }
}
