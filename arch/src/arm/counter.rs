//! Converting between the generic timer's counter and nanoseconds, for a counter of any
//! frequency, without a 128-bit division on the common path.
//!
//! Every exit reads the clock and most re-arm a deadline, so this is on the hot path: a
//! frequency that divides 10^9 (QEMU's 62.5 MHz, 1 GHz, 50 MHz, 25 MHz) converts with one
//! multiply or one 64-bit divide; others (19.2 MHz, 24 MHz, 54 MHz boards) take the exact
//! 128-bit formula. Both give the same results.

const NS_PER_S: u64 = 1_000_000_000;

/// Nanoseconds per tick when that is a whole number (the frequency divides 10^9).
pub fn ns_per_tick(freq: u64) -> Option<u64> {
    (freq > 0 && NS_PER_S.is_multiple_of(freq)).then(|| NS_PER_S / freq)
}

/// A counter's conversion worked out once: a shift when a tick is a power-of-two number of
/// ns (QEMU's 62.5 MHz: 16 ns), for 32-bit CPUs, where a 64-bit divide is a library routine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// A tick is `1 << n` ns.
    Shift(u32),
    /// Any other frequency (Hz).
    General(u64),
}

impl Scale {
    pub fn of(freq: u64) -> Scale {
        match ns_per_tick(freq) {
            Some(ns) if ns.is_power_of_two() => Scale::Shift(ns.trailing_zeros()),
            _ => Scale::General(freq),
        }
    }

    /// As [`ticks_to_ns`].
    pub fn to_ns(self, count: u64) -> u64 {
        match self {
            Scale::Shift(n) => {
                if count.leading_zeros() < n {
                    u64::MAX
                } else {
                    count << n
                }
            }
            Scale::General(freq) => ticks_to_ns(count, freq),
        }
    }

    /// As [`ns_to_ticks`].
    pub fn to_ticks(self, ns: u64) -> u64 {
        match self {
            Scale::Shift(n) => (ns >> n) + u64::from(ns & ((1 << n) - 1) != 0),
            Scale::General(freq) => ns_to_ticks(ns, freq),
        }
    }
}

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
    fn a_scale_agrees_with_the_exact_formula() {
        let freqs = [62_500_000, 1_000_000_000, 500_000_000, 50_000_000, 19_200_000, 1];
        let values = [0, 1, 15, 16, 17, 999_999_999, 1 << 40, 1 << 60, u64::MAX / 3, u64::MAX - 1, u64::MAX];
        for freq in freqs {
            let scale = Scale::of(freq);
            for v in values {
                assert_eq!(scale.to_ns(v), exact_ns(v, freq), "ticks {v} at {freq} Hz ({scale:?})");
                assert_eq!(scale.to_ticks(v), exact_ticks(v, freq), "ns {v} at {freq} Hz ({scale:?})");
            }
        }
        assert_eq!(Scale::of(62_500_000), Scale::Shift(4));
        assert_eq!(Scale::of(50_000_000), Scale::General(50_000_000));
    }

    #[test]
    fn whole_periods_are_found_and_others_are_not() {
        assert_eq!(ns_per_tick(62_500_000), Some(16));
        assert_eq!(ns_per_tick(1_000_000_000), Some(1));
        assert_eq!(ns_per_tick(19_200_000), None);
        assert_eq!(ns_per_tick(0), None);
    }

    #[test]
    fn a_deadline_is_never_early() {
        for ns in [1u64, 15, 16, 17, 1_000_001] {
            let ticks = ns_to_ticks(ns, 62_500_000);
            assert!(ticks_to_ns(ticks, 62_500_000) >= ns);
        }
    }
}
