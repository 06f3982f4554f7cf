//! Guest accesses to the distributor and redistributor registers.
//!
//! Registers are modelled at 32-bit granularity: a 64-bit access to a pair of 32-bit
//! registers is split in two, a byte or halfword access is honoured only where the
//! architecture allows it (IPRIORITYR) and reads as zero elsewhere. Unknown offsets read as
//! zero and ignore writes; the caller is told so it can log them.

use super::{
    CTLR_ENABLE_GRP0, CTLR_ENABLE_GRP1, GUEST_GICD_BASE, GUEST_GICD_SIZE, GUEST_GICR_BASE, GUEST_GICR_REGION_SIZE,
    GUEST_GICR_STRIDE, IROUTER_MASK, NR_INTIDS, PRIORITY_MASK, Vgic,
};

/// The result of one vGIC access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioOutcome {
    /// The value read (0 for writes).
    pub value: u64,
    /// The offset is not a register we model: it read as zero / the write was dropped.
    pub unknown: bool,
}

/// GICD_CTLR: ARE (affinity routing, always on) and DS (one security state).
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;
/// IIDR: implementer Arm (JEP106 0x43b), product 0x58 ('X'), revision 0.
pub const IIDR: u32 = 0x5800_043b;
/// PIDR2: architecture revision 3 (GICv3) in bits [7:4].
pub const PIDR2: u32 = 0x30;
const PIDR2_OFFSET: u64 = 0xffe8;
/// GICR_TYPER.Last: the last redistributor of the region.
const TYPER_LAST: u64 = 1 << 4;
/// GICR_WAKER bits.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// The SGI_base frame of a redistributor.
const SGI_FRAME: u64 = 0x1_0000;

/// Which register block an access hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Dist,
    /// RD_base of the redistributor of a vCPU (which may not exist).
    Redist(usize),
    /// SGI_base of a vCPU's redistributor.
    Sgi(usize),
}

/// The bit-per-INTID registers, which share one layout in the distributor and SGI frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

impl BitReg {
    /// Offsets 0x080..0x400: seven blocks of 0x80 bytes (32 words of 32 INTIDs each).
    pub(super) fn decode(offset: u64) -> Option<(BitReg, u32)> {
        let kind = match offset >> 7 {
            1 => BitReg::Group,
            2 => BitReg::SetEnable,
            3 => BitReg::ClearEnable,
            4 => BitReg::SetPending,
            5 => BitReg::ClearPending,
            6 => BitReg::SetActive,
            7 => BitReg::ClearActive,
            _ => return None,
        };
        Some((kind, ((offset & 0x7f) / 4 * 32) as u32))
    }
}

fn locate(gpa: u64) -> Option<(Frame, u64)> {
    if (GUEST_GICD_BASE..GUEST_GICD_BASE + GUEST_GICD_SIZE).contains(&gpa) {
        return Some((Frame::Dist, gpa - GUEST_GICD_BASE));
    }
    if (GUEST_GICR_BASE..GUEST_GICR_BASE + GUEST_GICR_REGION_SIZE).contains(&gpa) {
        let rel = gpa - GUEST_GICR_BASE;
        let vcpu = (rel / GUEST_GICR_STRIDE) as usize;
        let offset = rel % GUEST_GICR_STRIDE;
        return Some(if offset >= SGI_FRAME {
            (Frame::Sgi(vcpu), offset - SGI_FRAME)
        } else {
            (Frame::Redist(vcpu), offset)
        });
    }
    None
}

/// `gpa` lies in the vGIC's guest-physical ranges.
pub fn claims(gpa: u64) -> bool {
    locate(gpa).is_some()
}

impl Vgic {
    /// A guest access from `vcpu` at `gpa` of `size` bytes (`write` = the value for a write).
    /// `None` when `gpa` is not the vGIC's; bad sizes and alignments read as zero.
    pub fn mmio(&mut self, vcpu: usize, gpa: u64, size: u8, write: Option<u64>) -> Option<MmioOutcome> {
        let (frame, offset) = locate(gpa)?;
        if write.is_some() {
            // Enables, priorities, routing, pending state: any vCPU's next scan may differ.
            self.stir();
        }
        if self.version == super::GicVersion::V2 {
            return Some(match frame {
                Frame::Dist if offset < super::GUEST_GICV2_GICD_SIZE => self.mmio_v2(vcpu, offset, size, write),
                // The rest of the GICv3 ranges: nothing there for a GICv2 guest.
                _ => MmioOutcome { value: 0, unknown: true },
            });
        }
        let ok = |value: u64| Some(MmioOutcome { value, unknown: false });
        if !matches!(size, 1 | 2 | 4 | 8) || !offset.is_multiple_of(u64::from(size)) {
            return ok(0);
        }
        if let Some(outcome) = self.access64(frame, offset, size, write) {
            return Some(outcome);
        }
        match size {
            1 | 2 => ok(self.access_bytes(vcpu, frame, offset, size, write)),
            4 => Some(self.access32(vcpu, frame, offset, write.map(|v| v as u32))),
            _ => {
                // A pair of 32-bit registers.
                let lo = self.access32(vcpu, frame, offset, write.map(|v| v as u32));
                let hi = self.access32(vcpu, frame, offset + 4, write.map(|v| (v >> 32) as u32));
                Some(MmioOutcome { value: lo.value | (hi.value << 32), unknown: lo.unknown || hi.unknown })
            }
        }
    }

    /// The 64-bit registers (IROUTER, GICR_TYPER, LPI tables), whole or by 32-bit half.
    fn access64(&mut self, frame: Frame, offset: u64, size: u8, write: Option<u64>) -> Option<MmioOutcome> {
        if size < 4 {
            return None;
        }
        let (base, half) = (offset & !7, offset & 4 != 0);
        let current = match (frame, base) {
            (Frame::Dist, 0x6000..0x8000) => self.irouter_read(((base - 0x6000) / 8) as u32),
            (Frame::Redist(v), 0x0008) => self.redist_typer(v),
            (Frame::Redist(_), 0x0070 | 0x0078) => 0, // PROPBASER, PENDBASER: no LPIs
            _ => return None,
        };
        let shift = if half { 32 } else { 0 };
        let width_mask = if size == 8 { u64::MAX } else { 0xffff_ffff };
        if let (Some(value), Frame::Dist) = (write, frame) {
            let merged = (current & !(width_mask << shift)) | ((value & width_mask) << shift);
            self.irouter_write(((base - 0x6000) / 8) as u32, merged);
        }
        let value = if write.is_some() { 0 } else { (current >> shift) & width_mask };
        Some(MmioOutcome { value, unknown: false })
    }

    fn irouter_read(&self, intid: u32) -> u64 {
        if (32..NR_INTIDS).contains(&intid) { self.irouter[intid as usize - 32] } else { 0 }
    }

    fn irouter_write(&mut self, intid: u32, value: u64) {
        if (32..NR_INTIDS).contains(&intid) {
            self.irouter[intid as usize - 32] = value & IROUTER_MASK;
        }
    }

    /// GICR_TYPER: affinity 0.0.0.n, processor number n, Last on the last redistributor.
    fn redist_typer(&self, vcpu: usize) -> u64 {
        if vcpu >= self.nr_vcpus {
            return 0;
        }
        let last = if vcpu + 1 == self.nr_vcpus { TYPER_LAST } else { 0 };
        ((vcpu as u64) << 32) | ((vcpu as u64) << 8) | last
    }

    /// Byte and halfword accesses: only the priority registers allow them.
    fn access_bytes(&mut self, vcpu: usize, frame: Frame, offset: u64, size: u8, write: Option<u64>) -> u64 {
        let Some(first) = self.priority_intid(frame, offset) else {
            return 0;
        };
        let mut value = 0;
        for i in 0..u32::from(size) {
            let byte = write.map(|v| (v >> (8 * i)) as u8);
            value |= u64::from(self.priority_byte(frame, vcpu, first + i, byte)) << (8 * i);
        }
        if write.is_some() { 0 } else { value }
    }

    /// The INTID whose IPRIORITYR byte is at `offset` in `frame`, if that is a priority byte.
    fn priority_intid(&self, frame: Frame, offset: u64) -> Option<u32> {
        match frame {
            Frame::Dist if (0x400..0x400 + u64::from(NR_INTIDS)).contains(&offset) => Some((offset - 0x400) as u32),
            Frame::Sgi(_) if (0x400..0x420).contains(&offset) => Some((offset - 0x400) as u32),
            _ => None,
        }
    }

    /// Read (and with `write`, set) one priority byte; RAZ/WI where there is no interrupt.
    fn priority_byte(&mut self, frame: Frame, vcpu: usize, intid: u32, write: Option<u8>) -> u8 {
        // With affinity routing, SGI/PPI priorities live in the redistributors only.
        if frame == Frame::Dist && intid < 32 {
            return 0;
        }
        let target = match frame {
            Frame::Sgi(v) => v,
            _ => vcpu,
        };
        if intid < 32 && target >= self.nr_vcpus {
            return 0;
        }
        let Some(irq) = self.irq_mut(target, intid) else { return 0 };
        if let Some(b) = write {
            irq.priority = b & PRIORITY_MASK;
        }
        irq.priority
    }

    /// One 32-bit register access.
    fn access32(&mut self, vcpu: usize, frame: Frame, offset: u64, write: Option<u32>) -> MmioOutcome {
        let known = match frame {
            Frame::Dist => self.dist32(vcpu, offset, write),
            Frame::Redist(v) => self.redist32(v, offset, write),
            Frame::Sgi(v) => self.sgi32(v, offset, write),
        };
        match known {
            Some(value) => MmioOutcome { value: if write.is_some() { 0 } else { u64::from(value) }, unknown: false },
            None => MmioOutcome { value: 0, unknown: true },
        }
    }

    /// Distributor registers; `None` for an offset we do not know.
    fn dist32(&mut self, vcpu: usize, offset: u64, write: Option<u32>) -> Option<u32> {
        Some(match offset {
            0x0000 => {
                if let Some(v) = write {
                    self.ctlr = v & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1);
                }
                self.ctlr | CTLR_ARE | CTLR_DS // RWP (bit 31) is never set: writes take effect at once
            }
            0x0004 => typer(),
            0x0008 => IIDR,
            0x000c | 0x0010 => 0, // TYPER2, STATUSR
            0x0040..0x0080 => 0,  // message-based SPI registers: not implemented (MBIS = 0)
            0x0080..0x0400 => {
                let (reg, first) = BitReg::decode(offset)?;
                // With affinity routing, word 0 (SGIs, PPIs) is the redistributors' business.
                if first == 0 { 0 } else { self.bits(vcpu, reg, first, write) }
            }
            0x0400..0x0800 => self.priority_word(Frame::Dist, vcpu, offset, write),
            0x0800..0x0c00 => 0, // ITARGETSR: RAZ/WI with affinity routing
            0x0c00..0x0d00 => self.dist_icfgr(((offset - 0x0c00) / 4) as u32, write),
            0x0d00..0x0f30 => 0, // IGRPMODR, NSACR, SGIR, CPENDSGIR, SPENDSGIR
            PIDR2_OFFSET => PIDR2,
            0xffd0..0x10000 => 0, // the other ID registers
            _ => return None,
        })
    }

    /// RD_base frame registers of `vcpu`'s redistributor.
    fn redist32(&mut self, vcpu: usize, offset: u64, write: Option<u32>) -> Option<u32> {
        if vcpu >= self.nr_vcpus {
            return Some(0); // the region goes on past the last redistributor: RAZ/WI
        }
        Some(match offset {
            0x0000 => 0, // CTLR: no LPIs, RWP/UWP never set
            0x0004 => IIDR,
            0x0010 => 0, // STATUSR
            0x0014 => {
                let cpu = &mut self.cpus[vcpu];
                if let Some(v) = write {
                    cpu.asleep = v & WAKER_PROCESSOR_SLEEP != 0;
                }
                // The redistributor reacts at once: ChildrenAsleep follows ProcessorSleep.
                if cpu.asleep { WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP } else { 0 }
            }
            0x00c0 => 0, // SYNCR: never busy
            PIDR2_OFFSET => PIDR2,
            0xffd0..0x10000 => 0,
            _ => return None,
        })
    }

    /// SGI_base frame registers of `vcpu`'s redistributor.
    fn sgi32(&mut self, vcpu: usize, offset: u64, write: Option<u32>) -> Option<u32> {
        if vcpu >= self.nr_vcpus {
            return Some(0);
        }
        Some(match offset {
            0x0080..0x0400 => {
                let (reg, first) = BitReg::decode(offset)?;
                if first == 0 { self.bits(vcpu, reg, 0, write) } else { 0 }
            }
            0x0400..0x0420 => self.priority_word(Frame::Sgi(vcpu), vcpu, offset, write),
            0x0c00 => 0xaaaa_aaaa, // ICFGR0: SGIs are edge-triggered, read-only
            0x0c04 => self.icfgr(vcpu, 16, write),
            0x0d00 | 0x0e00 => 0, // IGRPMODR0, NSACR
            _ => return None,
        })
    }

    /// One word of a bit-per-INTID register for INTIDs `first..first + 32`.
    pub(super) fn bits(&mut self, vcpu: usize, reg: BitReg, first: u32, write: Option<u32>) -> u32 {
        let mut value = 0;
        for bit in 0..32 {
            let intid = first + bit;
            if first >= 32 && intid >= NR_INTIDS {
                break;
            }
            let set = write.is_some_and(|w| w & (1 << bit) != 0);
            let pending = self.is_pending(vcpu, intid);
            let Some(irq) = self.irq_mut(vcpu, intid) else { break };
            let state = match reg {
                BitReg::Group => true, // every interrupt is group 1 (RAO/WI)
                BitReg::SetEnable | BitReg::ClearEnable => {
                    if set {
                        irq.enabled = reg == BitReg::SetEnable;
                    }
                    irq.enabled
                }
                BitReg::SetPending | BitReg::ClearPending => {
                    if set {
                        irq.latch = reg == BitReg::SetPending;
                    }
                    pending
                }
                BitReg::SetActive | BitReg::ClearActive => {
                    if set {
                        irq.active = reg == BitReg::SetActive;
                    }
                    irq.active
                }
            };
            value |= u32::from(state) << bit;
        }
        value
    }

    /// A word of IPRIORITYR: four priority bytes.
    fn priority_word(&mut self, frame: Frame, vcpu: usize, offset: u64, write: Option<u32>) -> u32 {
        let Some(first) = self.priority_intid(frame, offset) else { return 0 };
        let mut value = 0;
        for i in 0..4 {
            let byte = write.map(|v| (v >> (8 * i)) as u8);
            value |= u32::from(self.priority_byte(frame, vcpu, first + i, byte)) << (8 * i);
        }
        value
    }

    /// GICD_ICFGR<n>: words 0 and 1 (SGIs, PPIs) are the redistributors'.
    fn dist_icfgr(&mut self, n: u32, write: Option<u32>) -> u32 {
        if n < 2 { 0 } else { self.icfgr(0, n * 16, write) }
    }

    /// Sixteen 2-bit configuration fields from `first`: bit 1 of each = edge-triggered.
    pub(super) fn icfgr(&mut self, vcpu: usize, first: u32, write: Option<u32>) -> u32 {
        let mut value = 0;
        for i in 0..16 {
            let Some(irq) = self.irq_mut(vcpu, first + i) else { break };
            if let Some(w) = write {
                irq.edge = w & (2 << (2 * i)) != 0;
            }
            value |= u32::from(irq.edge) << (2 * i + 1);
        }
        value
    }
}

/// GICD_TYPER: ITLinesNumber for our SPIs, 10 INTID bits, no LPIs, no 1-of-N routing.
fn typer() -> u32 {
    const IDBITS_10: u32 = 9 << 19;
    const NO_1_OF_N: u32 = 1 << 25;
    IDBITS_10 | NO_1_OF_N | (NR_INTIDS / 32 - 1)
}
