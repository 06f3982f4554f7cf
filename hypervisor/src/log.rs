//! The hypervisor's own log on the physical console.
//!
//! Arch code registers the console writer once at boot; before that (and in host tests)
//! output is dropped. Lines from the hypervisor itself carry the `(XEN)` prefix Xen users
//! know; guest lines carry `(dN)` (see [`crate::console`]).

use core::fmt::{self, Write};
use spin::{Mutex, Once};

static SINK: Once<fn(&[u8])> = Once::new();
static LOCK: Mutex<()> = Mutex::new(());

/// Route all output to `write` (the arch's UART writer).
pub fn set_sink(write: fn(&[u8])) {
    SINK.call_once(|| write);
}

/// Write raw bytes to the console, if one is registered.
pub fn write_bytes(bytes: &[u8]) {
    if let Some(write) = SINK.get() {
        write(bytes);
    }
}

/// Write one complete line (a guest's, prefix included) so that it never interleaves with
/// another CPU's line.
pub fn write_line(bytes: &[u8]) {
    let _guard = LOCK.lock();
    write_bytes(bytes);
}

struct Sink;

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Print one formatted line with the hypervisor prefix; lines never interleave.
pub fn line(args: fmt::Arguments) {
    let _guard = LOCK.lock();
    let _ = Sink.write_str("(XEN) ");
    let _ = Sink.write_fmt(args);
    let _ = Sink.write_str("\n");
}

/// Write text without taking the lock; for the panic path, where the lock may be held.
pub fn emergency(args: fmt::Arguments) {
    let _ = Sink.write_fmt(args);
}

/// `hvlog!("fmt", args..)`: one `(XEN) ...` line on the console.
#[macro_export]
macro_rules! hvlog {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}
