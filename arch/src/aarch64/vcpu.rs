//! One vCPU of a domain: its registers, its stage-2 tables, its virtual GIC, and the decoding
//! of its exits.
//!
//! One vCPU runs on the boot CPU at a time and nothing else uses EL1, so the guest's EL1
//! system registers (its virtual timer included) simply stay in the hardware between runs;
//! only the general-purpose and FP/SIMD registers (which the hypervisor's own code uses) are
//! saved in [`Context`], and the virtual CPU interface's state around each entry.
//!
//! Interrupts: the vGIC model ([`Vgic`]) is loaded into the list registers before every entry
//! and read back after every exit. Physical IRQs that arrive while the guest runs are the
//! guest's virtual timer (masked and injected as virtual PPI 27, the way Xen does it) and the
//! maintenance interrupt (more to inject); both are completed here and the guest resumes.

extern crate alloc;

use super::console::early_log;
use super::gic::{self, VcpuInterface};
use super::mmu::clean_invalidate_dcache;
use super::vectors::{enter_guest, kind};
use crate::arm::psci;
use crate::arm::stage2::{self, PAGE, Stage2Tables};
use crate::arm::syndrome::{self, DataAccess, Syndrome, SysRegAccess, ec, sysreg};
use crate::arm::vgic::{self, MAX_LRS, UPCALL_PPI, VTIMER_PPI, Vgic};
use crate::boot::GuestSetup;
use crate::exit::{BadGuestAddress, Exit, FaultKind, GuestFault, HypercallArgs, MmioAccess, VirtualCpu};
use aarch64_cpu::asm::barrier::{self, isb};
use aarch64_cpu::registers::{
    CNTHCTL_EL2, CNTPCT_EL0, CNTV_CTL_EL0, CNTVOFF_EL2, ELR_EL1, ESR_EL1, ESR_EL2, FAR_EL2, HCR_EL2, HPFAR_EL2,
    ID_AA64MMFR0_EL1, PAR_EL1, Readable, SCTLR_EL1, SPSR_EL1, VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2, Writeable,
};
use alloc::boxed::Box;

/// The Xen hypercall immediate: `hvc #0xEA1`.
const XEN_HVC_IMM: u16 = 0xea1;
/// HCR_EL2 while a guest runs: VM (stage-2), SWIO, FMO/IMO/AMO (physical interrupts to
/// EL2), TWI/TWE (trap WFI/WFE), TSC (trap SMC), RW (EL1 is AArch64).
const HCR_GUEST: u64 =
    (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 13) | (1 << 14) | (1 << 19) | (1 << 31);
/// SCTLR_EL1 as a CPU comes out of reset, MMU and caches off (RES1 bits only).
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// CNTHCTL_EL2: EL1 may use the physical counter and timer (EL1PCTEN, EL1PCEN).
const CNTHCTL_EL1_PHYS: u64 = 0b11;
/// MPIDR bit 31 is RES1.
const MPIDR_RES1: u64 = 1 << 31;
/// CNTV_CTL_EL0: ENABLE, IMASK, ISTATUS.
const CNTV_ENABLE: u64 = 1 << 0;
const CNTV_IMASK: u64 = 1 << 1;
const CNTV_ISTATUS: u64 = 1 << 2;
/// Distinct unknown vGIC offsets reported on the console per vCPU (then silence).
const UNKNOWN_LOGGED: usize = 8;

/// Guest registers plus the host state `enter_guest` keeps across a run. The layout is
/// shared with the assembly in `vectors.rs` through `offset_of!`.
#[repr(C, align(16))]
pub struct Context {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub fpcr: u64,
    pub fpsr: u64,
    /// x19-x30, sp, d8-d15, fpcr, fpsr of the host while the guest runs.
    pub host: [u64; 23],
    pub fp: [u128; 32],
}

pub struct Vcpu {
    ctx: Box<Context>,
    tables: Box<Stage2Tables>,
    setup: GuestSetup,
    vmid: u8,
    /// TLB entries of this VMID have been flushed since the tables were built.
    tlb_clean: bool,
    /// The domain's virtual GIC (one vCPU per domain for now, so it lives here).
    vgic: Box<Vgic>,
    /// This vCPU's virtual CPU interface state between runs.
    vif: VcpuInterface,
    /// List registers loaded for the current run.
    lrs_loaded: usize,
    /// The load reported by the last `Exit::Mmio`, waiting for `complete_mmio_read`.
    mmio_read: Option<DataAccess>,
    /// The guest's virtual counter starts near 0: CNTVOFF = the physical count at creation.
    cntvoff: u64,
    unknown_logged: [u64; UNKNOWN_LOGGED],
    unknown_count: usize,
}

impl Vcpu {
    pub fn new(setup: &GuestSetup) -> Result<Vcpu, &'static str> {
        if ID_AA64MMFR0_EL1.get() & 0xf < 2 {
            return Err("the CPU's physical address space is smaller than the 40-bit IPA space");
        }
        let vmid = u8::try_from(setup.domain_id).map_err(|_| "domain id does not fit an 8-bit VMID")?;
        if !super::is_ram(setup.ram_host, setup.ram_size) {
            return Err("guest RAM is not inside host RAM");
        }
        let mut tables = zeroed_box::<Stage2Tables>();
        stage2::map_guest_ram(&mut tables, setup.ram_guest, setup.ram_host, setup.ram_size)
            .map_err(|_| "guest RAM cannot be mapped at stage 2 (alignment or IPA range)")?;
        let mut ctx = zeroed_box::<Context>();
        ctx.x[0] = setup.boot_arg;
        ctx.elr = setup.entry;
        ctx.spsr = syndrome::SPSR_EL1H_MASKED;
        // The guest starts with its MMU off, i.e. non-cacheable: it must find the image the
        // core wrote through our caches in memory, and we must not keep lines over its RAM.
        clean_invalidate_dcache(setup.ram_host, setup.ram_size);
        // SAFETY: invalidating all instruction caches only drops cached state.
        unsafe { core::arch::asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
        Ok(Vcpu {
            ctx,
            tables,
            setup: *setup,
            vmid,
            tlb_clean: false,
            vgic: Box::new(Vgic::new(usize::from(setup.vcpu_id) + 1)),
            vif: VcpuInterface::default(),
            lrs_loaded: 0,
            mmio_read: None,
            cntvoff: CNTPCT_EL0.get(),
            unknown_logged: [0; UNKNOWN_LOGGED],
            unknown_count: 0,
        })
    }

    /// This vCPU's index in the vGIC (its redistributor).
    fn vgic_cpu(&self) -> usize {
        usize::from(self.setup.vcpu_id)
    }

    /// Load this vCPU's EL2 controls (stage-2, traps, virtual IDs) before entering it.
    fn activate(&mut self) {
        HCR_EL2.set(HCR_GUEST);
        VTCR_EL2.set(stage2::VTCR_EL2);
        VTTBR_EL2.set(stage2::vttbr(self.tables.root_address(), self.vmid));
        VMPIDR_EL2.set(MPIDR_RES1 | u64::from(self.setup.vcpu_id));
        CNTHCTL_EL2.set(CNTHCTL_EL1_PHYS);
        CNTVOFF_EL2.set(self.cntvoff);
        isb(barrier::SY);
        if !self.tlb_clean {
            // A fresh domain: its EL1 starts from reset (no timer left armed by the previous
            // domain), and no stale translations of one with the same VMID may survive.
            SCTLR_EL1.set(SCTLR_EL1_RESET);
            CNTV_CTL_EL0.set(0);
            // SAFETY: invalidates stage-1+2 TLB entries of the current VMID only.
            unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
            self.tlb_clean = true;
        }
    }

    /// Decide on one exit; `None` means it was handled here and the guest resumes.
    fn handle(&mut self, exit_kind: u64) -> Option<Exit> {
        match exit_kind {
            kind::SYNC => self.handle_sync(Syndrome(ESR_EL2.get())),
            kind::IRQ => self.handle_irq(),
            kind::FIQ => Some(Exit::Preempted),
            _ => Some(self.fault(FaultKind::FatalState, 0, ESR_EL2.get())),
        }
    }

    fn handle_sync(&mut self, esr: Syndrome) -> Option<Exit> {
        match esr.class() {
            ec::HVC64 => self.handle_hvc(esr),
            ec::SMC64 => {
                // No secure services are offered; TSC traps the SMC before it executes.
                self.ctx.elr += esr.instruction_length();
                self.ctx.x[0] = psci::NOT_SUPPORTED as u64;
                None
            }
            ec::WFX => {
                self.ctx.elr += esr.instruction_length();
                // A pending interrupt ends a WFI at once; else the core decides how to wait.
                if self.interrupt_waiting() { None } else { Some(Exit::Halt) }
            }
            ec::SYSREG64 => self.handle_sysreg(esr),
            ec::DABT_LOWER | ec::IABT_LOWER if esr.is_stage2_abort() => {
                let ipa = syndrome::fault_ipa(HPFAR_EL2.get(), FAR_EL2.get());
                if self.in_ram(ipa) {
                    return Some(self.fault(FaultKind::UnhandledTrap, ipa, esr.0));
                }
                match esr.data_access() {
                    Some(access) => self.handle_mmio(ipa, access, esr),
                    None => Some(self.fault(FaultKind::UnmappedGuestPhysical, ipa, esr.0)),
                }
            }
            _ => Some(self.fault(FaultKind::UnhandledTrap, 0, esr.0)),
        }
    }

    fn in_ram(&self, ipa: u64) -> bool {
        ipa >= self.setup.ram_guest && ipa - self.setup.ram_guest < self.setup.ram_size
    }

    /// A physical interrupt while the guest ran: acknowledge, act, complete, resume.
    fn handle_irq(&mut self) -> Option<Exit> {
        if !gic::ready() {
            return Some(Exit::Preempted);
        }
        let intid = gic::acknowledge();
        if intid >= gic::SPURIOUS {
            return None;
        }
        if intid == gic::vtimer_intid() {
            // The guest's timer fired. Masking it drops the level-sensitive line; the guest's
            // handler reprograms CNTV_CTL_EL0, which unmasks it again.
            CNTV_CTL_EL0.set(CNTV_CTL_EL0.get() | CNTV_IMASK);
            self.vgic.raise_private(self.vgic_cpu(), VTIMER_PPI);
        } else if intid != gic::maintenance_intid() {
            early_log!("unexpected physical interrupt {} while a guest ran", intid);
        }
        // The maintenance interrupt needs nothing more: the list registers were read back
        // on the way out and are refilled on the way in.
        gic::end_of_interrupt(intid);
        None
    }

    /// The guest would not wait in WFI: an interrupt is pending for it in the vGIC, or its
    /// timer has fired (the physical PPI is taken as soon as it re-enters).
    fn interrupt_waiting(&self) -> bool {
        let ctl = CNTV_CTL_EL0.get();
        let timer_fired = ctl & (CNTV_ENABLE | CNTV_IMASK | CNTV_ISTATUS) == CNTV_ENABLE | CNTV_ISTATUS;
        timer_fired || self.vgic.has_deliverable(self.vgic_cpu())
    }

    /// Load the list registers and the virtual CPU interface for the next entry.
    fn load_interrupts(&mut self) {
        if !gic::ready() {
            return;
        }
        let count = gic::lr_count().min(MAX_LRS);
        let plan = self.vgic.fill_lrs(self.vgic_cpu(), count);
        for n in 0..count {
            gic::write_lr(n, plan.values[n]);
        }
        self.lrs_loaded = plan.count;
        gic::load(&self.vif, plan.overflow);
        isb(barrier::SY);
    }

    /// Read back what the guest did with the list registers, and empty them.
    fn save_interrupts(&mut self) {
        if !gic::ready() {
            return;
        }
        let mut values = [0u64; MAX_LRS];
        for (n, v) in values.iter_mut().enumerate().take(self.lrs_loaded) {
            *v = gic::read_lr(n);
            gic::write_lr(n, 0);
        }
        gic::save(&mut self.vif);
        self.vgic.sync_lrs(self.vgic_cpu(), &values[..self.lrs_loaded]);
        self.lrs_loaded = 0;
    }

    /// A load or store outside RAM with a valid syndrome: the vGIC's registers are handled
    /// here; anything else goes to the core's device models. The PC moves past it either way.
    fn handle_mmio(&mut self, ipa: u64, access: DataAccess, esr: Syndrome) -> Option<Exit> {
        let write = access.write.then(|| access.store_value(self.reg(access.reg)));
        self.ctx.elr += esr.instruction_length();
        if let Some(out) = self.vgic.mmio(self.vgic_cpu(), ipa, access.size, write) {
            if out.unknown {
                self.log_unknown_vgic(ipa, write.is_some());
            }
            if !access.write {
                self.set_reg(access.reg, access.load_value(out.value));
            }
            return None;
        }
        self.mmio_read = (!access.write).then_some(access);
        Some(Exit::Mmio(MmioAccess { gpa: ipa, size: access.size, write }))
    }

    /// Say once per offset (for the first few) that the guest touched a register we lack.
    fn log_unknown_vgic(&mut self, ipa: u64, write: bool) {
        if self.unknown_logged.contains(&ipa) || self.unknown_count >= UNKNOWN_LOGGED {
            return;
        }
        self.unknown_logged[self.unknown_count] = ipa;
        self.unknown_count += 1;
        let what = if write { "write to" } else { "read of" };
        early_log!("d{}: vGIC: {} unmodelled register {:#x} ignored", self.setup.domain_id, what, ipa);
    }

    /// A trapped MSR/MRS: SGI generation goes to the vGIC; other GIC CPU-interface and ID
    /// registers read as zero and ignore writes; anything else is not emulated.
    fn handle_sysreg(&mut self, esr: Syndrome) -> Option<Exit> {
        let SysRegAccess { reg, rt, read } = esr.sysreg_access();
        let is_sgi = [sysreg::ICC_SGI1R_EL1, sysreg::ICC_ASGI1R_EL1, sysreg::ICC_SGI0R_EL1].contains(&reg);
        let harmless = reg.op0 == 3 && reg.op1 == 0 && (reg.crn == 12 || reg.crn == 0);
        if !is_sgi && !harmless {
            return Some(self.fault(FaultKind::UnhandledTrap, 0, esr.0));
        }
        if read {
            self.set_reg(rt, 0);
        } else if is_sgi {
            let value = self.reg(rt);
            self.vgic.write_sgi1r(self.vgic_cpu(), value);
        }
        self.ctx.elr += esr.instruction_length();
        None
    }

    /// General-purpose register `n` as an instruction reads it (31 = the zero register).
    fn reg(&self, n: u8) -> u64 {
        self.ctx.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    fn set_reg(&mut self, n: u8, value: u64) {
        if let Some(x) = self.ctx.x.get_mut(usize::from(n)) {
            *x = value;
        }
    }

    /// Walk `[gpa, gpa + len)` page by page through stage 2 (RAM and mapped host pages),
    /// calling `f(host_pa, buffer_offset, chunk_len)`.
    fn for_each_guest_phys_page(
        &self,
        gpa: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), BadGuestAddress> {
        let mut done = 0;
        while done < len {
            let ipa = gpa.checked_add(done as u64).ok_or(BadGuestAddress(gpa))?;
            let chunk = (PAGE - (ipa % PAGE)).min((len - done) as u64);
            let (pa, _) = self.tables.translate(ipa).ok_or(BadGuestAddress(ipa))?;
            if !super::is_ram(pa, chunk) {
                return Err(BadGuestAddress(ipa));
            }
            f(pa, done, chunk as usize);
            done += chunk as usize;
        }
        Ok(())
    }

    fn handle_hvc(&mut self, esr: Syndrome) -> Option<Exit> {
        // ELR_EL2 already points past the HVC.
        match esr.imm16() {
            XEN_HVC_IMM => {
                let x = &self.ctx.x;
                Some(Exit::Hypercall(HypercallArgs { nr: x[16], args: [x[0], x[1], x[2], x[3], x[4]] }))
            }
            0 => self.handle_psci(),
            _ => {
                self.inject_undef(esr);
                None
            }
        }
    }

    fn handle_psci(&mut self) -> Option<Exit> {
        let vmpidr = MPIDR_RES1 | u64::from(self.setup.vcpu_id);
        match psci::handle(self.ctx.x[0] as u32, self.ctx.x[1], vmpidr) {
            psci::Action::Return(v) => {
                self.ctx.x[0] = v as u64;
                None
            }
            psci::Action::PowerOff => Some(Exit::PowerOff),
            psci::Action::Reset => Some(Exit::Reset),
        }
    }

    /// An HVC immediate that means nothing in the Xen ABI: make it UNDEFINED, as HVC is on
    /// a CPU without EL2. Returning -ENOSYS instead would clobber x0 of a guest that did
    /// not make a hypercall, and hide the bug from it; an undefined-instruction exception
    /// is what its own exception handlers are there for.
    fn inject_undef(&mut self, esr: Syndrome) {
        let hvc_address = self.ctx.elr - esr.instruction_length();
        ESR_EL1.set(syndrome::undef_esr(esr));
        ELR_EL1.set(hvc_address);
        SPSR_EL1.set(self.ctx.spsr);
        self.ctx.elr = VBAR_EL1.get() + syndrome::el1_sync_vector_offset(self.ctx.spsr);
        self.ctx.spsr = syndrome::SPSR_EL1H_MASKED;
    }

    fn fault(&self, kind: FaultKind, gpa: u64, syndrome: u64) -> Exit {
        Exit::Fault(GuestFault { kind, gpa, pc: self.ctx.elr, syndrome })
    }

    /// Translate a guest virtual address through the guest's stage 1 and our stage 2 (the
    /// MMU walks both, with the guest's MMU on or off) to a host-physical address in this
    /// domain's RAM.
    fn translate(&self, gva: u64, write: bool) -> Option<u64> {
        let saved = PAR_EL1.get(); // PAR_EL1 belongs to the guest
        // SAFETY: AT only writes PAR_EL1, restored below. Our stage-2 (VTTBR, HCR.VM) and
        // the guest's EL1 translation registers are loaded, so the walk is the guest's.
        unsafe {
            if write {
                core::arch::asm!("at s12e1w, {}", in(reg) gva, options(nostack));
            } else {
                core::arch::asm!("at s12e1r, {}", in(reg) gva, options(nostack));
            }
        }
        isb(barrier::SY);
        let par = PAR_EL1.get();
        PAR_EL1.set(saved);
        if par & 1 != 0 {
            return None;
        }
        let pa = (par & 0x0000_ffff_ffff_f000) | (gva & 0xfff);
        let offset = pa.checked_sub(self.setup.ram_host)?;
        (offset < self.setup.ram_size).then_some(pa)
    }

    /// Walk `[gva, gva + len)` page by page, calling `f(host_pa, buffer_offset, chunk_len)`.
    fn for_each_page(
        &self,
        gva: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), BadGuestAddress> {
        let mut done = 0;
        while done < len {
            let va = gva.checked_add(done as u64).ok_or(BadGuestAddress(gva))?;
            let chunk = (0x1000 - (va & 0xfff) as usize).min(len - done);
            let pa = self.translate(va, write).ok_or(BadGuestAddress(va))?;
            f(pa, done, chunk);
            done += chunk;
        }
        Ok(())
    }
}

impl VirtualCpu for Vcpu {
    fn run(&mut self) -> Exit {
        self.activate();
        loop {
            self.load_interrupts();
            // SAFETY: `ctx` is a live, exclusively borrowed Context whose layout the assembly
            // knows; its registers were set up by `new` or left by the last exit, and the
            // EL2 controls for this guest were loaded by `activate`.
            let exit_kind = unsafe { enter_guest(&mut *self.ctx) };
            self.save_interrupts();
            if let Some(exit) = self.handle(exit_kind) {
                return exit;
            }
        }
    }

    fn set_hypercall_result(&mut self, value: u64) {
        self.ctx.x[0] = value;
    }

    fn pc(&self) -> u64 {
        self.ctx.elr
    }

    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        self.for_each_page(gva, buf.len(), false, |pa, off, n| {
            // The guest may have written with its MMU off (non-cacheable).
            clean_invalidate_dcache(pa, n as u64);
            buf[off..off + n].copy_from_slice(super::phys_slice(pa, n as u64));
        })
    }

    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.for_each_page(gva, buf.len(), true, |pa, off, n| {
            super::phys_slice_mut(pa, n as u64).copy_from_slice(&buf[off..off + n]);
            // Visible to the guest even if it reads with its MMU off.
            clean_invalidate_dcache(pa, n as u64);
        })
    }

    fn complete_mmio_read(&mut self, value: u64) {
        if let Some(access) = self.mmio_read.take() {
            self.set_reg(access.reg, access.load_value(value));
        }
    }

    fn read_guest_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        self.for_each_guest_phys_page(gpa, buf.len(), |pa, off, n| {
            clean_invalidate_dcache(pa, n as u64);
            buf[off..off + n].copy_from_slice(super::phys_slice(pa, n as u64));
        })
    }

    fn write_guest_phys(&mut self, gpa: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.for_each_guest_phys_page(gpa, buf.len(), |pa, off, n| {
            super::phys_slice_mut(pa, n as u64).copy_from_slice(&buf[off..off + n]);
            clean_invalidate_dcache(pa, n as u64);
        })
    }

    fn map_host_page(&mut self, gpa: u64, hpa: u64) -> Result<(), BadGuestAddress> {
        // Anywhere but over the vGIC (whose accesses must keep trapping), and only a page of
        // host RAM. Over guest RAM it replaces that page, as Xen's add_to_physmap does.
        if vgic::claims(gpa) || !hpa.is_multiple_of(PAGE) || !super::is_ram(hpa, PAGE) {
            return Err(BadGuestAddress(gpa));
        }
        self.tables.map_page(gpa, hpa).map_err(|_| BadGuestAddress(gpa))?;
        VTTBR_EL2.set(stage2::vttbr(self.tables.root_address(), self.vmid));
        isb(barrier::SY);
        // SAFETY: publishes the new descriptor to the table walker, then drops every cached
        // translation of this VMID (the one just loaded), the replaced page's included.
        unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
        Ok(())
    }

    fn raise_upcall(&mut self) {
        self.vgic.raise_private(self.vgic_cpu(), UPCALL_PPI);
    }

    fn set_irq_line(&mut self, intid: u32, level: bool) {
        self.vgic.set_spi_line(intid, level);
    }
}

/// A zero-filled heap allocation (tables and contexts are too big to build on the stack).
fn zeroed_box<T: Zeroable>() -> Box<T> {
    // SAFETY: `T: Zeroable` promises all-zero bytes are a valid `T`.
    unsafe { Box::<T>::new_zeroed().assume_init() }
}

/// Types for which all-zero memory is a valid value.
///
/// # Safety
/// Implement only for types made of integers and arrays of them.
unsafe trait Zeroable {}
// SAFETY: integers and arrays of integers only.
unsafe impl Zeroable for Context {}
// SAFETY: arrays of u64 and usize counts.
unsafe impl Zeroable for Stage2Tables {}
