//! x86_64 PVH entry and the `vmcall`/`vmmcall` hypercall.
//!
//! The hypervisor starts us as a Xen PVH guest: 32-bit protected mode, paging off, flat
//! segments, at the address in the `XEN_ELFNOTE_PHYS32_ENTRY` note below. We identity-map
//! the first 4 GiB with 2 MiB pages (so [`crate::UNMAPPED_ADDRESS`] is mapped in *our* tables
//! and only the hypervisor's EPT can refuse it), enter long mode and call `guest_main`.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
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

/// Which hypercall instruction this CPU has: 0 = not asked yet, 1 = `vmcall` (Intel),
/// 2 = `vmmcall` (AMD). Xen guests choose by CPUID vendor, as Linux does.
static INSTRUCTION: AtomicU8 = AtomicU8::new(0);

fn native_is_vmmcall() -> bool {
    if INSTRUCTION.load(Ordering::Relaxed) == 0 {
        let r = core::arch::x86_64::__cpuid(0);
        let amd = [r.ebx, r.edx, r.ecx]
            == [u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"enti"), u32::from_le_bytes(*b"cAMD")]
            || [r.ebx, r.edx, r.ecx]
                == [u32::from_le_bytes(*b"Hygo"), u32::from_le_bytes(*b"nGen"), u32::from_le_bytes(*b"uine")];
        INSTRUCTION.store(if amd { 2 } else { 1 }, Ordering::Relaxed);
    }
    INSTRUCTION.load(Ordering::Relaxed) == 2
}

/// A Xen hypercall: `vmcall` on Intel, `vmmcall` on AMD, with the number in RAX and arguments
/// in RDI, RSI, RDX, R10, R8.
pub fn hypercall(nr: u64, args: [u64; 5]) -> i64 {
    if native_is_vmmcall() { vmmcall(nr, args) } else { vmcall(nr, args) }
}

/// What the other vendor's hypercall instruction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// It raised #UD (our handler skipped it).
    InvalidOpcode,
    /// It came back with this in RAX.
    Returned(i64),
}

/// The hypercall instruction of the *other* vendor, for probing what the hypervisor makes of it.
pub fn foreign_hypercall(nr: u64, args: [u64; 5]) -> Foreign {
    install_ud_handler();
    UD_SEEN.store(0, Ordering::SeqCst);
    let r = if native_is_vmmcall() { vmcall(nr, args) } else { vmmcall(nr, args) };
    if UD_SEEN.load(Ordering::SeqCst) != 0 { Foreign::InvalidOpcode } else { Foreign::Returned(r) }
}

// Xen may clobber the argument registers, so they are declared clobbered.
macro_rules! hypercall_insn {
    ($name:ident, $insn:literal) => {
        fn $name(nr: u64, args: [u64; 5]) -> i64 {
            let ret: u64;
            // SAFETY: the instruction traps to the hypervisor, which reads registers and may
            // read or write the guest memory the arguments point at (buffers owned by the
            // caller) and returns here; or it raises #UD, which `guest_ud_handler` skips.
            unsafe {
                core::arch::asm!(
                    $insn,
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
    };
}
hypercall_insn!(vmcall, "vmcall");
hypercall_insn!(vmmcall, "vmmcall");

/// Set by the #UD handler.
static UD_SEEN: AtomicU8 = AtomicU8::new(0);
/// Our IDT: only vector 6 (#UD) is present; both hypercall instructions are 3 bytes long.
static IDT: [AtomicU64; 14] = [const { AtomicU64::new(0) }; 14];

core::arch::global_asm!(
    ".text",
    ".global guest_ud_handler",
    "guest_ud_handler:",
    "add qword ptr [rsp], 3",
    "mov byte ptr [rip + {seen}], 1",
    "iretq",
    seen = sym UD_SEEN,
);

fn install_ud_handler() {
    unsafe extern "C" {
        fn guest_ud_handler();
    }
    let handler = guest_ud_handler as *const () as u64;
    // A present 64-bit interrupt gate (type 0xE, DPL 0) with our code selector 0x08.
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((handler >> 16) & 0xffff) << 48;
    IDT[12].store(low, Ordering::SeqCst);
    IDT[13].store(handler >> 32, Ordering::SeqCst);
    let mut pointer = [0u8; 10];
    pointer[..2].copy_from_slice(&((core::mem::size_of_val(&IDT) - 1) as u16).to_le_bytes());
    pointer[2..].copy_from_slice(&(IDT.as_ptr() as u64).to_le_bytes());
    // SAFETY: the IDT is a static of 7 valid-or-absent gates; the only present one points at
    // `guest_ud_handler`, which returns with IRETQ past a 3-byte instruction.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) pointer.as_ptr(), options(nostack, readonly)) };
}

/// Ask the hypervisor to fill `page` (4 KiB aligned, identity-mapped, executable) with its
/// hypercall stubs: Xen's CPUID leaves name the MSR, writing the page's address to it does it.
/// Returns the MSR used, or `None` when no Xen signature is found.
pub fn install_hypercall_page(page: u64) -> Option<u32> {
    let base = (0x4000_0000u32..0x4001_0000).step_by(0x100).find(|&leaf| {
        let r = core::arch::x86_64::__cpuid(leaf);
        [r.ebx, r.ecx, r.edx]
            == [u32::from_le_bytes(*b"XenV"), u32::from_le_bytes(*b"MMXe"), u32::from_le_bytes(*b"nVMM")]
            && r.eax >= leaf + 2
    })?;
    let msr = core::arch::x86_64::__cpuid(base + 2).ebx;
    // SAFETY: WRMSR of the MSR the hypervisor advertised for exactly this purpose; it writes
    // 4 KiB of stubs into `page`, which the caller reserved for it.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") page as u32, in("edx") (page >> 32) as u32, options(nostack));
    }
    Some(msr)
}

/// A hypercall through the page: `call page + nr * 32`, arguments as for [`hypercall`].
pub fn page_hypercall(page: u64, nr: u64, args: [u64; 5]) -> i64 {
    let ret: u64;
    let stub = page + nr * 32;
    // SAFETY: the stub was written by the hypervisor (`install_hypercall_page`): it loads the
    // number, traps to the hypervisor and returns; registers are declared as above.
    unsafe {
        core::arch::asm!(
            "call {stub}",
            stub = in(reg) stub,
            inlateout("rax") nr => ret,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => _,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret as i64
}
