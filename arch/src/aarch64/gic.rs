//! The physical GICv3 as the hypervisor uses it at EL2, and the virtual CPU interface
//! (ICH_*_EL2) through which the vGIC injects interrupts; or, on a GICv2 (GIC-400), the same
//! through the shared [`crate::arm::gicv2`] driver (GICH list registers, GICV for the guest).
//!
//! The hypervisor itself takes only four interrupts, all private to each CPU: the virtual
//! timer's (the guest's CNTV, which fires while the guest runs), the virtualization
//! maintenance interrupt (list registers ran dry), the EL2 physical timer's (a vCPU's
//! slice is over, or an idle wait ends) and the kick SGI another pCPU sends ([`KICK_SGI`]). It never unmasks IRQs at EL2: with
//! HCR_EL2.IMO set, a physical IRQ arriving while a guest runs exits to EL2, where it is
//! acknowledged and completed synchronously.

use super::console::early_log;
use super::dt::{Gic, MAX_CPUS, Platform};
use crate::arm::gicv2::{self, Gicv2Regions};
use crate::arm::vgic::{CpuInterface, GicVersion};
use aarch64_cpu::asm::barrier::{self, isb};
use aarch64_cpu::registers::{MPIDR_EL1, Readable};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The system-register interface and list registers are usable (a GICv3 was set up).
static READY: AtomicBool = AtomicBool::new(false);
/// A GICv2 with virtualization extensions was set up instead (see [`gicv2`]).
static V2: AtomicBool = AtomicBool::new(false);
static LR_COUNT: AtomicU32 = AtomicU32::new(0);
/// ICH_AP0R/AP1R registers in use: 1, 2 or 4 (from the preemption bits).
static AP_REGS: AtomicU32 = AtomicU32::new(0);
static VTIMER_INTID: AtomicU32 = AtomicU32::new(27);
static MAINTENANCE_INTID: AtomicU32 = AtomicU32::new(25);
static HYP_TIMER_INTID: AtomicU32 = AtomicU32::new(26);

/// The SGI one pCPU sends another to make it leave its guest (or its idle wait) and look
/// at the scheduler and its vCPU's interrupts again.
pub const KICK_SGI: u32 = 1;
/// Where the GICv3 distributor is (secondary CPUs' redistributors are found from it).
static REDIST_BASE: AtomicU64 = AtomicU64::new(0);

/// INTIDs from 1020 up are special (spurious, ...): nothing to complete.
pub const SPURIOUS: u32 = 1020;
/// Priority the hypervisor gives its PPIs (any value PMR lets through).
const PRIORITY: u8 = 0x80;

/// Distributor and redistributor register offsets.
const GICD_CTLR: u64 = 0x0000;
const GICD_CTLR_RWP: u32 = 1 << 31;
/// EnableGrp0 | EnableGrp1 (Grp1NS with two security states) | ARE (ARE_NS).
const GICD_CTLR_ENABLE: u32 = (1 << 0) | (1 << 1) | (1 << 4);
const GICR_TYPER: u64 = 0x0008;
const GICR_WAKER: u64 = 0x0014;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_SGI: u64 = 0x1_0000;
const GICR_IGROUPR0: u64 = GICR_SGI + 0x0080;
const GICR_ISENABLER0: u64 = GICR_SGI + 0x0100;
const GICR_IPRIORITYR: u64 = GICR_SGI + 0x0400;

/// Read a system register by name (the assembler knows the GICv3 names).
macro_rules! read_sysreg {
    ($name:expr) => {{
        let v: u64;
        // SAFETY: reading this GIC system register has no side effect beyond what the
        // caller documents (ICC_IAR1_EL1 acknowledges an interrupt); it exists on a CPU
        // with a GICv3 system-register interface, which `READY` or `init` establishes.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

macro_rules! write_sysreg {
    ($name:expr, $value:expr) => {{
        let v: u64 = $value;
        // SAFETY: as for `read_sysreg!`: a GIC register of this CPU, written with a value
        // the caller computed for it; it does not touch memory.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nomem, nostack)) };
    }};
}

fn mmio_read(addr: u64) -> u32 {
    // SAFETY: `addr` is a GIC register the device tree named, identity-mapped as device
    // memory by `mmu`; a 32-bit aligned read of it has no effect on memory we own.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn mmio_write(addr: u64, value: u32) {
    // SAFETY: as `mmio_read`; the distributor is programmed only by the boot CPU during
    // boot, each redistributor only by its own CPU.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

fn mmio_read64(addr: u64) -> u64 {
    // SAFETY: as `mmio_read`, for a 64-bit register (GICR_TYPER) at an 8-byte aligned address.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// Wait up to ~a million polls for `done`; false if it never happened.
fn poll(mut done: impl FnMut() -> bool) -> bool {
    (0..1_000_000).any(|_| {
        let ok = done();
        core::hint::spin_loop();
        ok
    })
}

/// Set up the GIC for the boot CPU: distributor with affinity routing, this CPU's
/// redistributor awake, the system-register interface for EL2 and EL1, the PPIs we take.
/// Without a GICv3 the vGIC stays off (guests then get no interrupts).
pub fn init_boot_cpu(p: &Platform) {
    let vtimer = p.timer_intids.map(|t| t[2]).unwrap_or(27);
    let hyp_timer = p.timer_intids.map(|t| t[3]).unwrap_or(26);
    if let Gic::V2 { dist, cpu, cpu_size, hyp, vcpu, vcpu_size, maintenance } = p.gic {
        // ZynqMP's GIC-400 repeats each 4 KiB page of GICC (and GICV) over 64 KiB.
        let cpu_contiguous = gicv2::contiguous_base(cpu, cpu_size, |a| mmio_read(a + gicv2::IIDR));
        let aliased = cpu_contiguous != cpu;
        let vcpu = gicv2::contiguous_vcpu_base(vcpu, vcpu_size, aliased);
        if aliased {
            early_log!("GICv2: 64 KiB-aliased CPU interface: using {:#x}, GICV {:#x}", cpu_contiguous, vcpu);
        }
        let regions = Gicv2Regions { dist, cpu: cpu_contiguous, hyp, vcpu };
        if hyp == 0 || vcpu == 0 || !gicv2::init(regions, &[vtimer, maintenance, hyp_timer, KICK_SGI]) {
            early_log!("GICv2 without virtualization extensions: guests get no virtual interrupt controller");
            return;
        }
        VTIMER_INTID.store(vtimer, Ordering::Relaxed);
        MAINTENANCE_INTID.store(maintenance, Ordering::Relaxed);
        HYP_TIMER_INTID.store(hyp_timer, Ordering::Relaxed);
        V2.store(true, Ordering::Release);
        early_log!("GICv2: {} list registers; vtimer INTID {}", gicv2::lr_count(), vtimer);
        return;
    }
    let Gic::V3 { dist, redist, maintenance } = p.gic else {
        early_log!("no GICv3: guests get no virtual interrupt controller");
        return;
    };
    let Some(rd) = find_redistributor(redist) else {
        early_log!("GICv3: no redistributor for this CPU: guests get no virtual interrupt controller");
        return;
    };
    enable_distributor(dist);
    if !wake_redistributor(rd) {
        early_log!("GICv3: the redistributor at {:#x} does not wake up", rd);
        return;
    }
    for intid in [vtimer, maintenance, hyp_timer, KICK_SGI] {
        enable_ppi(rd, intid);
    }
    REDIST_BASE.store(redist, Ordering::Relaxed);
    enable_cpu_interface();
    let vtr = read_sysreg!("ICH_VTR_EL2");
    LR_COUNT.store((vtr & 0x1f) as u32 + 1, Ordering::Relaxed);
    // Empty list registers from here on: entries only ever write the ones they fill, and
    // exits empty those again.
    for n in 0..lr_count() {
        write_lr(n, 0);
    }
    let pre_bits = ((vtr >> 26) & 7) + 1;
    AP_REGS.store(1 << (pre_bits.saturating_sub(5)), Ordering::Relaxed);
    VTIMER_INTID.store(vtimer, Ordering::Relaxed);
    MAINTENANCE_INTID.store(maintenance, Ordering::Relaxed);
    HYP_TIMER_INTID.store(hyp_timer, Ordering::Relaxed);
    READY.store(true, Ordering::Release);
    early_log!("GICv3: {} list registers, {} preemption bits; vtimer INTID {}", lr_count(), pre_bits, vtimer);
}

/// Note logical CPU `cpu` (this one) as a kick target (a GICv2 learns it from the CPU).
pub fn note_cpu(cpu: usize) {
    if is_v2() {
        gicv2::note_cpu(cpu);
    }
}

/// Set up a secondary CPU's part of the GIC the boot CPU configured: on a GICv3 its
/// redistributor awake, the PPIs and the kick SGI enabled, its system-register interface on,
/// its list registers empty; on a GICv2 its banked SGIs, PPIs and interfaces. False (the CPU
/// cannot run guests) without a GIC or its redistributor.
pub fn init_secondary(cpu: usize) -> bool {
    if is_v2() {
        let intids = [vtimer_intid(), maintenance_intid(), hyp_timer_intid(), KICK_SGI];
        return gicv2::init_cpu(cpu, &intids);
    }
    if !READY.load(Ordering::Acquire) {
        return false;
    }
    let Some(rd) = find_redistributor(REDIST_BASE.load(Ordering::Relaxed)) else {
        return false;
    };
    if !wake_redistributor(rd) {
        return false;
    }
    for intid in [vtimer_intid(), maintenance_intid(), hyp_timer_intid(), KICK_SGI] {
        enable_ppi(rd, intid);
    }
    enable_cpu_interface();
    for n in 0..lr_count() {
        write_lr(n, 0);
    }
    write_sysreg!("ICH_HCR_EL2", 0);
    isb(barrier::SY);
    true
}

/// Cross-CPU kicks are possible (a GICv3 or a GICv2 with virtualization was set up).
pub fn can_kick() -> bool {
    READY.load(Ordering::Acquire) || is_v2()
}

/// Send [`KICK_SGI`] to logical CPU `cpu`, whose affinity is `mpidr`. GICv3: ICC_SGI1R_EL1
/// with Aff3.Aff2.Aff1 and one bit of the target list for Aff0 (its range selector for
/// Aff0 >= 16). GICv2: GICD_SGIR with the CPU's interface bit.
pub fn send_kick(cpu: usize, mpidr: u64) {
    if is_v2() {
        barrier::dsb(barrier::SY);
        gicv2::send_sgi_to_cpu(KICK_SGI, cpu);
        return;
    }
    if !can_kick() {
        return;
    }
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    let value = (1u64 << (aff0 % 16))
        | (aff1 << 16)
        | (u64::from(KICK_SGI) << 24)
        | (aff2 << 32)
        | ((aff0 / 16) << 44)
        | (aff3 << 48);
    // The kick must not overtake the writes that made it necessary (a vCPU put back in its
    // slot, an event marked pending).
    barrier::dsb(barrier::ISHST);
    write_sysreg!("ICC_SGI1R_EL1", value);
    isb(barrier::SY);
}

/// Take and complete the kicks pending at this CPU (after an idle wait, which they ended):
/// what they asked for is looked at by the caller anyway. Other interrupts stay pending.
pub fn drain_kicks() {
    if is_v2() {
        gicv2::drain_sgi(KICK_SGI);
        return;
    }
    if !can_kick() {
        return;
    }
    for _ in 0..4 {
        if (read_sysreg!("ICC_HPPIR1_EL1") & 0xff_ffff) as u32 != KICK_SGI {
            return;
        }
        let iar = acknowledge();
        end_of_interrupt(iar);
    }
}

/// This CPU's redistributor: walk the frames until GICR_TYPER's affinity is ours.
fn find_redistributor(base: u64) -> Option<u64> {
    let mpidr = MPIDR_EL1.get();
    let affinity = ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff);
    let mut frame = base;
    for _ in 0..256 {
        let typer = mmio_read64(frame + GICR_TYPER);
        if typer >> 32 == affinity {
            return Some(frame);
        }
        if typer & (1 << 4) != 0 {
            return None; // Last
        }
        // Two 64 KiB frames, four with virtual LPIs (GICv4).
        frame += if typer & (1 << 1) != 0 { 0x4_0000 } else { 0x2_0000 };
    }
    None
}

fn enable_distributor(dist: u64) {
    mmio_write(dist + GICD_CTLR, GICD_CTLR_ENABLE);
    if !poll(|| mmio_read(dist + GICD_CTLR) & GICD_CTLR_RWP == 0) {
        early_log!("GICv3: distributor register writes never complete");
    }
}

fn wake_redistributor(rd: u64) -> bool {
    let waker = mmio_read(rd + GICR_WAKER);
    mmio_write(rd + GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
    poll(|| mmio_read(rd + GICR_WAKER) & WAKER_CHILDREN_ASLEEP == 0)
}

/// Group 1, our priority, enabled (a PPI or an SGI of this CPU).
fn enable_ppi(rd: u64, intid: u32) {
    if intid >= 32 {
        return;
    }
    let bit = 1 << intid;
    mmio_write(rd + GICR_IGROUPR0, mmio_read(rd + GICR_IGROUPR0) | bit);
    let prio_word = rd + GICR_IPRIORITYR + u64::from(intid & !3);
    let shift = 8 * (intid & 3);
    let word = (mmio_read(prio_word) & !(0xff << shift)) | (u32::from(PRIORITY) << shift);
    mmio_write(prio_word, word);
    mmio_write(rd + GICR_ISENABLER0, bit);
}

/// ICC_SRE_EL2: SRE, DFB, DIB, Enable (EL1 may use its own ICC_SRE_EL1); the guest's EL1
/// system-register interface on; priority mask open, EOI also deactivates, group 1 on.
fn enable_cpu_interface() {
    write_sysreg!("ICC_SRE_EL2", 0b1111);
    isb(barrier::SY);
    write_sysreg!("ICC_SRE_EL1", 0b111);
    write_sysreg!("ICC_PMR_EL1", 0xff);
    write_sysreg!("ICC_BPR1_EL1", 0);
    write_sysreg!("ICC_CTLR_EL1", 0);
    write_sysreg!("ICC_IGRPEN1_EL1", 1);
    isb(barrier::SY);
}

pub fn ready() -> bool {
    READY.load(Ordering::Acquire) || is_v2()
}

fn is_v2() -> bool {
    V2.load(Ordering::Acquire)
}

/// The virtual GIC guests get: that of the host's virtualization interface.
pub fn guest_version() -> GicVersion {
    if is_v2() { GicVersion::V2 } else { GicVersion::V3 }
}

pub fn lr_count() -> usize {
    if is_v2() {
        return gicv2::lr_count();
    }
    LR_COUNT.load(Ordering::Relaxed) as usize
}

pub fn vtimer_intid() -> u32 {
    VTIMER_INTID.load(Ordering::Relaxed)
}

pub fn maintenance_intid() -> u32 {
    MAINTENANCE_INTID.load(Ordering::Relaxed)
}

pub fn hyp_timer_intid() -> u32 {
    HYP_TIMER_INTID.load(Ordering::Relaxed)
}

/// Acknowledge the highest-priority pending group-1 interrupt: the value to hand to
/// [`end_of_interrupt`] (a GICv2 SGI's carries its source CPU); [`intid_of`] it is the INTID
/// (≥ [`SPURIOUS`] if none).
pub fn acknowledge() -> u32 {
    if is_v2() {
        return gicv2::acknowledge() & 0x1fff;
    }
    (read_sysreg!("ICC_IAR1_EL1") & 0xff_ffff) as u32
}

/// The INTID of what [`acknowledge`] returned.
pub fn intid_of(iar: u32) -> u32 {
    if is_v2() { iar & 0x3ff } else { iar }
}

/// Drop the priority of and deactivate what [`acknowledge`] returned (EOImode 0).
pub fn end_of_interrupt(intid: u32) {
    if is_v2() {
        gicv2::end_of_interrupt(intid);
        return;
    }
    write_sysreg!("ICC_EOIR1_EL1", u64::from(intid));
    isb(barrier::SY);
}

/// The virtual CPU interface's state that belongs to one vCPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuInterface {
    pub vmcr: u64,
    pub ap0r: [u64; 4],
    pub ap1r: [u64; 4],
}

macro_rules! lr_access {
    ($($n:literal),*) => {
        /// Read list register `n` (< [`lr_count`]).
        pub fn read_lr(n: usize) -> u64 {
            if is_v2() {
                return u64::from(gicv2::read_lr(n));
            }
            match n {
                $($n => read_sysreg!(concat!("ICH_LR", $n, "_EL2")),)*
                _ => 0,
            }
        }
        /// Write list register `n` (< [`lr_count`]).
        pub fn write_lr(n: usize, value: u64) {
            if is_v2() {
                gicv2::write_lr(n, value as u32);
                return;
            }
            match n {
                $($n => write_sysreg!(concat!("ICH_LR", $n, "_EL2"), value),)*
                _ => {}
            }
        }
    };
}
lr_access!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

macro_rules! ap_access {
    ($($n:literal),*) => {
        fn save_ap(state: &mut VcpuInterface, count: usize) {
            $(if $n < count {
                state.ap0r[$n] = read_sysreg!(concat!("ICH_AP0R", $n, "_EL2"));
                state.ap1r[$n] = read_sysreg!(concat!("ICH_AP1R", $n, "_EL2"));
            })*
        }
        fn restore_ap(state: &VcpuInterface, count: usize) {
            $(if $n < count {
                write_sysreg!(concat!("ICH_AP0R", $n, "_EL2"), state.ap0r[$n]);
                write_sysreg!(concat!("ICH_AP1R", $n, "_EL2"), state.ap1r[$n]);
            })*
        }
    };
}
ap_access!(0, 1, 2, 3);

/// What the vCPU's saved interface lets through (for a WFI or a halted vCPU's wake-up).
pub fn cpu_interface(state: &VcpuInterface) -> CpuInterface {
    if !ready() {
        return CpuInterface::OPEN;
    }
    if is_v2() {
        return gicv2::cpu_interface(state.vmcr as u32, state.ap0r[0] as u32);
    }
    let count = (AP_REGS.load(Ordering::Relaxed) as usize).clamp(1, 4);
    let mut active = [0u64; 4];
    for (n, a) in active.iter_mut().enumerate().take(count) {
        *a = state.ap0r[n] | state.ap1r[n];
    }
    CpuInterface::from_vmcr(state.vmcr, &active[..count])
}

/// Per physical CPU: the vCPU whose interface state (VMCR, active priorities) that CPU holds:
/// the guest changes it without trapping, each exit saves it, and an entry of the same vCPU
/// need not load it.
pub static VIF_OWNER: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// ICH_HCR_EL2: En, and NPIE (maintenance when no LR is pending) if interrupts wait.
pub fn load(state: &VcpuInterface, refill_wanted: bool, reload: bool) {
    if is_v2() {
        gicv2::load(state.vmcr as u32, state.ap0r[0] as u32, refill_wanted);
        return;
    }
    if reload {
        write_sysreg!("ICH_VMCR_EL2", state.vmcr);
        restore_ap(state, AP_REGS.load(Ordering::Relaxed) as usize);
    }
    let npie = if refill_wanted { 1 << 3 } else { 0 };
    write_sysreg!("ICH_HCR_EL2", 1 | npie);
}

/// Save the vCPU's interface state after an exit; the list registers stay for the caller.
pub fn save(state: &mut VcpuInterface) {
    if is_v2() {
        let (vmcr, apr) = gicv2::save();
        state.vmcr = u64::from(vmcr);
        state.ap0r[0] = u64::from(apr);
        return;
    }
    state.vmcr = read_sysreg!("ICH_VMCR_EL2");
    save_ap(state, AP_REGS.load(Ordering::Relaxed) as usize);
    write_sysreg!("ICH_HCR_EL2", 0);
}
