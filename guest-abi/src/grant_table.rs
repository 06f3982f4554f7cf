//! `grant_table_op` sub-operations, grant entries and their flags
//! (`xen/include/public/grant_table.h`).
//!
//! `grant_table_op(cmd, &args, count)`; grant references are `grant_ref_t` (u32) and
//! mapping handles `grant_handle_t` (u32).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Argument: array of [`GnttabMapGrantRef`].
pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
/// Argument: array of [`GnttabUnmapGrantRef`].
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
/// Argument: [`GnttabSetupTable`].
pub const GNTTABOP_SETUP_TABLE: u64 = 2;
pub const GNTTABOP_DUMP_TABLE: u64 = 3;
pub const GNTTABOP_TRANSFER: u64 = 4;
pub const GNTTABOP_COPY: u64 = 5;
/// Argument: [`GnttabQuerySize`].
pub const GNTTABOP_QUERY_SIZE: u64 = 6;
pub const GNTTABOP_UNMAP_AND_REPLACE: u64 = 7;
/// Argument: [`GnttabSetVersion`].
pub const GNTTABOP_SET_VERSION: u64 = 8;
pub const GNTTABOP_GET_STATUS_FRAMES: u64 = 9;
/// Argument: [`GnttabGetVersion`].
pub const GNTTABOP_GET_VERSION: u64 = 10;
pub const GNTTABOP_SWAP_GRANT_REF: u64 = 11;
pub const GNTTABOP_CACHE_FLUSH: u64 = 12;

/// Entries at the start of the table kept across version changes; the toolstack may fill
/// them when it builds the domain.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Reserved entry for the console ring page.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Reserved entry for the xenstore ring page.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

// `GTF_*`: the `flags` of a grant entry. Bits 1:0 are the type.

/// The entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// `domid` may map or copy frame `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `domid` may give us ownership of a page; Xen writes its frame number to `frame`.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// v2 only: `domid` may copy (not map) part of a grant this domain holds from a third one.
pub const GTF_TRANSITIVE: u16 = 3;
/// Mask of the type bits.
pub const GTF_TYPE_MASK: u16 = 3;
/// `domid` may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by Xen: `domid` has the grant mapped for reading.
pub const GTF_READING: u16 = 1 << 3;
/// Set by Xen: `domid` has the grant mapped for writing.
pub const GTF_WRITING: u16 = 1 << 4;
/// x86 cache attribute bits for the mapping (PWT, PCD, PAT).
pub const GTF_PWT: u16 = 1 << 5;
pub const GTF_PCD: u16 = 1 << 6;
pub const GTF_PAT: u16 = 1 << 7;
/// Access only: just part of the page is granted; `domid` may copy from it, not map it.
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// Transfer only, set by Xen: it is committed to the transfer; leave the entry alone until
/// `GTF_transfer_completed` appears.
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// Transfer only, set by Xen after writing `frame`: the transfer is done.
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

/// `GNTMAP_*`: [`GnttabMapGrantRef::flags`].
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
pub const GNTMAP_READONLY: u32 = 1 << 2;
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
/// Bits 31:16 are left for the guest (with `XENFEAT_gnttab_map_avail_bits`).
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = 0xFFFF_0000;

/// `GNTST_*`: the `status` results of grant operations.
pub const GNTST_OKAY: i16 = 0;
pub const GNTST_GENERAL_ERROR: i16 = -1;
pub const GNTST_BAD_DOMAIN: i16 = -2;
pub const GNTST_BAD_GNTREF: i16 = -3;
pub const GNTST_BAD_HANDLE: i16 = -4;
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
pub const GNTST_PERMISSION_DENIED: i16 = -8;
pub const GNTST_BAD_PAGE: i16 = -9;
pub const GNTST_BAD_COPY_ARG: i16 = -10;
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
pub const GNTST_EAGAIN: i16 = -12;
pub const GNTST_NO_SPACE: i16 = -13;

/// `struct grant_entry_v1`: one entry of a version-1 grant table (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GrantEntryV1 {
    /// `GTF_*`.
    pub flags: u16,
    /// The domain being granted access.
    pub domid: u16,
    /// The granted frame (access), or where a transferred frame goes (transfer).
    pub frame: u32,
}

/// `GNTTABOP_copy` flags: the source (dest) names a grant reference of `domid`, not a frame
/// of the caller's own.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `struct gnttab_copy_ptr`: one side of a copy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabCopyPtr {
    /// The C union `u`: a grant reference (`grant_ref_t`, the low 32 bits) with the
    /// `*_GREF` flag, else a frame of the caller's (`xen_pfn_t`).
    pub u: u64,
    pub domid: u16,
    /// Byte offset in the page.
    pub offset: u16,
    /// Implicit C padding (the union is 8-byte aligned).
    pub _pad0: u32,
}

/// `struct gnttab_copy`: copy `len` bytes between two pages, either named by grant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    pub len: u16,
    /// `GNTCOPY_*`.
    pub flags: u16,
    /// Out: `GNTST_*`.
    pub status: i16,
    /// Implicit C padding.
    pub _pad0: u16,
}

/// `struct grant_entry_header`: the common head of a version-2 entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GrantEntryHeader {
    pub flags: u16,
    pub domid: u16,
}

/// Size of a version-2 entry (`union grant_entry_v2`).
pub const GRANT_ENTRY_V2_SIZE: usize = 16;

/// `struct gnttab_map_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabMapGrantRef {
    /// In: where to map (meaning depends on `flags`).
    pub host_addr: u64,
    /// In: `GNTMAP_*`.
    pub flags: u32,
    /// In: the grant reference.
    pub r#ref: u32,
    /// In: the granting domain.
    pub dom: u16,
    /// Out: `GNTST_*`.
    pub status: i16,
    /// Out: handle for unmapping.
    pub handle: u32,
    /// Out: bus address for device mappings.
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    /// Out: `GNTST_*`.
    pub status: i16,
    /// Implicit C tail padding.
    pub _pad0: u16,
}

/// `struct gnttab_setup_table`: get the frames of a domain's grant table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabSetupTable {
    /// In: usually `DOMID_SELF`.
    pub dom: u16,
    /// Implicit C padding.
    pub _pad0: u16,
    /// In: number of frames wanted.
    pub nr_frames: u32,
    /// Out: `GNTST_*`.
    pub status: i16,
    /// Implicit C padding before the 8-byte handle.
    pub _pad1: [u16; 3],
    /// Guest handle: array of `xen_pfn_t` (u64) to receive the frames.
    pub frame_list: u64,
}

/// `struct gnttab_query_size`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabQuerySize {
    /// In: usually `DOMID_SELF`.
    pub dom: u16,
    /// Implicit C padding.
    pub _pad0: u16,
    /// Out: frames in use.
    pub nr_frames: u32,
    /// Out: the limit.
    pub max_nr_frames: u32,
    /// Out: `GNTST_*`.
    pub status: i16,
    /// Implicit C tail padding.
    pub _pad1: u16,
}

/// `struct gnttab_set_version`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabSetVersion {
    /// In: 1 or 2; out: the version now in force.
    pub version: u32,
}

/// `struct gnttab_get_version`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabGetVersion {
    pub dom: u16,
    pub pad: u16,
    /// Out.
    pub version: u32,
}

/// `struct gnttab_get_status_frames` (version 2 only: a version-1 table has none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GnttabGetStatusFrames {
    /// In: how many status frames are wanted.
    pub nr_frames: u32,
    /// In: usually `DOMID_SELF`.
    pub dom: u16,
    /// Out: `GNTST_*`.
    pub status: i16,
    /// Guest handle: array of `uint64_t` to receive the frames.
    pub frame_list: u64,
}

/// What `setup_table` reports for a grant frame of a translated guest that the guest has
/// not placed in its physical address space yet (Xen's invalid frame number, all ones).
pub const INVALID_FRAME: u64 = u64::MAX;

layout_checks! {
    test layouts;
    all, "struct grant_entry_v1", GrantEntryV1, 8, { flags: 0, domid: 2, frame: 4 };
    all, "struct grant_entry_header", GrantEntryHeader, 4, { flags: 0, domid: 2 };
    all, "struct gnttab_copy", GnttabCopy, 40, { source: 0, dest: 16, len: 32, flags: 34, status: 36 };
    all, "struct gnttab_map_grant_ref", GnttabMapGrantRef, 32, {
        host_addr: 0,
        flags: 8,
        r#ref: 12,
        dom: 16,
        status: 18,
        handle: 20,
        dev_bus_addr: 24,
    };
    all, "struct gnttab_unmap_grant_ref", GnttabUnmapGrantRef, 24, {
        host_addr: 0,
        dev_bus_addr: 8,
        handle: 16,
        status: 20,
        _pad0: 22,
    };
    all, "struct gnttab_setup_table", GnttabSetupTable, 24, {
        dom: 0,
        _pad0: 2,
        nr_frames: 4,
        status: 8,
        _pad1: 10,
        frame_list: 16,
    };
    all, "struct gnttab_query_size", GnttabQuerySize, 16, {
        dom: 0,
        _pad0: 2,
        nr_frames: 4,
        max_nr_frames: 8,
        status: 12,
        _pad1: 14,
    };
    all, "struct gnttab_set_version", GnttabSetVersion, 4, { version: 0 };
    all, "struct gnttab_get_version", GnttabGetVersion, 8, { dom: 0, pad: 2, version: 4 };
    all, "struct gnttab_get_status_frames", GnttabGetStatusFrames, 16, {
        nr_frames: 0,
        dom: 4,
        status: 6,
        frame_list: 8,
    };
}
