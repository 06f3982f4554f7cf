//! `console_io` sub-operations (`xen.h`, `CONSOLEIO_*`).

pub const CONSOLEIO_WRITE: u64 = 0;
pub const CONSOLEIO_READ: u64 = 1;
