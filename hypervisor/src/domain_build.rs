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
/// The first 128 MiB of RAM, where a 32-bit zImage must lie (and above which its device tree
/// and initrd go).
const ZIMAGE_WINDOW: u64 = 128 << 20;
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

/// The arm64 layout: the device tree in the last 2 MiB block of RAM, above everything else,
/// and the initrd 2 MiB aligned right below it, both above the kernel's `kernel_end`.
/// Returns their offsets into RAM.
fn modules_at_top(ram_size: u64, kernel_end: u64, initrd_len: u64) -> Result<(u64, Option<u64>), BuildError> {
    let dt_off = (ram_size & !(BLOCK - 1)).checked_sub(BLOCK).filter(|&o| o >= kernel_end);
    let dt_off = dt_off.ok_or(BuildError::NoRoomForDt { ram: ram_size })?;
    if initrd_len == 0 {
        return Ok((dt_off, None));
    }
    let free = dt_off - kernel_end;
    let start = dt_off.checked_sub(initrd_len).map(|s| s & !(BLOCK - 1)).filter(|&s| s >= kernel_end);
    let start = start.ok_or(BuildError::NoRoomForInitrd { initrd: initrd_len, free })?;
    Ok((dt_off, Some(start)))
}

/// The 32-bit layout (Linux's arch/arm booting.rst). The zImage finds the start of RAM by
/// rounding its own address down to 128 MiB, so it lies in the first 128 MiB: as high there
/// as it fits (2 MiB aligned, with room for the decompressor's bss, stack and heap after it),
/// above the kernel it decompresses at RAM + text offset, so that it need not move itself
/// first. The device tree goes in the 2 MiB block at 128 MiB and the initrd in the blocks
/// after it, clear of the decompressor and inside the kernel's low-memory mapping; with less
/// RAM than that, both go to the top of RAM and the zImage right below them. Returns the
/// zImage as placed and the tree's and the initrd's offsets into RAM.
fn place_arm32(
    ram: &mut [u8],
    ram_guest: u64,
    kernel: &[u8],
    initrd_len: u64,
) -> Result<(Placed, u64, Option<u64>), BuildError> {
    use loader::arm::{ARM_TEXT_OFFSET, ZIMAGE_SLACK, load_arm_zimage, zimage_info};
    let ram_size = ram.len() as u64;
    let info = zimage_info(kernel).map_err(BuildError::Kernel)?;
    let too_large = BuildError::Kernel(LoadError::TooLarge);
    let mods = BLOCK + initrd_len.next_multiple_of(BLOCK);
    let mod_base = if ram_size >= ZIMAGE_WINDOW + mods {
        ZIMAGE_WINDOW
    } else {
        (ram_size & !(BLOCK - 1)).checked_sub(mods).ok_or(BuildError::NoRoomForDt { ram: ram_size })?
    };
    let need = info.len.checked_add(ZIMAGE_SLACK).ok_or(too_large.clone())?;
    let (offset, kernel_end) = if info.link_addr != 0 {
        // Linked to run at one address: it goes there or nowhere, and runs where it lies
        // (the header's end covers what it uses) unless its table says otherwise.
        let offset = u64::from(info.link_addr).checked_sub(ram_guest).ok_or(too_large.clone())?;
        (offset, info.kernel_end.unwrap_or(0))
    } else {
        let offset = mod_base.checked_sub(need).map(|o| o & !(BLOCK - 1)).ok_or(too_large.clone())?;
        // A Linux zImage without the table (before 4.15): assume the usual compression ratio
        // of at most 4.
        (offset, info.kernel_end.unwrap_or(ARM_TEXT_OFFSET + 4 * info.len))
    };
    // What the guest's boot writes before it has read the tree and the initrd: the zImage and
    // its slack, the decompressed kernel, and, when the zImage lies inside that kernel's
    // area, the copy of itself the decompressor first moves past it.
    let relocated = if offset < kernel_end { need } else { 0 };
    let busy_end = (offset + need).max(kernel_end + relocated);
    if busy_end > mod_base {
        let free = mod_base.saturating_sub(offset + need);
        return Err(if initrd_len == 0 || kernel_end + relocated > mod_base + BLOCK {
            BuildError::NoRoomForDt { ram: ram_size }
        } else {
            BuildError::NoRoomForInitrd { initrd: initrd_len, free }
        });
    }
    let placed = load_arm_zimage(kernel, ram, offset).map_err(BuildError::Kernel)?;
    Ok((placed, mod_base, (initrd_len != 0).then_some(mod_base + BLOCK)))
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
    let initrd_len = initrd.map_or(0, |b| b.len() as u64);
    let (placed, dt_off, initrd_off) = match arch {
        GuestArch::Arm64 => {
            let placed = loader::arm::load_arm64_image(kernel, ram).map_err(BuildError::Kernel)?;
            let (dt_off, initrd_off) = modules_at_top(ram_size, placed.end_offset, initrd_len)?;
            (placed, dt_off, initrd_off)
        }
        GuestArch::Arm32 => place_arm32(ram, ram_guest, kernel, initrd_len)?,
    };
    let initrd_range = match (initrd, initrd_off) {
        (Some(bytes), Some(start)) => {
            ram[start as usize..(start + initrd_len) as usize].copy_from_slice(bytes);
            Some((ram_guest + start, ram_guest + start + initrd_len))
        }
        _ => None,
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

    /// A zImage of `len` bytes whose table says the kernel decompresses to `size` bytes
    /// (plus 384 KiB of bss) at text offset 0x208000, as Debian's armmp-lpae does.
    fn zimage_with(len: u32, size: u32) -> Vec<u8> {
        let mut img = vec![0u8; len as usize];
        let mut put = |at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(0x24, 0x016F_2818);
        put(0x2c, len);
        put(0x30, 0x4545_4545);
        put(0x34, 0x40);
        for (i, w) in [6, 0x5A53_4C4B, 0x60, 0x6_0000, 0x20_8000, 0x1_0000].into_iter().enumerate() {
            put(0x40 + 4 * i, w);
        }
        put(0x60, size);
        img
    }

    fn zimage() -> Vec<u8> {
        zimage_with(0x100, 0x10_0000)
    }

    #[test]
    fn arm32_zimage_gets_a_gicv2_tree() {
        let mut ram = vec![0u8; (32 * MIB) as usize];
        let l = build_arm(&config(32), GuestArch::Arm32, GicVersion::V2, BASE, &mut ram, &zimage(), None).unwrap();
        // Less than 128 MiB + the tree's block: the tree at the top, the zImage below it.
        assert_eq!(l.dtb, BASE + 30 * MIB);
        assert_eq!(l.entry, BASE + 28 * MIB);
        let at = (l.dtb - BASE) as usize;
        let fdt = Fdt::new(&ram[at..at + l.dtb_size as usize]).unwrap();
        let gic = fdt.find_node("/interrupt-controller@3001000").unwrap();
        assert_eq!(gic.property("compatible").unwrap().value(), b"arm,gic-400\0arm,cortex-a15-gic\0");
        assert_only_written(&ram, &l);
    }

    #[test]
    fn arm32_zimage_below_128mib_tree_and_initrd_above() {
        let mut ram = vec![0u8; (512 * MIB) as usize];
        // Debian's armmp-lpae: a 5.3 MiB zImage decompressing to 21.6 MiB.
        let kernel = zimage_with(0x54_a200, 0x15a_52d0);
        let initrd = vec![0x5au8; 3 * MIB as usize + 7];
        let l =
            build_arm(&config(512), GuestArch::Arm32, GicVersion::V2, BASE, &mut ram, &kernel, Some(&initrd)).unwrap();
        // 2 MiB aligned, with 1 MiB of slack before 128 MiB, above the decompressed kernel.
        assert_eq!(l.entry, BASE + 120 * MIB);
        assert_eq!(l.kernel_end, BASE + 120 * MIB + 0x54_a200);
        assert_eq!(&ram[(120 * MIB) as usize..][..0x30], &kernel[..0x30]);
        assert_eq!(l.dtb, BASE + 128 * MIB);
        assert_eq!(l.initrd, Some((BASE + 130 * MIB, BASE + 130 * MIB + initrd.len() as u64)));
        assert_eq!(&ram[(130 * MIB) as usize..][..initrd.len()], &initrd[..]);
        assert_only_written(&ram, &l);

        // 48 MiB: the tree and initrd at the top, the zImage below them, all above the
        // decompressed kernel's 22 MiB.
        let mut ram = vec![0u8; (48 * MIB) as usize];
        let l =
            build_arm(&config(48), GuestArch::Arm32, GicVersion::V2, BASE, &mut ram, &kernel, Some(&initrd)).unwrap();
        assert_eq!(l.dtb, BASE + 42 * MIB);
        assert_eq!(l.initrd.unwrap().0, BASE + 44 * MIB);
        assert_eq!(l.entry, BASE + 34 * MIB);
        assert_only_written(&ram, &l);

        // 32 MiB: the zImage would lie inside the kernel's area and move itself over the tree.
        let mut ram = vec![0u8; (32 * MIB) as usize];
        let err = build_arm(&config(32), GuestArch::Arm32, GicVersion::V2, BASE, &mut ram, &kernel, Some(&initrd))
            .unwrap_err();
        assert_eq!(err, BuildError::NoRoomForDt { ram: 32 * MIB });
        // Our test guests: linked at RAM + 32 KiB, the header's end covering their bss, in a
        // 16 MiB domain.
        let mut small = zimage_with(0x3000, 0);
        small[0x28..0x2c].copy_from_slice(&0x4000_8000u32.to_le_bytes());
        small[0x2c..0x30].copy_from_slice(&0x4009_1000u32.to_le_bytes());
        small[0x30..0x34].fill(0);
        let mut ram = vec![0u8; (16 * MIB) as usize];
        let l = build_arm(&config(16), GuestArch::Arm32, GicVersion::V2, BASE, &mut ram, &small, None).unwrap();
        assert_eq!((l.entry, l.kernel_end, l.dtb), (BASE + 0x8000, BASE + 0x9_1000, BASE + 14 * MIB));
        assert_only_written(&ram, &l);
        // Hostile headers are refused, never followed.
        let mut linked = kernel.clone();
        linked[0x28..0x2c].copy_from_slice(&0x3000_0000u32.to_le_bytes());
        linked[0x2c..0x30].copy_from_slice(&0x3054_a200u32.to_le_bytes());
        let mut ram = vec![0u8; (512 * MIB) as usize];
        let err = build_arm(&config(512), GuestArch::Arm32, GicVersion::V2, BASE, &mut ram, &linked, None).unwrap_err();
        assert_eq!(err, BuildError::Kernel(LoadError::TooLarge));
        let mut huge = kernel.clone();
        huge[0x2c..0x30].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = build_arm(&config(512), GuestArch::Arm32, GicVersion::V2, BASE, &mut ram, &huge, None).unwrap_err();
        assert_eq!(err, BuildError::Kernel(LoadError::TooLarge));
    }
}
