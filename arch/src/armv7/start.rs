//! Boot: `_start` as QEMU or U-Boot's `bootz` (a zImage header) enters it, then the Rust half.
//!
//! Entry state (Linux's ARM boot protocol, which QEMU follows for a raw `-kernel` image):
//! r0 = 0, r1 = machine type, r2 = physical address of the device tree, MMU and caches off,
//! and with `virtualization=on` the CPU is in HYP mode.

use super::console::{self, Console};
use super::dt::{self, GicVersion, Platform};
use super::{mmu, smp, sysreg, vectors, vfp};
use crate::ExitStatus;
use crate::arm::uart::{Uart, UartKind};
use crate::boot::{BootInfo, Region};
use core::fmt::Write;
use dtoolkit::fdt::Fdt;

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .arm
    .global _start
_start:
    @ A zImage header (Linux's arch/arm/boot/compressed/head.S layout, which U-Boot's
    @ `bootz` checks): nine words of code, the magic at 0x24, then the image's link
    @ address and end (.bss and boot stack included) at 0x28 and 0x2c. The image is not
    @ position-independent: a loader must put it at the start address.
    .rept 8
    mov r0, r0
    .endr
    b 1f
    .word 0x016f2818            @ 0x24: zImage magic
    .word __image_start         @ 0x28: where the image must be loaded and entered
    .word __image_end           @ 0x2c: its end, .bss and boot stack included
    .word 0x04030201            @ 0x30: little-endian
1:  cpsid aif
    mov r4, r2                  @ device tree address, kept across the .bss loop
    ldr sp, =__stack_top
    ldr r0, =__bss_start
    ldr r1, =__bss_end
    mov r2, #0
1:  cmp r0, r1
    strlo r2, [r0], #4
    blo 1b
    mov r0, r4
    bl {main}
2:  wfi
    b 2b
    "#,
    main = sym boot_main,
);

/// Where the console is when the device tree does not say (QEMU `virt`'s PL011).
const FALLBACK_UART: u64 = 0x0900_0000;
/// RAM assumed when there is no usable device tree (QEMU `virt`'s base, its smallest size).
const FALLBACK_RAM: Region = Region { start: 0x4000_0000, size: 128 << 20 };
/// CPSR.M for HYP mode.
const MODE_HYP: u32 = 0x1a;

unsafe extern "Rust" {
    fn hv_main(boot: &BootInfo) -> !;
}

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The Rust half of boot, on the boot stack with `.bss` cleared.
extern "C" fn boot_main(dtb: usize) -> ! {
    let tree = device_tree(dtb);
    let mut boot = BootInfo { privilege: "HYP", cpu_count: 1, ..BootInfo::default() };
    let tree_region = tree.map(|t| Region { start: dtb as u64, size: t.data().len() as u64 });
    let platform = match (tree, tree_region) {
        (Some(t), Some(region)) => dt::discover(t, region, &mut boot),
        _ => Platform::default(),
    };
    start_console(platform.uart);
    report(&platform, &boot);
    require_hyp_mode();
    vectors::install();
    vfp::init();
    boot.features = features(platform);
    if boot.ram_count == 0 {
        console::console_write(b"xhv: no memory in the device tree (r2); assuming QEMU virt's\n");
        boot.add_ram(FALLBACK_RAM);
    }
    boot.dtb = tree_region;
    reserve_boot_regions(&mut boot, tree_region);
    keep_below_4g(&mut boot);
    super::record_ram(boot.ram());
    mmu::enable(boot.ram());
    super::gic::init(&platform);
    smp::init_boot_cpu(&platform);
    smp::start_secondaries(&platform);
    // SAFETY: `hv_main` is the core's entry point, defined with this exact signature in the
    // hypervisor binary; the CPU is in HYP mode with vectors, stack and console ready.
    unsafe { hv_main(&boot) }
}

/// The flattened device tree at `dtb`, if there is a valid one.
fn device_tree(dtb: usize) -> Option<Fdt<'static>> {
    if dtb == 0 || !dtb.is_multiple_of(4) {
        return None;
    }
    // SAFETY: the bootloader passes the physical address of the tree in r2, and nothing
    // writes to it afterwards (it is reserved below). With the MMU off every physical address
    // is accessible: the 8-byte header start, then `totalsize` bytes once the magic matched.
    let blob = unsafe {
        let header = core::slice::from_raw_parts(dtb as *const u8, 8);
        if header[..4] != 0xd00d_feedu32.to_be_bytes() {
            return None;
        }
        let total = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        core::slice::from_raw_parts(dtb as *const u8, total)
    };
    crate::fdtcheck::open(blob).ok()
}

/// The device tree's console, or (no usable tree) QEMU virt's PL011.
fn start_console(uart: Option<Uart>) {
    console::init(Some(uart.unwrap_or(Uart { kind: UartKind::Pl011, base: FALLBACK_UART })));
}

/// What the device tree told us, before the core's banner (the GIC follows once set up).
fn report(p: &Platform, boot: &BootInfo) {
    match p.uart {
        Some(u) => {
            let _ = writeln!(Console, "(XEN) console: {} UART at {:#x}", u.kind.name(), u.base);
        }
        None => {
            let _ = writeln!(Console, "(XEN) console: none in the device tree; QEMU virt's PL011 assumed");
        }
    }
    if let Some([sec, phys, virt, hyp]) = p.timer_intids {
        let _ = writeln!(
            Console,
            "(XEN) timer: {} kHz; INTIDs secure {sec}, physical {phys}, virtual {virt}, hypervisor {hyp}",
            sysreg::cntfrq() / 1000
        );
    }
    let _ = writeln!(Console, "(XEN) CPUs: {} in the device tree", boot.cpu_count);
    for r in boot.ram() {
        let _ = writeln!(Console, "(XEN) memory: {:#x}-{:#x} ({} MiB)", r.start, r.end(), r.size >> 20);
    }
}

/// The hypervisor needs HYP mode; anything else means the machine was started without the
/// Virtualization Extensions enabled (QEMU: `-machine virt,virtualization=on`).
fn require_hyp_mode() {
    let mode = sysreg::cpsr() & 0x1f;
    if mode != MODE_HYP {
        let _ = writeln!(
            Console,
            "xhv: entered in mode {mode:#x}, not HYP (0x1a): the CPU has no virtualization enabled \
             (QEMU: -machine virt,virtualization=on)"
        );
        super::exit_emulator(ExitStatus::Failure);
    }
}

fn features(platform: Platform) -> &'static str {
    match platform.gic {
        Some((GicVersion::V2, _)) => "LPAE stage-2, GICv2",
        Some((GicVersion::V3, _)) => "LPAE stage-2, GICv3",
        None => "LPAE stage-2, no GIC found",
    }
}

/// The hypervisor image (with .bss and boot stack) and the device tree are not free RAM.
fn reserve_boot_regions(boot: &mut BootInfo, tree: Option<Region>) {
    let start = (&raw const __image_start) as u64;
    let end = (&raw const __image_end) as u64;
    boot.add_reserved(Region { start, size: end - start });
    if let Some(tree) = tree {
        boot.add_reserved(tree);
        warn_modules_over_tree(boot, tree);
    }
}

/// A boot module placed where the loader also put the device tree was overwritten by it
/// (QEMU puts a 32-bit kernel's tree at RAM + min(RAM / 2, 128 MiB)): say so, or the only
/// symptom is a guest image that is "not recognised".
fn warn_modules_over_tree(boot: &BootInfo, tree: Region) {
    for m in boot.modules() {
        if m.region.start < tree.end() && tree.start < m.region.end() {
            let _ = writeln!(
                Console,
                "xhv: boot module at {:#x} overlaps the device tree at {:#x}-{:#x}; one overwrote the other, load the module elsewhere",
                m.region.start,
                tree.start,
                tree.end()
            );
        }
    }
}

/// Drop RAM above 4 GiB: without a mapping of its own the hypervisor cannot reach it.
fn keep_below_4g(boot: &mut BootInfo) {
    let (ram, count) = (boot.ram, boot.ram_count);
    boot.ram_count = 0;
    for r in &ram[..count] {
        let end = r.end().min(dt::ADDRESS_LIMIT);
        if r.start < end {
            boot.add_ram(Region { start: r.start, size: end - r.start });
        }
    }
}
