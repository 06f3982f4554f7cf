//! One vCPU of a domain: its registers, its stage-2 tables, and the decoding of its exits.
//!
//! One vCPU runs on the boot CPU at a time and nothing else uses EL1, so the guest's EL1
//! system registers simply stay in the hardware between runs; only the general-purpose and
//! FP/SIMD registers (which the hypervisor's own code uses) are saved in [`Context`].

extern crate alloc;

use super::mmu::clean_invalidate_dcache;
use super::vectors::{enter_guest, kind};
use crate::arm::psci;
use crate::arm::stage2::{self, Stage2Tables};
use crate::arm::syndrome::{self, Syndrome, ec};
use crate::boot::GuestSetup;
use crate::exit::{BadGuestAddress, Exit, FaultKind, GuestFault, HypercallArgs, VirtualCpu};
use aarch64_cpu::asm::barrier::{self, isb};
use aarch64_cpu::registers::{
    CNTHCTL_EL2, CNTVOFF_EL2, ELR_EL1, ESR_EL1, ESR_EL2, FAR_EL2, HCR_EL2, HPFAR_EL2, ID_AA64MMFR0_EL1, PAR_EL1,
    Readable, SCTLR_EL1, SPSR_EL1, VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2, Writeable,
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
        Ok(Vcpu { ctx, tables, setup: *setup, vmid, tlb_clean: false })
    }

    /// Load this vCPU's EL2 controls (stage-2, traps, virtual IDs) before entering it.
    fn activate(&mut self) {
        HCR_EL2.set(HCR_GUEST);
        VTCR_EL2.set(stage2::VTCR_EL2);
        VTTBR_EL2.set(stage2::vttbr(self.tables.root_address(), self.vmid));
        VMPIDR_EL2.set(MPIDR_RES1 | u64::from(self.setup.vcpu_id));
        CNTHCTL_EL2.set(CNTHCTL_EL1_PHYS);
        CNTVOFF_EL2.set(0);
        isb(barrier::SY);
        if !self.tlb_clean {
            // A fresh domain: its EL1 starts from reset, and no stale translations of a
            // previous domain with the same VMID may survive.
            SCTLR_EL1.set(SCTLR_EL1_RESET);
            // SAFETY: invalidates stage-1+2 TLB entries of the current VMID only.
            unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
            self.tlb_clean = true;
        }
    }

    /// Decide on one exit; `None` means it was handled here and the guest resumes.
    fn handle(&mut self, exit_kind: u64) -> Option<Exit> {
        match exit_kind {
            kind::SYNC => self.handle_sync(Syndrome(ESR_EL2.get())),
            kind::IRQ | kind::FIQ => Some(Exit::Preempted),
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
                Some(Exit::Halt)
            }
            ec::DABT_LOWER | ec::IABT_LOWER if esr.is_stage2_abort() => {
                let ipa = syndrome::fault_ipa(HPFAR_EL2.get(), FAR_EL2.get());
                let in_ram = ipa >= self.setup.ram_guest && ipa - self.setup.ram_guest < self.setup.ram_size;
                let kind = if in_ram { FaultKind::UnhandledTrap } else { FaultKind::UnmappedGuestPhysical };
                Some(self.fault(kind, ipa, esr.0))
            }
            _ => Some(self.fault(FaultKind::UnhandledTrap, 0, esr.0)),
        }
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
            // SAFETY: `ctx` is a live, exclusively borrowed Context whose layout the assembly
            // knows; its registers were set up by `new` or left by the last exit, and the
            // EL2 controls for this guest were loaded by `activate`.
            let exit_kind = unsafe { enter_guest(&mut *self.ctx) };
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
// SAFETY: arrays of u64 and a usize count.
unsafe impl Zeroable for Stage2Tables {}
