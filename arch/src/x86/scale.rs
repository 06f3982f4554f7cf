//! Rate conversions without a division on the hot path: `x * to / from` as one multiply by a
//! fixed-point factor and a shift, the factor computed once from the calibrated rates.
//!
//! A 64-bit `x` times a 64-bit factor is one `MUL` on x86_64 (the 128-bit product in RDX:RAX),
//! so the product never overflows and only the result needs clamping; a 128-bit *division*
//! instead calls the slow `__udivti3` helper. The host clock (TSC ticks to nanoseconds) and the
//! host APIC timer (nanoseconds to timer ticks) are converted this way on every guest entry.

/// `x * to / from`, rounded down, for `x` up to `max_in` (larger inputs are clamped to it) and
/// results clamped to `u64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// `floor(to * 2^shift / from)`: the largest `shift` (at most 64) that keeps it in 64 bits,
    /// for the most significant bits of the ratio.
    mult: u64,
    shift: u32,
    max_in: u64,
}

impl Scale {
    /// The conversion by `to / from` (`from` of 0 is taken as 1).
    pub fn new(to: u64, from: u64, max_in: u64) -> Scale {
        let from = u128::from(from.max(1));
        // The factor is rounded down by less than one, so a result is below the exact quotient
        // by less than `x / 2^shift`: under one for every input when the ratio is below one
        // (shift 64), and for results below 2^63 otherwise (the factor is at least 2^63).
        let mut shift = 64;
        while (u128::from(to) << shift) / from > u128::from(u64::MAX) {
            shift -= 1;
        }
        let mult = ((u128::from(to) << shift) / from) as u64;
        Scale { mult, shift, max_in }
    }

    /// `x * to / from`, at most one below the exact quotient (see [`Scale::new`]).
    pub fn apply(self, x: u64) -> u64 {
        let product = u128::from(x.min(self.max_in)) * u128::from(self.mult);
        u64::try_from(product >> self.shift).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 1_000_000_000;

    fn exact(x: u64, to: u64, from: u64) -> u64 {
        u64::try_from(u128::from(x) * u128::from(to) / u128::from(from)).unwrap_or(u64::MAX)
    }

    fn inputs() -> impl Iterator<Item = u64> {
        let seconds = (0..=5).map(|s| s * NS);
        let odd = (0..64).map(|k| 1u64 << k).chain([1, 3, 999, 123_456_789, 4_294_967_295, 7 * NS + 13]);
        seconds.chain(odd)
    }

    #[test]
    fn nanoseconds_to_apic_ticks_is_within_one_tick() {
        // Bus clocks of real APIC timers, QEMU's 1 GHz and awkward calibrations.
        for hz in [25_000_000, 100_000_000, 133_333_333, NS, 999_999_937, 3_700_000_001] {
            let s = Scale::new(hz, NS, 5 * NS);
            for ns in inputs().filter(|&ns| ns <= 5 * NS) {
                let (got, want) = (s.apply(ns), exact(ns, hz, NS));
                assert!(got <= want && want - got <= 1, "hz {hz} ns {ns}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn tsc_ticks_to_nanoseconds_is_within_one_nanosecond() {
        for hz in [1_000_000, 1_193_182, NS, 2_399_999_999, 5_000_000_000] {
            let s = Scale::new(NS, hz, u64::MAX);
            for ticks in inputs() {
                let (got, want) = (s.apply(ticks), exact(ticks, NS, hz));
                assert!(got <= want && want - got <= 1, "hz {hz} ticks {ticks}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn exact_ratios_are_exact_and_large_inputs_clamp() {
        let s = Scale::new(NS, NS, u64::MAX);
        assert_eq!(s.apply(123_456_789_012), 123_456_789_012);
        let s = Scale::new(2 * NS, NS, 5 * NS);
        assert_eq!(s.apply(u64::MAX), 10 * NS);
        assert_eq!(Scale::new(u64::MAX, 1, u64::MAX).apply(u64::MAX), u64::MAX);
        assert_eq!(Scale::new(1, 0, u64::MAX).apply(7), 7);
    }
}
