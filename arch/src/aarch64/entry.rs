//! Boot: the arm64 `Image` header, `_start`, and the boot CPU's way from reset state to the
//! core's `hv_main` (device tree, MMU, secondary CPUs).

use super::console::{self, early_log};
use super::dt::{self, EnableMethod, Gic, Platform};
use super::{PLATFORM, gic, mmu, smp};
use crate::ExitStatus;
use crate::boot::{BootInfo, ModuleKind, Region};

unsafe extern "Rust" {
    /// The core's entry, defined by the hypervisor binary.
    fn hv_main(boot: &BootInfo) -> !;
}

/// Where the image is linked (hypervisor/link/aarch64.ld asserts the same); it runs
/// wherever it is loaded, after `_start` relocates it. Its low 16 bits must be zero.
const LINK_BASE: u64 = 0x4008_0000;

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

// The header follows Linux's Documentation/arch/arm64/booting.rst layout: code0 branches to
// the real entry, text_offset 0x80000 (the image relocates itself, see below),
// image_size covers .bss and the boot stack, flags = little-endian, 4 KiB pages, 2 MiB-aligned
// base anywhere in RAM (bit 3: U-Boot's `booti` then runs it where it was loaded instead of
// moving it to RAM base + text_offset); magic "ARM\x64" at 0x38.
//
// `primary_entry` runs with the MMU and caches off, x0 = DTB. It gives EL2 the FP/SIMD unit
// (Rust code uses it) and its vectors, takes the boot stack, clears .bss and enters Rust;
// the EL check's verdict is reported from Rust, where there is a console.
core::arch::global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b       primary_entry
    .word   0
    .quad   0x80000
    .quad   __image_size
    .quad   0xa
    .quad   0
    .quad   0
    .quad   0
    .ascii  "ARMd"
    .word   0

.section .text.boot, "ax"
primary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2
    cmp     x20, #2
    b.ne    1f
    mov     x1, #0x33ff             // CPTR_EL2: RES1 bits, TFP = 0 (FP/SIMD not trapped)
    msr     cptr_el2, x1
    adrp    x1, {vectors}
    add     x1, x1, :lo12:{vectors}
    msr     vbar_el2, x1
    mov     x1, #0x80000000         // HCR_EL2: RW (EL1 is AArch64), nothing trapped yet
    msr     hcr_el2, x1
    b       2f
1:  mov     x1, #(3 << 20)          // not EL2: CPACR_EL1.FPEN so the error path can run
    msr     cpacr_el1, x1
2:  isb
    // Relocate: the image was linked at {link_base} and runs where the loader put it.
    // Each R_AARCH64_RELATIVE entry (r_offset, r_info, r_addend) asks for
    // *(r_offset + delta) = r_addend + delta; nothing else is in .rela.dyn of a static PIE.
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
    adrp    x3, __image_start
    add     x3, x3, :lo12:__image_start
    movz    x4, #({link_base} >> 16), lsl #16
    sub     x3, x3, x4
6:  cmp     x1, x2
    b.hs    7f
    ldp     x4, x5, [x1]
    ldr     x6, [x1, #16]
    add     x1, x1, #24
    cmp     x5, #1027               // R_AARCH64_RELATIVE
    b.ne    6b
    add     x6, x6, x3
    str     x6, [x4, x3]
    b       6b
7:  adrp    x1, __boot_stack_top
    add     x1, x1, :lo12:__boot_stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
3:  cmp     x1, x2
    b.hs    4f
    stp     xzr, xzr, [x1], #16
    b       3b
4:  mov     x0, x19
    mov     x1, x20
    bl      {boot_primary}
5:  wfe
    b       5b
"#,
    vectors = sym super::vectors::el2_vectors,
    boot_primary = sym boot_primary,
    link_base = const LINK_BASE,
);

/// The boot CPU in Rust, MMU still off: discover the machine, map it, start the other
/// CPUs and hand over to the core.
extern "C" fn boot_primary(dtb: u64, current_el: u64) -> ! {
    let mut boot = BootInfo::default();
    let platform = dt::discover(dtb, &mut boot).unwrap_or_else(|why| fatal(why));
    console::set_uart(platform.uart);
    if current_el != 2 {
        fatal("xhv must be entered at EL2 (QEMU: -machine virt,virtualization=on)");
    }
    if platform.ram().is_empty() {
        fatal("the device tree describes no memory");
    }
    let image = image_region();
    boot.add_reserved(image);
    if mmu::enable_boot_cpu(platform.ram(), image).is_err() {
        fatal("cannot build the EL2 identity map for this memory layout");
    }
    boot.privilege = "EL2";
    boot.features = features(&platform.gic);
    let platform = PLATFORM.call_once(|| platform);
    report(platform, &boot);
    gic::init_boot_cpu(platform);
    smp::init_boot_cpu(platform);
    smp::start_secondaries(platform);
    // SAFETY: `hv_main` is the core's entry with exactly this signature; the CPU is at EL2
    // with the MMU on, a console and exception vectors, as the contract requires. `boot`
    // lives on this stack frame, which never returns.
    unsafe { hv_main(&boot) }
}

/// Where the hypervisor image (code, data, .bss, boot stack) lies.
pub(super) fn image_region() -> Region {
    let start = &raw const __image_start as u64;
    let end = &raw const __image_end as u64;
    Region { start, size: end - start }
}

fn features(gic: &Gic) -> &'static str {
    match gic {
        Gic::V3 { .. } => "stage-2 40-bit IPA, 4 KiB granule; GICv3",
        Gic::V2 { .. } => "stage-2 40-bit IPA, 4 KiB granule; GICv2",
        Gic::None => "stage-2 40-bit IPA, 4 KiB granule; no GIC found",
    }
}

/// What the device tree told us, before the core's banner: the UART, GIC, timer, CPUs and
/// memory the hypervisor found and uses.
fn report(p: &Platform, boot: &BootInfo) {
    early_log!("aarch64: device tree at {:#x} ({} bytes)", p.dtb.start, p.dtb.size);
    match p.uart {
        Some(u) => early_log!("console: {} UART at {:#x}", u.kind.name(), u.base),
        None => early_log!("console: no UART we drive in the device tree"),
    }
    match p.gic {
        Gic::V3 { dist, redist, maintenance } => early_log!(
            "GICv3: distributor {:#x}, redistributors {:#x}, maintenance INTID {}",
            dist,
            redist,
            maintenance
        ),
        Gic::V2 { dist, cpu, cpu_size, hyp, vcpu, maintenance, .. } => early_log!(
            "GICv2: distributor {:#x}, CPU interface {:#x} ({} KiB), GICH {:#x}, GICV {:#x}, maintenance INTID {}",
            dist,
            cpu,
            cpu_size >> 10,
            hyp,
            vcpu,
            maintenance
        ),
        Gic::None => early_log!("no interrupt controller in the device tree"),
    }
    let hz = aarch64_cpu::registers::Readable::get(&aarch64_cpu::registers::CNTFRQ_EL0);
    match p.timer_intids {
        Some([sec, phys, virt, hyp]) => early_log!(
            "timer: {} kHz; INTIDs secure {}, physical {}, virtual {}, hypervisor {}",
            hz / 1000,
            sec,
            phys,
            virt,
            hyp
        ),
        None => early_log!("timer: {} kHz; no timer node, default INTIDs", hz / 1000),
    }
    let method = match p.enable_method() {
        EnableMethod::Psci => "PSCI",
        EnableMethod::SpinTable { .. } => "spin-table",
        EnableMethod::Unknown => "no known enable method",
    };
    early_log!("CPUs: {} in the device tree, secondaries by {}", p.cpu_count, method);
    for r in p.ram() {
        early_log!("memory: {:#x}-{:#x} ({} MiB)", r.start, r.end(), r.size >> 20);
    }
    for r in boot.reserved() {
        early_log!("reserved: {:#x}-{:#x}", r.start, r.end());
    }
    for m in boot.modules() {
        let args = core::str::from_utf8(m.cmdline()).unwrap_or("?");
        let kind = match m.kind {
            ModuleKind::Kernel => "kernel",
            ModuleKind::Ramdisk => "ramdisk",
            ModuleKind::DeviceTree => "device tree",
        };
        early_log!("module: {} at {:#x} ({} bytes) \"{}\"", kind, m.region.start, m.region.size, args);
        if m.region.start < p.dtb.end() && p.dtb.start < m.region.end() {
            // QEMU puts its DTB at RAM + 128 MiB; a guest-loader module there is overwritten.
            early_log!("warning: this module overlaps the device tree at {:#x}: one overwrote the other", p.dtb.start);
        }
    }
}

/// Stop before the core runs: say why on the UART, or through semihosting if there is none.
fn fatal(why: &str) -> ! {
    if console::has_uart() {
        early_log!("boot failed: {}", why);
    } else {
        console::semihosting_print("xhv: boot failed: ");
        console::semihosting_print(why);
        console::semihosting_print("\n");
    }
    super::exit_emulator(ExitStatus::Failure)
}
