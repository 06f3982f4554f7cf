//! Board profiles: QEMU's models of real ARM boards, booted from the board's own device tree
//! as Debian ships it (unedited; xtask adds only the `/chosen` domain nodes), the way the
//! hypervisor would be brought up on the hardware.
//!
//! QEMU's `guest-loader` edits only the DTB QEMU generates itself, which `-dtb` replaces, so
//! on these boards every module is placed with `-device loader` at an address in the board's
//! RAM, clear of where QEMU puts the hypervisor (RAM + 0x80000) and the DTB (RAM + 128 MiB).

use crate::arch::Arch;
use anyhow::{Context, Result};
use clap::ValueEnum;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Board {
    /// Raspberry Pi 4 Model B: GIC-400, BCM2835 mini UART console, spin-table CPUs, RAM at 0.
    Raspi4b,
    /// Xilinx ZynqMP ZCU102: GIC-400 with 64 KiB-aliased GICC, Cadence UART, PSCI, RAM at 0.
    #[value(name = "xlnx-zcu102")]
    XlnxZcu102,
    /// ARM Versatile Express with a Cortex-A15 tile: GICv2, PL011 behind three buses, RAM at
    /// 0x8000_0000 (ARMv7, HYP mode).
    #[value(name = "vexpress-a15")]
    VexpressA15,
    /// NXP i.MX7 Dual SABRE: GICv2, i.MX UART, RAM at 0x8000_0000 (ARMv7, HYP mode).
    #[value(name = "mcimx7d-sabre")]
    McImx7dSabre,
}

/// What QEMU and xtask need to know about one board.
pub struct Profile {
    pub arch: Arch,
    pub qemu: &'static str,
    /// `-machine` (with the options that enter the hypervisor at EL2).
    pub machine: &'static str,
    /// `-m`: the board's RAM (raspi4b accepts only its own 2 GiB).
    pub memory: &'static str,
    /// `-smp`: the board's CPUs.
    pub cpus: u32,
    /// `-serial` arguments, so that the UART the DT's `stdout-path` names is on stdio.
    pub serial: &'static [&'static str],
    /// Debian's kernel metapackage whose package carries the board DTB, and its path under
    /// `/usr/lib/linux-image-<version>/`.
    pub dtb_package: &'static str,
    pub dtb_path: &'static str,
    /// Where the first module goes: RAM base + 160 MiB, above QEMU's DTB.
    pub module_base: u64,
    /// ARMv7: where the image must be linked (RAM base + 0x10000, where QEMU loads a raw
    /// image); `None` where the image relocates itself (aarch64) or virt's default fits.
    pub link_base: Option<u64>,
    /// The board's RAM as QEMU models it (`-m`, within what its DT describes), base and size:
    /// where `cargo xtask uboot` places the images a board's U-Boot loads.
    pub ram: (u64, u64),
}

impl Board {
    pub fn name(self) -> &'static str {
        match self {
            Board::Raspi4b => "raspi4b",
            Board::XlnxZcu102 => "xlnx-zcu102",
            Board::VexpressA15 => "vexpress-a15",
            Board::McImx7dSabre => "mcimx7d-sabre",
        }
    }

    pub fn profile(self) -> Profile {
        match self {
            // QEMU starts the Cortex-A72s at EL2 (no EL3); its first -serial is the PL011
            // (serial0), its second the mini UART, which the DT's stdout-path (serial1) names.
            Board::Raspi4b => Profile {
                arch: Arch::Aarch64,
                qemu: "qemu-system-aarch64",
                machine: "raspi4b",
                memory: "2G",
                cpus: 4,
                serial: &["-serial", "null", "-serial", "mon:stdio"],
                dtb_package: "linux-image-arm64:arm64",
                dtb_path: "broadcom/bcm2711-rpi-4-b.dtb",
                module_base: 0x0A00_0000,
                link_base: None,
                ram: (0, 0x3c00_0000),
            },
            // EL2 only with virtualization=on; secure=off leaves no EL3 (QEMU answers PSCI SMCs).
            Board::XlnxZcu102 => Profile {
                arch: Arch::Aarch64,
                qemu: "qemu-system-aarch64",
                machine: "xlnx-zcu102,virtualization=on,secure=off",
                memory: "2G",
                cpus: 4,
                serial: &["-serial", "mon:stdio"],
                dtb_package: "linux-image-arm64:arm64",
                dtb_path: "xilinx/zynqmp-zcu102-rev1.0.dtb",
                module_base: 0x0A00_0000,
                link_base: None,
                ram: (0, 0x8000_0000),
            },
            // HYP only without the secure world.
            Board::VexpressA15 => Profile {
                arch: Arch::Armv7,
                qemu: "qemu-system-arm",
                machine: "vexpress-a15,secure=off,virtualization=on",
                memory: "1G",
                cpus: 1,
                serial: &["-serial", "mon:stdio"],
                dtb_package: "linux-image-armmp-lpae:armhf",
                dtb_path: "vexpress-v2p-ca15-tc1.dtb",
                module_base: 0x8A00_0000,
                link_base: Some(0x8001_0000),
                ram: (0x8000_0000, 1 << 30),
            },
            Board::McImx7dSabre => Profile {
                arch: Arch::Armv7,
                qemu: "qemu-system-arm",
                machine: "mcimx7d-sabre",
                memory: "1G",
                cpus: 2,
                serial: &["-serial", "mon:stdio"],
                dtb_package: "linux-image-armmp-lpae:armhf",
                dtb_path: "imx7d-sdb.dtb",
                module_base: 0x8A00_0000,
                link_base: Some(0x8001_0000),
                ram: (0x8000_0000, 1 << 30),
            },
        }
    }

    /// The board's DTB from Debian's kernel package (fetched and unpacked once).
    pub fn dtb(self) -> Result<PathBuf> {
        let p = self.profile();
        let root = crate::images::kernel_package_root(p.arch, p.dtb_package)?;
        let lib = root.join("usr/lib");
        let dir = std::fs::read_dir(&lib)
            .with_context(|| format!("reading {}", lib.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("linux-image-")))
            .with_context(|| format!("no linux-image-* under {}", lib.display()))?;
        let dtb = dir.join(p.dtb_path);
        anyhow::ensure!(dtb.exists(), "{} has no {}", p.dtb_package, p.dtb_path);
        Ok(dtb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_go_above_qemus_dtb_and_below_the_boards_ram_end() {
        for (b, ram) in [
            (Board::Raspi4b, 0),
            (Board::XlnxZcu102, 0),
            (Board::VexpressA15, 0x8000_0000),
            (Board::McImx7dSabre, 0x8000_0000),
        ] {
            let p = b.profile();
            // QEMU's DTB for a raw image: RAM + min(RAM / 2, 128 MiB).
            assert!(p.module_base >= ram + 0x0800_0000 + (2 << 20), "{}", b.name());
            // raspi4b's DT describes 960 MiB of RAM at 0; a kernel and initrd fit well below.
            assert!(p.module_base + (256 << 20) < ram + 0x3c00_0000, "{}", b.name());
            assert!(p.machine.starts_with(b.name()), "{}", b.name());
            // ARMv7 images are linked where QEMU loads them.
            assert_eq!(p.link_base, (p.arch == Arch::Armv7).then_some(ram + 0x1_0000), "{}", b.name());
        }
    }
}
