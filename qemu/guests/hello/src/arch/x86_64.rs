//! x86_64 PVH entry and the `vmcall` hypercall.
//!
//! The hypervisor starts us as a Xen PVH guest: 32-bit protected mode, paging off, flat
//! segments, at the address in the `XEN_ELFNOTE_PHYS32_ENTRY` note below. We identity-map
//! the first 4 GiB with 2 MiB pages (so [`crate::UNMAPPED_ADDRESS`] is mapped in *our* tables
//! and only the hypervisor's EPT can refuse it), enter long mode and call `guest_main`.

use guest_abi::elfnote::XEN_ELFNOTE_PHYS32_ENTRY;

core::arch::global_asm!(
    // The PVH entry note: name "Xen", type PHYS32_ENTRY, a 32-bit physical address.
    ".section .note.Xen, \"a\"",
    ".balign 4",
    ".long 4",
    ".long 4",
    ".long {note_type}",
    ".asciz \"Xen\"",
    ".long pvh_start",
    "",
    ".section .text.boot, \"ax\"",
    ".code32",
    ".global pvh_start",
    "pvh_start:",
    "cli",
    "cld",
    "mov esp, offset guest_stack_top",
    // PML4[0] → PDPT; PDPT[0..4] → 4 PDs; 2048 2 MiB pages cover 0..4 GiB.
    "mov eax, offset guest_pdpt",
    "or eax, 3",
    "mov [guest_pml4], eax",
    "xor ecx, ecx",
    "2:",
    "mov eax, ecx",
    "shl eax, 12",
    "add eax, offset guest_pd",
    "or eax, 3",
    "mov [guest_pdpt + ecx * 8], eax",
    "inc ecx",
    "cmp ecx, 4",
    "jne 2b",
    "xor ecx, ecx",
    "3:",
    "mov eax, ecx",
    "shl eax, 21",
    "or eax, 0x83",
    "mov [guest_pd + ecx * 8], eax",
    "inc ecx",
    "cmp ecx, 2048",
    "jne 3b",
    "mov eax, cr4",
    "or eax, 0x20",
    "mov cr4, eax",
    "mov eax, offset guest_pml4",
    "mov cr3, eax",
    "mov ecx, 0xC0000080",
    "rdmsr",
    "or eax, 0x100",
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000001",
    "mov cr0, eax",
    "lgdt [guest_gdt_ptr]",
    "mov eax, 0x08",
    "push eax",
    "mov eax, offset guest_long",
    "push eax",
    "retf",
    "",
    ".code64",
    "guest_long:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov rsp, offset guest_stack_top",
    "call guest_main",
    "4:",
    "hlt",
    "jmp 4b",
    "",
    ".section .rodata.boot, \"a\"",
    ".balign 8",
    "guest_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",
    ".quad 0x00cf92000000ffff",
    "guest_gdt_ptr:",
    ".short 23",
    ".quad guest_gdt",
    "",
    ".section .bss.boot, \"aw\", @nobits",
    ".balign 4096",
    "guest_pml4: .skip 4096",
    "guest_pdpt: .skip 4096",
    "guest_pd: .skip 4096 * 4",
    "guest_stack: .skip 65536",
    "guest_stack_top:",
    ".text",
    note_type = const XEN_ELFNOTE_PHYS32_ENTRY,
);

/// A Xen hypercall: `vmcall` with the number in RAX and arguments in RDI, RSI, RDX, R10, R8.
/// Xen may clobber the argument registers, so they are declared clobbered.
pub fn hypercall(nr: u64, args: [u64; 5]) -> i64 {
    let ret: u64;
    // SAFETY: `vmcall` traps to the hypervisor, which reads registers and may read or write
    // the guest memory the arguments point at (buffers owned by the caller); it returns here.
    unsafe {
        core::arch::asm!(
            "vmcall",
            inlateout("rax") nr => ret,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => _,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            options(nostack),
        );
    }
    ret as i64
}
