//! Converting between the generic timer's counter and nanoseconds, for a counter of any
//! frequency, without a 128-bit division on the common path.
//!
//! Every exit reads the clock and most re-arm a deadline, so this is on the hot path: a
//! frequency that divides 10^9 (QEMU's 62.5 MHz, 1 GHz, 50 MHz, 25 MHz) converts with one
//! multiply or one 64-bit divide; others (19.2 MHz, 24 MHz, 54 MHz boards) take the exact
//! 128-bit formula. Both give the same results.

const NS_PER_S: u64 = 1_000_000_000;

/// Nanoseconds for `count` ticks of a `freq` Hz counter (rounded down, saturating).
pub fn ticks_to_ns(count: u64, freq: u64) -> u64 {
    let freq = freq.max(1);
    if NS_PER_S.is_multiple_of(freq) {
        return count.saturating_mul(NS_PER_S / freq);
    }
    u64::try_from(u128::from(count) * u128::from(NS_PER_S) / u128::from(freq)).unwrap_or(u64::MAX)
}

/// The counter value at `ns` (rounded up, so that a deadline is never early; saturating).
pub fn ns_to_ticks(ns: u64, freq: u64) -> u64 {
    let freq = freq.max(1);
    if NS_PER_S.is_multiple_of(freq) {
        return ns.div_ceil(NS_PER_S / freq);
    }
    u64::try_from((u128::from(ns) * u128::from(freq)).div_ceil(u128::from(NS_PER_S))).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_ns(count: u64, freq: u64) -> u64 {
        u64::try_from(u128::from(count) * 1_000_000_000 / u128::from(freq)).unwrap_or(u64::MAX)
    }

    fn exact_ticks(ns: u64, freq: u64) -> u64 {
        u64::try_from((u128::from(ns) * u128::from(freq)).div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
    }

    #[test]
    fn every_frequency_agrees_with_the_exact_formula() {
        let freqs = [62_500_000, 1_000_000_000, 50_000_000, 19_200_000, 24_000_000, 54_000_000, 1, 3];
        let values = [0, 1, 15, 16, 17, 999_999_999, 1 << 40, u64::MAX / 3, u64::MAX - 1, u64::MAX];
        for freq in freqs {
            for v in values {
                assert_eq!(ticks_to_ns(v, freq), exact_ns(v, freq), "ticks {v} at {freq} Hz");
                assert_eq!(ns_to_ticks(v, freq), exact_ticks(v, freq), "ns {v} at {freq} Hz");
            }
        }
    }

    #[test]
    fn a_deadline_is_never_early() {
        for ns in [1u64, 15, 16, 17, 1_000_001] {
            let ticks = ns_to_ticks(ns, 62_500_000);
            assert!(ticks_to_ns(ticks, 62_500_000) >= ns);
        }
    }
}
