//! Epistemic uncertainty by temperature perturbation (U-HLM, arXiv 2412.12687).
//!
//! `u = (1/K) · #{k : d_k ≠ x}` where `d_k ~ softmax(logits / θ_k)`, `θ_k ~ U(0, θ_max)`.
//! A token the draft model would pick at any temperature has `u ≈ 0`; one it picked among
//! near-equals has `u` near 1. U-HLM found the verifier's rejection probability roughly linear in
//! `u` (`β ≈ 0.82 u − 0.06`), hence the risk-averse threshold `u_th = 0.06/0.82 ≈ 0.07`.
//!
//! Computation: only whether `d_k = x` matters, and that event has probability
//! `p_θ(x) = e^{(l_x − m)/θ} / Σ_i e^{(l_i − m)/θ}`; drawing a Bernoulli with that probability is
//! equivalent in distribution to drawing `d_k` and comparing. Its exact normaliser costs a pass of
//! exponentials over the logits per draw (20 · 152k for Qwen); bounds on all K normalisers from one
//! pass (`normaliser.rs`) settle nearly every draw the same way, so a token's `u` costs about
//! one pass (0.4-0.7 ms against 1.8 natively, 0.5 against 4.4 ms in WebAssembly), the same to the
//! bit.

use crate::normaliser::NormaliserBounds;
use crate::sampling::{argmax, exp_neg, sum_exp_shifted, Rng};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// How `u` is computed from the draft's logits.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UncertaintyEstimate {
    /// U-HLM's: K perturbed draws ([`temperature_perturbation`]): random, in steps of `1/K`.
    #[default]
    Sampled,
    /// The probability those draws estimate ([`expected_uncertainty`] with K temperatures, the
    /// same cost): no sampling noise, no ties.
    Expected,
}

impl UncertaintyEstimate {
    pub const ALL: [UncertaintyEstimate; 2] =
        [UncertaintyEstimate::Sampled, UncertaintyEstimate::Expected];

    pub fn as_str(self) -> &'static str {
        match self {
            UncertaintyEstimate::Sampled => "sampled",
            UncertaintyEstimate::Expected => "expected",
        }
    }
}

impl std::fmt::Display for UncertaintyEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UncertaintyEstimate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown uncertainty estimate `{s}` (sampled, expected)"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UncertaintyConfig {
    /// K, the number of perturbed draws (or of temperatures, for the expected value).
    pub draws: usize,
    /// θ_max: temperatures are drawn uniformly from (0, θ_max).
    pub theta_max: f32,
    #[serde(default)]
    pub estimate: UncertaintyEstimate,
}

impl Default for UncertaintyConfig {
    fn default() -> Self {
        Self {
            draws: 20,
            theta_max: 2.0,
            estimate: UncertaintyEstimate::Sampled,
        }
    }
}

/// Runs `f` over ranges that cover `0..n` between them, possibly on several threads, and returns
/// when all calls have (the engine passes its kernels' thread pool; [`serially`] runs them here).
pub type ForRanges<'a> = &'a (dyn Fn(usize, &(dyn Fn(Range<usize>) + Sync)) + Sync);

/// [`ForRanges`] on the calling thread.
pub fn serially(n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    if n > 0 {
        f(0..n)
    }
}

/// The uncertainty of drafting `token` from `logits`, as `cfg.estimate` says (the rng is only
/// drawn from by the sampled estimate).
pub fn uncertainty(logits: &[f32], token: u32, cfg: &UncertaintyConfig, rng: &mut Rng) -> f32 {
    uncertainty_on(logits, token, cfg, rng, &serially)
}

/// [`uncertainty`] with its passes over the logits spread by `par` (the same value).
pub fn uncertainty_on(
    logits: &[f32],
    token: u32,
    cfg: &UncertaintyConfig,
    rng: &mut Rng,
    par: ForRanges,
) -> f32 {
    match cfg.estimate {
        UncertaintyEstimate::Sampled => temperature_perturbation_on(logits, token, cfg, rng, par),
        UncertaintyEstimate::Expected => {
            expected_uncertainty_on(logits, token, cfg.theta_max, cfg.draws, par)
        }
    }
}

/// U-HLM's uncertainty of drafting `token` from `logits` (in `[0, 1]`).
pub fn temperature_perturbation(
    logits: &[f32],
    token: u32,
    cfg: &UncertaintyConfig,
    rng: &mut Rng,
) -> f32 {
    temperature_perturbation_on(logits, token, cfg, rng, &serially)
}

/// [`temperature_perturbation`] with the draws' passes over the logits spread by `par`.
///
/// Draw `k` takes `θ_k ~ U(0, θ_max)` and, unless `θ_k` is ~0 (then `d_k` is the argmax), a
/// uniform `r_k`; it differs from `x` when `r_k ≥ p_θk(x)`. Only the normalisers
/// `Z_k = Σ_i e^{(l_i − m)/θ_k}` cost a pass each, and they do not touch the rng: all `(θ_k, r_k)`
/// are drawn first, in the order of one draw after another, then the passes run (in any order,
/// on any thread), so the result is the same to the bit whatever `par` does.
pub fn temperature_perturbation_on(
    logits: &[f32],
    token: u32,
    cfg: &UncertaintyConfig,
    rng: &mut Rng,
    par: ForRanges,
) -> f32 {
    if logits.is_empty() || cfg.draws == 0 || token as usize >= logits.len() {
        return 1.0;
    }
    let top = argmax(logits);
    let m = logits[top as usize];
    let lx = logits[token as usize] - m;
    // (1/θ_k, r_k) per draw; None for a temperature of ~0.
    let draws: Vec<Option<(f32, f64)>> = (0..cfg.draws)
        .map(|_| {
            let theta = rng.random::<f32>() * cfg.theta_max;
            // As the loop did it: `theta < 1e-6` skips the uniform (a NaN θ takes one).
            if theta < 1e-6 {
                None
            } else {
                Some((1.0 / theta, rng.random::<f64>()))
            }
        })
        .collect();
    let answers = answers_from_bounds(logits, m, lx, top != token, &draws);
    let invs: Vec<f32> = answers
        .iter()
        .filter_map(|a| match *a {
            Answer::NeedsZ { inv, .. } => Some(inv),
            Answer::Differs(_) => None,
        })
        .collect();
    let mut z = normalisers(logits, m, &invs, par).into_iter();
    let differ = answers
        .iter()
        .filter(|a| match **a {
            Answer::Differs(d) => d,
            Answer::NeedsZ { e_x, r, .. } => r >= e_x / z.next().unwrap_or(f64::NAN),
        })
        .count();
    differ as f32 / cfg.draws as f32
}

/// Each draw's answer from bounds on its `Z_k` where they settle it (one pass over the logits
/// for all draws, [`NormaliserBounds`]), else left for `Z_k` itself: the same answers as the
/// exact passes, at about a twentieth of their cost.
fn answers_from_bounds(
    logits: &[f32],
    m: f32,
    lx: f32,
    top_differs: bool,
    draws: &[Option<(f32, f64)>],
) -> Vec<Answer> {
    let bounds = NormaliserBounds::new(logits, m);
    draws
        .iter()
        .map(|d| match *d {
            None => Answer::Differs(top_differs),
            Some((inv, r)) => {
                let e_x = exp_neg(lx * inv) as f64;
                match bounds.as_ref().map(|b| b.bounds(inv)) {
                    // `r ≥ e_x / Z` for every `Z` in `low..=high`, or for none.
                    Some((low, _)) if r >= e_x / low => Answer::Differs(true),
                    Some((_, high)) if r < e_x / high => Answer::Differs(false),
                    _ => Answer::NeedsZ { inv, e_x, r },
                }
            }
        })
        .collect()
}

/// One perturbed draw of [`temperature_perturbation_on`]: settled, or waiting for its `Z_k`.
enum Answer {
    /// Whether the draw differs from the drafted token.
    Differs(bool),
    /// It differs when `r ≥ e_x / Z(inv)`.
    NeedsZ { inv: f32, e_x: f64, r: f64 },
}

/// `Z_k = Σ_i e^{(l_i − m)·inv_k}` for each `inv_k`, one pass each, spread by `par`.
fn normalisers(logits: &[f32], m: f32, invs: &[f32], par: ForRanges) -> Vec<f64> {
    let z: Vec<AtomicU64> = invs.iter().map(|_| AtomicU64::new(0)).collect();
    par(invs.len(), &|range: Range<usize>| {
        for k in range {
            let zk = sum_exp_shifted(logits, m, invs[k]);
            z[k].store(zk.to_bits(), Ordering::Relaxed);
        }
    });
    z.into_iter()
        .map(|a| f64::from_bits(a.into_inner()))
        .collect()
}

/// The value `u` estimates, without its sampling noise: the probability that one perturbed draw
/// differs from `token`,
///
/// `ū = 1 − (1/θ_max) ∫₀^θ_max p_θ(x) dθ`,
///
/// by the midpoint rule over `points` temperatures (as θ → 0, `p_θ(x)` → 1 for the argmax and 0
/// otherwise). `u` is an average of K such draws, so it moves in steps of `1/K`; `ū` ranks tokens
/// without ties. Costs `points` passes over the logits.
pub fn expected_uncertainty(logits: &[f32], token: u32, theta_max: f32, points: usize) -> f32 {
    expected_uncertainty_on(logits, token, theta_max, points, &serially)
}

/// [`expected_uncertainty`] with its passes spread by `par` (the same value).
pub fn expected_uncertainty_on(
    logits: &[f32],
    token: u32,
    theta_max: f32,
    points: usize,
    par: ForRanges,
) -> f32 {
    if logits.is_empty() || points == 0 || token as usize >= logits.len() || theta_max <= 0.0 {
        return 1.0;
    }
    let top = argmax(logits);
    let m = logits[top as usize];
    let lx = logits[token as usize] - m;
    let invs: Vec<f32> = (0..points)
        .map(|i| 1.0 / ((i as f32 + 0.5) / points as f32 * theta_max))
        .collect();
    let z = normalisers(logits, m, &invs, par);
    let agree: f64 = invs
        .iter()
        .zip(&z)
        .map(|(&inv, &z)| exp_neg(lx * inv) as f64 / z)
        .sum();
    (1.0 - agree / points as f64).clamp(0.0, 1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::seeded_rng;

    /// The procedure as first written: one draw after another, each pass in turn.
    fn one_draw_after_another(
        logits: &[f32],
        token: u32,
        cfg: &UncertaintyConfig,
        rng: &mut Rng,
    ) -> f32 {
        let top = argmax(logits);
        let m = logits[top as usize];
        let lx = logits[token as usize] - m;
        let mut differ = 0usize;
        for _ in 0..cfg.draws {
            let theta = rng.random::<f32>() * cfg.theta_max;
            if theta < 1e-6 {
                differ += (top != token) as usize;
                continue;
            }
            let inv = 1.0 / theta;
            let p_x = exp_neg(lx * inv) as f64 / sum_exp_shifted(logits, m, inv);
            if rng.random::<f64>() >= p_x {
                differ += 1;
            }
        }
        differ as f32 / cfg.draws as f32
    }

    /// Two threads, each taking every other chunk of one item.
    fn two_threads(n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        std::thread::scope(|s| {
            s.spawn(|| (0..n).step_by(2).for_each(|k| f(k..k + 1)));
            (1..n).step_by(2).for_each(|k| f(k..k + 1));
        });
    }

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "wasm32-wasip1 has no threads")]
    fn spread_passes_give_the_same_draws_to_the_bit() {
        let mut gen = seeded_rng(7);
        for case in 0..40 {
            let logits: Vec<f32> = (0..3000).map(|_| gen.random::<f32>() * 12.0).collect();
            let token = (case * 37 % 3000) as u32;
            let cfg = UncertaintyConfig {
                draws: 1 + case % 23,
                ..Default::default()
            };
            let (mut a, mut b) = (seeded_rng(case as u64), seeded_rng(case as u64));
            let before = one_draw_after_another(&logits, token, &cfg, &mut a);
            let now = temperature_perturbation_on(&logits, token, &cfg, &mut b, &two_threads);
            assert_eq!(before.to_bits(), now.to_bits(), "case {case}");
            // The rng moved on by as much.
            assert_eq!(a.random::<u64>(), b.random::<u64>(), "case {case}");
            let serial = expected_uncertainty(&logits, token, 2.0, cfg.draws);
            let spread = expected_uncertainty_on(&logits, token, 2.0, cfg.draws, &two_threads);
            assert_eq!(serial.to_bits(), spread.to_bits(), "case {case}");
        }
    }

    #[test]
    fn bounds_settle_most_draws_with_the_exact_passes_answers() {
        let (mut cases, mut passes, mut draws) = (0, 0, 0);
        for seed in 0..30u64 {
            // A language model's shape: a few logits near the top, a bulk 10-25 below.
            let mut gen = seeded_rng(seed);
            let spread = 2.0 + seed as f32;
            let logits: Vec<f32> = (0..20_000)
                .map(|i| gen.random::<f32>() * spread + if i % 1000 == 7 { 12.0 } else { 0.0 })
                .collect();
            let top = argmax(&logits);
            let second = (0..20_000u32)
                .filter(|&i| i != top)
                .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
                .unwrap();
            for token in [top, second, 5] {
                let cfg = UncertaintyConfig::default();
                let (mut a, mut b) = (seeded_rng(seed), seeded_rng(seed));
                let exact = one_draw_after_another(&logits, token, &cfg, &mut a);
                let fast = temperature_perturbation(&logits, token, &cfg, &mut b);
                assert_eq!(
                    exact.to_bits(),
                    fast.to_bits(),
                    "seed {seed}, token {token}"
                );
                // How many draws the bounds left to an exact pass.
                let m = logits[top as usize];
                let lx = logits[token as usize] - m;
                let sampled: Vec<Option<(f32, f64)>> = (0..cfg.draws)
                    .map(|_| {
                        let theta = gen.random::<f32>() * cfg.theta_max;
                        Some((1.0 / theta, gen.random::<f64>()))
                    })
                    .collect();
                let answers = answers_from_bounds(&logits, m, lx, token != top, &sampled);
                passes += answers
                    .iter()
                    .filter(|a| matches!(a, Answer::NeedsZ { .. }))
                    .count();
                draws += sampled.len();
                cases += 1;
            }
        }
        assert_eq!(cases, 90);
        assert!(
            passes * 50 < draws,
            "{passes} exact passes for {draws} draws"
        );
    }

    fn logits_with_gap(v: usize, gap: f32) -> Vec<f32> {
        (0..v).map(|i| if i == 3 { gap } else { 0.0 }).collect()
    }

    #[test]
    fn one_hot_has_zero_uncertainty() {
        let l = logits_with_gap(1000, 200.0);
        let mut rng = seeded_rng(1);
        assert_eq!(
            temperature_perturbation(&l, 3, &UncertaintyConfig::default(), &mut rng),
            0.0
        );
        // Drafting anything else from a one-hot distribution is certain to differ.
        assert_eq!(
            temperature_perturbation(&l, 4, &UncertaintyConfig::default(), &mut rng),
            1.0
        );
    }

    #[test]
    fn uncertainty_grows_with_entropy() {
        let cfg = UncertaintyConfig {
            draws: 2000,
            ..Default::default()
        };
        let mut rng = seeded_rng(2);
        let mut prev = -1.0;
        for gap in [30.0, 10.0, 5.0, 1.0, 0.0] {
            let u = temperature_perturbation(&logits_with_gap(50, gap), 3, &cfg, &mut rng);
            assert!(u > prev, "gap {gap}: u = {u} not above {prev}");
            prev = u;
        }
        assert!(prev > 0.9, "flat distribution: u = {prev}");
    }

    #[test]
    fn expected_uncertainty_is_the_mean_of_many_draws() {
        let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.71).cos() * 3.0).collect();
        let x = argmax(&l);
        let cfg = UncertaintyConfig {
            draws: 40_000,
            theta_max: 2.0,
            ..Default::default()
        };
        let sampled = temperature_perturbation(&l, x, &cfg, &mut seeded_rng(7));
        let exact = expected_uncertainty(&l, x, 2.0, 256);
        assert!((sampled - exact).abs() < 0.01, "{sampled} vs {exact}");
        // Through the dispatcher, at the default K: the same value, and no random draw taken.
        let expected = UncertaintyConfig {
            estimate: UncertaintyEstimate::Expected,
            ..Default::default()
        };
        let mut rng = seeded_rng(8);
        let before = rng.clone();
        let u = uncertainty(&l, x, &expected, &mut rng);
        assert!(
            (u - exact).abs() < 0.01,
            "{u} vs {exact} (20 points vs 256)"
        );
        assert!(rng == before, "the expected value draws nothing");
        assert_eq!(
            "expected".parse::<UncertaintyEstimate>(),
            Ok(UncertaintyEstimate::Expected)
        );
        assert!("exact".parse::<UncertaintyEstimate>().is_err());
        // A certain token has none; any token but a one-hot's argmax has all.
        let one_hot = logits_with_gap(100, 200.0);
        assert!(expected_uncertainty(&one_hot, 3, 2.0, 32) < 1e-6);
        assert!(expected_uncertainty(&one_hot, 4, 2.0, 32) > 1.0 - 1e-6);
    }

    #[test]
    fn matches_explicit_draws() {
        // Compare with literally drawing d_k from softmax(l / θ_k).
        let l: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
        let x = 5;
        let cfg = UncertaintyConfig {
            draws: 20_000,
            theta_max: 2.0,
            ..Default::default()
        };
        let u = temperature_perturbation(&l, x, &cfg, &mut seeded_rng(3));
        let mut rng = seeded_rng(4);
        let mut differ = 0;
        for _ in 0..cfg.draws {
            let theta = rng.random::<f32>() * 2.0;
            let p = crate::softmax(&l, theta);
            differ += (crate::sample_index(&p, &mut rng) != x) as usize;
        }
        let explicit = differ as f32 / cfg.draws as f32;
        assert!((u - explicit).abs() < 0.02, "{u} vs {explicit}");
    }
}
