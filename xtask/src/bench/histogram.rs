//! A log-linear latency histogram in microseconds: exact below 64 µs, then 32 buckets per
//! power of two (at most about 3% wide), up to about 71 minutes. Fixed size, so a load thread
//! records each request in O(1) with no allocation, and histograms merge by adding counts.

/// Buckets below this hold one microsecond value each.
const LINEAR: u64 = 64;
/// Buckets per power of two above `LINEAR`.
const SUB: u64 = 32;
/// Values above this are clamped into the last bucket.
const MAX_US: u64 = (1 << 32) - 1;
/// Number of buckets: 64 linear, then 32 for each of the 26 powers of two from 2^6 to 2^31.
pub(crate) const BUCKETS: usize = (LINEAR + 26 * SUB) as usize;

#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0 }
    }

    /// The bucket a value falls into.
    fn index(us: u64) -> usize {
        let us = us.min(MAX_US);
        if us < LINEAR {
            return us as usize;
        }
        let top = 63 - u64::from(us.leading_zeros()); // >= 6
        let shift = top - 5; // >= 1; `us >> shift` is in [32, 64)
        (LINEAR + (shift - 1) * SUB + ((us >> shift) - SUB)) as usize
    }

    /// The smallest and largest values of a bucket.
    fn bounds(index: usize) -> (u64, u64) {
        let index = index as u64;
        if index < LINEAR {
            return (index, index);
        }
        let shift = (index - LINEAR) / SUB + 1;
        let mantissa = (index - LINEAR) % SUB + SUB;
        let low = mantissa << shift;
        (low, low + (1 << shift) - 1)
    }

    pub(crate) fn record(&mut self, us: u64) {
        self.counts[Self::index(us)] += 1;
        self.total += 1;
    }

    /// Adds one count to a bucket by index (for histograms that travelled as text).
    pub(crate) fn add_bucket(&mut self, index: usize, count: u64) -> Result<(), String> {
        let slot = self.counts.get_mut(index).ok_or_else(|| format!("no bucket {index}"))?;
        *slot += count;
        self.total += count;
        Ok(())
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The non-empty buckets as `(index, count)`.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts.iter().copied().enumerate().filter(|&(_, c)| c > 0)
    }

    /// The value at quantile `q` (0..=1) in microseconds: the midpoint of the bucket holding
    /// the `ceil(q * total)`-th smallest value. `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.buckets() {
            seen += count;
            if seen >= rank {
                let (low, high) = Self::bounds(index);
                return Some((low + high) as f64 / 2.0);
            }
        }
        unreachable!("rank <= total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_that_holds_it() {
        for us in (0..5_000).chain([65_535, 1 << 20, (1 << 31) + 12_345, MAX_US]) {
            let (low, high) = Histogram::bounds(Histogram::index(us));
            assert!(low <= us && us <= high, "{us} outside bucket [{low}, {high}]");
            assert!((high - low) as f64 <= 1.0 + us as f64 / 32.0, "{us}: bucket too wide");
        }
        assert_eq!(Histogram::index(MAX_US), BUCKETS - 1);
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = Histogram::new();
        for us in 1..=10_000 {
            h.record(us);
        }
        for (q, expected) in [(0.5, 5_000.0), (0.99, 9_900.0), (0.999, 9_990.0)] {
            let got = h.quantile(q).unwrap();
            assert!((got - expected).abs() / expected < 0.035, "q{q}: {got} vs {expected}");
        }
        assert_eq!(h.quantile(0.0), Some(1.0));
    }

    #[test]
    fn small_values_are_exact_and_merging_adds() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for _ in 0..90 {
            a.record(10);
        }
        for _ in 0..10 {
            b.record(40);
        }
        a.merge(&b);
        assert_eq!(a.total(), 100);
        assert_eq!(a.quantile(0.5), Some(10.0));
        assert_eq!(a.quantile(0.9), Some(10.0));
        assert_eq!(a.quantile(0.91), Some(40.0));
        assert_eq!(Histogram::new().quantile(0.5), None);
    }
}
