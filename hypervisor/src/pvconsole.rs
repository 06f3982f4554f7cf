//! The PV console backend's view of a `xencons_interface` ring page.
//!
//! The guest produces into `out` and advances `out_prod`; we consume and advance `out_cons`.
//! Indices are free-running; the guest controls them, so a producer index that claims more
//! than the ring holds is clamped, never trusted.

use crate::page::HostPage;
use core::mem::offset_of;
use guest_abi::console::{XENCONS_OUT_SIZE, XenconsInterface};

const OUT: usize = offset_of!(XenconsInterface, out);
const OUT_CONS: usize = offset_of!(XenconsInterface, out_cons);
const OUT_PROD: usize = offset_of!(XenconsInterface, out_prod);

/// Copy the guest's pending output into `buf` (at least the ring's size) and consume it.
pub fn drain_output(ring: &mut HostPage, buf: &mut [u8; XENCONS_OUT_SIZE]) -> usize {
    let cons = ring.u32_at(OUT_CONS);
    let prod = ring.u32_at(OUT_PROD);
    let n = (prod.wrapping_sub(cons) as usize).min(XENCONS_OUT_SIZE);
    for (i, b) in buf.iter_mut().take(n).enumerate() {
        *b = ring.data[OUT + (cons as usize).wrapping_add(i) % XENCONS_OUT_SIZE];
    }
    ring.set_u32(OUT_CONS, cons.wrapping_add(n as u32));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(cons: u32, text: &[u8]) -> HostPage {
        let mut ring = HostPage::on_heap(0);
        for (i, b) in text.iter().enumerate() {
            ring.data[OUT + (cons as usize + i) % XENCONS_OUT_SIZE] = *b;
        }
        ring.set_u32(OUT_CONS, cons);
        ring.set_u32(OUT_PROD, cons.wrapping_add(text.len() as u32));
        ring
    }

    #[test]
    fn drains_across_the_wrap_and_index_overflow() {
        let mut ring = ring_with(u32::MAX - 2, b"hello");
        let mut buf = [0; XENCONS_OUT_SIZE];
        assert_eq!(drain_output(&mut ring, &mut buf), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(ring.u32_at(OUT_CONS), 2);
        assert_eq!(drain_output(&mut ring, &mut buf), 0);
    }

    #[test]
    fn a_lying_producer_index_is_clamped_to_the_ring() {
        let mut ring = ring_with(0, b"");
        ring.set_u32(OUT_PROD, 1_000_000);
        let mut buf = [0; XENCONS_OUT_SIZE];
        assert_eq!(drain_output(&mut ring, &mut buf), XENCONS_OUT_SIZE);
    }
}
