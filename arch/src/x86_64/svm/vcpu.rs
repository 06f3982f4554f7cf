//! One AMD-V vCPU: its VMCB, its domain's shared state (nested page tables, IPIs in flight:
//! [`DomainSpace`]), and VMRUN.
//!
//! Exits are decided by [`crate::x86::svm::handle_exit`] (host-tested); this file only builds
//! the VMCB and runs the guest. vCPU 0 starts in the PVH state; a sibling starts when vCPU 0
//! sends it INIT/STARTUP through its x2APIC: the STARTUP leaves as [`Exit::CpuOn`], and the
//! core's [`VirtualCpu::power_on_sibling`] creates it in real mode at `vector << 12`. A run
//! ends at the core's deadline or the Xen timer's, whichever is first, through the host APIC
//! timer ([`super::super::hostapic`]) and the INTR intercept.

use super::super::alloc::boxed::Box;
use super::super::guestmem::{GuestRam, Translation};
use super::super::hostapic;
use super::super::smp::{MAX_CPUS, this_cpu};
use super::super::space::{self, DomainSpace, SharedSpace};
use super::super::vcpu::WithCode;
use super::super::xstate::GuestFpu;
use crate::boot::GuestSetup;
use crate::exit::{BadGuestAddress, Exit, VirtualCpu};
use crate::x86::asid::{AsidPool, AsidTag};
use crate::x86::ept;
use crate::x86::policy::{self, Gprs, RAX, RBX, RamRange};
use crate::x86::svm::{self, EFER_SVME, ExitContext};
use crate::x86::vlapic::RealModeEntry;
use crate::x86::vmcb::vintr;
use crate::x86::vmcb::{Segment, Vmcb, attrib, misc1, misc2, tlb};
use crate::x86::walk::PagingMode;

/// The power-on PAT: WB, WT, UC-, UC, repeated. The guest's own PAT under nested paging.
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
/// Real-mode segment attributes (present, accessed; code readable, data writable).
const REAL_CODE: u16 = 0x09b;
const REAL_DATA: u16 = 0x093;

/// Each CPU's guest ASIDs, handed out in generations ([`AsidPool`]): an ASID tags TLB
/// entries of one CPU only. Each pool is used by its own CPU alone (the lock is never
/// contended).
static ASIDS: [spin::Once<spin::Mutex<AsidPool>>; MAX_CPUS] = [const { spin::Once::new() }; MAX_CPUS];

fn asid_pool(cpu: usize) -> &'static spin::Mutex<AsidPool> {
    ASIDS[cpu].call_once(|| spin::Mutex::new(AsidPool::new(super::caps().asids)))
}

pub struct Vcpu {
    vmcb: Box<Vmcb>,
    /// The domain's nested page tables (the VMCB points at their root) and IPI mailbox.
    pub(in crate::x86_64) space: SharedSpace,
    /// This vCPU's index in its domain (its APIC id).
    id: usize,
    regs: Gprs,
    pub(in crate::x86_64) ram: GuestRam,
    /// Boxed: the vLAPIC and the debug-port buffer make it large.
    pub(in crate::x86_64) ctx: Box<ExitContext>,
    /// The Xen single-shot timer (platform ns), and whether it fired unreported.
    xen_timer: Option<u64>,
    timer_fired: bool,
    /// When `run` must return [`Exit::Preempted`] (the run loop's slice).
    preempt_at: Option<u64>,
    /// x87/SSE/AVX state while another vCPU runs (XCR0 is `ctx.xcr0`).
    fpu: GuestFpu,
    /// The ASID it has on the CPU it last ran on, and of which generation.
    asid: AsidTag,
    /// That CPU (its ASID means nothing on another).
    asid_cpu: usize,
}

unsafe extern "C" {
    /// VMLOAD + VMRUN + VMSAVE of the guest VMCB at `vmcb`, around the host's VMSAVE area at
    /// `host`; returns after #VMEXIT with the guest's registers in `regs`.
    fn xhv_svm_run(regs: *mut Gprs, vmcb: u64, host: u64);
}

// VMRUN keeps the host's RSP, RIP and RAX in the host save area and restores them at #VMEXIT;
// every other register comes back holding the guest's value, so they are stored through the
// `regs` pointer kept on the stack. GIF is clear from CLGI to STGI: nothing interrupts the
// switch. The host runs with IF = 0 except here: IF = 1 at VMRUN lets a physical interrupt
// (the host APIC timer) end the guest's run (INTR intercept; with V_INTR_MASKING the host's
// IF decides), and STGI then takes it (the stub only signals EOI) before CLI.
core::arch::global_asm!(
    ".text",
    ".global xhv_svm_run",
    "xhv_svm_run:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "push rdx",
    "clgi",
    "sti",
    "mov rax, rdx",
    "vmsave rax",
    "mov rax, rsi",
    "vmload rax",
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
    "vmrun rax",
    "vmsave rax",
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
    "pop rax",
    "vmload rax",
    "stgi",
    "nop",
    "cli",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
);

impl Vcpu {
    /// vCPU 0 of a new domain, in the PVH start state.
    pub fn new(setup: &GuestSetup) -> Result<Vcpu, &'static str> {
        let ram = GuestRam { host: setup.ram_host, guest: setup.ram_guest, size: setup.ram_size };
        let space = DomainSpace::new_shared(ept::NPT, ram, setup.domain_id, setup.nr_vcpus.into())?;
        space.borrow_mut().xapic_at_reset = setup.xapic_at_reset;
        // The preemption timer is needed from the first run on (calibrated once).
        hostapic::available();
        let mut vcpu = Vcpu::with_space(space, setup.vcpu_id.into());
        vcpu.setup_guest(setup);
        Ok(vcpu)
    }

    /// vCPU `id` of the domain `space` describes, its VMCB controls set, its state zero.
    fn with_space(space: SharedSpace, id: usize) -> Vcpu {
        let caps = super::caps();
        let (ram, domain_id, root, upcall_vector, xapic) = {
            let s = space.borrow();
            (s.ram, s.domain_id, s.root, s.upcall_vector, s.xapic_at_reset)
        };
        let mut vcpu = Vcpu {
            vmcb: Box::new(Vmcb::zeroed()),
            space,
            id,
            regs: Gprs::default(),
            ram,
            ctx: Box::new(ExitContext::new(
                RamRange { base: ram.guest, size: ram.size },
                domain_id,
                u16::try_from(id).unwrap_or(u16::MAX),
                caps.nrip,
            )),
            xen_timer: None,
            timer_fired: false,
            preempt_at: None,
            fpu: GuestFpu::new(),
            asid: AsidTag::default(),
            asid_cpu: usize::MAX,
        };
        vcpu.ctx.upcall_vector = upcall_vector;
        if xapic {
            vcpu.ctx.msrs.lapic = crate::x86::vlapic::VLapic::new_xapic(id as u32);
        }
        vcpu.setup_controls(ept::ncr3(root));
        vcpu
    }

    /// A sibling the guest started with STARTUP: real mode at `entry` (`vector << 12`), as a
    /// processor leaves its wait-for-SIPI state: CS = entry >> 4, IP = 0.
    fn started_by_sipi(space: SharedSpace, id: usize, entry: u64) -> Vcpu {
        let mut vcpu = Vcpu::with_space(space, id);
        let s = &mut vcpu.vmcb.save;
        let real = |selector: u16, base: u64, attrib| Segment { selector, attrib, limit: 0xffff, base };
        let start = RealModeEntry::at(entry);
        s.cs = real(start.cs_selector, start.cs_base, REAL_CODE);
        for seg in [&mut s.ds, &mut s.es, &mut s.ss, &mut s.fs, &mut s.gs] {
            *seg = real(0, 0, REAL_DATA);
        }
        s.tr = Segment { selector: 0, attrib: attrib::TSS32_BUSY, limit: 0xffff, base: 0 };
        s.ldtr = Segment { selector: 0, attrib: attrib::LDT, limit: 0xffff, base: 0 };
        s.gdtr = Segment { selector: 0, attrib: 0, limit: 0xffff, base: 0 };
        s.idtr = Segment { selector: 0, attrib: 0, limit: 0xffff, base: 0 };
        s.cpl = 0;
        s.efer = EFER_SVME;
        s.cr0 = CR0_ET;
        s.cr3 = 0;
        s.cr4 = 0;
        s.dr6 = 0xffff_0ff0;
        s.dr7 = 0x400;
        s.rflags = 0x2;
        s.rip = start.ip;
        s.rsp = 0;
        s.g_pat = DEFAULT_PAT;
        // Events may already wait in its `vcpu_info` (Linux registers it, flagging everything,
        // from the vCPU that starts this one, and sends events while it is still off): Xen
        // keeps a vCPU's upcall pending until it runs, so it takes one once it enables
        // interrupts, and scans.
        vcpu.ctx.upcall_pending = true;
        vcpu
    }

    fn setup_controls(&mut self, ncr3: u64) {
        let c = &mut self.vmcb.control;
        // No CR intercepts at all: nested paging needs none, and QEMU's TCG misreports
        // intercepted CR reads. RDTSC/RDTSCP run natively (TCG misreports RDTSCP too).
        c.intercept_misc1 = misc1::INTR
            | misc1::NMI
            | misc1::INIT
            | misc1::CPUID
            | misc1::HLT
            | misc1::IOIO_PROT
            | misc1::MSR_PROT
            | misc1::SHUTDOWN;
        c.intercept_misc2 = misc2::VMRUN
            | misc2::VMMCALL
            | misc2::VMLOAD
            | misc2::VMSAVE
            | misc2::STGI
            | misc2::CLGI
            | misc2::SKINIT
            | misc2::XSETBV;
        c.iopm_base_pa = super::iopm();
        c.msrpm_base_pa = super::msrpm();
        // The ASID is given at each entry (`enter_asid`).
        c.tlb_control = tlb::FLUSH_ALL;
        c.v_intr = crate::x86::vmcb::vintr::V_INTR_MASKING;
        c.np_enable = 1;
        c.n_cr3 = ncr3;
    }

    /// The Xen PVH start state: 32-bit flat protected mode, paging off, EBX = start info.
    fn setup_guest(&mut self, setup: &GuestSetup) {
        let s = &mut self.vmcb.save;
        let flat = |selector, attrib| Segment { selector, attrib, limit: 0xffff_ffff, base: 0 };
        s.cs = flat(0x08, attrib::CODE32);
        for seg in [&mut s.ds, &mut s.es, &mut s.ss, &mut s.fs, &mut s.gs] {
            *seg = flat(0x10, attrib::DATA32);
        }
        s.tr = Segment { selector: 0, attrib: attrib::TSS32_BUSY, limit: 0x67, base: 0 };
        s.ldtr = Segment::default();
        s.gdtr = Segment::default();
        s.idtr = Segment::default();
        s.cpl = 0;
        // SVME must be set in the guest's EFER for VMRUN; the MSR policy hides it.
        s.efer = EFER_SVME;
        s.cr0 = CR0_PE | CR0_ET;
        s.cr3 = 0;
        s.cr4 = 0;
        s.dr6 = 0xffff_0ff0;
        s.dr7 = 0x400;
        s.rflags = 0x2;
        s.rip = setup.entry;
        s.rsp = 0;
        s.g_pat = DEFAULT_PAT;
        self.regs.0[RBX] = setup.boot_arg;
    }

    fn translation(&self) -> Translation {
        let s = &self.vmcb.save;
        Translation { mode: PagingMode::from_registers(s.cr0, s.cr4, s.efer), cr3: s.cr3 }
    }
}

impl VirtualCpu for Vcpu {
    fn run(&mut self) -> Exit {
        let exit = self.run_here();
        // The core may give this vCPU to another CPU next.
        self.fpu.leave();
        exit
    }

    fn set_hypercall_result(&mut self, value: u64) {
        self.regs.0[RAX] = policy::hypercall_result(value, svm::in_long_mode(&self.vmcb));
    }

    fn pc(&self) -> u64 {
        self.vmcb.save.rip
    }

    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        self.ram.copy_from(self.translation(), gva, buf, &self.space.borrow().hidden)
    }

    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.ram.copy_to(self.translation(), gva, buf, &self.space.borrow().hidden)
    }

    fn guest_phys_of(&mut self, gva: u64) -> Option<u64> {
        self.ram.guest_phys(self.translation(), gva, &self.space.borrow().hidden)
    }

    fn power_on_sibling(&mut self, index: usize, entry: u64, _context: u64) -> Option<Vcpu> {
        let sibling = self.space.borrow().is_sibling(self.id, index);
        sibling.then(|| Vcpu::started_by_sipi(self.space.clone(), index, entry))
    }

    fn interrupt_pending(&self) -> bool {
        self.ctx.interrupt_pending()
            || self.space.borrow().mailbox.has(self.id)
            || self.vmcb.control.v_intr & vintr::V_IRQ != 0
            || self.timer_fired
            || self.xen_timer.is_some_and(|t| super::super::now_ns() >= t)
    }

    fn timer_deadline_ns(&self) -> Option<u64> {
        self.xen_timer
    }

    fn set_preemption_deadline(&mut self, deadline_ns: Option<u64>) {
        self.preempt_at = deadline_ns;
    }

    fn set_xen_timer(&mut self, deadline_ns: Option<u64>) -> bool {
        self.xen_timer = deadline_ns;
        true
    }

    fn take_expired_timer(&mut self) -> bool {
        self.check_timer();
        core::mem::take(&mut self.timer_fired)
    }
}

impl Vcpu {
    /// Enter the guest on this CPU until an exit the core must see.
    fn run_here(&mut self) -> Exit {
        loop {
            if self.check_timer() || self.preempt_at.is_some_and(|t| super::super::now_ns() >= t) {
                return Exit::Preempted;
            }
            self.sync_with_domain();
            svm::inject_interrupts(&mut self.vmcb, &mut self.ctx);
            svm::before_run(&mut self.vmcb, &self.regs);
            // The run ends at the first of the core's deadline and the Xen timer.
            hostapic::arm(match (self.preempt_at, self.xen_timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            });
            self.fpu.enter(self.ctx.xcr0);
            self.enter_asid();
            let vmcb = &raw mut *self.vmcb;
            // SAFETY: the VMCB is page-aligned, identity mapped (physical = virtual) and fully
            // set up, with nested paging over this domain's RAM only; the host VMSAVE area is
            // ours; `regs` outlives the call; the assembly restores the callee-saved registers,
            // the stack and the host's TR/FS/GS state. The interrupt it may open the host to
            // has a gate in the IDT (`hostapic`'s stub), and IF is clear again on return.
            unsafe { xhv_svm_run(&mut self.regs, vmcb as u64, super::host_vmsave_area()) };
            space::left_guest();
            // Later runs keep the TLB entries tagged with this vCPU's ASID.
            self.vmcb.control.tlb_control = tlb::NOTHING;
            svm::note_delivery(&self.vmcb, &mut self.ctx);
            svm::after_exit(&mut self.vmcb, &mut self.regs);
            let exit = {
                let tr = self.translation();
                let space = self.space.borrow();
                let mut p = WithCode { ram: &self.ram, tr, hidden: &space.hidden };
                svm::handle_exit(&mut self.vmcb, &mut self.regs, &mut self.ctx, &mut p)
            };
            if let Some(gpa) = self.ctx.hypercall_page.take() {
                // A page outside RAM is the guest's loss: its later calls fault there.
                let _ = self.ram.write_phys(gpa, &policy::hypercall_page(true), &self.space.borrow().hidden);
            }
            if let Some(ipi) = self.ctx.msrs.lapic.take_ipi()
                && let Some(exit) = self.space.borrow_mut().send_ipi(ipi)
            {
                return exit;
            }
            match exit {
                Some(exit) => return exit,
                None if self.preempt_at.is_some_and(|t| super::super::now_ns() >= t) => return Exit::Preempted,
                None => {}
            }
        }
    }

    /// Take this vCPU's ASID for the coming VMRUN: its own while the CPU's generation lasts,
    /// a fresh one (after one flush of every tag) when the supply ran out since.
    fn enter_asid(&mut self) {
        let cpu = this_cpu();
        if self.asid_cpu != cpu {
            // Another CPU's ASID: take one of this CPU's (a fresh one is clean).
            self.asid = AsidTag::default();
            self.asid_cpu = cpu;
        }
        let a = asid_pool(cpu).lock().assign(&mut self.asid);
        self.vmcb.control.guest_asid = a.asid;
        if a.flush_all {
            self.vmcb.control.tlb_control = tlb::FLUSH_ALL;
        }
    }

    /// Before entering the guest: take the IPIs other vCPUs sent, and flush this CPU's TLB
    /// if the domain's tables changed since it last did.
    fn sync_with_domain(&mut self) {
        let ctx = &mut *self.ctx;
        let stale = self.space.borrow_mut().sync_vcpu(self.id, &mut ctx.msrs.lapic, &mut ctx.upcall_vector);
        if stale {
            self.vmcb.control.tlb_control = tlb::FLUSH_ALL;
        }
    }

    /// Fire the Xen timer if it is due; true while a fired timer is unreported.
    fn check_timer(&mut self) -> bool {
        if self.xen_timer.is_some_and(|t| super::super::now_ns() >= t) {
            self.xen_timer = None;
            self.timer_fired = true;
        }
        self.timer_fired
    }
}
