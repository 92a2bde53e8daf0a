//! Calibration of the uncertainty threshold, as U-HLM does it: how likely is the verifier to reject
//! a drafted token of uncertainty `u`?
//!
//! Data: every token of a standard-HLM run (every token uploaded, so every token's verdict is
//! seen, with no selection by the filter): its `u` and whether the verifier rejected it. `u` takes
//! the `K + 1` values `k / K`; per value, the rejection rate `β(u) = rejected / tokens`. The line
//!
//! ```text
//! β(u) ≈ a·u + b        (least squares over the tokens, i.e. over the levels weighted by count)
//! R² = 1 − Σ n_l (β_l − a·u_l − b)² / Σ n_l (β_l − β̄)²       (over the levels, weighted)
//! ```
//!
//! gives two thresholds (skip iff `u ≤ u_th`):
//! * **risk-averse** `u_th = −b / a`: skip only where the fit predicts no rejection at all;
//! * **risk-prone** `u_th = (β̄ − b) / a`: skip every token the fit finds no more likely to be
//!   rejected than the average token (`β̄` = the overall rejection rate).
//!
//! Both are clamped to `[0, 1]`; neither exists when `a ≤ 0` (uncertainty does not predict
//! rejection). U-HLM reports `β ≈ 0.82·u − 0.06` on its pair (risk-averse `u_th ≈ 0.07`).

use serde::{Deserialize, Serialize};

/// The tokens at one value of `u`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub u: f64,
    pub tokens: usize,
    pub rejected: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub tokens: usize,
    /// β̄: rejected / tokens over all tokens.
    pub rejection_rate: f64,
    pub a: f64,
    pub b: f64,
    pub r2: f64,
    pub risk_averse_u_th: Option<f64>,
    pub risk_prone_u_th: Option<f64>,
    pub levels: Vec<Level>,
}

/// Fits `pairs` of `(u, rejected)`; `None` with fewer than two distinct `u` values.
pub fn fit(pairs: &[(f32, bool)]) -> Option<Calibration> {
    let mut levels: Vec<Level> = Vec::new();
    for &(u, rejected) in pairs {
        // u is k/K: group values equal to 1e-4.
        let u = (f64::from(u) * 1e4).round() / 1e4;
        match levels.iter_mut().find(|l| l.u == u) {
            Some(l) => {
                l.tokens += 1;
                l.rejected += usize::from(rejected);
            }
            None => levels.push(Level {
                u,
                tokens: 1,
                rejected: usize::from(rejected),
            }),
        }
    }
    levels.sort_by(|x, y| x.u.total_cmp(&y.u));
    if levels.len() < 2 {
        return None;
    }
    let n = pairs.len() as f64;
    let w = |l: &Level| l.tokens as f64;
    let rate = |l: &Level| l.rejected as f64 / l.tokens as f64;
    let mu = levels.iter().map(|l| w(l) * l.u).sum::<f64>() / n;
    let mb = levels.iter().map(|l| w(l) * rate(l)).sum::<f64>() / n;
    let sxx: f64 = levels.iter().map(|l| w(l) * (l.u - mu).powi(2)).sum();
    let sxy: f64 = levels
        .iter()
        .map(|l| w(l) * (l.u - mu) * (rate(l) - mb))
        .sum();
    let a = sxy / sxx;
    let b = mb - a * mu;
    let ss_res: f64 = levels
        .iter()
        .map(|l| w(l) * (rate(l) - a * l.u - b).powi(2))
        .sum();
    let ss_tot: f64 = levels.iter().map(|l| w(l) * (rate(l) - mb).powi(2)).sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    let threshold = |beta: f64| (a > 0.0).then(|| ((beta - b) / a).clamp(0.0, 1.0));
    Some(Calibration {
        tokens: pairs.len(),
        rejection_rate: mb,
        a,
        b,
        r2,
        risk_averse_u_th: threshold(0.0),
        risk_prone_u_th: threshold(mb),
        levels,
    })
}

impl Calibration {
    /// One line for the console and the table file.
    pub fn summary(&self) -> String {
        let t = |v: Option<f64>| v.map_or("none (a ≤ 0)".to_string(), |v| format!("{v:.3}"));
        format!(
            "calibration over {} tokens: rejection rate {:.3}; fit β(u) = {:.3}·u {} {:.3} (R² = {:.3}); \
             risk-averse u_th = {}, risk-prone u_th = {}",
            self.tokens,
            self.rejection_rate,
            self.a,
            if self.b < 0.0 { "−" } else { "+" },
            self.b.abs(),
            self.r2,
            t(self.risk_averse_u_th),
            t(self.risk_prone_u_th)
        )
    }

    /// The rejection rate per level and the fitted line, as an SVG plot.
    pub fn plot(&self) -> String {
        let points = self
            .levels
            .iter()
            .map(|l| {
                (
                    l.u,
                    l.rejected as f64 / l.tokens as f64,
                    format!("n={}", l.tokens),
                )
            })
            .collect();
        let line = [0.0, 1.0]
            .iter()
            .map(|&u| (u, self.a * u + self.b, String::new()))
            .collect();
        crate::plot::scatter(
            "Verifier rejection vs draft uncertainty",
            "uncertainty u",
            "rejection rate",
            &[
                crate::plot::Series {
                    name: "observed".into(),
                    points,
                    ..Default::default()
                },
                crate::plot::Series {
                    name: format!("fit (R² {:.2})", self.r2),
                    points: line,
                    ..Default::default()
                },
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(spec: &[(f32, usize, usize)]) -> Vec<(f32, bool)> {
        spec.iter()
            .flat_map(|&(u, n, r)| (0..n).map(move |i| (u, i < r)))
            .collect()
    }

    #[test]
    fn exact_line_is_recovered_with_r2_one() {
        // β(0) = 0.1, β(0.5) = 0.3, β(1) = 0.5: a = 0.4, b = 0.1.
        let c = fit(&pairs(&[(0.0, 10, 1), (0.5, 10, 3), (1.0, 10, 5)])).unwrap();
        assert!(
            (c.a - 0.4).abs() < 1e-12 && (c.b - 0.1).abs() < 1e-12,
            "{c:?}"
        );
        assert!((c.r2 - 1.0).abs() < 1e-12);
        assert!((c.rejection_rate - 0.3).abs() < 1e-12);
        // −b/a < 0 clamps to 0; (β̄ − b)/a = 0.5.
        assert_eq!(c.risk_averse_u_th, Some(0.0));
        assert!((c.risk_prone_u_th.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(c.levels.len(), 3);
    }

    #[test]
    fn hand_computed_weighted_fit() {
        // Levels (u, n, rejected): (0, 30, 0), (0.25, 10, 2), (1, 10, 8). Weighted means:
        // ū = (0 + 2.5 + 10)/50 = 0.25, β̄ = 10/50 = 0.2.
        // Sxx = 30·0.0625 + 0 + 10·0.5625 = 7.5; Sxy = 30·(−0.25)(−0.2) + 0 + 10·0.75·0.6 = 6.
        // a = 0.8, b = 0.2 − 0.8·0.25 = 0. Residuals: 0, 10·(0.2−0.2)², 10·(0.8−0.8)² → R² = 1.
        let c = fit(&pairs(&[(0.0, 30, 0), (0.25, 10, 2), (1.0, 10, 8)])).unwrap();
        assert!((c.a - 0.8).abs() < 1e-12 && c.b.abs() < 1e-12, "{c:?}");
        assert!((c.r2 - 1.0).abs() < 1e-12);
        assert!(c.risk_averse_u_th.unwrap().abs() < 1e-12);
        assert!((c.risk_prone_u_th.unwrap() - 0.25).abs() < 1e-12);
        // A noisy point: (0.5, 10, 1) → R² < 1, thresholds still in [0, 1].
        let c = fit(&pairs(&[(0.0, 30, 0), (0.5, 10, 1), (1.0, 10, 8)])).unwrap();
        assert!(c.r2 < 1.0 && c.r2 > 0.0);
        assert!(c.a > 0.0);
        assert!(c.summary().contains("risk-averse"));
        assert!(c.plot().starts_with("<svg"));
    }

    #[test]
    fn no_fit_without_two_levels_and_no_threshold_for_a_falling_line() {
        assert!(fit(&pairs(&[(0.1, 5, 1)])).is_none());
        let c = fit(&pairs(&[(0.0, 10, 5), (1.0, 10, 1)])).unwrap();
        assert!(c.a < 0.0);
        assert_eq!(c.risk_averse_u_th, None);
        assert_eq!(c.risk_prone_u_th, None);
    }
}
