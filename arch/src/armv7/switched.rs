//! Register state a vCPU keeps on the CPU while it runs and in memory otherwise, moved only
//! when the vCPU on the CPU changes (VFP/Advanced SIMD in [`super::vfp`], the guest's CP15
//! context in [`super::cp15`]).
//!
//! The hypervisor never uses these registers itself, so after an exit the CPU still holds
//! the vCPU's values: re-entering the same vCPU moves nothing. Entering another one saves the
//! CPU's registers into the state of the vCPU that held them, then loads the entering one's.
//! Each physical CPU keeps its own record of whose registers it holds; a vCPU that leaves a
//! CPU for the scheduler is [`Switched::unload`]ed first (saved, the record cleared), so it
//! is never held by one CPU while another enters it.

extern crate alloc;

use super::MAX_CPUS;
use super::smp::this_cpu;
use crate::arm::vfp::{Residency, Switch};
use alloc::boxed::Box;
use core::ptr::NonNull;

/// One kind of switched register state.
pub trait OnCpu: 'static {
    /// Per physical CPU: whose state of this kind that CPU holds, by the address of that
    /// vCPU's copy.
    fn residents() -> &'static [spin::Mutex<Residency<usize>>; MAX_CPUS];

    /// Store the CPU's registers into `state`.
    ///
    /// # Safety
    /// `state` is valid for writes and nothing else refers to it during the call.
    unsafe fn save(state: *mut Self);

    /// Load `state` into the CPU's registers.
    ///
    /// # Safety
    /// `state` is valid for reads; the registers it overwrites belong to nobody (they were
    /// just saved, or are the boot state or a dropped vCPU's).
    unsafe fn restore(state: *const Self);
}

/// One vCPU's copy of `S`. It lives at a fixed heap address (the vCPU itself moves), which
/// names it in `S::resident()` and which another vCPU's [`Switched::load`] saves into while
/// this one is off the CPU.
pub struct Switched<S: OnCpu> {
    state: NonNull<S>,
}

// SAFETY: a `Switched` owns its state as a Box would; the only other writer is a `load` on a
// CPU whose record names it, which `unload` clears before the vCPU can go to another CPU.
unsafe impl<S: OnCpu + Send> Send for Switched<S> {}

/// This CPU's record of whose `S` it holds.
fn here<S: OnCpu>() -> &'static spin::Mutex<Residency<usize>> {
    &S::residents()[this_cpu()]
}

impl<S: OnCpu> Switched<S> {
    pub fn new(initial: S) -> Self {
        Switched { state: NonNull::from(Box::leak(Box::new(initial))) }
    }

    /// Make the CPU's registers this vCPU's, saving those of the vCPU that held them.
    /// Returns whether anything moved (another vCPU, or none, held them).
    pub fn load(&mut self) -> bool {
        let Switch::Load { save } = here::<S>().lock().enter(self.key()) else { return false };
        if let Some(holder) = save {
            // SAFETY: `holder` is the state of a live vCPU (a dropped one leaves the
            // residency in `drop`) other than this one (Residency never asks to save into the
            // entering vCPU), and nothing refers to it while its vCPU is off the CPU.
            unsafe { S::save(holder as *mut S) };
        }
        // SAFETY: our own state, valid; the registers it overwrites were just saved into
        // their owner, or belong to nobody.
        unsafe { S::restore(self.state.as_ptr()) };
        true
    }

    /// Whether this CPU holds this vCPU's registers (its copy here is then stale).
    pub fn on_cpu(&self) -> bool {
        here::<S>().lock().holds(self.key())
    }

    /// The vCPU leaves this CPU (another may enter it next): save its registers if this CPU
    /// holds them, and hold them no more.
    pub fn unload(&mut self) {
        let mut resident = here::<S>().lock();
        if resident.holds(self.key()) {
            // SAFETY: our own state, valid, borrowed mutably; this CPU holds its registers.
            unsafe { S::save(self.state.as_ptr()) };
            resident.forget(self.key());
        }
    }

    /// The copy kept here, current only while [`Switched::on_cpu`] is false.
    pub fn saved(&self) -> &S {
        // SAFETY: the state is valid for this vCPU's lifetime; it is written only through
        // `S::save`, by this vCPU's `unload` (which needs `&mut self`) or by another vCPU's
        // `load` on a CPU that holds this one's registers, which happens only while this
        // vCPU is off every CPU and in nobody's hands (the core unloads a vCPU before another
        // CPU may take it, and a CPU enters one vCPU at a time).
        unsafe { self.state.as_ref() }
    }

    fn key(&self) -> usize {
        self.state.as_ptr() as usize
    }
}

impl<S: OnCpu> Drop for Switched<S> {
    fn drop(&mut self) {
        // Nobody may save into this state once it is freed.
        for resident in S::residents() {
            resident.lock().forget(self.key());
        }
        // SAFETY: `state` came from `Box::leak` in `new` and is freed only here.
        drop(unsafe { Box::from_raw(self.state.as_ptr()) });
    }
}
