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
    // PVH: %ebx holds the hvm_start_info address; guest_main may take it as its argument.
    "mov edi, ebx",
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
    ".global guest_gdt_ptr",
    "guest_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",
    ".quad 0x00cf92000000ffff",
    // 0x18: 32-bit flat code, for hypercalls made in compatibility mode.
    ".quad 0x00cf9a000000ffff",
    "guest_gdt_ptr:",
    ".short 31",
    ".quad guest_gdt",
    "",
    ".section .bss.boot, \"aw\", @nobits",
    ".balign 4096",
    ".global guest_pml4",
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

/// The GDT's 32-bit flat code segment: compatibility mode under long mode.
const COMPAT_CS: u64 = 0x18;

// A hypercall made in compatibility mode (a 32-bit code segment while long mode stays on):
// the hypervisor sees a 32-bit guest and uses Xen's 32-bit ABI (number in EAX, arguments in
// EBX, ECX, EDX, ESI, EDI, the "compat" structure layouts). A 64-bit far return enters the
// 32-bit segment; a 32-bit far return through a pointer left on the stack comes back. Code and stack are below 4 GiB, so their
// addresses mean the same in both modes. RBX is LLVM's: saved by hand around the call.
macro_rules! compat_hypercall_insn {
    ($name:ident, $insn:literal) => {
        fn $name(nr: u32, args: [u32; 5]) -> i32 {
            let ret: u64;
            // SAFETY: the far returns switch between the GDT's long and 32-bit flat code
            // segments (both DPL 0, identity-mapped code below 4 GiB); the stack (below 4 GiB)
            // is balanced on the way back and RBX restored; the instruction traps to the
            // hypervisor, which may read or write the buffers the arguments point at (owned by
            // the caller). Every register the 32-bit code touches is declared clobbered (the
            // upper halves are undefined after a mode switch).
            unsafe {
                core::arch::asm!(
                    "push rbx",
                    "mov ebx, {a0:e}",
                    // The 32-bit far pointer the way back pops: offset, then selector 0x08.
                    "lea r11, [rip + 3f]",
                    "sub rsp, 8",
                    "mov dword ptr [rsp], r11d",
                    "mov dword ptr [rsp + 4], 0x08",
                    "push {cs}",
                    "lea r11, [rip + 2f]",
                    "push r11",
                    "retfq",
                    ".code32",
                    "2:",
                    $insn,
                    "retf",
                    ".code64",
                    "3:",
                    "pop rbx",
                    cs = const COMPAT_CS,
                    a0 = in(reg) args[0],
                    inlateout("rax") u64::from(nr) => ret,
                    inlateout("rcx") u64::from(args[1]) => _,
                    inlateout("rdx") u64::from(args[2]) => _,
                    inlateout("rsi") u64::from(args[3]) => _,
                    inlateout("rdi") u64::from(args[4]) => _,
                    out("r11") _,
                );
            }
            ret as u32 as i32
        }
    };
}
compat_hypercall_insn!(compat_vmcall, "vmcall");
compat_hypercall_insn!(compat_vmmcall, "vmmcall");

/// A Xen hypercall as a 32-bit guest makes it (from compatibility mode): 32-bit number,
/// arguments and result.
pub fn compat_hypercall(nr: u32, args: [u32; 5]) -> i32 {
    if native_is_vmmcall() { compat_vmmcall(nr, args) } else { compat_vmcall(nr, args) }
}

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

/// Vector registers for the `simd-isolation` guest: xmm0-xmm15, the upper halves of
/// ymm0-ymm15 where AVX is offered (the guest turns on OSXSAVE and XCR0 itself), the x87
/// control word and MXCSR; filled, kept across one event (a spin, a hypercall, a HLT) and read
/// back inside one `asm!` block. The guest is built soft-float: compiled code never uses them.
pub mod simd {
    use crate::simd::{Event, Regs};
    use core::sync::atomic::{AtomicBool, Ordering};

    /// xmm0-xmm15 (32 words, low half first), ymm0-ymm15 upper halves (32), FCW, MXCSR, then
    /// the debug address registers DR0-DR3 (no VMCS or VMCB field holds them).
    pub const WORDS: usize = 70;
    const YMM_HI: usize = 32;
    const FCW: usize = 64;
    const MXCSR: usize = 65;
    const DR0: usize = 66;
    /// Breakpoint addresses stay canonical (lower half) and 16-byte aligned; DR7 leaves them
    /// disabled, so they never fire.
    const DR_ADDRESS: u64 = 0x0000_7fff_ffff_fff0;
    /// FCW: every exception masked (and reserved bit 6, which reads as set), precision and
    /// rounding control from the pattern.
    const FCW_FIXED: u64 = 0x007f;
    const FCW_VARIES: u64 = 0x0f00;
    /// MXCSR: every exception masked; flags, DAZ, rounding and FZ from the pattern.
    const MXCSR_FIXED: u64 = 0x1f80;
    const MXCSR_VARIES: u64 = 0xe07f;

    const CR0_MP: u64 = 1 << 1;
    const CR0_EM: u64 = 1 << 2;
    const CR4_OSFXSR: u64 = 1 << 9;
    const CR4_OSXMMEXCPT: u64 = 1 << 10;
    const CR4_OSXSAVE: u64 = 1 << 18;
    /// XCR0: x87, SSE and AVX state enabled.
    const XCR0_AVX: u64 = 0b111;

    /// AVX is on for this guest (every vCPU finds the same CPUID).
    static AVX: AtomicBool = AtomicBool::new(false);

    /// SSE on (CR0.EM off, CR4.OSFXSR); AVX too if CPUID offers XSAVE and AVX and XCR0 may
    /// hold its state. Returns the registers checked.
    pub fn enable(_vcpu: usize) -> &'static str {
        let leaf1 = core::arch::x86_64::__cpuid(1);
        let avx = leaf1.ecx & (1 << 26) != 0
            && leaf1.ecx & (1 << 28) != 0
            && u64::from(core::arch::x86_64::__cpuid_count(0xd, 0).eax) & XCR0_AVX == XCR0_AVX;
        let cr4_on = CR4_OSFXSR | CR4_OSXMMEXCPT | if avx { CR4_OSXSAVE } else { 0 };
        // SAFETY: this vCPU's own control registers: FP/SSE on, as every x86_64 OS does;
        // nothing the compiled (soft-float) code relies on changes.
        unsafe {
            core::arch::asm!(
                "mov {t}, cr0", "and {t}, {em}", "or {t}, {mp}", "mov cr0, {t}",
                "mov {t}, cr4", "or {t}, {on}", "mov cr4, {t}",
                "fninit",
                t = out(reg) _, em = in(reg) !CR0_EM, mp = in(reg) CR0_MP, on = in(reg) cr4_on,
                options(nostack),
            )
        };
        if avx {
            // SAFETY: XSETBV with a value CPUID leaf 0xD says XCR0 supports, OSXSAVE set.
            unsafe {
                core::arch::asm!("xsetbv", in("ecx") 0, in("eax") XCR0_AVX as u32, in("edx") 0, options(nostack))
            };
        }
        AVX.store(avx, Ordering::Relaxed);
        if avx {
            "xmm0-xmm15, ymm0-ymm15 upper halves, fcw, mxcsr, dr0-dr3"
        } else {
            "xmm0-xmm15, fcw, mxcsr (no AVX), dr0-dr3"
        }
    }

    /// The register the `i`th word belongs to.
    pub fn name(i: usize, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        let half = |i: usize| if i.is_multiple_of(2) { "lo" } else { "hi" };
        match i {
            FCW => write!(out, "fcw"),
            MXCSR => write!(out, "mxcsr"),
            DR0.. => write!(out, "dr{}", i - DR0),
            YMM_HI.. => write!(out, "ymm{}.upper.{}", (i - YMM_HI) / 2, half(i)),
            _ => write!(out, "xmm{}.{}", i / 2, half(i)),
        }
    }

    /// Control words to values that cannot fault; no upper halves without AVX.
    pub fn sanitize(_vcpu: usize, r: &mut Regs) {
        r[FCW] = FCW_FIXED | (r[FCW] & FCW_VARIES);
        r[MXCSR] = MXCSR_FIXED | (r[MXCSR] & MXCSR_VARIES);
        for dr in &mut r[DR0..DR0 + 4] {
            *dr &= DR_ADDRESS;
        }
        if !AVX.load(Ordering::Relaxed) {
            r[YMM_HI..FCW].fill(0);
        }
    }

    /// No FP-off hypercall variant on x86 (CR0.TS would need one more scratch register).
    pub const FP_OFF: bool = false;

    /// Load `input`, go through `event`, store what the registers hold into `out`.
    /// `heartbeat` is written on every spin iteration (so another vCPU can see this one run).
    pub fn roundtrip(input: &Regs, event: Event, heartbeat: &core::sync::atomic::AtomicU32, out: &mut Regs) {
        let (mut mode, count_or_nr, a0, a1) = event.encode();
        if mode == 4 {
            mode = 1; // no FP-off variant here (`FP_OFF`)
        }
        if mode == 1 && super::native_is_vmmcall() {
            mode = 3;
        }
        let avx = u64::from(AVX.load(Ordering::Relaxed));
        out.fill(0);
        let dr = &input[DR0..DR0 + 4];
        // SAFETY: this vCPU's own debug address registers; DR7 keeps every breakpoint
        // disabled, so the (canonical) addresses never fire.
        unsafe {
            core::arch::asm!(
                "mov dr0, {0}", "mov dr1, {1}", "mov dr2, {2}", "mov dr3, {3}",
                in(reg) dr[0], in(reg) dr[1], in(reg) dr[2], in(reg) dr[3], options(nostack, nomem),
            )
        };
        // SAFETY: the block reads `input` and writes `out` (both WORDS long) and the heartbeat
        // word; the vector registers, FCW and MXCSR it sets are never used by this soft-float
        // code. The hypercall and HLT trap to the hypervisor, which returns here with RAX
        // (and possibly the argument registers, declared) changed.
        unsafe {
            core::arch::asm!(
                "movdqu xmm0, [{inp} + 0]",
                "movdqu xmm1, [{inp} + 16]",
                "movdqu xmm2, [{inp} + 32]",
                "movdqu xmm3, [{inp} + 48]",
                "movdqu xmm4, [{inp} + 64]",
                "movdqu xmm5, [{inp} + 80]",
                "movdqu xmm6, [{inp} + 96]",
                "movdqu xmm7, [{inp} + 112]",
                "movdqu xmm8, [{inp} + 128]",
                "movdqu xmm9, [{inp} + 144]",
                "movdqu xmm10, [{inp} + 160]",
                "movdqu xmm11, [{inp} + 176]",
                "movdqu xmm12, [{inp} + 192]",
                "movdqu xmm13, [{inp} + 208]",
                "movdqu xmm14, [{inp} + 224]",
                "movdqu xmm15, [{inp} + 240]",
                "test {avx}, {avx}",
                "jz 5f",
                "vinsertf128 ymm0, ymm0, [{inp} + 256], 1",
                "vinsertf128 ymm1, ymm1, [{inp} + 272], 1",
                "vinsertf128 ymm2, ymm2, [{inp} + 288], 1",
                "vinsertf128 ymm3, ymm3, [{inp} + 304], 1",
                "vinsertf128 ymm4, ymm4, [{inp} + 320], 1",
                "vinsertf128 ymm5, ymm5, [{inp} + 336], 1",
                "vinsertf128 ymm6, ymm6, [{inp} + 352], 1",
                "vinsertf128 ymm7, ymm7, [{inp} + 368], 1",
                "vinsertf128 ymm8, ymm8, [{inp} + 384], 1",
                "vinsertf128 ymm9, ymm9, [{inp} + 400], 1",
                "vinsertf128 ymm10, ymm10, [{inp} + 416], 1",
                "vinsertf128 ymm11, ymm11, [{inp} + 432], 1",
                "vinsertf128 ymm12, ymm12, [{inp} + 448], 1",
                "vinsertf128 ymm13, ymm13, [{inp} + 464], 1",
                "vinsertf128 ymm14, ymm14, [{inp} + 480], 1",
                "vinsertf128 ymm15, ymm15, [{inp} + 496], 1",
                "5:",
                "fldcw [{inp} + 512]",
                "ldmxcsr [{inp} + 520]",
                "test {mode}, {mode}",
                "jnz 2f",
                "8: mov dword ptr [{hb}], eax",
                "dec rax",
                "jnz 8b",
                "jmp 4f",
                // A wait whose timer is already due is skipped. One that falls due before the
                // HLT or block below ends at once: its VIRQ_TIMER event is pending, and no
                // vCPU with an upcall due is put to sleep.
                "2: test {due}, {due}",
                "jz 9f",
                "rdtsc",
                "shl rdx, 32",
                "or rax, rdx",
                "cmp rax, {due}",
                "jae 4f",
                "9: mov rax, {nr}",
                "xor edx, edx",
                "cmp {mode}, 1",
                "jne 3f",
                "vmcall",
                "jmp 4f",
                "3: cmp {mode}, 3",
                "jne 6f",
                "vmmcall",
                "jmp 4f",
                "6: hlt",
                "4:",
                "movdqu [{out} + 0], xmm0",
                "movdqu [{out} + 16], xmm1",
                "movdqu [{out} + 32], xmm2",
                "movdqu [{out} + 48], xmm3",
                "movdqu [{out} + 64], xmm4",
                "movdqu [{out} + 80], xmm5",
                "movdqu [{out} + 96], xmm6",
                "movdqu [{out} + 112], xmm7",
                "movdqu [{out} + 128], xmm8",
                "movdqu [{out} + 144], xmm9",
                "movdqu [{out} + 160], xmm10",
                "movdqu [{out} + 176], xmm11",
                "movdqu [{out} + 192], xmm12",
                "movdqu [{out} + 208], xmm13",
                "movdqu [{out} + 224], xmm14",
                "movdqu [{out} + 240], xmm15",
                "test {avx}, {avx}",
                "jz 7f",
                "vextractf128 [{out} + 256], ymm0, 1",
                "vextractf128 [{out} + 272], ymm1, 1",
                "vextractf128 [{out} + 288], ymm2, 1",
                "vextractf128 [{out} + 304], ymm3, 1",
                "vextractf128 [{out} + 320], ymm4, 1",
                "vextractf128 [{out} + 336], ymm5, 1",
                "vextractf128 [{out} + 352], ymm6, 1",
                "vextractf128 [{out} + 368], ymm7, 1",
                "vextractf128 [{out} + 384], ymm8, 1",
                "vextractf128 [{out} + 400], ymm9, 1",
                "vextractf128 [{out} + 416], ymm10, 1",
                "vextractf128 [{out} + 432], ymm11, 1",
                "vextractf128 [{out} + 448], ymm12, 1",
                "vextractf128 [{out} + 464], ymm13, 1",
                "vextractf128 [{out} + 480], ymm14, 1",
                "vextractf128 [{out} + 496], ymm15, 1",
                "7:",
                "fnstcw [{out} + 512]",
                "stmxcsr [{out} + 520]",
                inp = in(reg) input.as_ptr(),
                out = in(reg) out.as_mut_ptr(),
                hb = in(reg) heartbeat.as_ptr(),
                mode = in(reg) mode,
                nr = in(reg) count_or_nr,
                due = in(reg) armed_tsc(mode),
                avx = in(reg) avx,
                inlateout("rax") count_or_nr => _,
                inlateout("rdi") a0 => _,
                inlateout("rsi") a1 => _,
                inlateout("rdx") 0u64 => _,
                inlateout("r10") 0u64 => _,
                inlateout("r8") 0u64 => _,
                options(nostack),
            );
        }
        let (d0, d1, d2, d3): (u64, u64, u64, u64);
        // SAFETY: reading this vCPU's debug registers changes nothing.
        unsafe {
            core::arch::asm!(
                "mov {0}, dr0", "mov {1}, dr1", "mov {2}, dr2", "mov {3}, dr3",
                out(reg) d0, out(reg) d1, out(reg) d2, out(reg) d3, options(nostack, nomem),
            )
        };
        out[DR0..DR0 + 4].copy_from_slice(&[d0, d1, d2, d3]);
    }

    /// The shared info page, for Xen system time (pvclock in `vcpu_info[0].time`).
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    static mut SHARED_INFO: Page = Page([0; 4096]);
    /// The shared info page is mapped over [`SHARED_INFO`]: 0 = not yet tried, 1 = yes, 2 = no.
    static MAPPED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
    /// Each vCPU's armed single-shot timer (Xen system time, ns), and the TSC value at which
    /// it is due (0: none armed).
    static DEADLINE: [core::sync::atomic::AtomicU64; 2] =
        [core::sync::atomic::AtomicU64::new(0), core::sync::atomic::AtomicU64::new(0)];
    static DEADLINE_TSC: [core::sync::atomic::AtomicU64; 2] =
        [core::sync::atomic::AtomicU64::new(0), core::sync::atomic::AtomicU64::new(0)];

    /// The TSC value at which this vCPU's armed timer is due, for a wait (`mode` 0, a spin,
    /// needs none); this vCPU is the one CPUID leaf 1 names (its initial APIC ID).
    fn armed_tsc(mode: u64) -> u64 {
        if mode == 0 {
            return 0;
        }
        let apic_id = (core::arch::x86_64::__cpuid(1).ebx >> 24) as usize;
        DEADLINE_TSC.get(apic_id).map_or(0, |d| d.load(Ordering::Relaxed))
    }

    /// TSC ticks in `ns` nanoseconds, inverting the pvclock scale of `vcpu_info[0].time`.
    fn ns_to_tsc(ns: u64) -> u64 {
        use core::mem::offset_of;
        use guest_abi::shared_info::{VcpuTimeInfo, x86};
        let base = offset_of!(x86::SharedInfo, vcpu_info) + offset_of!(x86::VcpuInfo, time);
        let page = (&raw const SHARED_INFO).cast::<u8>();
        // SAFETY: inside the mapped shared info page (the caller mapped it); volatile reads.
        let (mul, shift) = unsafe {
            let at = base + offset_of!(VcpuTimeInfo, tsc_to_system_mul);
            let mul = (page.add(at) as *const u32).read_volatile();
            (mul, page.add(base + offset_of!(VcpuTimeInfo, tsc_shift)).read_volatile() as i8)
        };
        let ticks = ((u128::from(ns) << 32) / u128::from(mul.max(1))) as u64;
        if shift >= 0 { ticks >> shift } else { ticks << -shift }
    }

    fn map_shared_info() -> bool {
        use guest_abi::{hypercall as nr, memory, xen};
        if MAPPED.load(Ordering::Acquire) == 0 {
            let map = memory::XenAddToPhysmap {
                domid: xen::DOMID_SELF,
                space: memory::XENMAPSPACE_SHARED_INFO,
                gpfn: (&raw const SHARED_INFO) as u64 >> 12,
                ..Default::default()
            };
            let r = crate::hypercall(nr::MEMORY_OP, [memory::XENMEM_ADD_TO_PHYSMAP, &raw const map as u64, 0, 0, 0]);
            MAPPED.store(if r == 0 { 1 } else { 2 }, Ordering::Release);
        }
        MAPPED.load(Ordering::Acquire) == 1
    }

    /// Xen system time from `vcpu_info[0].time` (every vCPU's says the same here); `None`
    /// if the shared info page cannot be mapped.
    pub fn system_time_ns() -> Option<u64> {
        use core::mem::offset_of;
        use guest_abi::shared_info::{VcpuTimeInfo, x86};
        if !map_shared_info() {
            return None;
        }
        let base = offset_of!(x86::SharedInfo, vcpu_info) + offset_of!(x86::VcpuInfo, time);
        let page = (&raw const SHARED_INFO).cast::<u8>();
        // SAFETY: offsets inside the 4 KiB page the hypervisor maps there; volatile reads, as
        // the hypervisor may update it, with the version protocol around them.
        let read = |at: usize, len: usize| unsafe {
            let mut v = 0u64;
            for i in (0..len).rev() {
                v = (v << 8) | u64::from(page.add(base + at + i).read_volatile());
            }
            v
        };
        loop {
            let version = read(offset_of!(VcpuTimeInfo, version), 4);
            let stamp = read(offset_of!(VcpuTimeInfo, tsc_timestamp), 8);
            let system = read(offset_of!(VcpuTimeInfo, system_time), 8);
            let mul = read(offset_of!(VcpuTimeInfo, tsc_to_system_mul), 4);
            let shift = read(offset_of!(VcpuTimeInfo, tsc_shift), 1) as u8 as i8;
            // SAFETY: RDTSC only reads the time-stamp counter.
            let tsc = unsafe { core::arch::x86_64::_rdtsc() };
            if version & 1 == 0 && version == read(offset_of!(VcpuTimeInfo, version), 4) {
                let delta = tsc.wrapping_sub(stamp);
                let delta = if shift >= 0 { delta << shift } else { delta >> -shift };
                return Some(system + ((u128::from(delta) * u128::from(mul)) >> 32) as u64);
            }
        }
    }

    fn singleshot(vcpu: usize, deadline: Option<u64>) -> bool {
        use guest_abi::{hypercall as nr, vcpu as v};
        let t = v::VcpuSetSingleshotTimer { timeout_abs_ns: deadline.unwrap_or(0), ..Default::default() };
        let cmd = if deadline.is_some() { v::VCPUOP_SET_SINGLESHOT_TIMER } else { v::VCPUOP_STOP_SINGLESHOT_TIMER };
        crate::hypercall(nr::VCPU_OP, [cmd, vcpu as u64, &raw const t as u64, 0, 0]) == 0
    }

    /// Each vCPU's port bound to its `VIRQ_TIMER` (0: not yet bound).
    static TIMER_PORT: [core::sync::atomic::AtomicU32; 2] =
        [core::sync::atomic::AtomicU32::new(0), core::sync::atomic::AtomicU32::new(0)];

    /// Bind `VIRQ_TIMER` for `vcpu` once, so that an expiry is kept as a pending event (with
    /// no port it is lost, and a HLT after an expiry taken while preempted sleeps forever,
    /// on Xen as here). The event is consumed by [`disarm_wakeup`], not by an upcall: this
    /// guest runs with interrupts off and no callback vector.
    fn bind_timer_virq(vcpu: usize) -> Option<u32> {
        use guest_abi::{event_channel as ev, hypercall as nr};
        let port = TIMER_PORT[vcpu].load(Ordering::Relaxed);
        if port != 0 {
            return Some(port);
        }
        let mut bind = ev::EvtchnBindVirq { virq: ev::VIRQ_TIMER, vcpu: vcpu as u32, port: 0 };
        let r = crate::hypercall(nr::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_VIRQ, &raw mut bind as u64, 0, 0, 0]);
        (r == 0).then(|| {
            TIMER_PORT[vcpu].store(bind.port, Ordering::Relaxed);
            bind.port
        })
    }

    /// Take back what a timer expiry left: `vcpu`'s upcall flag and selector, then the timer
    /// port's pending bit (in Linux's order: flag first, so nothing new is missed).
    fn clear_timer_event(vcpu: usize) {
        use core::mem::offset_of;
        use core::sync::atomic::{AtomicU8, AtomicU64};
        use guest_abi::shared_info::x86;
        let port = TIMER_PORT[vcpu].load(Ordering::Relaxed);
        if port == 0 {
            return;
        }
        let page = (&raw mut SHARED_INFO).cast::<u8>();
        let info = offset_of!(x86::SharedInfo, vcpu_info) + vcpu * core::mem::size_of::<x86::VcpuInfo>();
        let pending = offset_of!(x86::SharedInfo, evtchn_pending) + (port as usize / 64) * 8;
        // SAFETY: offsets inside the mapped shared info page (vCPU 0 or 1's `vcpu_info`, the
        // word of a port below 4096), aligned for their types; atomics, as the hypervisor
        // writes the page too.
        unsafe {
            AtomicU8::from_ptr(page.add(info + offset_of!(x86::VcpuInfo, evtchn_upcall_pending)))
                .store(0, Ordering::SeqCst);
            AtomicU64::from_ptr(page.add(info + offset_of!(x86::VcpuInfo, evtchn_pending_sel)).cast())
                .store(0, Ordering::SeqCst);
            AtomicU64::from_ptr(page.add(pending).cast()).fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
        }
    }

    /// Arm vCPU `vcpu`'s Xen single-shot timer `micros` µs ahead (a HLT or SCHEDOP_block
    /// then sleeps until it is due). False when there is no system time or no timer.
    pub fn arm_wakeup(vcpu: usize, micros: u64) -> bool {
        let Some(now) = system_time_ns() else { return false };
        if bind_timer_virq(vcpu).is_none() {
            return false;
        }
        let deadline = now + micros * 1000;
        DEADLINE[vcpu].store(deadline, Ordering::Relaxed);
        // SAFETY: RDTSC only reads the time-stamp counter.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        DEADLINE_TSC[vcpu].store(tsc + ns_to_tsc(micros * 1000), Ordering::Relaxed);
        singleshot(vcpu, Some(deadline))
    }

    /// Stop the timer [`arm_wakeup`] armed; true if it was due by now.
    pub fn disarm_wakeup(vcpu: usize) -> bool {
        DEADLINE_TSC[vcpu].store(0, Ordering::Relaxed);
        singleshot(vcpu, None);
        clear_timer_event(vcpu);
        system_time_ns().is_some_and(|now| now >= DEADLINE[vcpu].load(Ordering::Relaxed))
    }

    /// Where vCPU 1's real-mode trampoline is copied (a page below 1 MiB, in guest RAM).
    const TRAMPOLINE: usize = 0x8000;
    /// x2APIC interrupt command register; INIT (assert) and STARTUP delivery modes.
    const MSR_X2APIC_ICR: u32 = 0x830;
    const ICR_INIT: u64 = (5 << 8) | (1 << 14);
    const ICR_STARTUP: u64 = (6 << 8) | (1 << 14);

    /// vCPU 1's stack top, read by `ap_start32` (the top two words hold entry and argument).
    #[unsafe(no_mangle)]
    static mut AP_STACK_TOP: u64 = 0;

    unsafe extern "C" {
        static ap_trampoline: u8;
        static ap_trampoline_end: u8;
    }

    /// Start vCPU `apic_id` as Linux does: INIT, then STARTUP at a real-mode trampoline that
    /// enters long mode over the boot vCPU's page tables and calls the entry on `stack_top`.
    /// Returns 0 once sent (whether it starts shows later).
    pub fn start_vcpu(apic_id: u64, stack_top: usize) -> i64 {
        let start = (&raw const ap_trampoline) as usize;
        let len = (&raw const ap_trampoline_end) as usize - start;
        // SAFETY: the trampoline is position-dependent code assembled for TRAMPOLINE, a page
        // of guest RAM (identity-mapped) nothing else uses; vCPU 1 reads AP_STACK_TOP only
        // after the STARTUP below.
        unsafe {
            core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE as *mut u8, len);
            (&raw mut AP_STACK_TOP).write_volatile(stack_top as u64);
        }
        let vector = (TRAMPOLINE >> 12) as u64;
        for icr in [ICR_INIT, ICR_STARTUP | vector] {
            let value = (apic_id << 32) | icr;
            // SAFETY: a write of the x2APIC ICR (the guest's APIC is in x2APIC mode): it
            // sends INIT / STARTUP to vCPU `apic_id` and changes nothing of ours.
            unsafe {
                core::arch::asm!("wrmsr", in("ecx") MSR_X2APIC_ICR, in("eax") value as u32,
                    in("edx") (value >> 32) as u32, options(nostack))
            };
        }
        0
    }

    core::arch::global_asm!(
        ".section .text.ap, \"ax\"",
        ".code16",
        ".global ap_trampoline",
        "ap_trampoline:",
        "cli",
        "mov ax, cs",
        "mov ds, ax",
        // lgdt [ap_gdtr - ap_trampoline] (DS = CS: offsets within the copy)
        ".byte 0x0f, 0x01, 0x16",
        ".word ap_gdtr - ap_trampoline",
        "mov eax, cr0",
        "or eax, 1",
        "mov cr0, eax",
        // ljmp 0x08:(TRAMPOLINE + ap_pm32 - ap_trampoline), 16-bit form
        ".byte 0xea",
        ".word {tramp} + ap_pm32 - ap_trampoline",
        ".word 0x08",
        ".code32",
        "ap_pm32:",
        "mov ax, 0x10",
        "mov ds, ax",
        "mov es, ax",
        "mov ss, ax",
        "mov eax, offset ap_start32",
        "jmp eax",
        ".balign 8",
        "ap_gdt:",
        ".quad 0",
        ".quad 0x00cf9a000000ffff",
        ".quad 0x00cf92000000ffff",
        "ap_gdtr:",
        ".short 23",
        ".long {tramp} + ap_gdt - ap_trampoline",
        ".global ap_trampoline_end",
        "ap_trampoline_end:",
        "",
        // Protected mode, flat segments, paging off: as `pvh_start`, into long mode over the
        // page tables the boot vCPU built.
        "ap_start32:",
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
        // A stack for the far return, below the two words the entry reads.
        "mov esp, dword ptr [AP_STACK_TOP]",
        "sub esp, 16",
        "push 0x08",
        "mov eax, offset ap_long",
        "push eax",
        "retf",
        ".code64",
        "ap_long:",
        "mov ax, 0x10",
        "mov ds, ax",
        "mov es, ax",
        "mov ss, ax",
        "mov rsp, qword ptr [AP_STACK_TOP]",
        "sub rsp, 16",
        "mov rax, [rsp]",
        "mov rdi, [rsp + 8]",
        "call rax",
        "2: hlt",
        "jmp 2b",
        ".text",
        tramp = const TRAMPOLINE,
    );
}
