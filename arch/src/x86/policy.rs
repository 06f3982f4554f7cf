//! What a PVH guest sees of the machine, the same on VT-x and on SVM.
//!
//! Both backends decode their own exits, then ask here what the instruction does: CPUID
//! answers (host leaves with virtualization hidden, plus Xen's leaves), the hypercall register
//! ABI, the port I/O policy (0xE9 debug console, unclaimed reads all ones) and the MSR policy.
//! Nothing here touches hardware, so all of it is tested on the host.

use crate::exit::HypercallArgs;

/// The Xen version guests read from CPUID 0x40000001 (mirrors the core's `version.rs`).
pub const XEN_VERSION: u32 = (4 << 16) | 17;
/// Highest Xen CPUID leaf we answer.
pub const XEN_CPUID_MAX: u32 = 0x4000_0004;
/// Leaf 0x40000004 EAX: EBX holds the vCPU id (`XEN_HVM_CPUID_VCPU_ID_PRESENT`).
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// MSR through which a guest would ask for a hypercall page (announced in leaf 0x40000002).
pub const XEN_HYPERCALL_MSR: u32 = 0x4000_0000;

pub const MSR_EFER: u32 = 0xc000_0080;
pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;
/// EFER bits a guest may set; anything else is #GP (SVME included: SVM is not offered).
const EFER_GUEST_BITS: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;

/// Guest general-purpose registers, indexed by x86 register number (0 = RAX .. 15 = R15).
/// Each backend's entry/exit assembly depends on this layout; the slots the CPU keeps in its
/// own control structure (RSP on both, RAX on SVM) are synchronised around each exit.
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gprs(pub [u64; 16]);

pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RSI: usize = 6;
pub const RDI: usize = 7;
pub const R8: usize = 8;
pub const R10: usize = 10;

/// One domain's guest-physical RAM range (what nested paging maps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    pub base: u64,
    pub size: u64,
}

impl RamRange {
    pub fn contains(&self, gpa: u64) -> bool {
        gpa.checked_sub(self.base).is_some_and(|off| off < self.size)
    }
}

/// The CPUID answer for `leaf`/`sub`: `host` gives the real CPU's registers [EAX, EBX, ECX, EDX].
/// Virtualization extensions are hidden (we do not nest), "hypervisor present" is set, the
/// initial APIC id is the vCPU's, and leaves 0x40000000.. describe Xen. Vector state
/// (XSAVE, AVX.., leaf 0xD) is offered only as far as the vCPU switch carries it: see
/// [`super::xstate::Layout::cpuid`].
pub fn cpuid(
    leaf: u32,
    sub: u32,
    vcpu_id: u16,
    fpu: (&super::xstate::Layout, super::xstate::GuestView),
    host: impl FnOnce(u32, u32) -> [u32; 4],
) -> [u32; 4] {
    const LEAF1_ECX_VMX: u32 = 1 << 5;
    const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
    const EXT1_ECX_SVM: u32 = 1 << 2;
    const LEAF1_ECX_X2APIC: u32 = 1 << 21;
    const LEAF1_ECX_HIDDEN: u32 = (1 << 3) | (1 << 8) | (1 << 15) | (1 << 24);
    /// ACPI thermal monitor and clock control, TM, and the machine-check architecture (MCE,
    /// MCA): their MSRs are not emulated (a kernel that believed in MCA would read MCG_CAP
    /// and its banks, take #GP, and panic).
    const LEAF1_EDX_HIDDEN: u32 = (1 << 7) | (1 << 14) | (1 << 22) | (1 << 29);
    const LEAF6_EAX_ARAT: u32 = 1 << 2;
    match leaf {
        0x4000_0000 => {
            let sig = b"XenVMMXenVMM";
            let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
            [XEN_CPUID_MAX, word(0), word(4), word(8)]
        }
        0x4000_0001 => [XEN_VERSION, 0, 0, 0],
        0x4000_0002 => [1, XEN_HYPERCALL_MSR, 0, 0],
        0x4000_0004 => [XEN_HVM_CPUID_VCPU_ID_PRESENT, vcpu_id as u32, 0, 0],
        0x4000_0003..=0x4000_00ff => [0; 4],
        // SVM's feature leaf describes an extension the guest cannot use.
        0x8000_000a => [0; 4],
        _ => {
            let [mut a, mut b, mut c, mut d] = host(leaf, sub);
            if leaf == 1 {
                // No MONITOR/MWAIT, TM2, PDCM, TSC-deadline timer or thermal monitor (none is
                // emulated); the x2APIC is (see `vlapic`).
                c = (c & !(LEAF1_ECX_VMX | LEAF1_ECX_HIDDEN)) | LEAF1_ECX_HYPERVISOR | LEAF1_ECX_X2APIC;
                d &= !LEAF1_EDX_HIDDEN;
                b = (b & 0x00ff_ffff) | ((vcpu_id as u32) << 24);
            } else if leaf == 0x8000_0001 {
                c &= !EXT1_ECX_SVM;
            } else if leaf == 6 {
                // Thermal and power management (sensors, HWP, APERF/MPERF, energy-performance
                // bias) has no emulated MSRs: only the always-running APIC timer remains.
                (a, b, c, d) = (a & LEAF6_EAX_ARAT, 0, 0, 0);
            }
            let (layout, guest) = fpu;
            layout.cpuid(leaf, sub, [a, b, c, d], guest)
        }
    }
}

/// Write a CPUID answer into EAX/EBX/ECX/EDX (zero-extended, as the CPU does).
pub fn set_cpuid_result(r: &mut Gprs, v: [u32; 4]) {
    for (n, v) in [(RAX, v[0]), (RBX, v[1]), (RCX, v[2]), (RDX, v[3])] {
        r.0[n] = v as u64;
    }
}

/// A hypercall instruction executed at privilege `cpl`: Xen's registers (64-bit: RAX; RDI RSI
/// RDX R10 R8; 32-bit: EAX; EBX ECX EDX ESI EDI), or `None` when user space tried it, which
/// gets -EPERM in RAX without reaching the core.
pub fn hypercall(r: &mut Gprs, cpl: u8, long_mode: bool) -> Option<HypercallArgs> {
    if cpl != 0 {
        r.0[RAX] = (-1i64) as u64;
        return None;
    }
    let r = &r.0;
    Some(if long_mode {
        HypercallArgs { nr: r[RAX], args: [r[RDI], r[RSI], r[RDX], r[R10], r[R8]], compat: false }
    } else {
        let low = |v: u64| v & 0xffff_ffff;
        HypercallArgs { nr: low(r[RAX]), args: [r[RBX], r[RCX], r[RDX], r[RSI], r[RDI]].map(low), compat: true }
    })
}

/// The hypercall result as RAX holds it: 32-bit guests see EAX only.
pub fn hypercall_result(value: u64, long_mode: bool) -> u64 {
    if long_mode { value } else { value & 0xffff_ffff }
}

/// RAX after an `IN` of `size` bytes from a port nothing claims: all ones. A 32-bit IN
/// zero-extends into RAX; 8/16-bit ones keep the upper bits.
pub fn port_in(size: u8, rax: u64) -> u64 {
    match size {
        1 => rax | 0xff,
        2 => rax | 0xffff,
        _ => 0xffff_ffff,
    }
}

/// Port 0xE9: the debug console, printed a line at a time.
pub const DEBUG_PORT: u16 = 0xe9;

/// Port 0xE9 output collected until a newline.
#[derive(Clone, Debug)]
pub struct DebugPort {
    buf: [u8; 128],
    len: usize,
}

impl Default for DebugPort {
    fn default() -> Self {
        Self { buf: [0; 128], len: 0 }
    }
}

impl DebugPort {
    /// Take one byte; a completed line (newline or full buffer) goes to `emit`. Only
    /// printable ASCII reaches the physical console (no escape sequences).
    pub fn write(&mut self, byte: u8, emit: impl FnOnce(&str)) {
        if byte != b'\n' {
            self.buf[self.len] = if byte == b'\t' || (0x20..0x7f).contains(&byte) { byte } else { b'?' };
            self.len += 1;
        }
        if byte == b'\n' || self.len == self.buf.len() {
            emit(core::str::from_utf8(&self.buf[..self.len]).unwrap_or(""));
            self.len = 0;
        }
    }
}

/// `OUT` of `value` to `port`: only the debug console exists.
pub fn port_out(debug: &mut DebugPort, port: u16, value: u64, emit: impl FnOnce(&str)) {
    if port == DEBUG_PORT {
        debug.write(value as u8, emit);
    }
}

/// RDMSR: the guest-visible value, `None` for #GP. `efer` is what the guest believes EFER is.
pub fn read_msr(index: u32, efer: u64) -> Option<u64> {
    match index {
        MSR_EFER => Some(efer),
        _ => None,
    }
}

/// What a WRMSR the policy accepts changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrWrite {
    /// The guest's new EFER (LMA kept: it is the CPU's to set).
    Efer(u64),
}

/// WRMSR of `value` (EDX:EAX): what to change, `None` for #GP. `efer` is the guest's EFER.
pub fn write_msr(index: u32, value: u64, efer: u64) -> Option<MsrWrite> {
    match index {
        MSR_EFER if value & !EFER_GUEST_BITS == 0 => Some(MsrWrite::Efer((value & !EFER_LMA) | (efer & EFER_LMA))),
        _ => None,
    }
}

/// Port of the ACPI sleep control register the guest's FADT names (`hypervisor::acpi`):
/// writing SLP_EN (bit 5) with sleep type 5 (S5) in bits 4:2 powers the domain off.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x0600;
const ACPI_SLP_EN: u64 = 1 << 5;
const ACPI_SLP_TYP_S5: u64 = 5;

/// What an `OUT` asks of the platform beyond the debug console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAction {
    None,
    PowerOff,
}

/// `OUT` of `value` to `port`, with the ACPI sleep control register.
pub fn port_out_action(debug: &mut DebugPort, port: u16, value: u64, emit: impl FnOnce(&str)) -> PortAction {
    if port == ACPI_SLEEP_CONTROL_PORT {
        let s5 = value & ACPI_SLP_EN != 0 && (value >> 2) & 7 == ACPI_SLP_TYP_S5;
        return if s5 { PortAction::PowerOff } else { PortAction::None };
    }
    port_out(debug, port, value, emit);
    PortAction::None
}

/// The hypercall page: slot `i` (32 bytes) is `mov eax, i; vmcall|vmmcall; ret`, the rest
/// `int3`. `vmmcall` selects AMD's instruction.
pub fn hypercall_page(vmmcall: bool) -> [u8; 4096] {
    let mut page = [0xccu8; 4096];
    let insn: [u8; 3] = if vmmcall { [0x0f, 0x01, 0xd9] } else { [0x0f, 0x01, 0xc1] };
    for (i, slot) in page.chunks_exact_mut(32).enumerate() {
        slot[0] = 0xb8;
        slot[1..5].copy_from_slice(&(i as u32).to_le_bytes());
        slot[5..8].copy_from_slice(&insn);
        slot[8] = 0xc3;
    }
    page
}

/// MSRs the guest reads and writes without an exit, each vCPU with its own values (the
/// backend switches them): FS/GS/kernel-GS base, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_CS/ESP/EIP,
/// and TSC_AUX (RDTSCP's value). The hypervisor never uses them itself.
pub const GUEST_OWNED_MSRS: [u32; 11] = [
    0xc000_0100,
    0xc000_0101,
    0xc000_0102,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0x174,
    0x175,
    0x176,
    0xc000_0103,
];

/// MSRs whose reads answer with a constant and whose writes are accepted and dropped:
/// IA32_PLATFORM_ID, the microcode patch level, MISC_ENABLE, MTRRcap (no variable or fixed
/// ranges), PRED_CMD, FLUSH_CMD, AMD's HWCR, TSC_ADJUST (the TSC is never adjusted).
const QUIET_MSRS: [(u32, u64); 8] =
    [(0x17, 0), (0x8b, 0), (0x1a0, 0), (0xfe, 0), (0x49, 0), (0x10b, 0), (0xc001_0015, 0), (0x3b, 0)];
const MSR_SPEC_CTRL: u32 = 0x48;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_DEBUGCTL: u32 = 0x1d9;

/// Per-vCPU MSR state the policy emulates (beyond what the VMCS/VMCB holds).
#[derive(Clone, Debug)]
pub struct GuestMsrs {
    pub lapic: super::vlapic::VLapic,
    spec_ctrl: u64,
    /// MTRRs enabled, default type write-back.
    mtrr_def_type: u64,
    debugctl: u64,
}

impl GuestMsrs {
    pub fn new(vcpu_id: u16) -> Self {
        GuestMsrs { lapic: super::vlapic::VLapic::new(vcpu_id.into()), spec_ctrl: 0, mtrr_def_type: 0xc06, debugctl: 0 }
    }
}

/// What a WRMSR through [`write_msr_state`] asks the backend to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrEffect {
    /// Nothing beyond the state the policy keeps.
    Done,
    /// The guest's new EFER.
    Efer(u64),
    /// Write the hypercall page at this guest-physical address.
    HypercallPage(u64),
}

/// RDMSR with the emulated MSRs; `None` for #GP.
pub fn read_msr_state(m: &GuestMsrs, index: u32, efer: u64) -> Option<u64> {
    use super::vlapic::{MSR_APIC_BASE, X2APIC_FIRST, X2APIC_LAST};
    if let Some(&(_, v)) = QUIET_MSRS.iter().find(|(i, _)| *i == index) {
        return Some(v);
    }
    match index {
        MSR_APIC_BASE => Some(m.lapic.apic_base()),
        X2APIC_FIRST..=X2APIC_LAST => m.lapic.read(index),
        MSR_SPEC_CTRL => Some(m.spec_ctrl),
        MSR_MTRR_DEF_TYPE => Some(m.mtrr_def_type),
        MSR_DEBUGCTL => Some(m.debugctl),
        _ => read_msr(index, efer),
    }
}

/// WRMSR with the emulated MSRs; `None` for #GP.
pub fn write_msr_state(m: &mut GuestMsrs, index: u32, value: u64, efer: u64) -> Option<MsrEffect> {
    use super::vlapic::{MSR_APIC_BASE, X2APIC_FIRST, X2APIC_LAST};
    if QUIET_MSRS.iter().any(|(i, _)| *i == index) {
        return Some(MsrEffect::Done);
    }
    match index {
        // Mode changes as the SDM allows them (`VLapic::set_apic_base`); the rest is #GP.
        MSR_APIC_BASE => m.lapic.set_apic_base(value).then_some(MsrEffect::Done),
        X2APIC_FIRST..=X2APIC_LAST => m.lapic.write(index, value).then_some(MsrEffect::Done),
        MSR_SPEC_CTRL => {
            m.spec_ctrl = value;
            Some(MsrEffect::Done)
        }
        MSR_MTRR_DEF_TYPE => {
            m.mtrr_def_type = value & 0xcff;
            Some(MsrEffect::Done)
        }
        MSR_DEBUGCTL => {
            m.debugctl = value;
            Some(MsrEffect::Done)
        }
        // Page index 0 only (leaf 0x40000002 announces one page).
        XEN_HYPERCALL_MSR if value & 0xfff == 0 => Some(MsrEffect::HypercallPage(value)),
        _ => match write_msr(index, value, efer)? {
            MsrWrite::Efer(v) => Some(MsrEffect::Efer(v)),
        },
    }
}

/// A PAT value: every entry one of UC, WC, WT, WP, WB, UC- (0, 1, 4, 5, 6, 7).
pub fn valid_pat(pat: u64) -> bool {
    pat.to_le_bytes().iter().all(|&t| matches!(t, 0 | 1 | 4..=7))
}

/// EDX:EAX of a RDMSR result.
pub fn set_msr_result(r: &mut Gprs, value: u64) {
    r.0[RAX] = value & 0xffff_ffff;
    r.0[RDX] = value >> 32;
}

/// The value a WRMSR writes (EDX:EAX).
pub fn msr_value(r: &Gprs) -> u64 {
    (r.0[RDX] << 32) | (r.0[RAX] & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    /// The policy's answer on `host`, for a vCPU in its reset state.
    fn cpuid(leaf: u32, sub: u32, vcpu_id: u16, host: fn(u32, u32) -> [u32; 4]) -> [u32; 4] {
        let layout = super::super::xstate::Layout::from_cpuid(host);
        super::cpuid(leaf, sub, vcpu_id, (&layout, Default::default()), host)
    }

    fn fake_host(leaf: u32, _sub: u32) -> [u32; 4] {
        match leaf {
            1 => [0x806f8, 0x0a00_0800, 0x7ffa_3223, 0x0f8b_fbff],
            0x8000_0001 => [0, 0, 0x0000_0025, 0x2c10_0800],
            _ => [leaf, 2, 3, 4],
        }
    }

    #[test]
    fn cpuid_hides_vmx_and_svm_and_announces_xen() {
        let l1 = cpuid(1, 0, 3, fake_host);
        assert_eq!(l1[2] & (1 << 5), 0);
        assert_ne!(l1[2] & (1 << 31), 0);
        assert_eq!(l1[1] >> 24, 3);
        assert_eq!(cpuid(0x8000_0001, 0, 0, fake_host)[2], 0x21);
        assert_eq!(cpuid(0x8000_000a, 0, 0, fake_host), [0; 4]);
        let sig = cpuid(0x4000_0000, 0, 0, fake_host);
        let bytes: Vec<u8> = sig[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&bytes, b"XenVMMXenVMM");
        assert_eq!(sig[0], XEN_CPUID_MAX);
        assert_eq!(cpuid(0x4000_0001, 0, 0, fake_host)[0], XEN_VERSION);
        // Leaf 7 passes through, but for AVX512_VBMI (ECX bit 1) and AVX512_4VNNIW (EDX
        // bit 2): this host offers no AVX-512 state (`xstate`).
        assert_eq!(cpuid(7, 0, 0, fake_host), [7, 2, 1, 0]);
    }

    #[test]
    fn cpuid_hides_thermal_and_power_management() {
        // Leaf 1 EDX: MCE (7), MCA (14), ACPI (22) and TM (29) gone, the rest kept; ECX: TM2
        // (8) gone.
        let l1 = cpuid(1, 0, 0, fake_host);
        assert_eq!(l1[3], 0x0f8b_fbff & !((1 << 7) | (1 << 14) | (1 << 22) | (1 << 29)));
        assert_eq!(l1[2] & (1 << 8), 0);
        // Leaf 6: only ARAT (EAX bit 2) survives.
        assert_eq!(cpuid(6, 0, 0, |_, _| [0x77, 2, 0x9, 4]), [0x4, 0, 0, 0]);
        assert_eq!(read_msr_state(&GuestMsrs::new(0), 0x3b, 0), Some(0));
    }

    #[test]
    fn hypercall_registers_follow_the_mode_and_user_space_gets_eperm() {
        let mut r = Gprs::default();
        for (i, v) in r.0.iter_mut().enumerate() {
            *v = 0x1_0000_0000 + i as u64;
        }
        let long = hypercall(&mut r.clone(), 0, true).unwrap();
        assert_eq!(long.nr, 0x1_0000_0000);
        assert_eq!(long.args, [r.0[RDI], r.0[RSI], r.0[RDX], r.0[R10], r.0[R8]]);
        let short = hypercall(&mut r.clone(), 0, false).unwrap();
        assert_eq!(short.nr, 0);
        assert_eq!(short.args, [RBX as u64, RCX as u64, RDX as u64, RSI as u64, RDI as u64]);
        assert!(short.compat && !long.compat, "the mode at the time of the call picks the layouts");
        assert_eq!(hypercall(&mut r, 3, true), None);
        assert_eq!(r.0[RAX], u64::MAX);
        assert_eq!(hypercall_result(u64::MAX, false), 0xffff_ffff);
    }

    #[test]
    fn unclaimed_ports_read_all_ones_and_e9_prints_lines() {
        assert_eq!(port_in(1, 0x1234_5600), 0x1234_56ff);
        assert_eq!(port_in(2, 0xdead_0000_0000), 0xdead_0000_ffff);
        assert_eq!(port_in(4, 0xdead_0000_0000), 0xffff_ffff);
        let mut d = DebugPort::default();
        let mut lines: Vec<String> = Vec::new();
        for b in b"hi\x1b!\n" {
            port_out(&mut d, DEBUG_PORT, *b as u64, |l| lines.push(l.into()));
        }
        port_out(&mut d, 0x80, b'x' as u64, |l| lines.push(l.into()));
        assert_eq!(lines, ["hi?!"]);
    }

    #[test]
    fn xen_leaf_4_gives_the_vcpu_id_and_leaf_1_the_x2apic() {
        assert_eq!(cpuid(0x4000_0004, 0, 3, fake_host), [XEN_HVM_CPUID_VCPU_ID_PRESENT, 3, 0, 0]);
        let c = cpuid(1, 0, 0, fake_host)[2];
        assert_ne!(c & (1 << 21), 0);
        assert_eq!(c & ((1 << 3) | (1 << 24)), 0, "no MWAIT, no TSC deadline");
    }

    #[test]
    fn hypercall_page_slots_are_mov_call_ret() {
        let p = hypercall_page(true);
        assert_eq!(&p[0..9], &[0xb8, 0, 0, 0, 0, 0x0f, 0x01, 0xd9, 0xc3]);
        assert_eq!(&p[29 * 32..29 * 32 + 9], &[0xb8, 29, 0, 0, 0, 0x0f, 0x01, 0xd9, 0xc3]);
        assert_eq!(p[9], 0xcc);
        assert_eq!(&hypercall_page(false)[32 + 5..32 + 8], &[0x0f, 0x01, 0xc1]);
    }

    #[test]
    fn emulated_msrs_apic_base_x2apic_and_the_hypercall_page() {
        let mut m = GuestMsrs::new(0);
        assert_eq!(read_msr_state(&m, 0x1b, 0), Some(0xfee0_0d00));
        assert_eq!(write_msr_state(&mut m, 0x1b, 0xfee0_0d00, 0), Some(MsrEffect::Done));
        assert_eq!(write_msr_state(&mut m, 0x1b, 0xfee0_0900, 0), None, "x2APIC to xAPIC");
        assert_eq!(write_msr_state(&mut m, 0x1b, 0xfee0_0500, 0), None, "x2APIC without global enable");
        assert_eq!(read_msr_state(&m, 0x803, 0), Some(0x50014));
        assert_eq!(read_msr_state(&m, 0x1a0, 0), Some(0));
        assert_eq!(read_msr_state(&m, 0x2ff, 0), Some(0xc06));
        assert_eq!(
            write_msr_state(&mut m, XEN_HYPERCALL_MSR, 0x1234_5000, 0),
            Some(MsrEffect::HypercallPage(0x1234_5000))
        );
        assert_eq!(write_msr_state(&mut m, XEN_HYPERCALL_MSR, 0x1234_5001, 0), None);
        assert_eq!(write_msr_state(&mut m, MSR_EFER, EFER_LME, 0), Some(MsrEffect::Efer(EFER_LME)));
        assert_eq!(read_msr_state(&m, 0xc001_0114, 0), None, "VM_CR: #GP");
        assert!(valid_pat(0x0007_0406_0007_0406));
        assert!(!valid_pat(0x0007_0406_0007_0402));
    }

    #[test]
    fn s5_on_the_sleep_control_port_powers_off() {
        let mut d = DebugPort::default();
        assert_eq!(port_out_action(&mut d, ACPI_SLEEP_CONTROL_PORT, 0x34, |_| {}), PortAction::PowerOff);
        assert_eq!(port_out_action(&mut d, ACPI_SLEEP_CONTROL_PORT, 0x14, |_| {}), PortAction::None);
        assert_eq!(port_out_action(&mut d, 0xe9, b'x' as u64, |_| {}), PortAction::None);
    }

    #[test]
    fn msr_policy_knows_efer_only() {
        assert_eq!(read_msr(MSR_EFER, 0x500), Some(0x500));
        assert_eq!(read_msr(0x1b, 0), None);
        assert_eq!(write_msr(MSR_EFER, EFER_LME | EFER_SCE, 0), Some(MsrWrite::Efer(EFER_LME | EFER_SCE)));
        // LMA stays what the CPU made it, whatever the guest writes.
        assert_eq!(write_msr(MSR_EFER, EFER_LME, EFER_LMA | EFER_LME), Some(MsrWrite::Efer(EFER_LMA | EFER_LME)));
        assert_eq!(write_msr(MSR_EFER, EFER_LMA, 0), Some(MsrWrite::Efer(0)));
        // SVME (bit 12) and reserved bits: #GP.
        assert_eq!(write_msr(MSR_EFER, 1 << 12, 0), None);
        assert_eq!(write_msr(0x1b, 0, 0), None);
        let mut r = Gprs::default();
        set_msr_result(&mut r, 0x1234_5678_9abc_def0);
        assert_eq!((r.0[RAX], r.0[RDX]), (0x9abc_def0, 0x1234_5678));
        assert_eq!(msr_value(&r), 0x1234_5678_9abc_def0);
    }
}
