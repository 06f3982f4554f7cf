//! One vCPU of a domain: LPAE stage-2 over its RAM (shared by the domain's vCPUs), the HYP
//! trap configuration, and the decoding of what brought it back to the hypervisor.
//!
//! Siblings come up through PSCI CPU_ON; a domain's vCPUs run on several physical CPUs at
//! once, so what they share sits behind a spin lock (`Arc<spin::Mutex<DomainSpace>>`).
//!
//! Interrupts: the domain's virtual GICv2 ([`Vgic`]) is loaded into the GICH list registers
//! before every entry and read back after every exit; the guest's GICC is the hardware's
//! GICV frame, mapped by stage 2. The guest uses its virtual timer (CNTV) directly; when it
//! fires while the guest runs, the physical PPI exits to HYP, where it is masked and injected
//! as virtual PPI 27, as on aarch64. The Hyp physical timer (CNTHP) ends a vCPU's slice.
//!
//! An exit that comes back to the same vCPU moves no state: its trap configuration, CP15
//! context, virtual timer and VFP registers stay on the CPU (see [`ACTIVE`]) until the vCPU
//! goes back to the scheduler ([`VirtualCpu::unload`]), and the list
//! registers are filled only when its vGIC has something for it.

extern crate alloc;

use super::cp15::{self, GuestCp15};
use super::smp::this_cpu;
use super::time::{clean_invalidate_dcache, count_to_ns, ns_to_count};
use super::vectors::{EXIT_FIQ, EXIT_IRQ, EXIT_TRAP, GuestRegs, armv7_enter_guest};
use super::vfp::{self, GuestVfp};
use super::{MAX_CPUS, gic, sysreg};
use crate::arm::gicv2;
use crate::arm::psci::{self, Action, SmpAction};
use crate::arm::stage2::{self, Stage2Tables};
use crate::arm::syndrome::{DataAccess, Syndrome, ec, fault_ipa};
use crate::arm::vgic::{self, GicVersion, MAX_LRS, UPCALL_PPI, VTIMER_PPI, Vgic};
use crate::boot::GuestSetup;
use crate::exit::{
    AfterExit, BadGuestAddress, CpuOnResult, Exit, FaultKind, GuestFault, HypercallArgs, MmioAccess, VirtualCpu,
};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Per physical CPU: the `uid` of the vCPU whose trap configuration and stage 2 that CPU
/// holds (0: none, or something else wrote them, or the vCPU was unloaded). An exit that
/// returns to the same vCPU loads nothing.
static ACTIVE: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// The next vCPU `uid` (never reused, so a dropped vCPU cannot be mistaken for a new one).
static NEXT_UID: AtomicUsize = AtomicUsize::new(1);

/// The immediate Xen's ARM hypercalls use (`hvc #0xEA1`); PSCI uses `hvc #0`.
const XEN_HVC_IMM: u16 = 0xea1;
const PSCI_HVC_IMM: u16 = 0;

/// HCR for a running guest: stage-2 on (VM), set/way cache ops become clean+invalidate
/// (SWIO), physical FIQ/IRQ/asynchronous aborts go to HYP (FMO, IMO, AMO), the guest's TLB
/// and branch predictor maintenance is broadcast to every pCPU, where its other vCPUs run or
/// ran (FB, as aarch64), SMC traps (TSC), WFI and WFE trap (TWI, TWE).
const HCR_GUEST: u32 = HCR_VM | HCR_SWIO | HCR_FMO | HCR_IMO | HCR_AMO | HCR_FB | HCR_TWI | HCR_TWE | HCR_TSC;
const HCR_VM: u32 = 1 << 0;
const HCR_SWIO: u32 = 1 << 1;
const HCR_FMO: u32 = 1 << 3;
const HCR_IMO: u32 = 1 << 4;
const HCR_AMO: u32 = 1 << 5;
const HCR_FB: u32 = 1 << 9;
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
/// CNTV_CTL: ENABLE, IMASK, ISTATUS.
const CNTV_ENABLE: u32 = 1 << 0;
const CNTV_IMASK: u32 = 1 << 1;
const CNTV_ISTATUS: u32 = 1 << 2;
/// CNTHCTL: PL1 may read the physical counter and use the physical timer.
const CNTHCTL_PL1_PHYS: u32 = 0b11;
/// CNTHP_CTL.ENABLE.
const CNTHP_ENABLE: u32 = 1;
/// HSR ISS bit 0 of a WFx trap: WFE rather than WFI.
const WFX_IS_WFE: u64 = 1;
/// CPSR.I: the guest's IRQ mask.
const CPSR_I: u32 = 1 << 7;

/// What the vCPUs of one domain share. Lock order: the core's lock (if held) before this
/// one; nothing is locked while it is held, and it is never held while a guest runs.
struct DomainSpace {
    /// Stage-2 tables; VTTBR points into them, so they live as long as any vCPU. Changed
    /// only by [`Vcpu::change_stage2`], for every vCPU of the domain at once.
    stage2: Box<Stage2Tables>,
    /// vCPU n is on (created and not powered off).
    online: Vec<bool>,
    /// The domain's virtual GICv2, every vCPU's banked state included.
    vgic: Vgic,
    /// The guest's virtual counter starts near 0: CNTVOFF = the physical count at creation.
    cntvoff: u64,
    /// vCPUs (bit n: vCPU n) an exit may have made an interrupt pending for: see
    /// [`VirtualCpu::take_sibling_kicks`].
    kicks: u64,
}

impl DomainSpace {
    /// Note that every vCPU of the domain but `id` may have an interrupt newly pending.
    fn kick_others(&mut self, id: usize) {
        let all = if self.online.len() >= 64 { u64::MAX } else { (1u64 << self.online.len()) - 1 };
        self.kicks |= all & !(1u64 << (id % 64));
    }
}

pub struct Vcpu {
    regs: GuestRegs,
    space: Arc<spin::Mutex<DomainSpace>>,
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
    /// The virtual CPU interface (GICH_VMCR, GICH_APR) between runs.
    vmcr: u32,
    apr: u32,
    /// List registers loaded for the current run.
    lrs_loaded: usize,
    /// Names this vCPU in [`ACTIVE`].
    uid: usize,
    /// The load reported by the last `Exit::Mmio`, waiting for `complete_mmio_read`.
    mmio_read: Option<DataAccess>,
    /// Physical count at which the next run ends with `Exit::Preempted`, and the deadline
    /// (ns) it was converted from: the core mostly passes the same one again.
    preempt_at: Option<u64>,
    preempt_ns: Option<u64>,
}

impl Vcpu {
    pub fn new(setup: &GuestSetup) -> Result<Vcpu, &'static str> {
        let vmid = u8::try_from(setup.domain_id).map_err(|_| "domain id does not fit an 8-bit VMID")?;
        let entry = u32::try_from(setup.entry).map_err(|_| "entry point above 4 GiB")?;
        let mut tables = zeroed_stage2();
        stage2::map_guest_ram(&mut tables, setup.ram_guest, setup.ram_host, setup.ram_size)
            .map_err(|_| "guest RAM cannot be mapped at stage 2")?;
        if gicv2::ready() {
            // The guest's GICC is the hardware's virtual CPU interface, used directly.
            let gicv = gicv2::vcpu_interface();
            for off in (0..vgic::GUEST_GICC_SIZE).step_by(PAGE as usize) {
                tables
                    .map_device_page(vgic::GUEST_GICC_BASE + off, gicv + off, &mut |_| {
                        // Tables no CPU has walked yet: nothing cached to drop.
                    })
                    .map_err(|_| "the GICv2 virtual CPU interface cannot be mapped at stage 2")?;
            }
        }
        // The instruction side: lines of these frames from an earlier owner must not be hit,
        // on whichever CPU the domain's vCPUs run.
        sysreg::icialluis(0);
        let vttbr = stage2::vttbr(tables.root_address(), vmid);
        // A VMID may have been used by an earlier domain: forget its translations, on every
        // CPU (the inner-shareable form; DSB SY covers the inner-shareable domain).
        sysreg::dsb();
        sysreg::tlbiallnsnhis(0);
        sysreg::dsb();
        let mut regs = GuestRegs { pc: entry, cpsr: CPSR_SVC_MASKED, ..GuestRegs::default() };
        // Linux's ARM boot protocol: r0 = 0, r1 = machine type (~0: "use the DT"), r2 = DT.
        regs.r[1] = u32::MAX;
        regs.r[2] = setup.boot_arg as u32;
        let nr_vcpus = usize::from(setup.nr_vcpus).clamp(1, vgic::MAX_VCPUS);
        let mut online = alloc::vec![false; nr_vcpus];
        online[0] = true;
        let space = Arc::new(spin::Mutex::new(DomainSpace {
            stage2: tables,
            online,
            vgic: Vgic::with_version(GicVersion::V2, nr_vcpus),
            cntvoff: sysreg::cntpct(),
            kicks: 0,
        }));
        Ok(Vcpu::with_regs(space, vttbr, *setup, 0, regs))
    }

    fn with_regs(
        space: Arc<spin::Mutex<DomainSpace>>,
        vttbr: u64,
        ram: GuestSetup,
        id: usize,
        regs: GuestRegs,
    ) -> Vcpu {
        let vmpidr = VMPIDR_BASE | (id as u32 & 0xff);
        Vcpu {
            regs,
            space,
            vttbr,
            vmpidr,
            ram,
            id,
            cp15: cp15::reset(),
            vfp: vfp::reset(),
            vmcr: gicv2::VMCR_RESET,
            apr: 0,
            lrs_loaded: 0,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            mmio_read: None,
            preempt_at: None,
            preempt_ns: None,
        }
    }

    /// Make this vCPU's stage-2, trap configuration and CP15 context the CPU's.
    fn activate(&mut self) {
        let cpu = this_cpu();
        if ACTIVE[cpu].load(Ordering::Relaxed) == self.uid {
            return; // still loaded: no other vCPU has run here since, nor was it unloaded
        }
        ACTIVE[cpu].store(self.uid, Ordering::Relaxed);
        let cntvoff = self.space.lock().cntvoff;
        sysreg::write_vtcr(stage2::VTCR_V7);
        sysreg::write_vttbr(self.vttbr);
        sysreg::write_vpidr(sysreg::midr());
        sysreg::write_vmpidr(self.vmpidr);
        sysreg::write_hcr(HCR_GUEST);
        sysreg::write_cnthctl(CNTHCTL_PL1_PHYS);
        sysreg::write_cntvoff(cntvoff);
        sysreg::isb();
        self.cp15.load();
        self.vfp.load();
    }

    /// What to do about the exception that ended the last run; `None` resumes the guest.
    fn handle_exit(&mut self, reason: u32) -> Option<Exit> {
        match reason {
            EXIT_TRAP => self.handle_trap(Syndrome(u64::from(sysreg::hsr()))),
            EXIT_IRQ => self.handle_irq(),
            EXIT_FIQ => Some(Exit::Preempted),
            _ => Some(self.fault(FaultKind::FatalState, 0, u64::from(reason))),
        }
    }

    fn handle_trap(&mut self, hsr: Syndrome) -> Option<Exit> {
        match hsr.class() {
            ec::WFX => {
                self.regs.pc = self.regs.pc.wrapping_add(hsr.instruction_length() as u32);
                if hsr.0 & WFX_IS_WFE != 0 {
                    // Spinning on a lock another vCPU will release: let it run.
                    return Some(Exit::Yield);
                }
                // A pending interrupt ends a WFI at once; else the core decides how to wait.
                if self.interrupt_waiting() { None } else { Some(Exit::Halt) }
            }
            ec::HVC32 if hsr.imm16() == XEN_HVC_IMM => Some(Exit::Hypercall(self.hypercall_args())),
            ec::HVC32 if hsr.imm16() == PSCI_HVC_IMM => self.psci(),
            ec::DABT_LOWER if hsr.is_stage2_abort() => {
                let gpa = fault_ipa(u64::from(sysreg::hpfar()), u64::from(sysreg::hdfar()));
                let in_ram = gpa >= self.ram.ram_guest && gpa - self.ram.ram_guest < self.ram.ram_size;
                match hsr.data_access() {
                    _ if in_ram && self.changed_meanwhile(hsr, gpa) => None,
                    Some(access) if !in_ram => self.handle_mmio(gpa, access, hsr),
                    _ => Some(self.abort(hsr)),
                }
            }
            ec::IABT_LOWER if hsr.is_stage2_abort() => {
                let gpa = fault_ipa(u64::from(sysreg::hpfar()), u64::from(sysreg::hifar()));
                if self.changed_meanwhile(hsr, gpa) { None } else { Some(self.abort(hsr)) }
            }
            ec::IABT_LOWER | ec::DABT_LOWER => Some(self.abort(hsr)),
            _ => Some(self.fault(FaultKind::UnhandledTrap, 0, hsr.0)),
        }
    }

    /// A physical interrupt while the guest ran: acknowledge, act, complete, resume.
    fn handle_irq(&mut self) -> Option<Exit> {
        if !gicv2::ready() {
            return Some(Exit::Preempted);
        }
        let iar = gicv2::acknowledge();
        let intid = iar & 0x3ff;
        if intid >= gicv2::SPURIOUS {
            return None;
        }
        if intid == gic::vtimer_intid() {
            // The guest's timer fired. Masking it drops the level-sensitive line; the guest's
            // handler reprograms CNTV_CTL, which unmasks it again.
            sysreg::write_cntv_ctl(sysreg::cntv_ctl() | CNTV_IMASK);
            self.space.lock().vgic.raise_private(self.id, VTIMER_PPI);
        } else if intid == gic::KICK_SGI {
            // Another pCPU wants this one to look again (an event, an interrupt or a vCPU
            // for it): leave the guest; the core resumes it if nothing changed.
            gicv2::end_of_interrupt(iar);
            return Some(Exit::Preempted);
        } else if intid == gic::hyp_timer_intid() {
            sysreg::write_cnthp_ctl(0);
            gicv2::end_of_interrupt(iar);
            return Some(Exit::Preempted);
        }
        // The maintenance interrupt needs nothing more: the list registers were read back on
        // the way out and are refilled on the way in.
        gicv2::end_of_interrupt(iar);
        None
    }

    /// The guest would not wait in WFI: its CPU interface would signal an interrupt the vGIC
    /// holds for it, or its timer has fired and its PPI would be signalled.
    fn interrupt_waiting(&self) -> bool {
        let ctl = sysreg::cntv_ctl();
        let fired = ctl & (CNTV_ENABLE | CNTV_IMASK | CNTV_ISTATUS) == CNTV_ENABLE | CNTV_ISTATUS;
        let cpu = gicv2::cpu_interface(self.vmcr, self.apr);
        let vgic = &self.space.lock().vgic;
        (fired && vgic.would_signal(self.id, VTIMER_PPI, &cpu)) || vgic.has_signalled(self.id, &cpu)
    }

    /// Load the list registers and the virtual CPU interface for the next entry.
    fn load_interrupts(&mut self) {
        if !gicv2::ready() {
            return;
        }
        let mut overflow = false;
        let mut space = self.space.lock();
        let vgic = &mut space.vgic;
        // Most exits are not about interrupts: nothing to scan when nothing could be pending.
        if !vgic.is_quiet(self.id) {
            let plan = vgic.fill_lrs(self.id, gicv2::lr_count().min(MAX_LRS));
            // The others are empty: the last exit emptied what it had loaded.
            for (n, &value) in plan.values[..plan.count].iter().enumerate() {
                gicv2::write_lr(n, value as u32);
            }
            self.lrs_loaded = plan.count;
            overflow = plan.overflow;
        }
        drop(space);
        gicv2::load(self.vmcr, self.apr, overflow);
    }

    /// Read back what the guest did with the list registers, and empty them.
    fn save_interrupts(&mut self) {
        if !gicv2::ready() {
            return;
        }
        (self.vmcr, self.apr) = gicv2::save();
        if self.lrs_loaded == 0 {
            return;
        }
        let mut values = [0u64; MAX_LRS];
        for (n, v) in values.iter_mut().enumerate().take(self.lrs_loaded) {
            *v = u64::from(gicv2::read_lr(n));
            gicv2::write_lr(n, 0);
        }
        self.space.lock().vgic.sync_lrs(self.id, &values[..self.lrs_loaded]);
        self.lrs_loaded = 0;
    }

    /// A load or store outside RAM with a valid syndrome: the vGIC distributor is handled
    /// here; anything else goes to the core's device models. The PC moves past it either way.
    fn handle_mmio(&mut self, gpa: u64, access: DataAccess, hsr: Syndrome) -> Option<Exit> {
        let write = access.write.then(|| access.store_value(u64::from(self.reg(access.reg))));
        self.regs.pc = self.regs.pc.wrapping_add(hsr.instruction_length() as u32);
        let outcome = self.space.lock().vgic.mmio(self.id, gpa, access.size, write);
        if let Some(out) = outcome {
            if !access.write {
                self.set_reg(access.reg, access.load_value(out.value) as u32);
                return None;
            }
            let mut space = self.space.lock();
            // A distributor write may make an interrupt pending for a sibling running on
            // another pCPU (an SGI, a set-pending, an enable).
            space.kick_others(self.id);
            if space.vgic.may_wake_sibling(gpa) {
                // An SGI: a sibling may be asleep waiting for it.
                return Some(Exit::Preempted);
            }
            return None;
        }
        self.mmio_read = (!access.write).then_some(access);
        Some(Exit::Mmio(MmioAccess { gpa, size: access.size, write }))
    }

    /// Where register `n` (as an instruction in the guest's current mode names it) lives.
    fn reg_slot(&mut self, n: u8) -> Option<&mut u32> {
        const USR: u32 = 0x10;
        const FIQ: u32 = 0x11;
        const IRQ: u32 = 0x12;
        const SVC: u32 = 0x13;
        const ABT: u32 = 0x17;
        const UND: u32 = 0x1b;
        const SYS: u32 = 0x1f;
        let mode = self.regs.cpsr & 0x1f;
        let n = usize::from(n);
        if mode == FIQ && (8..=14).contains(&n) {
            return self.regs.fiq.get_mut(n - 8);
        }
        if n <= 12 {
            return self.regs.r.get_mut(n);
        }
        let bank = match mode {
            USR | SYS => return [&mut self.regs.sp_usr, &mut self.regs.lr_usr].into_iter().nth(n - 13),
            SVC => 0,
            ABT => 1,
            UND => 2,
            IRQ => 3,
            _ => return None,
        };
        self.regs.banked[bank].get_mut(n - 13).filter(|_| n <= 14)
    }

    fn reg(&mut self, n: u8) -> u32 {
        self.reg_slot(n).map_or(0, |r| *r)
    }

    fn set_reg(&mut self, n: u8, value: u32) {
        if let Some(r) = self.reg_slot(n) {
            *r = value;
        }
    }

    /// The physical count at which this vCPU's virtual timer fires, if it can and its PPI
    /// would then be signalled.
    fn timer_deadline_count(&self) -> Option<u64> {
        let (ctl, cval) = if self.cp15.on_cpu() {
            (sysreg::cntv_ctl(), sysreg::cntv_cval())
        } else {
            self.cp15.saved().virtual_timer()
        };
        if ctl & (CNTV_ENABLE | CNTV_IMASK) != CNTV_ENABLE {
            return None;
        }
        let cpu = gicv2::cpu_interface(self.vmcr, self.apr);
        let space = self.space.lock();
        if !space.vgic.would_signal(self.id, VTIMER_PPI, &cpu) {
            return None;
        }
        cval.checked_add(space.cntvoff)
    }

    /// nr in r12, arguments in r0..r4; HVC's preferred return already points past it.
    fn hypercall_args(&self) -> HypercallArgs {
        let r = &self.regs.r;
        HypercallArgs { nr: u64::from(r[12]), args: [r[0], r[1], r[2], r[3], r[4]].map(u64::from), compat: false }
    }

    fn psci(&mut self) -> Option<Exit> {
        let r = &self.regs.r;
        let action = {
            let space = self.space.lock();
            psci::handle_smp(r[0], [r[1], r[2], r[3]].map(u64::from), space.online.len(), |n| space.online[n])
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
                self.space.lock().online[self.id] = false;
                Some(Exit::CpuOff)
            }
        }
    }

    /// A translation fault at `gpa` that the tables no longer give: another pCPU was
    /// changing them (break-before-make) and has finished (it holds the lock meanwhile), so
    /// the access may simply be tried again.
    fn changed_meanwhile(&self, hsr: Syndrome, gpa: u64) -> bool {
        hsr.is_translation_fault() && self.space.lock().stage2.translate(gpa).is_some()
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
        let pa = par_address(translate(va & !(PAGE as u32 - 1), write), gva)?;
        let ram = &self.ram;
        (pa >= ram.ram_host && pa - ram.ram_host < ram.ram_size).then_some(pa)
    }

    /// The guest-physical (intermediate-physical) address of `gva` for a guest PL1 write,
    /// through the guest's stage 1 alone.
    fn stage1_write(&mut self, gva: u64) -> Option<u64> {
        let va = u32::try_from(gva).ok()?;
        self.activate();
        par_address(address_translate(va & !(PAGE as u32 - 1), sysreg::ats1cpw), gva)
    }

    /// Walk guest-physical `[gpa, gpa + len)` through the domain's stage 2, calling
    /// `f(host_pa, offset, n)` per piece. Only the domain's own RAM is reached: a hypervisor
    /// page `map_host_page` put over a RAM page fails the whole copy, so neither it nor the
    /// RAM beneath it (which the guest no longer sees) is touched; as copies through guest
    /// virtual addresses, which land on it outside the domain's RAM.
    fn copy_guest_phys(&self, gpa: u64, len: usize, f: impl FnMut(u64, usize, usize)) -> Result<(), BadGuestAddress> {
        let ram = &self.ram;
        let in_ram = |pa: u64, n: usize| pa >= ram.ram_host && pa - ram.ram_host + n as u64 <= ram.ram_size;
        self.space.lock().stage2.for_each_host_piece(gpa, len, in_ram, f).map_err(BadGuestAddress)
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
    address_translate(va, if write { sysreg::ats12nsopw } else { sysreg::ats12nsopr })
}

/// The address a successful translation of `gva` reported in `par` (either PAR format).
fn par_address(par: u64, gva: u64) -> Option<u64> {
    if par & PAR_F != 0 {
        return None;
    }
    let page = if par & PAR_LPAE != 0 { par & 0xff_ffff_f000 } else { par & 0xffff_f000 };
    Some(page | (gva & (PAGE - 1)))
}

/// PAR after the address-translation operation `op` on `va`, the guest's PAR put back.
fn address_translate(va: u32, op: fn(u32)) -> u64 {
    let guest_par = sysreg::par();
    op(va);
    sysreg::isb();
    let result = sysreg::par();
    sysreg::write_par(guest_par);
    result
}

impl Vcpu {
    /// Change one page of the domain's stage-2 tables with `change`, which other pCPUs may be
    /// walking for vCPUs of the domain: the tables break each valid descriptor they replace
    /// and have `tlb` drop its cached translations before they make the new one.
    fn change_stage2(
        &mut self,
        gpa: u64,
        change: impl FnOnce(&mut Stage2Tables, &mut dyn FnMut(u64)) -> Result<(), crate::arm::lpae::MapError>,
    ) -> Result<(), BadGuestAddress> {
        let space = &mut *self.space.lock();
        // TLB maintenance from HYP acts on the VMID in VTTBR: this domain's.
        sysreg::write_vttbr(self.vttbr);
        let cpu = this_cpu();
        if ACTIVE[cpu].load(Ordering::Relaxed) != self.uid {
            // Another vCPU's controls were loaded: the next entry loads them all again.
            ACTIVE[cpu].store(0, Ordering::Relaxed);
        }
        sysreg::isb();
        // ARMv7 has no by-IPA invalidation (TLBIIPAS2 is ARMv8's): TLBIALLIS from HYP drops
        // every stage-1 and stage-2 entry of the VMID in VTTBR on every CPU of the
        // inner-shareable domain. The DSB before it publishes the broken descriptor to the
        // table walkers; the DSB and ISB after it wait until every CPU has.
        let mut tlb = |_ipa: u64| {
            sysreg::dsb();
            sysreg::tlbiallis(0);
            sysreg::dsb();
            sysreg::isb();
        };
        change(&mut space.stage2, &mut tlb).map_err(|_| BadGuestAddress(gpa))?;
        // Publish the new descriptors to the table walkers before the guest runs.
        sysreg::dsb();
        sysreg::isb();
        Ok(())
    }
}

impl VirtualCpu for Vcpu {
    fn run(&mut self) -> Exit {
        self.run_with(&mut |_, _| AfterExit::Leave)
    }

    fn run_with(&mut self, hook: &mut dyn FnMut(&mut Self, &mut Exit) -> AfterExit) -> Exit {
        self.activate();
        match self.preempt_at {
            Some(count) => {
                sysreg::write_cnthp_cval(count);
                sysreg::write_cnthp_ctl(CNTHP_ENABLE);
            }
            None => sysreg::write_cnthp_ctl(0),
        }
        sysreg::isb();
        let exit = loop {
            self.load_interrupts();
            // SAFETY: `regs` is a valid GuestRegs for the duration of the call; the world
            // switch saves and restores the host's callee-saved registers and stack, and the
            // guest runs under stage-2 translation confined to this domain's RAM, with every
            // exception it cannot handle itself coming back here through the HYP vectors.
            let reason = unsafe { armv7_enter_guest(&raw mut self.regs) };
            self.save_interrupts();
            let Some(mut exit) = self.handle_exit(reason) else { continue };
            // The trap controls, CP15 context and the armed preemption timer stay as they are
            // while the hook runs (as on aarch64): a timer that fires meanwhile is taken as
            // an IRQ exit on the next entry.
            if hook(self, &mut exit) == AfterExit::Leave {
                break exit;
            }
        };
        sysreg::write_cnthp_ctl(0);
        // The virtual timer stays armed: entering another vCPU replaces it (CP15 context).
        exit
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
            // The guest may have written with its MMU off (non-cacheable).
            clean_invalidate_dcache(pa, n as u64);
            buf[at..at + n].copy_from_slice(super::phys_slice(pa, n as u64));
        })
    }

    fn copy_to_guest(&mut self, gva: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.copy_pages(gva, buf.len(), true, |pa, at, n| {
            super::phys_slice_mut(pa, n as u64).copy_from_slice(&buf[at..at + n]);
            // Visible to the guest even if it reads with its MMU off.
            clean_invalidate_dcache(pa, n as u64);
        })
    }

    fn read_guest_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), BadGuestAddress> {
        self.copy_guest_phys(gpa, buf.len(), |pa, at, n| {
            clean_invalidate_dcache(pa, n as u64);
            buf[at..at + n].copy_from_slice(super::phys_slice(pa, n as u64));
        })
    }

    fn guest_phys_of(&mut self, gva: u64) -> Option<u64> {
        self.stage1_write(gva)
    }

    fn write_guest_phys(&mut self, gpa: u64, buf: &[u8]) -> Result<(), BadGuestAddress> {
        self.copy_guest_phys(gpa, buf.len(), |pa, at, n| {
            super::phys_slice_mut(pa, n as u64).copy_from_slice(&buf[at..at + n]);
            clean_invalidate_dcache(pa, n as u64);
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
        self.change_stage2(gpa, |tables, tlb| tables.map_page(gpa, hpa, tlb))
    }

    fn map_grant(&mut self, gpa: u64, hpa: u64, writable: bool) -> Result<(), BadGuestAddress> {
        if vgic::claims(gpa) || !hpa.is_multiple_of(PAGE) || !super::is_ram(hpa, PAGE) {
            return Err(BadGuestAddress(gpa));
        }
        self.change_stage2(gpa, |tables, tlb| tables.map_granted_page(gpa, hpa, writable, tlb))
    }

    fn unmap_grant(&mut self, gpa: u64) -> Result<(), BadGuestAddress> {
        let (ram_guest, ram_host, ram_size) = (self.ram.ram_guest, self.ram.ram_host, self.ram.ram_size);
        self.change_stage2(gpa, |tables, tlb| tables.end_grant(gpa, (ram_guest, ram_host, ram_size), tlb))
    }

    fn complete_cpu_on(&mut self, result: CpuOnResult) {
        self.regs.r[0] = psci::cpu_on_status(result) as u32;
    }

    fn complete_mmio_read(&mut self, value: u64) {
        if let Some(access) = self.mmio_read.take() {
            self.set_reg(access.reg, access.load_value(value) as u32);
        }
    }

    fn raise_upcall(&mut self) {
        self.space.lock().vgic.raise_private(self.id, UPCALL_PPI);
    }

    fn set_irq_line(&mut self, intid: u32, level: bool) {
        let mut space = self.space.lock();
        space.vgic.set_spi_line(intid, level);
        space.kick_others(self.id);
    }

    fn enable_event_delivery(&mut self) {
        self.regs.cpsr &= !CPSR_I;
    }

    fn interrupt_pending(&self) -> bool {
        let timer_due = self.timer_deadline_count().is_some_and(|due| sysreg::cntpct() >= due);
        let cpu = gicv2::cpu_interface(self.vmcr, self.apr);
        timer_due || self.space.lock().vgic.has_signalled(self.id, &cpu)
    }

    fn timer_deadline_ns(&self) -> Option<u64> {
        self.timer_deadline_count().map(count_to_ns)
    }

    fn set_preemption_deadline(&mut self, deadline_ns: Option<u64>) {
        if deadline_ns != self.preempt_ns {
            self.preempt_ns = deadline_ns;
            self.preempt_at = deadline_ns.map(ns_to_count);
        }
    }

    /// vCPU `index` starts like vCPU 0 (SVC mode, masked, MMU off) at `entry` with `context`
    /// in r0, over the same stage-2 tables and VMID.
    fn power_on_sibling(&mut self, index: usize, entry: u64, context: u64) -> Option<Vcpu> {
        let pc = u32::try_from(entry).ok()?;
        self.space.lock().online.get_mut(index).map(|on| *on = true)?;
        let mut regs = GuestRegs { pc, cpsr: CPSR_SVC_MASKED, ..GuestRegs::default() };
        regs.r[0] = context as u32;
        Some(Vcpu::with_regs(Arc::clone(&self.space), self.vttbr, self.ram, index, regs))
    }

    /// Save what of this vCPU the CPU holds (CP15 context with its virtual timer, VFP
    /// registers) and forget its controls here: any pCPU may enter it next.
    fn unload(&mut self) {
        let cpu = this_cpu();
        if self.cp15.on_cpu() {
            self.cp15.unload();
            // Its timer stays in the saved state; the CPU's must not wake an idle wait or
            // another vCPU's run.
            sysreg::write_cntv_ctl(0);
            sysreg::isb();
        }
        self.vfp.unload();
        ACTIVE[cpu].store(0, Ordering::Relaxed);
    }

    fn take_sibling_kicks(&mut self) -> u64 {
        core::mem::take(&mut self.space.lock().kicks)
    }
}
