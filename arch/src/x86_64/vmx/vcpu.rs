//! One vCPU: its VMCS, its domain's EPT, entering the guest and decoding VM exits.

use super::super::alloc::boxed::Box;
use super::super::desc::{CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use super::super::guestmem::{GuestRam, Translation};
use super::super::tables::{self, Page, TablePages};
use super::{ctls2, msr};
use crate::boot::GuestSetup;
use crate::exit::{BadGuestAddress, Exit, FaultKind, GuestFault, VirtualCpu};
use crate::x86::ept;
use crate::x86::policy::{self, DebugPort, Gprs, MsrWrite, RAX, RBX, RCX, RSP};
use crate::x86::walk::PagingMode;
use ::x86::vmx::vmcs::{control, guest, host, ro};
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

mod bits {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_PG: u64 = 1 << 31;
    pub use crate::x86::policy::{EFER_LMA, EFER_LME};
    // Pin-based controls.
    pub const PIN_EXT_INTR: u32 = 1 << 0;
    pub const PIN_NMI: u32 = 1 << 3;
    // Primary processor-based controls.
    pub const PROC_HLT: u32 = 1 << 7;
    pub const PROC_CR8_LOAD: u32 = 1 << 19;
    pub const PROC_CR8_STORE: u32 = 1 << 20;
    pub const PROC_IO: u32 = 1 << 24;
    pub const PROC_SECONDARY: u32 = 1 << 31;
    // VM-exit controls.
    pub const EXIT_HOST_64: u32 = 1 << 9;
    pub const EXIT_SAVE_EFER: u32 = 1 << 20;
    pub const EXIT_LOAD_EFER: u32 = 1 << 21;
    // VM-entry controls.
    pub const ENTRY_IA32E: u32 = 1 << 9;
    pub const ENTRY_LOAD_EFER: u32 = 1 << 15;
    // Segment access rights as the VMCS stores them.
    pub const AR_CODE32: u64 = 0xc09b;
    pub const AR_DATA32: u64 = 0xc093;
    pub const AR_TSS32_BUSY: u64 = 0x8b;
    pub const AR_UNUSABLE: u64 = 1 << 16;
    pub const AR_LONG: u64 = 1 << 13;
}
use bits::*;

/// Basic VM-exit reasons (SDM Vol. 3 Appendix C).
mod reason {
    pub const EXCEPTION_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const VMCALL: u32 = 18;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const EPT_VIOLATION: u32 = 48;
}

/// Physical address of the VMCS this CPU has current (0: none).
static CURRENT_VMCS: AtomicU64 = AtomicU64::new(0);
static NEXT_VPID: AtomicU16 = AtomicU16::new(1);

pub struct Vcpu {
    vmcs: Box<Page>,
    /// Keeps the EPT tables alive as long as the VMCS points at them.
    _ept: TablePages,
    regs: Gprs,
    launched: bool,
    ram: GuestRam,
    domain_id: u16,
    vcpu_id: u16,
    entry_ctls: u32,
    cr8: u64,
    e9: DebugPort,
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
    pub fn new(setup: &GuestSetup) -> Result<Vcpu, &'static str> {
        let caps = super::caps();
        if !caps.ept_usable() || !caps.has(ctls2::UNRESTRICTED_GUEST) {
            return Err("this CPU's VT-x lacks EPT or unrestricted guest");
        }
        let ram = GuestRam { host: setup.ram_host, guest: setup.ram_guest, size: setup.ram_size };
        let (tables, root) = tables::second_level(ept::EPT, &ram)?;
        let vmcs = Page::new();
        let mut vcpu = Vcpu {
            vmcs,
            _ept: tables,
            regs: Gprs::default(),
            launched: false,
            ram,
            domain_id: setup.domain_id,
            vcpu_id: setup.vcpu_id,
            entry_ctls: 0,
            cr8: 0,
            e9: DebugPort::default(),
        };
        vcpu.vmcs.0[0] = caps.revision as u64;
        // SAFETY: a fresh, 4 KiB-aligned, identity-mapped VMCS region with the revision id.
        unsafe { ::x86::bits64::vmx::vmclear(vcpu.vmcs.addr()) }.map_err(|_| "VMCLEAR failed")?;
        vcpu.make_current();
        vcpu.setup_controls(ept::eptp(root))?;
        vcpu.setup_host()?;
        vcpu.setup_guest(setup)?;
        if caps.invept_all() {
            invept_all(ept::eptp(root));
        }
        Ok(vcpu)
    }

    fn make_current(&self) {
        let addr = self.vmcs.addr();
        if CURRENT_VMCS.swap(addr, Ordering::Relaxed) != addr {
            // SAFETY: our VMCS region, cleared in `new` and owned until `drop` clears it.
            unsafe { ::x86::bits64::vmx::vmptrld(addr) }.expect("VMPTRLD of our own VMCS failed");
        }
    }

    fn setup_controls(&mut self, eptp: u64) -> Result<(), &'static str> {
        let caps = super::caps();
        let vpid = caps.has(ctls2::VPID);
        let pin = caps.control(PIN_EXT_INTR | PIN_NMI, msr::PINBASED_CTLS, msr::TRUE_PINBASED_CTLS)?;
        let primary = PROC_HLT | PROC_IO | PROC_CR8_LOAD | PROC_CR8_STORE | PROC_SECONDARY;
        let primary = caps.control(primary, msr::PROCBASED_CTLS, msr::TRUE_PROCBASED_CTLS)?;
        let secondary = ctls2::EPT | ctls2::UNRESTRICTED_GUEST | if vpid { ctls2::VPID } else { 0 };
        let secondary = caps.control(secondary, msr::PROCBASED_CTLS2, 0)?;
        let exit = EXIT_HOST_64 | EXIT_SAVE_EFER | EXIT_LOAD_EFER;
        let exit = caps.control(exit, msr::EXIT_CTLS, msr::TRUE_EXIT_CTLS)?;
        self.entry_ctls = caps.control(ENTRY_LOAD_EFER, msr::ENTRY_CTLS, msr::TRUE_ENTRY_CTLS)?;
        vmwrite(control::PINBASED_EXEC_CONTROLS, pin as u64)?;
        vmwrite(control::PRIMARY_PROCBASED_EXEC_CONTROLS, primary as u64)?;
        vmwrite(control::SECONDARY_PROCBASED_EXEC_CONTROLS, secondary as u64)?;
        vmwrite(control::VMEXIT_CONTROLS, exit as u64)?;
        vmwrite(control::VMENTRY_CONTROLS, self.entry_ctls as u64)?;
        vmwrite(control::EXCEPTION_BITMAP, 0)?;
        vmwrite(control::CR3_TARGET_COUNT, 0)?;
        vmwrite(control::EPTP_FULL, eptp)?;
        if vpid {
            // VPID 0 belongs to VMX root; skip it should the counter ever wrap.
            let vpid = NEXT_VPID.fetch_add(1, Ordering::Relaxed).max(1);
            vmwrite(control::VPID, vpid as u64)?;
        }
        // CR0/CR4 bits VMX pins (NE; VMXE) are owned by us: the guest sees the shadow and
        // may write what it likes there without a VM exit as long as it does not change them.
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
        vmwrite(host::RIP, xhv_vmx_exit as *const () as u64)?;
        Ok(())
    }

    /// The Xen PVH start state: 32-bit flat protected mode, paging off, EBX = start info.
    fn setup_guest(&mut self, setup: &GuestSetup) -> Result<(), &'static str> {
        let caps = super::caps();
        let cr0_visible = CR0_PE | CR0_ET;
        vmwrite(guest::CR0, (cr0_visible | cr0_owned()) & caps.cr0_fixed1)?;
        vmwrite(control::CR0_READ_SHADOW, cr0_visible)?;
        vmwrite(guest::CR4, caps.cr4_fixed0 & caps.cr4_fixed1)?;
        vmwrite(control::CR4_READ_SHADOW, 0)?;
        vmwrite(guest::CR3, 0)?;
        vmwrite(guest::DR7, 0x400)?;
        vmwrite(guest::RIP, setup.entry)?;
        vmwrite(guest::RSP, 0)?;
        vmwrite(guest::RFLAGS, 0x2)?;
        self.regs.0[RBX] = setup.boot_arg;
        let flat = |sel, base, limit, ar, value: u64, access: u64| -> Result<(), &'static str> {
            vmwrite(sel, value)?;
            vmwrite(base, 0)?;
            vmwrite(limit, 0xffff_ffff)?;
            vmwrite(ar, access)
        };
        flat(guest::CS_SELECTOR, guest::CS_BASE, guest::CS_LIMIT, guest::CS_ACCESS_RIGHTS, 0x08, AR_CODE32)?;
        for (sel, base, limit, ar) in [
            (guest::DS_SELECTOR, guest::DS_BASE, guest::DS_LIMIT, guest::DS_ACCESS_RIGHTS),
            (guest::ES_SELECTOR, guest::ES_BASE, guest::ES_LIMIT, guest::ES_ACCESS_RIGHTS),
            (guest::SS_SELECTOR, guest::SS_BASE, guest::SS_LIMIT, guest::SS_ACCESS_RIGHTS),
            (guest::FS_SELECTOR, guest::FS_BASE, guest::FS_LIMIT, guest::FS_ACCESS_RIGHTS),
            (guest::GS_SELECTOR, guest::GS_BASE, guest::GS_LIMIT, guest::GS_ACCESS_RIGHTS),
        ] {
            flat(sel, base, limit, ar, 0x10, AR_DATA32)?;
        }
        vmwrite(guest::LDTR_SELECTOR, 0)?;
        vmwrite(guest::LDTR_BASE, 0)?;
        vmwrite(guest::LDTR_LIMIT, 0)?;
        vmwrite(guest::LDTR_ACCESS_RIGHTS, AR_UNUSABLE)?;
        vmwrite(guest::TR_SELECTOR, 0)?;
        vmwrite(guest::TR_BASE, 0)?;
        vmwrite(guest::TR_LIMIT, 0x67)?;
        vmwrite(guest::TR_ACCESS_RIGHTS, AR_TSS32_BUSY)?;
        for (base, limit) in [(guest::GDTR_BASE, guest::GDTR_LIMIT), (guest::IDTR_BASE, guest::IDTR_LIMIT)] {
            vmwrite(base, 0)?;
            vmwrite(limit, 0)?;
        }
        vmwrite(guest::IA32_EFER_FULL, 0)?;
        vmwrite(guest::IA32_DEBUGCTL_FULL, 0)?;
        vmwrite(guest::IA32_SYSENTER_CS, 0)?;
        vmwrite(guest::IA32_SYSENTER_ESP, 0)?;
        vmwrite(guest::IA32_SYSENTER_EIP, 0)?;
        vmwrite(guest::INTERRUPTIBILITY_STATE, 0)?;
        vmwrite(guest::ACTIVITY_STATE, 0)?;
        vmwrite(guest::PENDING_DBG_EXCEPTIONS, 0)?;
        vmwrite(guest::LINK_PTR_FULL, u64::MAX)?;
        Ok(())
    }
}

/// CR0 bits VMX requires set that the guest may think are clear (PE/PG are the guest's own
/// under unrestricted guest).
fn cr0_owned() -> u64 {
    super::caps().cr0_fixed0 & !(CR0_PE | CR0_PG)
}

fn invept_all(eptp: u64) {
    let descriptor: [u64; 2] = [eptp, 0];
    // SAFETY: INVEPT type 2 (all contexts) only drops cached EPT translations; the CPU
    // advertised it (checked by the caller); the descriptor is a valid 16-byte buffer.
    unsafe {
        core::arch::asm!("invept {t}, [{d}]", t = in(reg) 2u64, d = in(reg) descriptor.as_ptr(), options(nostack));
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        let addr = self.vmcs.addr();
        // SAFETY: our VMCS; after VMCLEAR the CPU holds no cached state of it, so its memory
        // (and the EPT tables, freed with `self`) can be reused.
        let _ = unsafe { ::x86::bits64::vmx::vmclear(addr) };
        let _ = CURRENT_VMCS.compare_exchange(addr, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

// --- running and exits -----------------------------------------------------------------

/// What handling an exit decided: resume the guest, or hand an exit to the core.
type Handled = Option<Exit>;

impl VirtualCpu for Vcpu {
    fn run(&mut self) -> Exit {
        self.make_current();
        loop {
            // SAFETY: the VMCS is current and fully set up; `regs` outlives the call; the
            // assembly restores every callee-saved register and the stack.
            let status = unsafe { xhv_vmx_enter(&mut self.regs, self.launched as u64) };
            if status != 0 {
                return self.entry_failed(status);
            }
            self.launched = true;
            self.sync_long_mode();
            if let Some(exit) = self.handle_exit() {
                return exit;
            }
        }
    }

    fn set_hypercall_result(&mut self, value: u64) {
        self.regs.0[RAX] = policy::hypercall_result(value, self.in_long_mode());
    }

    fn pc(&self) -> u64 {
        self.make_current();
        vmread(guest::RIP)
    }

    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        let tr = self.translation();
        self.ram.copy_from(tr, gva, buf)
    }

    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        let tr = self.translation();
        self.ram.copy_to(tr, gva, buf)
    }
}

impl Vcpu {
    fn translation(&self) -> Translation {
        self.make_current();
        let mode = PagingMode::from_registers(vmread(guest::CR0), vmread(guest::CR4), vmread(guest::IA32_EFER_FULL));
        Translation { mode, cr3: vmread(guest::CR3) }
    }

    fn in_long_mode(&self) -> bool {
        vmread(guest::CS_ACCESS_RIGHTS) & AR_LONG != 0
    }

    /// The guest entered or left long mode by itself (CR0.PG with EFER.LME): the next VM
    /// entry must agree, through the "IA-32e mode guest" control, with the EFER.LMA it saved.
    fn sync_long_mode(&mut self) {
        let lma = vmread(guest::IA32_EFER_FULL) & EFER_LMA != 0;
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
            self.domain_id,
            self.vcpu_id,
            if status == 2 { "VMfailValid" } else { "VMfailInvalid" },
            error
        ));
        self.fault(FaultKind::FatalState, 0, error)
    }

    fn fault(&self, kind: FaultKind, gpa: u64, syndrome: u64) -> Exit {
        Exit::Fault(GuestFault { kind, gpa, pc: vmread(guest::RIP), syndrome })
    }

    fn handle_exit(&mut self) -> Handled {
        let full = vmread(ro::EXIT_REASON) as u32;
        let qual = vmread(ro::EXIT_QUALIFICATION);
        if full & (1 << 31) != 0 {
            // VM entry failed on guest state (33), MSR loading (34) or a machine check (41).
            super::super::report(format_args!(
                "d{}v{}: VM entry failed: exit reason {} qualification {:#x}",
                self.domain_id,
                self.vcpu_id,
                full & 0xffff,
                qual
            ));
            return Some(self.fault(FaultKind::FatalState, 0, full as u64));
        }
        match full & 0xffff {
            reason::EXTERNAL_INTERRUPT => Some(Exit::Preempted),
            // A host NMI (type 2, vector 2) arrived while the guest ran: nothing of ours
            // uses NMIs yet, so it is dropped and the guest resumed.
            reason::EXCEPTION_NMI if vmread(ro::VMEXIT_INTERRUPTION_INFO) & 0x7ff == 0x202 => None,
            reason::TRIPLE_FAULT => Some(self.fault(FaultKind::FatalState, 0, reason::TRIPLE_FAULT as u64)),
            reason::CPUID => {
                self.cpuid();
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
            reason::RDMSR => self.rdmsr(),
            reason::WRMSR => self.wrmsr(),
            reason::EPT_VIOLATION => {
                let gpa = vmread(ro::GUEST_PHYSICAL_ADDR_FULL);
                let kind =
                    if self.ram.contains(gpa) { FaultKind::UnhandledTrap } else { FaultKind::UnmappedGuestPhysical };
                Some(self.fault(kind, gpa, qual))
            }
            other => Some(self.fault(FaultKind::UnhandledTrap, 0, other as u64)),
        }
    }

    /// Step over the instruction that exited; it no longer blocks interrupts.
    fn skip_instruction(&mut self) {
        let rip = vmread(guest::RIP) + vmread(ro::VMEXIT_INSTRUCTION_LEN);
        set(guest::RIP, if self.in_long_mode() { rip } else { rip & 0xffff_ffff });
        let blocking = vmread(guest::INTERRUPTIBILITY_STATE);
        if blocking & 3 != 0 {
            set(guest::INTERRUPTIBILITY_STATE, blocking & !3);
        }
    }

    /// Deliver #GP(0) at the current instruction on the next entry.
    fn inject_gp(&mut self) {
        const VALID: u64 = 1 << 31;
        const HW_EXCEPTION: u64 = 3 << 8;
        const HAS_ERROR_CODE: u64 = 1 << 11;
        set(control::VMENTRY_INTERRUPTION_INFO_FIELD, VALID | HAS_ERROR_CODE | HW_EXCEPTION | 13);
        set(control::VMENTRY_EXCEPTION_ERR_CODE, 0);
    }

    fn reg(&self, n: usize) -> u64 {
        if n == RSP { vmread(guest::RSP) } else { self.regs.0[n] }
    }

    fn set_reg(&mut self, n: usize, value: u64) {
        if n == RSP {
            set(guest::RSP, value);
        } else {
            self.regs.0[n] = value;
        }
    }

    /// VMCALL: the shared hypercall ABI (user space gets -EPERM without an exit).
    fn vmcall(&mut self) -> Handled {
        self.skip_instruction();
        let cpl = ((vmread(guest::SS_ACCESS_RIGHTS) >> 5) & 3) as u8;
        let long_mode = self.in_long_mode();
        policy::hypercall(&mut self.regs, cpl, long_mode).map(Exit::Hypercall)
    }

    /// CPUID: the shared policy over the host's answers.
    fn cpuid(&mut self) {
        let (leaf, sub) = (self.regs.0[RAX] as u32, self.regs.0[RCX] as u32);
        let answer = policy::cpuid(leaf, sub, self.vcpu_id, |l, s| {
            let r = core::arch::x86_64::__cpuid_count(l, s);
            [r.eax, r.ebx, r.ecx, r.edx]
        });
        policy::set_cpuid_result(&mut self.regs, answer);
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
                set(guest::CR4, (v | caps.cr4_fixed0) & caps.cr4_fixed1);
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
        let old = vmread(guest::CR0);
        set(control::CR0_READ_SHADOW, v);
        set(guest::CR0, (v | cr0_owned()) & caps.cr0_fixed1);
        // Paging switched by a write we emulate: do what the CPU would to EFER.LMA.
        if (old ^ v) & CR0_PG != 0 {
            let efer = vmread(guest::IA32_EFER_FULL);
            let lma = v & CR0_PG != 0 && efer & EFER_LME != 0;
            set(guest::IA32_EFER_FULL, if lma { efer | EFER_LMA } else { efer & !EFER_LMA });
            self.sync_long_mode();
        }
    }

    /// Port I/O: 0xE9 is a debug console; nothing else exists (reads all ones).
    fn io(&mut self, qual: u64) -> Handled {
        let size = (qual & 7) + 1;
        let input = qual & 8 != 0;
        let string = qual & 16 != 0;
        let port = (qual >> 16) as u16;
        if string {
            return Some(self.fault(FaultKind::UnhandledTrap, 0, reason::IO as u64 | qual << 16));
        }
        if input {
            self.regs.0[RAX] = policy::port_in(size as u8, self.regs.0[RAX]);
        } else {
            let domain = self.domain_id;
            policy::port_out(&mut self.e9, port, self.regs.0[RAX], |line| {
                super::super::console_line(format_args!("(d{domain}) {line}"))
            });
        }
        self.skip_instruction();
        None
    }

    /// RDMSR/WRMSR through the shared policy; #GP for what it refuses.
    fn rdmsr(&mut self) -> Handled {
        let efer = vmread(guest::IA32_EFER_FULL);
        match policy::read_msr(self.regs.0[RCX] as u32, efer) {
            Some(v) => {
                policy::set_msr_result(&mut self.regs, v);
                self.skip_instruction();
            }
            None => self.inject_gp(),
        }
        None
    }

    fn wrmsr(&mut self) -> Handled {
        let efer = vmread(guest::IA32_EFER_FULL);
        match policy::write_msr(self.regs.0[RCX] as u32, policy::msr_value(&self.regs), efer) {
            Some(MsrWrite::Efer(v)) => {
                set(guest::IA32_EFER_FULL, v);
                self.skip_instruction();
            }
            None => self.inject_gp(),
        }
        None
    }
}
