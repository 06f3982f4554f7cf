//! The GICv2 distributor as a guest sees it (GICD, 4 KiB at [`super::GUEST_GICD_BASE`]).
//!
//! SGIs and PPIs (INTIDs 0-31) are banked: word 0 of the bit-per-INTID registers, the first
//! eight IPRIORITYR words, ITARGETSR0-7 and ICFGR1 are the accessing vCPU's own. SPIs go to
//! the first existing vCPU their ITARGETSR byte names. Every interrupt is group 0 (IGROUPR
//! reads as zero); GICD_CTLR bit 0 enables forwarding. GICD_SGIR makes SGIs pending on other
//! vCPUs and records the sender, which the list register hands to the guest's IAR.

use super::mmio::{BitReg, MmioOutcome};
use super::{CTLR_ENABLE_GRP0, IIDR_V2, NR_INTIDS, PRIORITY_MASK, Vgic};

/// GICD_SGIR: the register's offset, target list filter and fields.
pub const SGIR: u64 = 0xf00;
/// PIDR2: architecture revision 2 in bits [7:4].
pub const PIDR2_V2: u32 = 0x20;

impl Vgic {
    /// One access to the distributor at `offset` (< 4 KiB) by `vcpu`.
    pub(super) fn mmio_v2(&mut self, vcpu: usize, offset: u64, size: u8, write: Option<u64>) -> MmioOutcome {
        let ok = |value: u64| MmioOutcome { value, unknown: false };
        if !matches!(size, 1 | 2 | 4) || !offset.is_multiple_of(u64::from(size)) {
            return ok(0); // GICv2 has no 64-bit registers; bad alignment reads as zero
        }
        let bytewise = matches!(offset, 0x400..0x800 | 0x800..0xc00 | 0xf10..0xf30);
        if size < 4 {
            if !bytewise {
                return ok(0);
            }
            let mut value = 0;
            for i in 0..u64::from(size) {
                let byte = write.map(|v| (v >> (8 * i)) as u8);
                value |= u64::from(self.byte_v2(vcpu, offset + i, byte)) << (8 * i);
            }
            return ok(if write.is_some() { 0 } else { value });
        }
        if bytewise {
            let mut value = 0u64;
            for i in 0..4 {
                let byte = write.map(|v| (v >> (8 * i)) as u8);
                value |= u64::from(self.byte_v2(vcpu, offset + i, byte)) << (8 * i);
            }
            return ok(if write.is_some() { 0 } else { value });
        }
        match self.word_v2(vcpu, offset, write.map(|v| v as u32)) {
            Some(value) => ok(if write.is_some() { 0 } else { u64::from(value) }),
            None => MmioOutcome { value: 0, unknown: true },
        }
    }

    /// Registers with byte access: IPRIORITYR, ITARGETSR, CPENDSGIR/SPENDSGIR.
    fn byte_v2(&mut self, vcpu: usize, offset: u64, write: Option<u8>) -> u8 {
        match offset {
            0x400..0x800 => {
                let intid = (offset - 0x400) as u32;
                let Some(irq) = (intid < NR_INTIDS).then(|| self.irq_mut(vcpu, intid)).flatten() else { return 0 };
                if let Some(b) = write {
                    irq.priority = b & PRIORITY_MASK;
                }
                irq.priority
            }
            0x800..0xc00 => {
                let intid = (offset - 0x800) as u32;
                if intid < 32 {
                    // Read-only: the accessing CPU itself.
                    return 1u8.checked_shl(vcpu as u32).unwrap_or(0);
                }
                if intid >= NR_INTIDS {
                    return 0;
                }
                let existing = ((1u32 << self.nr_vcpus) - 1) as u8;
                let slot = &mut self.itargets[intid as usize - 32];
                if let Some(b) = write {
                    *slot = b & existing;
                }
                *slot
            }
            // CPENDSGIR / SPENDSGIR: pending SGIs per source are not kept apart: RAZ/WI.
            _ => 0,
        }
    }

    /// 32-bit registers; `None` for an offset we do not know.
    fn word_v2(&mut self, vcpu: usize, offset: u64, write: Option<u32>) -> Option<u32> {
        Some(match offset {
            0x000 => {
                if let Some(v) = write {
                    self.ctlr = v & CTLR_ENABLE_GRP0;
                }
                self.ctlr
            }
            0x004 => {
                // ITLinesNumber, CPUNumber; no security extensions, no LPIs.
                (NR_INTIDS / 32 - 1) | ((self.nr_vcpus as u32 - 1) << 5)
            }
            0x008 => IIDR_V2,
            0x080..0x100 => 0, // IGROUPR: every interrupt is group 0
            0x100..0x400 => {
                let (reg, first) = BitReg::decode(offset)?;
                if first >= NR_INTIDS { 0 } else { self.bits(vcpu, reg, first, write) }
            }
            0xc00 => 0xaaaa_aaaa, // ICFGR0: SGIs are edge-triggered, read-only
            0xc04..0xd00 => {
                let n = ((offset - 0xc00) / 4) as u32;
                if n * 16 >= NR_INTIDS { 0 } else { self.icfgr(vcpu, n * 16, write) }
            }
            0xd00..0xe00 => 0, // PPISR/SPISR, implementation defined
            SGIR => {
                if let Some(v) = write {
                    self.write_sgir(vcpu, v);
                }
                0
            }
            0xfe8 => PIDR2_V2,
            0xfd0..0x1000 => 0, // the other ID registers
            _ => return None,
        })
    }

    /// A guest write of GICD_SGIR by vCPU `sender`.
    pub fn write_sgir(&mut self, sender: usize, value: u32) {
        let intid = value & 0xf;
        let existing = (1u32 << self.nr_vcpus) - 1;
        let targets = match (value >> 24) & 3 {
            0 => (value >> 16) & 0xff,
            1 => existing & !(1 << sender),
            2 => 1 << sender,
            _ => 0,
        } & existing;
        for vcpu in (0..self.nr_vcpus).filter(|v| targets & (1 << v) != 0) {
            self.raise_private(vcpu, intid);
            self.cpus[vcpu].sgi_source[intid as usize] = sender as u8;
        }
    }
}
