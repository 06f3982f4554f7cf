//! Frames of a domain's RAM that a hypervisor page now covers in its EPT/NPT (shared_info,
//! a grant frame mapped with `add_to_physmap` over a page of RAM).
//!
//! The guest sees the hypervisor's page at such a frame, so the hypervisor must not reach
//! the RAM page underneath when it copies hypercall arguments: that would read what the guest
//! cannot see (a stale `SCHEDOP_shutdown` reason of 0 powered a guest off) and write where it
//! cannot look. Copies through them fail instead, as on ARM, where the stage-2 walk finds the
//! hypervisor's page outside RAM. The set is bounded; a full set refuses further remaps.

/// Page size of the frames tracked.
const PAGE: u64 = 4096;
/// RAM frames a domain may cover with hypervisor pages (Linux uses shared_info and a few
/// grant frames).
pub const MAX_HIDDEN: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct HiddenFrames {
    frames: [u64; MAX_HIDDEN],
    len: usize,
}

impl Default for HiddenFrames {
    fn default() -> Self {
        Self { frames: [0; MAX_HIDDEN], len: 0 }
    }
}

impl HiddenFrames {
    /// Record that the page at `gpa` is covered; `false` (nothing recorded) when full.
    pub fn hide(&mut self, gpa: u64) -> bool {
        let frame = gpa / PAGE;
        if self.frames[..self.len].contains(&frame) {
            return true;
        }
        if self.len == MAX_HIDDEN {
            return false;
        }
        self.frames[self.len] = frame;
        self.len += 1;
        true
    }

    /// Whether `[gpa, gpa + len)` touches a covered page.
    pub fn hides(&self, gpa: u64, len: u64) -> bool {
        let first = gpa / PAGE;
        let last = gpa.saturating_add(len.max(1) - 1) / PAGE;
        self.frames[..self.len].iter().any(|&f| f >= first && f <= last)
    }

    /// Whether another frame could still be covered.
    pub fn is_full(&self) -> bool {
        self.len == MAX_HIDDEN
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
    }
}
