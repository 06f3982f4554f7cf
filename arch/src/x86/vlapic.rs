//! A virtual local APIC with both of the SDM's programming interfaces over one register
//! model: x2APIC mode (MSRs 0x800-0x8FF) and xAPIC mode (the 4 KiB MMIO page at the address
//! IA32_APIC_BASE programs, 0xFEE00000 by default). Register `n` is MSR `0x800 + n` in x2APIC
//! mode and the 32 bits at offset `n << 4` of the page in xAPIC mode; the two front ends differ
//! only where the SDM makes them differ: the APIC ID (bits 31:24 in xAPIC mode, all 32 bits in
//! x2APIC mode), the LDR (written by software with a DFR beside it in xAPIC mode, derived from
//! the ID in x2APIC mode), the ICR (two 32-bit halves with an 8-bit destination in xAPIC mode,
//! one 64-bit MSR with a 32-bit destination in x2APIC mode), SELF_IPI (x2APIC only) and what an
//! access the mode does not allow does (#GP for MSRs, ignored for the page).
//!
//! Modelled: identity, version, task priority, spurious vector, the LVT registers (stored), the
//! error status register, and fixed-vector interrupts with IRR/ISR bookkeeping and EOI. The
//! timer registers are stored but never count: Xen guests take their timer from
//! `VCPUOP_set_singleshot_timer`.
//!
//! IA32_APIC_BASE moves the APIC between the SDM's states: disabled ↔ xAPIC → x2APIC, and
//! x2APIC → disabled. The other transitions (x2APIC → xAPIC, disabled → x2APIC) and the
//! invalid state (x2APIC enable without global enable) are refused: the WRMSR takes #GP.
//! Disabling the APIC resets its registers. A vCPU starts enabled in x2APIC mode (what this
//! hypervisor has always offered its PVH guests, and what Linux takes as "enabled by BIOS").
//!
//! The backend asks [`VLapic::next_vector`] for the interrupt to inject and reports delivery
//! with [`VLapic::accept`]. The Xen callback vector does not pass through here (Xen delivers
//! it without the local APIC's bookkeeping, and Linux does not EOI it).
//!
//! What an ICR write asks of *other* vCPUs (fixed IPIs, INIT, STARTUP) is decoded into an
//! [`Ipi`] the backend takes with [`VLapic::take_ipi`]: fixed vectors travel through the
//! domain's [`IpiMailbox`] into the target's APIC before it next runs; a STARTUP becomes the
//! core's CPU_ON request (the target starts in real mode at `vector << 12`). APIC id n is
//! vCPU n of the domain, as the MADT and CPUID say. xAPIC logical destinations are matched
//! against every APIC's LDR ([`route`] takes the domain's logical ids).

/// The xAPIC MMIO base the APIC base MSR reports after reset.
pub const APIC_BASE_ADDR: u64 = 0xfee0_0000;
/// IA32_APIC_BASE bits: BSP, x2APIC enable, global enable.
pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_EXTD: u64 = 1 << 10;
pub const APIC_BASE_EN: u64 = 1 << 11;
/// The page address field of IA32_APIC_BASE (bits 51:12; bits above the guest's physical
/// address width are reserved too, which the 52-bit architectural limit stands in for).
pub const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Version register: version 0x14, 6 LVT entries (max LVT index 5), as on recent CPUs.
pub const VERSION: u64 = 0x0005_0014;

pub const MSR_APIC_BASE: u32 = 0x1b;
pub const X2APIC_FIRST: u32 = 0x800;
pub const X2APIC_LAST: u32 = 0x8ff;

/// Register numbers: x2APIC MSR `0x800 + n`, xAPIC page offset `n << 4`.
mod reg {
    pub const ID: u32 = 0x02;
    pub const VERSION: u32 = 0x03;
    pub const TPR: u32 = 0x08;
    /// Arbitration priority: xAPIC only.
    pub const APR: u32 = 0x09;
    pub const PPR: u32 = 0x0a;
    pub const EOI: u32 = 0x0b;
    pub const LDR: u32 = 0x0d;
    /// Destination format: xAPIC only.
    pub const DFR: u32 = 0x0e;
    pub const SVR: u32 = 0x0f;
    pub const ISR0: u32 = 0x10;
    pub const TMR0: u32 = 0x18;
    pub const IRR0: u32 = 0x20;
    pub const ESR: u32 = 0x28;
    pub const LVT_CMCI: u32 = 0x2f;
    pub const ICR: u32 = 0x30;
    /// The ICR's destination half: xAPIC only (x2APIC's ICR is one 64-bit MSR).
    pub const ICR_HIGH: u32 = 0x31;
    pub const LVT_TIMER: u32 = 0x32;
    pub const LVT_ERROR: u32 = 0x37;
    pub const TIMER_INITIAL: u32 = 0x38;
    pub const TIMER_CURRENT: u32 = 0x39;
    pub const TIMER_DIVIDE: u32 = 0x3e;
    /// x2APIC only.
    pub const SELF_IPI: u32 = 0x3f;
}

const LVT_MASKED: u32 = 1 << 16;
/// ESR bits: a fixed or lowest-priority IPI with a vector below 16 was sent; one arrived.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// DFR model field (bits 31:28): flat (1111b) or cluster (0000b); bits 27:0 read as ones.
const DFR_FLAT: u32 = 0xffff_ffff;

/// Which interface the APIC answers on (IA32_APIC_BASE bits EN and EXTD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// EN = 0: no APIC (no interrupts, no registers, CPUID leaf 1 EDX.APIC clear).
    Disabled,
    /// EN = 1, EXTD = 0: the MMIO page.
    XApic,
    /// EN = 1, EXTD = 1: the MSRs.
    X2Apic,
}

#[derive(Clone, Debug)]
pub struct VLapic {
    id: u32,
    /// IA32_APIC_BASE as the guest reads it.
    base: u64,
    tpr: u32,
    svr: u32,
    /// LVT CMCI, timer, thermal, PMC, LINT0, LINT1, error (registers 0x2f, 0x32..0x37).
    lvt: [u32; 7],
    /// The ESR as software reads it: the errors latched by its last write.
    esr: u32,
    /// Errors seen since the last ESR write (latched into `esr` by the next).
    esr_pending: u32,
    timer_initial: u32,
    timer_divide: u32,
    /// The ICR: in xAPIC mode the destination is bits 63:56, in x2APIC mode bits 63:32.
    icr: u64,
    /// xAPIC LDR (bits 31:24) and DFR, as software wrote them.
    xapic_ldr: u32,
    dfr: u32,
    irr: [u64; 4],
    isr: [u64; 4],
    /// An ICR write's request for other APICs, until the backend takes it.
    outbox: Option<Ipi>,
}

/// Most vCPUs a domain's APICs address (APIC ids 0..63: destination sets are `u64` masks).
pub const MAX_APICS: usize = 64;

/// What an ICR write asks for, destinations resolved to a set of APIC ids (bit n = id n),
/// except xAPIC logical ones, which [`route`] matches against the domain's LDRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    /// Fixed interrupt `vector` (16..=255).
    Fixed { targets: u64, vector: u8 },
    /// Fixed interrupt `vector` for the xAPIC logical destination `mda` from APIC `from` (not
    /// itself: the sender matched its own LDR already), in the flat or the cluster model.
    Logical { from: u32, mda: u8, cluster: bool, vector: u8 },
    /// INIT (assert).
    Init { targets: u64 },
    /// STARTUP: start in real mode at `vector << 12`.
    Startup { targets: u64, vector: u8 },
}

const ICR_MODE_FIXED: u64 = 0;
const ICR_MODE_LOWEST: u64 = 1;
const ICR_MODE_INIT: u64 = 5;
const ICR_MODE_STARTUP: u64 = 6;
const ICR_LEVEL_ASSERT: u64 = 1 << 14;
const ICR_TRIGGER_LEVEL: u64 = 1 << 15;
const ICR_DEST_LOGICAL: u64 = 1 << 11;

/// The kind of an ICR write for the resolved `targets` (none: nothing to do).
fn icr_kind(icr: u64, targets: u64) -> Option<Ipi> {
    let vector = icr as u8;
    if targets == 0 {
        return None;
    }
    match (icr >> 8) & 7 {
        ICR_MODE_FIXED | ICR_MODE_LOWEST if vector >= 16 => Some(Ipi::Fixed { targets, vector }),
        // INIT level de-assert (trigger level, level 0) only synchronises arbitration ids.
        ICR_MODE_INIT if icr & ICR_TRIGGER_LEVEL != 0 && icr & ICR_LEVEL_ASSERT == 0 => None,
        ICR_MODE_INIT => Some(Ipi::Init { targets }),
        ICR_MODE_STARTUP => Some(Ipi::Startup { targets, vector }),
        _ => None,
    }
}

/// Targets of a destination shorthand (bits 19:18), if one is given.
fn shorthand(icr: u64, own_id: u32) -> Option<u64> {
    let own = 1u64.checked_shl(own_id).unwrap_or(0);
    match (icr >> 18) & 3 {
        1 => Some(own),
        2 => Some(u64::MAX),
        3 => Some(!own),
        _ => None,
    }
}

/// Decode an x2APIC ICR value written by APIC `own_id`: delivery mode (bits 10:8), level
/// (14), trigger (15), shorthand (19:18), destination mode (11: logical) and the 32-bit
/// destination (63:32). `None` for what nothing models (lowest priority counts as fixed).
pub fn decode_icr(icr: u64, own_id: u32) -> Option<Ipi> {
    let dest = (icr >> 32) as u32;
    let targets = match shorthand(icr, own_id) {
        Some(t) => t,
        // x2APIC logical: cluster in bits 31:16, one bit per APIC of the cluster in 15:0.
        None if icr & ICR_DEST_LOGICAL != 0 => {
            let base = (dest >> 16) * 16;
            (0..16).filter(|b| dest & (1 << b) != 0).fold(0u64, |m, b| m | 1u64.checked_shl(base + b).unwrap_or(0))
        }
        None if dest == u32::MAX => u64::MAX,
        None => 1u64.checked_shl(dest).unwrap_or(0),
    };
    icr_kind(icr, targets)
}

/// Decode an xAPIC ICR (destination in bits 63:56) written by APIC `own_id`. Physical
/// destination 0xFF is everyone; a logical destination stays a message destination address
/// for [`route`] (fixed and lowest-priority only; INIT and STARTUP go by physical id).
pub fn decode_xapic_icr(icr: u64, own_id: u32, cluster: bool) -> Option<Ipi> {
    let dest = (icr >> 56) as u8;
    let targets = match shorthand(icr, own_id) {
        Some(t) => t,
        None if icr & ICR_DEST_LOGICAL != 0 => {
            let vector = icr as u8;
            let fixed = matches!((icr >> 8) & 7, ICR_MODE_FIXED | ICR_MODE_LOWEST);
            return (fixed && vector >= 16 && dest != 0).then_some(Ipi::Logical {
                from: own_id,
                mda: dest,
                cluster,
                vector,
            });
        }
        None if dest == 0xff => u64::MAX,
        None => 1u64.checked_shl(dest.into()).unwrap_or(0),
    };
    icr_kind(icr, targets)
}

/// Whether an xAPIC with logical id `ldr` (LDR bits 31:24) accepts logical destination `mda`:
/// any common bit in the flat model; same cluster (bits 7:4) and a common bit in 3:0 in the
/// cluster model; 0xFF is everyone in both.
pub fn logical_match(mda: u8, ldr: u8, cluster: bool) -> bool {
    if mda == 0xff {
        return true;
    }
    if cluster { mda >> 4 == ldr >> 4 && mda & ldr & 0xf != 0 } else { mda & ldr != 0 }
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

/// Route `ipi` among the APICs in `exists`, whose xAPIC logical ids (LDR bits 31:24) are
/// `logical` (index = APIC id; 0 for an APIC not in xAPIC mode, which no logical destination
/// names). A STARTUP for several APICs starts the lowest (Linux names one at a time); its
/// vector is the 4 KiB page the processor starts in.
pub fn route(ipi: Ipi, exists: u64, logical: &[u8; MAX_APICS]) -> Route {
    match ipi {
        Ipi::Fixed { targets, vector } if targets & exists != 0 => Route::Post { targets: targets & exists, vector },
        Ipi::Logical { from, mda, cluster, vector } => {
            let own = 1u64.checked_shl(from).unwrap_or(0);
            let targets = (0..MAX_APICS)
                .filter(|&n| logical_match(mda, logical[n], cluster) && logical[n] != 0)
                .fold(0u64, |m, n| m | 1 << n)
                & exists
                & !own;
            if targets != 0 { Route::Post { targets, vector } } else { Route::Nowhere }
        }
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
    /// The reset state of vCPU `id`'s APIC: enabled in x2APIC mode, everything masked,
    /// software-disabled.
    pub fn new(id: u32) -> Self {
        let bsp = if id == 0 { APIC_BASE_BSP } else { 0 };
        VLapic {
            id,
            base: APIC_BASE_ADDR | APIC_BASE_EN | APIC_BASE_EXTD | bsp,
            tpr: 0,
            svr: 0xff,
            lvt: [LVT_MASKED; 7],
            esr: 0,
            esr_pending: 0,
            timer_initial: 0,
            timer_divide: 0,
            icr: 0,
            xapic_ldr: 0,
            dfr: DFR_FLAT,
            irr: [0; 4],
            isr: [0; 4],
            outbox: None,
        }
    }

    /// The reset state of vCPU `id`'s APIC in xAPIC mode (Xen's, and the SDM's power-up
    /// state): enabled, the MMIO page at 0xFEE00000.
    pub fn new_xapic(id: u32) -> Self {
        let mut a = VLapic::new(id);
        a.base &= !APIC_BASE_EXTD;
        a
    }

    /// IA32_APIC_BASE as the guest reads it.
    pub fn apic_base(&self) -> u64 {
        self.base
    }

    pub fn mode(&self) -> ApicMode {
        match (self.base & APIC_BASE_EN != 0, self.base & APIC_BASE_EXTD != 0) {
            (false, _) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        }
    }

    /// WRMSR to IA32_APIC_BASE: `false` (#GP) for reserved bits, the invalid state
    /// (EXTD without EN) and the transitions the SDM forbids (x2APIC → xAPIC, disabled →
    /// x2APIC). The BSP flag is the platform's and keeps its value. Entering the disabled state
    /// resets the registers (the APIC comes back from it as after power-up).
    pub fn set_apic_base(&mut self, value: u64) -> bool {
        let writable = APIC_BASE_ADDR_MASK | APIC_BASE_EN | APIC_BASE_EXTD | APIC_BASE_BSP;
        if value & !writable != 0 {
            return false;
        }
        let old = self.mode();
        let new = match (value & APIC_BASE_EN != 0, value & APIC_BASE_EXTD != 0) {
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
            (false, true) => return false,
        };
        let legal = matches!(
            (old, new),
            (ApicMode::Disabled, ApicMode::Disabled | ApicMode::XApic)
                | (ApicMode::XApic, _)
                | (ApicMode::X2Apic, ApicMode::Disabled | ApicMode::X2Apic)
        );
        if !legal {
            return false;
        }
        if new == ApicMode::Disabled && old != ApicMode::Disabled {
            *self = VLapic { base: self.base, ..VLapic::new(self.id) };
        }
        self.base = (value & !APIC_BASE_BSP) | (self.base & APIC_BASE_BSP);
        true
    }

    /// The guest-physical page the xAPIC MMIO interface answers on (xAPIC mode only).
    pub fn mmio_base(&self) -> Option<u64> {
        (self.mode() == ApicMode::XApic).then_some(self.base & APIC_BASE_ADDR_MASK)
    }

    /// Whether guest-physical `gpa` falls in the xAPIC page.
    pub fn claims(&self, gpa: u64) -> bool {
        self.mmio_base().is_some_and(|b| gpa & !0xfff == b)
    }

    fn x2apic_ldr(&self) -> u32 {
        ((self.id >> 4) << 16) | (1 << (self.id & 0xf))
    }

    /// Logical id as xAPIC destinations match it (LDR bits 31:24); 0 outside xAPIC mode.
    pub fn logical_id(&self) -> u8 {
        if self.mode() == ApicMode::XApic { (self.xapic_ldr >> 24) as u8 } else { 0 }
    }

    /// The xAPIC DFR selects the cluster model.
    fn cluster_model(&self) -> bool {
        self.dfr >> 28 == 0
    }

    /// Processor priority: the higher of TPR and the in-service class.
    fn ppr(&self) -> u32 {
        let isrv = highest(&self.isr).map_or(0, |v| v as u32 & 0xf0);
        if (self.tpr & 0xf0) >= isrv { self.tpr & 0xff } else { isrv }
    }

    /// Register `r` as `mode` shows it; `None` where that mode has no such readable register.
    fn read_reg(&self, r: u32, mode: ApicMode) -> Option<u64> {
        let x2 = mode == ApicMode::X2Apic;
        Some(match r {
            reg::ID if x2 => self.id as u64,
            reg::ID => ((self.id & 0xff) << 24) as u64,
            reg::VERSION => VERSION,
            reg::TPR => self.tpr as u64,
            reg::APR | reg::EOI if !x2 => 0,
            reg::PPR => self.ppr() as u64,
            reg::LDR if x2 => self.x2apic_ldr() as u64,
            reg::LDR => self.xapic_ldr as u64,
            reg::DFR if !x2 => self.dfr as u64,
            reg::SVR => self.svr as u64,
            reg::ISR0..=0x17 => word(&self.isr, r - reg::ISR0),
            reg::TMR0..=0x1f => 0,
            reg::IRR0..=0x27 => word(&self.irr, r - reg::IRR0),
            reg::ESR => self.esr as u64,
            // Delivery status (bit 12) is always idle: IPIs are sent at once.
            reg::ICR if x2 => self.icr,
            reg::ICR => self.icr & 0xffff_ffff,
            reg::ICR_HIGH if !x2 => (self.icr >> 32) & 0xff00_0000,
            reg::TIMER_INITIAL => self.timer_initial as u64,
            reg::TIMER_CURRENT => 0,
            reg::TIMER_DIVIDE => self.timer_divide as u64,
            _ => self.lvt[lvt_slot(r)?] as u64,
        })
    }

    /// Write `value` to register `r` in `mode`; `false` where that mode has no such writable
    /// register (x2APIC: #GP; the xAPIC page ignores such writes).
    fn write_reg(&mut self, r: u32, value: u64, mode: ApicMode) -> bool {
        let x2 = mode == ApicMode::X2Apic;
        let v32 = value as u32;
        match r {
            reg::TPR => self.tpr = v32 & 0xff,
            reg::EOI => {
                if let Some(v) = highest(&self.isr) {
                    set(&mut self.isr, v, false);
                }
            }
            reg::LDR if !x2 => self.xapic_ldr = v32 & 0xff00_0000,
            reg::DFR if !x2 => self.dfr = v32 | 0x0fff_ffff,
            reg::SVR => self.svr = v32 & 0x13ff,
            // A write latches the errors seen since the last one (SDM: write, then read).
            reg::ESR => self.esr = core::mem::take(&mut self.esr_pending),
            reg::ICR if x2 => {
                self.icr = value;
                self.check_icr_vector();
                self.ipi(decode_icr(value, self.id));
            }
            reg::ICR => {
                self.icr = (self.icr & !0xffff_ffff) | v32 as u64;
                self.check_icr_vector();
                let cluster = self.cluster_model();
                self.ipi(decode_xapic_icr(self.icr, self.id, cluster));
            }
            reg::ICR_HIGH if !x2 => self.icr = (self.icr & 0xffff_ffff) | (((v32 & 0xff00_0000) as u64) << 32),
            reg::TIMER_INITIAL => self.timer_initial = v32,
            reg::TIMER_DIVIDE => self.timer_divide = v32 & 0xb,
            reg::SELF_IPI if x2 => self.post(v32 as u8),
            _ => match lvt_slot(r) {
                Some(slot) => self.lvt[slot] = v32,
                None => return false,
            },
        }
        true
    }

    /// RDMSR of x2APIC register MSR `msr`; `None` for #GP (also outside x2APIC mode).
    pub fn read(&self, msr: u32) -> Option<u64> {
        let r = msr.checked_sub(X2APIC_FIRST)?;
        if self.mode() != ApicMode::X2Apic || r == reg::EOI || r == reg::SELF_IPI {
            return None;
        }
        self.read_reg(r, ApicMode::X2Apic)
    }

    /// WRMSR of `value` to x2APIC MSR `msr`; `false` for #GP (also outside x2APIC mode).
    pub fn write(&mut self, msr: u32, value: u64) -> bool {
        let Some(r) = msr.checked_sub(X2APIC_FIRST) else { return false };
        if self.mode() != ApicMode::X2Apic {
            return false;
        }
        self.write_reg(r, value, ApicMode::X2Apic)
    }

    /// A load of `size` bytes (1, 2, 4 or 8) at `offset` in the xAPIC page. Each register is
    /// the low 32 bits of a 16-byte slot (the rest reads as zero); narrower and unaligned loads
    /// see the bytes they cover. Outside xAPIC mode and for unknown registers: all ones / zero.
    pub fn mmio_read(&self, offset: u64, size: u8) -> u64 {
        if self.mode() != ApicMode::XApic {
            return u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8)));
        }
        let mut out = 0u64;
        for i in 0..u64::from(size.clamp(1, 8)) {
            let at = (offset + i) & 0xfff;
            let byte = if at & 0xf < 4 {
                self.read_reg((at >> 4) as u32, ApicMode::XApic).map_or(0, |v| (v >> (8 * (at & 3))) & 0xff)
            } else {
                0
            };
            out |= byte << (8 * i);
        }
        out
    }

    /// A store of `size` bytes at `offset` in the xAPIC page. The SDM has software write each
    /// register with an aligned 32-bit store; a narrower or wider one writes the bytes it covers
    /// of the register's low 32 bits, the others keeping their value. Writes to read-only or
    /// unknown registers, and anything outside xAPIC mode, are ignored.
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) {
        if self.mode() != ApicMode::XApic {
            return;
        }
        let r = ((offset & 0xfff) >> 4) as u32;
        let start = offset & 0xf;
        if start >= 4 {
            return;
        }
        let end = (start + u64::from(size.clamp(1, 8))).min(4);
        let old = self.read_reg(r, ApicMode::XApic).unwrap_or(0) as u32;
        let mut v = old;
        for b in start..end {
            let byte = ((value >> (8 * (b - start))) & 0xff) as u32;
            v = (v & !(0xff << (8 * b))) | (byte << (8 * b));
        }
        self.write_reg(r, v as u64, ApicMode::XApic);
    }

    /// An ICR write: a fixed interrupt for this APIC becomes pending here; what concerns
    /// other APICs waits in [`VLapic::take_ipi`]. NMI, SMI and the INIT level de-assert are
    /// dropped (nothing models them), as is an INIT (a vCPU that is on stays on).
    fn ipi(&mut self, ipi: Option<Ipi>) {
        let Some(ipi) = ipi else { return };
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
            Ipi::Logical { mda, cluster, vector, .. } => {
                if logical_match(mda, self.logical_id(), cluster) && self.logical_id() != 0 {
                    self.post(vector);
                }
                self.outbox = Some(ipi);
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

    /// Make `vector` pending (nothing while the APIC is disabled; vectors 0-15 are illegal,
    /// dropped with a receive error).
    pub fn post(&mut self, vector: u8) {
        if self.mode() == ApicMode::Disabled {
            return;
        }
        if vector < 16 {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
        } else {
            set(&mut self.irr, vector, true);
        }
    }

    /// A fixed or lowest-priority IPI with an illegal vector is not sent: a send error.
    fn check_icr_vector(&mut self) {
        if matches!((self.icr >> 8) & 7, ICR_MODE_FIXED | ICR_MODE_LOWEST) && (self.icr as u8) < 16 {
            self.error(ESR_SEND_ILLEGAL_VECTOR);
        }
    }

    /// Record `bits` in the pending ESR; a new error raises the LVT error interrupt unless it
    /// is masked. Its own vector may be illegal: that is one more (receive) error, raised
    /// without a second interrupt (the recursion through which XSA-462 deadlocked Xen).
    fn error(&mut self, bits: u32) {
        let new = bits & !self.esr_pending;
        self.esr_pending |= bits;
        let lvt = self.lvt[lvt_slot(reg::LVT_ERROR).unwrap_or(6)];
        if new == 0 || lvt & LVT_MASKED != 0 {
            return;
        }
        match lvt as u8 {
            v if v < 16 => self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR,
            v => set(&mut self.irr, v, true),
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
    fn illegal_vectors_are_errors_latched_by_the_next_esr_write() {
        let mut a = VLapic::new(0);
        assert!(a.write(0x80f, 0x1ff)); // software enabled
        // XTF's XSA-462 test: LVT error on illegal vector 15, then an IPI of vector 15 to
        // itself. The send error raises the LVT error interrupt, whose vector is illegal too.
        assert!(a.write(0x828, 0));
        assert!(a.write(0x837, 0xf));
        assert!(a.write(0x830, 0x0f));
        assert_eq!(a.read(0x828), Some(0), "nothing visible before the ESR is written");
        assert!(a.write(0x828, 0));
        assert_eq!(a.read(0x828), Some(u64::from(ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR)));
        assert!(a.write(0x828, 0));
        assert_eq!(a.read(0x828), Some(0), "a second write latches what came since");
        assert_eq!(a.next_vector(), None);
        // A legal LVT error vector is raised once per new error.
        assert!(a.write(0x837, 0xe3));
        a.post(3);
        assert_eq!(a.next_vector(), Some(0xe3));
        assert!(a.write(0x828, 0));
        assert_eq!(a.read(0x828), Some(u64::from(ESR_RECEIVE_ILLEGAL_VECTOR)));
        // Masked: recorded, nothing raised. INIT (not fixed) with vector 0 is no error.
        let mut b = VLapic::new(1);
        assert!(b.write(0x80f, 0x1ff));
        assert!(b.write(0x830, (1 << 32) | (5 << 8)));
        assert!(b.write(0x830, (1 << 32) | 0x02));
        assert!(b.write(0x828, 0));
        assert_eq!(b.read(0x828), Some(u64::from(ESR_SEND_ILLEGAL_VECTOR)));
        assert_eq!(b.next_vector(), None);
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
        let none = [0u8; MAX_APICS];
        let route = |ipi, exists| route(ipi, exists, &none);
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

    /// vCPU `id`'s APIC moved to xAPIC mode the way Linux's `nox2apic` does it: x2APIC →
    /// disabled → xAPIC.
    fn xapic(id: u32) -> VLapic {
        let mut a = VLapic::new(id);
        let base = a.apic_base();
        assert!(a.set_apic_base(base & !(APIC_BASE_EN | APIC_BASE_EXTD)));
        assert!(a.set_apic_base(base & !APIC_BASE_EXTD));
        assert_eq!(a.mode(), ApicMode::XApic);
        a
    }

    #[test]
    fn mode_transitions_follow_the_sdm() {
        let mut a = VLapic::new(0);
        assert_eq!(a.mode(), ApicMode::X2Apic);
        // x2APIC → xAPIC directly: refused, nothing changes.
        assert!(!a.set_apic_base(0xfee0_0900));
        assert_eq!(a.apic_base(), 0xfee0_0d00);
        // EXTD without EN: the invalid state. Reserved bits 0-7, 9 and 52-63: refused.
        assert!(!a.set_apic_base(0xfee0_0500));
        assert!(!a.set_apic_base(0xfee0_0d01));
        assert!(!a.set_apic_base(0xfee0_0f00));
        assert!(!a.set_apic_base((1 << 52) | 0xfee0_0d00));
        // x2APIC → disabled, then disabled → x2APIC is refused, disabled → xAPIC allowed.
        assert!(a.set_apic_base(0xfee0_0100));
        assert_eq!((a.mode(), a.mmio_base()), (ApicMode::Disabled, None));
        assert!(!a.set_apic_base(0xfee0_0d00));
        assert!(a.set_apic_base(0xfee0_0900));
        assert_eq!((a.mode(), a.mmio_base()), (ApicMode::XApic, Some(0xfee0_0000)));
        // xAPIC moves its page, and goes on to x2APIC; back from there only through disabled.
        assert!(a.set_apic_base(0xfed0_0900));
        assert!(a.claims(0xfed0_0030) && !a.claims(0xfee0_0030));
        assert!(a.set_apic_base(0xfee0_0d00));
        assert_eq!(a.mode(), ApicMode::X2Apic);
        assert!(!a.claims(0xfee0_0030), "no page in x2APIC mode");
        // The BSP flag is the platform's: a write cannot clear or set it.
        assert!(a.set_apic_base(0xfee0_0c00));
        assert_eq!(a.apic_base(), 0xfee0_0d00);
        let mut b = VLapic::new(1);
        assert!(b.set_apic_base(0xfee0_0100) && b.set_apic_base(0xfee0_0900));
        assert_eq!(b.apic_base(), 0xfee0_0800);
    }

    #[test]
    fn msrs_are_gp_outside_x2apic_mode_and_disabling_resets() {
        let mut a = VLapic::new(0);
        assert!(a.write(0x808, 0x20) && a.write(0x835, 0x700));
        a.post(0x40);
        assert!(a.set_apic_base(0xfee0_0100));
        assert_eq!(a.read(0x803), None, "disabled: no x2APIC MSRs");
        assert!(!a.write(0x808, 0));
        a.post(0x50);
        assert_eq!(a.next_vector(), None, "a disabled APIC takes no interrupts");
        assert!(a.set_apic_base(0xfee0_0900));
        assert_eq!(a.read(0x803), None, "xAPIC mode: #GP on the MSRs");
        // What the disabled state reset: TPR, LVTs, IRR.
        assert_eq!(a.mmio_read(0x80, 4), 0);
        assert_eq!(a.mmio_read(0x350, 4), LVT_MASKED as u64);
        assert_eq!(a.next_vector(), None);
        assert_eq!(a.mmio_read(0xe0, 4), 0xffff_ffff, "DFR: flat");
    }

    #[test]
    fn xapic_page_shows_id_version_ldr_and_dfr_in_its_own_format() {
        let mut a = xapic(3);
        assert_eq!(a.mmio_read(0x20, 4), 3 << 24);
        assert_eq!(a.mmio_read(0x30, 4), VERSION);
        assert_eq!(a.mmio_read(0xd0, 4), 0, "LDR: software's to set in xAPIC mode");
        a.mmio_write(0xd0, 4, 0x0800_0000);
        a.mmio_write(0xe0, 4, 0x0fff_ffff);
        assert_eq!(a.mmio_read(0xd0, 4), 0x0800_0000);
        assert_eq!(a.mmio_read(0xe0, 4), 0x0fff_ffff, "cluster model");
        a.mmio_write(0x20, 4, 7 << 24);
        assert_eq!(a.mmio_read(0x20, 4), 3 << 24, "ID stays the vCPU's");
        a.mmio_write(0x30, 4, 0);
        assert_eq!(a.mmio_read(0x30, 4), VERSION, "read-only");
        // Onwards to x2APIC: the 32-bit ID and the derived LDR.
        assert!(a.set_apic_base(0xfee0_0c00));
        assert_eq!((a.read(0x802), a.read(0x80d)), (Some(3), Some(1 << 3)));
        assert_eq!(a.mmio_read(0x20, 4), 0xffff_ffff, "the page is gone");
    }

    #[test]
    fn xapic_access_widths_cover_the_bytes_of_each_register() {
        let mut a = xapic(0);
        a.mmio_write(0xf0, 4, 0x1ff);
        assert_eq!(a.mmio_read(0xf0, 4), 0x1ff);
        assert_eq!(a.mmio_read(0xf0, 1), 0xff);
        assert_eq!(a.mmio_read(0xf1, 1), 0x01);
        assert_eq!(a.mmio_read(0xf0, 2), 0x1ff);
        assert_eq!(a.mmio_read(0xf4, 4), 0, "bytes 4-15 of a slot read as zero");
        assert_eq!(a.mmio_read(0x30, 8), VERSION, "8 bytes: the register, then zeros");
        // A byte store changes that byte only.
        a.mmio_write(0xf1, 1, 0x00);
        assert_eq!(a.mmio_read(0xf0, 4), 0xff);
        a.mmio_write(0x80, 8, 0xdead_0000_0000_0030);
        assert_eq!(a.mmio_read(0x80, 4), 0x30);
        a.mmio_write(0x84, 4, 0x40);
        assert_eq!(a.mmio_read(0x80, 4), 0x30, "a store beyond the register is dropped");
    }

    #[test]
    fn xapic_timer_eoi_and_self_ipi_share_the_x2apic_logic() {
        let mut a = xapic(0);
        a.mmio_write(0x380, 4, 12345);
        a.mmio_write(0x3e0, 4, 0xb);
        a.mmio_write(0x320, 4, 0x2_00ef);
        assert_eq!((a.mmio_read(0x380, 4), a.mmio_read(0x3e0, 4), a.mmio_read(0x320, 4)), (12345, 0xb, 0x2_00ef));
        // Self IPI through the ICR shorthand; IRR and ISR are eight 32-bit words each.
        a.mmio_write(0x300, 4, (1 << 18) | 0xf6);
        assert_eq!(a.mmio_read(0x270, 4), 1 << (0xf6 - 0xe0));
        assert_eq!(a.next_vector(), Some(0xf6));
        a.accept(0xf6);
        assert_eq!(a.mmio_read(0x170, 4), 1 << (0xf6 - 0xe0));
        a.mmio_write(0xb0, 4, 0);
        assert_eq!(a.mmio_read(0x170, 4), 0);
        // SELF_IPI is x2APIC's only: ignored here.
        a.mmio_write(0x3f0, 4, 0x50);
        assert_eq!(a.next_vector(), None);
    }

    #[test]
    fn xapic_icr_is_two_halves_with_an_8_bit_destination() {
        let mut a = xapic(0);
        // The destination half alone sends nothing; the low half sends.
        a.mmio_write(0x310, 4, 0x0100_0000);
        assert_eq!(a.take_ipi(), None);
        assert_eq!(a.mmio_read(0x310, 4), 0x0100_0000);
        a.mmio_write(0x300, 4, 0xf7);
        assert_eq!(a.take_ipi(), Some(Ipi::Fixed { targets: 0b10, vector: 0xf7 }));
        assert_eq!(a.mmio_read(0x300, 4), 0xf7, "delivery status idle");
        // INIT and STARTUP to APIC 1, as Linux wakes a secondary vCPU.
        a.mmio_write(0x300, 4, (1 << 15) | (1 << 14) | (5 << 8));
        assert_eq!(a.take_ipi(), None);
        a.mmio_write(0x300, 4, (6 << 8) | 0x9a);
        assert_eq!(a.take_ipi(), Some(Ipi::Startup { targets: 0b10, vector: 0x9a }));
        // Physical 0xFF: everyone, this APIC included.
        a.mmio_write(0x310, 4, 0xff00_0000);
        a.mmio_write(0x300, 4, 0xf8);
        assert_eq!(a.next_vector(), Some(0xf8));
        assert_eq!(a.take_ipi(), Some(Ipi::Fixed { targets: !1, vector: 0xf8 }));
        // x2APIC-only registers do not exist in the page: the ICR's high half is 8 bits.
        assert_eq!(
            decode_xapic_icr((0x02u64 << 56) | 0x40, 0, false),
            Some(Ipi::Fixed { targets: 0b100, vector: 0x40 })
        );
    }

    #[test]
    fn xapic_logical_destinations_match_each_ldr_flat_and_cluster() {
        // Linux's flat model: LDR = 1 << cpu.
        let mut a0 = xapic(0);
        a0.mmio_write(0xd0, 4, 0x0100_0000);
        let mut logical = [0u8; MAX_APICS];
        logical[0] = a0.logical_id();
        logical[1] = 0x02;
        logical[2] = 0x04;
        // Logical 0x06 from APIC 0: APICs 1 and 2, not the sender.
        a0.mmio_write(0x310, 4, 0x0600_0000);
        a0.mmio_write(0x300, 4, (1 << 11) | 0xfb);
        let ipi = a0.take_ipi().unwrap();
        assert_eq!(ipi, Ipi::Logical { from: 0, mda: 0x06, cluster: false, vector: 0xfb });
        assert_eq!(a0.next_vector(), None);
        assert_eq!(route(ipi, 0b111, &logical), Route::Post { targets: 0b110, vector: 0xfb });
        assert_eq!(route(ipi, 0b011, &logical), Route::Post { targets: 0b010, vector: 0xfb });
        // Logical 0x03 includes the sender: pending here too, and the others get theirs.
        a0.mmio_write(0x310, 4, 0x0300_0000);
        a0.mmio_write(0x300, 4, (1 << 11) | 0xfc);
        assert_eq!(a0.next_vector(), Some(0xfc));
        assert_eq!(route(a0.take_ipi().unwrap(), 0b111, &logical), Route::Post { targets: 0b010, vector: 0xfc });
        // Cluster model: cluster 1, members 0 and 1.
        assert!(logical_match(0x13, 0x12, true) && !logical_match(0x13, 0x22, true));
        assert!(logical_match(0xff, 0x22, true) && logical_match(0xff, 0x01, false));
        assert!(!logical_match(0x10, 0x10, true), "no member bit");
        // An APIC not in xAPIC mode (logical id 0) is never a logical target.
        let none = [0u8; MAX_APICS];
        assert_eq!(
            route(Ipi::Logical { from: 0, mda: 0xff, cluster: false, vector: 0x40 }, 0b11, &none),
            Route::Nowhere
        );
    }
}
