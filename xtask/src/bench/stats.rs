//! Small statistics: medians with their spread, Jain's fairness index, max/min.

/// The median, smallest and largest of some values (NaNs ignored); `None` if there are none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

pub(crate) fn spread(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some(Spread { median, min: v[0], max: v[n - 1] })
}

/// Jain's fairness index, (Σx)² / (n·Σx²): 1 when every worker served the same, 1/n when one
/// served everything. `n` counts every slot given, zeros included. `None` if all are zero.
pub(crate) fn jain(counts: &[u64]) -> Option<f64> {
    let sum: f64 = counts.iter().map(|&x| x as f64).sum();
    let squares: f64 = counts.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if squares == 0.0 {
        return None;
    }
    Some(sum * sum / (counts.len() as f64 * squares))
}

/// The busiest worker's count over the idlest one's: infinite if one served nothing.
pub(crate) fn max_over_min(counts: &[u64]) -> Option<f64> {
    let max = *counts.iter().max()?;
    let min = *counts.iter().min()?;
    if max == 0 {
        return None;
    }
    Some(if min == 0 { f64::INFINITY } else { max as f64 / min as f64 })
}

/// Per-worker counts padded with zeros up to `expected` workers (a worker that served nothing
/// sends no body to count it by).
pub(crate) fn padded(counts: impl IntoIterator<Item = u64>, expected: usize) -> Vec<u64> {
    let mut v: Vec<u64> = counts.into_iter().collect();
    if v.len() < expected {
        v.resize(expected, 0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index() {
        assert_eq!(jain(&[10, 10, 10, 10]), Some(1.0));
        assert_eq!(jain(&[40, 0, 0, 0]), Some(0.25));
        // (1+2+3)^2 / (3 * (1+4+9)) = 36/42
        assert!((jain(&[1, 2, 3]).unwrap() - 36.0 / 42.0).abs() < 1e-12);
        assert_eq!(jain(&[0, 0]), None);
        assert_eq!(jain(&padded([50, 50], 4)), Some(0.5));
    }

    #[test]
    fn max_min_and_medians() {
        assert_eq!(max_over_min(&[30, 10, 20]), Some(3.0));
        assert_eq!(max_over_min(&[5, 0]), Some(f64::INFINITY));
        assert_eq!(max_over_min(&[]), None);
        let s = spread([3.0, 1.0, f64::NAN, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(spread([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(spread([]), None);
    }
}
