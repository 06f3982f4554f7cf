//! The AMD-V virtual machine control block (AMD APM vol. 2, appendix B) and the permission
//! maps it points to.
//!
//! One 4 KiB page: the control area (intercepts, exit information, event injection, nested
//! paging) at 0x000, the state save area (segments, control registers, RIP/RSP/RAX, the
//! VMLOAD/VMSAVE state) at 0x400. The layout is checked field by field in the tests below.

/// A segment register as the VMCB stores it. `attrib` packs descriptor bits 47:40 (type, S,
/// DPL, P) into bits 7:0 and bits 55:52 (AVL, L, D/B, G) into bits 11:8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// Control area, 0x000-0x3ff.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Control {
    /// Bits 15:0 intercept reads of CR0-15, bits 31:16 writes.
    pub intercept_cr: u32,
    /// Bits 15:0 intercept reads of DR0-15, bits 31:16 writes.
    pub intercept_dr: u32,
    /// One bit per exception vector.
    pub intercept_exceptions: u32,
    /// [`misc1`] bits.
    pub intercept_misc1: u32,
    /// [`misc2`] bits.
    pub intercept_misc2: u32,
    pub intercept_misc3: u32,
    _reserved0: [u8; 0x24],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub guest_asid: u32,
    /// [`tlb`] values.
    pub tlb_control: u8,
    _reserved1: [u8; 3],
    /// V_TPR 7:0, V_IRQ 8, V_GIF 9, V_INTR_PRIO 19:16, V_IGN_TPR 20, V_INTR_MASKING 24 ([`vintr`]).
    pub v_intr: u32,
    /// V_INTR_VECTOR in bits 7:0.
    pub v_intr_vector: u32,
    /// Bit 0: the guest is in an interrupt shadow (after STI / MOV SS).
    pub interrupt_shadow: u64,
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    /// An event whose delivery the exit interrupted ([`event`] format).
    pub exit_int_info: u64,
    /// Bit 0: nested paging.
    pub np_enable: u64,
    pub avic_apic_bar: u64,
    pub ghcb_pa: u64,
    /// The event injected on the next VMRUN ([`event`] format).
    pub event_inj: u64,
    pub n_cr3: u64,
    pub virt_ext: u64,
    /// Fields the CPU may keep cached since the last VMRUN (0: reload everything).
    pub vmcb_clean: u32,
    _reserved2: u32,
    /// Next RIP after the intercepted instruction (only with the NRIPS feature).
    pub next_rip: u64,
    pub guest_insn_len: u8,
    pub guest_insn_bytes: [u8; 15],
    _reserved3: [u8; 0x320],
}

/// State save area, 0x400-0xfff.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SaveArea {
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    _reserved0: [u8; 0x2b],
    pub cpl: u8,
    _reserved1: u32,
    pub efer: u64,
    _reserved2: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    _reserved3: [u8; 0x58],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    _reserved4: [u8; 0x20],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    _reserved5: [u8; 0x968],
}

/// The whole VMCB page.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug)]
pub struct Vmcb {
    pub control: Control,
    pub save: SaveArea,
}

impl Vmcb {
    /// An all-zero VMCB (every intercept off, every field cleared).
    pub const fn zeroed() -> Self {
        // Every field is an integer or an array of integers, so the all-zero pattern is a value.
        const Z: Segment = Segment { selector: 0, attrib: 0, limit: 0, base: 0 };
        Vmcb {
            control: Control {
                intercept_cr: 0,
                intercept_dr: 0,
                intercept_exceptions: 0,
                intercept_misc1: 0,
                intercept_misc2: 0,
                intercept_misc3: 0,
                _reserved0: [0; 0x24],
                pause_filter_threshold: 0,
                pause_filter_count: 0,
                iopm_base_pa: 0,
                msrpm_base_pa: 0,
                tsc_offset: 0,
                guest_asid: 0,
                tlb_control: 0,
                _reserved1: [0; 3],
                v_intr: 0,
                v_intr_vector: 0,
                interrupt_shadow: 0,
                exit_code: 0,
                exit_info1: 0,
                exit_info2: 0,
                exit_int_info: 0,
                np_enable: 0,
                avic_apic_bar: 0,
                ghcb_pa: 0,
                event_inj: 0,
                n_cr3: 0,
                virt_ext: 0,
                vmcb_clean: 0,
                _reserved2: 0,
                next_rip: 0,
                guest_insn_len: 0,
                guest_insn_bytes: [0; 15],
                _reserved3: [0; 0x320],
            },
            save: SaveArea {
                es: Z,
                cs: Z,
                ss: Z,
                ds: Z,
                fs: Z,
                gs: Z,
                gdtr: Z,
                ldtr: Z,
                idtr: Z,
                tr: Z,
                _reserved0: [0; 0x2b],
                cpl: 0,
                _reserved1: 0,
                efer: 0,
                _reserved2: [0; 0x70],
                cr4: 0,
                cr3: 0,
                cr0: 0,
                dr7: 0,
                dr6: 0,
                rflags: 0,
                rip: 0,
                _reserved3: [0; 0x58],
                rsp: 0,
                s_cet: 0,
                ssp: 0,
                isst_addr: 0,
                rax: 0,
                star: 0,
                lstar: 0,
                cstar: 0,
                sfmask: 0,
                kernel_gs_base: 0,
                sysenter_cs: 0,
                sysenter_esp: 0,
                sysenter_eip: 0,
                cr2: 0,
                _reserved4: [0; 0x20],
                g_pat: 0,
                dbgctl: 0,
                br_from: 0,
                br_to: 0,
                last_excp_from: 0,
                last_excp_to: 0,
                _reserved5: [0; 0x968],
            },
        }
    }

    /// A VMCB from its 4096 bytes (a recorded exit, a dump), little-endian as the CPU writes it.
    pub fn from_bytes(bytes: &[u8; 4096]) -> Self {
        let mut v = Self::zeroed();
        let dst = (&raw mut v).cast::<u8>();
        // SAFETY: `Vmcb` is `repr(C)`, exactly 4096 bytes (checked by a test) and made only of
        // integers and integer arrays, so any bytes form a valid value; `v` is a distinct
        // local, so the copy does not overlap `bytes`.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, 4096) };
        v
    }
}

/// Intercept vector 3 (offset 0x0c).
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const CPUID: u32 = 1 << 18;
    pub const HLT: u32 = 1 << 24;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept vector 4 (offset 0x10).
pub mod misc2 {
    /// Must be set, or VMRUN fails.
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    /// XSETBV: the guest's XCR0 is validated and kept per vCPU (VMRUN does not switch it).
    pub const XSETBV: u32 = 1 << 13;
}

/// TLB_CONTROL values.
pub mod tlb {
    pub const NOTHING: u8 = 0;
    pub const FLUSH_ALL: u8 = 1;
    pub const FLUSH_ASID: u8 = 3;
}

/// V_INTR (offset 0x60) bits.
pub mod vintr {
    pub const V_IRQ: u32 = 1 << 8;
    pub const PRIO_SHIFT: u32 = 16;
    pub const V_IGN_TPR: u32 = 1 << 20;
    /// Guest RFLAGS.IF and TPR govern virtual interrupts only; physical ones follow the host's IF.
    pub const V_INTR_MASKING: u32 = 1 << 24;
}

/// EVENTINJ / EXITINTINFO format.
pub mod event {
    pub const VALID: u64 = 1 << 31;
    pub const ERROR_CODE_VALID: u64 = 1 << 11;
    pub const TYPE_INTR: u64 = 0 << 8;
    pub const TYPE_NMI: u64 = 2 << 8;
    pub const TYPE_EXCEPTION: u64 = 3 << 8;
    pub const TYPE_SOFT_INT: u64 = 4 << 8;

    /// A hardware exception, with its error code if it has one.
    pub const fn exception(vector: u8, error_code: Option<u32>) -> u64 {
        let base = VALID | TYPE_EXCEPTION | vector as u64;
        match error_code {
            Some(e) => base | ERROR_CODE_VALID | (e as u64) << 32,
            None => base,
        }
    }

    /// An external interrupt with `vector`.
    pub const fn interrupt(vector: u8) -> u64 {
        VALID | TYPE_INTR | vector as u64
    }
}

/// EXITCODE values (APM vol. 2, appendix C).
pub mod exit {
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    /// VMRUN refused the guest state.
    pub const INVALID: u64 = u64::MAX;
}

/// EXITINFO1 of an IOIO exit.
pub mod ioio {
    pub const IN: u64 = 1 << 0;
    pub const STRING: u64 = 1 << 2;
    pub const REP: u64 = 1 << 3;
    /// Bits 6:4: one-hot operand size 1, 2 or 4 bytes.
    pub const SIZE_SHIFT: u32 = 4;
    pub const PORT_SHIFT: u32 = 16;
}

/// Segment attributes in the VMCB's 12-bit form.
pub mod attrib {
    pub const CODE32: u16 = 0xc9b;
    pub const DATA32: u16 = 0xc93;
    pub const TSS32_BUSY: u16 = 0x08b;
    pub const LDT: u16 = 0x082;
    /// CS.L: 64-bit code.
    pub const LONG: u16 = 1 << 9;
    /// CS.D: 32-bit default operand and address size.
    pub const DB: u16 = 1 << 10;
}

/// The I/O permission map: 12 KiB, one bit per port (set = intercept).
pub const IOPM_SIZE: usize = 3 * 4096;
/// The MSR permission map: 8 KiB, two bits per MSR (read, write; set = intercept).
pub const MSRPM_SIZE: usize = 2 * 4096;

/// Where MSR `index`'s read-intercept bit is in the MSR permission map, as (byte, bit); its
/// write bit is the next one. `None` for MSRs outside the three mapped ranges, which are
/// always intercepted.
pub fn msrpm_position(index: u32) -> Option<(usize, u8)> {
    let (base, first) = match index {
        0..=0x1fff => (0x000, 0),
        0xc000_0000..=0xc000_1fff => (0x800, 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, 0xc001_0000),
        _ => return None,
    };
    let bit = (index - first) as usize * 2;
    Some((base + bit / 8, (bit % 8) as u8))
}

/// Let the guest read and write `index` without an exit (no effect on unmapped MSRs).
pub fn msrpm_allow(map: &mut [u8; MSRPM_SIZE], index: u32) {
    if let Some((byte, bit)) = msrpm_position(index) {
        map[byte] &= !(0b11 << bit);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn control_area_matches_the_apm() {
        let c = |off: usize| off;
        assert_eq!(offset_of!(Vmcb, control), 0);
        assert_eq!(offset_of!(Control, intercept_cr), c(0x00));
        assert_eq!(offset_of!(Control, intercept_dr), c(0x04));
        assert_eq!(offset_of!(Control, intercept_exceptions), c(0x08));
        assert_eq!(offset_of!(Control, intercept_misc1), c(0x0c));
        assert_eq!(offset_of!(Control, intercept_misc2), c(0x10));
        assert_eq!(offset_of!(Control, intercept_misc3), c(0x14));
        assert_eq!(offset_of!(Control, pause_filter_threshold), c(0x3c));
        assert_eq!(offset_of!(Control, pause_filter_count), c(0x3e));
        assert_eq!(offset_of!(Control, iopm_base_pa), c(0x40));
        assert_eq!(offset_of!(Control, msrpm_base_pa), c(0x48));
        assert_eq!(offset_of!(Control, tsc_offset), c(0x50));
        assert_eq!(offset_of!(Control, guest_asid), c(0x58));
        assert_eq!(offset_of!(Control, tlb_control), c(0x5c));
        assert_eq!(offset_of!(Control, v_intr), c(0x60));
        assert_eq!(offset_of!(Control, v_intr_vector), c(0x64));
        assert_eq!(offset_of!(Control, interrupt_shadow), c(0x68));
        assert_eq!(offset_of!(Control, exit_code), c(0x70));
        assert_eq!(offset_of!(Control, exit_info1), c(0x78));
        assert_eq!(offset_of!(Control, exit_info2), c(0x80));
        assert_eq!(offset_of!(Control, exit_int_info), c(0x88));
        assert_eq!(offset_of!(Control, np_enable), c(0x90));
        assert_eq!(offset_of!(Control, avic_apic_bar), c(0x98));
        assert_eq!(offset_of!(Control, ghcb_pa), c(0xa0));
        assert_eq!(offset_of!(Control, event_inj), c(0xa8));
        assert_eq!(offset_of!(Control, n_cr3), c(0xb0));
        assert_eq!(offset_of!(Control, virt_ext), c(0xb8));
        assert_eq!(offset_of!(Control, vmcb_clean), c(0xc0));
        assert_eq!(offset_of!(Control, next_rip), c(0xc8));
        assert_eq!(offset_of!(Control, guest_insn_len), c(0xd0));
        assert_eq!(offset_of!(Control, guest_insn_bytes), c(0xd1));
        assert_eq!(size_of::<Control>(), 0x400);
    }

    #[test]
    fn save_area_matches_the_apm() {
        let s = |off: usize| off - 0x400;
        assert_eq!(offset_of!(Vmcb, save), 0x400);
        assert_eq!(size_of::<Segment>(), 16);
        assert_eq!(offset_of!(Segment, attrib), 2);
        assert_eq!(offset_of!(Segment, limit), 4);
        assert_eq!(offset_of!(Segment, base), 8);
        let segs = [
            offset_of!(SaveArea, es),
            offset_of!(SaveArea, cs),
            offset_of!(SaveArea, ss),
            offset_of!(SaveArea, ds),
            offset_of!(SaveArea, fs),
            offset_of!(SaveArea, gs),
            offset_of!(SaveArea, gdtr),
            offset_of!(SaveArea, ldtr),
            offset_of!(SaveArea, idtr),
            offset_of!(SaveArea, tr),
        ];
        for (i, off) in segs.into_iter().enumerate() {
            assert_eq!(off, s(0x400 + 16 * i));
        }
        assert_eq!(offset_of!(SaveArea, cpl), s(0x4cb));
        assert_eq!(offset_of!(SaveArea, efer), s(0x4d0));
        assert_eq!(offset_of!(SaveArea, cr4), s(0x548));
        assert_eq!(offset_of!(SaveArea, cr3), s(0x550));
        assert_eq!(offset_of!(SaveArea, cr0), s(0x558));
        assert_eq!(offset_of!(SaveArea, dr7), s(0x560));
        assert_eq!(offset_of!(SaveArea, dr6), s(0x568));
        assert_eq!(offset_of!(SaveArea, rflags), s(0x570));
        assert_eq!(offset_of!(SaveArea, rip), s(0x578));
        assert_eq!(offset_of!(SaveArea, rsp), s(0x5d8));
        assert_eq!(offset_of!(SaveArea, s_cet), s(0x5e0));
        assert_eq!(offset_of!(SaveArea, ssp), s(0x5e8));
        assert_eq!(offset_of!(SaveArea, isst_addr), s(0x5f0));
        assert_eq!(offset_of!(SaveArea, rax), s(0x5f8));
        assert_eq!(offset_of!(SaveArea, star), s(0x600));
        assert_eq!(offset_of!(SaveArea, lstar), s(0x608));
        assert_eq!(offset_of!(SaveArea, cstar), s(0x610));
        assert_eq!(offset_of!(SaveArea, sfmask), s(0x618));
        assert_eq!(offset_of!(SaveArea, kernel_gs_base), s(0x620));
        assert_eq!(offset_of!(SaveArea, sysenter_cs), s(0x628));
        assert_eq!(offset_of!(SaveArea, sysenter_esp), s(0x630));
        assert_eq!(offset_of!(SaveArea, sysenter_eip), s(0x638));
        assert_eq!(offset_of!(SaveArea, cr2), s(0x640));
        assert_eq!(offset_of!(SaveArea, g_pat), s(0x668));
        assert_eq!(offset_of!(SaveArea, dbgctl), s(0x670));
        assert_eq!(offset_of!(SaveArea, br_from), s(0x678));
        assert_eq!(offset_of!(SaveArea, br_to), s(0x680));
        assert_eq!(offset_of!(SaveArea, last_excp_from), s(0x688));
        assert_eq!(offset_of!(SaveArea, last_excp_to), s(0x690));
        assert_eq!(size_of::<SaveArea>(), 0xc00);
        assert_eq!(size_of::<Vmcb>(), 4096);
        assert_eq!(core::mem::align_of::<Vmcb>(), 4096);
    }

    #[test]
    fn from_bytes_reads_fields_at_their_offsets() {
        let mut b = [0u8; 4096];
        b[0x70..0x78].copy_from_slice(&0x7bu64.to_le_bytes());
        b[0x4cb] = 3;
        b[0x5f8..0x600].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        b[0x412..0x414].copy_from_slice(&attrib::CODE32.to_le_bytes());
        let v = Vmcb::from_bytes(&b);
        assert_eq!(v.control.exit_code, exit::IOIO);
        assert_eq!(v.save.cpl, 3);
        assert_eq!(v.save.rax, 0x1122_3344_5566_7788);
        assert_eq!(v.save.cs.attrib, attrib::CODE32);
    }

    #[test]
    fn segment_attributes_are_the_packed_descriptor_bits() {
        // Descriptor access byte 0x9b/0x93 + flags nibble 0xc (G, D/B), as VMX's 0xc09b/0xc093.
        let pack = |vmx_ar: u16| ((vmx_ar & 0xf000) >> 4) | (vmx_ar & 0xff);
        assert_eq!(attrib::CODE32, pack(0xc09b));
        assert_eq!(attrib::DATA32, pack(0xc093));
        assert_eq!(attrib::TSS32_BUSY, pack(0x8b));
    }

    #[test]
    fn msr_permission_map_positions() {
        assert_eq!(msrpm_position(0), Some((0, 0)));
        assert_eq!(msrpm_position(0x1fff), Some((0x7ff, 6)));
        assert_eq!(msrpm_position(0xc000_0080), Some((0x800 + 0x20, 0)));
        assert_eq!(msrpm_position(0xc000_0101), Some((0x800 + 0x40, 2)));
        assert_eq!(msrpm_position(0xc001_0117), Some((0x1000 + 0x45, 6)));
        assert_eq!(msrpm_position(0x4000_0000), None);
        let mut map = [0xffu8; MSRPM_SIZE];
        msrpm_allow(&mut map, 0xc000_0101);
        assert_eq!(map[0x840], 0b1111_0011);
        msrpm_allow(&mut map, 0x4000_0000);
        assert_eq!(map.iter().filter(|b| **b != 0xff).count(), 1);
    }

    #[test]
    fn event_encodings() {
        assert_eq!(event::exception(13, Some(0)), 0x8000_0b0d);
        assert_eq!(event::exception(6, None), 0x8000_0306);
        assert_eq!(event::exception(14, Some(2)), 0x2_8000_0b0e);
        assert_eq!(event::interrupt(0xf3), 0x8000_00f3);
    }
}
