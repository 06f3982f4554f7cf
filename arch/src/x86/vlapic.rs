//! A virtual local APIC in x2APIC mode (MSRs 0x800-0x8FF), enough for a PVH Linux guest:
//! identity, version, task priority, spurious vector, the LVT registers (stored), the error
//! status register, and fixed-vector interrupts to itself (ICR with a self destination or
//! shorthand, SELF_IPI) with IRR/ISR bookkeeping and EOI. The timer registers are stored but
//! never count: Xen guests take their timer from `VCPUOP_set_singleshot_timer`.
//!
//! The backend asks [`VLapic::next_vector`] for the interrupt to inject and reports delivery
//! with [`VLapic::accept`]. The Xen callback vector does not pass through here (Xen delivers
//! it without the local APIC's bookkeeping, and Linux does not EOI it).
//!
//! What an ICR write asks of *other* vCPUs (fixed IPIs, INIT, STARTUP) is decoded into an
//! [`Ipi`] the backend takes with [`VLapic::take_ipi`]: fixed vectors travel through the
//! domain's [`IpiMailbox`] into the target's APIC before it next runs; a STARTUP becomes the
//! core's CPU_ON request (the target starts in real mode at `vector << 12`). APIC id n is
//! vCPU n of the domain, as the MADT and CPUID say.

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
    /// An ICR write's request for other APICs, until the backend takes it.
    outbox: Option<Ipi>,
}

/// Most vCPUs a domain's APICs address (APIC ids 0..63: destination sets are `u64` masks).
pub const MAX_APICS: usize = 64;

/// What an ICR write asks for, destinations resolved to a set of APIC ids (bit n = id n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    /// Fixed interrupt `vector` (16..=255).
    Fixed { targets: u64, vector: u8 },
    /// INIT (assert).
    Init { targets: u64 },
    /// STARTUP: start in real mode at `vector << 12`.
    Startup { targets: u64, vector: u8 },
}

/// Decode an x2APIC ICR value written by APIC `own_id`: delivery mode (bits 10:8), level
/// (14), trigger (15), shorthand (19:18), destination mode (11: logical) and the 32-bit
/// destination (63:32). `None` for what nothing models (lowest priority counts as fixed).
pub fn decode_icr(icr: u64, own_id: u32) -> Option<Ipi> {
    const MODE_FIXED: u64 = 0;
    const MODE_LOWEST: u64 = 1;
    const MODE_INIT: u64 = 5;
    const MODE_STARTUP: u64 = 6;
    const LEVEL_ASSERT: u64 = 1 << 14;
    const TRIGGER_LEVEL: u64 = 1 << 15;
    const DEST_LOGICAL: u64 = 1 << 11;
    let vector = icr as u8;
    let mode = (icr >> 8) & 7;
    let dest = (icr >> 32) as u32;
    let own = 1u64.checked_shl(own_id).unwrap_or(0);
    let all = u64::MAX;
    let targets = match (icr >> 18) & 3 {
        1 => own,
        2 => all,
        3 => all & !own,
        // x2APIC logical: cluster in bits 31:16, one bit per APIC of the cluster in 15:0.
        _ if icr & DEST_LOGICAL != 0 => {
            let base = (dest >> 16) * 16;
            (0..16).filter(|b| dest & (1 << b) != 0).fold(0u64, |m, b| m | 1u64.checked_shl(base + b).unwrap_or(0))
        }
        _ if dest == u32::MAX => all,
        _ => 1u64.checked_shl(dest).unwrap_or(0),
    };
    if targets == 0 {
        return None;
    }
    match mode {
        MODE_FIXED | MODE_LOWEST if vector >= 16 => Some(Ipi::Fixed { targets, vector }),
        // INIT level de-assert (trigger level, level 0) only synchronises arbitration ids.
        MODE_INIT if icr & TRIGGER_LEVEL != 0 && icr & LEVEL_ASSERT == 0 => None,
        MODE_INIT => Some(Ipi::Init { targets }),
        MODE_STARTUP => Some(Ipi::Startup { targets, vector }),
        _ => None,
    }
}

/// Where an [`Ipi`] from an ICR write goes, for a domain whose APIC ids are `exists`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Fixed `vector` into the mailbox of every APIC in `targets`.
    Post { targets: u64, vector: u8 },
    /// Power vCPU `target` on in real mode at `entry` (the core's CPU_ON).
    Start { target: usize, entry: u64 },
    /// Nothing (no such APIC, or nothing modelled: INIT).
    Nowhere,
}

/// Route `ipi` among the APICs in `exists`. A STARTUP for several APICs starts the lowest
/// (Linux names one at a time); its vector is the 4 KiB page the processor starts in.
pub fn route(ipi: Ipi, exists: u64) -> Route {
    match ipi {
        Ipi::Fixed { targets, vector } if targets & exists != 0 => Route::Post { targets: targets & exists, vector },
        Ipi::Startup { targets, vector } if targets & exists != 0 => {
            Route::Start { target: (targets & exists).trailing_zeros() as usize, entry: u64::from(vector) << 12 }
        }
        _ => Route::Nowhere,
    }
}

/// The real-mode state a STARTUP leaves a processor in: executing at `entry` (below 1 MiB,
/// page aligned) as CS = entry >> 4 with CS.base = entry and IP = 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealModeEntry {
    pub cs_selector: u16,
    pub cs_base: u64,
    pub ip: u64,
}

impl RealModeEntry {
    pub fn at(entry: u64) -> Self {
        let entry = entry & 0xf_f000;
        RealModeEntry { cs_selector: (entry >> 4) as u16, cs_base: entry, ip: 0 }
    }
}

/// Fixed IPIs in flight between the vCPUs of one domain: bit v of `pending[n]` is vector v
/// for APIC n, moved into that APIC ([`IpiMailbox::deliver`]) before its vCPU next runs.
#[derive(Clone, Debug)]
pub struct IpiMailbox {
    pending: [[u64; 4]; MAX_APICS],
}

impl Default for IpiMailbox {
    fn default() -> Self {
        IpiMailbox { pending: [[0; 4]; MAX_APICS] }
    }
}

impl IpiMailbox {
    /// `vector` for every APIC in `targets`.
    pub fn post(&mut self, targets: u64, vector: u8) {
        let mut t = targets;
        while t != 0 {
            let n = t.trailing_zeros() as usize;
            t &= t - 1;
            set(&mut self.pending[n], vector, true);
        }
    }

    /// Something waits for APIC `id`.
    pub fn has(&self, id: usize) -> bool {
        self.pending.get(id).is_some_and(|p| p.iter().any(|&w| w != 0))
    }

    /// Move what waits for `lapic` into its IRR.
    pub fn deliver(&mut self, lapic: &mut VLapic) {
        let Some(p) = self.pending.get_mut(lapic.id as usize) else { return };
        for v in 16..=255u8 {
            if test(p, v) {
                lapic.post(v);
            }
        }
        *p = [0; 4];
    }
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
            outbox: None,
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

    /// An ICR write: a fixed interrupt for this APIC becomes pending here; what concerns
    /// other APICs waits in [`VLapic::take_ipi`]. NMI, SMI and the INIT level de-assert are
    /// dropped (nothing models them), as is an INIT (a vCPU that is on stays on).
    fn ipi(&mut self, icr: u64) {
        let Some(ipi) = decode_icr(icr, self.id) else { return };
        match ipi {
            Ipi::Fixed { targets, vector } => {
                if targets & self.own_bit() != 0 {
                    self.post(vector);
                }
                let others = targets & !self.own_bit();
                if others != 0 {
                    self.outbox = Some(Ipi::Fixed { targets: others, vector });
                }
            }
            Ipi::Startup { .. } => self.outbox = Some(ipi),
            Ipi::Init { .. } => {}
        }
    }

    fn own_bit(&self) -> u64 {
        1u64.checked_shl(self.id).unwrap_or(0)
    }

    /// What the last ICR write asks of other vCPUs, once.
    pub fn take_ipi(&mut self) -> Option<Ipi> {
        self.outbox.take()
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
        assert_eq!(a.take_ipi(), Some(Ipi::Fixed { targets: 2, vector: 0x70 }), "the last for others; NMI dropped");
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

    #[test]
    fn icr_decoding_physical_logical_shorthands_and_modes() {
        // Physical destination 1, fixed 0xfb.
        assert_eq!(decode_icr((1 << 32) | 0xfb, 0), Some(Ipi::Fixed { targets: 0b10, vector: 0xfb }));
        // x2APIC logical: cluster 0, bits 1 and 2 = APICs 1 and 2; cluster 1 bit 0 = APIC 16.
        assert_eq!(decode_icr((0b110 << 32) | (1 << 11) | 0x40, 0), Some(Ipi::Fixed { targets: 0b110, vector: 0x40 }));
        assert_eq!(
            decode_icr((0x1_0001 << 32) | (1 << 11) | 0x40, 0),
            Some(Ipi::Fixed { targets: 1 << 16, vector: 0x40 })
        );
        // All-but-self from APIC 1; broadcast id.
        assert_eq!(decode_icr((3 << 18) | 0x50, 1), Some(Ipi::Fixed { targets: !0b10, vector: 0x50 }));
        assert_eq!(decode_icr((0xffff_ffffu64 << 32) | 0x50, 1), Some(Ipi::Fixed { targets: u64::MAX, vector: 0x50 }));
        // Linux's AP start: INIT assert (level), INIT de-assert, then two STARTUPs at 0x9a000.
        assert_eq!(decode_icr((1 << 32) | (1 << 15) | (1 << 14) | (5 << 8), 0), Some(Ipi::Init { targets: 2 }));
        assert_eq!(decode_icr((1 << 32) | (1 << 15) | (5 << 8), 0), None);
        assert_eq!(decode_icr((1 << 32) | (6 << 8) | 0x9a, 0), Some(Ipi::Startup { targets: 2, vector: 0x9a }));
        // Illegal vectors, NMI, SMI and destinations beyond 63 are nothing.
        assert_eq!(decode_icr((1 << 32) | 0x0f, 0), None);
        assert_eq!(decode_icr((1 << 32) | (4 << 8), 0), None);
        assert_eq!(decode_icr((2 << 8) | (1 << 32), 0), None);
        assert_eq!(decode_icr((64u64 << 32) | 0x40, 0), None);
    }

    #[test]
    fn ipis_to_others_wait_in_the_outbox_and_travel_through_the_mailbox() {
        let mut a0 = VLapic::new(0);
        let mut a1 = VLapic::new(1);
        let mut mail = IpiMailbox::default();
        // To APIC 1 only: nothing here.
        assert!(a0.write(0x830, (1 << 32) | 0xf7));
        assert_eq!(a0.next_vector(), None);
        let Some(Ipi::Fixed { targets, vector }) = a0.take_ipi() else { panic!("no IPI") };
        assert_eq!(a0.take_ipi(), None, "taken once");
        mail.post(targets, vector);
        assert!(mail.has(1) && !mail.has(0));
        mail.deliver(&mut a1);
        assert!(!mail.has(1));
        assert_eq!(a1.next_vector(), Some(0xf7));
        // All including self: pending here at once, the rest for the others.
        assert!(a0.write(0x830, (2 << 18) | 0xf8));
        assert_eq!(a0.next_vector(), Some(0xf8));
        assert_eq!(a0.take_ipi(), Some(Ipi::Fixed { targets: !1, vector: 0xf8 }));
        // STARTUP goes out as such; INIT is dropped.
        assert!(a0.write(0x830, (1 << 32) | (5 << 8) | (1 << 14)));
        assert_eq!(a0.take_ipi(), None);
        assert!(a0.write(0x830, (1 << 32) | (6 << 8) | 0x9a));
        assert_eq!(a0.take_ipi(), Some(Ipi::Startup { targets: 2, vector: 0x9a }));
    }

    #[test]
    fn ipis_route_to_existing_apics_and_startup_to_real_mode() {
        let two = 0b11;
        assert_eq!(route(Ipi::Fixed { targets: !1, vector: 0xf0 }, two), Route::Post { targets: 0b10, vector: 0xf0 });
        assert_eq!(route(Ipi::Fixed { targets: 0b100, vector: 0xf0 }, two), Route::Nowhere);
        assert_eq!(route(Ipi::Init { targets: 0b10 }, two), Route::Nowhere);
        let start = route(Ipi::Startup { targets: 0b10, vector: 0x99 }, two);
        assert_eq!(start, Route::Start { target: 1, entry: 0x99000 });
        assert_eq!(route(Ipi::Startup { targets: 0b100, vector: 0x99 }, two), Route::Nowhere);
        // The state the started vCPU enters: 9900:0000.
        assert_eq!(RealModeEntry::at(0x99000), RealModeEntry { cs_selector: 0x9900, cs_base: 0x99000, ip: 0 });
        assert_eq!(RealModeEntry::at(0xff000).cs_selector, 0xff00);
    }
}
