//! x86_64: multiboot2 boot, long mode, then Intel VT-x (EPT) or AMD-V (SVM + nested paging).
//!
//! Boot path: GRUB enters `_start` (32-bit, [`boot`]) → long mode → [`boot::start64`] sets up
//! the console and descriptor tables, picks the backend from the CPU vendor and features
//! ([`crate::x86::choose_backend`]), enables it, reads the multiboot2 information and calls
//! the core's `hv_main`. Guests run through [`vcpu::Vcpu`], which forwards to [`vmx`] or
//! [`svm`]; what a guest sees (CPUID, hypercall ABI, ports, MSRs) is [`crate::x86::policy`],
//! the same for both.

extern crate alloc;

/// The step into long mode the boot CPU and every application processor take from 32-bit
/// protected mode, over the boot page tables and GDT: CR4.PAE, CR3, EFER.LME, then CR0.PG
/// (with WP and PE) enters the compatibility submode; a far return to the 64-bit code segment
/// (pushed by the caller) follows.
macro_rules! enter_long_mode {
    () => {
        concat!(
            "mov eax, cr4\n",
            "or eax, 0x20\n",
            "mov cr4, eax\n",
            "mov eax, offset xhv_boot_pml4\n",
            "mov cr3, eax\n",
            "mov ecx, 0xC0000080\n",
            "rdmsr\n",
            "or eax, 0x100\n",
            "wrmsr\n",
            "mov eax, cr0\n",
            "or eax, 0x80010001\n",
            "mov cr0, eax\n",
            "lgdt [xhv_boot_gdt_ptr]\n",
        )
    };
}

/// The first step in 64-bit code after [`enter_long_mode`]'s far return: the boot GDT's data
/// segment in DS, ES and SS, null FS and GS.
macro_rules! load_long_mode_segments {
    () => {
        concat!(
            "mov ax, 0x10\n",
            "mov ds, ax\n",
            "mov es, ax\n",
            "mov ss, ax\n",
            "xor eax, eax\n",
            "mov fs, ax\n",
            "mov gs, ax\n",
        )
    };
}

mod acpi;
mod boot;
mod desc;
mod guestmem;
mod hostapic;
mod mb2;
mod serial;
mod smp;
mod space;
mod svm;
mod tables;
mod time;
mod vcpu;
mod vmx;
mod xstate;

pub use smp::{MAX_CPUS, cpu_affinity, cpu_ready, kick, this_cpu};
pub use time::{idle_until, now_ns, tsc_hz, tsc_zero};
pub use vcpu::Vcpu;

use crate::ExitStatus;
use crate::x86::Backend;
use spin::Once;

static BACKEND: Once<Backend> = Once::new();

/// The backend the boot CPU enabled.
fn backend() -> Backend {
    *BACKEND.get().expect("no virtualization backend enabled")
}

/// Pick VT-x or AMD-V for this CPU and enable it: (privilege, features) for the banner.
fn enable_virtualization() -> Result<(&'static str, &'static str), &'static str> {
    let cpuid = raw_cpuid::CpuId::new();
    let vendor = cpuid.get_vendor_info();
    let mut name = [0u8; 12];
    if let Some(v) = &vendor {
        let s = v.as_str().as_bytes();
        name[..s.len().min(12)].copy_from_slice(&s[..s.len().min(12)]);
    }
    let vmx = cpuid.get_feature_info().is_some_and(|f| f.has_vmx());
    let chosen =
        crate::x86::choose_backend(&name, vmx, svm::cpu_has_svm()).ok_or("CPUID reports neither VMX nor SVM")?;
    xstate::init();
    let result = match chosen {
        Backend::Vmx => vmx::enable().map(|caps| ("VMX root", caps.features())),
        Backend::Svm => svm::enable().map(|caps| ("SVM host", svm::features(caps))),
    };
    BACKEND.call_once(|| chosen);
    result
}

/// An application processor: the backend the boot CPU chose, enabled on this CPU with areas
/// of its own.
fn enable_virtualization_ap() -> Result<(), &'static str> {
    xstate::init();
    match backend() {
        Backend::Vmx => vmx::enable_ap(),
        Backend::Svm => svm::enable_ap(),
    }
}

/// vCPUs one domain may have: both backends start siblings (INIT/STARTUP through the
/// vLAPIC, [`crate::x86::vlapic`]; the domain's shared state in [`space`]).
pub fn max_vcpus() -> usize {
    crate::x86::vlapic::MAX_APICS
}

pub const ARCH_NAME: &str = "x86_64";
/// PVH guests see their RAM from guest-physical 0.
pub const GUEST_RAM_BASE: u64 = 0;

/// Physical memory the boot page tables identity-map (2 MiB pages).
const IDENTITY_MAPPED: u64 = 4 << 30;

/// Write to COM1.
pub fn console_write(bytes: &[u8]) {
    serial::write(bytes);
}

/// The isa-debug-exit port QEMU is given (`-device isa-debug-exit,iobase=0xf4`).
const QEMU_EXIT_PORT: u16 = 0xf4;
/// Bochs' BIOS control port: "Shutdown" ends the run (status 1), 'D' enters the debugger.
const BOCHS_PORT: u16 = 0x8900;

/// End the emulator: QEMU through isa-debug-exit, Bochs through its 0x8900 port.
pub fn exit_emulator(status: ExitStatus) -> ! {
    serial::flush();
    // QEMU exits with (value << 1) | 1; on Bochs the port is unclaimed and ignored.
    outb(QEMU_EXIT_PORT, if status == ExitStatus::Success { 0 } else { 1 });
    match status {
        // The debugger prompt then reads `quit` from xtask's rc file: status 0.
        ExitStatus::Success => outb(BOCHS_PORT, b'D'),
        // Bochs treats this as a shutdown request, a panic: status 1.
        ExitStatus::Failure => b"Shutdown".iter().for_each(|&b| outb(BOCHS_PORT, b)),
    }
    halt_forever()
}

fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

fn outb(port: u16, value: u8) {
    // SAFETY: only used for the emulator control ports and the legacy PIC, whose writes
    // have no effect on memory safety.
    unsafe { x86_64::instructions::port::Port::new(port).write(value) }
}

/// Physical memory `[addr, addr + size)` through the boot identity map.
pub fn phys_slice(addr: u64, size: u64) -> &'static [u8] {
    check_mapped(addr, size);
    // SAFETY: the range lies in the identity-mapped first 4 GiB (checked above); the core
    // asks only for RAM it owns (boot modules, domain memory).
    unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) }
}

/// Mutable physical memory through the identity map.
pub fn phys_slice_mut(addr: u64, size: u64) -> &'static mut [u8] {
    check_mapped(addr, size);
    // SAFETY: as in `phys_slice`; the core hands out each domain's RAM once, so no other
    // live reference covers it.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, size as usize) }
}

/// Zero physical memory with `rep stosq`: one instruction for the whole range, where a
/// byte loop costs hundreds of millions of emulated instructions for a Linux domain's RAM.
/// x86 caches are coherent with every observer, so nothing needs writing back.
pub fn zero_phys(addr: u64, size: u64) {
    let bytes = phys_slice_mut(addr, size);
    let (head, words, tail) = {
        // SAFETY: every bit pattern is a valid u64; align_to_mut only reinterprets the middle.
        unsafe { bytes.align_to_mut::<u64>() }
    };
    head.fill(0);
    tail.fill(0);
    // SAFETY: `rep stosq` stores RCX quadwords of RAX at RDI upwards (DF is clear in Rust
    // code), which is exactly the `words` slice we hold exclusively.
    unsafe {
        core::arch::asm!(
            "rep stosq",
            inout("rcx") words.len() => _,
            inout("rdi") words.as_mut_ptr() => _,
            in("rax") 0u64,
            options(nostack, preserves_flags)
        );
    }
}

fn check_mapped(addr: u64, size: u64) {
    let end = addr.checked_add(size);
    assert!(addr != 0 && end.is_some_and(|e| e <= IDENTITY_MAPPED), "physical range {addr:#x}+{size:#x} not mapped");
}

/// A `(XEN) ...` line from arch itself (the core's logger is not reachable from here).
fn report(args: core::fmt::Arguments) {
    console_line(format_args!("(XEN) {args}"));
}

/// One formatted console line.
fn console_line(args: core::fmt::Arguments) {
    struct Console;
    impl core::fmt::Write for Console {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            console_write(s.as_bytes());
            Ok(())
        }
    }
    let _ = core::fmt::Write::write_fmt(&mut Console, format_args!("{args}\n"));
}
