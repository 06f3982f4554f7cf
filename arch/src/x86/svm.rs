//! AMD-V exits: from a VMCB the CPU wrote at #VMEXIT to the [`Exit`] the core sees.
//!
//! Pure logic over a [`Vmcb`] and the guest's [`Gprs`], so every exit the backend handles is
//! decoded on the host from recorded VMCB bytes (tests below). The bare-metal backend
//! (`x86_64::svm`) only runs VMRUN around it.
//!
//! Without the NRIPS feature (QEMU's TCG has none) the CPU does not say where the intercepted
//! instruction ends; the handled instructions have fixed encodings without prefixes in the
//! guests we run (CPUID 0F A2, HLT F4, VMMCALL 0F 01 D9, RDMSR/WRMSR 0F 32/0F 30), and I/O
//! exits carry the next RIP in EXITINFO2.
//!
//! VMCALL (Intel's hypercall) on AMD is not intercepted: the CPU raises #UD in the guest, as
//! on hardware without VT-x. Guests pick VMMCALL from the CPUID vendor, as Linux does.

use super::guest::{self, MsrOutcome, XsetbvOutcome};
pub use super::guest::{ExitContext, Injected, Platform};
use super::mmio::CpuMode;
use super::policy::{self, Gprs, PortAction, RAX, RSP};
use super::vmcb::{Vmcb, attrib, event, exit, ioio};
use crate::exit::{Exit, FaultKind, GuestFault};

/// EFER.SVME: must stay set in the guest's EFER for VMRUN, never shown to the guest.
pub const EFER_SVME: u64 = 1 << 12;

/// Instruction lengths used when the CPU gives no next RIP.
const LEN_CPUID: u64 = 2;
const LEN_HLT: u64 = 1;
const LEN_VMMCALL: u64 = 3;
const LEN_MSR: u64 = 2;
const LEN_XSETBV: u64 = 3;

const UD: u8 = 6;
const GP: u8 = 13;

/// Before VMRUN: hand the most urgent pending interrupt to the CPU as V_IRQ, which it
/// delivers once the guest's IF and interrupt shadow allow. One at a time.
pub fn inject_interrupts(vmcb: &mut Vmcb, ctx: &mut ExitContext) {
    use super::vmcb::vintr;
    if ctx.inflight.is_some() || vmcb.control.event_inj & event::VALID != 0 {
        return;
    }
    let Some((src, vector)) = ctx.next_interrupt() else {
        vmcb.control.v_intr &= !vintr::V_IRQ;
        return;
    };
    raise_virtual_interrupt(vmcb, vector);
    ctx.inflight = Some(src);
}

/// After #VMEXIT: a V_IRQ the CPU cleared was taken by the guest.
pub fn note_delivery(vmcb: &Vmcb, ctx: &mut ExitContext) {
    use super::vmcb::vintr;
    if vmcb.control.v_intr & vintr::V_IRQ != 0 {
        return;
    }
    if let Some(src) = ctx.inflight.take() {
        ctx.delivered(src);
    }
}

/// Before VMRUN: the registers the CPU takes from the VMCB rather than from our assembly.
pub fn before_run(vmcb: &mut Vmcb, regs: &Gprs) {
    vmcb.save.rax = regs.0[RAX];
    vmcb.save.rsp = regs.0[RSP];
    // We do not track which fields changed: have the CPU reload all of them.
    vmcb.control.vmcb_clean = 0;
}

/// After #VMEXIT: take RAX/RSP back, and requeue an event whose delivery the exit cut short
/// (a nested page fault while the guest's IDT was read, say) so the guest still receives it.
pub fn after_exit(vmcb: &mut Vmcb, regs: &mut Gprs) {
    regs.0[RAX] = vmcb.save.rax;
    regs.0[RSP] = vmcb.save.rsp;
    vmcb.control.event_inj = 0;
    if vmcb.control.exit_int_info & event::VALID != 0 {
        vmcb.control.event_inj = vmcb.control.exit_int_info;
    }
}

/// 64-bit mode: EFER.LMA and a long code segment.
pub fn in_long_mode(vmcb: &Vmcb) -> bool {
    vmcb.save.efer & policy::EFER_LMA != 0 && vmcb.save.cs.attrib & attrib::LONG != 0
}

/// Decide on the exit recorded in `vmcb`: `None` resumes the guest (its state updated),
/// `Some` goes to the core.
pub fn handle_exit(vmcb: &mut Vmcb, regs: &mut Gprs, ctx: &mut ExitContext, p: &mut impl Platform) -> Option<Exit> {
    let code = vmcb.control.exit_code;
    match code {
        exit::INTR => Some(Exit::Preempted),
        // Host NMIs and INITs: nothing of ours sends them yet; the guest goes on.
        exit::NMI | exit::INIT => None,
        exit::CPUID => {
            guest::cpuid(ctx, regs, vmcb.save.cr4, p);
            advance(vmcb, ctx, LEN_CPUID);
            None
        }
        exit::HLT => {
            advance(vmcb, ctx, LEN_HLT);
            Some(Exit::Halt)
        }
        exit::VMMCALL => {
            advance(vmcb, ctx, LEN_VMMCALL);
            policy::hypercall(regs, vmcb.save.cpl, in_long_mode(vmcb)).map(Exit::Hypercall)
        }
        exit::XSETBV => {
            match guest::xsetbv(ctx, regs, vmcb.save.cpl, vmcb.save.cr4, p) {
                XsetbvOutcome::Done => advance(vmcb, ctx, LEN_XSETBV),
                XsetbvOutcome::Ud => inject(vmcb, event::exception(UD, None)),
                XsetbvOutcome::Gp => inject(vmcb, event::exception(GP, Some(0))),
            }
            None
        }
        exit::IOIO => io(vmcb, regs, ctx, p),
        exit::MSR => {
            let before = ctx.msrs.lapic.mode();
            let exit = msr(vmcb, regs, ctx);
            guest::report_apic_mode(ctx, before, p);
            exit
        }
        exit::NPF => {
            let gpa = vmcb.control.exit_info2;
            match apic_mmio(vmcb, regs, ctx, gpa, p) {
                guest::ApicAccess::Done { len } => {
                    set_rip(vmcb, vmcb.save.rip.wrapping_add(len));
                    return None;
                }
                guest::ApicAccess::Undecodable => return Some(fault(vmcb, FaultKind::UnhandledTrap, gpa, code)),
                guest::ApicAccess::NotApic => {}
            }
            if ctx.ram.contains(gpa) {
                return Some(fault(vmcb, FaultKind::UnhandledTrap, gpa, vmcb.control.exit_info1));
            }
            match unclaimed_mmio(vmcb, regs, ctx, gpa, p) {
                Some(len) => {
                    set_rip(vmcb, vmcb.save.rip.wrapping_add(len));
                    None
                }
                None => Some(fault(vmcb, FaultKind::UnmappedGuestPhysical, gpa, vmcb.control.exit_info1)),
            }
        }
        exit::SHUTDOWN => Some(fault(vmcb, FaultKind::FatalState, 0, code)),
        // SVM is hidden from the guest (its EFER.SVME reads 0), so these are #UD as on a CPU
        // with SVM disabled.
        exit::VMRUN | exit::VMLOAD | exit::VMSAVE | exit::STGI | exit::CLGI | exit::SKINIT => {
            inject(vmcb, event::exception(UD, None));
            None
        }
        exit::INVALID => {
            p.report(format_args!("d{}v{}: VMRUN refused the guest state", ctx.domain_id, ctx.vcpu_id));
            Some(fault(vmcb, FaultKind::FatalState, 0, code))
        }
        _ => Some(fault(vmcb, FaultKind::UnhandledTrap, 0, code)),
    }
}

/// A nested page fault on the xAPIC page: the instruction at CS:RIP is fetched, decoded and
/// carried out on the vLAPIC (no decode assists needed).
fn apic_mmio(
    vmcb: &Vmcb,
    regs: &mut Gprs,
    ctx: &mut ExitContext,
    gpa: u64,
    p: &mut impl Platform,
) -> guest::ApicAccess {
    let long = in_long_mode(vmcb);
    let mode = CpuMode::from_cs(long, vmcb.save.cs.attrib & attrib::DB != 0);
    let linear = if long { vmcb.save.rip } else { vmcb.save.cs.base.wrapping_add(vmcb.save.rip) & 0xffff_ffff };
    guest::apic_mmio(ctx, regs, gpa, linear, mode, p)
}

/// A nested page fault where nothing is: completed as Xen's null handler does.
fn unclaimed_mmio(vmcb: &Vmcb, regs: &mut Gprs, ctx: &mut ExitContext, gpa: u64, p: &mut impl Platform) -> Option<u64> {
    let long = in_long_mode(vmcb);
    let mode = CpuMode::from_cs(long, vmcb.save.cs.attrib & attrib::DB != 0);
    let linear = if long { vmcb.save.rip } else { vmcb.save.cs.base.wrapping_add(vmcb.save.rip) & 0xffff_ffff };
    guest::unclaimed_mmio(ctx, regs, gpa, linear, mode, p)
}

fn fault(vmcb: &Vmcb, kind: FaultKind, gpa: u64, syndrome: u64) -> Exit {
    Exit::Fault(GuestFault { kind, gpa, pc: vmcb.save.rip, syndrome })
}

/// Queue an event for the next VMRUN (replacing a requeued one: the new one is raised by
/// the instruction that exited, before anything it interrupted could be delivered).
fn inject(vmcb: &mut Vmcb, ev: u64) {
    vmcb.control.event_inj = ev;
}

/// Step over the intercepted instruction of `len` bytes; it no longer blocks interrupts.
fn advance(vmcb: &mut Vmcb, ctx: &ExitContext, len: u64) {
    let next = if ctx.nrip { vmcb.control.next_rip } else { vmcb.save.rip.wrapping_add(len) };
    set_rip(vmcb, next);
}

fn set_rip(vmcb: &mut Vmcb, rip: u64) {
    vmcb.save.rip = if in_long_mode(vmcb) { rip } else { rip & 0xffff_ffff };
    vmcb.control.interrupt_shadow &= !1;
}

/// IOIO: EXITINFO1 has direction, size and port; EXITINFO2 the next RIP.
fn io(vmcb: &mut Vmcb, regs: &mut Gprs, ctx: &mut ExitContext, p: &mut impl Platform) -> Option<Exit> {
    let info = vmcb.control.exit_info1;
    if info & (ioio::STRING | ioio::REP) != 0 {
        return Some(fault(vmcb, FaultKind::UnhandledTrap, 0, exit::IOIO | info << 16));
    }
    let size = ((info >> ioio::SIZE_SHIFT) & 7) as u8;
    let port = (info >> ioio::PORT_SHIFT) as u16;
    let action = guest::port_io(ctx, regs, port, size, info & ioio::IN != 0, p);
    set_rip(vmcb, vmcb.control.exit_info2);
    (action == PortAction::PowerOff).then_some(Exit::PowerOff)
}

/// RDMSR (EXITINFO1 = 0) / WRMSR (1) through the shared policy; #GP for what it refuses.
fn msr(vmcb: &mut Vmcb, regs: &mut Gprs, ctx: &mut ExitContext) -> Option<Exit> {
    let efer = vmcb.save.efer & !EFER_SVME;
    match guest::msr(ctx, regs, vmcb.control.exit_info1 != 0, efer, &mut vmcb.save.g_pat) {
        MsrOutcome::Done => advance(vmcb, ctx, LEN_MSR),
        MsrOutcome::Efer(v) => {
            vmcb.save.efer = v | EFER_SVME;
            advance(vmcb, ctx, LEN_MSR);
        }
        MsrOutcome::Gp => inject(vmcb, event::exception(GP, Some(0))),
    }
    None
}

/// Raise virtual interrupt `vector` (V_IRQ): the CPU delivers it when the guest's IF allows.
pub fn raise_virtual_interrupt(vmcb: &mut Vmcb, vector: u8) {
    use super::vmcb::vintr;
    vmcb.control.v_intr |= vintr::V_IRQ | vintr::V_IGN_TPR | (0xf << vintr::PRIO_SHIFT);
    vmcb.control.v_intr_vector = vector as u32;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::exit::HypercallArgs;
    use crate::x86::policy::{R8, R10, RBX, RCX, RDI, RDX, RSI, RamRange};
    use std::boxed::Box;
    use std::format;
    use std::string::String;
    use std::vec::Vec;

    #[derive(Default)]
    struct Recorder {
        lines: Vec<String>,
        reports: Vec<String>,
        /// The guest's code at the faulting RIP, and the linear address it was asked for at.
        code: Vec<u8>,
        fetched_at: Option<u64>,
    }

    impl Platform for Recorder {
        fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
            match leaf {
                0 => [0x10, u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"cAMD"), u32::from_le_bytes(*b"enti")],
                // XSAVE (ECX bit 26) with x87 and SSE state.
                1 => [0x00a0_0f11, 0x0000_0800, 0x8400_0021, 0x0789_3bfd],
                0xd if sub == 0 => [0x3, 0x240, 0x240, 0],
                _ => [0; 4],
            }
        }
        fn debug_line(&mut self, domain_id: u16, line: &str) {
            self.lines.push(format!("(d{domain_id}) {line}"));
        }
        fn report(&mut self, args: core::fmt::Arguments) {
            self.reports.push(format!("{args}"));
        }
        fn fetch_code(&mut self, linear: u64, buf: &mut [u8]) -> usize {
            self.fetched_at = Some(linear);
            let n = self.code.len().min(buf.len());
            buf[..n].copy_from_slice(&self.code[..n]);
            n
        }
    }

    fn ctx() -> ExitContext {
        ExitContext::new(RamRange { base: 0, size: 64 << 20 }, 1, 0, false)
    }

    /// A VMCB as the CPU leaves it at #VMEXIT, written byte by byte at the APM's offsets (so
    /// the decoding is checked independently of the struct layout).
    struct Recorded([u8; 4096]);

    impl Recorded {
        /// A 64-bit guest at CPL 0 (EFER = LME|LMA|SVME, CS long) at `rip`.
        fn long_mode(code: u64, info1: u64, info2: u64, rip: u64) -> Self {
            let mut r = Recorded([0; 4096]);
            r.put(0x70, code).put(0x78, info1).put(0x80, info2).put(0x578, rip);
            r.put(0x4d0, 0x1500).put16(0x412, 0xa9b).put16(0x410, 0x08);
            r
        }
        /// The PVH start state: 32-bit flat protected mode, EFER = SVME.
        fn protected_mode(code: u64, info1: u64, info2: u64, rip: u64) -> Self {
            let mut r = Recorded([0; 4096]);
            r.put(0x70, code).put(0x78, info1).put(0x80, info2).put(0x578, rip);
            r.put(0x4d0, EFER_SVME).put16(0x412, attrib::CODE32);
            r
        }
        fn put(&mut self, off: usize, v: u64) -> &mut Self {
            self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn put16(&mut self, off: usize, v: u16) -> &mut Self {
            self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn vmcb(&self) -> Box<Vmcb> {
            Box::new(Vmcb::from_bytes(&self.0))
        }
    }

    /// Decode one recorded exit with guest RAX in the VMCB and the other registers in `regs`.
    fn decode(rec: &Recorded, rax: u64, regs: &mut Gprs, c: &mut ExitContext) -> (Option<Exit>, Box<Vmcb>, Recorder) {
        let mut rec = Recorded(rec.0);
        rec.put(0x5f8, rax);
        let mut vmcb = rec.vmcb();
        let mut p = Recorder::default();
        after_exit(&mut vmcb, regs);
        let exit = handle_exit(&mut vmcb, regs, c, &mut p);
        (exit, vmcb, p)
    }

    #[test]
    fn vmmcall_is_a_hypercall_with_xen_registers_and_rip_plus_3() {
        let mut regs = Gprs::default();
        for (n, v) in [(RDI, 1), (RSI, 2), (RDX, 3), (R10, 4), (R8, 5)] {
            regs.0[n] = v;
        }
        let rec = Recorded::long_mode(0x81, 0, 0, 0x10_2000);
        let (e, vmcb, _) = decode(&rec, 17, &mut regs, &mut ctx());
        assert_eq!(e, Some(Exit::Hypercall(HypercallArgs { nr: 17, args: [1, 2, 3, 4, 5], compat: false })));
        assert_eq!(vmcb.save.rip, 0x10_2003);
        // The result goes back through RAX, which the next VMRUN takes from the VMCB.
        let mut vmcb = vmcb;
        regs.0[RAX] = policy::hypercall_result((-38i64) as u64, in_long_mode(&vmcb));
        before_run(&mut vmcb, &regs);
        assert_eq!(vmcb.save.rax, (-38i64) as u64);
    }

    #[test]
    fn vmmcall_from_user_space_gets_eperm_and_no_exit() {
        let mut rec = Recorded::long_mode(0x81, 0, 0, 0x40_0000);
        rec.0[0x4cb] = 3;
        let mut regs = Gprs::default();
        let (e, vmcb, _) = decode(&rec, 17, &mut regs, &mut ctx());
        assert_eq!(e, None);
        assert_eq!(regs.0[RAX], u64::MAX);
        assert_eq!(vmcb.save.rip, 0x40_0003);
    }

    #[test]
    fn vmmcall_in_32_bit_mode_uses_ebx_ecx_edx_esi_edi() {
        let mut regs = Gprs::default();
        for (n, v) in [(RBX, 0x1_0000_0001), (RCX, 2), (RDX, 3), (RSI, 4), (RDI, 5)] {
            regs.0[n] = v;
        }
        let rec = Recorded::protected_mode(0x81, 0, 0, 0x10_0ffe);
        let (e, vmcb, _) = decode(&rec, 0xffff_ffff_0000_0011, &mut regs, &mut ctx());
        assert_eq!(e, Some(Exit::Hypercall(HypercallArgs { nr: 0x11, args: [1, 2, 3, 4, 5], compat: true })));
        assert_eq!(vmcb.save.rip, 0x10_1001);
    }

    #[test]
    fn nrip_is_used_when_the_cpu_provides_it() {
        let mut rec = Recorded::long_mode(0x81, 0, 0, 0x10_2000);
        rec.put(0xc8, 0x10_2004);
        let mut c = ctx();
        c.nrip = true;
        let (_, vmcb, _) = decode(&rec, 0, &mut Gprs::default(), &mut c);
        assert_eq!(vmcb.save.rip, 0x10_2004);
    }

    #[test]
    fn cpuid_is_answered_by_the_shared_policy_and_skipped() {
        let mut regs = Gprs::default();
        let rec = Recorded::long_mode(0x72, 0, 0, 0x10_0040);
        let (e, vmcb, _) = decode(&rec, 0x4000_0000, &mut regs, &mut ctx());
        assert_eq!(e, None);
        assert_eq!(vmcb.save.rip, 0x10_0042);
        assert_eq!(regs.0[RAX], policy::XEN_CPUID_MAX as u64);
        assert_eq!(regs.0[RBX], u32::from_le_bytes(*b"XenV") as u64);
        let (_, vmcb, _) = decode(&rec, 1, &mut regs, &mut ctx());
        assert_eq!(regs.0[RCX] as u32 & (1 << 31), 1 << 31);
        // RAX the guest sees next comes from the VMCB.
        let mut vmcb = vmcb;
        before_run(&mut vmcb, &regs);
        assert_eq!(vmcb.save.rax, 0x00a0_0f11);
    }

    #[test]
    fn xsetbv_sets_the_vcpus_xcr0_or_raises_the_sdms_exception() {
        const OSXSAVE: u64 = 1 << 18;
        let mut rec = Recorded::long_mode(exit::XSETBV, 0, 0, 0x10_0200);
        let (mut c, mut regs) = (ctx(), Gprs::default());
        // CR4.OSXSAVE clear: #UD, the instruction does not retire.
        let (e, vmcb, _) = decode(&rec, 0x3, &mut regs, &mut c);
        assert_eq!((e, vmcb.save.rip, vmcb.control.event_inj), (None, 0x10_0200, event::exception(UD, None)));
        rec.put(0x548, OSXSAVE);
        let (_, vmcb, _) = decode(&rec, 0x7, &mut regs, &mut c);
        assert_eq!(vmcb.control.event_inj, event::exception(GP, Some(0)), "AVX is not offered by this host");
        assert_eq!(c.xcr0, 1);
        let (e, vmcb, _) = decode(&rec, 0x3, &mut regs, &mut c);
        assert_eq!((e, vmcb.save.rip, vmcb.control.event_inj), (None, 0x10_0203, 0));
        assert_eq!(c.xcr0, 0x3);
    }

    #[test]
    fn hlt_halts_past_the_instruction() {
        let rec = Recorded::protected_mode(0x78, 0, 0, 0x10_0100);
        let (e, vmcb, _) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
        assert_eq!(e, Some(Exit::Halt));
        assert_eq!(vmcb.save.rip, 0x10_0101);
    }

    #[test]
    fn io_out_to_e9_prints_and_in_reads_all_ones() {
        let mut c = ctx();
        let mut regs = Gprs::default();
        let mut lines = Vec::new();
        // OUT DX, AL to 0xE9: size bit 4 (8-bit), A16; next RIP in EXITINFO2.
        for (i, b) in b"ok\n".iter().enumerate() {
            let rip = 0x10_0000 + i as u64;
            let rec = Recorded::protected_mode(0x7b, (0xe9 << 16) | (1 << 4) | (1 << 7), rip + 1, rip);
            let (e, vmcb, p) = decode(&rec, *b as u64, &mut regs, &mut c);
            assert_eq!(e, None);
            assert_eq!(vmcb.save.rip, rip + 1);
            lines.extend(p.lines);
        }
        assert_eq!(lines, ["(d1) ok"]);
        // IN EAX, DX from port 0x3f8: 32-bit, all ones, zero-extended.
        let rec = Recorded::long_mode(0x7b, (0x3f8 << 16) | (1 << 6) | 1, 0x20_0001, 0x20_0000);
        let (e, vmcb, _) = decode(&rec, 0xdead_0000_0000_0000, &mut regs, &mut c);
        assert_eq!(e, None);
        assert_eq!((regs.0[RAX], vmcb.save.rip), (0xffff_ffff, 0x20_0001));
        // IN AL: only the low byte.
        let rec = Recorded::long_mode(0x7b, (0x60 << 16) | (1 << 4) | 1, 0x20_0002, 0x20_0000);
        decode(&rec, 0x1234_5600, &mut regs, &mut c);
        assert_eq!(regs.0[RAX], 0x1234_56ff);
    }

    #[test]
    fn string_io_is_an_unhandled_trap() {
        let info = (0xe9 << 16) | (1 << 4) | ioio::STRING | ioio::REP;
        let rec = Recorded::long_mode(0x7b, info, 0x20_0002, 0x20_0000);
        let (e, _, _) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
        let Some(Exit::Fault(f)) = e else { panic!("{e:?}") };
        assert_eq!((f.kind, f.syndrome & 0xffff, f.pc), (FaultKind::UnhandledTrap, 0x7b, 0x20_0000));
    }

    #[test]
    fn upcall_and_lapic_vectors_go_through_v_irq_one_at_a_time() {
        use crate::x86::vmcb::vintr;
        let mut c = ctx();
        let mut vmcb = Recorded::long_mode(0x60, 0, 0, 0).vmcb();
        // Raised before the guest chose a vector: held back.
        c.upcall_pending = true;
        inject_interrupts(&mut vmcb, &mut c);
        assert_eq!(vmcb.control.v_intr & vintr::V_IRQ, 0);
        c.upcall_vector = Some(0xf3);
        c.msrs.lapic.post(0xf6);
        // The higher vector first: the LAPIC's 0xf6.
        inject_interrupts(&mut vmcb, &mut c);
        assert_eq!((vmcb.control.v_intr & vintr::V_IRQ, vmcb.control.v_intr_vector), (vintr::V_IRQ, 0xf6));
        // Not yet taken: nothing changes.
        note_delivery(&vmcb, &mut c);
        inject_interrupts(&mut vmcb, &mut c);
        assert_eq!(vmcb.control.v_intr_vector, 0xf6);
        // Taken (the CPU cleared V_IRQ): in service; then the upcall.
        vmcb.control.v_intr &= !vintr::V_IRQ;
        note_delivery(&vmcb, &mut c);
        assert_eq!(c.msrs.lapic.read(0x817), Some(1 << (0xf6 - 0xe0)));
        inject_interrupts(&mut vmcb, &mut c);
        assert_eq!(vmcb.control.v_intr_vector, 0xf3);
        vmcb.control.v_intr &= !vintr::V_IRQ;
        note_delivery(&vmcb, &mut c);
        assert!(!c.upcall_pending);
        assert!(!c.interrupt_pending());
    }

    #[test]
    fn hypercall_page_msr_and_pat_and_apic_msrs() {
        let mut regs = Gprs::default();
        let mut c = ctx();
        regs.0[RCX] = policy::XEN_HYPERCALL_MSR as u64;
        regs.0[policy::RDX] = 0;
        let rec = Recorded::long_mode(0x7c, 1, 0, 0x10_0000);
        let (e, vmcb, _) = decode(&rec, 0x7000, &mut regs, &mut c);
        assert_eq!((e, vmcb.save.rip, c.hypercall_page), (None, 0x10_0002, Some(0x7000)));
        regs.0[RCX] = 0x277;
        let rec = Recorded::long_mode(0x7c, 1, 0, 0x10_0000);
        let (_, vmcb, _) = decode(&rec, 0x0007_0406, &mut regs, &mut c);
        assert_eq!(vmcb.save.g_pat, 0x0007_0406);
        regs.0[RCX] = 0x803;
        let rec = Recorded::long_mode(0x7c, 0, 0, 0x10_0000);
        let _ = decode(&rec, 0, &mut regs, &mut c);
        assert_eq!(regs.0[RAX], 0x50014);
    }

    #[test]
    fn acpi_s5_port_write_powers_off() {
        let mut c = ctx();
        let mut regs = Gprs::default();
        let port = policy::ACPI_SLEEP_CONTROL_PORT as u64;
        let rec = Recorded::long_mode(0x7b, (port << 16) | (1 << 4), 0x10_0002, 0x10_0000);
        let (e, _, _) = decode(&rec, 0x34, &mut regs, &mut c);
        assert_eq!(e, Some(Exit::PowerOff));
    }

    #[test]
    fn msr_efer_hides_svme_and_unknown_msrs_raise_gp() {
        let mut regs = Gprs::default();
        regs.0[RCX] = policy::MSR_EFER as u64;
        // RDMSR EFER in the PVH start state: the guest sees 0, not SVME.
        let rec = Recorded::protected_mode(0x7c, 0, 0, 0x10_0010);
        let (e, vmcb, _) = decode(&rec, 0, &mut regs, &mut ctx());
        assert_eq!((e, regs.0[RAX], regs.0[policy::RDX], vmcb.save.rip), (None, 0, 0, 0x10_0012));
        // WRMSR EFER.LME: stored with SVME kept.
        let rec = Recorded::protected_mode(0x7c, 1, 0, 0x10_0020);
        let (e, vmcb, _) = decode(&rec, policy::EFER_LME, &mut regs, &mut ctx());
        assert_eq!((e, vmcb.save.efer, vmcb.save.rip), (None, policy::EFER_LME | EFER_SVME, 0x10_0022));
        // An MSR the policy does not know (AMD's VM_CR): #GP(0) injected, RIP unchanged.
        regs.0[RCX] = 0xc001_0114;
        let rec = Recorded::long_mode(0x7c, 0, 0, 0x10_0030);
        let (e, vmcb, _) = decode(&rec, 0, &mut regs, &mut ctx());
        assert_eq!((e, vmcb.save.rip), (None, 0x10_0030));
        assert_eq!(vmcb.control.event_inj, event::exception(13, Some(0)));
        // Setting SVME itself is refused too.
        regs.0[RCX] = policy::MSR_EFER as u64;
        let rec = Recorded::long_mode(0x7c, 1, 0, 0x10_0040);
        let (_, vmcb, _) = decode(&rec, EFER_SVME, &mut regs, &mut ctx());
        assert_eq!(vmcb.control.event_inj, event::exception(13, Some(0)));
    }

    #[test]
    fn npf_outside_ram_is_an_unmapped_access_at_exitinfo2() {
        // Read, not present, final translation (bit 32).
        let rec = Recorded::long_mode(0x400, (1 << 32) | 4, 0x8000_0000, 0x10_0345);
        let (e, _, _) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
        let expect = GuestFault {
            kind: FaultKind::UnmappedGuestPhysical,
            gpa: 0x8000_0000,
            pc: 0x10_0345,
            syndrome: (1 << 32) | 4,
        };
        assert_eq!(e, Some(Exit::Fault(expect)));
        // A store the decoder knows is dropped (mov [0x80000000], eax), the guest goes on.
        let mut c = ctx();
        let rec6 = Recorded::long_mode(0x400, (1 << 32) | 6, 0x8000_0000, 0x10_0345);
        let (e, vmcb, _) = decode_with_code(&rec6, &[0x89, 0x04, 0x25, 0, 0, 0, 0x80], &mut Gprs::default(), &mut c);
        assert_eq!((e, vmcb.save.rip), (None, 0x10_034c));
        assert!(c.unclaimed_mmio_seen);
        // Inside RAM (a permission fault we never set up) is not "outside its memory".
        let rec = Recorded::long_mode(0x400, (1 << 32) | 7, 0x10_0000, 0x10_0345);
        let (e, _, _) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
        assert!(matches!(e, Some(Exit::Fault(GuestFault { kind: FaultKind::UnhandledTrap, .. }))));
    }

    /// An NPF decoded with `code` at the guest's RIP.
    fn decode_with_code(
        rec: &Recorded,
        code: &[u8],
        regs: &mut Gprs,
        c: &mut ExitContext,
    ) -> (Option<Exit>, Box<Vmcb>, Recorder) {
        let mut vmcb = rec.vmcb();
        let mut p = Recorder { code: code.into(), ..Default::default() };
        after_exit(&mut vmcb, regs);
        let exit = handle_exit(&mut vmcb, regs, c, &mut p);
        (exit, vmcb, p)
    }

    #[test]
    fn npf_on_the_xapic_page_is_decoded_and_emulated() {
        let mut c = ctx();
        let mut regs = Gprs::default();
        // x2APIC mode (the reset state): the page is not there, nothing is (Xen's null
        // handler): the load reads all ones, and the access is reported once.
        let rec = Recorded::long_mode(0x400, (1 << 32) | 4, 0xfee0_0030, 0x10_0345);
        let (e, vmcb, p) = decode_with_code(&rec, &[0x8b, 0x04, 0x25, 0x30, 0, 0xe0, 0xfe], &mut regs, &mut c);
        assert_eq!((e, vmcb.save.rip, regs.0[RAX]), (None, 0x10_034c, 0xffff_ffff));
        assert_eq!(
            p.reports,
            [
                "d1v0: access at gpa 0xfee00030, outside its memory and devices: reads all ones, writes are dropped (as Xen)"
            ]
        );
        // Linux's nox2apic: disabled, then xAPIC. A 64-bit load of the version register.
        assert!(c.msrs.lapic.set_apic_base(0xfee0_0100) && c.msrs.lapic.set_apic_base(0xfee0_0900));
        regs.0[RAX] = u64::MAX;
        let (e, vmcb, p) = decode_with_code(&rec, &[0x8b, 0x04, 0x25, 0x30, 0, 0xe0, 0xfe], &mut regs, &mut c);
        assert_eq!((e, vmcb.save.rip, regs.0[RAX]), (None, 0x10_034c, 0x5_0014));
        assert_eq!(p.fetched_at, Some(0x10_0345));
        assert_eq!(p.reports, ["d1v0: local APIC used through its xAPIC page"]);
        // 32-bit protected mode, CS based at 0x1000: mov [0xfee00080], eax sets the TPR.
        let mut rec = Recorded::protected_mode(0x400, (1 << 32) | 6, 0xfee0_0080, 0x2000);
        rec.put(0x418, 0x1000).put(0x5f8, 0x20);
        let (e, vmcb, p) = decode_with_code(&rec, &[0xa3, 0x80, 0, 0xe0, 0xfe], &mut regs, &mut c);
        assert_eq!((e, vmcb.save.rip, p.fetched_at), (None, 0x2005, Some(0x3000)));
        assert_eq!(c.msrs.lapic.mmio_read(0x80, 4), 0x20);
        assert!(p.reports.is_empty(), "reported once");
        // An instruction the decoder does not know: the domain's fault, with the address.
        let (e, _, p) = decode_with_code(&rec, &[0x01, 0x00], &mut regs, &mut c);
        assert!(matches!(e, Some(Exit::Fault(GuestFault { kind: FaultKind::UnhandledTrap, gpa: 0xfee0_0080, .. }))));
        assert_eq!(p.reports.len(), 1);
    }

    #[test]
    fn shutdown_is_fatal_intr_preempts_and_the_rest_is_unhandled() {
        let rec = Recorded::protected_mode(0x7f, 0, 0, 0x10_0000);
        let (e, _, _) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
        assert!(matches!(e, Some(Exit::Fault(GuestFault { kind: FaultKind::FatalState, syndrome: 0x7f, .. }))));
        let rec = Recorded::long_mode(0x60, 0, 0, 0x10_0000);
        assert_eq!(decode(&rec, 0, &mut Gprs::default(), &mut ctx()).0, Some(Exit::Preempted));
        for code in [0x61, 0x63] {
            let rec = Recorded::long_mode(code, 0, 0, 0x10_0000);
            assert_eq!(decode(&rec, 0, &mut Gprs::default(), &mut ctx()).0, None);
        }
        // #UD intercepted would be 0x46: we never ask for it, so it is reported, not handled.
        let rec = Recorded::long_mode(0x46, 0, 0, 0x10_0000);
        let (e, _, _) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
        assert!(matches!(e, Some(Exit::Fault(GuestFault { kind: FaultKind::UnhandledTrap, syndrome: 0x46, .. }))));
    }

    #[test]
    fn invalid_guest_state_is_reported_and_fatal() {
        let rec = Recorded::protected_mode(u64::MAX, 0, 0, 0x10_0000);
        let (e, _, p) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
        assert!(matches!(e, Some(Exit::Fault(GuestFault { kind: FaultKind::FatalState, .. }))));
        assert_eq!(p.reports, ["d1v0: VMRUN refused the guest state"]);
    }

    #[test]
    fn svm_instructions_in_the_guest_raise_ud() {
        for code in [0x80, 0x82, 0x83, 0x84, 0x85, 0x86] {
            let rec = Recorded::long_mode(code, 0, 0, 0x10_0000);
            let (e, vmcb, _) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
            assert_eq!((e, vmcb.save.rip), (None, 0x10_0000));
            assert_eq!(vmcb.control.event_inj, event::exception(6, None));
        }
    }

    #[test]
    fn an_interrupted_event_delivery_is_requeued() {
        let mut rec = Recorded::long_mode(0x60, 0, 0, 0x10_0000);
        rec.put(0x88, event::interrupt(0x20));
        let (e, vmcb, _) = decode(&rec, 0, &mut Gprs::default(), &mut ctx());
        assert_eq!(e, Some(Exit::Preempted));
        assert_eq!(vmcb.control.event_inj, event::interrupt(0x20));
    }

    #[test]
    fn virtual_interrupts_set_v_irq_and_the_vector() {
        let mut vmcb = Box::new(Vmcb::zeroed());
        raise_virtual_interrupt(&mut vmcb, 0xf3);
        assert_eq!(vmcb.control.v_intr & (1 << 8), 1 << 8);
        assert_eq!(vmcb.control.v_intr_vector, 0xf3);
    }
}
