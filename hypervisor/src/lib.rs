//! The hypervisor core: arch-neutral policy, host-testable.
//!
//! One module per Xen hypercall family (as in Xen's `xen/common/`), plus the pieces that
//! build and run domains. Nothing here touches a register: guest state is reached through
//! [`arch::exit::VirtualCpu`], the physical console through [`log`].
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod acpi;
pub mod bootcfg;
pub mod console;
pub mod domain;
pub mod domain_build;
pub mod evtchn;
pub mod evtchn_fifo;
pub mod frames;
pub mod grant;
pub mod guest_dt;
pub mod heap_loan;
pub mod hypercall;
pub mod loader;
pub mod log;
pub mod page;
pub mod pvconsole;
pub mod pvh;
pub mod run;
pub mod runstate;
pub mod sched;
pub mod version;
pub mod vpl011;
