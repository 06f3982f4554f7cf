//! The physical GICv2 (GIC-400, Cortex-A15 GIC) as the hypervisor uses it, aarch64 at EL2 and
//! ARMv7 in HYP mode alike: the distributor and CPU interface for the few PPIs the
//! hypervisor takes itself, and the virtual interface control block (GICH) through whose
//! list registers the vGIC injects. The guest's CPU interface is the GICV frame, which the
//! backend maps into the guest's stage 2 at [`crate::arm::vgic::GUEST_GICC_BASE`].
//!
//! Register blocks are reached at their physical addresses (both backends identity-map
//! everything outside RAM as device memory). The boot CPU programs the distributor once at
//! boot; each CPU its own banked part (SGIs, PPIs, CPU interface, GICH), at its start and
//! then around every guest entry and exit.

use crate::arm::hwdt::MAX_CPUS;
use crate::arm::vgic::CpuInterface;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// Where the GIC's register blocks are, from the host's device tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gicv2Regions {
    pub dist: u64,
    pub cpu: u64,
    /// Virtual interface control (GICH).
    pub hyp: u64,
    /// The virtual CPU interface (GICV) a guest uses.
    pub vcpu: u64,
}

static DIST: AtomicUsize = AtomicUsize::new(0);
static CPU: AtomicUsize = AtomicUsize::new(0);
static HYP: AtomicUsize = AtomicUsize::new(0);
static VCPU: AtomicUsize = AtomicUsize::new(0);
static LR_COUNT: AtomicU32 = AtomicU32::new(0);
static READY: AtomicBool = AtomicBool::new(false);

/// INTIDs from 1020 up are special (1023: spurious): nothing to complete.
pub const SPURIOUS: u32 = 1020;
/// Priority the hypervisor gives its PPIs.
const PRIORITY: u8 = 0x80;

const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER: usize = 0x100;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_SGIR: usize = 0xf00;
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_BPR: usize = 0x008;
const GICC_IAR: usize = 0x00c;
const GICC_EOIR: usize = 0x010;
const GICC_HPPIR: usize = 0x018;
const GICH_HCR: usize = 0x000;
const GICH_VTR: usize = 0x004;
const GICH_VMCR: usize = 0x008;
const GICH_APR: usize = 0x0f0;
const GICH_LR0: usize = 0x100;
/// GICH_HCR: En, NPIE (maintenance interrupt when no list register is pending).
const HCR_EN: u32 = 1 << 0;
const HCR_NPIE: u32 = 1 << 3;
/// GICH_VMCR as a reset virtual CPU interface reads (VMPriMask 0: everything masked).
pub const VMCR_RESET: u32 = 0;

fn read(base: &AtomicUsize, offset: usize) -> u32 {
    let addr = base.load(Ordering::Relaxed) + offset;
    // SAFETY: `base` is a GIC register block the device tree named (set by `init` before
    // READY), identity-mapped as device memory by the backend's MMU setup; this is an
    // aligned 32-bit register read.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write(base: &AtomicUsize, offset: usize, value: u32) {
    let addr = base.load(Ordering::Relaxed) + offset;
    // SAFETY: as `read`; the distributor's shared registers are programmed by the boot CPU
    // only, the banked ones (SGIs, PPIs, CPU interface, GICH) by their own CPU; GICD_SGIR
    // writes only raise SGIs.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

fn write_byte(base: &AtomicUsize, offset: usize, value: u8) {
    let addr = base.load(Ordering::Relaxed) + offset;
    // SAFETY: as `read`; IPRIORITYR is byte-accessible in GICv2.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

/// Set up the distributor and this CPU's interface, enable this CPU's SGIs and PPIs `intids`
/// (INTIDs 0-31: the kick SGI too, whose enable bit need not be set at reset) at our
/// priority, and read how many list registers the virtual interface has. Returns false when
/// a region does not fit the address space.
pub fn init(regions: Gicv2Regions, intids: &[u32]) -> bool {
    let fit = |a: u64| usize::try_from(a).ok().filter(|&a| a != 0);
    let (Some(d), Some(c), Some(h), Some(v)) =
        (fit(regions.dist), fit(regions.cpu), fit(regions.hyp), fit(regions.vcpu))
    else {
        return false;
    };
    DIST.store(d, Ordering::Relaxed);
    CPU.store(c, Ordering::Relaxed);
    HYP.store(h, Ordering::Relaxed);
    VCPU.store(v, Ordering::Relaxed);
    enable_banked(intids);
    write(&DIST, GICD_CTLR, 1);
    write(&CPU, GICC_PMR, 0xff);
    write(&CPU, GICC_BPR, 0);
    write(&CPU, GICC_CTLR, 1);
    write(&HYP, GICH_HCR, 0);
    LR_COUNT.store((read(&HYP, GICH_VTR) & 0x3f) + 1, Ordering::Relaxed);
    READY.store(true, Ordering::Release);
    true
}

/// This CPU's SGIs and PPIs among `intids` (< 32, banked per CPU) at our priority, enabled.
fn enable_banked(intids: &[u32]) {
    for &intid in intids.iter().filter(|i| **i < 32) {
        write_byte(&DIST, GICD_IPRIORITYR + intid as usize, PRIORITY);
        write(&DIST, GICD_ISENABLER, 1 << intid);
    }
}

/// Secondary logical CPU `cpu`'s banked part of the GIC the boot CPU set up with [`init`]:
/// the SGIs and PPIs `intids`, its CPU interface, its virtual interface control with empty
/// list registers; and its place as an SGI target ([`note_cpu`]). False without [`init`].
pub fn init_cpu(cpu: usize, intids: &[u32]) -> bool {
    if !ready() {
        return false;
    }
    enable_banked(intids);
    write(&CPU, GICC_PMR, 0xff);
    write(&CPU, GICC_BPR, 0);
    write(&CPU, GICC_CTLR, 1);
    write(&HYP, GICH_HCR, 0);
    // Entries write only the list registers they fill, and exits empty those again.
    for n in 0..lr_count() {
        write_lr(n, 0);
    }
    note_cpu(cpu);
    true
}

/// This CPU's interface as an SGI target (bit n: CPU interface n): the banked GICD_ITARGETSR0.
pub fn own_target() -> u8 {
    read(&DIST, GICD_ITARGETSR) as u8
}

/// Raise SGI `intid` (0-15) at the CPU interfaces in `targets`.
pub fn send_sgi(intid: u32, targets: u8) {
    write(&DIST, GICD_SGIR, (u32::from(targets) << 16) | (intid & 0xf));
}

/// Each logical CPU's interface as an SGI target (its GICD_ITARGETSR0), set by that CPU: a
/// GICv2 numbers its interfaces its own way, which only the CPU itself can read.
static TARGETS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Note logical CPU `cpu` (the calling one) as an SGI target.
pub fn note_cpu(cpu: usize) {
    if let Some(t) = TARGETS.get(cpu) {
        t.store(u32::from(own_target()), Ordering::Relaxed);
    }
}

/// Raise SGI `intid` at logical CPU `cpu`, if it noted itself. The caller orders its earlier
/// memory writes before this (a DSB: a device write is not ordered by a DMB).
pub fn send_sgi_to_cpu(intid: u32, cpu: usize) {
    let target = TARGETS.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed)) as u8;
    if target != 0 {
        send_sgi(intid, target);
    }
}

/// Take and complete SGI `intid` while it is this CPU's highest-priority pending interrupt
/// (a few at most: one per sender). What it asked for the caller looks at anyway.
pub fn drain_sgi(intid: u32) {
    for _ in 0..4 {
        if highest_pending() != intid {
            return;
        }
        end_of_interrupt(acknowledge());
    }
}

/// The INTID of the highest-priority pending interrupt of this CPU (1023: none).
pub fn highest_pending() -> u32 {
    read(&CPU, GICC_HPPIR) & 0x3ff
}

pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

pub fn lr_count() -> usize {
    LR_COUNT.load(Ordering::Relaxed) as usize
}

/// Physical address of the GICV frame (what the guest's stage 2 maps as its GICC).
pub fn vcpu_interface() -> u64 {
    VCPU.load(Ordering::Relaxed) as u64
}

/// Acknowledge the highest-priority pending interrupt: the whole GICC_IAR value, which
/// [`end_of_interrupt`] wants back; its INTID is `& 0x3ff`.
pub fn acknowledge() -> u32 {
    read(&CPU, GICC_IAR)
}

/// Drop the priority of and deactivate what [`acknowledge`] returned.
pub fn end_of_interrupt(iar: u32) {
    write(&CPU, GICC_EOIR, iar);
}

pub fn read_lr(n: usize) -> u32 {
    if n < lr_count() { read(&HYP, GICH_LR0 + 4 * n) } else { 0 }
}

pub fn write_lr(n: usize, value: u32) {
    if n < lr_count() {
        write(&HYP, GICH_LR0 + 4 * n, value);
    }
}

/// Load a vCPU's virtual CPU interface state and turn the interface on (with a maintenance
/// interrupt once no list register is pending if `refill_wanted`).
pub fn load(vmcr: u32, apr: u32, refill_wanted: bool) {
    write(&HYP, GICH_VMCR, vmcr);
    write(&HYP, GICH_APR, apr);
    write(&HYP, GICH_HCR, HCR_EN | if refill_wanted { HCR_NPIE } else { 0 });
}

/// Save the running vCPU's interface state `(vmcr, apr)` and turn the interface off.
pub fn save() -> (u32, u32) {
    let state = (read(&HYP, GICH_VMCR), read(&HYP, GICH_APR));
    write(&HYP, GICH_HCR, 0);
    state
}

/// What a saved interface lets through.
pub fn cpu_interface(vmcr: u32, apr: u32) -> CpuInterface {
    CpuInterface::from_gich_vmcr(vmcr, apr)
}

/// GICC_IIDR (and GICV_IIDR): the interface's implementer and product.
pub const IIDR: u64 = 0xfc;
/// A 128 KiB CPU interface region whose 4 KiB pages are each repeated over 64 KiB.
const ALIASED_SIZE: u64 = 0x2_0000;
/// Where in that region the last alias of page 0 sits, followed by the first of page 1.
const ALIASED_OFFSET: u64 = 0xf000;

/// Whether an IIDR value is a GIC-400's (ARM, product 0x02, any revision), as Linux checks.
pub fn is_gic400(iidr: u32) -> bool {
    iidr & 0x00ff_0fff == 0x0002_043b
}

/// The base of the 8 KiB contiguous CPU interface within `[base, base + size)`: where the DT
/// gives 128 KiB and the GIC-400's IIDR reads the same at `base` and at `base + 0xf000`, the
/// two 4 KiB pages are aliased every 64 KiB (ZynqMP) and the last alias of the first page,
/// `base + 0xf000`, runs straight into the second one; Linux's GIC driver decides the same
/// way. Otherwise `base` itself. `iidr_at(a)` reads the IIDR of the interface at `a`.
pub fn contiguous_base(base: u64, size: u64, iidr_at: impl Fn(u64) -> u32) -> u64 {
    if size == ALIASED_SIZE && is_gic400(iidr_at(base)) && is_gic400(iidr_at(base + ALIASED_OFFSET)) {
        base + ALIASED_OFFSET
    } else {
        base
    }
}

/// The GICV counterpart of an interface [`contiguous_base`] moved: the same layout.
pub fn contiguous_vcpu_base(vcpu: u64, vcpu_size: u64, cpu_was_aliased: bool) -> u64 {
    if cpu_was_aliased && vcpu_size == ALIASED_SIZE { vcpu + ALIASED_OFFSET } else { vcpu }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIC400: u32 = 0x0202_143b;

    #[test]
    fn an_aliased_128k_gic400_interface_moves_to_its_contiguous_8k() {
        // ZynqMP: GICC 0xf902_0000, 128 KiB, page 0 repeated up to 0xf902_f000.
        let aliased = |a: u64| if a == 0xf902_0000 || a == 0xf902_f000 { GIC400 } else { 0 };
        assert_eq!(contiguous_base(0xf902_0000, 0x2_0000, aliased), 0xf902_f000);
        assert_eq!(contiguous_vcpu_base(0xf906_0000, 0x2_0000, true), 0xf906_f000);
    }

    #[test]
    fn plain_layouts_stay_where_the_dt_says() {
        // Raspberry Pi 4 (8 KiB) and QEMU virt: no alias check at all.
        assert_eq!(contiguous_base(0xff84_2000, 0x2000, |_| GIC400), 0xff84_2000);
        // 128 KiB, but page 0 does not repeat at +0xf000 (a GIC with a real 128 KiB frame).
        let not_repeated = |a: u64| if a == 0x1000_0000 { GIC400 } else { 0 };
        assert_eq!(contiguous_base(0x1000_0000, 0x2_0000, not_repeated), 0x1000_0000);
        // Not a GIC-400.
        assert_eq!(contiguous_base(0x1000_0000, 0x2_0000, |_| 0x0000_043b), 0x1000_0000);
        assert_eq!(contiguous_vcpu_base(0x2000_0000, 0x2_0000, false), 0x2000_0000);
        assert_eq!(contiguous_vcpu_base(0x2000_0000, 0x2000, true), 0x2000_0000);
    }
}
