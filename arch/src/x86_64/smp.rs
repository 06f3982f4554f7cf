//! The other physical CPUs (application processors): found in the ACPI MADT, started with
//! INIT, STARTUP, STARTUP through the boot CPU's local APIC, brought from real mode to long
//! mode over the boot CPU's page tables, then given their own stack, GDT/TSS, vector state,
//! virtualization (EFER.SVME and a host save area, or VMXON with a region of their own) and
//! local APIC timer, before they enter the core's `hv_secondary_main`, which runs guests on
//! them.
//!
//! Logical CPU numbers are the MADT's order of enabled processors. At boot a CPU's number is
//! found from its initial APIC id (CPUID leaf 1); after that [`this_cpu`] derives it from the
//! stack pointer: each application processor runs on its own slot of [`STACKS`] and the boot
//! CPU on its boot stack, for good (no task switch, no IST stack, no stack switch anywhere).
//! RSP is the one per-CPU register every path restores: VMX loads HOST_RSP on each exit, SVM's
//! VMRUN returns on the host's stack, while GS base is switched by VMLOAD/VMSAVE (and is not
//! restored by #VMEXIT) and CPUID is slow, serializing and itself an exit when nested. A few
//! instructions instead of about 84, several times per guest exit.
//!
//! The sequence follows the Intel SDM (vol. 3A, "MP initialization": INIT, 10 ms, STARTUP,
//! 200 µs, a second STARTUP only if the processor has not answered) and AMD's APM (vol. 2,
//! "Initializing Processor States"); the STARTUP vector names the 4 KiB page below 1 MiB the
//! processor starts at, CS = page >> 4, IP = 0.

use super::{desc, hostapic, time};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Logical CPUs this build knows (more in the MADT are left off).
pub const MAX_CPUS: usize = 8;
/// Each application processor's stack: the core's loop runs hypercalls on it, as the boot
/// CPU does on its 128 KiB boot stack.
const STACK_SIZE: usize = 128 * 1024;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// One stack per logical CPU (the boot CPU's slot is unused). Only the assembly below uses
/// them, each CPU its own, through the address [`start_secondaries`] publishes.
struct Stacks(core::cell::UnsafeCell<[Stack; MAX_CPUS]>);
// SAFETY: nothing in Rust reads or writes the stacks; each is handed to one CPU as its stack.
unsafe impl Sync for Stacks {}
static STACKS: Stacks = Stacks(core::cell::UnsafeCell::new([const { Stack([0; STACK_SIZE]) }; MAX_CPUS]));

/// The local APIC id of each logical CPU (`u32::MAX`: none).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
/// The CPU reached `ap_main` (or is the boot CPU).
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The CPU runs at the hypervisor's privilege with virtualization on and its APIC set up: it
/// can run guests and take kicks.
static READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// The boot CPU's logical number: the CPU whose stack is none of [`STACKS`].
static BOOT_CPU: AtomicUsize = AtomicUsize::new(0);

/// An application processor is ready: several CPUs run guests.
static SEVERAL: AtomicBool = AtomicBool::new(false);

/// Several CPUs run guests (a vCPU may run on one CPU, then on another).
pub fn several() -> bool {
    SEVERAL.load(Ordering::Acquire)
}

/// Read by the trampoline's 32- and 64-bit parts: the stack top and logical number of the
/// processor being started (one at a time).
#[unsafe(no_mangle)]
static XHV_AP_STACK: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static XHV_AP_CPU: AtomicU64 = AtomicU64::new(0);

/// ICR delivery modes (bits 10:8) and level (bit 14).
const ICR_INIT: u32 = 0b101 << 8 | 1 << 14;
const ICR_STARTUP: u32 = 0b110 << 8 | 1 << 14;

unsafe extern "C" {
    static xhv_ap_trampoline: u8;
    static xhv_ap_trampoline_end: u8;
    static xhv_ap_gdt: u8;
    static xhv_ap_gdtr_base: u8;
}

unsafe extern "Rust" {
    /// The core's entry for an application processor that can run guests (defined by the
    /// hypervisor binary): it waits until the boot CPU has built the domains, then runs its
    /// loop, or parks the CPU.
    fn hv_secondary_main(cpu: usize) -> !;
}

/// This CPU's initial APIC id (CPUID leaf 1, EBX bits 31:24).
fn initial_apic_id() -> u32 {
    core::arch::x86_64::__cpuid(1).ebx >> 24
}

/// The logical CPU whose APIC id this CPU's CPUID reports, if the MADT named it (for boot).
fn cpu_by_apic_id() -> Option<usize> {
    let me = initial_apic_id();
    APIC_IDS.iter().position(|a| a.load(Ordering::Relaxed) == me)
}

/// The application processor whose slot of [`STACKS`] holds `sp`, if any.
fn cpu_of_stack(sp: u64) -> Option<usize> {
    let base = STACKS.0.get() as u64;
    let cpu = sp.wrapping_sub(base) / STACK_SIZE as u64;
    (cpu < MAX_CPUS as u64).then_some(cpu as usize)
}

/// This CPU's logical number (its place among the MADT's processors; 0 when unknown), from
/// the stack it runs on (see the module doc for why not CPUID or GS base).
pub fn this_cpu() -> usize {
    let sp: u64;
    // SAFETY: only copies RSP into a register.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    cpu_of_stack(sp).unwrap_or_else(|| BOOT_CPU.load(Ordering::Relaxed))
}

/// Logical CPU `cpu` can run guests and take kicks; the boot CPU always can.
pub fn cpu_ready(cpu: usize) -> bool {
    cpu == this_cpu() || READY.get(cpu).is_some_and(|r| r.load(Ordering::Acquire))
}

/// The local APIC id of logical CPU `cpu` (what a `/cpus` node's `reg` names on x86).
pub fn cpu_affinity(cpu: usize) -> Option<u64> {
    APIC_IDS.get(cpu).map(|a| a.load(Ordering::Relaxed)).filter(|&id| id != u32::MAX).map(u64::from)
}

/// Make logical CPU `cpu` leave its guest (an INTR exit under SVM, an external-interrupt
/// exit under VMX) or its idle HLT, and look again. A kick that arrives while the CPU runs
/// hypervisor code (interrupts off) stays pending in its APIC and ends its next guest entry
/// or idle wait at once.
pub fn kick(cpu: usize) {
    if cpu != this_cpu()
        && cpu_ready(cpu)
        && let Some(id) = cpu_affinity(cpu)
    {
        hostapic::send_ipi(id as u32, u32::from(hostapic::KICK_VECTOR));
    }
}

/// Record the MADT's processors; the boot CPU is online and ready from now on.
pub fn init_boot_cpu(apic_ids: &[u32]) {
    for (slot, &id) in APIC_IDS.iter().zip(apic_ids) {
        slot.store(id, Ordering::Relaxed);
    }
    let me = cpu_by_apic_id().unwrap_or_else(|| {
        // No MADT (or the boot CPU is not in it): it alone, as logical CPU 0.
        APIC_IDS[0].store(initial_apic_id(), Ordering::Relaxed);
        APIC_IDS[1..].iter().for_each(|a| a.store(u32::MAX, Ordering::Relaxed));
        0
    });
    BOOT_CPU.store(me, Ordering::Relaxed);
    assert_eq!(this_cpu(), me, "the boot CPU runs on its boot stack");
    ONLINE[me].store(true, Ordering::Release);
    READY[me].store(true, Ordering::Release);
}

/// A 4 KiB page below 1 MiB for the trampoline: conventional RAM the boot information does
/// not use (the first MiB is never handed to domains).
fn trampoline_page(boot: &crate::boot::BootInfo) -> Option<u64> {
    let blocked = |page: u64| {
        boot.reserved().iter().any(|r| r.start < page + 4096 && page < r.end() && !(r.start == 0 && r.size == 1 << 20))
    };
    let in_ram = |page: u64| boot.ram().iter().any(|r| r.start <= page && page + 4096 <= r.end());
    (0x8..0x9f).rev().map(|p: u64| p << 12).find(|&page| in_ram(page) && !blocked(page))
}

/// Start every processor of the MADT besides this one, one at a time, and wait for each to
/// be ready. Needs the host APIC in xAPIC mode (its ICR is how INIT and STARTUP are sent).
pub fn start_secondaries(boot: &crate::boot::BootInfo) {
    let me = this_cpu();
    let others: usize = (0..MAX_CPUS).filter(|&c| c != me && cpu_affinity(c).is_some()).count();
    if others == 0 {
        return;
    }
    if !hostapic::available() {
        super::report(format_args!("no xAPIC to start the other CPUs with: they stay off"));
        return;
    }
    let Some(page) = trampoline_page(boot) else {
        super::report(format_args!("no free page below 1 MiB for the CPU trampoline: other CPUs stay off"));
        return;
    };
    install_trampoline(page);
    for cpu in (0..MAX_CPUS).filter(|&c| c != me) {
        let Some(id) = cpu_affinity(cpu) else { continue };
        // SAFETY: only the address of this CPU's stack slot is taken; see `Stacks`.
        let top = unsafe { (&raw mut (*STACKS.0.get())[cpu]) as u64 } + STACK_SIZE as u64;
        XHV_AP_STACK.store(top, Ordering::SeqCst);
        XHV_AP_CPU.store(cpu as u64, Ordering::SeqCst);
        let id = id as u32;
        hostapic::send_ipi(id, ICR_INIT);
        time::delay_ns(10_000_000);
        for _ in 0..2 {
            hostapic::send_ipi(id, ICR_STARTUP | (page >> 12) as u32);
            if wait(&ONLINE[cpu], 200_000) {
                break;
            }
        }
        if !wait(&ONLINE[cpu], 1_000_000_000) {
            super::report(format_args!("CPU{cpu} (APIC id {id}) did not come up"));
        } else if wait(&READY[cpu], 1_000_000_000) {
            // A vCPU may run on this CPU after another: its vector state must be in memory
            // whenever a run ends.
            super::xstate::save_at_every_exit();
            SEVERAL.store(true, Ordering::Release);
        }
    }
}

/// Wait up to `ns` for `flag`.
fn wait(flag: &AtomicBool, ns: u64) -> bool {
    let end = time::now_ns() + ns;
    while !flag.load(Ordering::Acquire) {
        if time::now_ns() > end {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Copy the real-mode part to `page` and point its GDT register image at its GDT there.
fn install_trampoline(page: u64) {
    let start = (&raw const xhv_ap_trampoline) as u64;
    let len = (&raw const xhv_ap_trampoline_end) as u64 - start;
    let gdt = (&raw const xhv_ap_gdt) as u64 - start;
    let gdtr_base = (&raw const xhv_ap_gdtr_base) as u64 - start;
    assert!(len <= 4096, "the CPU trampoline fits its page");
    let dst = super::phys_slice_mut(page, len);
    dst.copy_from_slice(super::phys_slice(start, len));
    dst[gdtr_base as usize..gdtr_base as usize + 4].copy_from_slice(&((page + gdt) as u32).to_le_bytes());
}

/// First Rust code of an application processor, in long mode on its own stack, interrupts
/// off: its own descriptor tables, vector state, virtualization and APIC, then the core.
extern "C" fn ap_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    assert_eq!(this_cpu(), cpu, "an application processor runs on its own stack");
    ONLINE[cpu].store(true, Ordering::Release);
    desc::init(cpu);
    match super::enable_virtualization_ap() {
        Ok(()) => {
            hostapic::init_this_cpu();
            READY[cpu].store(true, Ordering::Release);
        }
        Err(why) => super::report(format_args!("CPU{cpu}: parked: {why}")),
    }
    // SAFETY: `hv_secondary_main` is the core's entry for secondaries, defined with this
    // exact signature in the hypervisor binary; this CPU is set up as its contract asks (or
    // not ready, which it checks through `cpu_ready`).
    unsafe { hv_secondary_main(cpu) }
}

// The trampoline. Its real-mode part (up to `xhv_ap_trampoline_end`) is copied to a page
// below 1 MiB and entered there at IP 0 with CS = page >> 4: it loads a flat GDT of its own
// (the copy's address is patched into `xhv_ap_gdtr_base`), sets CR0.PE and jumps far into the
// image's 32-bit part, which enters long mode over the boot CPU's identity map exactly as
// `_start` did, on the stack the boot CPU published, and calls `ap_main(XHV_AP_CPU)`.
core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".code16",
    ".global xhv_ap_trampoline",
    "xhv_ap_trampoline:",
    "cli",
    "cld",
    "mov ax, cs",
    "mov ds, ax",
    // lgdtl [xhv_ap_gdtr - xhv_ap_trampoline]: DS = CS, so an offset within the copy.
    ".byte 0x66, 0x0f, 0x01, 0x16",
    ".word xhv_ap_gdtr - xhv_ap_trampoline",
    "mov eax, cr0",
    "or eax, 1",
    "mov cr0, eax",
    // ljmpl 0x08:xhv_ap_start32 (a 32-bit offset: the operand-size prefix).
    ".byte 0x66, 0xea",
    ".long xhv_ap_start32",
    ".word 0x08",
    ".balign 8",
    ".global xhv_ap_gdt",
    "xhv_ap_gdt:",
    ".quad 0",
    ".quad 0x00cf9a000000ffff",
    ".quad 0x00cf92000000ffff",
    "xhv_ap_gdtr:",
    ".short 23",
    ".global xhv_ap_gdtr_base",
    "xhv_ap_gdtr_base:",
    ".long 0",
    ".global xhv_ap_trampoline_end",
    "xhv_ap_trampoline_end:",
    "",
    ".code32",
    "xhv_ap_start32:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov esp, dword ptr [XHV_AP_STACK]",
    enter_long_mode!(),
    "push 0x08",
    "mov eax, offset xhv_ap_long",
    "push eax",
    "retf",
    ".code64",
    "xhv_ap_long:",
    load_long_mode_segments!(),
    "mov rsp, [rip + XHV_AP_STACK]",
    "xor ebp, ebp",
    "mov rdi, [rip + XHV_AP_CPU]",
    "call {ap_main}",
    "5:",
    "hlt",
    "jmp 5b",
    ".text",
    ap_main = sym ap_main,
);
