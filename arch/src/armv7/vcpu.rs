//! One vCPU of a domain: LPAE stage-2 over its RAM (shared by the domain's vCPUs), the HYP
//! trap configuration, and the decoding of what brought it back to the hypervisor.
//!
//! Siblings come up through PSCI CPU_ON; every vCPU runs on the boot CPU, so what they
//! share is a plain `Rc<DomainSpace>`.

extern crate alloc;

use super::cp15::{self, GuestCp15};
use super::sysreg;
use super::vectors::{EXIT_FIQ, EXIT_IRQ, EXIT_TRAP, GuestRegs, armv7_enter_guest};
use super::vfp::{self, GuestVfp};
use crate::arm::psci::{self, Action, SmpAction};
use crate::arm::stage2::{self, Stage2Tables};
use crate::arm::syndrome::{Syndrome, ec, fault_ipa};
use crate::arm::vgic;
use crate::boot::GuestSetup;
use crate::exit::{BadGuestAddress, CpuOnResult, Exit, FaultKind, GuestFault, HypercallArgs, VirtualCpu};
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

/// The immediate Xen's ARM hypercalls use (`hvc #0xEA1`); PSCI uses `hvc #0`.
const XEN_HVC_IMM: u16 = 0xea1;
const PSCI_HVC_IMM: u16 = 0;

/// HCR for a running guest: stage-2 on (VM), set/way cache ops become clean+invalidate
/// (SWIO), physical FIQ/IRQ/asynchronous aborts go to HYP (FMO, IMO, AMO), SMC traps (TSC),
/// WFI and WFE trap (TWI, TWE).
const HCR_GUEST: u32 = HCR_VM | HCR_SWIO | HCR_FMO | HCR_IMO | HCR_AMO | HCR_TWI | HCR_TWE | HCR_TSC;
const HCR_VM: u32 = 1 << 0;
const HCR_SWIO: u32 = 1 << 1;
const HCR_FMO: u32 = 1 << 3;
const HCR_IMO: u32 = 1 << 4;
const HCR_AMO: u32 = 1 << 5;
const HCR_TWI: u32 = 1 << 13;
const HCR_TWE: u32 = 1 << 14;
const HCR_TSC: u32 = 1 << 19;

/// How a guest starts: SVC mode, ARM state, little-endian, asynchronous aborts, IRQ and
/// FIQ masked.
const CPSR_SVC_MASKED: u32 = 0x1d3;
/// VMPIDR: bit 31 is reserved-one; U (bit 30) clear: one of several CPUs; Aff0 = vCPU id.
const VMPIDR_BASE: u32 = 1 << 31;

/// PAR bits: the translation failed (F) / the result is in the 64-bit LPAE format.
const PAR_F: u64 = 1 << 0;
const PAR_LPAE: u64 = 1 << 11;
const PAGE: u64 = 0x1000;

/// What the vCPUs of one domain share.
struct DomainSpace {
    /// Stage-2 tables; VTTBR points into them, so they live as long as any vCPU. Changed
    /// only by [`VirtualCpu::map_host_page`], for every vCPU of the domain at once.
    stage2: RefCell<Box<Stage2Tables>>,
    /// vCPU n is on (created and not powered off).
    online: RefCell<Vec<bool>>,
}

pub struct Vcpu {
    regs: GuestRegs,
    space: Rc<DomainSpace>,
    vttbr: u64,
    vmpidr: u32,
    /// The domain's RAM (the vCPU fields of the setup are vCPU 0's).
    ram: GuestSetup,
    /// This vCPU's index in its domain (MPIDR Aff0).
    id: usize,
    /// Its CP15 context (MMU, vectors, CPACR, ...) and its d0-d31, FPSCR, FPEXC: on the CPU
    /// while this vCPU runs, here otherwise.
    cp15: GuestCp15,
    vfp: GuestVfp,
}

impl Vcpu {
    pub fn new(setup: &GuestSetup) -> Result<Vcpu, &'static str> {
        let vmid = u8::try_from(setup.domain_id).map_err(|_| "domain id does not fit an 8-bit VMID")?;
        let entry = u32::try_from(setup.entry).map_err(|_| "entry point above 4 GiB")?;
        let mut tables = zeroed_stage2();
        stage2::map_guest_ram(&mut tables, setup.ram_guest, setup.ram_host, setup.ram_size)
            .map_err(|_| "guest RAM cannot be mapped at stage 2")?;
        let vttbr = stage2::vttbr(tables.root_address(), vmid);
        // A VMID may have been used by an earlier domain: forget its translations.
        sysreg::dsb();
        sysreg::tlbiallnsnh(0);
        sysreg::dsb();
        let mut regs = GuestRegs { pc: entry, cpsr: CPSR_SVC_MASKED, ..GuestRegs::default() };
        // Linux's ARM boot protocol: r0 = 0, r1 = machine type (~0: "use the DT"), r2 = DT.
        regs.r[1] = u32::MAX;
        regs.r[2] = setup.boot_arg as u32;
        let mut online = alloc::vec![false; usize::from(setup.nr_vcpus.max(1))];
        online[0] = true;
        let space = Rc::new(DomainSpace { stage2: RefCell::new(tables), online: RefCell::new(online) });
        Ok(Vcpu::with_regs(space, vttbr, *setup, 0, regs))
    }

    fn with_regs(space: Rc<DomainSpace>, vttbr: u64, ram: GuestSetup, id: usize, regs: GuestRegs) -> Vcpu {
        let vmpidr = VMPIDR_BASE | (id as u32 & 0xff);
        Vcpu { regs, space, vttbr, vmpidr, ram, id, cp15: cp15::reset(), vfp: vfp::reset() }
    }

    /// Make this vCPU's stage-2, trap configuration and CP15 context the CPU's.
    fn activate(&mut self) {
        sysreg::write_vtcr(stage2::VTCR_V7);
        sysreg::write_vttbr(self.vttbr);
        sysreg::write_vpidr(sysreg::midr());
        sysreg::write_vmpidr(self.vmpidr);
        sysreg::write_hcr(HCR_GUEST);
        sysreg::isb();
        self.cp15.load();
    }

    /// What to do about the exception that ended the last run; `None` resumes the guest.
    fn handle_exit(&mut self, reason: u32) -> Option<Exit> {
        match reason {
            EXIT_TRAP => self.handle_trap(Syndrome(u64::from(sysreg::hsr()))),
            EXIT_IRQ | EXIT_FIQ => Some(Exit::Preempted),
            _ => Some(self.fault(FaultKind::FatalState, 0, u64::from(reason))),
        }
    }

    fn handle_trap(&mut self, hsr: Syndrome) -> Option<Exit> {
        match hsr.class() {
            ec::WFX => {
                self.regs.pc = self.regs.pc.wrapping_add(hsr.instruction_length() as u32);
                Some(Exit::Halt)
            }
            ec::HVC32 if hsr.imm16() == XEN_HVC_IMM => Some(Exit::Hypercall(self.hypercall_args())),
            ec::HVC32 if hsr.imm16() == PSCI_HVC_IMM => self.psci(),
            ec::IABT_LOWER | ec::DABT_LOWER => Some(self.abort(hsr)),
            _ => Some(self.fault(FaultKind::UnhandledTrap, 0, hsr.0)),
        }
    }

    /// nr in r12, arguments in r0..r4; HVC's preferred return already points past it.
    fn hypercall_args(&self) -> HypercallArgs {
        let r = &self.regs.r;
        HypercallArgs { nr: u64::from(r[12]), args: [r[0], r[1], r[2], r[3], r[4]].map(u64::from), compat: false }
    }

    fn psci(&mut self) -> Option<Exit> {
        let r = &self.regs.r;
        let action = {
            let online = self.space.online.borrow();
            psci::handle_smp(r[0], [r[1], r[2], r[3]].map(u64::from), online.len(), |n| online[n])
        };
        match action {
            SmpAction::Plain(Action::Return(v)) => {
                self.regs.r[0] = v as u32;
                None
            }
            SmpAction::Plain(Action::PowerOff) => Some(Exit::PowerOff),
            SmpAction::Plain(Action::Reset) => Some(Exit::Reset),
            SmpAction::CpuOn { target, entry, context } => Some(Exit::CpuOn { target, entry, context }),
            SmpAction::CpuOff => {
                self.space.online.borrow_mut()[self.id] = false;
                Some(Exit::CpuOff)
            }
        }
    }

    /// A stage-2 abort: the guest touched an IPA outside its RAM (or something stranger).
    fn abort(&self, hsr: Syndrome) -> Exit {
        let far = if hsr.class() == ec::DABT_LOWER { sysreg::hdfar() } else { sysreg::hifar() };
        let gpa = fault_ipa(u64::from(sysreg::hpfar()), u64::from(far));
        let in_ram = gpa >= self.ram.ram_guest && gpa - self.ram.ram_guest < self.ram.ram_size;
        let kind =
            if hsr.is_stage2_abort() && !in_ram { FaultKind::UnmappedGuestPhysical } else { FaultKind::UnhandledTrap };
        self.fault(kind, gpa, hsr.0)
    }

    fn fault(&self, kind: FaultKind, gpa: u64, syndrome: u64) -> Exit {
        Exit::Fault(GuestFault { kind, gpa, pc: self.pc(), syndrome })
    }

    /// Host-physical address of guest-virtual `gva`, as the guest's PL1 would reach it for a
    /// read or write, if that lands in this domain's RAM.
    fn host_address(&mut self, gva: u64, write: bool) -> Option<u64> {
        let va = u32::try_from(gva).ok()?;
        self.activate();
        let par = translate(va & !(PAGE as u32 - 1), write);
        if par & PAR_F != 0 {
            return None;
        }
        let page = if par & PAR_LPAE != 0 { par & 0xff_ffff_f000 } else { par & 0xffff_f000 };
        let pa = page | (gva & (PAGE - 1));
        let ram = &self.ram;
        (pa >= ram.ram_host && pa - ram.ram_host < ram.ram_size).then_some(pa)
    }

    /// Walk guest-physical `[gpa, gpa + len)` through the domain's stage 2, calling
    /// `f(host_pa, offset, n)` per piece. Only the domain's own RAM is reached: a hypervisor
    /// page `map_host_page` put over a RAM page fails the whole copy, so neither it nor the
    /// RAM beneath it (which the guest no longer sees) is touched; as copies through guest
    /// virtual addresses, which land on it outside the domain's RAM.
    fn copy_guest_phys(&self, gpa: u64, len: usize, f: impl FnMut(u64, usize, usize)) -> Result<(), BadGuestAddress> {
        let ram = &self.ram;
        let in_ram = |pa: u64, n: usize| pa >= ram.ram_host && pa - ram.ram_host + n as u64 <= ram.ram_size;
        self.space.stage2.borrow().for_each_host_piece(gpa, len, in_ram, f).map_err(BadGuestAddress)
    }

    /// Copy between guest virtual memory and `len` bytes, one guest page at a time.
    fn copy_pages(
        &mut self,
        gva: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), BadGuestAddress> {
        let mut done = 0usize;
        while done < len {
            let va = gva.checked_add(done as u64).ok_or(BadGuestAddress(gva))?;
            let n = ((PAGE - (va & (PAGE - 1))) as usize).min(len - done);
            let pa = self.host_address(va, write).ok_or(BadGuestAddress(va))?;
            f(pa, done, n);
            done += n;
        }
        Ok(())
    }
}

/// Stage-2 tables on the heap, built in place (they are too big for the boot stack).
fn zeroed_stage2() -> Box<Stage2Tables> {
    let layout = core::alloc::Layout::new::<Stage2Tables>();
    // SAFETY: the layout is Stage2Tables' own, and all-zero bytes are a valid (empty)
    // Stage2Tables: every entry invalid, no level-2 table used.
    let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<Stage2Tables>();
    if ptr.is_null() {
        alloc::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is a fresh, initialised allocation of exactly this type, owned by nobody
    // else; Box frees it with the same layout.
    unsafe { Box::from_raw(ptr) }
}

/// Run the address translation operation for a guest PL1 read or write and return PAR.
/// The guest's own PAR (its last ATS result) is put back afterwards.
fn translate(va: u32, write: bool) -> u64 {
    let guest_par = sysreg::par();
    if write {
        sysreg::ats12nsopw(va);
    } else {
        sysreg::ats12nsopr(va);
    }
    sysreg::isb();
    let result = sysreg::par();
    sysreg::write_par(guest_par);
    result
}

impl Vcpu {
    /// Change one page of the domain's stage-2 tables with `change`, then drop the old
    /// translations of its VMID.
    fn change_stage2(
        &mut self,
        gpa: u64,
        change: impl FnOnce(&mut Stage2Tables) -> Result<(), crate::arm::lpae::MapError>,
    ) -> Result<(), BadGuestAddress> {
        change(&mut self.space.stage2.borrow_mut()).map_err(|_| BadGuestAddress(gpa))?;
        // ARMv7 has no by-IPA invalidation (TLBIIPAS2 is ARMv8's): with this domain's VTTBR
        // loaded, TLBIALLIS from HYP drops every stage-1 and stage-2 entry of its VMID, the
        // replaced block's and page's included. The DSB before it publishes the descriptor
        // to the table walker; the DSB and ISB after it complete the invalidation before the
        // guest (or an ATS of a copy) translates again.
        sysreg::dsb();
        sysreg::write_vttbr(self.vttbr);
        sysreg::isb();
        sysreg::tlbiallis(0);
        sysreg::dsb();
        sysreg::isb();
        Ok(())
    }
}

impl VirtualCpu for Vcpu {
    fn run(&mut self) -> Exit {
        loop {
            self.activate();
            self.vfp.load();
            // SAFETY: `regs` is a valid GuestRegs for the duration of the call; the world
            // switch saves and restores the host's callee-saved registers and stack, and the
            // guest runs under stage-2 translation confined to this domain's RAM, with every
            // exception it cannot handle itself coming back here through the HYP vectors.
            let reason = unsafe { armv7_enter_guest(&raw mut self.regs) };
            if let Some(exit) = self.handle_exit(reason) {
                return exit;
            }
        }
    }

    fn set_hypercall_result(&mut self, value: u64) {
        // 32-bit guests see the low half; negative errors stay negative.
        self.regs.r[0] = value as u32;
    }

    fn pc(&self) -> u64 {
        u64::from(self.regs.pc)
    }

    fn copy_from_guest(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        self.copy_pages(gva, buf.len(), false, |pa, at, n| {
            buf[at..at + n].copy_from_slice(super::phys_slice(pa, n as u64));
        })
    }

    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.copy_pages(gva, buf.len(), true, |pa, at, n| {
            super::phys_slice_mut(pa, n as u64).copy_from_slice(&buf[at..at + n]);
        })
    }

    fn read_guest_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        self.copy_guest_phys(gpa, buf.len(), |pa, at, n| {
            buf[at..at + n].copy_from_slice(super::phys_slice(pa, n as u64));
        })
    }

    fn write_guest_phys(&mut self, gpa: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.copy_guest_phys(gpa, buf.len(), |pa, at, n| {
            super::phys_slice_mut(pa, n as u64).copy_from_slice(&buf[at..at + n]);
        })
    }

    /// Map host page `hpa` at `gpa` in the domain's stage 2 (over RAM: replacing that page,
    /// its 2 MiB block split), then drop every cached translation of the domain's VMID.
    fn map_host_page(&mut self, gpa: u64, hpa: u64) -> Result<(), BadGuestAddress> {
        // Anywhere but the guest's GIC distributor (the range `arm::vgic` owns, refused as on
        // aarch64), and only a page of host RAM. Over guest RAM it replaces that page, as
        // Xen's add_to_physmap does.
        if vgic::claims(gpa) || !hpa.is_multiple_of(PAGE) || !super::is_ram(hpa, PAGE) {
            return Err(BadGuestAddress(gpa));
        }
        self.change_stage2(gpa, |tables| tables.map_page(gpa, hpa))
    }

    fn map_grant(&mut self, gpa: u64, hpa: u64, writable: bool) -> Result<(), BadGuestAddress> {
        if vgic::claims(gpa) || !hpa.is_multiple_of(PAGE) || !super::is_ram(hpa, PAGE) {
            return Err(BadGuestAddress(gpa));
        }
        self.change_stage2(gpa, |tables| tables.map_granted_page(gpa, hpa, writable))
    }

    fn unmap_grant(&mut self, gpa: u64) -> Result<(), BadGuestAddress> {
        let (ram_guest, ram_host, ram_size) = (self.ram.ram_guest, self.ram.ram_host, self.ram.ram_size);
        match gpa.checked_sub(ram_guest).filter(|&off| off < ram_size) {
            Some(off) => self.change_stage2(gpa, |tables| tables.restore_ram_page(gpa, ram_host + off)),
            None => self.change_stage2(gpa, |tables| tables.unmap_page(gpa)),
        }
    }

    fn complete_cpu_on(&mut self, result: CpuOnResult) {
        self.regs.r[0] = psci::cpu_on_status(result) as u32;
    }

    /// vCPU `index` starts like vCPU 0 (SVC mode, masked, MMU off) at `entry` with `context`
    /// in r0, over the same stage-2 tables and VMID.
    fn power_on_sibling(&mut self, index: usize, entry: u64, context: u64) -> Option<Vcpu> {
        let pc = u32::try_from(entry).ok()?;
        self.space.online.borrow_mut().get_mut(index).map(|on| *on = true)?;
        let mut regs = GuestRegs { pc, cpsr: CPSR_SVC_MASKED, ..GuestRegs::default() };
        regs.r[0] = context as u32;
        Some(Vcpu::with_regs(Rc::clone(&self.space), self.vttbr, self.ram, index, regs))
    }
}
