//! COM1, the hypervisor's console (Bochs writes it to a file, QEMU to stdio).

use spin::{Mutex, MutexGuard};
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

/// Tries for the UART before a writer gives up: far longer than any line takes, even with
/// the holder stopped by an emulator that runs its CPUs in turn (Bochs), but bounded, so a
/// panic on the CPU that holds it still gets to the end.
const LOCK_TRIES: u32 = 100_000_000;

/// The UART, once another CPU's line is out (`None`: none, or it never came free).
fn uart() -> Option<MutexGuard<'static, Option<Uart16550<PioBackend>>>> {
    for _ in 0..LOCK_TRIES {
        if let Some(guard) = UART.try_lock() {
            return Some(guard);
        }
        core::hint::spin_loop();
    }
    None
}

/// Write bytes, turning `\n` into `\r\n`; dropped when there is no UART.
pub fn write(bytes: &[u8]) {
    // Waits for a line another CPU is writing: a plain `try_lock` lost whole guest lines on
    // Bochs, where the holder may be stopped for a while.
    let Some(mut guard) = uart() else { return };
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
    let Some(mut guard) = uart() else { return };
    let Some(uart) = guard.as_mut() else { return };
    // Bounded: a UART that never drains must not hang the exit path.
    for _ in 0..1_000_000 {
        if uart.lsr().contains(uart_16550::spec::registers::LSR::TRANSMITTER_EMPTY) {
            return;
        }
        core::hint::spin_loop();
    }
}
