//! Building an x86 PVH domain's RAM: the kernel (bzImage or PVH ELF), the initrd, the
//! command line, `hvm_start_info` with its module list and memory map, and the ACPI tables.
//!
//! Works on a byte slice that stands for guest RAM from guest-physical 0 (zeroed by the
//! caller), so the layout is host-tested. From the bottom:
//!
//! - `0..0xA0000`: RAM (Linux keeps its real-mode trampoline there);
//! - `0xA0000..0x100000`: reserved; [`INFO_BASE`] holds start info, memory map and command
//!   line, [`ACPI_BASE`] the ACPI tables;
//! - `0x100000..`: RAM; the kernel at its ELF physical addresses (16 MiB for Linux);
//! - the initrd at the top of RAM, page aligned.
//!
//! Above RAM, the PV console ring page at [`CONSOLE_RING_GPA`] (reserved in the map).

use crate::acpi;
use crate::loader::{LoadError, bzimage, pvh_elf};
use core::mem::{offset_of, size_of};
use guest_abi::shared_info::VcpuTimeInfo;
use guest_abi::start_info as si;

/// Start info, module list, memory map and command line.
pub const INFO_BASE: u64 = 0xf_0000;
const MODLIST: u64 = INFO_BASE + 0x40;
const MEMMAP: u64 = INFO_BASE + 0x80;
const MEMMAP_MAX: usize = 8;
const CMDLINE: u64 = INFO_BASE + 0x1000;
/// The longest command line kept (Linux's COMMAND_LINE_SIZE on x86 is 2048).
pub const CMDLINE_MAX: usize = 2047;
/// The ACPI tables (RSDP first).
pub const ACPI_BASE: u64 = INFO_BASE + 0x2000;
const LOW_RAM_END: u64 = 0xa_0000;
const HIGH_RAM_START: u64 = 0x10_0000;
/// The PV console ring: a reserved page below 4 GiB, outside RAM.
pub const CONSOLE_RING_GPA: u64 = 0xfeff_f000;
const PAGE: u64 = 4096;

/// What the first vCPU needs to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhLayout {
    pub entry: u64,
    /// `%ebx`: the `hvm_start_info`.
    pub start_info: u64,
    pub kernel_end: u64,
    pub initrd: Option<(u64, u64)>,
    /// A 32-bit kernel: its vCPUs start with the local APIC in xAPIC mode.
    pub kernel_32bit: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    Kernel(LoadError),
    /// The decompressed kernel, the loaded kernel and the initrd do not fit together.
    NoRoom,
}

impl core::fmt::Display for PvhError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PvhError::Kernel(LoadError::UnknownFormat) => f.write_str("kernel image format not recognised"),
            PvhError::Kernel(LoadError::TooLarge) => f.write_str("kernel image does not fit the domain's RAM"),
            PvhError::Kernel(LoadError::Malformed) => f.write_str("kernel image is malformed"),
            PvhError::NoRoom => f.write_str("kernel and initrd do not fit the domain's RAM together"),
        }
    }
}

/// Load `kernel` into `ram` (guest-physical 0..): a bzImage is decompressed into the top of
/// RAM first (the decoder's dictionary or window below it), then loaded as the PVH ELF it
/// contains (ELF64 or ELF32); the scratch space is zeroed again.
fn load_kernel(kernel: &[u8], ram: &mut [u8]) -> Result<crate::loader::Placed, PvhError> {
    if !bzimage::is_bzimage(kernel) {
        return pvh_elf::load_pvh_elf(kernel, ram, 0).map_err(PvhError::Kernel);
    }
    let payload = bzimage::payload(kernel).map_err(PvhError::Kernel)?;
    let size = bzimage::uncompressed_size(payload).map_err(PvhError::Kernel)?;
    let scratch = (ram.len() as u64).checked_sub(size as u64).ok_or(PvhError::NoRoom)? & !(PAGE - 1);
    let (low, high) = ram.split_at_mut(scratch as usize);
    let below = low.len().checked_sub(bzimage::scratch_size(payload).map_err(PvhError::Kernel)?);
    let work = &mut low[below.ok_or(PvhError::NoRoom)?..];
    let n = bzimage::decompress(payload, high, work).map_err(PvhError::Kernel)?;
    work.fill(0);
    let placed = pvh_elf::load_pvh_elf(&high[..n], low, 0).map_err(|e| match e {
        LoadError::TooLarge => PvhError::NoRoom,
        e => PvhError::Kernel(e),
    })?;
    high.fill(0);
    Ok(placed)
}

fn put(ram: &mut [u8], gpa: u64, bytes: &[u8]) {
    ram[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
}

/// Build the domain: kernel, initrd, command line, start info, ACPI for `vcpus` vCPUs.
pub fn build(
    ram: &mut [u8],
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    vcpus: u32,
) -> Result<PvhLayout, PvhError> {
    let ram_size = ram.len() as u64;
    if ram_size < 2 * HIGH_RAM_START {
        return Err(PvhError::NoRoom);
    }
    let placed = load_kernel(kernel, ram)?;
    if placed.end_offset > ram_size || placed.end_offset.max(HIGH_RAM_START) < HIGH_RAM_START {
        return Err(PvhError::NoRoom);
    }
    let initrd_range = match initrd {
        None => None,
        Some(bytes) => {
            let len = bytes.len() as u64;
            let start = ram_size.checked_sub(len).ok_or(PvhError::NoRoom)? & !(PAGE - 1);
            if start < placed.end_offset.max(HIGH_RAM_START) {
                return Err(PvhError::NoRoom);
            }
            put(ram, start, bytes);
            Some((start, start + len))
        }
    };

    let cmd = &cmdline.as_bytes()[..cmdline.len().min(CMDLINE_MAX)];
    put(ram, CMDLINE, cmd);
    ram[(CMDLINE as usize) + cmd.len()] = 0;

    let tables = acpi::build(ACPI_BASE, vcpus, placed.elf32);
    put(ram, ACPI_BASE, &tables.bytes);

    let memmap = [
        (0, LOW_RAM_END, si::XEN_HVM_MEMMAP_TYPE_RAM),
        (LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, si::XEN_HVM_MEMMAP_TYPE_RESERVED),
        (HIGH_RAM_START, ram_size - HIGH_RAM_START, si::XEN_HVM_MEMMAP_TYPE_RAM),
        (CONSOLE_RING_GPA, PAGE, si::XEN_HVM_MEMMAP_TYPE_RESERVED),
    ];
    const _: () = assert!(4 <= MEMMAP_MAX);
    for (i, (addr, size, ty)) in memmap.iter().enumerate() {
        let e = si::HvmMemmapTableEntry { addr: *addr, size: *size, r#type: *ty, reserved: 0 };
        put(ram, MEMMAP + (i * size_of::<si::HvmMemmapTableEntry>()) as u64, &memmap_bytes(&e));
    }
    let mut nr_modules = 0;
    if let Some((start, end)) = initrd_range {
        let mut m = [0u8; size_of::<si::HvmModlistEntry>()];
        m[offset_of!(si::HvmModlistEntry, paddr)..][..8].copy_from_slice(&start.to_le_bytes());
        m[offset_of!(si::HvmModlistEntry, size)..][..8].copy_from_slice(&(end - start).to_le_bytes());
        put(ram, MODLIST, &m);
        nr_modules = 1;
    }
    let info = si::HvmStartInfo {
        magic: si::XEN_HVM_START_MAGIC_VALUE,
        version: si::HVM_START_INFO_VERSION,
        flags: 0,
        nr_modules,
        modlist_paddr: if nr_modules > 0 { MODLIST } else { 0 },
        cmdline_paddr: CMDLINE,
        rsdp_paddr: tables.rsdp,
        memmap_paddr: MEMMAP,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    put(ram, INFO_BASE, &start_info_bytes(&info));
    Ok(PvhLayout {
        entry: placed.entry_offset,
        start_info: INFO_BASE,
        kernel_end: placed.end_offset,
        initrd: initrd_range,
        kernel_32bit: placed.elf32,
    })
}

fn start_info_bytes(i: &si::HvmStartInfo) -> [u8; size_of::<si::HvmStartInfo>()] {
    let mut b = [0u8; size_of::<si::HvmStartInfo>()];
    let mut w32 = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    w32(offset_of!(si::HvmStartInfo, magic), i.magic);
    w32(offset_of!(si::HvmStartInfo, version), i.version);
    w32(offset_of!(si::HvmStartInfo, flags), i.flags);
    w32(offset_of!(si::HvmStartInfo, nr_modules), i.nr_modules);
    w32(offset_of!(si::HvmStartInfo, memmap_entries), i.memmap_entries);
    let mut w64 = |off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    w64(offset_of!(si::HvmStartInfo, modlist_paddr), i.modlist_paddr);
    w64(offset_of!(si::HvmStartInfo, cmdline_paddr), i.cmdline_paddr);
    w64(offset_of!(si::HvmStartInfo, rsdp_paddr), i.rsdp_paddr);
    w64(offset_of!(si::HvmStartInfo, memmap_paddr), i.memmap_paddr);
    b
}

fn memmap_bytes(e: &si::HvmMemmapTableEntry) -> [u8; size_of::<si::HvmMemmapTableEntry>()] {
    let mut b = [0u8; size_of::<si::HvmMemmapTableEntry>()];
    b[offset_of!(si::HvmMemmapTableEntry, addr)..][..8].copy_from_slice(&e.addr.to_le_bytes());
    b[offset_of!(si::HvmMemmapTableEntry, size)..][..8].copy_from_slice(&e.size.to_le_bytes());
    b[offset_of!(si::HvmMemmapTableEntry, r#type)..][..4].copy_from_slice(&e.r#type.to_le_bytes());
    b
}

/// RAM for a domain built from this kernel: Linux (a bzImage) gets 512 MiB, the small PVH
/// test guests 64 MiB.
pub fn memory_kib(kernel: &[u8]) -> u64 {
    if bzimage::is_bzimage(kernel) { 512 << 10 } else { 64 << 10 }
}

/// Fill the `vcpu_time_info` of the first `vcpus` slots of the shared info page: Xen system
/// time is the platform clock, 0 at TSC value `tsc_zero`, counting at `tsc_hz`.
pub fn init_time(shared: &mut crate::page::HostPage, vcpus: usize, tsc_hz: u64, tsc_zero: u64) {
    let t = time_info_bytes(tsc_hz, tsc_zero);
    for v in 0..vcpus.min(guest_abi::shared_info::x86::XEN_LEGACY_MAX_VCPUS) {
        let at = time_info_offset(v);
        shared.data[at..at + t.len()].copy_from_slice(&t);
    }
}

/// `tsc_to_system_mul` and `tsc_shift` for a TSC running at `tsc_hz`: ns = ((ticks << shift)
/// * mul) >> 32, with `mul` normalised into [2^31, 2^32) so no precision is lost.
pub fn pvclock_scale(tsc_hz: u64) -> (u32, i8) {
    const NS: u64 = 1_000_000_000;
    let tsc_hz = tsc_hz.max(1);
    let mut shift: i8 = 0;
    // We want mul = NS * 2^32 / (tsc_hz * 2^shift) in [2^31, 2^32).
    let mut num = NS as u128;
    let mut den = tsc_hz as u128;
    while num >= den {
        den <<= 1;
        shift += 1;
    }
    while num < den / 2 {
        num <<= 1;
        shift -= 1;
    }
    ((((num) << 32) / den) as u32, shift)
}

/// The `vcpu_time_info` bytes for system time 0 at TSC value `tsc_zero`.
pub fn time_info_bytes(tsc_hz: u64, tsc_zero: u64) -> [u8; size_of::<VcpuTimeInfo>()] {
    let (mul, shift) = pvclock_scale(tsc_hz);
    let mut b = [0u8; size_of::<VcpuTimeInfo>()];
    // version 2: even (no update in progress) and nonzero.
    b[offset_of!(VcpuTimeInfo, version)..][..4].copy_from_slice(&2u32.to_le_bytes());
    b[offset_of!(VcpuTimeInfo, tsc_timestamp)..][..8].copy_from_slice(&tsc_zero.to_le_bytes());
    b[offset_of!(VcpuTimeInfo, tsc_to_system_mul)..][..4].copy_from_slice(&mul.to_le_bytes());
    b[offset_of!(VcpuTimeInfo, tsc_shift)] = shift as u8;
    b[offset_of!(VcpuTimeInfo, flags)] = guest_abi::shared_info::XEN_PVCLOCK_TSC_STABLE_BIT;
    b
}

/// Offset of `vcpu_info[n].time` in the x86 shared info page.
pub fn time_info_offset(vcpu: usize) -> usize {
    use guest_abi::shared_info::x86;
    offset_of!(x86::SharedInfo, vcpu_info) + vcpu * size_of::<x86::VcpuInfo>() + offset_of!(x86::VcpuInfo, time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_abi::shared_info::scale_delta;

    const MIB: usize = 1 << 20;

    fn u32_at(b: &[u8], at: u64) -> u32 {
        u32::from_le_bytes(b[at as usize..at as usize + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: u64) -> u64 {
        u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
    }

    /// A minimal ELF64 PVH kernel: one PT_LOAD at 16 MiB, a PHYS32_ENTRY note.
    fn elf_kernel() -> Vec<u8> {
        let mut e = vec![0u8; 0x200];
        e[0..4].copy_from_slice(b"\x7fELF");
        e[4] = 2; // 64-bit
        e[5] = 1; // little endian
        e[6] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        e[20..24].copy_from_slice(&1u32.to_le_bytes());
        e[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        e[52..54].copy_from_slice(&64u16.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&2u16.to_le_bytes());
        // PT_LOAD: file 0x180..0x200 at 16 MiB, memsz 0x1000.
        let ph = |e: &mut Vec<u8>, at: usize, ty: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| {
            e[at..at + 4].copy_from_slice(&ty.to_le_bytes());
            e[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            e[at + 24..at + 32].copy_from_slice(&paddr.to_le_bytes());
            e[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            e[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        };
        ph(&mut e, 64, 1, 0x180, 0x100_0000, 0x80, 0x1000);
        ph(&mut e, 120, 4, 0x140, 0, 0x18, 0x18);
        // Note: "Xen", type 18, 4-byte desc = 0x1000040.
        e[0x140..0x144].copy_from_slice(&4u32.to_le_bytes());
        e[0x144..0x148].copy_from_slice(&4u32.to_le_bytes());
        e[0x148..0x14c].copy_from_slice(&18u32.to_le_bytes());
        e[0x14c..0x150].copy_from_slice(b"Xen\0");
        e[0x150..0x154].copy_from_slice(&0x100_0040u32.to_le_bytes());
        e[0x180..0x200].fill(0x90);
        e
    }

    #[test]
    fn start_info_memmap_cmdline_initrd_and_acpi_are_where_linux_looks() {
        let mut r = vec![0u8; 32 * MIB];
        let initrd = vec![0xa5u8; 3 * MIB + 7];
        let l = build(&mut r, &elf_kernel(), Some(&initrd), "console=hvc0 quiet", 1).unwrap();
        let ram = &r[..];
        assert_eq!(l.entry, 0x100_0040);
        assert_eq!(l.start_info, INFO_BASE);
        assert_eq!(ram[0x100_0000], 0x90);
        assert_eq!(u32_at(ram, INFO_BASE), si::XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(u32_at(ram, INFO_BASE + 4), 1);
        assert_eq!(u32_at(ram, INFO_BASE + 12), 1, "one module");
        // Command line, NUL terminated.
        let cmd = u64_at(ram, INFO_BASE + 24);
        assert_eq!(&ram[cmd as usize..cmd as usize + 19], b"console=hvc0 quiet\0");
        // The initrd as module 0, page aligned at the top of RAM.
        let m = u64_at(ram, INFO_BASE + 16);
        let (start, size) = (u64_at(ram, m), u64_at(ram, m + 8));
        assert_eq!(size, initrd.len() as u64);
        assert_eq!(start % 4096, 0);
        assert!(start + size <= 32 * MIB as u64 && start + size > 32 * MIB as u64 - 4096);
        assert_eq!(&ram[start as usize..(start + size) as usize], &initrd[..]);
        // RSDP where the start info says.
        let rsdp = u64_at(ram, INFO_BASE + 32);
        assert_eq!(&ram[rsdp as usize..rsdp as usize + 8], b"RSD PTR ");
        // Memory map: RAM below 640 KiB, a hole, RAM from 1 MiB to the end, the console page.
        let (mm, n) = (u64_at(ram, INFO_BASE + 40), u32_at(ram, INFO_BASE + 48));
        let entries: Vec<(u64, u64, u32)> = (0..n as u64)
            .map(|i| (u64_at(ram, mm + 24 * i), u64_at(ram, mm + 24 * i + 8), u32_at(ram, mm + 24 * i + 16)))
            .collect();
        assert_eq!(
            entries,
            [(0, 0xa0000, 1), (0xa0000, 0x60000, 2), (0x100000, 31 * MIB as u64, 1), (CONSOLE_RING_GPA, 4096, 2)]
        );
        // The start info, its tables and the ACPI tables sit in the reserved hole.
        assert!((0xa0000..0x100000).contains(&rsdp) && mm >= 0xa0000 && cmd < 0x100000);
    }

    #[test]
    fn kernel_and_initrd_must_fit() {
        let mut r = vec![0u8; 32 * MIB];
        let initrd = vec![1u8; 16 * MIB];
        assert_eq!(build(&mut r, &elf_kernel(), Some(&initrd), "", 1), Err(PvhError::NoRoom));
        assert_eq!(build(&mut r, &[0u8; 64], None, "", 1), Err(PvhError::Kernel(LoadError::UnknownFormat)));
    }

    #[test]
    fn pvclock_scale_converts_ticks_to_nanoseconds() {
        for hz in [1_000_000_000u64, 2_994_000_000, 3_600_123_456, 100_000_000, 1_193_182] {
            let (mul, shift) = pvclock_scale(hz);
            assert!(mul >= 1 << 31, "{hz}: mul normalised");
            // One second of ticks is one second, within 1 ppm.
            let ns = scale_delta(hz, mul, shift);
            assert!(ns.abs_diff(1_000_000_000) <= 1_000, "{hz}: {ns}");
            // And an hour, without overflow.
            let ns = scale_delta(hz * 3600, mul, shift);
            assert!(ns.abs_diff(3_600_000_000_000) <= 3_600_000, "{hz}: {ns}");
        }
        let b = time_info_bytes(2_000_000_000, 12345);
        assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()) % 2, 0);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 12345);
        assert_ne!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 0);
        assert_eq!(time_info_offset(0), 32);
        assert_eq!(time_info_offset(1), 64 + 32);
    }

    #[test]
    fn bzimage_kernels_are_decompressed_and_loaded() {
        let elf = elf_kernel();
        let mut payload = 0x184c_2102u32.to_le_bytes().to_vec();
        let c = lz4_flex::block::compress(&elf);
        payload.extend_from_slice(&(c.len() as u32).to_le_bytes());
        payload.extend_from_slice(&c);
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let mut img = vec![0u8; 3 * 512];
        img[0x1f1] = 2;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(&payload);
        let mut r = vec![0u8; 32 * MIB];
        let l = build(&mut r, &img, None, "x", 1).unwrap();
        assert_eq!(l.entry, 0x100_0040);
        assert_eq!(r[0x100_0000], 0x90);
        // The scratch copy at the top of RAM is gone.
        assert!(r[16 * MIB + 0x1000..].iter().all(|&b| b == 0));
    }
}
