//! The shared info page and per-vCPU info (`struct shared_info`, `struct vcpu_info`,
//! `struct vcpu_time_info` from `xen/include/public/xen.h`, with the arch parts from
//! `arch-x86/xen-x86_64.h`, `arch-x86/xen.h` and `arch-arm.h`).
//!
//! [`VcpuTimeInfo`] is the same everywhere. `vcpu_info` and `shared_info` differ: x86 has
//! 32 legacy `vcpu_info` slots, an upcall mask and arch fields; ARM has one slot and empty
//! arch parts. Both layouts are here, in [`x86`] (64-bit x86 guests) and [`arm`] (32- and
//! 64-bit ARM guests, whose layout is the same), and [`native`] names the one of the target
//! being built for.
//!
//! The runstate area and `VCPUOP_register_vcpu_info` argument live in [`crate::vcpu`]
//! (`vcpu.h`) and are re-exported here.

pub use crate::vcpu::{VcpuRegisterVcpuInfo, VcpuRunstateInfo};

/// [`VcpuTimeInfo::flags`]: the TSC is stable across vCPUs, so readings from different vCPUs
/// are comparable.
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// [`VcpuTimeInfo::flags`]: the guest was stopped (paused) since the last update.
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info`: the per-vCPU system-time parameters (32 bytes).
///
/// Xen increments `version` before and after each update, so an odd `version` means an
/// update is in progress; readers retry until they see the same even value on both sides.
/// System time (ns since boot) at TSC value `tsc` is
/// `system_time + scale_delta(tsc - tsc_timestamp, tsc_to_system_mul, tsc_shift)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuTimeInfo {
    pub version: u32,
    pub pad0: u32,
    /// TSC value at the last update.
    pub tsc_timestamp: u64,
    /// System time (ns since boot) at the last update.
    pub system_time: u64,
    /// 32.32 fixed-point multiplier from (shifted) TSC ticks to nanoseconds.
    pub tsc_to_system_mul: u32,
    /// Power-of-two pre-shift applied to TSC deltas (negative shifts right).
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` (called `pad1[0]` before interface version 4.6).
    pub flags: u8,
    pub pad1: [u8; 2],
}

/// Converts a TSC delta to nanoseconds the way [`VcpuTimeInfo`] prescribes: shift the delta
/// left by `shift` (right if negative), multiply by `mul` and keep bits 95..32.
pub const fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let shifted = if shift >= 0 { delta << (shift as u32) } else { delta >> ((-(shift as i32)) as u32) };
    ((shifted as u128 * mul as u128) >> 32) as u64
}

impl VcpuTimeInfo {
    /// System time (ns since boot) at TSC value `tsc`, from this snapshot.
    pub const fn system_time_at(&self, tsc: u64) -> u64 {
        self.system_time.wrapping_add(scale_delta(
            tsc.wrapping_sub(self.tsc_timestamp),
            self.tsc_to_system_mul,
            self.tsc_shift,
        ))
    }
}

/// Number of words in each of `evtchn_pending` / `evtchn_mask`: `sizeof(xen_ulong_t) * 8`,
/// with the 8-byte `xen_ulong_t` of x86_64 and ARM.
pub const EVTCHN_WORDS: usize = 64;

/// Layouts for 64-bit x86 guests (`arch-x86/xen.h`, `arch-x86/xen-x86_64.h`).
pub mod x86 {
    use super::{EVTCHN_WORDS, VcpuTimeInfo};

    /// `XEN_LEGACY_MAX_VCPUS`: `vcpu_info` slots in the shared info page.
    pub const XEN_LEGACY_MAX_VCPUS: usize = 32;

    /// `struct arch_vcpu_info` (x86_64).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ArchVcpuInfo {
        /// PV: the faulting address of the last page fault.
        pub cr2: u64,
        /// Pads `vcpu_info` to 64 bytes.
        pub pad: u64,
    }

    /// `struct vcpu_info` (x86_64, 64 bytes).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct VcpuInfo {
        /// Set by Xen when an event is pending for this vCPU; cleared by the guest before it
        /// scans for work.
        pub evtchn_upcall_pending: u8,
        /// Non-zero: no upcall is delivered to this vCPU.
        pub evtchn_upcall_mask: u8,
        /// Implicit C padding before the 8-byte selector.
        pub _pad0: [u8; 6],
        /// Bit `n` set: word `n` of `evtchn_pending` may have pending, unmasked events.
        pub evtchn_pending_sel: u64,
        pub arch: ArchVcpuInfo,
        pub time: VcpuTimeInfo,
    }

    /// `struct arch_shared_info` (x86_64).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ArchSharedInfo {
        /// Number of valid entries in the guest's p2m.
        pub max_pfn: u64,
        /// PV: frame of the 3-level p2m frame list (0 unset, all-ones invalid).
        pub pfn_to_mfn_frame_list_list: u64,
        pub nmi_reason: u64,
        /// PV: cr3-format root of the address space `p2m_vaddr` is valid in (0: unused).
        pub p2m_cr3: u64,
        /// PV: virtual address of the linear p2m list.
        pub p2m_vaddr: u64,
        /// PV: bumped before and after each p2m change (odd while changing).
        pub p2m_generation: u64,
    }

    /// `struct shared_info` (x86_64, 3136 bytes; it occupies the first part of a 4 KiB page).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SharedInfo {
        pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
        /// 2-level event channels: one pending bit per port.
        pub evtchn_pending: [u64; EVTCHN_WORDS],
        /// 2-level event channels: one mask bit per port.
        pub evtchn_mask: [u64; EVTCHN_WORDS],
        /// Wallclock version, updated like [`VcpuTimeInfo::version`].
        pub wc_version: u32,
        /// Wallclock at system time 0: seconds (low 32 bits) since the Unix epoch.
        pub wc_sec: u32,
        pub wc_nsec: u32,
        /// High 32 bits of the wallclock seconds.
        pub wc_sec_hi: u32,
        pub arch: ArchSharedInfo,
    }

    impl SharedInfo {
        /// An all-zero page.
        pub const fn zeroed() -> Self {
            const ZERO_VCPU: VcpuInfo = VcpuInfo {
                evtchn_upcall_pending: 0,
                evtchn_upcall_mask: 0,
                _pad0: [0; 6],
                evtchn_pending_sel: 0,
                arch: ArchVcpuInfo { cr2: 0, pad: 0 },
                time: VcpuTimeInfo {
                    version: 0,
                    pad0: 0,
                    tsc_timestamp: 0,
                    system_time: 0,
                    tsc_to_system_mul: 0,
                    tsc_shift: 0,
                    flags: 0,
                    pad1: [0; 2],
                },
            };
            Self {
                vcpu_info: [ZERO_VCPU; XEN_LEGACY_MAX_VCPUS],
                evtchn_pending: [0; EVTCHN_WORDS],
                evtchn_mask: [0; EVTCHN_WORDS],
                wc_version: 0,
                wc_sec: 0,
                wc_nsec: 0,
                wc_sec_hi: 0,
                arch: ArchSharedInfo {
                    max_pfn: 0,
                    pfn_to_mfn_frame_list_list: 0,
                    nmi_reason: 0,
                    p2m_cr3: 0,
                    p2m_vaddr: 0,
                    p2m_generation: 0,
                },
            }
        }
    }

    impl Default for SharedInfo {
        fn default() -> Self {
            Self::zeroed()
        }
    }
}

/// Layouts for ARM guests (`arch-arm.h`); identical for AArch32 and AArch64 guests.
pub mod arm {
    use super::{EVTCHN_WORDS, VcpuTimeInfo};

    /// `XEN_LEGACY_MAX_VCPUS`: ARM keeps a single `vcpu_info` in the shared page; other
    /// vCPUs register theirs with `VCPUOP_register_vcpu_info`.
    pub const XEN_LEGACY_MAX_VCPUS: usize = 1;

    /// `struct arch_vcpu_info` (ARM): empty, size 0 (a GNU C empty struct).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ArchVcpuInfo {}

    /// `struct vcpu_info` (ARM, 48 bytes).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct VcpuInfo {
        /// Set by Xen when an event is pending for this vCPU; cleared by the guest before it
        /// scans for work.
        pub evtchn_upcall_pending: u8,
        /// ARM has no upcall mask (`XEN_HAVE_PV_UPCALL_MASK` is not defined), so this byte
        /// is padding.
        pub pad0: u8,
        /// Implicit C padding before the 8-byte selector.
        pub _pad1: [u8; 6],
        /// Bit `n` set: word `n` of `evtchn_pending` may have pending, unmasked events.
        /// A `xen_ulong_t`: 64 bits for 32-bit guests too.
        pub evtchn_pending_sel: u64,
        pub arch: ArchVcpuInfo,
        pub time: VcpuTimeInfo,
    }

    /// `struct arch_shared_info` (ARM): empty, size 0.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ArchSharedInfo {}

    /// `struct shared_info` (ARM, 1088 bytes).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SharedInfo {
        pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
        /// 2-level event channels: one pending bit per port.
        pub evtchn_pending: [u64; EVTCHN_WORDS],
        /// 2-level event channels: one mask bit per port.
        pub evtchn_mask: [u64; EVTCHN_WORDS],
        /// Wallclock version, updated like [`VcpuTimeInfo::version`].
        pub wc_version: u32,
        /// Wallclock at system time 0: seconds (low 32 bits) since the Unix epoch.
        pub wc_sec: u32,
        pub wc_nsec: u32,
        /// High 32 bits of the wallclock seconds.
        pub wc_sec_hi: u32,
        pub arch: ArchSharedInfo,
    }

    impl SharedInfo {
        /// An all-zero page.
        pub const fn zeroed() -> Self {
            const ZERO_VCPU: VcpuInfo = VcpuInfo {
                evtchn_upcall_pending: 0,
                pad0: 0,
                _pad1: [0; 6],
                evtchn_pending_sel: 0,
                arch: ArchVcpuInfo {},
                time: VcpuTimeInfo {
                    version: 0,
                    pad0: 0,
                    tsc_timestamp: 0,
                    system_time: 0,
                    tsc_to_system_mul: 0,
                    tsc_shift: 0,
                    flags: 0,
                    pad1: [0; 2],
                },
            };
            Self {
                vcpu_info: [ZERO_VCPU; XEN_LEGACY_MAX_VCPUS],
                evtchn_pending: [0; EVTCHN_WORDS],
                evtchn_mask: [0; EVTCHN_WORDS],
                wc_version: 0,
                wc_sec: 0,
                wc_nsec: 0,
                wc_sec_hi: 0,
                arch: ArchSharedInfo {},
            }
        }
    }

    impl Default for SharedInfo {
        fn default() -> Self {
            Self::zeroed()
        }
    }
}

/// The layouts of the architecture being compiled for.
#[cfg(target_arch = "x86_64")]
pub use x86 as native;

/// The layouts of the architecture being compiled for.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub use arm as native;

layout_checks! {
    test vcpu_time_info_layout;
    all, "struct vcpu_time_info", VcpuTimeInfo, 32, {
        version: 0,
        pad0: 4,
        tsc_timestamp: 8,
        system_time: 16,
        tsc_to_system_mul: 24,
        tsc_shift: 28,
        flags: 29,
        pad1: 30,
    };
}

layout_checks! {
    test x86_layouts;
    x86, "struct arch_vcpu_info", x86::ArchVcpuInfo, 16, { cr2: 0, pad: 8 };
    x86, "struct vcpu_info", x86::VcpuInfo, 64, {
        evtchn_upcall_pending: 0,
        evtchn_upcall_mask: 1,
        _pad0: 2,
        evtchn_pending_sel: 8,
        arch: 16,
        time: 32,
    };
    x86, "struct arch_shared_info", x86::ArchSharedInfo, 48, {
        max_pfn: 0,
        pfn_to_mfn_frame_list_list: 8,
        nmi_reason: 16,
        p2m_cr3: 24,
        p2m_vaddr: 32,
        p2m_generation: 40,
    };
    // 32 * 64 bytes of vcpu_info, then two 64-word bitmaps (512 bytes each).
    x86, "struct shared_info", x86::SharedInfo, 3136, {
        vcpu_info: 0,
        evtchn_pending: 2048,
        evtchn_mask: 2560,
        wc_version: 3072,
        wc_sec: 3076,
        wc_nsec: 3080,
        wc_sec_hi: 3084,
        arch: 3088,
    };
}

layout_checks! {
    test arm_layouts;
    arm, "struct arch_vcpu_info", arm::ArchVcpuInfo, 0, {};
    arm, "struct vcpu_info", arm::VcpuInfo, 48, {
        evtchn_upcall_pending: 0,
        pad0: 1,
        _pad1: 2,
        evtchn_pending_sel: 8,
        arch: 16,
        time: 16,
    };
    arm, "struct arch_shared_info", arm::ArchSharedInfo, 0, {};
    // One 48-byte vcpu_info, then two 64-word bitmaps (512 bytes each).
    arm, "struct shared_info", arm::SharedInfo, 1088, {
        vcpu_info: 0,
        evtchn_pending: 48,
        evtchn_mask: 560,
        wc_version: 1072,
        wc_sec: 1076,
        wc_nsec: 1080,
        wc_sec_hi: 1084,
        arch: 1088,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_byte_alignment() {
        assert_eq!(core::mem::align_of::<VcpuTimeInfo>(), 8);
        assert_eq!(core::mem::align_of::<x86::SharedInfo>(), 8);
        assert_eq!(core::mem::align_of::<arm::SharedInfo>(), 8);
    }

    #[test]
    fn time_scaling() {
        // mul = 2^31 halves; shift 1 doubles first.
        assert_eq!(scale_delta(1000, 1 << 31, 0), 500);
        assert_eq!(scale_delta(1000, 1 << 31, 1), 1000);
        assert_eq!(scale_delta(1000, 1 << 31, -1), 250);
        let t =
            VcpuTimeInfo { tsc_timestamp: 10_000, system_time: 5, tsc_to_system_mul: 1 << 31, ..Default::default() };
        assert_eq!(t.system_time_at(12_000), 1005);
    }
}
