//! The Xen public guest ABI, stated in Rust.
//!
//! Everything here mirrors Xen's `xen/include/public/*.h`: hypercall numbers, error values,
//! sub-operation numbers and the `#[repr(C)]` structures guests share with the hypervisor.
//! It is used both by the hypervisor and by test guests, so it holds no policy and no unsafe
//! code beyond what a layout needs.
#![no_std]

pub mod errno;
pub mod hypercall;
pub mod console;
pub mod sched;
pub mod version;
