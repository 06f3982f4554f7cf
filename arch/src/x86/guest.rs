//! Per-vCPU guest state both x86 backends keep beside their VMCS/VMCB, and the decisions on
//! it that do not depend on the vendor: which interrupt to deliver next, what an intercepted
//! CPUID, RDMSR/WRMSR or port access does, and when the Xen single-shot timer fires or the
//! run loop's slice ends.
//!
//! Each backend decodes its own exit (VMCS exit qualification, VMCB EXITINFO), calls in here,
//! then applies the result to its control structure (instruction length, event injection,
//! EFER/PAT fields). Pure logic, tested on the host.

use super::mmio;
use super::policy::{self, DebugPort, Gprs, GuestMsrs, MsrEffect, PortAction, RAX, RCX, RamRange};
use super::vlapic::ApicMode;
use super::xstate::{self, GuestView, Layout};

/// What the exit handlers need from the machine they run on.
pub trait Platform {
    /// The real CPU's CPUID registers [EAX, EBX, ECX, EDX].
    fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4];
    /// A complete line the guest wrote to the debug port.
    fn debug_line(&mut self, domain_id: u16, line: &str);
    /// A `(XEN)` diagnostic about this vCPU.
    fn report(&mut self, args: core::fmt::Arguments);
    /// The vector state guests are offered (the bare machine reads it once at boot).
    fn xstate(&self) -> Layout {
        Layout::from_cpuid(|leaf, sub| self.host_cpuid(leaf, sub))
    }
    /// Fill `buf` with the guest's code at linear address `linear` (through its own page
    /// tables), as far as it is readable RAM; how many bytes that was.
    fn fetch_code(&mut self, _linear: u64, _buf: &mut [u8]) -> usize {
        0
    }
}

/// Per-vCPU state the exit handler keeps besides the VMCS/VMCB and registers.
#[derive(Clone, Debug)]
pub struct ExitContext {
    pub ram: RamRange,
    pub domain_id: u16,
    pub vcpu_id: u16,
    /// SVM only: the CPU fills NRIP (CPUID 0x8000000A EDX bit 3). VT-x always reports the
    /// length of the instruction that exited.
    pub nrip: bool,
    pub debug: DebugPort,
    /// Emulated MSRs, the x2APIC among them.
    pub msrs: GuestMsrs,
    /// The guest asked for the hypercall page at this guest-physical address (the backend
    /// writes it, then clears this).
    pub hypercall_page: Option<u64>,
    /// The Xen callback vector (`HVM_PARAM_CALLBACK_IRQ` of type vector).
    pub upcall_vector: Option<u8>,
    /// An upcall was raised and not yet delivered.
    pub upcall_pending: bool,
    /// An interrupt handed to the CPU whose delivery is not yet confirmed (SVM's V_IRQ).
    pub inflight: Option<Injected>,
    /// The guest's XCR0 (it writes it with XSETBV, which always exits); loaded while it runs.
    pub xcr0: u64,
    /// The guest has used the xAPIC page (reported once).
    pub xapic_used: bool,
    /// The guest has touched guest-physical space where nothing is (reported once).
    pub unclaimed_mmio_seen: bool,
}

/// The source of a virtual interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    Upcall,
    Lapic(u8),
}

impl ExitContext {
    pub fn new(ram: RamRange, domain_id: u16, vcpu_id: u16, nrip: bool) -> Self {
        ExitContext {
            ram,
            domain_id,
            vcpu_id,
            nrip,
            debug: DebugPort::default(),
            msrs: GuestMsrs::new(vcpu_id),
            hypercall_page: None,
            upcall_vector: None,
            upcall_pending: false,
            inflight: None,
            xcr0: xstate::RESET_XCR0,
            xapic_used: false,
            unclaimed_mmio_seen: false,
        }
    }

    /// An interrupt waits for the guest (deliverable once it enables interrupts).
    pub fn interrupt_pending(&self) -> bool {
        self.inflight.is_some()
            || (self.upcall_pending && self.upcall_vector.is_some())
            || self.msrs.lapic.next_vector().is_some()
    }

    /// The most urgent interrupt to deliver and its vector: the higher vector of the upcall
    /// and the local APIC's next one (an upcall raised before the guest chose a vector waits).
    pub fn next_interrupt(&self) -> Option<(Injected, u8)> {
        let upcall = self.upcall_vector.filter(|_| self.upcall_pending);
        match (upcall, self.msrs.lapic.next_vector()) {
            (Some(u), Some(l)) if l > u => Some((Injected::Lapic(l), l)),
            (Some(u), _) => Some((Injected::Upcall, u)),
            (None, Some(l)) => Some((Injected::Lapic(l), l)),
            (None, None) => None,
        }
    }

    /// The guest took the interrupt from `src`: the upcall is no longer pending, a local
    /// APIC vector goes in service.
    pub fn delivered(&mut self, src: Injected) {
        match src {
            Injected::Upcall => self.upcall_pending = false,
            Injected::Lapic(v) => self.msrs.lapic.accept(v),
        }
    }
}

/// An intercepted CPUID: the shared policy's answer in EAX..EDX. `cr4` is the guest's own
/// (OSXSAVE and OSPKE reflect it). Leaf 1 EDX.APIC follows IA32_APIC_BASE's global enable,
/// as on hardware.
pub fn cpuid(ctx: &ExitContext, regs: &mut Gprs, cr4: u64, p: &impl Platform) {
    const LEAF1_EDX_APIC: u32 = 1 << 9;
    let (leaf, sub) = (regs.0[RAX] as u32, regs.0[RCX] as u32);
    let fpu = (&p.xstate(), GuestView { xcr0: ctx.xcr0, cr4 });
    let mut answer = policy::cpuid(leaf, sub, ctx.vcpu_id, fpu, |l, s| p.host_cpuid(l, s));
    if leaf == 1 && ctx.msrs.lapic.mode() == ApicMode::Disabled {
        answer[3] &= !LEAF1_EDX_APIC;
    }
    policy::set_cpuid_result(regs, answer);
}

/// After a WRMSR: say so when it moved the vLAPIC to another mode (a handful per vCPU boot).
pub fn report_apic_mode(ctx: &ExitContext, before: ApicMode, p: &mut impl Platform) {
    let now = ctx.msrs.lapic.mode();
    if now != before {
        let what = match now {
            ApicMode::Disabled => "disabled",
            ApicMode::XApic => "in xAPIC mode",
            ApicMode::X2Apic => "in x2APIC mode",
        };
        p.report(format_args!("d{}v{}: local APIC {what}", ctx.domain_id, ctx.vcpu_id));
    }
}

/// What a guest-physical access outside RAM comes to, as far as the local APIC goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicAccess {
    /// Not the xAPIC page (or the APIC is not in xAPIC mode): the backend decides.
    NotApic,
    /// Emulated: step over the instruction, `len` bytes.
    Done { len: u64 },
    /// The xAPIC page, by an instruction the decoder does not know: a fault.
    Undecodable,
}

/// A nested-paging / EPT fault at `gpa` by the instruction at linear address `linear`, run in
/// `mode`: if `gpa` is in the vLAPIC's xAPIC page, fetch and decode the instruction, carry it
/// out on the register model and update the registers. RSP must be current in `regs`.
pub fn apic_mmio(
    ctx: &mut ExitContext,
    regs: &mut Gprs,
    gpa: u64,
    linear: u64,
    mode: mmio::CpuMode,
    p: &mut impl Platform,
) -> ApicAccess {
    if !ctx.msrs.lapic.claims(gpa) {
        return ApicAccess::NotApic;
    }
    let access = match decoded_at(p, linear, mode) {
        Ok(access) => access,
        Err((code, n)) => {
            p.report(format_args!(
                "d{}v{}: xAPIC access at {gpa:#x} by an instruction not decoded at {linear:#x}: {:02x?}",
                ctx.domain_id,
                ctx.vcpu_id,
                &code[..n]
            ));
            return ApicAccess::Undecodable;
        }
    };
    if !ctx.xapic_used {
        ctx.xapic_used = true;
        p.report(format_args!("d{}v{}: local APIC used through its xAPIC page", ctx.domain_id, ctx.vcpu_id));
    }
    let offset = gpa & 0xfff;
    let mut written = None;
    let lapic = &mut ctx.msrs.lapic;
    mmio::perform(&access, regs, |size| lapic.mmio_read(offset, size), |size, v| written = Some((size, v)));
    if let Some((size, v)) = written {
        lapic.mmio_write(offset, size, v);
    }
    ApicAccess::Done { len: access.len.into() }
}

/// A nested-paging / EPT fault at `gpa`, outside the domain's RAM and off the xAPIC page,
/// by the instruction at linear address `linear` run in `mode`: nothing is there. As Xen
/// answers an HVM or PVH domain without a device model (its I/O "null handler"), the access
/// completes: a load reads all ones, a store is dropped (a guest probes for devices this
/// way, e.g. XTF for an HPET). Returns the instruction's length, or `None` when it is not
/// one the decoder knows (the backend then reports the fault). RSP must be current in `regs`.
pub fn unclaimed_mmio(
    ctx: &mut ExitContext,
    regs: &mut Gprs,
    gpa: u64,
    linear: u64,
    mode: mmio::CpuMode,
    p: &mut impl Platform,
) -> Option<u64> {
    let access = decoded_at(p, linear, mode).ok()?;
    if !ctx.unclaimed_mmio_seen {
        ctx.unclaimed_mmio_seen = true;
        p.report(format_args!(
            "d{}v{}: access at gpa {gpa:#x}, outside its memory and devices: reads all ones, writes are dropped (as Xen)",
            ctx.domain_id, ctx.vcpu_id
        ));
    }
    mmio::perform(&access, regs, |_| u64::MAX, |_, _| {});
    Some(access.len.into())
}

/// The instruction at linear address `linear`, fetched and decoded for `mode`; else the
/// bytes fetched (and how many) for the report.
fn decoded_at(p: &mut impl Platform, linear: u64, mode: mmio::CpuMode) -> Result<mmio::Access, ([u8; 15], usize)> {
    let mut code = [0u8; 15];
    let n = p.fetch_code(linear, &mut code);
    mmio::decode(&code[..n], mode).ok_or((code, n))
}

/// What an intercepted XSETBV comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsetbvOutcome {
    /// XCR0 is the guest's new value (`ctx.xcr0`): step over the instruction.
    Done,
    /// CR4.OSXSAVE is clear: #UD.
    Ud,
    /// Not CPL 0, not XCR0, or a value the SDM or our offer refuses: #GP(0).
    Gp,
}

/// XSETBV of EDX:EAX into XCR(ECX) at privilege `cpl` with guest CR4 `cr4`.
pub fn xsetbv(ctx: &mut ExitContext, regs: &Gprs, cpl: u8, cr4: u64, p: &impl Platform) -> XsetbvOutcome {
    if cr4 & xstate::CR4_OSXSAVE == 0 {
        return XsetbvOutcome::Ud;
    }
    let value = policy::msr_value(regs);
    if cpl != 0 || regs.0[RCX] as u32 != 0 || !p.xstate().xcr0_valid(value) {
        return XsetbvOutcome::Gp;
    }
    ctx.xcr0 = value;
    XsetbvOutcome::Done
}

/// An intercepted IN or OUT (not a string instruction) of `size` bytes at `port`: an IN
/// fills RAX, an OUT may ask for power-off. The backend then steps over the instruction.
pub fn port_io(
    ctx: &mut ExitContext,
    regs: &mut Gprs,
    port: u16,
    size: u8,
    input: bool,
    p: &mut impl Platform,
) -> PortAction {
    if input {
        regs.0[RAX] = policy::port_in(size, regs.0[RAX]);
        return PortAction::None;
    }
    let domain = ctx.domain_id;
    policy::port_out_action(&mut ctx.debug, port, regs.0[RAX], |line| p.debug_line(domain, line))
}

/// What an intercepted RDMSR/WRMSR comes to, for the backend to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrOutcome {
    /// Done (a read's value is in EDX:EAX): step over the instruction.
    Done,
    /// Done, and the guest's EFER is now this.
    Efer(u64),
    /// Refused: inject #GP(0), the instruction does not retire.
    Gp,
}

/// IA32_PAT: held by the CPU for the guest (VMCB g_pat, VMCS guest IA32_PAT).
pub const MSR_PAT: u32 = 0x277;

/// RDMSR (`write` false) or WRMSR of ECX through the MSR policy. `efer` is the EFER the
/// guest believes in; `pat` the guest PAT the backend's control structure holds.
pub fn msr(ctx: &mut ExitContext, regs: &mut Gprs, write: bool, efer: u64, pat: &mut u64) -> MsrOutcome {
    let index = regs.0[RCX] as u32;
    if !write {
        let value = if index == MSR_PAT { Some(*pat) } else { policy::read_msr_state(&ctx.msrs, index, efer) };
        return match value {
            Some(v) => {
                policy::set_msr_result(regs, v);
                MsrOutcome::Done
            }
            None => MsrOutcome::Gp,
        };
    }
    let value = policy::msr_value(regs);
    if index == MSR_PAT {
        if !policy::valid_pat(value) {
            return MsrOutcome::Gp;
        }
        *pat = value;
        return MsrOutcome::Done;
    }
    match policy::write_msr_state(&mut ctx.msrs, index, value, efer) {
        Some(MsrEffect::Efer(v)) => MsrOutcome::Efer(v),
        Some(MsrEffect::HypercallPage(gpa)) => {
            ctx.hypercall_page = Some(gpa);
            MsrOutcome::Done
        }
        Some(MsrEffect::Done) => MsrOutcome::Done,
        None => MsrOutcome::Gp,
    }
}

/// The vCPU's two deadlines, in the platform clock's nanoseconds: the Xen single-shot timer
/// (`VCPUOP_set_singleshot_timer`) and the end of the run loop's slice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    xen: Option<u64>,
    /// The Xen timer fired and the core has not been told yet.
    fired: bool,
    preempt_at: Option<u64>,
}

impl Timers {
    pub fn set_xen(&mut self, deadline_ns: Option<u64>) {
        self.xen = deadline_ns;
    }

    pub fn xen_deadline(&self) -> Option<u64> {
        self.xen
    }

    pub fn set_preemption(&mut self, deadline_ns: Option<u64>) {
        self.preempt_at = deadline_ns;
    }

    /// Fire the Xen timer if it is due at `now`; true while a fired timer is unreported
    /// (the backend then leaves the guest with `Exit::Preempted`).
    pub fn poll(&mut self, now: u64) -> bool {
        if self.xen.is_some_and(|t| now >= t) {
            self.xen = None;
            self.fired = true;
        }
        self.fired
    }

    /// Whether the Xen timer fired since the last call (it is then disarmed).
    pub fn take_fired(&mut self, now: u64) -> bool {
        self.poll(now);
        core::mem::take(&mut self.fired)
    }

    /// The Xen timer has fired or is due: an interrupt for a halted vCPU.
    pub fn pending(&self, now: u64) -> bool {
        self.fired || self.xen.is_some_and(|t| now >= t)
    }

    /// The slice is over.
    pub fn preempt_due(&self, now: u64) -> bool {
        self.preempt_at.is_some_and(|t| now >= t)
    }

    /// When the backend must take the vCPU out of the guest at the latest.
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.xen, self.preempt_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::x86::policy::{RBX, RDX};
    use std::string::String;
    use std::vec::Vec;

    #[derive(Default)]
    struct Lines(Vec<String>);

    impl Platform for Lines {
        fn host_cpuid(&self, _leaf: u32, _sub: u32) -> [u32; 4] {
            [0; 4]
        }
        fn debug_line(&mut self, domain_id: u16, line: &str) {
            self.0.push(std::format!("(d{domain_id}) {line}"));
        }
        fn report(&mut self, _args: core::fmt::Arguments) {}
    }

    fn ctx() -> ExitContext {
        ExitContext::new(RamRange { base: 0, size: 64 << 20 }, 1, 0, false)
    }

    #[test]
    fn the_higher_vector_goes_first_and_delivery_is_booked() {
        let mut c = ctx();
        c.upcall_pending = true;
        assert_eq!(c.next_interrupt(), None, "no vector chosen yet");
        c.upcall_vector = Some(0xf3);
        c.msrs.lapic.post(0xf6);
        assert_eq!(c.next_interrupt(), Some((Injected::Lapic(0xf6), 0xf6)));
        c.delivered(Injected::Lapic(0xf6));
        // The upcall bypasses the APIC: the in-service 0xf6 does not hold it back.
        assert_eq!(c.next_interrupt(), Some((Injected::Upcall, 0xf3)));
        c.delivered(Injected::Upcall);
        assert_eq!(c.next_interrupt(), None);
        assert!(!c.interrupt_pending());
    }

    #[test]
    fn pat_is_the_backends_and_the_hypercall_page_is_recorded() {
        let (mut c, mut regs, mut pat) = (ctx(), Gprs::default(), 0x0007_0406_0007_0406u64);
        regs.0[RCX] = MSR_PAT as u64;
        assert_eq!(msr(&mut c, &mut regs, false, 0, &mut pat), MsrOutcome::Done);
        assert_eq!((regs.0[RAX], regs.0[RDX]), (0x0007_0406, 0x0007_0406));
        regs.0[RAX] = 0x0001_0406;
        regs.0[RDX] = 0;
        assert_eq!(msr(&mut c, &mut regs, true, 0, &mut pat), MsrOutcome::Done);
        assert_eq!(pat, 0x0001_0406);
        regs.0[RAX] = 0x02;
        assert_eq!(msr(&mut c, &mut regs, true, 0, &mut pat), MsrOutcome::Gp, "type 2 is reserved");
        regs.0[RCX] = policy::XEN_HYPERCALL_MSR as u64;
        regs.0[RAX] = 0x7000;
        assert_eq!(msr(&mut c, &mut regs, true, 0, &mut pat), MsrOutcome::Done);
        assert_eq!(c.hypercall_page, Some(0x7000));
        regs.0[RCX] = policy::MSR_EFER as u64;
        regs.0[RAX] = policy::EFER_LME;
        assert_eq!(msr(&mut c, &mut regs, true, 0, &mut pat), MsrOutcome::Efer(policy::EFER_LME));
    }

    #[test]
    fn ports_print_read_all_ones_and_power_off() {
        let (mut c, mut regs, mut p) = (ctx(), Gprs::default(), Lines::default());
        for b in b"hi\n" {
            regs.0[RAX] = *b as u64;
            assert_eq!(port_io(&mut c, &mut regs, policy::DEBUG_PORT, 1, false, &mut p), PortAction::None);
        }
        assert_eq!(p.0, ["(d1) hi"]);
        regs.0[RAX] = 0x1234_0000;
        port_io(&mut c, &mut regs, 0x71, 2, true, &mut p);
        assert_eq!(regs.0[RAX], 0x1234_ffff);
        regs.0[RAX] = (1 << 5) | (5 << 2);
        let out = port_io(&mut c, &mut regs, policy::ACPI_SLEEP_CONTROL_PORT, 2, false, &mut p);
        assert_eq!(out, PortAction::PowerOff);
    }

    /// A host with XSAVE offering x87, SSE and AVX.
    struct AvxHost;

    impl Platform for AvxHost {
        fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
            match (leaf, sub) {
                (0, _) => [0xd, 0, 0, 0],
                (1, _) => [0, 0, (1 << 26) | (1 << 28), 0],
                (0xd, 0) => [0x7, 0x240, 0x340, 0],
                (0xd, 2) => [256, 576, 0, 0],
                _ => [0; 4],
            }
        }
        fn debug_line(&mut self, _domain_id: u16, _line: &str) {}
        fn report(&mut self, _args: core::fmt::Arguments) {}
    }

    #[test]
    fn xsetbv_sets_the_vcpus_xcr0_and_cpuid_follows_it() {
        const OSXSAVE: u64 = 1 << 18;
        let (mut c, mut regs) = (ctx(), Gprs::default());
        assert_eq!(c.xcr0, 1, "reset: x87 only");
        regs.0[RAX] = 0x7;
        assert_eq!(xsetbv(&mut c, &regs, 0, 0, &AvxHost), XsetbvOutcome::Ud, "CR4.OSXSAVE clear");
        assert_eq!(xsetbv(&mut c, &regs, 3, OSXSAVE, &AvxHost), XsetbvOutcome::Gp, "user space");
        regs.0[RCX] = 1;
        assert_eq!(xsetbv(&mut c, &regs, 0, OSXSAVE, &AvxHost), XsetbvOutcome::Gp, "XCR1");
        regs.0[RCX] = 0;
        regs.0[RAX] = 0xe7;
        assert_eq!(xsetbv(&mut c, &regs, 0, OSXSAVE, &AvxHost), XsetbvOutcome::Gp, "AVX-512 not offered");
        assert_eq!(c.xcr0, 1);
        regs.0[RAX] = 0x7;
        assert_eq!(xsetbv(&mut c, &regs, 0, OSXSAVE, &AvxHost), XsetbvOutcome::Done);
        assert_eq!(c.xcr0, 0x7);
        // CPUID.(0xD,0).EBX is the area size for the XCR0 just set; leaf 1 shows OSXSAVE.
        regs.0[RAX] = 0xd;
        regs.0[RCX] = 0;
        cpuid(&c, &mut regs, OSXSAVE, &AvxHost);
        assert_eq!((regs.0[RAX], regs.0[RBX], regs.0[RCX]), (0x7, 0x340, 0x340));
        regs.0[RAX] = 1;
        cpuid(&c, &mut regs, OSXSAVE, &AvxHost);
        assert_ne!(regs.0[RCX] & (1 << 27), 0);
    }

    #[test]
    fn the_xen_timer_fires_once_and_deadlines_combine() {
        let mut t = Timers::default();
        assert_eq!(t.next_deadline(), None);
        t.set_xen(Some(100));
        t.set_preemption(Some(50));
        assert_eq!(t.next_deadline(), Some(50));
        assert!(!t.poll(60) && t.preempt_due(60) && !t.pending(60));
        assert!(t.pending(100));
        assert!(t.poll(100));
        assert_eq!((t.xen_deadline(), t.next_deadline()), (None, Some(50)));
        assert!(t.take_fired(101));
        assert!(!t.take_fired(102) && !t.pending(102));
    }
}
