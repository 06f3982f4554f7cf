//! `xen_version` sub-operations and their argument structures
//! (`xen/include/public/version.h`, `XENVER_*`).

/// Returns the major version in bits 31:16 and the minor in bits 15:0 (see [`pack_version`]).
pub const XENVER_VERSION: u64 = 0;
/// Fills a 16-byte string (`xen_extraversion_t`).
pub const XENVER_EXTRAVERSION: u64 = 1;
/// Fills a [`XenCompileInfo`].
pub const XENVER_COMPILE_INFO: u64 = 2;
/// Fills a 1024-byte string (`xen_capabilities_info_t`).
pub const XENVER_CAPABILITIES: u64 = 3;
/// Fills a 64-byte string (`xen_changeset_info_t`).
pub const XENVER_CHANGESET: u64 = 4;
/// Fills a [`XenPlatformParameters`].
pub const XENVER_PLATFORM_PARAMETERS: u64 = 5;
/// Fills a [`XenFeatureInfo`] (see [`crate::features`]).
pub const XENVER_GET_FEATURES: u64 = 6;
/// Returns the hypervisor's page size; the argument is ignored.
pub const XENVER_PAGESIZE: u64 = 7;
/// Fills the domain's 16-byte handle (`xen_domain_handle_t`).
pub const XENVER_GUEST_HANDLE: u64 = 8;
/// Fills a 1024-byte string (`xen_commandline_t`).
pub const XENVER_COMMANDLINE: u64 = 9;
/// Fills a `xen_build_id` (a length followed by that many bytes).
pub const XENVER_BUILD_ID: u64 = 10;
/// The `*2` forms fill a `xen_varbuf` (a length followed by that many bytes) instead of a
/// fixed-size buffer.
pub const XENVER_EXTRAVERSION2: u64 = 11;
pub const XENVER_CAPABILITIES2: u64 = 12;
pub const XENVER_CHANGESET2: u64 = 13;
pub const XENVER_COMMANDLINE2: u64 = 14;

/// `xen_extraversion_t` is a 16-byte string.
pub const EXTRAVERSION_LEN: usize = 16;
/// `xen_capabilities_info_t` is a 1024-byte string.
pub const CAPABILITIES_INFO_LEN: usize = 1024;
/// `xen_changeset_info_t` is a 64-byte string.
pub const CHANGESET_INFO_LEN: usize = 64;
/// `xen_commandline_t` is a 1024-byte string.
pub const COMMANDLINE_LEN: usize = 1024;
/// `xen_domain_handle_t` is 16 bytes.
pub const DOMAIN_HANDLE_LEN: usize = 16;

/// The major and minor version packed as `xen_version(XENVER_version)` returns them.
pub const fn pack_version(major: u32, minor: u32) -> u64 {
    ((major as u64) << 16) | (minor as u64 & 0xffff)
}

/// `struct xen_compile_info`: NUL-padded strings describing the hypervisor build.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenCompileInfo {
    pub compiler: [u8; 64],
    pub compile_by: [u8; 16],
    pub compile_domain: [u8; 32],
    pub compile_date: [u8; 32],
}

impl Default for XenCompileInfo {
    fn default() -> Self {
        Self { compiler: [0; 64], compile_by: [0; 16], compile_domain: [0; 32], compile_date: [0; 32] }
    }
}

/// `struct xen_platform_parameters`. `virt_start` is a `xen_ulong_t`: 8 bytes on x86_64 and
/// on ARM (32-bit x86 guests, which are not covered here, see 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenPlatformParameters {
    /// Lowest virtual address the hypervisor reserves in PV guests.
    pub virt_start: u64,
}

/// `struct xen_feature_info`, the argument of `XENVER_get_features`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenFeatureInfo {
    /// In: which 32-bit group of feature bits to return.
    pub submap_idx: u32,
    /// Out: that group's bits.
    pub submap: u32,
}

/// The fixed head of `struct xen_build_id` / `struct xen_varbuf`: the buffer length, followed
/// in guest memory by the bytes themselves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenVarbufHeader {
    /// In: the size of the buffer following this field; out: the bytes used.
    pub len: u32,
}

layout_checks! {
    test layouts;
    all, "struct xen_compile_info", XenCompileInfo, 144, {
        compiler: 0,
        compile_by: 64,
        compile_domain: 80,
        compile_date: 112,
    };
    all, "struct xen_platform_parameters", XenPlatformParameters, 8, {
        virt_start: 0,
    };
    all, "struct xen_feature_info", XenFeatureInfo, 8, {
        submap_idx: 0,
        submap: 4,
    };
    // The flexible array adds nothing to sizeof; `buf` starts at 4.
    all, "struct xen_varbuf", XenVarbufHeader, 4, { len: 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_packing() {
        assert_eq!(pack_version(4, 19), 0x0004_0013);
    }
}
