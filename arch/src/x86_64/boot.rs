//! From GRUB to Rust: multiboot2 header, 32-bit entry, long mode, then [`start64`].
//!
//! GRUB enters `_start` in 32-bit protected mode, paging off, EAX = multiboot2 magic,
//! EBX = physical address of the boot information. We identity-map the first 4 GiB with
//! 2 MiB pages, enable PAE + long mode + paging, load a 64-bit GDT and jump to 64-bit code.

use super::{acpi, desc, mb2, serial, smp};
use crate::boot::BootInfo;

/// Multiboot2 header magic (spec §3.1.1) and the magic GRUB leaves in EAX.
const MB2_HEADER_MAGIC: u32 = 0xE852_50D6;
const MB2_BOOT_MAGIC: u32 = 0x36d7_6289;

core::arch::global_asm!(
    // The header: magic, architecture 0 (i386 protected mode), length, checksum, end tag.
    ".section .multiboot2, \"a\"",
    ".balign 8",
    "xhv_mb2_header:",
    ".long {magic}",
    ".long 0",
    ".long 24",
    ".long 0x100000000 - ({magic} + 24)",
    ".short 0, 0",
    ".long 8",
    "",
    ".section .text.boot, \"ax\"",
    ".code32",
    ".global _start",
    "_start:",
    "cli",
    "cld",
    "mov ebp, eax",
    "mov esi, ebx",
    // Zero .bss (page tables, statics, the boot stack) rather than trust the loader to.
    "mov edi, offset __bss_start",
    "mov ecx, offset __bss_end",
    "sub ecx, edi",
    "xor eax, eax",
    "rep stosb",
    "mov edi, ebp",
    "mov esp, offset __boot_stack_top",
    // Identity map: PML4[0] → PDPT, PDPT[0..4] → four PDs of 2 MiB pages (present,
    // writable, large).
    "mov eax, offset xhv_boot_pdpt",
    "or eax, 3",
    "mov [xhv_boot_pml4], eax",
    "mov ecx, 0",
    "2:",
    "mov eax, ecx",
    "shl eax, 12",
    "add eax, offset xhv_boot_pd",
    "or eax, 3",
    "mov [xhv_boot_pdpt + ecx * 8], eax",
    "inc ecx",
    "cmp ecx, 4",
    "jne 2b",
    "mov ecx, 0",
    "3:",
    "mov eax, ecx",
    "shl eax, 21",
    "or eax, 0x83",
    "mov [xhv_boot_pd + ecx * 8], eax",
    // High half of the entry: physical bits 35:32 for the entries above 4 GiB (none here).
    "mov dword ptr [xhv_boot_pd + ecx * 8 + 4], 0",
    "inc ecx",
    "cmp ecx, 2048",
    "jne 3b",
    enter_long_mode!(),
    "mov eax, 0x08",
    "push eax",
    "mov eax, offset xhv_long_entry",
    "push eax",
    "retf",
    "",
    ".code64",
    "xhv_long_entry:",
    load_long_mode_segments!(),
    "mov rsp, offset __boot_stack_top",
    "xor ebp, ebp",
    // edi = magic, esi = info address (upper halves are zero after 32-bit moves).
    "call {start64}",
    "4:",
    "hlt",
    "jmp 4b",
    "",
    ".section .rodata.boot, \"a\"",
    ".balign 8",
    "xhv_boot_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff", // 0x08: 64-bit code, DPL 0
    ".quad 0x00cf92000000ffff", // 0x10: data, DPL 0
    ".global xhv_boot_gdt_ptr",
    "xhv_boot_gdt_ptr:",
    ".short 23",
    ".quad xhv_boot_gdt",
    "",
    ".section .bss.boot, \"aw\", @nobits",
    ".balign 4096",
    ".global xhv_boot_pml4",
    "xhv_boot_pml4: .skip 4096",
    "xhv_boot_pdpt: .skip 4096",
    "xhv_boot_pd: .skip 4096 * 4",
    ".text",
    magic = const MB2_HEADER_MAGIC,
    start64 = sym start64,
);

/// First Rust code, in long mode on the boot stack with interrupts off.
extern "C" fn start64(magic: u32, info: u32) -> ! {
    serial::init();
    desc::init(desc::BOOT);
    mask_legacy_pic();
    if magic != MB2_BOOT_MAGIC {
        panic!("not started by a multiboot2 loader (EAX={magic:#x})");
    }
    let mut boot = BootInfo::default();
    let mbi = mb2::read(info as u64, &mut boot);
    boot.add_reserved(image_region());
    // The real-mode IVT, BIOS data and option ROMs: never hand them to a domain.
    boot.add_reserved(crate::boot::Region { start: 0, size: 1 << 20 });
    let mut apic_ids = [u32::MAX; smp::MAX_CPUS];
    boot.cpu_count = mbi.rsdp.and_then(|r| acpi::cpus(r, &mut apic_ids)).unwrap_or(1);
    smp::init_boot_cpu(&apic_ids);
    let (privilege, features) =
        super::enable_virtualization().unwrap_or_else(|why| panic!("cannot enable hardware virtualization: {why}"));
    boot.privilege = privilege;
    super::time::init();
    boot.features = features;
    // The other CPUs come up now, with virtualization on, and wait in the core for the
    // domains to be built.
    smp::start_secondaries(&boot);
    unsafe extern "Rust" {
        fn hv_main(boot: &BootInfo) -> !;
    }
    // SAFETY: `hv_main` is the core's entry, defined with this exact signature in the
    // hypervisor binary; the CPU is in the state the contract promises.
    unsafe { hv_main(&boot) }
}

/// The hypervisor image as placed by GRUB (linker-script symbols).
fn image_region() -> crate::boot::Region {
    unsafe extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    let start = (&raw const __image_start) as u64;
    let end = (&raw const __image_end) as u64;
    crate::boot::Region { start, size: end - start }
}

/// The BIOS leaves the 8259 PICs unmasked; we run with interrupts off and want no
/// external-interrupt exits from them while a guest runs.
fn mask_legacy_pic() {
    super::outb(0x21, 0xff);
    super::outb(0xa1, 0xff);
}
