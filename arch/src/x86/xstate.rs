//! Guest x87/SSE/AVX state (XSAVE-managed state): which state components guests are offered,
//! how large a vCPU's save area is, its reset image, which XCR0 values XSETBV accepts and
//! what CPUID says about all of it. Pure logic over the host's CPUID answers, tested here;
//! the instructions that switch the state live in `x86_64::xstate`.
//!
//! The rule that keeps vCPUs apart: a component is offered to guests (XCR0 may enable it,
//! CPUID announces it and the features that use it) only if the switch carries it. The
//! switch saves and restores in the standard (non-compacted) XSAVE format with XCR0 set to
//! the whole offered mask, so every offered component is switched whatever the guest's own
//! XCR0 is at that moment. Supervisor components (IA32_XSS, XSAVES/XRSTORS) are not offered,
//! nor are AMX (its XFD state and its 8 KiB tile data) and MPX (dropped by Linux and by
//! newer CPUs). Without XSAVE the switch is FXSAVE/FXRSTOR: x87 and SSE only.

/// State components (bit numbers of XCR0 and XSTATE_BV).
pub const X87: u64 = 1 << 0;
pub const SSE: u64 = 1 << 1;
pub const AVX: u64 = 1 << 2;
/// AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM: enabled together or not at all.
pub const AVX512: u64 = 0b111 << 5;
pub const PKRU: u64 = 1 << 9;
/// User components the switch can carry.
pub const SWITCHABLE: u64 = X87 | SSE | AVX | AVX512 | PKRU;

/// XCR0 at reset: x87 only.
pub const RESET_XCR0: u64 = X87;
/// The legacy (FXSAVE) region, then the 64-byte XSAVE header.
pub const LEGACY_SIZE: usize = 512;
pub const HEADER_SIZE: usize = 64;
/// Reset values (SDM "Initialization of the x87 FPU" and of MXCSR).
pub const RESET_FCW: u16 = 0x037f;
pub const RESET_MXCSR: u32 = 0x1f80;
const MXCSR_OFFSET: usize = 24;

/// Components the table below describes: bits 0..=9.
const COMPONENTS: usize = 10;

/// CPUID leaf 1 ECX: XSAVE supported; OS enabled it (CR4.OSXSAVE).
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
/// CR4 bits the answers reflect: XSAVE enabled by the OS, protection keys enabled.
pub const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;
/// CPUID.(0xD,1).EAX: XSAVEOPT, XSAVEC, XGETBV with ECX = 1, XSAVES, XFD.
const XSAVEOPT: u32 = 1 << 0;
const XSAVEC: u32 = 1 << 1;
const XGETBV1: u32 = 1 << 2;

/// Where one component sits in the standard-format area (CPUID.(0xD,i): EAX size, EBX
/// offset, ECX bit 1 "64-byte aligned when compacted").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Component {
    pub size: u32,
    pub offset: u32,
    pub align64: bool,
}

/// What this CPU lets us offer guests, read once from its CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Components offered and switched; 0 without XSAVE (FXSAVE then carries x87 and SSE).
    pub offered: u64,
    /// CPUID.(0xD,1).EAX as the host reports it.
    pub host_leaf_d1_eax: u32,
    components: [Component; COMPONENTS],
}

/// The guest state the CPUID answers depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestView {
    pub xcr0: u64,
    pub cr4: u64,
}

impl Default for GuestView {
    fn default() -> Self {
        GuestView { xcr0: RESET_XCR0, cr4: 0 }
    }
}

/// Keep only masks XCR0 can hold: x87 and SSE always, AVX with SSE, AVX-512 whole and with AVX.
fn consistent(mask: u64) -> u64 {
    let mut m = mask | X87 | SSE;
    if m & AVX == 0 || m & AVX512 != AVX512 {
        m &= !AVX512;
    }
    m
}

fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1 << i) != 0)
}

impl Layout {
    /// From the host's CPUID (`host(leaf, subleaf)` = [EAX, EBX, ECX, EDX]).
    pub fn from_cpuid(host: impl Fn(u32, u32) -> [u32; 4]) -> Layout {
        let mut layout = Layout { offered: 0, host_leaf_d1_eax: 0, components: [Component::default(); COMPONENTS] };
        if host(0, 0)[0] < 0xd || host(1, 0)[2] & LEAF1_ECX_XSAVE == 0 {
            return layout;
        }
        let d0 = host(0xd, 0);
        let supported = d0[0] as u64 | (d0[3] as u64) << 32;
        let mut offered = supported & SWITCHABLE;
        for i in bits(offered).filter(|&i| i >= 2) {
            let [size, offset, ecx, _] = host(0xd, i as u32);
            // A component outside the area's extended region would break the layout: drop it.
            if size == 0 || (offset as usize) < LEGACY_SIZE + HEADER_SIZE {
                offered &= !(1 << i);
            }
            layout.components[i] = Component { size, offset, align64: ecx & 2 != 0 };
        }
        layout.offered = consistent(offered);
        layout.host_leaf_d1_eax = host(0xd, 1)[0];
        layout
    }

    /// Whether the switch uses XSAVE/XRSTOR (else FXSAVE/FXRSTOR).
    pub fn uses_xsave(&self) -> bool {
        self.offered != 0
    }

    /// XSAVEOPT may replace XSAVE for the switch.
    pub fn has_xsaveopt(&self) -> bool {
        self.uses_xsave() && self.host_leaf_d1_eax & XSAVEOPT != 0
    }

    /// Bytes of a standard-format area holding the components in `mask` (what XSAVE writes
    /// with this XCR0; CPUID.(0xD,0).EBX).
    pub fn standard_size(&self, mask: u64) -> u32 {
        bits(mask & self.offered)
            .filter(|&i| i >= 2)
            .map(|i| self.components[i].offset + self.components[i].size)
            .fold((LEGACY_SIZE + HEADER_SIZE) as u32, u32::max)
    }

    /// Bytes of a compacted-format area (XSAVEC) holding the components in `mask`.
    pub fn compacted_size(&self, mask: u64) -> u32 {
        bits(mask & self.offered).filter(|&i| i >= 2).fold((LEGACY_SIZE + HEADER_SIZE) as u32, |end, i| {
            let c = self.components[i];
            let start = if c.align64 { end.next_multiple_of(64) } else { end };
            start + c.size
        })
    }

    /// Bytes of a vCPU's save area.
    pub fn area_size(&self) -> usize {
        if self.uses_xsave() { self.standard_size(self.offered) as usize } else { LEGACY_SIZE }
    }

    /// Whether XSETBV may load `value` into XCR0 (SDM's rules, within what is offered).
    pub fn xcr0_valid(&self, value: u64) -> bool {
        let avx512 = value & AVX512;
        self.uses_xsave()
            && value & !self.offered == 0
            && value & X87 != 0
            && (value & AVX == 0 || value & SSE != 0)
            && (avx512 == 0 || (avx512 == AVX512 && value & AVX != 0))
    }

    /// CPUID as the guest sees it, given `answer` (the host's, after the rest of the policy):
    /// features needing a component that is not offered are hidden, leaf 0xD describes the
    /// offered components only, OSXSAVE/OSPKE follow the guest's own CR4.
    pub fn cpuid(&self, leaf: u32, sub: u32, answer: [u32; 4], guest: GuestView) -> [u32; 4] {
        let [mut a, mut b, mut c, mut d] = answer;
        match (leaf, sub) {
            (1, _) => {
                c &= !(LEAF1_ECX_XSAVE | LEAF1_ECX_OSXSAVE);
                if self.uses_xsave() {
                    c |= LEAF1_ECX_XSAVE;
                    if guest.cr4 & CR4_OSXSAVE != 0 {
                        c |= LEAF1_ECX_OSXSAVE;
                    }
                }
                c = self.hide(c, &LEAF1_ECX);
            }
            (7, 0) => {
                b = self.hide(b, &LEAF7_EBX);
                c = self.hide(c, &LEAF7_ECX) & !LEAF7_ECX_OSPKE;
                if self.offered & PKRU != 0 && guest.cr4 & CR4_PKE != 0 {
                    c |= LEAF7_ECX_OSPKE;
                }
                d = self.hide(d, &LEAF7_EDX);
            }
            (7, 1) => a = self.hide(a, &LEAF7_1_EAX),
            (0xd, _) => return self.leaf_d(sub, guest.xcr0),
            (0x8000_0001, _) => c = self.hide(c, &EXT1_ECX),
            // AMX palette and TMUL information: AMX is not offered.
            (0x1d | 0x1e, _) => return [0; 4],
            _ => {}
        }
        [a, b, c, d]
    }

    /// Clear the feature bits of `reg` whose state components are not all offered.
    fn hide(&self, reg: u32, table: &[(u32, u64)]) -> u32 {
        table.iter().filter(|&&(_, needs)| self.offered & needs != needs).fold(reg, |r, &(bit, _)| r & !bit)
    }

    /// Leaf 0xD: sub-leaf 0 the offered XCR0 bits and sizes, 1 the XSAVE extensions (no
    /// XSAVES, no XFD, no supervisor components), 2.. each offered component.
    fn leaf_d(&self, sub: u32, xcr0: u64) -> [u32; 4] {
        if !self.uses_xsave() {
            return [0; 4];
        }
        match sub {
            0 => [
                self.offered as u32,
                self.standard_size(xcr0),
                self.standard_size(self.offered),
                (self.offered >> 32) as u32,
            ],
            1 => [self.host_leaf_d1_eax & (XSAVEOPT | XSAVEC | XGETBV1), self.compacted_size(xcr0), 0, 0],
            i @ 2..=63 if self.offered & (1 << i) != 0 => {
                let c = self.components[i as usize];
                [c.size, c.offset, if c.align64 { 2 } else { 0 }, 0]
            }
            _ => [0; 4],
        }
    }

    /// The area of a vCPU that has not run yet: what XRSTOR (or FXRSTOR) turns into the
    /// reset state. An all-zero header (XSTATE_BV = 0, standard format) puts every
    /// component in its initial state, but MXCSR is loaded from the legacy region whatever
    /// XSTATE_BV says, so it carries 0x1F80; FCW 0x37F and an empty tag word are what
    /// FXRSTOR needs.
    pub fn reset_image(&self, area: &mut [u8]) {
        area.fill(0);
        area[0..2].copy_from_slice(&RESET_FCW.to_le_bytes());
        area[MXCSR_OFFSET..MXCSR_OFFSET + 4].copy_from_slice(&RESET_MXCSR.to_le_bytes());
    }
}

/// The legacy region's x87 part: FCW, FSW, abridged FTW, FOP, FIP, FDP (bytes 0..24, MXCSR
/// follows and belongs to SSE), then ST0-ST7 (bytes 32..160).
const X87_CONTROL: core::ops::Range<usize> = 0..24;
const X87_REGISTERS: core::ops::Range<usize> = 32..160;
/// XSTATE_BV, first field of the XSAVE header.
const XSTATE_BV_OFFSET: usize = LEGACY_SIZE;

/// Before XRSTOR from a standard-format `area`: if its x87 state is the initial one (FCW
/// 0x37F, everything else zero), clear XSTATE_BV's x87 bit, so that XRSTOR initializes x87
/// instead of loading it; the registers end up the same. True if it did.
///
/// Why: QEMU's TCG (checked on 10.0) models FERR#/IGNNE# for the boot CPU only, and every
/// x87 load of a status word with ES clear (XRSTOR of x87 state, FXRSTOR, FRSTOR, FLDENV), on
/// whichever CPU, clears IGNNE in the *boot CPU's* `hflags2` with an unlocked
/// read-modify-write from the loading CPU's thread. That word also holds the boot CPU's SVM state
/// (nested paging on, GIF, virtual interrupt masking), which the boot CPU changes at each
/// VMRUN and #VMEXIT; when the two meet, the boot CPU's update is lost: its guest runs
/// without nested paging (its page walk reads host memory, a #PF with no IDT, a shutdown)
/// or its host runs with nested paging (the first fetch after #VMEXIT walks the host's CR3
/// through the guest's tables and "exits" again, writing the host's state into the guest's
/// VMCB). The hypervisor's own restores are the one such load that happens at every vCPU
/// switch on an SMP host; guests that never touch x87 (most) now cost the boot CPU nothing.
pub fn mark_x87_initial(area: &mut [u8]) -> bool {
    if area.len() < XSTATE_BV_OFFSET + 8 {
        return false;
    }
    let fcw = u16::from_le_bytes([area[0], area[1]]);
    // Byte 5 is reserved: whatever it holds, it is not x87 state.
    let control_zero = area[X87_CONTROL].iter().enumerate().all(|(i, &b)| i < 2 || i == 5 || b == 0);
    if fcw != RESET_FCW || !control_zero || area[X87_REGISTERS].iter().any(|&b| b != 0) {
        return false;
    }
    area[XSTATE_BV_OFFSET] &= !(X87 as u8);
    true
}

/// Feature bits and the components they need: (bit, needed components).
const LEAF1_ECX: [(u32, u64); 3] = [(1 << 12, AVX), (1 << 28, AVX), (1 << 29, AVX)]; // FMA, AVX, F16C
const LEAF7_EBX: [(u32, u64); 10] = [
    (1 << 5, AVX),       // AVX2
    (1 << 14, u64::MAX), // MPX: never
    (1 << 16, AVX512),   // AVX512F
    (1 << 17, AVX512),   // AVX512DQ
    (1 << 21, AVX512),   // AVX512_IFMA
    (1 << 26, AVX512),   // AVX512PF
    (1 << 27, AVX512),   // AVX512ER
    (1 << 28, AVX512),   // AVX512CD
    (1 << 30, AVX512),   // AVX512BW
    (1 << 31, AVX512),   // AVX512VL
];
const LEAF7_ECX_OSPKE: u32 = 1 << 4;
const LEAF7_ECX: [(u32, u64); 8] = [
    (1 << 1, AVX512),  // AVX512_VBMI
    (1 << 3, PKRU),    // PKU
    (1 << 6, AVX512),  // AVX512_VBMI2
    (1 << 9, AVX),     // VAES
    (1 << 10, AVX),    // VPCLMULQDQ
    (1 << 11, AVX512), // AVX512_VNNI
    (1 << 12, AVX512), // AVX512_BITALG
    (1 << 14, AVX512), // AVX512_VPOPCNTDQ
];
const LEAF7_EDX: [(u32, u64); 7] = [
    (1 << 2, AVX512),    // AVX512_4VNNIW
    (1 << 3, AVX512),    // AVX512_4FMAPS
    (1 << 8, AVX512),    // AVX512_VP2INTERSECT
    (1 << 22, u64::MAX), // AMX-BF16
    (1 << 23, AVX512),   // AVX512_FP16
    (1 << 24, u64::MAX), // AMX-TILE
    (1 << 25, u64::MAX), // AMX-INT8
];
const LEAF7_1_EAX: [(u32, u64); 4] = [
    (1 << 4, AVX),       // AVX-VNNI
    (1 << 5, AVX512),    // AVX512_BF16
    (1 << 21, u64::MAX), // AMX-FP16
    (1 << 23, AVX),      // AVX-IFMA
];
/// AMD's XOP and FMA4 are VEX/XOP-encoded: they need the AVX state.
const EXT1_ECX: [(u32, u64); 2] = [(1 << 11, AVX), (1 << 16, AVX)];

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// CPUID.(0xD,i) of a CPU with x87..AVX, MPX, AVX-512, PKRU and AMX (offsets and sizes
    /// of an Intel Sapphire Rapids part), plus XSAVEOPT/XSAVEC/XGETBV1/XSAVES/XFD.
    fn big_host(leaf: u32, sub: u32) -> [u32; 4] {
        const SUPPORTED: u64 = 0x6_02ff;
        match (leaf, sub) {
            (0, _) => [0x20, 0, 0, 0],
            (1, _) => [0, 0, LEAF1_ECX_XSAVE | LEAF1_ECX_OSXSAVE | (1 << 28) | (1 << 12) | (1 << 29), 0],
            (7, 0) => [0, u32::MAX, u32::MAX, u32::MAX],
            (7, 1) => [u32::MAX, 0, 0, 0],
            (0xd, 0) => [SUPPORTED as u32, 0xa88, 0x2b00, (SUPPORTED >> 32) as u32],
            (0xd, 1) => [0x1f, 0x2b00, 0x1900, 0],
            (0xd, 2) => [256, 576, 0, 0],
            (0xd, 3) => [64, 960, 0, 0],
            (0xd, 4) => [64, 1024, 0, 0],
            (0xd, 5) => [64, 1088, 0, 0],
            (0xd, 6) => [512, 1152, 0, 0],
            (0xd, 7) => [1024, 1664, 0, 0],
            (0xd, 9) => [8, 2688, 0, 0],
            (0xd, 17) => [64, 2752, 2, 0],
            (0xd, 18) => [8192, 2816, 6, 0],
            _ => [0; 4],
        }
    }

    /// QEMU's `-cpu max` under TCG: x87, SSE, AVX and PKRU.
    fn qemu_host(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (0, _) => [0xd, 0, 0, 0],
            (1, _) => [0, 0, LEAF1_ECX_XSAVE | (1 << 28), 0],
            (0xd, 0) => [0x207, 0x340, 0xa88, 0],
            (0xd, 1) => [0x7, 0, 0, 0],
            (0xd, 2) => [256, 576, 0, 0],
            (0xd, 9) => [8, 2688, 0, 0],
            _ => [0; 4],
        }
    }

    fn no_xsave(leaf: u32, _sub: u32) -> [u32; 4] {
        if leaf == 0 { [0xd, 0, 0, 0] } else { [0; 4] }
    }

    #[test]
    fn an_initial_x87_state_is_restored_by_initializing_it() {
        let layout = Layout::from_cpuid(qemu_host);
        let mut area = std::vec![0u8; layout.area_size()];
        layout.reset_image(&mut area);
        area[XSTATE_BV_OFFSET] = 0x07;
        assert!(mark_x87_initial(&mut area));
        assert_eq!(area[XSTATE_BV_OFFSET], 0x06);
        // MXCSR (SSE) and the reserved byte do not count.
        area[MXCSR_OFFSET] = 0xa0;
        area[5] = 0xff;
        area[XSTATE_BV_OFFSET] = 0x07;
        assert!(mark_x87_initial(&mut area));
        // A used x87 (another control word, a status bit, a register) is loaded as it is.
        for (at, value) in [(1, 0x02), (2, 0x01), (4, 0x80), (40, 0x01), (159, 0x01)] {
            let mut used = area.clone();
            used[XSTATE_BV_OFFSET] = 0x07;
            used[at] = value;
            assert!(!mark_x87_initial(&mut used), "byte {at}");
            assert_eq!(used[XSTATE_BV_OFFSET], 0x07);
        }
        // An FXSAVE-sized area has no header.
        assert!(!mark_x87_initial(&mut area[..LEGACY_SIZE]));
    }

    #[test]
    fn offered_is_the_switchable_part_of_what_the_cpu_supports() {
        let big = Layout::from_cpuid(big_host);
        assert_eq!(big.offered, X87 | SSE | AVX | AVX512 | PKRU, "no MPX, no AMX");
        assert_eq!(Layout::from_cpuid(qemu_host).offered, X87 | SSE | AVX | PKRU);
        assert_eq!(Layout::from_cpuid(no_xsave).offered, 0);
        // AVX-512 without AVX cannot be enabled: dropped.
        let odd = |l, s| if (l, s) == (0xd, 2) { [0; 4] } else { big_host(l, s) };
        assert_eq!(Layout::from_cpuid(odd).offered, X87 | SSE | PKRU);
    }

    #[test]
    fn area_sizes_follow_the_component_table() {
        let big = Layout::from_cpuid(big_host);
        // Hi16_ZMM ends at 1664 + 1024; PKRU at 2688 + 8.
        assert_eq!(big.area_size(), 2696);
        assert_eq!(big.standard_size(X87 | SSE), 576);
        assert_eq!(big.standard_size(X87 | SSE | AVX), 832);
        // Compacted: 576 + AVX 256 + opmask 64 + ZMM_Hi256 512 + Hi16_ZMM 1024 + PKRU 8.
        assert_eq!(big.compacted_size(big.offered), 576 + 256 + 64 + 512 + 1024 + 8);
        assert_eq!(Layout::from_cpuid(qemu_host).area_size(), 2696);
        assert_eq!(Layout::from_cpuid(no_xsave).area_size(), 512);
    }

    #[test]
    fn compacted_components_marked_aligned_start_on_64_bytes() {
        let mut l = Layout::from_cpuid(qemu_host);
        l.components[9].align64 = true;
        assert_eq!(l.compacted_size(X87 | SSE | AVX | PKRU), 576 + 256 + 8);
        l.components[2].size = 260;
        assert_eq!(l.compacted_size(X87 | SSE | AVX | PKRU), (576 + 260usize).next_multiple_of(64) as u32 + 8);
    }

    #[test]
    fn xsetbv_takes_what_the_sdm_allows_within_the_offer() {
        let big = Layout::from_cpuid(big_host);
        for ok in [X87, X87 | SSE, X87 | SSE | AVX, X87 | SSE | AVX | AVX512, X87 | PKRU, big.offered] {
            assert!(big.xcr0_valid(ok), "{ok:#x}");
        }
        for bad in
            [0, SSE, X87 | AVX, X87 | SSE | (1 << 5), X87 | SSE | AVX512, X87 | (1 << 3), X87 | (1 << 17), 1 << 63]
        {
            assert!(!big.xcr0_valid(bad), "{bad:#x}");
        }
        assert!(!Layout::from_cpuid(qemu_host).xcr0_valid(X87 | SSE | AVX | AVX512));
        assert!(!Layout::from_cpuid(no_xsave).xcr0_valid(X87));
    }

    /// Every XCR0 a guest can load gets leaf-0xD answers that describe exactly the switched
    /// components: sub-leaf 0 offers the switched mask, its sizes are those of the area the
    /// switch uses, each component sub-leaf is answered iff it is switched and lies inside
    /// that area.
    #[test]
    fn leaf_d_agrees_with_the_switched_mask_for_every_valid_xcr0() {
        for host in [big_host as fn(u32, u32) -> [u32; 4], qemu_host, no_xsave] {
            let l = Layout::from_cpuid(host);
            for xcr0 in (0..1u64 << COMPONENTS).filter(|&m| l.xcr0_valid(m)) {
                let view = GuestView { xcr0, cr4: CR4_OSXSAVE };
                let [lo, cur, max, hi] = l.cpuid(0xd, 0, host(0xd, 0), view);
                assert_eq!(lo as u64 | (hi as u64) << 32, l.offered);
                assert_eq!(max as usize, l.area_size());
                assert_eq!(cur, l.standard_size(xcr0));
                assert!(cur <= max);
                let [d1a, _, d1c, d1d] = l.cpuid(0xd, 1, host(0xd, 1), view);
                assert_eq!(d1a & !(XSAVEOPT | XSAVEC | XGETBV1), 0, "no XSAVES, no XFD");
                assert_eq!((d1c, d1d), (0, 0), "no supervisor components");
                for i in 2..64u32 {
                    let [size, offset, _, _] = l.cpuid(0xd, i, host(0xd, i), view);
                    if l.offered & (1 << i) != 0 {
                        assert!(size > 0 && (offset + size) as usize <= l.area_size(), "component {i}");
                    } else {
                        assert_eq!(size, 0, "component {i} is not switched");
                    }
                }
            }
        }
        // Without XSAVE there is nothing in leaf 0xD and no XSAVE bit in leaf 1.
        let l = Layout::from_cpuid(no_xsave);
        assert_eq!(l.cpuid(0xd, 0, [7, 1, 2, 3], GuestView::default()), [0; 4]);
        assert_eq!(l.cpuid(1, 0, [0, 0, u32::MAX, 0], GuestView::default())[2] & (0xf << 26), 0);
    }

    #[test]
    fn features_needing_unoffered_state_are_hidden() {
        let qemu = Layout::from_cpuid(qemu_host);
        let view = GuestView { xcr0: X87 | SSE | AVX, cr4: 0 };
        let l7 = qemu.cpuid(7, 0, [0, u32::MAX, u32::MAX, u32::MAX], view);
        assert_ne!(l7[1] & (1 << 5), 0, "AVX2 stays");
        assert_eq!(l7[1] & ((1 << 16) | (1 << 31) | (1 << 14)), 0, "no AVX-512, no MPX");
        assert_ne!(l7[2] & (1 << 3), 0, "PKU stays (PKRU is switched)");
        assert_eq!(l7[2] & (1 << 4), 0, "OSPKE follows the guest's CR4.PKE");
        assert_eq!(l7[3] & (1 << 24), 0, "no AMX");
        let none = Layout::from_cpuid(no_xsave);
        let l1 = none.cpuid(1, 0, [0, 0, u32::MAX, 0], view);
        assert_eq!(l1[2] & ((1 << 28) | (1 << 12) | (1 << 29)), 0, "no AVX, FMA, F16C");
        assert_eq!(none.cpuid(7, 0, [0, u32::MAX, 0, 0], view)[1] & (1 << 5), 0, "no AVX2");
        assert_eq!(none.cpuid(0x8000_0001, 0, [0, 0, u32::MAX, 0], view)[2] & ((1 << 11) | (1 << 16)), 0);
        let big = Layout::from_cpuid(big_host);
        assert_eq!(big.cpuid(7, 0, big_host(7, 0), view)[1] & (1 << 16), 1 << 16, "AVX512F offered");
        assert_eq!(big.cpuid(0x1d, 0, [1, 2, 3, 4], view), [0; 4]);
    }

    #[test]
    fn osxsave_and_ospke_follow_the_guest_cr4() {
        let l = Layout::from_cpuid(qemu_host);
        let host1 = qemu_host(1, 0);
        let off = l.cpuid(1, 0, host1, GuestView::default())[2];
        assert_eq!(off & (LEAF1_ECX_XSAVE | LEAF1_ECX_OSXSAVE), LEAF1_ECX_XSAVE);
        let on = l.cpuid(1, 0, host1, GuestView { xcr0: X87, cr4: CR4_OSXSAVE })[2];
        assert_ne!(on & LEAF1_ECX_OSXSAVE, 0);
        let pke = l.cpuid(7, 0, [0, 0, 1 << 3, 0], GuestView { xcr0: X87, cr4: CR4_PKE })[2];
        assert_eq!(pke, (1 << 3) | LEAF7_ECX_OSPKE);
    }

    #[test]
    fn the_reset_image_is_the_init_state() {
        let l = Layout::from_cpuid(big_host);
        let mut area = std::vec![0xaau8; l.area_size()];
        l.reset_image(&mut area);
        assert_eq!(u16::from_le_bytes([area[0], area[1]]), 0x037f, "FCW");
        assert_eq!(area[4], 0, "abridged tag word: all empty");
        assert_eq!(u32::from_le_bytes(area[24..28].try_into().unwrap()), 0x1f80, "MXCSR");
        let header = &area[LEGACY_SIZE..LEGACY_SIZE + HEADER_SIZE];
        assert!(header.iter().all(|&b| b == 0), "XSTATE_BV = 0, XCOMP_BV = 0 (standard format)");
        assert!(area[28..LEGACY_SIZE].iter().all(|&b| b == 0));
        assert!(area[LEGACY_SIZE + HEADER_SIZE..].iter().all(|&b| b == 0));
    }
}
