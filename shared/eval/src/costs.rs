//! Per-operation costs, calibrated once per run and stored with it (`costs.json`), so that the
//! energy and throughput columns are counts × costs: two rows that made the same decisions get
//! the same figures however loaded the machine was while each ran.
//!
//! A forward pass over `k` new positions is modelled as
//!
//! ```text
//! t(k) = per_pass + k · per_position
//! ```
//!
//! (weights read once per pass, arithmetic per position; attention's growth with the context is
//! left out: at these lengths it is a few per cent of a pass). `per_pass` and `per_position` come
//! from timing `k = 1` and `k = 64` at the start of the run (median of several repetitions). The
//! filter's uncertainty estimate (K draws over the vocabulary) costs `uncertainty_s` per drafted
//! token.

use crate::samples::Sample;
use crate::Result;
use hlm_core::{temperature_perturbation, UncertaintyConfig};
use hlm_engine::model::{LogitRows, Model};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// `t(k) = per_pass_s + k · per_position_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForwardCost {
    pub per_pass_s: f64,
    pub per_position_s: f64,
}

impl ForwardCost {
    /// Seconds for `passes` forward passes over `positions` positions in all.
    pub fn seconds(&self, passes: usize, positions: usize) -> f64 {
        passes as f64 * self.per_pass_s + positions as f64 * self.per_position_s
    }

    /// Times `model` at one and at 64 new positions after a 64-position context, `reps` times,
    /// and fits the two parameters through the medians.
    pub fn measure(model: &Model, reps: usize) -> Result<Self> {
        const K: usize = 64;
        let vocab = model.config().vocab_size as u32;
        let ids: Vec<u32> = (0..2 * K as u32).map(|i| (i * 7919 + 13) % vocab).collect();
        let (mut one, mut many) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(1) {
            let mut cache = model.new_cache();
            model.forward(&mut cache, &ids[..K], &LogitRows::Last, 0)?;
            let t = Instant::now();
            model.forward(&mut cache, &ids[K..K + 1], &LogitRows::Last, 0)?;
            one.push(t.elapsed().as_secs_f64());
            cache.truncate(K);
            let t = Instant::now();
            model.forward(&mut cache, &ids[K..], &LogitRows::Last, 0)?;
            many.push(t.elapsed().as_secs_f64());
        }
        let (t1, tk) = (median(&mut one), median(&mut many));
        let per_position_s = ((tk - t1) / (K - 1) as f64).max(0.0);
        Ok(Self {
            per_pass_s: (t1 - per_position_s).max(0.0),
            per_position_s,
        })
    }
}

/// What one run's figures are derived from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    pub draft: ForwardCost,
    pub verifier: ForwardCost,
    /// One uncertainty estimate over the draft's vocabulary.
    pub uncertainty_s: f64,
}

/// The seconds a sample's work takes under [`Costs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Work {
    /// The device: draft forward passes and the filter.
    pub device_s: f64,
    /// The verifier's forward passes.
    pub verifier_s: f64,
}

impl Costs {
    /// File name in a run folder.
    pub const FILE: &'static str = "costs.json";

    pub fn measure(draft: &Model, verifier: &Model) -> Result<Self> {
        let reps = 5;
        let draft_cost = ForwardCost::measure(draft, reps)?;
        let verifier_cost = ForwardCost::measure(verifier, reps)?;
        let vocab = draft.config().vocab_size;
        let logits: Vec<f32> = (0..vocab).map(|i| ((i * 31 % 97) as f32) * 0.1).collect();
        let cfg = UncertaintyConfig::default();
        let mut rng = hlm_core::seeded_rng(0);
        let mut times: Vec<f64> = (0..20)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(temperature_perturbation(&logits, 3, &cfg, &mut rng));
                t.elapsed().as_secs_f64()
            })
            .collect();
        Ok(Self {
            draft: draft_cost,
            verifier: verifier_cost,
            uncertainty_s: median(&mut times),
        })
    }

    /// The run folder's costs if it has them, else measured now and written there (every shard
    /// and resumption of a run uses the first measurement).
    pub fn load_or_measure(dir: &Path, draft: &Model, verifier: &Model) -> Result<Self> {
        let path = dir.join(Self::FILE);
        if let Some(c) = Self::load(dir)? {
            return Ok(c);
        }
        let c = Self::measure(draft, verifier)?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(&path, serde_json::to_string_pretty(&c).unwrap_or_default())?;
        Ok(c)
    }

    pub fn load(dir: &Path) -> Result<Option<Self>> {
        crate::read_json_if_present(&dir.join(Self::FILE))
    }

    pub fn work(&self, s: &Sample) -> Work {
        Work {
            device_s: self
                .draft
                .seconds(s.draft_forward_passes, s.draft_forward_tokens)
                + s.uncertainty_draws as f64 * self.uncertainty_s,
            verifier_s: self
                .verifier
                .seconds(s.llm_forward_passes, s.llm_forward_tokens),
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_counts_times_costs() {
        let c = Costs {
            draft: ForwardCost {
                per_pass_s: 0.02,
                per_position_s: 0.001,
            },
            verifier: ForwardCost {
                per_pass_s: 0.05,
                per_position_s: 0.002,
            },
            uncertainty_s: 0.0005,
        };
        let s = crate::samples::tests::sample("t", "u-hlm");
        // draft: 2 passes, 4 positions, 2 draws; verifier: 1 pass, 5 positions.
        let w = c.work(&s);
        assert!((w.device_s - (0.04 + 0.004 + 0.001)).abs() < 1e-12);
        assert!((w.verifier_s - (0.05 + 0.010)).abs() < 1e-12);
        let mut same = s.clone();
        same.wall_s = 99.0; // measured time does not enter
        assert_eq!(c.work(&same), w);
    }
}
