//! Register state a vCPU keeps on the CPU while it runs and in memory otherwise, moved only
//! when the vCPU on the CPU changes (VFP/Advanced SIMD in [`super::vfp`], the guest's CP15
//! context in [`super::cp15`]).
//!
//! The hypervisor never uses these registers itself, so after an exit the CPU still holds
//! the vCPU's values: re-entering the same vCPU moves nothing. Entering another one saves the
//! CPU's registers into the state of the vCPU that held them, then loads the entering one's.

extern crate alloc;

use crate::arm::vfp::{Residency, Switch};
use alloc::boxed::Box;
use core::ptr::NonNull;

/// One kind of switched register state.
pub trait OnCpu: 'static {
    /// Whose state of this kind the CPU holds, by the address of that vCPU's copy. Every
    /// vCPU runs on the boot CPU; with several physical CPUs this becomes one per CPU.
    fn resident() -> &'static spin::Mutex<Residency<usize>>;

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

impl<S: OnCpu> Switched<S> {
    pub fn new(initial: S) -> Self {
        Switched { state: NonNull::from(Box::leak(Box::new(initial))) }
    }

    /// Make the CPU's registers this vCPU's, saving those of the vCPU that held them.
    /// Returns whether anything moved (another vCPU, or none, held them).
    pub fn load(&mut self) -> bool {
        let Switch::Load { save } = S::resident().lock().enter(self.key()) else { return false };
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

    /// Whether the CPU holds this vCPU's registers (its copy here is then stale).
    pub fn on_cpu(&self) -> bool {
        S::resident().lock().holds(self.key())
    }

    /// The copy kept here, current only while [`Switched::on_cpu`] is false.
    pub fn saved(&self) -> &S {
        // SAFETY: the state is valid for this vCPU's lifetime; it is written only through
        // `S::save` from another vCPU's `load`, which cannot run while this borrow of its
        // owner lasts (one CPU, and the core holds at most one vCPU at a time).
        unsafe { self.state.as_ref() }
    }

    fn key(&self) -> usize {
        self.state.as_ptr() as usize
    }
}

impl<S: OnCpu> Drop for Switched<S> {
    fn drop(&mut self) {
        // Nobody may save into this state once it is freed.
        S::resident().lock().forget(self.key());
        // SAFETY: `state` came from `Box::leak` in `new` and is freed only here.
        drop(unsafe { Box::from_raw(self.state.as_ptr()) });
    }
}
