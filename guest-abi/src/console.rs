//! The console: `console_io` sub-operations (`CONSOLEIO_*`, from `xen/include/public/xen.h`)
//! and the shared console ring page (`xen/include/public/io/console.h`).
//!
//! The ring page is the one named by `HVM_PARAM_CONSOLE_PFN` and signalled through the event
//! channel in `HVM_PARAM_CONSOLE_EVTCHN`.

/// `console_io(CONSOLEIO_write, count, buffer)`: write bytes to the hypervisor console.
pub const CONSOLEIO_WRITE: u64 = 0;
/// `console_io(CONSOLEIO_read, count, buffer)`: read bytes from the hypervisor console.
pub const CONSOLEIO_READ: u64 = 1;

/// `XENCONS_RING_IDX`: a free-running ring index; reduce it with [`mask_xencons_idx`].
pub type XenconsRingIdx = u32;

/// Bytes in the `in` ring ([`XenconsInterface`]`::r#in`, input to the guest).
pub const XENCONS_IN_SIZE: usize = 1024;
/// Bytes in [`XenconsInterface::out`] (output from the guest).
pub const XENCONS_OUT_SIZE: usize = 2048;

/// [`XenconsInterface::connection`]: the backend is not (yet) servicing the ring.
pub const XENCONSOLE_DISCONNECTED: u8 = 1;
/// [`XenconsInterface::connection`]: the backend services the ring.
pub const XENCONSOLE_CONNECTED: u8 = 0;

/// Reduces a free-running index to a position in a ring of `ring_size` bytes (a power of
/// two): the Rust form of `MASK_XENCONS_IDX`.
pub const fn mask_xencons_idx(idx: XenconsRingIdx, ring_size: usize) -> usize {
    (idx as usize) & (ring_size - 1)
}

/// `struct xencons_interface`: the console page shared by a guest and its console backend.
///
/// The guest consumes `in` (advancing `in_cons`, the backend advances `in_prod`) and
/// produces into `out` (advancing `out_prod`, the backend advances `out_cons`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenconsInterface {
    /// Bytes travelling towards the guest.
    pub r#in: [u8; XENCONS_IN_SIZE],
    /// Bytes travelling from the guest.
    pub out: [u8; XENCONS_OUT_SIZE],
    pub in_cons: XenconsRingIdx,
    pub in_prod: XenconsRingIdx,
    pub out_cons: XenconsRingIdx,
    pub out_prod: XenconsRingIdx,
    /// `XENCONSOLE_CONNECTED` or `XENCONSOLE_DISCONNECTED`, written by the backend.
    pub connection: u8,
    /// Implicit C tail padding up to the 4-byte alignment of the indexes.
    pub _pad0: [u8; 3],
}

impl XenconsInterface {
    /// An all-zero page: both rings empty, `connection` = `XENCONSOLE_CONNECTED`.
    pub const fn zeroed() -> Self {
        Self {
            r#in: [0; XENCONS_IN_SIZE],
            out: [0; XENCONS_OUT_SIZE],
            in_cons: 0,
            in_prod: 0,
            out_cons: 0,
            out_prod: 0,
            connection: 0,
            _pad0: [0; 3],
        }
    }
}

impl Default for XenconsInterface {
    fn default() -> Self {
        Self::zeroed()
    }
}

layout_checks! {
    test xencons_interface_layout;
    // 1024 + 2048 bytes of ring, four u32 indexes, one u8, padded to a multiple of 4.
    all, "struct xencons_interface", XenconsInterface, 3092, {
        r#in: 0,
        out: 1024,
        in_cons: 3072,
        in_prod: 3076,
        out_cons: 3080,
        out_prod: 3084,
        connection: 3088,
        _pad0: 3089,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask() {
        assert_eq!(mask_xencons_idx(1025, XENCONS_IN_SIZE), 1);
        assert_eq!(mask_xencons_idx(2048, XENCONS_OUT_SIZE), 0);
        assert_eq!(mask_xencons_idx(u32::MAX, XENCONS_OUT_SIZE), 2047);
    }
}
