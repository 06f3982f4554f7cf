//! Who we say we are to guests and in the banner.

/// The Xen interface version we implement (Linux needs at least 4.x; ARM guests see
/// `xen,xen-4.17` in their device tree).
pub const XEN_MAJOR: u32 = 4;
pub const XEN_MINOR: u32 = 17;
/// Returned by `XENVER_extraversion`: fits the 16-byte `xen_extraversion_t` with its NUL.
pub const XEN_EXTRAVERSION: &[u8] = b"-xhv";
/// Our own version, printed in the banner.
pub const HV_VERSION: &str = env!("CARGO_PKG_VERSION");
pub const HV_NAME: &str = "xhv";
