//! Hardware discovery from the flattened device tree the boot loader passed in x0: the
//! blob is checked here, the reading itself is [`crate::arm::hwdt`]'s (host-tested).
//!
//! Runs on the boot CPU with the MMU still off (the identity map is built from what is found
//! here), so it only reads the blob and fills plain structures: no locks, no allocation.

pub use crate::arm::hwdt::{Conduit, EnableMethod, Gic, MAX_CPUS, Platform};
use crate::boot::{BootInfo, Region};

/// Parse the DTB at `dtb`, fill `boot` (RAM, reserved ranges, modules, CPU count) and return
/// the rest. Fails only when the blob itself is unusable.
pub fn discover(dtb: u64, boot: &mut BootInfo) -> Result<Platform, &'static str> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return Err("no device tree: x0 at entry is not an 8-byte aligned address");
    }
    // SAFETY: the arm64 boot protocol has the loader place a DTB at x0 and leave it intact:
    // its 40-byte header is readable there, and `totalsize` bytes from it once the magic
    // matched. The blob stays in place for the hypervisor's lifetime (`discover` reserves it)
    // and nothing writes to it.
    let blob = unsafe {
        let header = core::slice::from_raw_parts(dtb as *const u8, 8);
        if header[..4] != 0xd00d_feedu32.to_be_bytes() {
            return Err("x0 does not point at a device tree (bad magic)");
        }
        let total = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        core::slice::from_raw_parts(dtb as *const u8, total)
    };
    let fdt = crate::fdtcheck::open(blob).map_err(|_| "x0 does not point at a valid device tree")?;
    let region = Region { start: dtb, size: blob.len() as u64 };
    Ok(crate::arm::hwdt::discover(fdt, region, boot))
}
