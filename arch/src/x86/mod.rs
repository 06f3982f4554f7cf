//! Pure x86 paging logic shared by the VT-x backend and tested on the host.
//!
//! Nothing here runs an instruction: table memory and guest memory are reached through
//! small traits/closures, so the same code builds EPT on bare metal and in `cargo test`.

pub mod ept;
pub mod walk;
