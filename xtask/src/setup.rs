//! `cargo xtask setup`: everything at once (every emulator, GRUB, the Rust targets, every
//! guest kernel), for those who want the machine ready before the first `run` or `test`.
//! Those two check and install what they themselves need (`prereq`), so this is optional.

use crate::arch::Arch;
use crate::images;
use crate::prereq::{self, Needs};
use anyhow::Result;

pub fn run() -> Result<i32> {
    println!("[1/2] Rust targets and components, emulators, firmware, GRUB, apt architectures");
    prereq::ensure(&Needs::everything())?;
    println!("[2/2] guest kernels and initramfs from Debian's archive");
    for arch in Arch::ALL {
        for series in images::KernelSeries::ALL {
            let guest = images::linux_guest_series(arch, series)?;
            println!("    {}{}: {}", arch.name(), series.suffix(), guest.kernel.display());
        }
    }
    println!("setup complete");
    Ok(0)
}
