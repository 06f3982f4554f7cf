//! The layouts a 32-bit x86 guest sees: Xen's "compat" ABI.
//!
//! Xen generates its `compat/` headers from the same public headers built for i386, where
//! `long`, `xen_ulong_t`, `xen_pfn_t` and guest handles are 4 bytes and a `uint64_t` inside a
//! structure is only 4-byte aligned. Only the structures whose layout differs from the 64-bit
//! one live here (each with the native type it translates to and from); those that come out
//! the same on i386 (`evtchn_*`, `gnttab_map_grant_ref`, `gnttab_unmap_grant_ref`,
//! `gnttab_query_size`, `sched_shutdown`, `vcpu_register_vcpu_info`, `vcpu_time_info`, ...)
//! are used as they are. The layout table below is checked against Xen's headers compiled with
//! `-m32` by `tools/check-layout.py` (arch `x86_32`).
//!
//! A 64-bit value that i386 aligns to 4 bytes is spelled as two `u32` halves (`_lo`/`_hi`),
//! so the Rust structures keep C's offsets without `packed`.

use crate::grant_table::{GnttabCopy, GnttabCopyPtr, GnttabGetStatusFrames, GnttabSetupTable};
use crate::memory::{XenAddToPhysmap, XenMemoryReservation, XenRemoveFromPhysmap};
use crate::sched::SchedPoll;
use crate::shared_info::VcpuTimeInfo;
use crate::vcpu::{VcpuRunstateInfo, VcpuSetSingleshotTimer};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A 64-bit value at a 4-byte aligned offset, as i386 lays out `uint64_t` in structures.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct U64Split {
    pub lo: u32,
    pub hi: u32,
}

impl U64Split {
    pub const fn get(self) -> u64 {
        (self.hi as u64) << 32 | self.lo as u64
    }
    pub const fn new(v: u64) -> Self {
        U64Split { lo: v as u32, hi: (v >> 32) as u32 }
    }
}

/// `struct xen_add_to_physmap` (compat).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenAddToPhysmap32 {
    pub domid: u16,
    pub size: u16,
    pub space: u32,
    pub idx: u32,
    pub gpfn: u32,
}

/// `struct xen_memory_reservation` (compat).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenMemoryReservation32 {
    pub extent_start: u32,
    pub nr_extents: u32,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
    pub _pad0: u16,
}

/// `struct xen_remove_from_physmap` (compat).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenRemoveFromPhysmap32 {
    pub domid: u16,
    pub _pad0: u16,
    pub gpfn: u32,
}

/// `struct gnttab_setup_table` (compat): `frame_list` is a handle to 32-bit frame numbers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabSetupTable32 {
    pub dom: u16,
    pub _pad0: u16,
    pub nr_frames: u32,
    pub status: i16,
    pub _pad1: u16,
    pub frame_list: u32,
}

/// `struct gnttab_get_status_frames` (compat): `frame_list` still points at `uint64_t`s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabGetStatusFrames32 {
    pub nr_frames: u32,
    pub dom: u16,
    pub status: i16,
    pub frame_list: u32,
}

/// One side of a `gnttab_copy` (compat): the frame is a 32-bit `xen_pfn_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabCopyPtr32 {
    pub u: u32,
    pub domid: u16,
    pub offset: u16,
}

/// `struct gnttab_copy` (compat).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabCopy32 {
    pub source: GnttabCopyPtr32,
    pub dest: GnttabCopyPtr32,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
    pub _pad0: u16,
}

/// `struct sched_poll` (compat).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SchedPoll32 {
    pub ports: u32,
    pub nr_ports: u32,
    pub timeout: U64Split,
}

/// `struct vcpu_set_singleshot_timer` (compat): 12 bytes, no tail padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VcpuSetSingleshotTimer32 {
    pub timeout_abs_ns: U64Split,
    pub flags: u32,
}

/// `struct vcpu_runstate_info` (compat): 44 bytes, no padding after `state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VcpuRunstateInfo32 {
    pub state: i32,
    pub state_entry_time: U64Split,
    pub time: [U64Split; 4],
}

/// `struct arch_vcpu_info` of x86_32: `cr2` and five words of padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ArchVcpuInfo32 {
    pub cr2: u32,
    pub pad: [u32; 5],
}

/// `struct vcpu_info` as a 32-bit guest sees it: a 32-bit pending selector at offset 4.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VcpuInfo32 {
    pub evtchn_upcall_pending: u8,
    pub evtchn_upcall_mask: u8,
    pub _pad0: u16,
    pub evtchn_pending_sel: u32,
    pub arch: ArchVcpuInfo32,
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info` of x86_32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ArchSharedInfo32 {
    pub max_pfn: u32,
    pub pfn_to_mfn_frame_list_list: u32,
    pub nmi_reason: u32,
    pub p2m_cr3: u32,
    pub p2m_vaddr: u32,
    pub p2m_generation: u32,
    pub wc_sec_hi: u32,
}

/// `struct shared_info` as a 32-bit x86 guest sees it: 32-bit event words (1024 2-level
/// ports), the wallclock at 2304.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SharedInfo32 {
    pub vcpu_info: [VcpuInfo32; 32],
    pub evtchn_pending: [u32; 32],
    pub evtchn_mask: [u32; 32],
    pub wc_version: u32,
    pub wc_sec: u32,
    pub wc_nsec: u32,
    pub arch: ArchSharedInfo32,
}

/// A native structure and its compat twin: what a 32-bit guest's copy turns into, and back.
pub trait Compat: FromBytes + IntoBytes + Immutable {
    type Compat: FromBytes + IntoBytes + Immutable + KnownLayout;
    /// The guest's 32-bit structure as the native one (handles and frames zero-extended).
    fn from_compat(c: &Self::Compat) -> Self;
    /// The native structure as a 32-bit guest reads it back (handles and frames truncated:
    /// they came from 32-bit values or are frame numbers below 2^32).
    fn to_compat(&self) -> Self::Compat;
}

impl Compat for XenAddToPhysmap {
    type Compat = XenAddToPhysmap32;
    fn from_compat(c: &XenAddToPhysmap32) -> Self {
        XenAddToPhysmap { domid: c.domid, size: c.size, space: c.space, idx: c.idx.into(), gpfn: c.gpfn.into() }
    }
    fn to_compat(&self) -> XenAddToPhysmap32 {
        XenAddToPhysmap32 {
            domid: self.domid,
            size: self.size,
            space: self.space,
            idx: self.idx as u32,
            gpfn: self.gpfn as u32,
        }
    }
}

impl Compat for XenMemoryReservation {
    type Compat = XenMemoryReservation32;
    fn from_compat(c: &XenMemoryReservation32) -> Self {
        XenMemoryReservation {
            extent_start: c.extent_start.into(),
            nr_extents: c.nr_extents.into(),
            extent_order: c.extent_order,
            mem_flags: c.mem_flags,
            domid: c.domid,
            _pad0: [0; 3],
        }
    }
    fn to_compat(&self) -> XenMemoryReservation32 {
        XenMemoryReservation32 {
            extent_start: self.extent_start as u32,
            nr_extents: self.nr_extents as u32,
            extent_order: self.extent_order,
            mem_flags: self.mem_flags,
            domid: self.domid,
            _pad0: 0,
        }
    }
}

impl Compat for XenRemoveFromPhysmap {
    type Compat = XenRemoveFromPhysmap32;
    fn from_compat(c: &XenRemoveFromPhysmap32) -> Self {
        XenRemoveFromPhysmap { domid: c.domid, _pad0: [0; 3], gpfn: c.gpfn.into() }
    }
    fn to_compat(&self) -> XenRemoveFromPhysmap32 {
        XenRemoveFromPhysmap32 { domid: self.domid, _pad0: 0, gpfn: self.gpfn as u32 }
    }
}

impl Compat for GnttabSetupTable {
    type Compat = GnttabSetupTable32;
    fn from_compat(c: &GnttabSetupTable32) -> Self {
        GnttabSetupTable {
            dom: c.dom,
            nr_frames: c.nr_frames,
            status: c.status,
            frame_list: c.frame_list.into(),
            ..GnttabSetupTable::default()
        }
    }
    fn to_compat(&self) -> GnttabSetupTable32 {
        GnttabSetupTable32 {
            dom: self.dom,
            _pad0: 0,
            nr_frames: self.nr_frames,
            status: self.status,
            _pad1: 0,
            frame_list: self.frame_list as u32,
        }
    }
}

impl Compat for GnttabGetStatusFrames {
    type Compat = GnttabGetStatusFrames32;
    fn from_compat(c: &GnttabGetStatusFrames32) -> Self {
        GnttabGetStatusFrames { nr_frames: c.nr_frames, dom: c.dom, status: c.status, frame_list: c.frame_list.into() }
    }
    fn to_compat(&self) -> GnttabGetStatusFrames32 {
        GnttabGetStatusFrames32 {
            nr_frames: self.nr_frames,
            dom: self.dom,
            status: self.status,
            frame_list: self.frame_list as u32,
        }
    }
}

fn copy_ptr_from(c: &GnttabCopyPtr32) -> GnttabCopyPtr {
    GnttabCopyPtr { u: c.u.into(), domid: c.domid, offset: c.offset, ..GnttabCopyPtr::default() }
}

fn copy_ptr_to(n: &GnttabCopyPtr) -> GnttabCopyPtr32 {
    GnttabCopyPtr32 { u: n.u as u32, domid: n.domid, offset: n.offset }
}

impl Compat for GnttabCopy {
    type Compat = GnttabCopy32;
    fn from_compat(c: &GnttabCopy32) -> Self {
        GnttabCopy {
            source: copy_ptr_from(&c.source),
            dest: copy_ptr_from(&c.dest),
            len: c.len,
            flags: c.flags,
            status: c.status,
            ..GnttabCopy::default()
        }
    }
    fn to_compat(&self) -> GnttabCopy32 {
        GnttabCopy32 {
            source: copy_ptr_to(&self.source),
            dest: copy_ptr_to(&self.dest),
            len: self.len,
            flags: self.flags,
            status: self.status,
            _pad0: 0,
        }
    }
}

impl Compat for SchedPoll {
    type Compat = SchedPoll32;
    fn from_compat(c: &SchedPoll32) -> Self {
        SchedPoll { ports: c.ports.into(), nr_ports: c.nr_ports, _pad0: 0, timeout: c.timeout.get() }
    }
    fn to_compat(&self) -> SchedPoll32 {
        SchedPoll32 { ports: self.ports as u32, nr_ports: self.nr_ports, timeout: U64Split::new(self.timeout) }
    }
}

impl Compat for VcpuSetSingleshotTimer {
    type Compat = VcpuSetSingleshotTimer32;
    fn from_compat(c: &VcpuSetSingleshotTimer32) -> Self {
        VcpuSetSingleshotTimer { timeout_abs_ns: c.timeout_abs_ns.get(), flags: c.flags, _pad0: 0 }
    }
    fn to_compat(&self) -> VcpuSetSingleshotTimer32 {
        VcpuSetSingleshotTimer32 { timeout_abs_ns: U64Split::new(self.timeout_abs_ns), flags: self.flags }
    }
}

impl Compat for VcpuRunstateInfo {
    type Compat = VcpuRunstateInfo32;
    fn from_compat(c: &VcpuRunstateInfo32) -> Self {
        VcpuRunstateInfo {
            state: c.state,
            _pad0: 0,
            state_entry_time: c.state_entry_time.get(),
            time: c.time.map(U64Split::get),
        }
    }
    fn to_compat(&self) -> VcpuRunstateInfo32 {
        VcpuRunstateInfo32 {
            state: self.state,
            state_entry_time: U64Split::new(self.state_entry_time),
            time: self.time.map(U64Split::new),
        }
    }
}

layout_checks! {
    test layouts;
    x86_32, "struct xen_add_to_physmap", XenAddToPhysmap32, 16, {
        domid: 0,
        size: 2,
        space: 4,
        idx: 8,
        gpfn: 12,
    };
    x86_32, "struct xen_memory_reservation", XenMemoryReservation32, 20, {
        extent_start: 0,
        nr_extents: 4,
        extent_order: 8,
        mem_flags: 12,
        domid: 16,
        _pad0: 18,
    };
    x86_32, "struct xen_remove_from_physmap", XenRemoveFromPhysmap32, 8, {
        domid: 0,
        _pad0: 2,
        gpfn: 4,
    };
    x86_32, "struct gnttab_setup_table", GnttabSetupTable32, 16, {
        dom: 0,
        _pad0: 2,
        nr_frames: 4,
        status: 8,
        _pad1: 10,
        frame_list: 12,
    };
    x86_32, "struct gnttab_get_status_frames", GnttabGetStatusFrames32, 12, {
        nr_frames: 0,
        dom: 4,
        status: 6,
        frame_list: 8,
    };
    x86_32, "struct gnttab_copy", GnttabCopy32, 24, {
        source: 0,
        dest: 8,
        len: 16,
        flags: 18,
        status: 20,
        _pad0: 22,
    };
    x86_32, "struct sched_poll", SchedPoll32, 16, {
        ports: 0,
        nr_ports: 4,
        timeout: 8,
    };
    x86_32, "struct vcpu_set_singleshot_timer", VcpuSetSingleshotTimer32, 12, {
        timeout_abs_ns: 0,
        flags: 8,
    };
    x86_32, "struct vcpu_runstate_info", VcpuRunstateInfo32, 44, {
        state: 0,
        state_entry_time: 4,
        time: 12,
    };
    x86_32, "struct arch_vcpu_info", ArchVcpuInfo32, 24, {
        cr2: 0,
        pad: 4,
    };
    x86_32, "struct vcpu_info", VcpuInfo32, 64, {
        evtchn_upcall_pending: 0,
        evtchn_upcall_mask: 1,
        _pad0: 2,
        evtchn_pending_sel: 4,
        arch: 8,
        time: 32,
    };
    x86_32, "struct arch_shared_info", ArchSharedInfo32, 28, {
        max_pfn: 0,
        pfn_to_mfn_frame_list_list: 4,
        nmi_reason: 8,
        p2m_cr3: 12,
        p2m_vaddr: 16,
        p2m_generation: 20,
        wc_sec_hi: 24,
    };
    x86_32, "struct shared_info", SharedInfo32, 2344, {
        vcpu_info: 0,
        evtchn_pending: 2048,
        evtchn_mask: 2176,
        wc_version: 2304,
        wc_sec: 2308,
        wc_nsec: 2312,
        arch: 2316,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_round_trips_and_zero_extends() {
        let c = XenAddToPhysmap32 { domid: 0x7ff0, size: 0, space: 0, idx: 0, gpfn: 0xfeff_f000 };
        let n = XenAddToPhysmap::from_compat(&c);
        assert_eq!((n.domid, n.idx, n.gpfn), (0x7ff0, 0, 0xfeff_f000));
        assert_eq!(n.to_compat(), c);
        let p = SchedPoll32 { ports: 0x1234, nr_ports: 2, timeout: U64Split::new(0x1_0000_0002) };
        assert_eq!(SchedPoll::from_compat(&p).timeout, 0x1_0000_0002);
        assert_eq!(SchedPoll::from_compat(&p).to_compat(), p);
        let r = VcpuRunstateInfo { state: 0, _pad0: 0, state_entry_time: 5, time: [1, 2, 3, 1 << 40] };
        let bytes = r.to_compat();
        assert_eq!(bytes.as_bytes()[4..12], 5u64.to_le_bytes());
        assert_eq!(bytes.as_bytes()[36..44], (1u64 << 40).to_le_bytes());
        assert_eq!(VcpuRunstateInfo::from_compat(&bytes), r);
        let g = GnttabCopy32 {
            source: GnttabCopyPtr32 { u: 7, domid: 0x7ff0, offset: 8 },
            dest: GnttabCopyPtr32 { u: 0x1234, domid: 2, offset: 0 },
            len: 64,
            flags: 2,
            status: 0,
            _pad0: 0,
        };
        assert_eq!(GnttabCopy::from_compat(&g).dest.u, 0x1234);
        assert_eq!(GnttabCopy::from_compat(&g).to_compat(), g);
    }
}
