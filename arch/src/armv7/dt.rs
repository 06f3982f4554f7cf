//! Hardware discovery from the flattened device tree the loader passed in r2: the reading is
//! [`crate::arm::hwdt`]'s (shared with aarch64, host-tested); this keeps what HYP-mode boot
//! uses of it.

use crate::arm::hwdt::{self, Gic};
use crate::arm::uart::Uart;
use crate::boot::{BootInfo, Region};
use dtoolkit::fdt::Fdt;

/// The hypervisor reaches physical memory through a 32-bit identity map.
pub const ADDRESS_LIMIT: u64 = 1 << 32;

/// Which generation of GIC the tree describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

/// What the rest of boot needs besides [`BootInfo`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Platform {
    /// The console UART.
    pub uart: Option<Uart>,
    /// The interrupt controller and its first `reg` entry (distributor).
    pub gic: Option<(GicVersion, u64)>,
    /// A GICv2's first four `reg` entries: distributor, CPU interface, GICH, GICV (0 if
    /// absent), and its maintenance interrupt as an INTID.
    pub gicv2_regs: [u64; 4],
    pub maintenance: u32,
    /// Timer INTIDs: secure physical, non-secure physical, virtual, hypervisor.
    pub timer_intids: Option<[u32; 4]>,
    /// The CPUs (MPIDRs, enable methods) and the PSCI conduit: the shared reader's record.
    pub cpus: hwdt::Platform,
}

/// Read the tree (at `region`) and fill `boot` with RAM, reservations, modules and CPUs.
pub fn discover(fdt: Fdt, region: Region, boot: &mut BootInfo) -> Platform {
    let p = hwdt::discover(fdt, region, boot);
    let mut out =
        Platform { uart: p.uart, maintenance: 25, timer_intids: p.timer_intids, cpus: p, ..Platform::default() };
    match p.gic {
        Gic::V2 { dist, cpu, hyp, vcpu, maintenance, .. } => {
            out.gic = Some((GicVersion::V2, dist));
            out.gicv2_regs = [dist, cpu, hyp, vcpu];
            out.maintenance = maintenance;
        }
        Gic::V3 { dist, .. } => out.gic = Some((GicVersion::V3, dist)),
        Gic::None => {}
    }
    out
}
