//! A learned filter head: logistic regression from a drafted token's signals to the probability
//! that the verifier rejects it,
//!
//! `P(reject) = σ(b + Σ_i w_i · (f_i − μ_i) / s_i)`,
//!
//! with `f_i` the value of input `i` ([`HeadInput`]), `μ_i`, `s_i` the mean and spread it was
//! standardised with when fitted. The filter study (`hlm eval --trace`) fits it on a development
//! split and writes it as a small JSON file ([`FilterHead::to_json`]); the decoding loop reads it
//! the same way natively and in the browser.

use crate::signals::{AttentionSignals, TokenClass};
use serde::{Deserialize, Serialize};

/// The file format's version: a head of another version is refused.
pub const HEAD_VERSION: u32 = 1;

/// A signal a head may read (see [`TokenFeatures`]).
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadInput {
    /// U-HLM's sampled uncertainty.
    U,
    /// The expected uncertainty ([`crate::expected_uncertainty`]).
    UExpected,
    /// `1 − p(x)`.
    OneMinusTop1,
    /// Entropy of the draft's distribution (nats).
    Entropy,
    /// `p(second) − p(x)`.
    NegMargin,
    /// Mean sampled `u` of the 4 tokens before.
    RecentU,
    /// Index in the answer.
    Position,
    /// The drafted token's attention to itself.
    SelfWeight,
    /// The default importance rule's z-score, log-scaled: `sign(z) · ln(1 + |z|)`.
    ImportanceZ,
    /// Attention on the first position.
    Sink,
    /// Entropy of the attention row over `ln(positions)`.
    AttentionEntropy,
    /// Attention the next drafted tokens give it, as a multiple of an even share (a deferred
    /// decision).
    Received,
    /// 1 for a token of this class, else 0.
    Class(TokenClass),
}

impl HeadInput {
    /// Whether the loop must read the drafted token's attention row for this input.
    pub fn needs_attention(self) -> bool {
        matches!(
            self,
            HeadInput::SelfWeight
                | HeadInput::ImportanceZ
                | HeadInput::Sink
                | HeadInput::AttentionEntropy
                | HeadInput::Received
        )
    }
}

/// What a head reads about one drafted token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenFeatures {
    pub u: f32,
    pub u_expected: f32,
    pub top1: f32,
    pub top2: f32,
    pub entropy: f32,
    pub recent_u: f32,
    pub position: usize,
    pub class: TokenClass,
    /// The drafted token's attention row's signals, when it was read.
    pub attention: Option<AttentionSignals>,
    /// Attention received from the next drafted tokens (× an even share), when known.
    pub received: Option<f32>,
}

/// `sign(z) · ln(1 + |z|)`, with `z` clamped to ±1000 (the rule's "always important" is
/// `f32::MAX`).
pub fn z_log(z: f32) -> f64 {
    let z = (z as f64).clamp(-1e3, 1e3);
    z.signum() * z.abs().ln_1p()
}

impl TokenFeatures {
    pub fn value(&self, input: HeadInput) -> f64 {
        match input {
            HeadInput::U => self.u as f64,
            HeadInput::UExpected => self.u_expected as f64,
            HeadInput::OneMinusTop1 => 1.0 - self.top1 as f64,
            HeadInput::Entropy => self.entropy as f64,
            HeadInput::NegMargin => (self.top2 - self.top1) as f64,
            HeadInput::RecentU => self.recent_u as f64,
            HeadInput::Position => self.position as f64,
            HeadInput::SelfWeight => self.attention.map_or(0.0, |a| a.self_weight as f64),
            HeadInput::ImportanceZ => self.attention.map_or(0.0, |a| z_log(a.self_z)),
            HeadInput::Sink => self.attention.map_or(0.0, |a| a.sink as f64),
            HeadInput::AttentionEntropy => self.attention.map_or(0.0, |a| a.entropy as f64),
            HeadInput::Received => self.received.unwrap_or(1.0) as f64,
            HeadInput::Class(c) => (self.class == c) as u8 as f64,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeadError {
    #[error("not a filter head: {0}")]
    Parse(String),
    #[error("filter head version {got} (this build reads {HEAD_VERSION})")]
    Version { got: u32 },
    #[error("filter head: {0}")]
    Invalid(String),
}

/// See the module documentation.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterHead {
    pub version: u32,
    /// What it was fitted on (models, split, tokens), for the reader.
    pub fitted_on: String,
    pub inputs: Vec<HeadInput>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
    /// The threshold on `P(reject)` at which it caught as many rejections as U-HLM (`u > 0.07`)
    /// on the split it was fitted on: a starting point for the upload knob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_threshold: Option<f64>,
}

impl FilterHead {
    /// Reads and checks a head file's text.
    pub fn from_json(text: &str) -> Result<Self, HeadError> {
        let head: FilterHead =
            serde_json::from_str(text).map_err(|e| HeadError::Parse(e.to_string()))?;
        head.validate()?;
        Ok(head)
    }

    /// The checks every head passes before it is used, however it arrived (a file, the browser's
    /// options): its version, one mean, scale and weight per input, finite numbers, positive
    /// scales.
    pub fn validate(&self) -> Result<(), HeadError> {
        if self.version != HEAD_VERSION {
            return Err(HeadError::Version { got: self.version });
        }
        let n = self.inputs.len();
        if self.mean.len() != n || self.scale.len() != n || self.weights.len() != n {
            return Err(HeadError::Invalid(format!(
                "{n} inputs but {} means, {} scales and {} weights",
                self.mean.len(),
                self.scale.len(),
                self.weights.len()
            )));
        }
        let numbers = self.mean.iter().chain(&self.scale).chain(&self.weights);
        if !numbers.chain([&self.bias]).all(|v| v.is_finite())
            || self.scale.iter().any(|&s| s <= 0.0)
        {
            return Err(HeadError::Invalid(
                "every mean, weight and the bias must be finite, every scale positive".into(),
            ));
        }
        Ok(())
    }

    /// FNV-1a over the head's JSON: tells two heads apart in a run's record.
    pub fn fingerprint(&self) -> u64 {
        self.to_json().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// How a run names it: what it was fitted on, and its fingerprint.
    pub fn describe(&self) -> String {
        format!(
            "{} (fingerprint {:016x})",
            self.fitted_on,
            self.fingerprint()
        )
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The loop's decision for a token with features `f` at upload threshold `threshold`:
    /// `P(reject)` (as the loop carries it, in `f32`) and whether it is uploaded (mode
    /// `learned`; see [`crate::filter::decide`]).
    pub fn decide(&self, f: &TokenFeatures, threshold: f32) -> (f32, bool) {
        let p = self.probability(f) as f32;
        let knobs = crate::filter::FilterKnobs {
            uncertainty_threshold: threshold,
            ..Default::default()
        };
        let d = crate::filter::decide(crate::filter::FilterMode::Learned, &knobs, p, None, false);
        (p, d == crate::filter::Decision::Upload)
    }

    /// `P(reject)` for a token with features `f`.
    pub fn probability(&self, f: &TokenFeatures) -> f64 {
        let z: f64 = self
            .inputs
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((&i, m), s), w)| (f.value(i) - m) / s * w)
            .sum();
        1.0 / (1.0 + (-(z + self.bias)).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(u: f32, class: TokenClass) -> TokenFeatures {
        TokenFeatures {
            u,
            u_expected: u,
            top1: 1.0 - u,
            top2: u,
            entropy: u,
            recent_u: 0.0,
            position: 3,
            class,
            attention: None,
            received: None,
        }
    }

    fn head() -> FilterHead {
        FilterHead {
            version: HEAD_VERSION,
            fitted_on: "test".into(),
            inputs: vec![HeadInput::UExpected, HeadInput::Class(TokenClass::Keyword)],
            mean: vec![0.1, 0.05],
            scale: vec![0.2, 0.2],
            weights: vec![2.0, 1.0],
            bias: -3.0,
            suggested_threshold: Some(0.05),
        }
    }

    #[test]
    fn probability_rises_with_its_inputs_and_the_file_round_trips() {
        let h = head();
        let low = h.probability(&features(0.0, TokenClass::Word));
        let high = h.probability(&features(0.6, TokenClass::Word));
        let keyword = h.probability(&features(0.6, TokenClass::Keyword));
        assert!(low < high && high < keyword && keyword < 1.0 && low > 0.0);
        // σ(−3 + 2·(0 − 0.1)/0.2 + 1·(0 − 0.05)/0.2)
        let want = 1.0 / (1.0 + (3.0f64 + 1.0 + 0.25).exp());
        assert!((low - want).abs() < 1e-12, "{low} vs {want}");
        let json = h.to_json();
        assert!(
            json.contains("\"u-expected\"") && json.contains("{\n      \"class\": \"keyword\"")
        );
        assert_eq!(FilterHead::from_json(&json), Ok(h));
    }

    #[test]
    fn bad_head_files_are_refused_with_the_reason() {
        let mut h = head();
        h.version = 9;
        assert_eq!(
            FilterHead::from_json(&h.to_json()),
            Err(HeadError::Version { got: 9 })
        );
        let mut h = head();
        h.weights.pop();
        assert!(
            matches!(FilterHead::from_json(&h.to_json()), Err(HeadError::Invalid(m)) if m.contains("2 inputs but"))
        );
        let mut h = head();
        h.scale[0] = 0.0;
        assert!(matches!(
            FilterHead::from_json(&h.to_json()),
            Err(HeadError::Invalid(_))
        ));
        assert!(matches!(
            FilterHead::from_json("{\"version\": 1}"),
            Err(HeadError::Parse(_))
        ));
        let unknown = head().to_json().replace("u-expected", "u-squared");
        assert!(matches!(
            FilterHead::from_json(&unknown),
            Err(HeadError::Parse(_))
        ));
    }
}
