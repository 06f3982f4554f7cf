//! `xen_version` sub-operations (`version.h`, `XENVER_*`).

pub const XENVER_VERSION: u64 = 0;
pub const XENVER_EXTRAVERSION: u64 = 1;
pub const XENVER_COMPILE_INFO: u64 = 2;
pub const XENVER_CAPABILITIES: u64 = 3;
pub const XENVER_CHANGESET: u64 = 4;
pub const XENVER_PLATFORM_PARAMETERS: u64 = 5;
pub const XENVER_GET_FEATURES: u64 = 6;
pub const XENVER_PAGESIZE: u64 = 7;
pub const XENVER_GUEST_HANDLE: u64 = 8;
pub const XENVER_COMMANDLINE: u64 = 9;
pub const XENVER_BUILD_ID: u64 = 10;

/// `xen_extraversion_t` is a 16-byte string.
pub const EXTRAVERSION_LEN: usize = 16;

/// The major and minor version packed as `xen_version(XENVER_version)` returns them.
pub const fn pack_version(major: u32, minor: u32) -> u64 {
    ((major as u64) << 16) | (minor as u64 & 0xffff)
}
