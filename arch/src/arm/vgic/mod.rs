//! A virtual GIC for one domain, GICv3 or GICv2, as a register model free of hardware access.
//!
//! GICv3: the guest sees a distributor at [`GUEST_GICD_BASE`] and one 128 KiB redistributor
//! per vCPU from [`GUEST_GICR_BASE`] (Xen's guest memory map). Affinity routing is always on,
//! there are no LPIs, every interrupt is group 1.
//!
//! GICv2 ([`GicVersion::V2`], module `v2`): a 4 KiB distributor at [`GUEST_GICD_BASE`] with
//! the banked SGI/PPI registers, ITARGETSR routing and GICD_SGIR; the CPU interface is the
//! hardware's GICV frame, mapped by the backend at [`GUEST_GICC_BASE`]; every interrupt is
//! group 0 (what Linux uses on a GICv2 without security extensions).
//!
//! Either way the CPU interface is the hardware's virtual one:
//! the backend moves what this model says is deliverable into the list registers
//! ([`Vgic::fill_lrs`]) before entering the guest and folds back what the guest did with them
//! ([`Vgic::sync_lrs`]) after every exit, so between runs this model is the whole truth.
//!
//! State is kept per vCPU for SGIs/PPIs (INTIDs 0-31) and per domain for SPIs, so SMP only
//! needs more redistributors, not a new structure.

mod mmio;
#[cfg(test)]
mod tests;
mod v2;
#[cfg(test)]
mod v2_tests;

/// Which GIC architecture the guest sees (the one the host's virtualization interface has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

/// GICv2 guests: the CPU interface (the hardware's GICV frame, mapped there by stage 2) and
/// the distributor's size (Xen's GUEST_GICC_BASE/SIZE, GUEST_GICD_SIZE for GICv2).
pub const GUEST_GICC_BASE: u64 = 0x0300_2000;
pub const GUEST_GICC_SIZE: u64 = 0x2000;
pub const GUEST_GICV2_GICD_SIZE: u64 = 0x1000;

pub use mmio::{MmioOutcome, claims};
pub use v2::SGIR as GICD_SGIR;

/// Guest-physical base of the distributor (64 KiB).
pub const GUEST_GICD_BASE: u64 = 0x0300_1000;
pub const GUEST_GICD_SIZE: u64 = 0x1_0000;
/// Guest-physical base of vCPU 0's redistributor; vCPU n's is at `+ n * GUEST_GICR_STRIDE`.
pub const GUEST_GICR_BASE: u64 = 0x0302_0000;
/// One redistributor: RD_base frame then SGI_base frame, 64 KiB each.
pub const GUEST_GICR_STRIDE: u64 = 0x2_0000;
/// The redistributor region the guest's device tree declares (Xen's: room for 128 vCPUs).
pub const GUEST_GICR_REGION_SIZE: u64 = 0x100_0000;
/// The virtual timer's PPI.
pub const VTIMER_PPI: u32 = 27;
/// The Xen event-channel upcall PPI (the `/hypervisor` node's interrupt).
pub const UPCALL_PPI: u32 = 31;
/// The virtual PL011's SPI (0 in device-tree SPI numbering).
pub const VPL011_SPI: u32 = 32;
/// SPIs the distributor implements (INTIDs 32..32 + NR_SPIS).
pub const NR_SPIS: usize = 64;
/// INTIDs below this exist (SGIs, PPIs and SPIs).
pub const NR_INTIDS: u32 = 32 + NR_SPIS as u32;
/// vCPUs (redistributors) one domain may have.
pub const MAX_VCPUS: usize = 8;
/// List registers a CPU interface can have (ICH_VTR_EL2.ListRegs is 4 bits).
pub const MAX_LRS: usize = 16;

/// Priority bits kept (the upper 5, as many as the virtual CPU interfaces we run on have).
const PRIORITY_MASK: u8 = 0xf8;

/// What a vCPU's virtual CPU interface lets through. As on hardware, an interrupt the list
/// registers hold is only signalled to the vCPU (and so only ends its WFI) with group 1
/// enabled at the interface (ICC_IGRPEN1_EL1, VMCR.VENG1) and a priority higher, that is
/// lower in value, than both the priority mask (ICC_PMR_EL1, VMCR.VPMR) and the running
/// priority (the highest active one). Xen's WFI check (`vgic_vcpu_pending_irq`) looks at the
/// same mask and active priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuInterface {
    pub group1_enabled: bool,
    pub priority_mask: u8,
    pub running_priority: u8,
}

/// ICH_VMCR_EL2 fields.
const VMCR_VENG1: u64 = 1 << 1;
const VMCR_VPMR_SHIFT: u32 = 24;

impl CpuInterface {
    /// A wide open interface: group 1 on, nothing masked or active (priority 0xff is never
    /// signalled).
    pub const OPEN: Self = Self { group1_enabled: true, priority_mask: 0xff, running_priority: 0xff };

    /// From the saved ICH_VMCR_EL2 and active-priority registers (`active[n]` = ICH_AP0R<n>
    /// | ICH_AP1R<n>, as many as the interface has: 1, 2 or 4 for 5, 6 or 7 priority bits;
    /// bit `i` over them all set means group priority `i` is active).
    pub fn from_vmcr(vmcr: u64, active: &[u64]) -> Self {
        let shift = match active.len() {
            0 | 1 => 3,
            2 => 2,
            _ => 1,
        };
        let running = active
            .iter()
            .enumerate()
            .find(|(_, a)| **a as u32 != 0)
            .map(|(n, a)| n as u32 * 32 + (*a as u32).trailing_zeros())
            .map_or(0xff, |group| (group << shift).min(0xff) as u8);
        Self {
            group1_enabled: vmcr & VMCR_VENG1 != 0,
            priority_mask: (vmcr >> VMCR_VPMR_SHIFT) as u8,
            running_priority: running,
        }
    }

    /// From a saved GICv2 GICH_VMCR and GICH_APR (5 priority bits: bit `i` of APR set means
    /// group priority `i << 3` is active). Our GICv2 guests' interrupts are group 0.
    pub fn from_gich_vmcr(vmcr: u32, apr: u32) -> Self {
        let running = if apr == 0 { 0xff } else { ((apr.trailing_zeros() << 3).min(0xff)) as u8 };
        Self {
            group1_enabled: vmcr & 1 != 0,
            priority_mask: (((vmcr >> 27) & 0x1f) << 3) as u8,
            running_priority: running,
        }
    }

    /// Would an interrupt of `priority` be signalled?
    pub fn admits(&self, priority: u8) -> bool {
        self.group1_enabled && priority < self.priority_mask && priority < self.running_priority
    }
}

/// The state of one interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Irq {
    enabled: bool,
    /// Pending latch: set by an edge, ISPENDR, an SGI or an injection; cleared on delivery.
    latch: bool,
    /// Input line level (SPIs driven by device models).
    line: bool,
    active: bool,
    /// Edge-triggered (ICFGR bit 1) rather than level-sensitive.
    edge: bool,
    priority: u8,
}

impl Irq {
    fn pending(&self) -> bool {
        self.latch || (self.line && !self.edge)
    }
}

/// One list register's worth of interrupt, as handed to the hardware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LrEntry {
    pub intid: u32,
    pub priority: u8,
    pub pending: bool,
    pub active: bool,
    /// The pending state came from the latch (to be restored if the guest did not take it);
    /// otherwise from a level line, which still holds it.
    latched: bool,
    /// GICv2 SGIs: the vCPU that sent it (GICH_LR.CPUID, what the guest's IAR reports).
    source: u8,
}

/// ICH_LR<n>_EL2 fields.
mod lr {
    pub const STATE_SHIFT: u32 = 62;
    pub const PENDING: u64 = 1 << 62;
    pub const ACTIVE: u64 = 1 << 63;
    pub const GROUP1: u64 = 1 << 60;
    pub const PRIORITY_SHIFT: u32 = 48;
    pub const VINTID_MASK: u64 = 0xffff_ffff;
}

impl LrEntry {
    /// The list register value for `version`: GICH_LR (GICv2, group 0) or ICH_LR<n>_EL2.
    pub fn encode_for(&self, version: GicVersion) -> u64 {
        match version {
            GicVersion::V3 => self.encode(),
            GicVersion::V2 => {
                let mut v = u64::from(self.priority >> 3) << 23 | u64::from(self.intid & 0x3ff);
                if self.intid < 16 {
                    v |= u64::from(self.source & 7) << 10;
                }
                if self.pending {
                    v |= 1 << 28;
                }
                if self.active {
                    v |= 1 << 29;
                }
                v
            }
        }
    }

    /// The ICH_LR<n>_EL2 value: state, group 1, priority, virtual INTID (software interrupt).
    pub fn encode(&self) -> u64 {
        let mut v = lr::GROUP1 | (u64::from(self.priority) << lr::PRIORITY_SHIFT) | u64::from(self.intid);
        if self.pending {
            v |= lr::PENDING;
        }
        if self.active {
            v |= lr::ACTIVE;
        }
        v
    }
}

/// What to load into the list registers for one entry into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LrPlan {
    pub values: [u64; MAX_LRS],
    pub count: usize,
    /// More interrupts wait than fit: ask for a maintenance interrupt when no LR is pending.
    pub overflow: bool,
}

/// One vCPU's redistributor and private interrupts.
#[derive(Clone, Copy, Debug)]
struct VgicCpu {
    private: [Irq; 32],
    /// GICR_WAKER.ProcessorSleep (ChildrenAsleep follows it at once).
    asleep: bool,
    /// What the last [`Vgic::fill_lrs`] put in the list registers.
    in_lrs: [LrEntry; MAX_LRS],
    lr_count: usize,
    /// The last scan found nothing pending or active, and nothing that could change that has
    /// happened since: the next scan can be skipped (most exits are not about interrupts).
    quiet: bool,
    /// GICv2: the vCPU that last sent each SGI to this one.
    sgi_source: [u8; 16],
}

impl VgicCpu {
    const fn new() -> Self {
        Self {
            private: [DEFAULT_PRIVATE; 32],
            asleep: true,
            in_lrs: [EMPTY_LR; MAX_LRS],
            lr_count: 0,
            sgi_source: [0; 16],
            quiet: false,
        }
    }
}

const EMPTY_LR: LrEntry = LrEntry { intid: 0, priority: 0, pending: false, active: false, latched: false, source: 0 };
/// Out of reset SGIs are edge-triggered and PPIs level-sensitive; all disabled.
const DEFAULT_PRIVATE: Irq = Irq { enabled: false, latch: false, line: false, active: false, edge: false, priority: 0 };
const DEFAULT_SPI: Irq = DEFAULT_PRIVATE;

/// GICv2 GICD_IIDR: implementer Arm (0x43b), product 0x58 ('X'), revision 0, variant 2.
const IIDR_V2: u32 = 0x5802_043b;

/// GICD_CTLR bits the guest controls (with DS = 1: EnableGrp0, EnableGrp1).
const CTLR_ENABLE_GRP0: u32 = 1 << 0;
const CTLR_ENABLE_GRP1: u32 = 1 << 1;

/// A domain's virtual GIC.
#[derive(Clone, Debug)]
pub struct Vgic {
    version: GicVersion,
    nr_vcpus: usize,
    /// GICD_CTLR group enables.
    ctlr: u32,
    spis: [Irq; NR_SPIS],
    /// GICD_IROUTER<n> for SPIs (affinity fields and IRM only).
    irouter: [u64; NR_SPIS],
    /// GICv2 GICD_ITARGETSR<n> for SPIs: a mask of vCPUs.
    itargets: [u8; NR_SPIS],
    cpus: [VgicCpu; MAX_VCPUS],
}

/// GICD_IROUTER.IRM: any participating PE (we pick vCPU 0).
const IROUTER_IRM: u64 = 1 << 31;
/// Writable IROUTER bits: Aff3, IRM, Aff2, Aff1, Aff0.
const IROUTER_MASK: u64 = 0xff_80ff_ffff;

impl Vgic {
    /// A GICv3 distributor and `nr_vcpus` (1..=MAX_VCPUS, clamped) redistributors, out of
    /// reset.
    pub fn new(nr_vcpus: usize) -> Self {
        Self::with_version(GicVersion::V3, nr_vcpus)
    }

    /// A virtual GIC of `version` for `nr_vcpus` (1..=MAX_VCPUS, clamped), out of reset.
    pub fn with_version(version: GicVersion, nr_vcpus: usize) -> Self {
        let mut cpus = [VgicCpu::new(); MAX_VCPUS];
        for cpu in &mut cpus {
            for sgi in &mut cpu.private[..16] {
                sgi.edge = true;
            }
        }
        Self {
            version,
            nr_vcpus: nr_vcpus.clamp(1, MAX_VCPUS),
            ctlr: 0,
            spis: [DEFAULT_SPI; NR_SPIS],
            irouter: [0; NR_SPIS],
            itargets: [0; NR_SPIS],
            cpus,
        }
    }

    pub fn nr_vcpus(&self) -> usize {
        self.nr_vcpus
    }

    pub fn version(&self) -> GicVersion {
        self.version
    }

    /// A write at `gpa` may have made an interrupt pending on another vCPU (GICv2's
    /// GICD_SGIR), which may be asleep waiting for it.
    pub fn may_wake_sibling(&self, gpa: u64) -> bool {
        self.version == GicVersion::V2 && self.nr_vcpus > 1 && gpa == GUEST_GICD_BASE + v2::SGIR
    }

    /// The distributor forwards our interrupts' group (GICv3: group 1; GICv2: group 0).
    fn dist_enabled(&self) -> bool {
        let bit = match self.version {
            GicVersion::V3 => CTLR_ENABLE_GRP1,
            GicVersion::V2 => CTLR_ENABLE_GRP0,
        };
        self.ctlr & bit != 0
    }

    /// The interrupt `intid` as vCPU `vcpu` sees it (its own SGI/PPI bank, or a shared SPI).
    fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        match intid {
            0..32 => self.cpus.get(vcpu).map(|c| &c.private[intid as usize]),
            _ => self.spis.get(intid as usize - 32),
        }
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        match intid {
            0..32 => self.cpus.get_mut(vcpu).map(|c| &mut c.private[intid as usize]),
            _ => self.spis.get_mut(intid as usize - 32),
        }
    }

    /// Make PPI or SGI `intid` pending on `vcpu` (the upcall, the virtual timer).
    pub fn raise_private(&mut self, vcpu: usize, intid: u32) {
        if intid < 32
            && vcpu < self.nr_vcpus
            && let Some(irq) = self.irq_mut(vcpu, intid)
        {
            irq.latch = true;
            self.cpus[vcpu].quiet = false;
        }
    }

    /// Drive SPI `intid`'s input line: a level-sensitive SPI is pending while it is high, an
    /// edge-triggered one latches on the rising edge. Anything but an SPI is ignored.
    pub fn set_spi_line(&mut self, intid: u32, level: bool) {
        if !(32..NR_INTIDS).contains(&intid) {
            return;
        }
        let irq = &mut self.spis[intid as usize - 32];
        if irq.edge && level && !irq.line {
            irq.latch = true;
        }
        irq.line = level;
        self.stir();
    }

    /// The vCPU an SPI is routed to, if it exists.
    fn spi_target(&self, spi: usize) -> Option<usize> {
        if self.version == GicVersion::V2 {
            // The first vCPU the target mask names that exists (as Xen does).
            let mask = u32::from(self.itargets[spi]) & ((1 << self.nr_vcpus) - 1);
            return (mask != 0).then(|| mask.trailing_zeros() as usize);
        }
        let route = self.irouter[spi];
        if route & IROUTER_IRM != 0 {
            return Some(0);
        }
        // Our vCPUs have MPIDR affinity 0.0.0.n: only Aff0 may be non-zero.
        let aff0 = (route & 0xff) as usize;
        (route & !0xff == 0 && aff0 < self.nr_vcpus).then_some(aff0)
    }

    /// A guest write of ICC_SGI1R_EL1 by vCPU `sender`: make the SGI pending on each target
    /// that exists (targets that do not are ignored, as on hardware).
    pub fn write_sgi1r(&mut self, sender: usize, value: u64) {
        let intid = ((value >> 24) & 0xf) as u32;
        let broadcast = value & (1 << 40) != 0;
        if broadcast {
            for vcpu in (0..self.nr_vcpus).filter(|&v| v != sender) {
                self.raise_private(vcpu, intid);
            }
            return;
        }
        let (aff1, aff2, aff3) = ((value >> 16) & 0xff, (value >> 32) & 0xff, (value >> 48) & 0xff);
        if aff1 != 0 || aff2 != 0 || aff3 != 0 {
            return;
        }
        let range_selector = ((value >> 44) & 0xf) as usize;
        let targets = value & 0xffff;
        for bit in (0..16).filter(|b| targets & (1 << b) != 0) {
            self.raise_private(range_selector * 16 + bit, intid);
        }
    }

    /// Something any vCPU's next scan must look at changed (an SPI, the distributor).
    pub(super) fn stir(&mut self) {
        self.cpus.iter_mut().for_each(|c| c.quiet = false);
    }

    /// `vcpu`'s last scan found nothing and nothing has changed since: a scan would find
    /// nothing either.
    pub fn is_quiet(&self, vcpu: usize) -> bool {
        self.cpus.get(vcpu).is_none_or(|c| c.quiet)
    }

    /// Can interrupt `irq` be signalled to its vCPU (pending, enabled, group enabled)?
    fn deliverable(&self, irq: &Irq) -> bool {
        irq.pending() && irq.enabled && self.dist_enabled()
    }

    /// INTIDs whose state concerns `vcpu`: its private ones and the SPIs routed to it.
    fn intids_for(&self, vcpu: usize) -> impl Iterator<Item = u32> + '_ {
        let spis = (32..NR_INTIDS).filter(move |&i| self.spi_target(i as usize - 32) == Some(vcpu));
        (0..32).chain(spis)
    }

    /// `vcpu` has an interrupt the distributor and redistributor could deliver now, whatever
    /// its CPU interface masks.
    pub fn has_deliverable(&self, vcpu: usize) -> bool {
        self.has_signalled(vcpu, &CpuInterface::OPEN)
    }

    /// `vcpu` has an interrupt its CPU interface `cpu` would signal now: a WFI ends.
    pub fn has_signalled(&self, vcpu: usize, cpu: &CpuInterface) -> bool {
        vcpu < self.nr_vcpus
            && self
                .intids_for(vcpu)
                .any(|i| self.irq(vcpu, i).is_some_and(|q| self.deliverable(q) && cpu.admits(q.priority)))
    }

    /// Would interrupt `intid` be signalled to `vcpu` once pending (enabled, its group on,
    /// let through by `cpu`)? Whether a timer that fires wakes the vCPU.
    pub fn would_signal(&self, vcpu: usize, intid: u32, cpu: &CpuInterface) -> bool {
        vcpu < self.nr_vcpus
            && self.irq(vcpu, intid).is_some_and(|q| q.enabled && self.dist_enabled() && cpu.admits(q.priority))
    }

    /// Choose what goes into `lr_count` list registers for `vcpu`: active interrupts first
    /// (the guest must be able to deactivate them), then pending ones by priority. What is
    /// chosen leaves the model until [`Vgic::sync_lrs`] brings it back.
    pub fn fill_lrs(&mut self, vcpu: usize, lr_count: usize) -> LrPlan {
        let mut plan = LrPlan { values: [0; MAX_LRS], count: 0, overflow: false };
        let lr_count = lr_count.min(MAX_LRS);
        if vcpu >= self.nr_vcpus || self.cpus[vcpu].quiet {
            if let Some(cpu) = self.cpus.get_mut(vcpu) {
                cpu.lr_count = 0;
            }
            return plan;
        }
        // Keep the best `lr_count` candidates, sorted by (not active, priority, INTID).
        let mut best: [(bool, u8, u32); MAX_LRS] = [(true, 0xff, u32::MAX); MAX_LRS];
        let mut found = 0;
        for intid in self.intids_for(vcpu) {
            let Some(irq) = self.irq(vcpu, intid) else { continue };
            if !irq.active && !self.deliverable(irq) {
                continue;
            }
            found += 1;
            let key = (!irq.active, irq.priority, intid);
            let Some(pos) = best[..lr_count].iter().position(|b| key < *b) else { continue };
            best.copy_within(pos..lr_count.saturating_sub(1), pos + 1);
            best[pos] = key;
        }
        plan.count = found.min(lr_count);
        plan.overflow = found > lr_count;
        self.cpus[vcpu].quiet = found == 0;
        for (slot, &(_, _, intid)) in best[..plan.count].iter().enumerate() {
            let entry = self.take_for_lr(vcpu, intid);
            plan.values[slot] = entry.encode_for(self.version);
            self.cpus[vcpu].in_lrs[slot] = entry;
        }
        self.cpus[vcpu].lr_count = plan.count;
        plan
    }

    /// Move an interrupt's pending latch and active state into an LR entry.
    fn take_for_lr(&mut self, vcpu: usize, intid: u32) -> LrEntry {
        let deliverable = self.irq(vcpu, intid).is_some_and(|q| self.deliverable(q));
        let Some(irq) = self.irq_mut(vcpu, intid) else { return EMPTY_LR };
        let entry = LrEntry {
            intid,
            priority: irq.priority,
            pending: deliverable,
            active: irq.active,
            latched: irq.latch,
            source: 0,
        };
        if deliverable {
            irq.latch = false;
        }
        irq.active = false;
        let source = if intid < 16 { self.cpus[vcpu].sgi_source[intid as usize] } else { 0 };
        LrEntry { source, ..entry }
    }

    /// Fold back the list registers as the guest left them (`values[n]` for each LR the last
    /// [`Vgic::fill_lrs`] used): an LR still pending puts its latch back, an active one makes
    /// the interrupt active, an invalid one was acknowledged and deactivated by the guest.
    pub fn sync_lrs(&mut self, vcpu: usize, values: &[u64]) {
        let Some(cpu) = self.cpus.get(vcpu) else { return };
        let (entries, count) = (cpu.in_lrs, cpu.lr_count);
        for (entry, &value) in entries[..count].iter().zip(values) {
            let (intid, state) = match self.version {
                GicVersion::V3 => (value & lr::VINTID_MASK, value >> lr::STATE_SHIFT),
                GicVersion::V2 => (value & 0x3ff, (value >> 28) & 0b11),
            };
            if intid != u64::from(entry.intid) {
                continue; // not what we wrote: leave the model as it is
            }
            let Some(irq) = self.irq_mut(vcpu, entry.intid) else { continue };
            irq.active |= state & 0b10 != 0;
            if state & 0b01 != 0 && entry.latched {
                irq.latch = true;
            }
        }
        self.cpus[vcpu].lr_count = 0;
        if count > 0 {
            self.cpus[vcpu].quiet = false;
        }
    }

    /// Pending state as the guest reads it (ISPENDR).
    fn is_pending(&self, vcpu: usize, intid: u32) -> bool {
        self.irq(vcpu, intid).is_some_and(|q| q.pending())
    }
}
