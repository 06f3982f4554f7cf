//! COM1, the hypervisor's console (Bochs writes it to a file, QEMU to stdio).

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};

const COM1: u16 = 0x3f8;

static UART: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Program COM1 for 115200 8N1 (fewer emulated cycles per character than 9600).
pub fn init() {
    // SAFETY: 0x3f8..0x3ff is COM1 on every PC; only this module touches those ports.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else {
        return;
    };
    let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
    if uart.init(config).is_ok() {
        *UART.lock() = Some(uart);
    }
}

/// Write bytes, turning `\n` into `\r\n`; dropped when there is no UART.
pub fn write(bytes: &[u8]) {
    // The panic path may interrupt a writer holding the lock; a lost line beats a hang.
    let Some(mut guard) = UART.try_lock() else { return };
    let Some(uart) = guard.as_mut() else { return };
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        match line.split_last() {
            Some((b'\n', text)) => {
                uart.send_bytes_exact(text);
                uart.send_bytes_exact(b"\r\n");
            }
            _ => uart.send_bytes_exact(line),
        }
    }
}

/// Wait until every byte written has left the UART (before the emulator is stopped).
pub fn flush() {
    let Some(mut guard) = UART.try_lock() else { return };
    let Some(uart) = guard.as_mut() else { return };
    // Bounded: a UART that never drains must not hang the exit path.
    for _ in 0..1_000_000 {
        if uart.lsr().contains(uart_16550::spec::registers::LSR::TRANSMITTER_EMPTY) {
            return;
        }
        core::hint::spin_loop();
    }
}
