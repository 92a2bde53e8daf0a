//! Importance of a drafted token from the draft model's own attention (after arXiv 2508.12590,
//! whose exact formula is not public: this is our design, with alternatives for ablation).
//!
//! Input: `row`, the attention probabilities of the drafted token's query (at position `t`, the
//! last entry) over positions `0..=t`, averaged over heads and the draft model's last layers.
//!
//! **Score** `s = row[t]`, the weight the drafted token gives itself. A token that its context
//! explains (the rest of a keyword, a closing bracket, a copied identifier) attends to that
//! context; a token that starts something new attends to itself. Self-attention is its novelty.
//!
//! **Adaptive threshold.** A fixed threshold fails under *attention collapse*: heads pile most of
//! their mass on a sink (typically the first token), so every other weight looks small and
//! nothing would pass. The threshold is therefore recomputed at every step from that step's own
//! weights, with the sink taken out — see each rule. `strictness` (λ) is the knob: higher λ marks
//! fewer tokens important.

use serde::{Deserialize, Serialize};

#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    pub score: f32,
    pub threshold: f32,
    pub important: bool,
}

pub trait ImportanceRule: Send + Sync {
    fn name(&self) -> &'static str;
    fn assess(&self, row: &[f32], strictness: f32) -> Importance;
}

/// Default. Sink excluded and the rest renormalised: `w'_j = row[j] / (1 − row[0])`, `j = 1..=t`;
/// threshold `τ = mean(w') + λ · std(w')`; important iff `w'_t ≥ τ`.
/// (Since `Σ w' = 1`, `mean(w') = 1/t`: the threshold follows the context length and the spread.)
pub struct SinkExcludedZScore;

/// Robust variant that needs no knowledge of where sinks are: over all positions,
/// `τ = median(row) + λ · 1.4826 · MAD(row)`; important iff `row[t] ≥ τ`.
pub struct MedianMad;

/// Ablation baseline, not adaptive to the spread: `τ = (1 + λ) / (t + 1)`, a multiple of the
/// uniform weight, sink included.
pub struct FixedUniform;

/// The sink-excluded weights `w'_j = row[j] / (1 − row[0])`, `j ≥ 1`, with their mean and
/// standard deviation; `None` when the row is too short or all its mass is on the sink.
fn sink_excluded(row: &[f32]) -> Option<(Vec<f64>, f64, f64)> {
    let rest = 1.0 - *row.first()? as f64;
    if row.len() < 3 || rest <= 1e-9 {
        return None;
    }
    let w: Vec<f64> = row[1..].iter().map(|&x| x as f64 / rest).collect();
    let n = w.len() as f64;
    let mean = w.iter().sum::<f64>() / n;
    let std = (w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    Some((w, mean, std))
}

/// The default rule's statistic: `z = (w'_t − mean w') / std w'`, so that the token is important
/// at strictness λ iff `z ≥ λ`; `f32::MAX` where the rule marks every token important (a short
/// row, all mass on the sink, or all weights equal).
pub fn sink_excluded_z(row: &[f32]) -> f32 {
    match sink_excluded(row) {
        Some((w, mean, std)) if std > 0.0 => ((w[w.len() - 1] - mean) / std) as f32,
        _ => f32::MAX,
    }
}

fn degenerate(row: &[f32]) -> Option<Importance> {
    (row.len() < 3).then(|| Importance {
        score: row.last().copied().unwrap_or(1.0),
        threshold: 0.0,
        important: true,
    })
}

impl ImportanceRule for SinkExcludedZScore {
    fn name(&self) -> &'static str {
        "sink-zscore"
    }

    fn assess(&self, row: &[f32], strictness: f32) -> Importance {
        if let Some(d) = degenerate(row) {
            return d;
        }
        let Some((w, mean, std)) = sink_excluded(row) else {
            // Everything on the sink: nothing to tell tokens apart; be conservative.
            return Importance {
                score: 0.0,
                threshold: 0.0,
                important: true,
            };
        };
        let threshold = mean + strictness as f64 * std;
        let score = *w.last().unwrap_or(&0.0);
        Importance {
            score: score as f32,
            threshold: threshold as f32,
            important: score >= threshold,
        }
    }
}

fn median(xs: &mut [f32]) -> f32 {
    let mid = xs.len() / 2;
    let (_, m, _) = xs.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    *m
}

impl ImportanceRule for MedianMad {
    fn name(&self) -> &'static str {
        "median-mad"
    }

    fn assess(&self, row: &[f32], strictness: f32) -> Importance {
        if let Some(d) = degenerate(row) {
            return d;
        }
        let mut v = row.to_vec();
        let med = median(&mut v);
        let mut dev: Vec<f32> = row.iter().map(|x| (x - med).abs()).collect();
        let mad = median(&mut dev);
        let threshold = med + strictness * 1.4826 * mad;
        let score = row[row.len() - 1];
        Importance {
            score,
            threshold,
            important: score >= threshold,
        }
    }
}

impl ImportanceRule for FixedUniform {
    fn name(&self) -> &'static str {
        "fixed-uniform"
    }

    fn assess(&self, row: &[f32], strictness: f32) -> Importance {
        if let Some(d) = degenerate(row) {
            return d;
        }
        let threshold = (1.0 + strictness.max(-1.0)) / row.len() as f32;
        let score = row[row.len() - 1];
        Importance {
            score,
            threshold,
            important: score >= threshold,
        }
    }
}

/// The importance rules by name: the one place their names are written.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportanceRuleName {
    /// [`SinkExcludedZScore`], the default.
    #[default]
    SinkZscore,
    /// [`MedianMad`].
    MedianMad,
    /// [`FixedUniform`], the non-adaptive ablation.
    FixedUniform,
}

impl ImportanceRuleName {
    pub const ALL: [ImportanceRuleName; 3] = [
        ImportanceRuleName::SinkZscore,
        ImportanceRuleName::MedianMad,
        ImportanceRuleName::FixedUniform,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImportanceRuleName::SinkZscore => "sink-zscore",
            ImportanceRuleName::MedianMad => "median-mad",
            ImportanceRuleName::FixedUniform => "fixed-uniform",
        }
    }

    /// The rule this name stands for.
    pub fn rule(self) -> &'static dyn ImportanceRule {
        match self {
            ImportanceRuleName::SinkZscore => &SinkExcludedZScore,
            ImportanceRuleName::MedianMad => &MedianMad,
            ImportanceRuleName::FixedUniform => &FixedUniform,
        }
    }
}

impl std::fmt::Display for ImportanceRuleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ImportanceRuleName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown importance rule `{s}` (known: {})",
                    known.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink-dominated row over 21 positions: 0.9 on position 0, the rest spread with small
    /// variations; the drafted token (last) gets `last`.
    fn sink_row(last: f32) -> Vec<f32> {
        let mut row = vec![0.9f32];
        let n = 19;
        let spread = (0.1 - last) / n as f32;
        for i in 0..n {
            row.push(spread * (1.0 + 0.3 * ((i % 3) as f32 - 1.0)));
        }
        row.push(last);
        let s: f32 = row.iter().sum();
        row.iter().map(|x| x / s).collect()
    }

    #[test]
    fn sink_dominated_step_still_marks_a_strongly_attended_token() {
        let strong = sink_row(0.03); // 0.03 against peers ~0.0036, all tiny next to the sink
        let typical = sink_row(0.0036);
        for rule in [
            ImportanceRuleName::SinkZscore,
            ImportanceRuleName::MedianMad,
        ] {
            let r = rule.rule();
            assert!(r.assess(&strong, 1.0).important, "{rule}: strong token");
            assert!(!r.assess(&typical, 1.0).important, "{rule}: typical token");
        }
        // A fixed threshold at the uniform weight (1/21 ≈ 0.048) misses it: the collapse problem.
        assert!(!FixedUniform.assess(&strong, 0.0).important);
    }

    #[test]
    fn strictness_raises_the_threshold() {
        let row = sink_row(0.01);
        let loose = SinkExcludedZScore.assess(&row, 0.0);
        let strict = SinkExcludedZScore.assess(&row, 3.0);
        assert!(strict.threshold > loose.threshold);
        for name in ImportanceRuleName::ALL {
            assert_eq!(name.to_string().parse(), Ok(name));
            assert_eq!(name.rule().name(), name.as_str());
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, format!("\"{name}\""));
        }
        let e = "nope".parse::<ImportanceRuleName>().unwrap_err();
        assert!(e.contains("sink-zscore, median-mad, fixed-uniform"), "{e}");
    }
}
