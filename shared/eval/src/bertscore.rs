//! BERTScore (Zhang et al., ICLR 2020), with the all-MiniLM-L6-v2 encoder.
//!
//! Both texts go through the encoder; each token's contextual embedding (the **last, 6th layer**
//! of MiniLM-L6; `[CLS]` and `[SEP]` left out, as BERTScore does without idf weighting) is
//! normalised to unit length. With `x_i` the candidate's and `y_j` the reference's tokens:
//!
//! ```text
//! P  = 1/|x| · Σ_i max_j x_i·y_j      (each candidate token finds its best reference token)
//! R  = 1/|y| · Σ_j max_i x_i·y_j      (each reference token finds its best candidate token)
//! F1 = 2·P·R / (P + R)
//! ```
//!
//! No baseline rescaling. The paper's headline numbers use roberta-large (layer 17); MiniLM's
//! scores sit at a different absolute level, so compare methods with each other, not with the
//! paper's absolute values.

use crate::{EvalError, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Serialize;
use std::path::Path;
use tokenizers::Tokenizer;

/// Precision, recall and F1 of one candidate against one reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// The greedy matching on unit-length embeddings (rows). An empty side scores 0.
pub fn greedy_match(candidate: &[Vec<f32>], reference: &[Vec<f32>]) -> Score {
    if candidate.is_empty() || reference.is_empty() {
        return Score {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
        };
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
    let sim: Vec<Vec<f64>> = candidate
        .iter()
        .map(|x| reference.iter().map(|y| dot(x, y)).collect())
        .collect();
    let precision = sim
        .iter()
        .map(|row| row.iter().cloned().fold(f64::MIN, f64::max))
        .sum::<f64>()
        / candidate.len() as f64;
    let recall = (0..reference.len())
        .map(|j| sim.iter().map(|row| row[j]).fold(f64::MIN, f64::max))
        .sum::<f64>()
        / reference.len() as f64;
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Score {
        precision,
        recall,
        f1,
    }
}

/// The encoder and its tokenizer.
pub struct BertScorer {
    model: BertModel,
    tokenizer: Tokenizer,
    max_tokens: usize,
}

impl BertScorer {
    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` of a BERT encoder.
    pub fn load(weights: &Path, tokenizer: &Path, config: &Path) -> Result<Self> {
        let file_err = |p: &Path, m: String| EvalError::File {
            path: p.display().to_string(),
            message: m,
        };
        let cfg: Config = serde_json::from_str(
            &std::fs::read_to_string(config).map_err(|e| file_err(config, e.to_string()))?,
        )
        .map_err(|e| file_err(config, e.to_string()))?;
        let max_tokens = cfg.max_position_embeddings;
        let mut tokenizer =
            Tokenizer::from_file(tokenizer).map_err(|e| file_err(tokenizer, e.to_string()))?;
        // The file pads to 128 and truncates at 128: score whole texts (up to the position limit).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
        let bytes = std::fs::read(weights).map_err(|e| file_err(weights, e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)?;
        let model = BertModel::load(vb, &cfg)?;
        Ok(Self {
            model,
            tokenizer,
            max_tokens,
        })
    }

    /// Unit-length contextual embeddings of `text`'s tokens, `[CLS]` and `[SEP]` excluded.
    pub fn embed(&self, text: &str) -> Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids();
        if ids.len() <= 2 {
            return Ok(Vec::new()); // only [CLS] [SEP]: an empty text
        }
        debug_assert!(ids.len() <= self.max_tokens);
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let types = input.zeros_like()?;
        let out = self.model.forward(&input, &types, None)?.squeeze(0)?;
        let rows: Vec<Vec<f32>> = out.to_vec2()?;
        let special = enc.get_special_tokens_mask();
        Ok(rows
            .into_iter()
            .zip(special)
            .filter(|(_, &s)| s == 0)
            .map(|(mut v, _)| {
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= n);
                v
            })
            .collect())
    }

    /// BERTScore of `candidate` against `reference`.
    pub fn score(&self, candidate: &str, reference: &str) -> Result<Score> {
        Ok(greedy_match(
            &self.embed(candidate)?,
            &self.embed(reference)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Hand-computed: candidate {e1, e2}, reference {e1, (e1+e2)/√2, e3}.
    /// P = (1 + 1/√2)/2 (e1 finds e1; e2 finds (e1+e2)/√2), R = (1 + 1/√2 + 0)/3.
    #[test]
    fn greedy_matching_by_hand() {
        let e1 = vec![1.0, 0.0, 0.0];
        let e2 = vec![0.0, 1.0, 0.0];
        let e3 = vec![0.0, 0.0, 1.0];
        let mid = unit(&[1.0, 1.0, 0.0]);
        let s = greedy_match(&[e1.clone(), e2], &[e1, mid, e3]);
        let h = 1.0 / 2f64.sqrt();
        assert!((s.precision - (1.0 + h) / 2.0).abs() < 1e-6, "{s:?}");
        assert!((s.recall - (1.0 + h) / 3.0).abs() < 1e-6, "{s:?}");
        let f1 = 2.0 * s.precision * s.recall / (s.precision + s.recall);
        assert!((s.f1 - f1).abs() < 1e-12);
        assert_eq!(greedy_match(&[], &[vec![1.0]]).f1, 0.0);
    }
}
