//! AArch64 at EL2 (non-VHE): boot from an arm64 `Image`, hardware from the device tree,
//! guests at EL1 under stage-2 translation.
//!
//! - [`entry`]: Image header, `_start`, the boot CPU's path to `hv_main`;
//! - [`dt`]: RAM, console, GIC, timer, CPUs, PSCI and boot modules from the DTB;
//! - [`gic`]: the physical GICv3 at EL2 and the virtual CPU interface's registers;
//! - [`mmu`]: EL2 identity map and cache maintenance (zeroing guest RAM with DC ZVA);
//! - [`mem`]: a faster `memcpy` than compiler-builtins' portable one;
//! - [`smp`]: secondary CPUs via PSCI CPU_ON, each CPU's number, kicks between CPUs;
//! - [`time`]: the platform clock in nanoseconds, idling until a deadline;
//! - [`vectors`]: EL2 exception vectors, guest entry and exit;
//! - [`vcpu`]: [`Vcpu`] and the [`DomainSpace`] its domain's vCPUs share: stage-2, exit
//!   decoding, vGIC and virtual timer, guest memory access.

mod console;
mod dt;
mod entry;
mod gic;
mod mem;
mod mmu;
mod smp;
mod time;
mod vcpu;
mod vectors;

pub use crate::arm::smp::cpu_affinity;
pub use dt::MAX_CPUS;
pub use smp::{cpu_ready, kick, this_cpu};
pub use time::{idle_until, now_ns};
pub use vcpu::{DomainSpace, Vcpu};

/// The virtual GIC guests get (and their device tree describes): the host's own kind.
pub fn guest_gic() -> crate::arm::vgic::GicVersion {
    gic::guest_version()
}

use crate::ExitStatus;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use dt::{Conduit, Platform};
use qemu_exit::QEMUExit;

pub const ARCH_NAME: &str = "aarch64";
/// Guest RAM starts at 1 GiB, as in Xen's ARM guest memory map.
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;

/// The machine as discovered at boot; set once, before the core runs.
static PLATFORM: spin::Once<Platform> = spin::Once::new();

/// Write to the physical console (the DT's PL011).
pub fn console_write(bytes: &[u8]) {
    console::write(bytes);
}

/// Stop QEMU through semihosting SYS_EXIT (status 0 or 1). Should semihosting be missing,
/// the HLT traps, the EL2 exception handler panics and we come back here: then power off
/// through PSCI instead and leave the verdict to the console.
pub fn exit_emulator(status: ExitStatus) -> ! {
    static EXITING: AtomicBool = AtomicBool::new(false);
    // Load and store, not swap: this may run with the MMU off, where exclusives are unsafe.
    if !EXITING.load(Ordering::Relaxed) {
        EXITING.store(true, Ordering::Relaxed);
        let qemu = qemu_exit::AArch64::new();
        match status {
            ExitStatus::Success => qemu.exit_success(),
            ExitStatus::Failure => qemu.exit_failure(),
        }
    }
    if PLATFORM.get().and_then(|p| p.psci) == Some(Conduit::Smc) {
        let _ = smccc::psci::system_off::<smccc::Smc>();
    }
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Physical memory `[addr, addr + size)`, identity-mapped. Panics unless it lies in RAM:
/// anything else is device memory, which must not be read as a byte slice.
pub fn phys_slice(addr: u64, size: u64) -> &'static [u8] {
    assert!(is_ram(addr, size), "phys_slice({:#x}, {:#x}) is not RAM", addr, size);
    // SAFETY: the range is RAM, identity-mapped as normal memory for the hypervisor's whole
    // life; the core decides who owns which frames (this is its window on them).
    unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) }
}

/// Mutable [`phys_slice`]; the caller owns those frames (domain RAM it allocated).
pub fn phys_slice_mut(addr: u64, size: u64) -> &'static mut [u8] {
    assert!(is_ram(addr, size), "phys_slice_mut({:#x}, {:#x}) is not RAM", addr, size);
    // SAFETY: as `phys_slice`; exclusivity is the caller's: the core only asks for frames
    // it allocated (domain RAM) and holds no other reference to them.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, size as usize) }
}

/// Zero RAM the caller owns (a new domain's) and leave the zeros in memory, not in the
/// caches: a guest that starts with its MMU off (non-cacheable) reads zeros too, never the
/// frames' earlier contents. DC ZVA where the CPU allows it (DCZID_EL0), a few instructions
/// per cache line. Panics unless the range is RAM.
pub fn zero_phys(addr: u64, size: u64) {
    assert!(is_ram(addr, size), "zero_phys({:#x}, {:#x}) is not RAM", addr, size);
    mmu::zero_to_poc(addr, size);
}

/// Write back (to the point of coherency) and invalidate what the hypervisor wrote into
/// `[addr, addr + size)` of a guest's RAM through its cacheable map, so that a guest
/// starting with its MMU off finds it in memory. Needed only for the ranges written after
/// [`zero_phys`] (the kernel, initrd and device tree a builder placed), not for the rest.
pub fn flush_phys(addr: u64, size: u64) {
    assert!(is_ram(addr, size), "flush_phys({:#x}, {:#x}) is not RAM", addr, size);
    mmu::clean_invalidate_dcache(addr, size);
}

/// `[addr, addr + size)` lies inside one RAM range of the device tree.
fn is_ram(addr: u64, size: u64) -> bool {
    let Some(end) = addr.checked_add(size) else {
        return false;
    };
    PLATFORM.get().is_some_and(|p| p.ram().iter().any(|r| r.start <= addr && end <= r.end()))
}

/// A static the boot CPU fills before any other CPU runs and that is read-only afterwards
/// (or handed to the hardware / assembly by address).
pub(crate) struct BootCell<T>(UnsafeCell<T>);

// SAFETY: written only by the boot CPU during single-threaded boot (see `get_mut`).
unsafe impl<T> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// # Safety
    /// Only during single-threaded boot, with no other reference to the value alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self) -> &mut T {
        // SAFETY: the caller guarantees exclusive access.
        unsafe { &mut *self.0.get() }
    }

    /// Shared access once boot has finished writing.
    ///
    /// # Safety
    /// No `get_mut` reference may be alive.
    pub unsafe fn get(&self) -> &T {
        // SAFETY: the caller guarantees no mutable reference exists.
        unsafe { &*self.0.get() }
    }
}
