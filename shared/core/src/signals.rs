//! What a filter can read about a drafted token before the verifier answers: its distribution's
//! shape, its attention row, and what kind of text it is. One implementation for the filter
//! study's traces (`hlm-eval`) and the decoding loop.

use crate::importance::sink_excluded_z;
use crate::softmax;
use serde::{Deserialize, Serialize};

/// The draft's distribution at a position where it proposes `x`: `p(x)`, the largest other
/// probability, and the entropy (nats), at temperature 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributionSignals {
    pub top1: f32,
    pub top2: f32,
    pub entropy: f32,
}

pub fn distribution_signals(logits: &[f32], x: u32) -> DistributionSignals {
    let p = softmax(logits, 1.0);
    let top1 = p.get(x as usize).copied().unwrap_or(0.0);
    let top2 = p
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != x as usize)
        .map(|(_, &v)| v)
        .fold(0.0f32, f32::max);
    let entropy = -p
        .iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| v as f64 * (v as f64).ln())
        .sum::<f64>();
    DistributionSignals {
        top1,
        top2,
        entropy: entropy as f32,
    }
}

/// A drafted token's attention row (its query over positions `0..=t`): the weight on itself, on
/// the first position (the sink), the row's entropy over `ln(t + 1)`, and the default importance
/// rule's statistic ([`sink_excluded_z`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttentionSignals {
    pub self_weight: f32,
    pub sink: f32,
    pub entropy: f32,
    pub self_z: f32,
}

pub fn attention_signals(row: &[f32]) -> AttentionSignals {
    let n = row.len();
    let h: f64 = row
        .iter()
        .filter(|&&w| w > 0.0)
        .map(|&w| -(w as f64) * (w as f64).ln())
        .sum();
    AttentionSignals {
        self_weight: row.last().copied().unwrap_or(0.0),
        sink: row.first().copied().unwrap_or(0.0),
        entropy: if n > 1 {
            (h / (n as f64).ln()) as f32
        } else {
            0.0
        },
        self_z: sink_excluded_z(row),
    }
}

/// What kind of text a token is (from its decoded piece and the one before it).
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenClass {
    /// Spaces, newlines, indentation.
    Whitespace,
    Punctuation,
    Number,
    /// A Python keyword or literal (`def`, `return`, `None` ...).
    Keyword,
    /// A word or identifier starting here.
    Word,
    /// The rest of a word the previous token began.
    Continuation,
    Other,
}

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "if", "import", "in", "is", "lambda",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

impl TokenClass {
    pub const ALL: [TokenClass; 7] = [
        TokenClass::Whitespace,
        TokenClass::Punctuation,
        TokenClass::Number,
        TokenClass::Keyword,
        TokenClass::Word,
        TokenClass::Continuation,
        TokenClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenClass::Whitespace => "whitespace",
            TokenClass::Punctuation => "punctuation",
            TokenClass::Number => "number",
            TokenClass::Keyword => "keyword",
            TokenClass::Word => "word",
            TokenClass::Continuation => "continuation",
            TokenClass::Other => "other",
        }
    }

    /// The class of the piece `text` following the piece `previous`.
    pub fn of(text: &str, previous: &str) -> Self {
        let word_char = |c: char| c.is_alphanumeric() || c == '_';
        let core = text.trim();
        if core.is_empty() {
            TokenClass::Whitespace
        } else if core.chars().any(|c| c.is_ascii_digit())
            && core.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            TokenClass::Number
        } else if core.chars().all(|c| c.is_ascii_punctuation()) {
            TokenClass::Punctuation
        } else if KEYWORDS.contains(&core) {
            TokenClass::Keyword
        } else if core.chars().all(word_char) {
            let glued = !text.starts_with(char::is_whitespace)
                && previous.chars().last().is_some_and(word_char);
            if glued {
                TokenClass::Continuation
            } else {
                TokenClass::Word
            }
        } else {
            TokenClass::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_classes() {
        let cases = [
            ("    ", "", TokenClass::Whitespace),
            ("\n", "x", TokenClass::Whitespace),
            (" 42", "=", TokenClass::Number),
            ("):", "x", TokenClass::Punctuation),
            (" return", "", TokenClass::Keyword),
            (" total", "", TokenClass::Word),
            ("_sum", "total", TokenClass::Continuation),
            ("ing", "walk", TokenClass::Continuation),
            ("(x", "", TokenClass::Other),
        ];
        for (text, prev, want) in cases {
            assert_eq!(TokenClass::of(text, prev), want, "{text:?} after {prev:?}");
        }
    }

    #[test]
    fn z_score_is_the_default_rules_statistic() {
        use crate::ImportanceRule;
        let row = [0.6f32, 0.05, 0.1, 0.02, 0.03, 0.2];
        let z = sink_excluded_z(&row);
        for lambda in [0.0f32, 0.5, 1.0, 1.5, 2.0] {
            let rule = crate::importance::SinkExcludedZScore.assess(&row, lambda);
            assert_eq!(rule.important, z >= lambda, "λ = {lambda}, z = {z}");
        }
        assert_eq!(sink_excluded_z(&[1.0, 0.0, 0.0]), f32::MAX);
    }

    #[test]
    fn distribution_and_attention_signals() {
        let d = distribution_signals(&[2.0, 1.0, 0.0], 0);
        assert!(d.top1 > d.top2 && d.top2 > 0.0 && d.entropy > 0.0);
        let flat = distribution_signals(&[0.0; 4], 1);
        assert!((flat.entropy - 4f32.ln()).abs() < 1e-5);
        let a = attention_signals(&[0.5, 0.25, 0.25]);
        assert_eq!((a.self_weight, a.sink), (0.25, 0.5));
        assert!(a.entropy > 0.0 && a.entropy <= 1.0);
        assert_eq!(attention_signals(&[]).self_z, f32::MAX);
    }
}
