//! Hardware virtualization: everything that runs an instruction or touches a register.
//!
//! The arch-neutral part of this crate (this file, [`exit`], [`boot`]) is the contract between
//! the hypervisor core and each architecture. Per architecture there is one module tree,
//! compiled only for its target, re-exported as [`cpu`], which provides:
//!
//! - the entry point (`_start`), early console, exception vectors, reaching EL2/HYP/VMX root;
//! - `cpu::console_write(&[u8])` and `cpu::exit_emulator(ExitStatus) -> !`;
//! - `cpu::Vcpu`, which implements [`exit::VirtualCpu`], and its construction from a
//!   [`boot::GuestSetup`];
//!
//! and calls the core's `hv_main(&BootInfo) -> !` once the boot CPU is ready.
#![no_std]

/// ARM logic shared by aarch64 and ARMv7 (translation tables, PSCI, syndromes), host-testable.
pub mod arm;
pub mod boot;
pub mod exit;
/// Opening device trees with dtoolkit despite Linux's overlong property names.
pub mod fdtcheck;
/// x86 paging logic (EPT building, guest page walks), host-testable; used by [`x86_64`].
pub mod x86;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64 as cpu;

#[cfg(target_arch = "arm")]
pub mod armv7;
#[cfg(target_arch = "arm")]
pub use armv7 as cpu;

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod x86_64;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use x86_64 as cpu;

/// How the emulator (or board) should end when the hypervisor stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every domain powered off cleanly.
    Success,
    /// A domain crashed or the hypervisor panicked.
    Failure,
}
