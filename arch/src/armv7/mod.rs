//! ARMv7-A with the Virtualization Extensions (Cortex-A15/A7): the hypervisor runs in HYP mode.
//!
//! - [`start`]: `_start`, the HYP check, stack and `.bss`, then hardware discovery from the
//!   device tree ([`dt`]), the HYP stage-1 MMU ([`mmu`]) and the call into the core.
//! - [`vectors`]: the HYP vector table and the world switch to and from a guest.
//! - [`vcpu`]: [`Vcpu`], its LPAE stage-2 tables and the decoding of HYP traps.
//! - [`vfp`] and [`cp15`]: each vCPU's VFP/Advanced SIMD registers and CP15 context, moved
//!   only when the vCPU on the CPU changes ([`switched`]).
//! - [`smp`]: secondary CPUs via PSCI CPU_ON, each CPU's number, kicks between CPUs.
//! - [`console`] (PL011) and [`semihosting`] (ending QEMU with a status).

mod console;
mod cp15;
mod dt;
mod gic;
mod mmu;
mod semihosting;
mod smp;
mod start;
mod switched;
mod sysreg;
mod time;
mod vcpu;
mod vectors;
mod vfp;

use crate::ExitStatus;
use crate::boot::{MAX_REGIONS, Region};

pub use crate::arm::hwdt::MAX_CPUS;
pub use crate::arm::smp::cpu_affinity;
pub use console::console_write;
pub use smp::{cpu_ready, kick, this_cpu};
pub use time::{idle_until, now_ns};
pub use vcpu::Vcpu;

/// The virtual GIC guests get (and their device tree describes): a GICv2.
pub fn guest_gic() -> crate::arm::vgic::GicVersion {
    crate::arm::vgic::GicVersion::V2
}

pub const ARCH_NAME: &str = "armv7";

/// Where a domain's RAM starts in its guest-physical space (Xen's ARM guest memory map).
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;

/// End QEMU (`-semihosting`) with a success or failure exit code.
pub fn exit_emulator(status: ExitStatus) -> ! {
    semihosting::exit(status == ExitStatus::Success)
}

/// Host RAM as the device tree describes it (the part below 4 GiB), recorded once at boot.
static HOST_RAM: spin::Mutex<([Region; MAX_REGIONS], usize)> =
    spin::Mutex::new(([Region { start: 0, size: 0 }; MAX_REGIONS], 0));

/// Remember the host's RAM ranges, for [`is_ram`]. Called once, at boot.
fn record_ram(ram: &[Region]) {
    let mut recorded = HOST_RAM.lock();
    let count = ram.len().min(MAX_REGIONS);
    recorded.0[..count].copy_from_slice(&ram[..count]);
    recorded.1 = count;
}

/// `[addr, addr + size)` lies inside one RAM range of the device tree.
fn is_ram(addr: u64, size: u64) -> bool {
    let Some(end) = addr.checked_add(size) else {
        return false;
    };
    let recorded = HOST_RAM.lock();
    recorded.0[..recorded.1].iter().any(|r| r.start <= addr && r.start.checked_add(r.size).is_some_and(|e| end <= e))
}

/// The physical range `addr..addr + size` as a 32-bit host range, if it is one.
///
/// The hypervisor identity-maps the low 4 GiB (see [`mmu`]); LPAE physical addresses above
/// that exist but are not reachable without a mapping of their own.
fn host_range(addr: u64, size: u64) -> Option<(usize, usize)> {
    let end = addr.checked_add(size)?;
    if end > 1 << 32 {
        return None;
    }
    Some((usize::try_from(addr).ok()?, usize::try_from(size).ok()?))
}

/// The hypervisor's window on physical memory: `size` bytes at physical `addr`.
///
/// The core only passes RAM it got from [`crate::boot::BootInfo`] (boot modules, frames it
/// allocated), which the boot code checked lies below 4 GiB. Anything else is a core bug.
pub fn phys_slice(addr: u64, size: u64) -> &'static [u8] {
    let Some((start, len)) = host_range(addr, size) else {
        panic!("physical range {addr:#x}+{size:#x} is outside the hypervisor's 32-bit window");
    };
    // SAFETY: the low 4 GiB are identity-mapped for the whole life of the hypervisor, and the
    // core only asks for RAM described by BootInfo (modules it reads, frames it owns).
    unsafe { core::slice::from_raw_parts(start as *const u8, len) }
}

/// Mutable counterpart of [`phys_slice`], for frames the core allocated.
pub fn phys_slice_mut(addr: u64, size: u64) -> &'static mut [u8] {
    let Some((start, len)) = host_range(addr, size) else {
        panic!("physical range {addr:#x}+{size:#x} is outside the hypervisor's 32-bit window");
    };
    // SAFETY: as in `phys_slice`; the core hands out each frame it allocated exactly once,
    // so no other reference to this memory exists.
    unsafe { core::slice::from_raw_parts_mut(start as *mut u8, len) }
}

/// Zero RAM the caller owns (a new domain's) and leave the zeros in memory, not only in the
/// caches: a guest starting with its MMU off reads memory directly.
pub fn zero_phys(addr: u64, size: u64) {
    zero_bulk(phys_slice_mut(addr, size));
    time::clean_invalidate_dcache(addr, size);
}

/// Zero `buf` 64 bytes per loop turn (two stores of eight registers), its unaligned ends a
/// byte at a time. compiler_builtins' memclr stores one word per turn: a new domain's 512
/// MiB took 400 million instructions that way, most of a Linux domain's build time.
fn zero_bulk(buf: &mut [u8]) {
    let head = buf.as_ptr().align_offset(8).min(buf.len());
    let (head, rest) = buf.split_at_mut(head);
    head.fill(0);
    let bulk = rest.len() & !63;
    let (body, tail) = rest.split_at_mut(bulk);
    tail.fill(0);
    if body.is_empty() {
        return;
    }
    let range = body.as_mut_ptr_range();
    // SAFETY: the stores cover exactly `body` (a non-empty multiple of 64 bytes, word
    // aligned), which this function borrows mutably; every register the loop changes is
    // declared (the eight zeroed ones as clobbers, the pointer as inout), no stack is used.
    unsafe {
        core::arch::asm!(
            "mov r2, #0", "mov r3, #0", "mov r4, #0", "mov r5, #0",
            "mov r8, #0", "mov r10, #0", "mov r12, #0", "mov lr, #0",
            "2:",
            "stm {p}!, {{r2, r3, r4, r5, r8, r10, r12, lr}}",
            "stm {p}!, {{r2, r3, r4, r5, r8, r10, r12, lr}}",
            "cmp {p}, {end}",
            "blo 2b",
            p = inout(reg) range.start => _,
            end = in(reg) range.end,
            out("r2") _, out("r3") _, out("r4") _, out("r5") _,
            out("r8") _, out("r10") _, out("r12") _, out("lr") _,
            options(nostack),
        );
    }
}

/// Write back (to the point of coherency) what the hypervisor wrote into `[addr, addr +
/// size)` of a guest's RAM, for a guest that starts with its MMU and caches off (the zImage
/// decompressor does, and reads its image and device tree that way).
pub fn flush_phys(addr: u64, size: u64) {
    assert!(is_ram(addr, size), "flush_phys({:#x}, {:#x}) is not RAM", addr, size);
    time::clean_invalidate_dcache(addr, size);
}
