//! Logic the ARM backends (aarch64 and ARMv7) share, free of registers and instructions so
//! it builds and is unit-tested on any host: long-descriptor tables, stage-2, PSCI,
//! exception syndromes, the virtual GICv3, the ARMv7 VFP switch.

pub mod counter;
pub mod gicv2;
pub mod hwdt;
pub mod lpae;
pub mod psci;
pub mod smp;
pub mod stage2;
pub mod syndrome;
pub mod uart;
pub mod vfp;
pub mod vgic;
