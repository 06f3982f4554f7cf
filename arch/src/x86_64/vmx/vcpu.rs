//! One VT-x vCPU: its VMCS, its domain's EPT ([`DomainSpace`]), entering the guest and
//! decoding VM exits.
//!
//! What an exit *means* is the shared x86 logic ([`crate::x86::guest`], [`crate::x86::policy`]):
//! this file decodes the VMCS (exit reason, qualification, instruction length) and applies
//! the answer to it. Interrupts (the Xen upcall, the x2APIC's vectors) are injected through
//! the VM-entry interruption-information field when the guest can take them, else an
//! interrupt-window exit waits for that moment. The VMX-preemption timer ends a run at the
//! earlier of the core's deadline and the Xen single-shot timer. Siblings start as on SVM:
//! a STARTUP through the x2APIC leaves as [`Exit::CpuOn`], and
//! [`VirtualCpu::power_on_sibling`] gives the new vCPU its own VMCS (and VPID) over the same
//! [`DomainSpace`], in real mode at `vector << 12` (unrestricted guest).

use super::super::alloc::boxed::Box;
use super::super::desc::{CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use super::super::guestmem::{GuestRam, Translation};
use super::super::smp::{self, MAX_CPUS};
use super::super::space::{self, DomainSpace, SharedSpace};
use super::super::tables::Page;
use super::super::time;
use super::super::vcpu::{Bare, WithCode};
use super::super::xstate::GuestFpu;
use super::{ctls2, msr};
use crate::boot::GuestSetup;
use crate::exit::{BadGuestAddress, Exit, FaultKind, GuestFault, VirtualCpu};
use crate::x86::ept;
use crate::x86::guest::{self, ApicAccess, ExitContext, MsrOutcome, Timers, XsetbvOutcome};
use crate::x86::mmio::CpuMode;
use crate::x86::policy::{self, Gprs, PortAction, RAX, RBX, RSP, RamRange};
use crate::x86::vlapic::RealModeEntry;
use crate::x86::walk::PagingMode;
use ::x86::vmx::vmcs::{control, guest as gs, host, ro};
use core::cell::Cell;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

mod bits {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_PG: u64 = 1 << 31;
    pub const RFLAGS_IF: u64 = 1 << 9;
    pub use crate::x86::policy::{EFER_LMA, EFER_LME};
    // Pin-based controls.
    pub const PIN_EXT_INTR: u32 = 1 << 0;
    pub const PIN_NMI: u32 = 1 << 3;
    pub const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
    // Primary processor-based controls.
    pub const PROC_INTR_WINDOW: u32 = 1 << 2;
    pub const PROC_HLT: u32 = 1 << 7;
    pub const PROC_CR8_LOAD: u32 = 1 << 19;
    pub const PROC_CR8_STORE: u32 = 1 << 20;
    pub const PROC_IO: u32 = 1 << 24;
    pub const PROC_MSR_BITMAP: u32 = 1 << 28;
    pub const PROC_SECONDARY: u32 = 1 << 31;
    // VM-exit controls.
    pub const EXIT_HOST_64: u32 = 1 << 9;
    pub const EXIT_SAVE_PAT: u32 = 1 << 18;
    pub const EXIT_LOAD_PAT: u32 = 1 << 19;
    pub const EXIT_SAVE_EFER: u32 = 1 << 20;
    pub const EXIT_LOAD_EFER: u32 = 1 << 21;
    // VM-entry controls.
    pub const ENTRY_IA32E: u32 = 1 << 9;
    pub const ENTRY_LOAD_PAT: u32 = 1 << 14;
    pub const ENTRY_LOAD_EFER: u32 = 1 << 15;
    // Segment access rights as the VMCS stores them.
    pub const AR_CODE32: u64 = 0xc09b;
    pub const AR_DATA32: u64 = 0xc093;
    /// Real mode: 16-bit, byte granular (code readable, data writable; both accessed).
    pub const AR_REAL_CODE: u64 = 0x9b;
    pub const AR_REAL_DATA: u64 = 0x93;
    pub const AR_TSS32_BUSY: u64 = 0x8b;
    pub const AR_UNUSABLE: u64 = 1 << 16;
    pub const AR_LONG: u64 = 1 << 13;
    /// CS.D: 32-bit default operand and address size.
    pub const AR_DB: u64 = 1 << 14;
    // Interruption information (VM entry, VM exit, IDT vectoring).
    pub const EVENT_VALID: u64 = 1 << 31;
    pub const EVENT_HAS_ERROR_CODE: u64 = 1 << 11;
    pub const EVENT_EXTERNAL: u64 = 0 << 8;
    pub const EVENT_HW_EXCEPTION: u64 = 3 << 8;
}
use bits::*;

/// Basic VM-exit reasons (SDM Vol. 3 Appendix C).
mod reason {
    pub const EXCEPTION_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const VMCALL: u32 = 18;
    /// VMCLEAR .. VMXON.
    pub const VMX_INSNS: core::ops::RangeInclusive<u32> = 19..=27;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const EPT_VIOLATION: u32 = 48;
    pub const INVEPT: u32 = 50;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const INVVPID: u32 = 53;
    pub const XSETBV: u32 = 55;
    pub const VMFUNC: u32 = 59;
}

const UD: u8 = 6;
const GP: u8 = 13;
/// The power-on PAT: WB, WT, UC-, UC, repeated.
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;

/// Per logical CPU, the physical address of the VMCS it has current (0: none).
static CURRENT_VMCS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static NEXT_VPID: AtomicU16 = AtomicU16::new(1);

pub struct Vcpu {
    vmcs: Box<Page>,
    /// The domain's EPT (the VMCS points at its root) and IPI mailbox.
    pub(in crate::x86_64) space: SharedSpace,
    /// This vCPU's index in its domain (its APIC id).
    id: usize,
    eptp: u64,
    regs: Gprs,
    launched: bool,
    /// The CPU whose host state (TR, GDTR, IDTR bases) the VMCS holds.
    host_cpu: Cell<usize>,
    /// The CPU this vCPU last entered the guest on (`usize::MAX`: none yet).
    last_cpu: usize,
    pub(in crate::x86_64) ram: GuestRam,
    entry_ctls: u32,
    primary_ctls: u32,
    cr8: u64,
    /// The guest's CR2 (the last page-fault address), which the VMCS does not hold.
    cr2: u64,
    /// Boxed: the vLAPIC and the debug-port buffer make it large.
    pub(in crate::x86_64) ctx: Box<ExitContext>,
    timers: Timers,
    /// The preemption timer's rate (it counts TSC >> rate), if the CPU has one.
    preemption_rate: Option<u32>,
    /// The guest's values of [`super::SWITCHED_MSRS`]: the VM-entry MSR-load and VM-exit
    /// MSR-store area (16-byte entries: index, reserved, value).
    msr_area: Box<Page>,
    /// x87/SSE/AVX state while another vCPU runs (XCR0 is `ctx.xcr0`).
    fpu: GuestFpu,
}

// --- VMCS access -------------------------------------------------------------------------

fn vmwrite(field: u32, value: u64) -> Result<(), &'static str> {
    // SAFETY: VMX root with this module's VMCS current (callers ensure it via
    // `make_current`). Host-state fields are only written in `setup_host` with the
    // hypervisor's own state; guest and control fields cannot affect host memory.
    unsafe { ::x86::bits64::vmx::vmwrite(field, value) }.map_err(|_| "VMWRITE failed")
}

fn vmread(field: u32) -> u64 {
    // SAFETY: reading a field of the current VMCS has no side effect.
    unsafe { ::x86::bits64::vmx::vmread(field) }.unwrap_or(0)
}

/// Writes during exit handling: fields are valid, so failure would be a hypervisor bug that
/// the next VM entry reports anyway.
fn set(field: u32, value: u64) {
    let _ = vmwrite(field, value);
}

unsafe extern "C" {
    /// Enter the guest: 0 after a VM exit, 1 on VMfailInvalid, 2 on VMfailValid.
    fn xhv_vmx_enter(regs: *mut Gprs, resume: u64) -> u64;
    /// Where VM exits land (VMCS host RIP).
    fn xhv_vmx_exit();
}

// Host callee-saved registers and the Gprs pointer are kept on the stack across the guest
// run; HOST_RSP is written right before entry so VM exits land on that frame.
core::arch::global_asm!(
    ".text",
    ".global xhv_vmx_enter",
    "xhv_vmx_enter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, {host_rsp}",
    "vmwrite rax, rsp",
    "test rsi, rsi",
    "mov rax, [rdi + 0*8]",
    "mov rcx, [rdi + 1*8]",
    "mov rdx, [rdi + 2*8]",
    "mov rbx, [rdi + 3*8]",
    "mov rbp, [rdi + 5*8]",
    "mov rsi, [rdi + 6*8]",
    "mov r8, [rdi + 8*8]",
    "mov r9, [rdi + 9*8]",
    "mov r10, [rdi + 10*8]",
    "mov r11, [rdi + 11*8]",
    "mov r12, [rdi + 12*8]",
    "mov r13, [rdi + 13*8]",
    "mov r14, [rdi + 14*8]",
    "mov r15, [rdi + 15*8]",
    "mov rdi, [rdi + 7*8]",
    // Flags still hold `test rsi, rsi`: moves do not change them.
    "jnz 2f",
    "vmlaunch",
    "jmp 3f",
    "2:",
    "vmresume",
    "3:",
    // Still here: the instruction failed. CF = no current VMCS, ZF = error in the VMCS.
    "mov eax, 1",
    "jc 4f",
    "mov eax, 2",
    "4:",
    "add rsp, 8",
    "jmp 5f",
    "",
    ".global xhv_vmx_exit",
    "xhv_vmx_exit:",
    "push rax",
    "mov rax, [rsp + 8]",
    "mov [rax + 1*8], rcx",
    "mov [rax + 2*8], rdx",
    "mov [rax + 3*8], rbx",
    "mov [rax + 5*8], rbp",
    "mov [rax + 6*8], rsi",
    "mov [rax + 7*8], rdi",
    "mov [rax + 8*8], r8",
    "mov [rax + 9*8], r9",
    "mov [rax + 10*8], r10",
    "mov [rax + 11*8], r11",
    "mov [rax + 12*8], r12",
    "mov [rax + 13*8], r13",
    "mov [rax + 14*8], r14",
    "mov [rax + 15*8], r15",
    "pop qword ptr [rax]",
    "add rsp, 8",
    "xor eax, eax",
    "5:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    host_rsp = const host::RSP,
);

// --- construction ----------------------------------------------------------------------

impl Vcpu {
    /// vCPU 0 of a new domain, in the PVH start state.
    pub fn new(setup: &GuestSetup) -> Result<Vcpu, &'static str> {
        let caps = super::caps();
        if !caps.ept_usable() || !caps.has(ctls2::UNRESTRICTED_GUEST) {
            return Err("this CPU's VT-x lacks EPT or unrestricted guest");
        }
        let ram = GuestRam { host: setup.ram_host, guest: setup.ram_guest, size: setup.ram_size };
        let space = DomainSpace::new_shared(ept::EPT, ram, setup.domain_id, setup.nr_vcpus.into())?;
        space.borrow_mut().xapic_at_reset = setup.xapic_at_reset;
        let mut vcpu = Vcpu::with_space(space, setup.vcpu_id.into())?;
        vcpu.setup_guest(setup)?;
        // Translations of an earlier user of this EPTP's tables may be cached.
        invept(vcpu.eptp);
        vcpu.release();
        Ok(vcpu)
    }

    /// vCPU `id` of the domain `space` describes: its VMCS made current, with the controls
    /// and host state set; the guest state is the caller's to fill in.
    fn with_space(space: SharedSpace, id: usize) -> Result<Vcpu, &'static str> {
        let caps = super::caps();
        let (ram, domain_id, root, upcall_vector, xapic) = {
            let s = space.borrow();
            (s.ram, s.domain_id, s.root, s.upcall_vector, s.xapic_at_reset)
        };
        let mut vcpu = Vcpu {
            vmcs: Page::new(),
            space,
            id,
            eptp: ept::eptp(root),
            regs: Gprs::default(),
            launched: false,
            host_cpu: Cell::new(smp::this_cpu()),
            last_cpu: usize::MAX,
            ram,
            entry_ctls: 0,
            primary_ctls: 0,
            cr8: 0,
            cr2: 0,
            ctx: Box::new(ExitContext::new(
                RamRange { base: ram.guest, size: ram.size },
                domain_id,
                u16::try_from(id).unwrap_or(u16::MAX),
                false,
            )),
            timers: Timers::default(),
            preemption_rate: None,
            msr_area: Page::new(),
            fpu: GuestFpu::new(),
        };
        vcpu.ctx.upcall_vector = upcall_vector;
        if xapic {
            vcpu.ctx.msrs.lapic = crate::x86::vlapic::VLapic::new_xapic(id as u32);
        }
        vcpu.vmcs.0[0] = caps.revision as u64;
        // SAFETY: a fresh, 4 KiB-aligned, identity-mapped VMCS region with the revision id.
        unsafe { ::x86::bits64::vmx::vmclear(vcpu.vmcs.addr()) }.map_err(|_| "VMCLEAR failed")?;
        vcpu.make_current();
        vcpu.setup_controls()?;
        vcpu.setup_host()?;
        Ok(vcpu)
    }

    /// A sibling the guest started with STARTUP: real mode at `entry` (`vector << 12`), as a
    /// processor leaves its wait-for-SIPI state (CS = entry >> 4, IP = 0); unrestricted
    /// guest runs it as it is.
    fn started_by_sipi(space: SharedSpace, id: usize, entry: u64) -> Result<Vcpu, &'static str> {
        let mut vcpu = Vcpu::with_space(space, id)?;
        let start = RealModeEntry::at(entry);
        vcpu.setup_common_state(CR0_ET, start.ip)?;
        let real = |sel, base, limit, ar, selector: u16, seg_base: u64, access: u64| -> Result<(), &'static str> {
            vmwrite(sel, selector as u64)?;
            vmwrite(base, seg_base)?;
            vmwrite(limit, 0xffff)?;
            vmwrite(ar, access)
        };
        real(
            gs::CS_SELECTOR,
            gs::CS_BASE,
            gs::CS_LIMIT,
            gs::CS_ACCESS_RIGHTS,
            start.cs_selector,
            start.cs_base,
            AR_REAL_CODE,
        )?;
        for (sel, base, limit, ar) in DATA_SEGMENTS {
            real(sel, base, limit, ar, 0, 0, AR_REAL_DATA)?;
        }
        vmwrite(gs::TR_LIMIT, 0xffff)?;
        for (base, limit) in [(gs::GDTR_BASE, gs::GDTR_LIMIT), (gs::IDTR_BASE, gs::IDTR_LIMIT)] {
            vmwrite(limit, 0xffff)?;
            vmwrite(base, 0)?;
        }
        // Events may already wait in its `vcpu_info` (registered, and sent to, while it was
        // still off): Xen keeps a vCPU's upcall pending until it runs.
        vcpu.ctx.upcall_pending = true;
        Ok(vcpu)
    }

    /// Make this vCPU's VMCS current on this CPU, with this CPU's host state. With several
    /// CPUs running guests, the VMCS is active on no other CPU then: [`VirtualCpu::unload`]
    /// cleared it on the CPU that ran it, before the core could hand it to another, and a
    /// new vCPU is cleared once built ([`Vcpu::release`]).
    fn make_current(&self) {
        let addr = self.vmcs.addr();
        let cpu = smp::this_cpu();
        if CURRENT_VMCS[cpu].swap(addr, Ordering::Relaxed) != addr {
            // SAFETY: our VMCS region, cleared in `new` and owned until `drop` clears it,
            // active on no other CPU (see above).
            unsafe { ::x86::bits64::vmx::vmptrld(addr) }.expect("VMPTRLD of our own VMCS failed");
        }
        if self.host_cpu.get() != cpu {
            // The host state is the CPU's own: its TSS, GDT and IDT are per CPU.
            set(host::TR_BASE, super::super::desc::tss_base());
            set(host::GDTR_BASE, super::super::desc::gdt_base());
            set(host::IDTR_BASE, super::super::desc::idt_base());
            self.host_cpu.set(cpu);
        }
    }

    /// With several CPUs running guests: VMCLEAR the VMCS on this CPU (SDM vol. 3C, "VMCS
    /// life cycle": a VMCS must be cleared on the processor it is active on before another
    /// processor loads it), so that any CPU may load it next; the next entry is a VMLAUNCH.
    fn release(&mut self) {
        if !smp::several() {
            return;
        }
        let addr = self.vmcs.addr();
        // SAFETY: our VMCS; VMCLEAR writes its state to memory and makes it inactive here.
        let _ = unsafe { ::x86::bits64::vmx::vmclear(addr) };
        let _ = CURRENT_VMCS[smp::this_cpu()].compare_exchange(addr, 0, Ordering::Relaxed, Ordering::Relaxed);
        self.launched = false;
    }

    fn setup_controls(&mut self) -> Result<(), &'static str> {
        let caps = super::caps();
        let vpid = caps.has(ctls2::VPID);
        let timer = caps.allowed(PIN_PREEMPTION_TIMER, msr::PINBASED_CTLS, msr::TRUE_PINBASED_CTLS);
        self.preemption_rate = (timer != 0).then(|| caps.preemption_timer_rate());
        let pin = caps.control(PIN_EXT_INTR | PIN_NMI | timer, msr::PINBASED_CTLS, msr::TRUE_PINBASED_CTLS)?;
        let primary = PROC_HLT | PROC_IO | PROC_CR8_LOAD | PROC_CR8_STORE | PROC_MSR_BITMAP | PROC_SECONDARY;
        self.primary_ctls = caps.control(primary, msr::PROCBASED_CTLS, msr::TRUE_PROCBASED_CTLS)?;
        // Instructions the guest's CPUID may offer that raise #UD unless enabled here. Not
        // XSAVES: supervisor state is not offered (`x86::xstate`), so it stays #UD.
        let offered = caps.allowed(ctls2::RDTSCP | ctls2::INVPCID, msr::PROCBASED_CTLS2, 0);
        let secondary = ctls2::EPT | ctls2::UNRESTRICTED_GUEST | offered | if vpid { ctls2::VPID } else { 0 };
        let secondary = caps.control(secondary, msr::PROCBASED_CTLS2, 0)?;
        let exit = EXIT_HOST_64 | EXIT_SAVE_PAT | EXIT_LOAD_PAT | EXIT_SAVE_EFER | EXIT_LOAD_EFER;
        let exit = caps.control(exit, msr::EXIT_CTLS, msr::TRUE_EXIT_CTLS)?;
        self.entry_ctls = caps.control(ENTRY_LOAD_PAT | ENTRY_LOAD_EFER, msr::ENTRY_CTLS, msr::TRUE_ENTRY_CTLS)?;
        vmwrite(control::PINBASED_EXEC_CONTROLS, pin as u64)?;
        vmwrite(control::PRIMARY_PROCBASED_EXEC_CONTROLS, self.primary_ctls as u64)?;
        vmwrite(control::SECONDARY_PROCBASED_EXEC_CONTROLS, secondary as u64)?;
        vmwrite(control::VMEXIT_CONTROLS, exit as u64)?;
        vmwrite(control::VMENTRY_CONTROLS, self.entry_ctls as u64)?;
        vmwrite(control::EXCEPTION_BITMAP, 0)?;
        vmwrite(control::CR3_TARGET_COUNT, 0)?;
        vmwrite(control::EPTP_FULL, self.eptp)?;
        vmwrite(control::MSR_BITMAPS_ADDR_FULL, super::msr_bitmap())?;
        // The guest's own syscall MSRs: loaded at entry, stored back at exit, same area.
        let rdtscp = offered & ctls2::RDTSCP != 0;
        let mut n = 0;
        for &index in super::SWITCHED_MSRS.iter().filter(|&&m| m != super::MSR_TSC_AUX || rdtscp) {
            self.msr_area.0[2 * n] = index as u64;
            self.msr_area.0[2 * n + 1] = 0;
            n += 1;
        }
        vmwrite(control::VMENTRY_MSR_LOAD_ADDR_FULL, self.msr_area.addr())?;
        vmwrite(control::VMENTRY_MSR_LOAD_COUNT, n as u64)?;
        vmwrite(control::VMEXIT_MSR_STORE_ADDR_FULL, self.msr_area.addr())?;
        vmwrite(control::VMEXIT_MSR_STORE_COUNT, n as u64)?;
        vmwrite(control::VMEXIT_MSR_LOAD_COUNT, 0)?;
        if vpid {
            // VPID 0 belongs to VMX root; skip it should the counter ever wrap.
            let vpid = NEXT_VPID.fetch_add(1, Ordering::Relaxed).max(1);
            vmwrite(control::VPID, vpid as u64)?;
        }
        // CR0/CR4 bits VMX requires are owned by us (guest/host mask); the guest reads the
        // shadow, and may write what it likes there without a VM exit as long as it does
        // not change them.
        vmwrite(control::CR0_GUEST_HOST_MASK, cr0_owned())?;
        vmwrite(control::CR4_GUEST_HOST_MASK, caps.cr4_fixed0)?;
        Ok(())
    }

    fn setup_host(&mut self) -> Result<(), &'static str> {
        use x86_64::registers::control::{Cr0, Cr3, Cr4};
        let (frame, flags) = Cr3::read_raw();
        vmwrite(host::CR0, Cr0::read_raw())?;
        vmwrite(host::CR3, frame.start_address().as_u64() | flags as u64)?;
        vmwrite(host::CR4, Cr4::read_raw())?;
        vmwrite(host::CS_SELECTOR, CODE_SELECTOR as u64)?;
        for sel in [host::SS_SELECTOR, host::DS_SELECTOR, host::ES_SELECTOR, host::FS_SELECTOR, host::GS_SELECTOR] {
            vmwrite(sel, DATA_SELECTOR as u64)?;
        }
        vmwrite(host::TR_SELECTOR, TSS_SELECTOR as u64)?;
        vmwrite(host::FS_BASE, super::rdmsr(msr::FS_BASE))?;
        vmwrite(host::GS_BASE, super::rdmsr(msr::GS_BASE))?;
        vmwrite(host::TR_BASE, super::super::desc::tss_base())?;
        vmwrite(host::GDTR_BASE, super::super::desc::gdt_base())?;
        vmwrite(host::IDTR_BASE, super::super::desc::idt_base())?;
        vmwrite(host::IA32_SYSENTER_CS, 0)?;
        vmwrite(host::IA32_SYSENTER_ESP, 0)?;
        vmwrite(host::IA32_SYSENTER_EIP, 0)?;
        vmwrite(host::IA32_EFER_FULL, super::rdmsr(msr::EFER))?;
        vmwrite(host::IA32_PAT_FULL, super::rdmsr(msr::PAT))?;
        vmwrite(host::RIP, xhv_vmx_exit as *const () as u64)?;
        Ok(())
    }

    /// The Xen PVH start state: 32-bit flat protected mode, paging off, EBX = start info.
    fn setup_guest(&mut self, setup: &GuestSetup) -> Result<(), &'static str> {
        self.setup_common_state(CR0_PE | CR0_ET, setup.entry)?;
        self.regs.0[RBX] = setup.boot_arg;
        let flat = |sel, base, limit, ar, value: u64, access: u64| -> Result<(), &'static str> {
            vmwrite(sel, value)?;
            vmwrite(base, 0)?;
            vmwrite(limit, 0xffff_ffff)?;
            vmwrite(ar, access)
        };
        flat(gs::CS_SELECTOR, gs::CS_BASE, gs::CS_LIMIT, gs::CS_ACCESS_RIGHTS, 0x08, AR_CODE32)?;
        for (sel, base, limit, ar) in DATA_SEGMENTS {
            flat(sel, base, limit, ar, 0x10, AR_DATA32)?;
        }
        Ok(())
    }

    /// Guest state both start states share: `cr0` as the guest sees it, RIP = `rip`, paging
    /// and long mode off, an unusable LDT, a busy TSS and empty descriptor tables at 0.
    fn setup_common_state(&mut self, cr0_visible: u64, rip: u64) -> Result<(), &'static str> {
        let caps = super::caps();
        vmwrite(gs::CR0, (cr0_visible | cr0_owned()) & caps.cr0_fixed1)?;
        vmwrite(control::CR0_READ_SHADOW, cr0_visible)?;
        vmwrite(gs::CR4, caps.cr4_fixed0 & caps.cr4_fixed1)?;
        vmwrite(control::CR4_READ_SHADOW, 0)?;
        vmwrite(gs::CR3, 0)?;
        vmwrite(gs::DR7, 0x400)?;
        vmwrite(gs::RIP, rip)?;
        vmwrite(gs::RSP, 0)?;
        vmwrite(gs::RFLAGS, 0x2)?;
        vmwrite(gs::LDTR_SELECTOR, 0)?;
        vmwrite(gs::LDTR_BASE, 0)?;
        vmwrite(gs::LDTR_LIMIT, 0)?;
        vmwrite(gs::LDTR_ACCESS_RIGHTS, AR_UNUSABLE)?;
        vmwrite(gs::TR_SELECTOR, 0)?;
        vmwrite(gs::TR_BASE, 0)?;
        vmwrite(gs::TR_LIMIT, 0x67)?;
        vmwrite(gs::TR_ACCESS_RIGHTS, AR_TSS32_BUSY)?;
        for (base, limit) in [(gs::GDTR_BASE, gs::GDTR_LIMIT), (gs::IDTR_BASE, gs::IDTR_LIMIT)] {
            vmwrite(base, 0)?;
            vmwrite(limit, 0)?;
        }
        vmwrite(gs::IA32_EFER_FULL, 0)?;
        vmwrite(gs::IA32_PAT_FULL, DEFAULT_PAT)?;
        vmwrite(gs::IA32_DEBUGCTL_FULL, 0)?;
        vmwrite(gs::IA32_SYSENTER_CS, 0)?;
        vmwrite(gs::IA32_SYSENTER_ESP, 0)?;
        vmwrite(gs::IA32_SYSENTER_EIP, 0)?;
        vmwrite(gs::INTERRUPTIBILITY_STATE, 0)?;
        vmwrite(gs::ACTIVITY_STATE, 0)?;
        vmwrite(gs::PENDING_DBG_EXCEPTIONS, 0)?;
        vmwrite(gs::LINK_PTR_FULL, u64::MAX)?;
        Ok(())
    }
}

/// DS, ES, SS, FS and GS: (selector, base, limit, access rights) fields.
const DATA_SEGMENTS: [(u32, u32, u32, u32); 5] = [
    (gs::DS_SELECTOR, gs::DS_BASE, gs::DS_LIMIT, gs::DS_ACCESS_RIGHTS),
    (gs::ES_SELECTOR, gs::ES_BASE, gs::ES_LIMIT, gs::ES_ACCESS_RIGHTS),
    (gs::SS_SELECTOR, gs::SS_BASE, gs::SS_LIMIT, gs::SS_ACCESS_RIGHTS),
    (gs::FS_SELECTOR, gs::FS_BASE, gs::FS_LIMIT, gs::FS_ACCESS_RIGHTS),
    (gs::GS_SELECTOR, gs::GS_BASE, gs::GS_LIMIT, gs::GS_ACCESS_RIGHTS),
];

/// Put the guest's CR2 in the register if another vCPU's is there: VM entry and exit leave CR2
/// alone, so without this a page fault's address could reach another vCPU's #PF handler
/// (read after an exit that switched vCPUs) and a process would fault at the wrong address.
/// SVM keeps CR2 in the VMCB instead.
fn load_guest_cr2(cr2: u64) {
    if x86_64::registers::control::Cr2::read_raw() != cr2 {
        // SAFETY: CR2 is only read by page-fault handlers; the hypervisor has none that
        // returns (its own page faults are fatal), so this affects the guest alone.
        unsafe { core::arch::asm!("mov cr2, {}", in(reg) cr2, options(nostack, preserves_flags)) };
    }
}

/// CR0 bits VMX requires set that the guest may think are clear (PE/PG are the guest's own
/// under unrestricted guest).
fn cr0_owned() -> u64 {
    super::caps().cr0_fixed0 & !(CR0_PE | CR0_PG)
}

/// Drop cached translations through the EPT at `eptp`: single-context INVEPT, or all
/// contexts where only that is offered.
fn invept(eptp: u64) {
    let caps = super::caps();
    let kind: u64 = if caps.invept_single() {
        1
    } else if caps.invept_all() {
        2
    } else {
        return;
    };
    let descriptor: [u64; 2] = [eptp, 0];
    // SAFETY: INVEPT only drops cached EPT translations; the CPU advertised this type
    // (checked above); the descriptor is a valid 16-byte buffer.
    unsafe {
        core::arch::asm!("invept {t}, [{d}]", t = in(reg) kind, d = in(reg) descriptor.as_ptr(), options(nostack));
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        let addr = self.vmcs.addr();
        // SAFETY: our VMCS; after VMCLEAR the CPU holds no cached state of it, so its memory
        // (and the MSR area) can be reused.
        let _ = unsafe { ::x86::bits64::vmx::vmclear(addr) };
        for current in &CURRENT_VMCS {
            let _ = current.compare_exchange(addr, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

// --- running and exits -----------------------------------------------------------------

/// What handling an exit decided: resume the guest, or hand an exit to the core.
type Handled = Option<Exit>;

impl VirtualCpu for Vcpu {
    fn run(&mut self) -> Exit {
        let exit = self.run_here();
        // The state must be in memory should another CPU run this vCPU next (with one CPU
        // running guests, which is the VT-x case for now, this is free).
        self.fpu.leave();
        exit
    }

    fn set_hypercall_result(&mut self, value: u64) {
        self.make_current();
        self.regs.0[RAX] = policy::hypercall_result(value, self.in_long_mode());
    }

    fn pc(&self) -> u64 {
        self.make_current();
        vmread(gs::RIP)
    }

    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        let tr = self.translation();
        self.ram.copy_from(tr, gva, buf, &self.space.borrow().hidden)
    }

    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        let tr = self.translation();
        self.ram.copy_to(tr, gva, buf, &self.space.borrow().hidden)
    }

    fn guest_phys_of(&mut self, gva: u64) -> Option<u64> {
        let tr = self.translation();
        self.ram.guest_phys(tr, gva, &self.space.borrow().hidden)
    }

    fn power_on_sibling(&mut self, index: usize, entry: u64, _context: u64) -> Option<Vcpu> {
        if !self.space.borrow().is_sibling(self.id, index) {
            return None;
        }
        let sibling = Vcpu::started_by_sipi(self.space.clone(), index, entry).map(|mut v| {
            // Any CPU may run it first.
            v.release();
            v
        });
        // Creating it made its VMCS current: this vCPU's VMCS is reloaded on its next use.
        self.make_current();
        match sibling {
            Ok(v) => Some(v),
            Err(e) => {
                super::super::report(format_args!("d{}v{index}: cannot start: {e}", self.ctx.domain_id));
                None
            }
        }
    }

    fn interrupt_pending(&self) -> bool {
        self.ctx.interrupt_pending() || self.space.borrow().mailbox.has(self.id) || self.timers.pending(time::now_ns())
    }

    fn timer_deadline_ns(&self) -> Option<u64> {
        self.timers.xen_deadline()
    }

    fn set_preemption_deadline(&mut self, deadline_ns: Option<u64>) {
        self.timers.set_preemption(deadline_ns);
    }

    fn set_xen_timer(&mut self, deadline_ns: Option<u64>) -> bool {
        self.timers.set_xen(deadline_ns);
        true
    }

    fn take_expired_timer(&mut self) -> bool {
        self.timers.take_fired(time::now_ns())
    }

    fn unload(&mut self) {
        self.release();
    }
}

impl Vcpu {
    /// Enter the guest on this CPU until an exit the core must see.
    fn run_here(&mut self) -> Exit {
        self.make_current();
        let cpu = smp::this_cpu();
        if self.last_cpu != cpu {
            if self.last_cpu != usize::MAX {
                // This CPU may still cache translations of this vCPU's VPID from when it
                // last ran here, since changed by the guest elsewhere: drop the domain's.
                invept(self.eptp);
            }
            self.last_cpu = cpu;
        }
        loop {
            let now = time::now_ns();
            if self.timers.poll(now) || self.timers.preempt_due(now) {
                return Exit::Preempted;
            }
            self.sync_with_domain();
            self.inject_interrupts();
            self.arm_preemption_timer();
            self.fpu.enter(self.ctx.xcr0);
            load_guest_cr2(self.cr2);
            // SAFETY: the VMCS is current and fully set up, with EPT over this domain's RAM
            // only; `regs` outlives the call; the assembly restores every callee-saved
            // register and the stack.
            let status = unsafe { xhv_vmx_enter(&mut self.regs, self.launched as u64) };
            space::left_guest();
            if status != 0 {
                return self.entry_failed(status);
            }
            // The hypervisor takes no page faults: CR2 is still what the guest left.
            self.cr2 = x86_64::registers::control::Cr2::read_raw();
            self.launched = true;
            self.sync_long_mode();
            self.requeue_interrupted_event();
            let exit = self.handle_exit();
            if let Some(gpa) = self.ctx.hypercall_page.take() {
                // A page outside RAM is the guest's loss: its later calls fault there.
                let _ = self.ram.write_phys(gpa, &policy::hypercall_page(false), &self.space.borrow().hidden);
            }
            if let Some(ipi) = self.ctx.msrs.lapic.take_ipi()
                && let Some(exit) = self.space.borrow_mut().send_ipi(ipi)
            {
                return exit;
            }
            if let Some(exit) = exit {
                return exit;
            }
        }
    }
    fn translation(&self) -> Translation {
        self.make_current();
        let mode = PagingMode::from_registers(vmread(gs::CR0), vmread(gs::CR4), vmread(gs::IA32_EFER_FULL));
        Translation { mode, cr3: vmread(gs::CR3) }
    }

    fn in_long_mode(&self) -> bool {
        vmread(gs::CS_ACCESS_RIGHTS) & AR_LONG != 0
    }

    /// Before entering the guest: take the IPIs other vCPUs sent, and drop cached
    /// translations if the domain's EPT changed since this vCPU last ran.
    fn sync_with_domain(&mut self) {
        let ctx = &mut *self.ctx;
        let stale = self.space.borrow_mut().sync_vcpu(self.id, &mut ctx.msrs.lapic, &mut ctx.upcall_vector);
        if stale {
            invept(self.eptp);
        }
    }

    /// Hand the most urgent pending interrupt to the guest if it can take one now (IF set,
    /// no STI/MOV SS shadow, no other event queued for this entry); otherwise ask for an
    /// interrupt-window exit at the first moment it can.
    fn inject_interrupts(&mut self) {
        let mut window = false;
        if let Some((src, vector)) = self.ctx.next_interrupt() {
            let queued = vmread(control::VMENTRY_INTERRUPTION_INFO_FIELD) & EVENT_VALID != 0;
            let open = vmread(gs::RFLAGS) & RFLAGS_IF != 0 && vmread(gs::INTERRUPTIBILITY_STATE) & 3 == 0;
            if !queued && open {
                set(control::VMENTRY_INTERRUPTION_INFO_FIELD, EVENT_VALID | EVENT_EXTERNAL | vector as u64);
                self.ctx.delivered(src);
                window = self.ctx.next_interrupt().is_some();
            } else {
                window = true;
            }
        }
        let want = if window { self.primary_ctls | PROC_INTR_WINDOW } else { self.primary_ctls & !PROC_INTR_WINDOW };
        if want != self.primary_ctls {
            self.primary_ctls = want;
            set(control::PRIMARY_PROCBASED_EXEC_CONTROLS, want as u64);
        }
    }

    /// Leave the guest at the earlier of the core's deadline and the Xen timer.
    fn arm_preemption_timer(&self) {
        let Some(rate) = self.preemption_rate else { return };
        let ticks = match self.timers.next_deadline() {
            Some(deadline) => (time::ns_to_tsc(deadline).wrapping_sub(time::rdtsc()) as i64).max(0) as u64 >> rate,
            None => u64::MAX,
        };
        set(gs::VMX_PREEMPTION_TIMER_VALUE, ticks.min(u32::MAX as u64));
    }

    /// An event whose delivery the exit cut short (an EPT violation while the guest's IDT
    /// or stack was reached, say) is delivered again at the next entry.
    fn requeue_interrupted_event(&mut self) {
        let info = vmread(ro::IDT_VECTORING_INFO);
        if info & EVENT_VALID == 0 {
            return;
        }
        set(control::VMENTRY_INTERRUPTION_INFO_FIELD, info & (EVENT_VALID | 0xfff));
        if info & EVENT_HAS_ERROR_CODE != 0 {
            set(control::VMENTRY_EXCEPTION_ERR_CODE, vmread(ro::IDT_VECTORING_ERR_CODE));
        }
        // Software interrupts and exceptions (types 4-6) are re-executed with their length.
        if matches!((info >> 8) & 7, 4..=6) {
            set(control::VMENTRY_INSTRUCTION_LEN, vmread(ro::VMEXIT_INSTRUCTION_LEN));
        }
    }

    /// The guest entered or left long mode by itself (CR0.PG with EFER.LME): the next VM
    /// entry must agree, through the "IA-32e mode guest" control, with the EFER.LMA it saved.
    fn sync_long_mode(&mut self) {
        let lma = vmread(gs::IA32_EFER_FULL) & EFER_LMA != 0;
        let want = if lma { self.entry_ctls | ENTRY_IA32E } else { self.entry_ctls & !ENTRY_IA32E };
        if want != self.entry_ctls {
            self.entry_ctls = want;
            set(control::VMENTRY_CONTROLS, want as u64);
        }
    }

    fn entry_failed(&mut self, status: u64) -> Exit {
        let error = if status == 2 { vmread(ro::VM_INSTRUCTION_ERROR) } else { 0 };
        super::super::report(format_args!(
            "d{}v{}: VM entry failed: {} (VM-instruction error {})",
            self.ctx.domain_id,
            self.id,
            if status == 2 { "VMfailValid" } else { "VMfailInvalid" },
            error
        ));
        self.fault(FaultKind::FatalState, 0, error)
    }

    fn fault(&self, kind: FaultKind, gpa: u64, syndrome: u64) -> Exit {
        Exit::Fault(GuestFault { kind, gpa, pc: vmread(gs::RIP), syndrome })
    }

    fn handle_exit(&mut self) -> Handled {
        let full = vmread(ro::EXIT_REASON) as u32;
        let qual = vmread(ro::EXIT_QUALIFICATION);
        if full & (1 << 31) != 0 {
            // VM entry failed on guest state (33), MSR loading (34) or a machine check (41).
            super::super::report(format_args!(
                "d{}v{}: VM entry failed: exit reason {} qualification {:#x}",
                self.ctx.domain_id,
                self.id,
                full & 0xffff,
                qual
            ));
            return Some(self.fault(FaultKind::FatalState, 0, full as u64));
        }
        match full & 0xffff {
            reason::EXTERNAL_INTERRUPT => {
                // Still pending in the host's APIC (not acknowledged at exit): let the host's
                // IDT stub take it (it only signals EOI), then go back to the core.
                // SAFETY: every vector from 32 up has a gate (`desc::init`) whose handler
                // only writes the APIC's EOI register; IF is clear again right after.
                unsafe { core::arch::asm!("sti", "nop", "cli", options(nostack)) };
                Some(Exit::Preempted)
            }
            // A host NMI (type 2, vector 2) arrived while the guest ran: nothing of ours
            // uses NMIs yet, so it is dropped and the guest resumed.
            reason::EXCEPTION_NMI if vmread(ro::VMEXIT_INTERRUPTION_INFO) & 0x7ff == 0x202 => None,
            reason::TRIPLE_FAULT => Some(self.fault(FaultKind::FatalState, 0, reason::TRIPLE_FAULT as u64)),
            // INIT from the host's side: nothing sends one; the guest goes on. The interrupt
            // window and the preemption timer only bring us back to inject or to check time.
            reason::INIT | reason::INTERRUPT_WINDOW | reason::PREEMPTION_TIMER => None,
            reason::CPUID => {
                guest::cpuid(&self.ctx, &mut self.regs, vmread(gs::CR4), &Bare);
                self.skip_instruction();
                None
            }
            reason::HLT => {
                self.skip_instruction();
                Some(Exit::Halt)
            }
            reason::VMCALL => self.vmcall(),
            reason::CR_ACCESS => self.cr_access(qual),
            reason::IO => self.io(qual),
            reason::RDMSR => self.msr(false),
            reason::WRMSR => self.msr(true),
            reason::XSETBV => self.xsetbv(),
            reason::EPT_VIOLATION => {
                let gpa = vmread(ro::GUEST_PHYSICAL_ADDR_FULL);
                match self.apic_mmio(gpa) {
                    ApicAccess::Done { len } => {
                        self.skip(len);
                        return None;
                    }
                    ApicAccess::Undecodable => return Some(self.fault(FaultKind::UnhandledTrap, gpa, qual)),
                    ApicAccess::NotApic => {}
                }
                if self.ram.contains(gpa) {
                    return Some(self.fault(FaultKind::UnhandledTrap, gpa, qual));
                }
                match self.unclaimed_mmio(gpa) {
                    Some(len) => {
                        self.skip(len);
                        None
                    }
                    None => Some(self.fault(FaultKind::UnmappedGuestPhysical, gpa, qual)),
                }
            }
            // VMX is hidden from the guest (CPUID): its instructions are #UD, as on a CPU
            // without it.
            r if reason::VMX_INSNS.contains(&r) || matches!(r, reason::INVEPT | reason::INVVPID | reason::VMFUNC) => {
                self.inject_exception(UD, None);
                None
            }
            other => Some(self.fault(FaultKind::UnhandledTrap, 0, other as u64)),
        }
    }

    /// Step over the instruction that exited; it no longer blocks interrupts.
    fn skip_instruction(&mut self) {
        self.skip(vmread(ro::VMEXIT_INSTRUCTION_LEN));
    }

    /// An EPT violation on the xAPIC page: the instruction at CS:RIP is fetched, decoded and
    /// carried out on the vLAPIC (the exit gives no instruction length for EPT violations).
    fn apic_mmio(&mut self, gpa: u64) -> ApicAccess {
        self.emulate_mmio(|ctx, regs, linear, mode, p| guest::apic_mmio(ctx, regs, gpa, linear, mode, p))
    }

    /// An EPT violation where nothing is: completed as Xen's null handler does; the
    /// instruction's length, if it could be decoded.
    fn unclaimed_mmio(&mut self, gpa: u64) -> Option<u64> {
        self.emulate_mmio(|ctx, regs, linear, mode, p| guest::unclaimed_mmio(ctx, regs, gpa, linear, mode, p))
    }

    /// Run `emulate` on the instruction at CS:RIP (its linear address and mode) with the
    /// registers, RSP included, as the guest left them.
    fn emulate_mmio<R>(
        &mut self,
        emulate: impl FnOnce(&mut ExitContext, &mut Gprs, u64, CpuMode, &mut WithCode) -> R,
    ) -> R {
        let ar = vmread(gs::CS_ACCESS_RIGHTS);
        let long = ar & AR_LONG != 0;
        let mode = CpuMode::from_cs(long, ar & AR_DB != 0);
        let rip = vmread(gs::RIP);
        let linear = if long { rip } else { vmread(gs::CS_BASE).wrapping_add(rip) & 0xffff_ffff };
        let tr = self.translation();
        self.regs.0[RSP] = vmread(gs::RSP);
        let outcome = {
            let space = self.space.borrow();
            let mut p = WithCode { ram: &self.ram, tr, hidden: &space.hidden };
            emulate(&mut self.ctx, &mut self.regs, linear, mode, &mut p)
        };
        set(gs::RSP, self.regs.0[RSP]);
        outcome
    }

    /// Step over `len` bytes of instruction; it no longer blocks interrupts.
    fn skip(&mut self, len: u64) {
        let rip = vmread(gs::RIP) + len;
        set(gs::RIP, if self.in_long_mode() { rip } else { rip & 0xffff_ffff });
        let blocking = vmread(gs::INTERRUPTIBILITY_STATE);
        if blocking & 3 != 0 {
            set(gs::INTERRUPTIBILITY_STATE, blocking & !3);
        }
    }

    /// Deliver hardware exception `vector` at the current instruction on the next entry.
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let mut info = EVENT_VALID | EVENT_HW_EXCEPTION | vector as u64;
        if let Some(code) = error_code {
            info |= EVENT_HAS_ERROR_CODE;
            set(control::VMENTRY_EXCEPTION_ERR_CODE, code as u64);
        }
        set(control::VMENTRY_INTERRUPTION_INFO_FIELD, info);
    }

    fn cpl(&self) -> u8 {
        ((vmread(gs::SS_ACCESS_RIGHTS) >> 5) & 3) as u8
    }

    fn reg(&self, n: usize) -> u64 {
        if n == RSP { vmread(gs::RSP) } else { self.regs.0[n] }
    }

    fn set_reg(&mut self, n: usize, value: u64) {
        if n == RSP {
            set(gs::RSP, value);
        } else {
            self.regs.0[n] = value;
        }
    }

    /// VMCALL: the shared hypercall ABI (user space gets -EPERM without an exit).
    fn vmcall(&mut self) -> Handled {
        self.skip_instruction();
        let (cpl, long_mode) = (self.cpl(), self.in_long_mode());
        policy::hypercall(&mut self.regs, cpl, long_mode).map(Exit::Hypercall)
    }

    /// MOV to CR0/CR4 that touched a bit we own, and CR8 (kept virtual, not the host TPR).
    fn cr_access(&mut self, qual: u64) -> Handled {
        let cr = qual & 0xf;
        let access = (qual >> 4) & 3;
        let gpr = ((qual >> 8) & 0xf) as usize;
        let caps = super::caps();
        match (access, cr) {
            (0, 0) => self.write_cr0(self.reg(gpr)),
            (0, 4) => {
                let v = self.reg(gpr);
                set(control::CR4_READ_SHADOW, v);
                set(gs::CR4, (v | caps.cr4_fixed0) & caps.cr4_fixed1);
            }
            (0, 8) => self.cr8 = self.reg(gpr) & 0xf,
            (1, 8) => self.set_reg(gpr, self.cr8),
            _ => return Some(self.fault(FaultKind::UnhandledTrap, 0, reason::CR_ACCESS as u64 | qual << 16)),
        }
        self.skip_instruction();
        None
    }

    fn write_cr0(&mut self, v: u64) {
        let caps = super::caps();
        let old = vmread(gs::CR0);
        set(control::CR0_READ_SHADOW, v);
        set(gs::CR0, (v | cr0_owned()) & caps.cr0_fixed1);
        // Paging switched by a write we emulate: do what the CPU would to EFER.LMA.
        if (old ^ v) & CR0_PG != 0 {
            let efer = vmread(gs::IA32_EFER_FULL);
            let lma = v & CR0_PG != 0 && efer & EFER_LME != 0;
            set(gs::IA32_EFER_FULL, if lma { efer | EFER_LMA } else { efer & !EFER_LMA });
            self.sync_long_mode();
        }
    }

    /// IN/OUT: the qualification has size, direction and port; the shared policy decides.
    fn io(&mut self, qual: u64) -> Handled {
        let size = ((qual & 7) + 1) as u8;
        let input = qual & 8 != 0;
        let string = qual & 16 != 0;
        let port = (qual >> 16) as u16;
        if string {
            return Some(self.fault(FaultKind::UnhandledTrap, 0, reason::IO as u64 | qual << 16));
        }
        let action = guest::port_io(&mut self.ctx, &mut self.regs, port, size, input, &mut Bare);
        self.skip_instruction();
        (action == PortAction::PowerOff).then_some(Exit::PowerOff)
    }

    /// RDMSR/WRMSR through the shared policy (PAT in the VMCS); #GP for what it refuses.
    fn msr(&mut self, write: bool) -> Handled {
        let before = self.ctx.msrs.lapic.mode();
        let handled = self.msr_policy(write);
        guest::report_apic_mode(&self.ctx, before, &mut Bare);
        handled
    }

    fn msr_policy(&mut self, write: bool) -> Handled {
        let efer = vmread(gs::IA32_EFER_FULL);
        let mut pat = vmread(gs::IA32_PAT_FULL);
        match guest::msr(&mut self.ctx, &mut self.regs, write, efer, &mut pat) {
            MsrOutcome::Done => self.skip_instruction(),
            MsrOutcome::Efer(v) => {
                set(gs::IA32_EFER_FULL, v);
                self.skip_instruction();
            }
            MsrOutcome::Gp => self.inject_exception(GP, Some(0)),
        }
        if write {
            set(gs::IA32_PAT_FULL, pat);
        }
        None
    }

    /// XSETBV (always an exit): a valid XCR0 becomes this vCPU's, loaded before each entry.
    fn xsetbv(&mut self) -> Handled {
        let cpl = self.cpl();
        match guest::xsetbv(&mut self.ctx, &self.regs, cpl, vmread(gs::CR4), &Bare) {
            XsetbvOutcome::Done => self.skip_instruction(),
            XsetbvOutcome::Ud => self.inject_exception(UD, None),
            XsetbvOutcome::Gp => self.inject_exception(GP, Some(0)),
        }
        None
    }
}
