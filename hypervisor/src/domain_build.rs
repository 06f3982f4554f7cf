//! Filling a new ARM domain's RAM: kernel, initrd and device tree, placed where Linux's boot
//! protocols want them, from a [`DomainConfig`] and the images the bootloader left in memory.
//!
//! Works on a byte slice that stands for guest RAM (zeroed by the caller), so the placement
//! rules are tested on the host. The layout, from the bottom of RAM:
//!
//! - the kernel where its loader puts it (arm64 `Image`: 2 MiB aligned, per its header);
//! - free RAM;
//! - the initrd, 2 MiB aligned, right below the device tree's slot;
//! - the device tree in the top 2 MiB, 8-byte aligned and never crossing a 2 MiB boundary
//!   (arm64 booting.rst: at most 2 MiB, mapped cacheable in 2 MiB blocks).

use core::fmt;

use crate::bootcfg::DomainConfig;
use crate::guest_dt::{self, GicVersion, GuestArch, GuestDtConfig, GuestDtError};
use crate::loader::{self, LoadError, Placed};

/// Where the device tree and the initrd are aligned to.
const BLOCK: u64 = 2 << 20;
/// The largest device tree the boot protocol accepts.
pub const DT_MAX: u64 = 2 << 20;

/// What the domain's first vCPU needs to start, in guest-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub entry: u64,
    /// The device tree's address: x0 on arm64, r2 on ARMv7.
    pub dtb: u64,
    pub dtb_size: u64,
    /// The initrd's first byte and one past its last.
    pub initrd: Option<(u64, u64)>,
    /// One past the last byte the kernel image claims.
    pub kernel_end: u64,
}

impl Layout {
    /// Every guest-physical range `(start, end)` that [`build_arm`] may have written (kernel,
    /// initrd, device tree); the rest of RAM is as the caller zeroed it. What a guest that
    /// starts with its caches off needs written back from the hypervisor's caches.
    pub fn written(&self) -> impl Iterator<Item = (u64, u64)> + use<> {
        [Some((self.entry, self.kernel_end)), self.initrd, Some((self.dtb, self.dtb + self.dtb_size))]
            .into_iter()
            .flatten()
    }
}

/// Why a domain could not be built. Each names what the configuration got wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    Kernel(LoadError),
    /// RAM too small for the kernel plus the device tree's 2 MiB slot.
    NoRoomForDt {
        ram: u64,
    },
    /// The initrd does not fit between the kernel and the device tree.
    NoRoomForInitrd {
        initrd: u64,
        free: u64,
    },
    Dt(GuestDtError),
    /// The generated tree is larger than the boot protocol allows (cannot happen for the
    /// trees `guest_dt` makes, but is checked rather than assumed).
    DtTooLarge(u64),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Kernel(LoadError::UnknownFormat) => f.write_str("kernel image format not recognised"),
            BuildError::Kernel(LoadError::TooLarge) => f.write_str("kernel image does not fit the domain's RAM"),
            BuildError::Kernel(LoadError::Malformed) => f.write_str("kernel image is malformed"),
            BuildError::NoRoomForDt { ram } => {
                write!(f, "{} KiB of RAM leave no room for the device tree after the kernel", ram >> 10)
            }
            BuildError::NoRoomForInitrd { initrd, free } => write!(
                f,
                "initrd of {} KiB does not fit the {} KiB between kernel and device tree (give it more memory)",
                initrd >> 10,
                free >> 10
            ),
            BuildError::Dt(e) => write!(f, "device tree: {e}"),
            BuildError::DtTooLarge(n) => write!(f, "device tree of {n} bytes exceeds 2 MiB"),
        }
    }
}

/// Place `kernel` (and `initrd`) in `ram`, which the guest sees at `ram_guest`, generate the
/// device tree for `cfg` and put it at the top. `ram` must be zeroed already.
pub fn build_arm(
    cfg: &DomainConfig,
    arch: GuestArch,
    gic: GicVersion,
    ram_guest: u64,
    ram: &mut [u8],
    kernel: &[u8],
    initrd: Option<&[u8]>,
) -> Result<Layout, BuildError> {
    let ram_size = ram.len() as u64;
    let placed: Placed = match arch {
        GuestArch::Arm64 => loader::arm::load_arm64_image(kernel, ram),
        GuestArch::Arm32 => loader::arm::load_arm_zimage(kernel, ram),
    }
    .map_err(BuildError::Kernel)?;
    // The device tree's slot: the last 2 MiB block of RAM, above everything else.
    let dt_off = (ram_size & !(BLOCK - 1)).checked_sub(BLOCK).filter(|&o| o >= placed.end_offset);
    let dt_off = dt_off.ok_or(BuildError::NoRoomForDt { ram: ram_size })?;

    let initrd_range = match initrd {
        None => None,
        Some(bytes) => {
            let len = bytes.len() as u64;
            let free = dt_off - placed.end_offset;
            let start = dt_off.checked_sub(len).map(|s| s & !(BLOCK - 1)).filter(|&s| s >= placed.end_offset);
            let start = start.ok_or(BuildError::NoRoomForInitrd { initrd: len, free })?;
            ram[start as usize..(start + len) as usize].copy_from_slice(bytes);
            Some((ram_guest + start, ram_guest + start + len))
        }
    };

    let dt = guest_dt::build(&GuestDtConfig {
        arch,
        gic,
        ram_base: ram_guest,
        ram_size,
        cpus: cfg.cpus,
        vpl011: cfg.vpl011,
        bootargs: cfg.bootargs.as_deref(),
        initrd: initrd_range,
    })
    .map_err(BuildError::Dt)?;
    let dt_len = dt.len() as u64;
    if dt_len > DT_MAX {
        return Err(BuildError::DtTooLarge(dt_len));
    }
    ram[dt_off as usize..(dt_off + dt_len) as usize].copy_from_slice(&dt);

    Ok(Layout {
        entry: ram_guest + placed.entry_offset,
        dtb: ram_guest + dt_off,
        dtb_size: dt_len,
        initrd: initrd_range,
        kernel_end: ram_guest + placed.end_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootcfg::ModuleRef;
    use dtoolkit::fdt::Fdt;
    use dtoolkit::{Node, Property};

    const MIB: u64 = 1 << 20;
    const BASE: u64 = 0x4000_0000;

    /// An arm64 `Image` header with text_offset 0 and the given image_size.
    fn image(len: usize, image_size: u64) -> Vec<u8> {
        let mut img = vec![0u8; len];
        img[16..24].copy_from_slice(&image_size.to_le_bytes());
        img[0x38..0x3c].copy_from_slice(b"ARM\x64");
        img[64] = 0x5a;
        img
    }

    fn config(memory_mib: u64) -> DomainConfig {
        DomainConfig {
            name: "domU1".into(),
            cpus: 2,
            memory_kib: memory_mib << 10,
            vpl011: true,
            kernel: Some(ModuleRef { addr: 0x4a00_0000, size: 0x1000 }),
            ramdisk: None,
            dtb: None,
            bootargs: Some("console=ttyAMA0".into()),
        }
    }

    #[test]
    fn linux_layout_kernel_low_initrd_and_dt_high() {
        let cfg = config(64);
        let mut ram = vec![0u8; (64 * MIB) as usize];
        let kernel = image(0x3000, 30 * MIB);
        let initrd = vec![0xa5u8; 3 * MIB as usize + 5];
        let l = build_arm(&cfg, GuestArch::Arm64, GicVersion::V3, BASE, &mut ram, &kernel, Some(&initrd)).unwrap();
        assert_eq!(l.entry, BASE + 2 * MIB);
        assert_eq!(l.kernel_end, BASE + 32 * MIB);
        assert_eq!(ram[(2 * MIB) as usize + 64], 0x5a);
        // DT in the last 2 MiB block, 8-byte aligned, not crossing it.
        assert_eq!(l.dtb, BASE + 62 * MIB);
        assert!(l.dtb.is_multiple_of(8) && (l.dtb % BLOCK) + l.dtb_size <= BLOCK);
        // initrd 2 MiB aligned, right below, above the kernel.
        let (start, end) = l.initrd.unwrap();
        assert_eq!((start, end), (BASE + 58 * MIB, BASE + 58 * MIB + initrd.len() as u64));
        assert!(end <= l.dtb && start >= l.kernel_end);
        assert_eq!(&ram[(58 * MIB) as usize..][..initrd.len()], &initrd[..]);

        // The tree in RAM is the one for this domain.
        let at = (l.dtb - BASE) as usize;
        let fdt = Fdt::new(&ram[at..at + l.dtb_size as usize]).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        let start_prop = chosen.property("linux,initrd-start").unwrap().value().to_vec();
        assert_eq!(start_prop, (BASE + 58 * MIB).to_be_bytes());
        assert_eq!(chosen.property("bootargs").unwrap().value(), b"console=ttyAMA0\0");
        assert!(fdt.find_node("/cpus/cpu@1").is_some());
        assert!(fdt.find_node("/sbsa-uart@22000000").is_some());
        assert_only_written(&ram, &l);
    }

    /// Every byte the builder changed lies in `Layout::written()` (which the ARM backend
    /// writes back from its caches for guests that start with theirs off).
    fn assert_only_written(ram: &[u8], l: &Layout) {
        let ranges: Vec<(u64, u64)> = l.written().collect();
        for (i, &b) in ram.iter().enumerate() {
            let gpa = BASE + i as u64;
            if b != 0 {
                assert!(ranges.iter().any(|&(s, e)| (s..e).contains(&gpa)), "byte at {gpa:#x} outside {ranges:x?}");
            }
        }
    }

    #[test]
    fn without_initrd_the_tree_says_nothing_of_one() {
        let mut ram = vec![0u8; (16 * MIB) as usize];
        let l =
            build_arm(&config(16), GuestArch::Arm64, GicVersion::V3, BASE, &mut ram, &image(0x100, 0), None).unwrap();
        assert_eq!(l.initrd, None);
        let at = (l.dtb - BASE) as usize;
        let fdt = Fdt::new(&ram[at..at + l.dtb_size as usize]).unwrap();
        assert!(fdt.find_node("/chosen").unwrap().property("linux,initrd-start").is_none());
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let cfg = config(64);
        let mut ram = vec![0u8; (64 * MIB) as usize];
        // A kernel reaching into the DT's slot.
        let err = build_arm(&cfg, GuestArch::Arm64, GicVersion::V3, BASE, &mut ram, &image(0x100, 61 * MIB), None)
            .unwrap_err();
        assert_eq!(err, BuildError::NoRoomForDt { ram: 64 * MIB });
        // A kernel larger than RAM.
        let err = build_arm(&cfg, GuestArch::Arm64, GicVersion::V3, BASE, &mut ram, &image(0x100, 80 * MIB), None)
            .unwrap_err();
        assert_eq!(err, BuildError::Kernel(LoadError::TooLarge));
        // An initrd too big for the gap.
        // (30 MiB fits exactly; one byte more does not.)
        let initrd = vec![0u8; (30 * MIB + 1) as usize];
        assert!(
            build_arm(
                &cfg,
                GuestArch::Arm64,
                GicVersion::V3,
                BASE,
                &mut ram,
                &image(0x100, 30 * MIB),
                Some(&initrd[1..])
            )
            .is_ok()
        );
        let err =
            build_arm(&cfg, GuestArch::Arm64, GicVersion::V3, BASE, &mut ram, &image(0x100, 30 * MIB), Some(&initrd))
                .unwrap_err();
        assert_eq!(err, BuildError::NoRoomForInitrd { initrd: 30 * MIB + 1, free: 30 * MIB });
        assert!(err.to_string().contains("initrd of 30720 KiB does not fit the 30720 KiB"), "{err}");
        // Not a kernel at all.
        let err = build_arm(&cfg, GuestArch::Arm64, GicVersion::V3, BASE, &mut ram, &[0u8; 256], None).unwrap_err();
        assert_eq!(err, BuildError::Kernel(LoadError::UnknownFormat));
        // RAM smaller than one 2 MiB block.
        let mut tiny = vec![0u8; MIB as usize];
        let err = build_arm(&cfg, GuestArch::Arm32, GicVersion::V2, BASE, &mut tiny, &zimage(), None).unwrap_err();
        assert_eq!(err, BuildError::NoRoomForDt { ram: MIB });
        // More vCPUs than a tree describes.
        let err = build_arm(
            &DomainConfig { cpus: 64, ..cfg },
            GuestArch::Arm64,
            GicVersion::V3,
            BASE,
            &mut ram,
            &image(0x100, 0),
            None,
        )
        .unwrap_err();
        assert_eq!(err, BuildError::Dt(GuestDtError::BadCpuCount(64)));
    }

    fn zimage() -> Vec<u8> {
        let mut img = vec![0u8; 0x100];
        img[0x24..0x28].copy_from_slice(&0x016F_2818u32.to_le_bytes());
        img
    }

    #[test]
    fn arm32_zimage_gets_a_gicv2_tree() {
        let mut ram = vec![0u8; (32 * MIB) as usize];
        let l = build_arm(&config(32), GuestArch::Arm32, GicVersion::V2, BASE, &mut ram, &zimage(), None).unwrap();
        assert_eq!(l.entry, BASE + 0x8000);
        let at = (l.dtb - BASE) as usize;
        let fdt = Fdt::new(&ram[at..at + l.dtb_size as usize]).unwrap();
        let gic = fdt.find_node("/interrupt-controller@3001000").unwrap();
        assert_eq!(gic.property("compatible").unwrap().value(), b"arm,gic-400\0arm,cortex-a15-gic\0");
        assert_only_written(&ram, &l);
    }
}
