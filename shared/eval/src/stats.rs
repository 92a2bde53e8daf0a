//! Statistics that say which differences are real.
//!
//! * **Percentile bootstrap** over tasks: a column's statistic recomputed on `B` resamples of the
//!   tasks (drawn with replacement); the 95 % interval is the 2.5th and 97.5th percentiles.
//!   Resampling tasks, not tokens, keeps a long answer's tokens together.
//! * **Paired bootstrap** for two methods on the same tasks: the same resamples applied to both,
//!   the interval of the difference, and a two-sided p-value
//!   `p = min(1, 2 · min(P*(d ≤ 0), P*(d ≥ 0)))` over the resampled differences `d`.
//! * **Exact McNemar test** for pass@1: of the tasks where exactly one method passes, `b` favour
//!   the first and `c` the second; under no difference `b ~ Binomial(b + c, 1/2)`, so
//!   `p = min(1, 2 · Σ_{i ≤ min(b,c)} C(b+c, i) / 2^(b+c))`.

use serde::{Deserialize, Serialize};

/// Resamples per interval.
pub const RESAMPLES: usize = 2000;

/// A figure and its 95 % bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// A small deterministic generator (SplitMix64): intervals are reproducible run to run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The `B` resamples of `n` task indices (the same for every column, so paired figures share
/// them).
pub fn resamples(n: usize, b: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = SplitMix(seed);
    (0..b)
        .map(|_| (0..n).map(|_| rng.below(n.max(1))).collect())
        .collect()
}

/// `stat` on all `n` tasks with its 95 % interval over `draws` (see [`resamples`]); `None`
/// when `stat` has no value on the full set.
pub fn bootstrap(
    n: usize,
    draws: &[Vec<usize>],
    stat: &dyn Fn(&[usize]) -> Option<f64>,
) -> Option<Estimate> {
    let all: Vec<usize> = (0..n).collect();
    let value = stat(&all)?;
    let mut v: Vec<f64> = draws.iter().filter_map(|d| stat(d)).collect();
    let (lo, hi) = percentiles(&mut v);
    Some(Estimate { value, lo, hi })
}

/// The 2.5th and 97.5th percentiles (nearest rank).
fn percentiles(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.025), at(0.975))
}

/// A paired difference (first − second) with its interval and p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    pub difference: Estimate,
    pub p_value: f64,
}

/// `diff` on all `n` paired tasks and over `draws`.
pub fn paired_bootstrap(
    n: usize,
    draws: &[Vec<usize>],
    diff: &dyn Fn(&[usize]) -> Option<f64>,
) -> Option<PairedDifference> {
    let difference = bootstrap(n, draws, diff)?;
    let ds: Vec<f64> = draws.iter().filter_map(|d| diff(d)).collect();
    let share = |f: &dyn Fn(f64) -> bool| {
        ds.iter().filter(|&&d| f(d)).count() as f64 / ds.len().max(1) as f64
    };
    let p_value = (2.0 * share(&|d| d <= 0.0).min(share(&|d| d >= 0.0))).min(1.0);
    Some(PairedDifference {
        difference,
        p_value,
    })
}

/// The exact McNemar test on paired pass/fail outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Tasks the first method passes and the second fails.
    pub first_only: usize,
    /// Tasks the second passes and the first fails.
    pub second_only: usize,
    pub p_value: f64,
}

pub fn mcnemar(pairs: &[(bool, bool)]) -> McNemar {
    let b = pairs.iter().filter(|(x, y)| *x && !*y).count();
    let c = pairs.iter().filter(|(x, y)| !*x && *y).count();
    let n = b + c;
    // Σ_{i ≤ k} C(n, i) / 2^n, with the terms built up in floating point.
    let k = b.min(c);
    let mut term = 0.5f64.powi(n as i32);
    let mut tail = 0.0;
    for i in 0..=k {
        tail += term;
        term *= (n - i) as f64 / (i + 1) as f64;
    }
    McNemar {
        first_only: b,
        second_only: c,
        p_value: (2.0 * tail).min(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_by_hand() {
        // b = 1, c = 6: 2 · (1 + 7) / 128 = 0.125.
        let mut pairs = vec![(true, false)];
        pairs.extend(std::iter::repeat_n((false, true), 6));
        pairs.extend(std::iter::repeat_n((true, true), 10));
        let m = mcnemar(&pairs);
        assert_eq!((m.first_only, m.second_only), (1, 6));
        assert!((m.p_value - 0.125).abs() < 1e-12);
        assert_eq!(mcnemar(&[(true, true), (false, false)]).p_value, 1.0);
        // b = 0, c = 10: 2 / 1024.
        let m = mcnemar(&[(false, true); 10]);
        assert!((m.p_value - 2.0 / 1024.0).abs() < 1e-12);
    }

    #[test]
    fn intervals_cover_the_mean_and_narrow_with_more_tasks() {
        let mean = |x: &[f64]| {
            let x = x.to_vec();
            move |idx: &[usize]| {
                Some(idx.iter().map(|&i| x[i]).sum::<f64>() / idx.len().max(1) as f64)
            }
        };
        let small: Vec<f64> = (0..20).map(|i| (i % 2) as f64).collect();
        let large: Vec<f64> = (0..400).map(|i| (i % 2) as f64).collect();
        let e1 = bootstrap(20, &resamples(20, 2000, 1), &mean(&small)).unwrap();
        let e2 = bootstrap(400, &resamples(400, 2000, 1), &mean(&large)).unwrap();
        assert_eq!(e1.value, 0.5);
        assert!(e1.lo < 0.5 && e1.hi > 0.5);
        assert!(e2.hi - e2.lo < (e1.hi - e1.lo) / 2.0, "{e1:?} {e2:?}");
        // Normal approximation for the 20-task mean of a fair coin: ±1.96 · 0.5 / √20 ≈ ±0.22.
        assert!((e1.hi - e1.lo - 0.44).abs() < 0.1, "{e1:?}");
    }

    #[test]
    fn paired_differences_see_a_consistent_shift_and_not_noise() {
        let a: Vec<f64> = (0..50).map(|i| (i as f64 * 0.37).sin()).collect();
        let shifted: Vec<f64> = a.iter().map(|x| x + 0.05).collect();
        let draws = resamples(50, 2000, 7);
        let diff = |x: Vec<f64>, y: Vec<f64>| {
            move |idx: &[usize]| {
                Some(idx.iter().map(|&i| x[i] - y[i]).sum::<f64>() / idx.len() as f64)
            }
        };
        let d = paired_bootstrap(50, &draws, &diff(shifted, a.clone())).unwrap();
        assert!((d.difference.value - 0.05).abs() < 1e-12 && d.p_value < 0.01);
        let noise: Vec<f64> = (0..50)
            .map(|i| if i % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        let d = paired_bootstrap(50, &draws, &diff(noise, vec![0.0; 50])).unwrap();
        assert!(d.difference.lo < 0.0 && d.difference.hi > 0.0 && d.p_value > 0.2);
    }
}
