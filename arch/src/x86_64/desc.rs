//! Descriptor tables of the hypervisor: a GDT with a TSS (VM exits need a host TR) and
//! an IDT whose exception handlers report the fault and panic; vectors 32 and up (external
//! interrupts: the host APIC timer) go to [`super::hostapic`]'s stub.

use core::cell::UnsafeCell;
use core::mem::size_of;
use x86_64::instructions::tables::{lgdt, lidt, load_tss};
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::DescriptorTablePointer;
use x86_64::{PrivilegeLevel, VirtAddr};

pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

/// A 64-bit TSS: nothing in it is used (no privilege changes, no IST), but it must exist.
#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 5],
    tss: Tss,
    idt: [[u64; 2]; 256],
}

/// One set per CPU (LTR marks a TSS descriptor busy, so two CPUs cannot load one GDT's):
/// slot 0 is the boot CPU's, slot `n + 1` logical CPU `n`'s. Each slot is written once by
/// [`init`] on its own CPU before that CPU loads it.
struct Shared(UnsafeCell<[Tables; SLOTS]>);
// SAFETY: each slot is written only by `init` on the one CPU it belongs to, with interrupts
// off, before that CPU loads it; afterwards that CPU alone reads it.
unsafe impl Sync for Shared {}

const SLOTS: usize = super::smp::MAX_CPUS + 1;

static TABLES: Shared = Shared(UnsafeCell::new(
    [const {
        Tables {
            gdt: [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0, 0],
            tss: Tss {
                reserved0: 0,
                rsp: [0; 3],
                reserved1: 0,
                ist: [0; 7],
                reserved2: 0,
                reserved3: 0,
                iomap_base: 104,
            },
            idt: [[0; 2]; 256],
        }
    }; SLOTS],
));

/// The boot CPU's tables (before it knows its logical number).
pub const BOOT: usize = usize::MAX;

unsafe extern "C" {
    /// Addresses of the 32 exception entry stubs (below).
    static xhv_exception_stubs: [u64; 32];
}

/// Load this CPU's GDT (with TSS) and IDT: `cpu` is its logical number, or [`BOOT`].
pub fn init(cpu: usize) {
    let slot = if cpu == BOOT { 0 } else { cpu + 1 };
    assert!(slot < SLOTS, "descriptor tables for CPU {cpu}");
    // SAFETY: see `Shared`: this slot is this CPU's, and nothing references it yet.
    let tables = unsafe { &mut (*TABLES.0.get())[slot] };
    let tss_base = (&raw const tables.tss) as u64;
    let limit = (size_of::<Tss>() - 1) as u64;
    // Available 64-bit TSS (type 9), present; base split over both descriptor words.
    tables.gdt[3] = limit | ((tss_base & 0xff_ffff) << 16) | (0x89 << 40) | (((tss_base >> 24) & 0xff) << 56);
    tables.gdt[4] = tss_base >> 32;
    // SAFETY: the stub table is defined in the global_asm below.
    let stubs = unsafe { &xhv_exception_stubs };
    for (gate, &handler) in tables.idt.iter_mut().zip(stubs) {
        *gate = interrupt_gate(handler);
    }
    for gate in &mut tables.idt[32..] {
        *gate = interrupt_gate(super::hostapic::xhv_host_irq as *const () as u64);
    }
    let gdt = DescriptorTablePointer {
        limit: (size_of::<[u64; 5]>() - 1) as u16,
        base: VirtAddr::new(tables.gdt.as_ptr() as u64),
    };
    let idt = DescriptorTablePointer {
        limit: (size_of::<[[u64; 2]; 256]>() - 1) as u16,
        base: VirtAddr::new(tables.idt.as_ptr() as u64),
    };
    // SAFETY: both tables are static and valid; the code/data descriptors are the same as the
    // boot GDT's, so the loaded selectors stay valid; the TSS descriptor was just built.
    unsafe {
        lgdt(&gdt);
        lidt(&idt);
        load_tss(SegmentSelector::new(TSS_SELECTOR >> 3, PrivilegeLevel::Ring0));
    }
}

/// A 64-bit interrupt gate to `handler` in the hypervisor's code segment.
fn interrupt_gate(handler: u64) -> [u64; 2] {
    let low = (handler & 0xffff) | ((CODE_SELECTOR as u64) << 16) | (0x8e << 40) | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// The current GDT and IDT bases, for the VMCS host state.
pub fn gdt_base() -> u64 {
    x86_64::instructions::tables::sgdt().base.as_u64()
}
pub fn idt_base() -> u64 {
    x86_64::instructions::tables::sidt().base.as_u64()
}
/// This CPU's TSS: the base of the TSS descriptor in its own GDT.
pub fn tss_base() -> u64 {
    let gdt = gdt_base() as *const u64;
    // SAFETY: GDTR points at this CPU's `Tables::gdt`, whose entries 3 and 4 are the TSS
    // descriptor `init` wrote; reading them has no effect.
    let (low, high) = unsafe { (gdt.add(3).read_volatile(), gdt.add(4).read_volatile()) };
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | (high << 32)
}

/// What the stubs push: vector, error code (0 when the CPU gives none), then the CPU frame.
#[repr(C)]
struct ExceptionFrame {
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

// One stub per vector: vectors without an error code push a 0 so every frame looks alike.
core::arch::global_asm!(
    ".macro XHV_EXC_STUB n, has_error",
    ".balign 16",
    "xhv_exc_\\n:",
    ".if \\has_error == 0",
    "push 0",
    ".endif",
    "push \\n",
    "jmp xhv_exc_common",
    ".endm",
    ".text",
    "XHV_EXC_STUB 0, 0", "XHV_EXC_STUB 1, 0", "XHV_EXC_STUB 2, 0", "XHV_EXC_STUB 3, 0",
    "XHV_EXC_STUB 4, 0", "XHV_EXC_STUB 5, 0", "XHV_EXC_STUB 6, 0", "XHV_EXC_STUB 7, 0",
    "XHV_EXC_STUB 8, 1", "XHV_EXC_STUB 9, 0", "XHV_EXC_STUB 10, 1", "XHV_EXC_STUB 11, 1",
    "XHV_EXC_STUB 12, 1", "XHV_EXC_STUB 13, 1", "XHV_EXC_STUB 14, 1", "XHV_EXC_STUB 15, 0",
    "XHV_EXC_STUB 16, 0", "XHV_EXC_STUB 17, 1", "XHV_EXC_STUB 18, 0", "XHV_EXC_STUB 19, 0",
    "XHV_EXC_STUB 20, 0", "XHV_EXC_STUB 21, 1", "XHV_EXC_STUB 22, 0", "XHV_EXC_STUB 23, 0",
    "XHV_EXC_STUB 24, 0", "XHV_EXC_STUB 25, 0", "XHV_EXC_STUB 26, 0", "XHV_EXC_STUB 27, 0",
    "XHV_EXC_STUB 28, 0", "XHV_EXC_STUB 29, 1", "XHV_EXC_STUB 30, 1", "XHV_EXC_STUB 31, 0",
    "xhv_exc_common:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {handler}",
    "ud2",
    ".section .rodata",
    ".balign 8",
    ".global xhv_exception_stubs",
    "xhv_exception_stubs:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".quad xhv_exc_\\n",
    ".endr",
    ".text",
    handler = sym exception,
);

/// Any CPU exception in the hypervisor is a bug: report where, then panic (→ failure exit).
extern "C" fn exception(frame: &ExceptionFrame) -> ! {
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    panic!(
        "CPU exception {} (error code {:#x}) at RIP {:#x}, RSP {:#x}, RFLAGS {:#x}, CR2 {:#x}",
        frame.vector, frame.error, frame.rip, frame.rsp, frame.rflags, cr2
    );
}
