//! A virtual local APIC in x2APIC mode (MSRs 0x800-0x8FF), enough for a PVH Linux guest:
//! identity, version, task priority, spurious vector, the LVT registers (stored), the error
//! status register, and fixed-vector interrupts to itself (ICR with a self destination or
//! shorthand, SELF_IPI) with IRR/ISR bookkeeping and EOI. The timer registers are stored but
//! never count: Xen guests take their timer from `VCPUOP_set_singleshot_timer`.
//!
//! The backend asks [`VLapic::next_vector`] for the interrupt to inject and reports delivery
//! with [`VLapic::accept`]. The Xen callback vector does not pass through here (Xen delivers
//! it without the local APIC's bookkeeping, and Linux does not EOI it).

/// The xAPIC MMIO base the APIC base MSR reports.
pub const APIC_BASE_ADDR: u64 = 0xfee0_0000;
/// IA32_APIC_BASE bits: BSP, x2APIC enable, global enable.
pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_EXTD: u64 = 1 << 10;
pub const APIC_BASE_EN: u64 = 1 << 11;
/// Version register: version 0x14, 6 LVT entries (max LVT index 5), as on recent CPUs.
pub const VERSION: u64 = 0x0005_0014;

pub const MSR_APIC_BASE: u32 = 0x1b;
pub const X2APIC_FIRST: u32 = 0x800;
pub const X2APIC_LAST: u32 = 0x8ff;

mod reg {
    pub const ID: u32 = 0x02;
    pub const VERSION: u32 = 0x03;
    pub const TPR: u32 = 0x08;
    pub const PPR: u32 = 0x0a;
    pub const EOI: u32 = 0x0b;
    pub const LDR: u32 = 0x0d;
    pub const SVR: u32 = 0x0f;
    pub const ISR0: u32 = 0x10;
    pub const TMR0: u32 = 0x18;
    pub const IRR0: u32 = 0x20;
    pub const ESR: u32 = 0x28;
    pub const LVT_CMCI: u32 = 0x2f;
    pub const ICR: u32 = 0x30;
    pub const LVT_TIMER: u32 = 0x32;
    pub const LVT_ERROR: u32 = 0x37;
    pub const TIMER_INITIAL: u32 = 0x38;
    pub const TIMER_CURRENT: u32 = 0x39;
    pub const TIMER_DIVIDE: u32 = 0x3e;
    pub const SELF_IPI: u32 = 0x3f;
}

const LVT_MASKED: u32 = 1 << 16;

#[derive(Clone, Debug)]
pub struct VLapic {
    id: u32,
    tpr: u32,
    svr: u32,
    /// LVT CMCI, timer, thermal, PMC, LINT0, LINT1, error (registers 0x2f, 0x32..0x37).
    lvt: [u32; 7],
    esr: u32,
    timer_initial: u32,
    timer_divide: u32,
    icr: u64,
    irr: [u64; 4],
    isr: [u64; 4],
}

fn lvt_slot(r: u32) -> Option<usize> {
    match r {
        reg::LVT_CMCI => Some(0),
        reg::LVT_TIMER..=reg::LVT_ERROR => Some((r - reg::LVT_TIMER) as usize + 1),
        _ => None,
    }
}

fn test(bits: &[u64; 4], v: u8) -> bool {
    bits[v as usize / 64] & (1 << (v % 64)) != 0
}
fn set(bits: &mut [u64; 4], v: u8, on: bool) {
    let m = 1u64 << (v % 64);
    if on {
        bits[v as usize / 64] |= m;
    } else {
        bits[v as usize / 64] &= !m;
    }
}
fn highest(bits: &[u64; 4]) -> Option<u8> {
    (0..4).rev().find(|&w| bits[w] != 0).map(|w| (w * 64 + 63 - bits[w].leading_zeros() as usize) as u8)
}
/// 32 bits of a 256-bit register as the x2APIC MSR `n` (0..8) shows them.
fn word(bits: &[u64; 4], n: u32) -> u64 {
    (bits[n as usize / 2] >> ((n % 2) * 32)) & 0xffff_ffff
}

impl VLapic {
    /// The reset state of vCPU `id`'s APIC: everything masked, software-disabled.
    pub fn new(id: u32) -> Self {
        VLapic {
            id,
            tpr: 0,
            svr: 0xff,
            lvt: [LVT_MASKED; 7],
            esr: 0,
            timer_initial: 0,
            timer_divide: 0,
            icr: 0,
            irr: [0; 4],
            isr: [0; 4],
        }
    }

    /// IA32_APIC_BASE: enabled, already in x2APIC mode (what Xen's PVH vCPUs start with).
    pub fn apic_base(&self) -> u64 {
        APIC_BASE_ADDR | APIC_BASE_EN | APIC_BASE_EXTD | if self.id == 0 { APIC_BASE_BSP } else { 0 }
    }

    fn ldr(&self) -> u64 {
        (((self.id >> 4) << 16) | (1 << (self.id & 0xf))) as u64
    }

    /// Processor priority: the higher of TPR and the in-service class.
    fn ppr(&self) -> u32 {
        let isrv = highest(&self.isr).map_or(0, |v| v as u32 & 0xf0);
        if (self.tpr & 0xf0) >= isrv { self.tpr & 0xff } else { isrv }
    }

    /// RDMSR of x2APIC register MSR `msr`; `None` for #GP.
    pub fn read(&self, msr: u32) -> Option<u64> {
        let r = msr.checked_sub(X2APIC_FIRST)?;
        Some(match r {
            reg::ID => self.id as u64,
            reg::VERSION => VERSION,
            reg::TPR => self.tpr as u64,
            reg::PPR => self.ppr() as u64,
            reg::LDR => self.ldr(),
            reg::SVR => self.svr as u64,
            reg::ISR0..=0x17 => word(&self.isr, r - reg::ISR0),
            reg::TMR0..=0x1f => 0,
            reg::IRR0..=0x27 => word(&self.irr, r - reg::IRR0),
            reg::ESR => self.esr as u64,
            reg::ICR => self.icr,
            reg::TIMER_INITIAL => self.timer_initial as u64,
            reg::TIMER_CURRENT => 0,
            reg::TIMER_DIVIDE => self.timer_divide as u64,
            _ => self.lvt[lvt_slot(r)?] as u64,
        })
    }

    /// WRMSR of `value` to x2APIC MSR `msr`; `false` for #GP.
    pub fn write(&mut self, msr: u32, value: u64) -> bool {
        let Some(r) = msr.checked_sub(X2APIC_FIRST) else { return false };
        let v32 = value as u32;
        match r {
            reg::TPR => self.tpr = v32 & 0xff,
            reg::EOI => {
                if let Some(v) = highest(&self.isr) {
                    set(&mut self.isr, v, false);
                }
            }
            reg::SVR => self.svr = v32 & 0x13ff,
            reg::ESR => self.esr = 0,
            reg::ICR => {
                self.icr = value;
                self.ipi(value);
            }
            reg::TIMER_INITIAL => self.timer_initial = v32,
            reg::TIMER_DIVIDE => self.timer_divide = v32 & 0xb,
            reg::SELF_IPI => self.post(v32 as u8),
            _ => match lvt_slot(r) {
                Some(slot) => self.lvt[slot] = v32,
                None => return false,
            },
        }
        true
    }

    /// An ICR write: fixed interrupts that reach this APIC become pending; nothing else
    /// exists to receive them (one vCPU), and NMI/INIT/SIPI are not modelled.
    fn ipi(&mut self, icr: u64) {
        const FIXED: u64 = 0;
        let vector = icr as u8;
        let mode = (icr >> 8) & 7;
        let shorthand = (icr >> 18) & 3;
        let dest = (icr >> 32) as u32;
        let to_self = match shorthand {
            0 => dest == self.id || dest == u32::MAX,
            1 | 2 => true,
            _ => false,
        };
        if mode == FIXED && to_self {
            self.post(vector);
        }
    }

    /// Make `vector` pending (vectors 0-15 are illegal and dropped).
    pub fn post(&mut self, vector: u8) {
        if vector >= 16 {
            set(&mut self.irr, vector, true);
        }
    }

    /// The vector to inject next, if one outranks the processor priority.
    pub fn next_vector(&self) -> Option<u8> {
        let v = highest(&self.irr)?;
        ((v as u32 & 0xf0) > (self.ppr() & 0xf0)).then_some(v)
    }

    /// The guest took `vector`: it moves from requested to in service.
    pub fn accept(&mut self, vector: u8) {
        if test(&self.irr, vector) {
            set(&mut self.irr, vector, false);
            set(&mut self.isr, vector, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_version_and_base_are_those_of_an_x2apic() {
        let a = VLapic::new(0);
        assert_eq!(a.read(0x802), Some(0));
        assert_eq!(a.read(0x803), Some(0x50014));
        assert_eq!(a.read(0x80d), Some(1));
        assert_eq!(VLapic::new(17).read(0x80d), Some((1 << 16) | 2));
        assert_eq!(a.apic_base(), 0xfee0_0d00);
        assert_eq!(VLapic::new(1).apic_base() & APIC_BASE_BSP, 0);
        assert_eq!(a.read(0x835), Some(LVT_MASKED as u64));
        assert_eq!(a.read(0x801), None);
    }

    #[test]
    fn lvt_svr_tpr_are_stored_and_unknown_registers_refused() {
        let mut a = VLapic::new(0);
        assert!(a.write(0x80f, 0x1ff));
        assert!(a.write(0x835, 0x700));
        assert!(a.write(0x808, 0x20));
        assert_eq!((a.read(0x80f), a.read(0x835), a.read(0x808)), (Some(0x1ff), Some(0x700), Some(0x20)));
        assert!(a.write(0x828, 0));
        assert_eq!(a.read(0x828), Some(0));
        assert!(!a.write(0x802, 5), "ID is read-only");
        assert!(!a.write(0x7ff, 0));
    }

    #[test]
    fn self_ipi_is_pending_then_in_service_until_eoi() {
        let mut a = VLapic::new(0);
        assert!(a.write(0x83f, 0xf6));
        assert_eq!(a.read(0x827), Some(1 << (0xf6 - 0xe0)));
        assert_eq!(a.next_vector(), Some(0xf6));
        a.accept(0xf6);
        assert_eq!(a.next_vector(), None);
        assert_eq!(a.read(0x817), Some(1 << (0xf6 - 0xe0)));
        // A lower-class vector waits for the EOI; a higher one would not.
        a.post(0x41);
        assert_eq!(a.next_vector(), None);
        assert!(a.write(0x80b, 0));
        assert_eq!(a.next_vector(), Some(0x41));
    }

    #[test]
    fn icr_self_shorthand_and_own_id_deliver_others_do_not() {
        let mut a = VLapic::new(0);
        assert!(a.write(0x830, (1 << 18) | 0x50)); // self
        assert!(a.write(0x830, (3 << 18) | 0x60)); // all but self
        assert!(a.write(0x830, (1u64 << 32) | 0x70)); // another APIC
        assert!(a.write(0x830, 0x80)); // APIC 0
        assert!(a.write(0x830, (4 << 8) | 0x90)); // NMI: not modelled
        assert_eq!(a.next_vector(), Some(0x80));
        a.accept(0x80);
        assert!(a.write(0x80b, 0));
        assert_eq!(a.next_vector(), Some(0x50));
        a.accept(0x50);
        assert_eq!(a.next_vector(), None);
        // TPR blocks classes at or below it.
        assert!(a.write(0x80b, 0));
        a.post(0x30);
        assert!(a.write(0x808, 0x30));
        assert_eq!(a.next_vector(), None);
        assert!(a.write(0x808, 0x20));
        assert_eq!(a.next_vector(), Some(0x30));
    }
}
