//! One vCPU of a domain: its registers, the domain's shared address space and virtual GIC
//! ([`DomainSpace`]), and the decoding of its exits.
//!
//! The core runs vCPUs on every pCPU of its pool, one vCPU on one pCPU at a time. The
//! general-purpose and FP/SIMD registers (which the hypervisor's own code uses) are switched
//! around every entry in [`Context`]; the guest's EL1 system registers, its virtual timer
//! included, stay loaded across exits that return to the same vCPU and are saved when the
//! vCPU goes back to the scheduler ([`VirtualCpu::unload`], [`El1State`]), so that any pCPU
//! can enter it next. The EL2 physical timer
//! (CNTHP) bounds a run to the slice the core gave it: it exits with [`Exit::Preempted`].
//!
//! Interrupts: the vGIC model ([`Vgic`]) is loaded into the list registers before every entry
//! and read back after every exit. Physical IRQs that arrive while the guest runs are the
//! guest's virtual timer (masked and injected as virtual PPI 27, the way Xen does it) and the
//! maintenance interrupt (more to inject); both are completed here and the guest resumes.

extern crate alloc;

use super::console::early_log;
use super::dt::MAX_CPUS;
use super::gic::{self, VcpuInterface};
use super::mmu::clean_invalidate_dcache;
use super::this_cpu;
use super::vectors::{enter_guest, kind};
use crate::arm::psci;
use crate::arm::stage2::{self, PAGE, Stage2Tables};
use crate::arm::syndrome::{self, DataAccess, Syndrome, SysRegAccess, ec, sysreg};
use crate::arm::vgic::{self, GicVersion, MAX_LRS, UPCALL_PPI, VTIMER_PPI, Vgic};
use crate::boot::GuestSetup;
use crate::exit::{
    AfterExit, BadGuestAddress, CpuOnResult, Exit, FaultKind, GuestFault, HypercallArgs, MmioAccess, VirtualCpu,
};
use aarch64_cpu::asm::barrier::{self, isb};
use aarch64_cpu::registers::{
    CNTHCTL_EL2, CNTPCT_EL0, CNTV_CTL_EL0, CNTVOFF_EL2, ELR_EL1, ESR_EL1, ESR_EL2, FAR_EL2, HCR_EL2, HPFAR_EL2,
    ID_AA64MMFR0_EL1, PAR_EL1, Readable, SPSR_EL1, VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2, Writeable,
};
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

/// The Xen hypercall immediate: `hvc #0xEA1`.
const XEN_HVC_IMM: u16 = 0xea1;
/// HCR_EL2 while a guest runs: VM (stage-2), SWIO, FMO/IMO/AMO (physical interrupts to
/// EL2), FB (the guest's TLB and I-cache maintenance is broadcast to every pCPU, where its
/// other vCPUs run or ran: as Xen), TWI/TWE (trap WFI/WFE), TSC (trap SMC), RW (EL1 is
/// AArch64).
const HCR_GUEST: u64 =
    (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 9) | (1 << 13) | (1 << 14) | (1 << 19) | (1 << 31);
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
/// Distinct unknown vGIC offsets reported on the console per domain (then silence).
const UNKNOWN_LOGGED: usize = 8;
/// ESR_EL2.ISS bit 0 of a WFx trap: WFE rather than WFI.
const WFX_IS_WFE: u64 = 1;
/// SPSR_EL2.I: the guest's IRQ mask (PSTATE.I) in the state it returns to.
const SPSR_I: u64 = 1 << 7;
/// CNTHP_CTL_EL2.ENABLE.
const CNTHP_ENABLE: u64 = 1;

/// Read or write a system register by name (for those `aarch64_cpu` lacks, and lists).
macro_rules! mrs {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading an EL1/EL0 or EL2 timer system register at EL2 has no side effect.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
        v
    }};
}
macro_rules! msr {
    ($name:literal, $value:expr) => {{
        let v: u64 = $value;
        // SAFETY: the register belongs to the guest's EL1/EL0 context or to the EL2 timer;
        // the hypervisor at EL2 neither translates through nor takes exceptions with it.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nomem, nostack)) };
    }};
}

/// The guest's EL1 (and EL0) system registers, its virtual timer included, for the vCPU that
/// is not loaded on the CPU. The names are those the assembler knows.
macro_rules! el1_state {
    ($($field:ident = $name:literal),* $(,)?) => {
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default)]
        struct El1State {
            $($field: u64,)*
        }
        impl El1State {
            fn save(&mut self) {
                $(self.$field = mrs!($name);)*
            }
            fn restore(&self) {
                $(msr!($name, self.$field);)*
            }
        }
    };
}
el1_state! {
    sctlr = "sctlr_el1", cpacr = "cpacr_el1", ttbr0 = "ttbr0_el1", ttbr1 = "ttbr1_el1", tcr = "tcr_el1",
    mair = "mair_el1", amair = "amair_el1", vbar = "vbar_el1", contextidr = "contextidr_el1",
    esr = "esr_el1", far = "far_el1", afsr0 = "afsr0_el1", afsr1 = "afsr1_el1", par = "par_el1",
    elr = "elr_el1", spsr = "spsr_el1", sp_el0 = "sp_el0", sp_el1 = "sp_el1", tpidr_el0 = "tpidr_el0",
    tpidrro_el0 = "tpidrro_el0", tpidr_el1 = "tpidr_el1", cntkctl = "cntkctl_el1", csselr = "csselr_el1",
    mdscr = "mdscr_el1", cntv_cval = "cntv_cval_el0", cntv_ctl = "cntv_ctl_el0",
}

/// Per physical CPU: the vCPU whose [`El1State`] that CPU's EL1 registers hold (0: none);
/// each vCPU gets a fresh number, so a new vCPU never mistakes a dead one's state for its
/// own. A vCPU is [`VirtualCpu::unload`]ed (its EL1 state saved, this record cleared)
/// before it goes back to the scheduler, so any pCPU may enter it next.
static EL1_OWNER: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per physical CPU: the vCPU whose EL2 controls (stage-2, traps, virtual IDs, counter
/// offset) are loaded; 0 after anything else wrote them or the vCPU was unloaded. An exit
/// that returns to the same vCPU loads nothing.
static ACTIVE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static NEXT_VCPU_UID: AtomicU64 = AtomicU64::new(1);

/// Guest registers plus the host state `enter_guest` keeps across a run. The layout is
/// shared with the assembly in `vectors.rs` through `offset_of!`.
#[repr(C, align(16))]
pub struct Context {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub fpcr: u64,
    pub fpsr: u64,
    /// x19-x30 and sp of the host while the guest runs.
    pub host: [u64; 13],
    pub fp: [u128; 32],
    /// The guest's EL1 registers while they are not loaded in a CPU (the assembly never
    /// touches them).
    el1: El1State,
}

/// What the vCPUs of one domain share: its stage-2 tables and VMID, its virtual GIC (every
/// vCPU's redistributor included), its virtual counter and which of its vCPUs are on.
///
/// vCPUs of a domain run on several physical CPUs at once, so it sits behind a spin lock.
/// Lock order: the core's lock (if held) before this one; this one is innermost: nothing
/// is locked while it is held, and it is never held while a guest runs.
pub struct DomainSpace {
    tables: Box<Stage2Tables>,
    /// The domain's RAM (the vCPU fields of the setup are vCPU 0's).
    setup: GuestSetup,
    vmid: u8,
    /// TLB entries of this VMID have been flushed since the tables were built.
    tlb_clean: bool,
    /// Per physical CPU: the vCPU of this domain that ran there last (that CPU's TLB may
    /// hold its stage-1 translations).
    last_ran: [Option<usize>; MAX_CPUS],
    /// vCPUs (bit n: vCPU n) an exit may have made an interrupt pending for: see
    /// [`VirtualCpu::take_sibling_kicks`].
    kicks: u64,
    vgic: Box<Vgic>,
    /// The guest's virtual counter starts near 0: CNTVOFF = the physical count at creation,
    /// the same for every vCPU of the domain.
    cntvoff: u64,
    /// vCPU n is on (created and not powered off).
    online: [bool; vgic::MAX_VCPUS],
    unknown_logged: [u64; UNKNOWN_LOGGED],
    unknown_count: usize,
}

impl DomainSpace {
    /// Every vCPU of the domain but `id` (bit n: vCPU n).
    fn others(&self, id: usize) -> u64 {
        let all = if self.vgic.nr_vcpus() >= 64 { u64::MAX } else { (1u64 << self.vgic.nr_vcpus()) - 1 };
        all & !(1u64 << (id % 64))
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
}

pub struct Vcpu {
    ctx: Box<Context>,
    space: Arc<spin::Mutex<DomainSpace>>,
    /// This vCPU's index in its domain (its redistributor, MPIDR Aff0).
    id: usize,
    /// Names this vCPU for [`EL1_OWNER`].
    uid: u64,
    /// This vCPU's virtual CPU interface state between runs.
    vif: VcpuInterface,
    /// List registers loaded for the current run.
    lrs_loaded: usize,
    /// The load reported by the last `Exit::Mmio`, waiting for `complete_mmio_read`.
    mmio_read: Option<DataAccess>,
    /// Physical count at which the next run ends with `Exit::Preempted`.
    preempt_at: Option<u64>,
}

impl Vcpu {
    /// vCPU 0 of a new domain over `setup.ram_host..+ram_size`. That RAM's contents must
    /// already be in memory (point of coherency), as [`super::zero_phys`] and
    /// [`super::flush_phys`] leave it: the guest starts with its MMU and caches off.
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
        let version = gic::guest_version();
        if version == GicVersion::V2 {
            // The guest's GICC is the hardware's virtual CPU interface, used directly.
            let gicv = crate::arm::gicv2::vcpu_interface();
            for off in (0..vgic::GUEST_GICC_SIZE).step_by(PAGE as usize) {
                tables
                    .map_device_page(vgic::GUEST_GICC_BASE + off, gicv + off, &mut |_| {
                        // Tables no CPU has walked yet: nothing cached to drop.
                    })
                    .map_err(|_| "the GICv2 virtual CPU interface cannot be mapped at stage 2")?;
            }
        }
        // The guest starts with its MMU off, i.e. non-cacheable: it must find its RAM's
        // contents in memory, not in our caches. The builder already saw to the data side,
        // range by range (`zero_phys` leaves the zeroed RAM at the point of coherency,
        // `flush_phys` the images it wrote over it); cleaning all of RAM here again would
        // cost several instructions per cache line of it.
        // The instruction side is still ours: an instruction cache may hold lines of these
        // frames from an earlier owner (or of the bytes before the image was copied), which
        // the guest's first fetches must not hit.
        // SAFETY: invalidating all instruction caches only drops cached state.
        unsafe { core::arch::asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
        let nr_vcpus = usize::from(setup.nr_vcpus).clamp(1, vgic::MAX_VCPUS);
        let space = DomainSpace {
            tables,
            setup: *setup,
            vmid,
            tlb_clean: false,
            last_ran: [None; MAX_CPUS],
            kicks: 0,
            vgic: Box::new(Vgic::with_version(version, nr_vcpus)),
            cntvoff: CNTPCT_EL0.get(),
            online: [false; vgic::MAX_VCPUS],
            unknown_logged: [0; UNKNOWN_LOGGED],
            unknown_count: 0,
        };
        let id = usize::from(setup.vcpu_id);
        if id >= nr_vcpus {
            return Err("vCPU id beyond the domain's vCPU count");
        }
        Ok(Vcpu::powered_on(Arc::new(spin::Mutex::new(space)), id, setup.entry, setup.boot_arg))
    }

    /// vCPU `id` of the domain `space`, out of reset at `entry` with `x0` in x0: EL1h with
    /// every exception masked, MMU and caches off, timer off.
    fn powered_on(space: Arc<spin::Mutex<DomainSpace>>, id: usize, entry: u64, x0: u64) -> Vcpu {
        space.lock().online[id] = true;
        let mut ctx = zeroed_box::<Context>();
        ctx.x[0] = x0;
        ctx.elr = entry;
        ctx.spsr = syndrome::SPSR_EL1H_MASKED;
        ctx.el1 = El1State { sctlr: SCTLR_EL1_RESET, ..El1State::default() };
        Vcpu {
            ctx,
            space,
            id,
            uid: NEXT_VCPU_UID.fetch_add(1, Ordering::Relaxed),
            vif: VcpuInterface::default(),
            lrs_loaded: 0,
            mmio_read: None,
            preempt_at: None,
        }
    }

    /// This vCPU's index in the vGIC (its redistributor).
    fn vgic_cpu(&self) -> usize {
        self.id
    }

    /// Change one page of the domain's stage-2 tables with `change`, which other pCPUs may be
    /// walking for vCPUs of the domain: the tables break each valid descriptor they replace
    /// and have `tlb` drop its cached translations before they make the new one.
    fn change_stage2(
        &mut self,
        gpa: u64,
        change: impl FnOnce(&mut Stage2Tables, &mut dyn FnMut(u64)) -> Result<(), crate::arm::lpae::MapError>,
    ) -> Result<(), BadGuestAddress> {
        let mut space = self.space.lock();
        // Possibly another domain's than the one loaded: the next entry loads its own.
        ACTIVE[this_cpu()].store(0, Ordering::Relaxed);
        // TLB maintenance by VMID acts on the one in VTTBR_EL2: this domain's.
        VTTBR_EL2.set(stage2::vttbr(space.tables.root_address(), space.vmid));
        isb(barrier::SY);
        let mut tlb = |_ipa: u64| {
            // SAFETY: publishes the broken (invalid) descriptor to the table walkers, then
            // drops every cached stage-1+2 translation of this VMID on every CPU of the
            // inner-shareable domain, and waits until they all have.
            unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
        };
        change(&mut space.tables, &mut tlb).map_err(|_| BadGuestAddress(gpa))?;
        // SAFETY: publishes the new descriptors to the table walkers before the guest runs.
        unsafe { core::arch::asm!("dsb ishst", "isb", options(nostack)) };
        Ok(())
    }

    /// Load this vCPU's EL2 controls (stage-2, traps, virtual IDs) and, if another vCPU ran
    /// since it last did, its EL1 state, before entering it.
    fn activate(&mut self) {
        let cpu = this_cpu();
        if ACTIVE[cpu].load(Ordering::Relaxed) == self.uid {
            return; // its controls are still loaded: nothing has run or changed them since
        }
        let mut space = self.space.lock();
        HCR_EL2.set(HCR_GUEST);
        VTCR_EL2.set(stage2::VTCR_EL2);
        VTTBR_EL2.set(stage2::vttbr(space.tables.root_address(), space.vmid));
        VMPIDR_EL2.set(MPIDR_RES1 | self.id as u64);
        CNTHCTL_EL2.set(CNTHCTL_EL1_PHYS);
        CNTVOFF_EL2.set(space.cntvoff);
        isb(barrier::SY);
        if EL1_OWNER[cpu].load(Ordering::Relaxed) != self.uid {
            // Whoever held this CPU's EL1 before was unloaded (saved) or dropped.
            self.ctx.el1.restore();
            // SAFETY: `ctx` is this vCPU's live Context; FP/SIMD registers are the guest's
            // alone (the hypervisor is soft-float) and its previous owner saved them.
            unsafe { super::vectors::fp_restore(&*self.ctx) };
            isb(barrier::SY);
            EL1_OWNER[cpu].store(self.uid, Ordering::Relaxed);
        }
        if !space.tlb_clean {
            // A fresh domain: no stale translations of one with the same VMID may survive.
            // SAFETY: invalidates stage-1+2 TLB entries of the current VMID only, on every CPU.
            unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
            space.tlb_clean = true;
        } else if space.last_ran[cpu] != Some(self.id) {
            // Another vCPU of this domain ran here: its stage-1 translations (same VMID, its
            // own page tables and ASIDs) must not be mistaken for this one's. (The guest's
            // own TLB maintenance is broadcast, HCR_EL2.FB: a vCPU that ran elsewhere in
            // between left no stale entries of its own here.)
            // SAFETY: invalidates this CPU's stage-1+2 TLB entries of the current VMID only.
            unsafe { core::arch::asm!("dsb nshst", "tlbi vmalls12e1", "dsb nsh", "isb", options(nostack)) };
        }
        space.last_ran[cpu] = Some(self.id);
        ACTIVE[cpu].store(self.uid, Ordering::Relaxed);
    }

    /// Arm the EL2 physical timer for the end of this run's slice.
    fn arm_preemption(&self) {
        match self.preempt_at {
            Some(count) => {
                msr!("cnthp_cval_el2", count);
                msr!("cnthp_ctl_el2", CNTHP_ENABLE);
            }
            None => msr!("cnthp_ctl_el2", 0),
        }
        isb(barrier::SY);
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
                if esr.0 & WFX_IS_WFE != 0 {
                    // Spinning on a lock or flag another vCPU will release: let it run.
                    return Some(Exit::Yield);
                }
                // A pending interrupt ends a WFI at once; else the core decides how to wait.
                if self.interrupt_waiting() { None } else { Some(Exit::Halt) }
            }
            ec::SYSREG64 => self.handle_sysreg(esr),
            ec::DABT_LOWER | ec::IABT_LOWER if esr.is_stage2_abort() => {
                let ipa = syndrome::fault_ipa(HPFAR_EL2.get(), FAR_EL2.get());
                if self.in_ram(ipa) {
                    if esr.is_translation_fault() && self.space.lock().tables.translate(ipa).is_some() {
                        // Another pCPU was changing this part of the tables (break-before-
                        // make) and has finished: it holds the lock while they change.
                        return None;
                    }
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
        let setup = &self.space.lock().setup;
        ipa >= setup.ram_guest && ipa - setup.ram_guest < setup.ram_size
    }

    /// A physical interrupt while the guest ran: acknowledge, act, complete, resume.
    fn handle_irq(&mut self) -> Option<Exit> {
        if !gic::ready() {
            return Some(Exit::Preempted);
        }
        let iar = gic::acknowledge();
        let intid = gic::intid_of(iar);
        if intid >= gic::SPURIOUS {
            return None;
        }
        if intid == gic::vtimer_intid() {
            // The guest's timer fired. Masking it drops the level-sensitive line; the guest's
            // handler reprograms CNTV_CTL_EL0, which unmasks it again.
            CNTV_CTL_EL0.set(CNTV_CTL_EL0.get() | CNTV_IMASK);
            self.space.lock().vgic.raise_private(self.vgic_cpu(), VTIMER_PPI);
        } else if intid == gic::KICK_SGI {
            // Another pCPU wants this one to look again (an event, an interrupt or a vCPU
            // for it): leave the guest; the core resumes it if nothing changed.
            gic::end_of_interrupt(iar);
            return Some(Exit::Preempted);
        } else if intid == gic::hyp_timer_intid() {
            // The slice is over: stop the timer (dropping its level) and let the core decide.
            msr!("cnthp_ctl_el2", 0);
            gic::end_of_interrupt(iar);
            return Some(Exit::Preempted);
        } else if intid != gic::maintenance_intid() {
            early_log!("unexpected physical interrupt {} while a guest ran", intid);
        }
        // The maintenance interrupt needs nothing more: the list registers were read back
        // on the way out and are refilled on the way in.
        gic::end_of_interrupt(iar);
        None
    }

    /// The guest would not wait in WFI: its CPU interface would signal an interrupt the vGIC
    /// holds for it, or its timer has fired (the physical PPI is taken as soon as it
    /// re-enters) and the timer's PPI would be signalled. As on hardware, an interrupt the
    /// interface masks (priority mask, group 1 off, a higher-priority one active) does not end
    /// a WFI.
    fn interrupt_waiting(&self) -> bool {
        let ctl = CNTV_CTL_EL0.get();
        let timer_fired = ctl & (CNTV_ENABLE | CNTV_IMASK | CNTV_ISTATUS) == CNTV_ENABLE | CNTV_ISTATUS;
        let cpu = gic::cpu_interface(&self.vif);
        let vgic = &self.space.lock().vgic;
        (timer_fired && vgic.would_signal(self.vgic_cpu(), VTIMER_PPI, &cpu))
            || vgic.has_signalled(self.vgic_cpu(), &cpu)
    }

    /// Load the list registers and the virtual CPU interface for the next entry.
    fn load_interrupts(&mut self) {
        if !gic::ready() {
            return;
        }
        let count = gic::lr_count().min(MAX_LRS);
        let mut overflow = false;
        let mut space = self.space.lock();
        // Most exits are not about interrupts: nothing to scan when nothing could be pending.
        if !space.vgic.is_quiet(self.id) {
            let plan = space.vgic.fill_lrs(self.id, count);
            // The others are empty: the last exit emptied what it had loaded.
            for (n, &value) in plan.values[..plan.count].iter().enumerate() {
                gic::write_lr(n, value);
            }
            self.lrs_loaded = plan.count;
            overflow = plan.overflow;
        }
        drop(space);
        // The CPU interface state stays in the CPU while the same vCPU comes back.
        let reload = gic::VIF_OWNER[this_cpu()].swap(self.uid, Ordering::Relaxed) != self.uid;
        gic::load(&self.vif, overflow, reload);
        isb(barrier::SY);
    }

    /// Read back what the guest did with the list registers, and empty them.
    fn save_interrupts(&mut self) {
        if !gic::ready() {
            return;
        }
        gic::save(&mut self.vif);
        if self.lrs_loaded == 0 {
            return;
        }
        let mut values = [0u64; MAX_LRS];
        for (n, v) in values.iter_mut().enumerate().take(self.lrs_loaded) {
            *v = gic::read_lr(n);
            gic::write_lr(n, 0);
        }
        self.space.lock().vgic.sync_lrs(self.vgic_cpu(), &values[..self.lrs_loaded]);
        self.lrs_loaded = 0;
    }

    /// A load or store outside RAM with a valid syndrome: the vGIC's registers are handled
    /// here; anything else goes to the core's device models. The PC moves past it either way.
    fn handle_mmio(&mut self, ipa: u64, access: DataAccess, esr: Syndrome) -> Option<Exit> {
        let write = access.write.then(|| access.store_value(self.reg(access.reg)));
        self.ctx.elr += esr.instruction_length();
        let outcome = self.space.lock().vgic.mmio(self.vgic_cpu(), ipa, access.size, write);
        if let Some(out) = outcome {
            if out.unknown {
                self.space.lock().log_unknown_vgic(ipa, write.is_some());
            }
            if !access.write {
                self.set_reg(access.reg, access.load_value(out.value));
                return None;
            }
            let mut space = self.space.lock();
            // A distributor write may make an interrupt pending for a sibling running on
            // another pCPU (an SGI, a set-pending, an enable).
            let others = space.others(self.id);
            space.kicks |= others;
            if space.vgic.may_wake_sibling(ipa) {
                // A GICv2 SGI: a sibling may be asleep waiting for it.
                return Some(Exit::Preempted);
            }
            return None;
        }
        self.mmio_read = (!access.write).then_some(access);
        Some(Exit::Mmio(MmioAccess { gpa: ipa, size: access.size, write }))
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
        self.ctx.elr += esr.instruction_length();
        if read {
            self.set_reg(rt, 0);
        } else if is_sgi {
            let value = self.reg(rt);
            let mut space = self.space.lock();
            space.vgic.write_sgi1r(self.vgic_cpu(), value);
            let others = space.others(self.id);
            space.kicks |= others;
            if space.vgic.nr_vcpus() > 1 {
                // A sibling may be asleep waiting for this: let the core look.
                return Some(Exit::Preempted);
            }
        }
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
        let space = self.space.lock();
        let mut done = 0;
        while done < len {
            let ipa = gpa.checked_add(done as u64).ok_or(BadGuestAddress(gpa))?;
            let chunk = (PAGE - (ipa % PAGE)).min((len - done) as u64);
            let (pa, _) = space.tables.translate(ipa).ok_or(BadGuestAddress(ipa))?;
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
                Some(Exit::Hypercall(HypercallArgs { nr: x[16], args: [x[0], x[1], x[2], x[3], x[4]], compat: false }))
            }
            0 => self.handle_psci(),
            _ => {
                self.inject_undef(esr);
                None
            }
        }
    }

    fn handle_psci(&mut self) -> Option<Exit> {
        let x = &self.ctx.x;
        let action = {
            let space = self.space.lock();
            let online = space.online;
            psci::handle_smp(x[0] as u32, [x[1], x[2], x[3]], space.vgic.nr_vcpus(), |n| online[n])
        };
        match action {
            psci::SmpAction::Plain(psci::Action::Return(v)) => {
                self.ctx.x[0] = v as u64;
                None
            }
            psci::SmpAction::Plain(psci::Action::PowerOff) => Some(Exit::PowerOff),
            psci::SmpAction::Plain(psci::Action::Reset) => Some(Exit::Reset),
            psci::SmpAction::CpuOn { target, entry, context } => Some(Exit::CpuOn { target, entry, context }),
            psci::SmpAction::CpuOff => {
                self.space.lock().online[self.id] = false;
                Some(Exit::CpuOff)
            }
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
        let pa = address_translate(gva, if write { At::S12Write } else { At::S12Read })?;
        let setup = &self.space.lock().setup;
        let offset = pa.checked_sub(setup.ram_host)?;
        (offset < setup.ram_size).then_some(pa)
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

/// The address-translation instructions the hypervisor runs for a guest.
#[derive(Clone, Copy)]
enum At {
    S12Read,
    S12Write,
    S1Write,
}

/// The address `op` translates `gva` to (host-physical for stage 1 then 2,
/// guest-physical for stage 1 alone), or `None` if the walk faults. The vCPU's EL1
/// translation registers and our stage 2 must be loaded.
fn address_translate(gva: u64, op: At) -> Option<u64> {
    let saved = PAR_EL1.get(); // PAR_EL1 belongs to the guest
    // SAFETY: AT only writes PAR_EL1, restored below. Our stage-2 (VTTBR, HCR.VM) and the
    // guest's EL1 translation registers are loaded, so the walk is the guest's.
    unsafe {
        match op {
            At::S12Read => core::arch::asm!("at s12e1r, {}", in(reg) gva, options(nostack)),
            At::S12Write => core::arch::asm!("at s12e1w, {}", in(reg) gva, options(nostack)),
            At::S1Write => core::arch::asm!("at s1e1w, {}", in(reg) gva, options(nostack)),
        }
    }
    isb(barrier::SY);
    let par = PAR_EL1.get();
    PAR_EL1.set(saved);
    (par & 1 == 0).then_some((par & 0x0000_ffff_ffff_f000) | (gva & 0xfff))
}

impl VirtualCpu for Vcpu {
    fn run(&mut self) -> Exit {
        self.run_with(&mut |_, _| AfterExit::Leave)
    }

    fn run_with(&mut self, hook: &mut dyn FnMut(&mut Self, &mut Exit) -> AfterExit) -> Exit {
        self.activate();
        self.arm_preemption();
        let exit = loop {
            self.load_interrupts();
            // SAFETY: `ctx` is a live, exclusively borrowed Context whose layout the assembly
            // knows; its registers were set up by `powered_on` or left by the last exit, and
            // the EL2 controls for this guest were loaded by `activate`.
            let exit_kind = unsafe { enter_guest(&mut *self.ctx) };
            self.save_interrupts();
            let Some(mut exit) = self.handle(exit_kind) else { continue };
            // Controls, EL1, the vGIC interface and the armed preemption timer all stay as
            // they are while the hook runs: a timer that fires meanwhile is taken as an IRQ
            // exit on the next entry.
            if hook(self, &mut exit) == AfterExit::Leave {
                break exit;
            }
        };
        msr!("cnthp_ctl_el2", 0);
        // EL1 stays loaded (the core reaches guest memory through it while it handles this
        // exit); it is saved when another vCPU is entered.
        exit
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

    fn guest_phys_of(&mut self, gva: u64) -> Option<u64> {
        // The guest's stage 1 alone gives the intermediate-physical (guest-physical) address.
        address_translate(gva, At::S1Write)
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
        self.change_stage2(gpa, |tables, tlb| tables.map_page(gpa, hpa, tlb))
    }

    fn map_grant(&mut self, gpa: u64, hpa: u64, writable: bool) -> Result<(), BadGuestAddress> {
        // The core hands us another domain's RAM page; never over the vGIC.
        if vgic::claims(gpa) || !hpa.is_multiple_of(PAGE) || !super::is_ram(hpa, PAGE) {
            return Err(BadGuestAddress(gpa));
        }
        self.change_stage2(gpa, |tables, tlb| tables.map_granted_page(gpa, hpa, writable, tlb))
    }

    fn unmap_grant(&mut self, gpa: u64) -> Result<(), BadGuestAddress> {
        let (ram_guest, ram_host, ram_size) = {
            let s = self.space.lock();
            (s.setup.ram_guest, s.setup.ram_host, s.setup.ram_size)
        };
        self.change_stage2(gpa, |tables, tlb| tables.end_grant(gpa, (ram_guest, ram_host, ram_size), tlb))
    }

    fn raise_upcall(&mut self) {
        self.space.lock().vgic.raise_private(self.vgic_cpu(), UPCALL_PPI);
    }

    fn set_irq_line(&mut self, intid: u32, level: bool) {
        let mut space = self.space.lock();
        space.vgic.set_spi_line(intid, level);
        let others = space.others(self.id);
        space.kicks |= others;
    }

    fn enable_event_delivery(&mut self) {
        self.ctx.spsr &= !SPSR_I;
    }

    fn complete_cpu_on(&mut self, result: CpuOnResult) {
        self.ctx.x[0] = psci::cpu_on_status(result) as u64;
    }

    fn power_on_sibling(&mut self, index: usize, entry: u64, context: u64) -> Option<Vcpu> {
        let nr_vcpus = self.space.lock().vgic.nr_vcpus();
        (index < nr_vcpus).then(|| Vcpu::powered_on(Arc::clone(&self.space), index, entry, context))
    }

    fn interrupt_pending(&self) -> bool {
        let timer_due = self.timer_deadline_count().is_some_and(|due| CNTPCT_EL0.get() >= due);
        let cpu = gic::cpu_interface(&self.vif);
        timer_due || self.space.lock().vgic.has_signalled(self.vgic_cpu(), &cpu)
    }

    fn timer_deadline_ns(&self) -> Option<u64> {
        self.timer_deadline_count().map(super::time::count_to_ns)
    }

    fn set_preemption_deadline(&mut self, deadline_ns: Option<u64>) {
        self.preempt_at = deadline_ns.map(super::time::ns_to_count);
    }

    fn unload(&mut self) {
        let cpu = this_cpu();
        if EL1_OWNER[cpu].load(Ordering::Relaxed) == self.uid {
            self.ctx.el1.save();
            // SAFETY: `ctx` is this vCPU's live Context, exclusively borrowed; the CPU's
            // FP/SIMD registers are this vCPU's (it owns this CPU's EL1).
            unsafe { super::vectors::fp_save(&mut *self.ctx) };
            // Its timer stays in the saved state; the CPU's must not wake another vCPU's run.
            msr!("cntv_ctl_el0", 0);
            isb(barrier::SY);
            EL1_OWNER[cpu].store(0, Ordering::Relaxed);
        }
        // Another pCPU may enter it next and change what this one holds of it: the next
        // entry here loads everything again.
        ACTIVE[cpu].store(0, Ordering::Relaxed);
        gic::VIF_OWNER[cpu].store(0, Ordering::Relaxed);
    }

    fn take_sibling_kicks(&mut self) -> u64 {
        core::mem::take(&mut self.space.lock().kicks)
    }
}

impl Vcpu {
    /// The domain's virtual counter offset (CNTVOFF_EL2, physical count at its creation):
    /// its virtual count is the physical count minus this.
    pub fn counter_offset(&self) -> u64 {
        self.space.lock().cntvoff
    }

    /// The physical count at which this vCPU's saved virtual timer fires, if it can and its
    /// PPI would then be signalled (a timer whose interrupt the vCPU masks wakes nothing).
    /// The CPU's EL1 registers are this vCPU's (its saved copy is stale).
    fn owns_el1(&self) -> bool {
        EL1_OWNER[this_cpu()].load(Ordering::Relaxed) == self.uid
    }

    fn timer_deadline_count(&self) -> Option<u64> {
        let (ctl, cval) = if self.owns_el1() {
            (mrs!("cntv_ctl_el0"), mrs!("cntv_cval_el0"))
        } else {
            (self.ctx.el1.cntv_ctl, self.ctx.el1.cntv_cval)
        };
        if ctl & (CNTV_ENABLE | CNTV_IMASK) != CNTV_ENABLE {
            return None;
        }
        let space = self.space.lock();
        if !space.vgic.would_signal(self.vgic_cpu(), VTIMER_PPI, &gic::cpu_interface(&self.vif)) {
            return None;
        }
        cval.checked_add(space.cntvoff)
    }
}

/// A zero-filled heap allocation (tables and contexts are too big to build on the stack).
fn zeroed_box<T: Zeroable>() -> Box<T> {
    // SAFETY: `T: Zeroable` promises all-zero bytes are a valid `T`.
    unsafe { Box::<T>::new_zeroed().assume_init() }
}

impl Drop for Vcpu {
    /// A vCPU that goes while its EL1 state is loaded leaves nothing behind to save into.
    fn drop(&mut self) {
        if self.owns_el1() {
            EL1_OWNER[this_cpu()].store(0, Ordering::Relaxed);
        }
    }
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
