//! Frames of a domain's RAM that a page from elsewhere now covers in its EPT/NPT (shared_info,
//! a grant frame mapped with `add_to_physmap`, another domain's page mapped through a grant).
//!
//! The guest sees that other page at such a frame, so the hypervisor must not reach the RAM
//! page underneath when it copies hypercall arguments: that would read what the guest cannot
//! see (a stale `SCHEDOP_shutdown` reason of 0 powered a guest off) and write where it cannot
//! look. Copies through them fail instead, as on ARM, where the stage-2 walk finds a page
//! outside the domain's RAM. The set is bounded; a full set refuses further remaps.

extern crate alloc;

use alloc::collections::BTreeSet;

/// Page size of the frames tracked.
const PAGE: u64 = 4096;
/// RAM frames a domain may cover at once: shared_info and grant frames, plus every grant
/// mapping the core allows a domain to hold (its maptrack limit).
pub const MAX_HIDDEN: usize = 4096 + 64;

#[derive(Clone, Debug, Default)]
pub struct HiddenFrames {
    frames: BTreeSet<u64>,
}

impl HiddenFrames {
    /// Record that the page at `gpa` is covered; `false` (nothing recorded) when full.
    pub fn hide(&mut self, gpa: u64) -> bool {
        let frame = gpa / PAGE;
        if self.frames.contains(&frame) {
            return true;
        }
        if self.is_full() {
            return false;
        }
        self.frames.insert(frame)
    }

    /// The page at `gpa` is the domain's own RAM again.
    pub fn reveal(&mut self, gpa: u64) {
        self.frames.remove(&(gpa / PAGE));
    }

    /// Whether `[gpa, gpa + len)` touches a covered page.
    pub fn hides(&self, gpa: u64, len: u64) -> bool {
        let first = gpa / PAGE;
        let last = gpa.saturating_add(len.max(1) - 1) / PAGE;
        self.frames.range(first..=last).next().is_some()
    }

    /// Whether another frame could still be covered.
    pub fn is_full(&self) -> bool {
        self.frames.len() >= MAX_HIDDEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_covered_page_hides_every_range_that_touches_it() {
        let mut h = HiddenFrames::default();
        assert!(h.hide(0x5000));
        assert!(h.hides(0x5000, 1));
        assert!(h.hides(0x5fff, 1));
        assert!(h.hides(0x4ff8, 16), "straddles into it");
        assert!(!h.hides(0x4000, 0x1000));
        assert!(!h.hides(0x6000, 8));
        assert!(!h.hides(u64::MAX, 8), "no overflow at the top");
    }

    #[test]
    fn the_set_is_bounded_and_remapping_a_covered_page_costs_nothing() {
        let mut h = HiddenFrames::default();
        for i in 0..MAX_HIDDEN as u64 {
            assert!(h.hide(i * PAGE));
        }
        assert!(h.is_full());
        assert!(h.hide(0), "already covered");
        assert!(!h.hide(MAX_HIDDEN as u64 * PAGE));
        assert!(!h.hides(MAX_HIDDEN as u64 * PAGE, 8));
        // A page given back frees its place.
        h.reveal(0);
        assert!(!h.hides(0, 8));
        assert!(h.hide(MAX_HIDDEN as u64 * PAGE));
    }
}
