//! The filter heads this project ships, one per draft and verifier pair, and how mode `auto` (the
//! default) settles into the filter a generation runs with.
//!
//! A head is fitted on the development splits by the filter study (`hlm eval --trace --rescore`,
//! `scripts/eval-paper.sh --only head`) and shipped here as the very file the study wrote, so the
//! evaluation, the CLI and the browser read one copy. A pair is recognised by its models' names:
//! the draft model's (the file stem natively, `draftModelName` in the browser) and the one the
//! verifier announces in its `Welcome` (its file stem).
//!
//! Mode `auto` becomes:
//! * `learned` with the pair's head, at the head's suggested threshold unless one is given;
//! * `uncertainty` (U-HLM, `u_th` = 0.07 unless given) for a pair without a head.

use crate::decode::GenerationConfig;
use crate::{EngineError, Result};
use hlm_core::head::FilterHead;
use hlm_core::FilterMode;
use serde::{Deserialize, Serialize};

/// A head shipped for one pair of models.
pub struct ShippedHead {
    pub draft: &'static str,
    pub verifier: &'static str,
    /// The head's file (`head.json`).
    pub json: &'static str,
}

/// Every shipped head.
pub const SHIPPED: &[ShippedHead] = &[ShippedHead {
    draft: "qwen2.5-coder-0.5b-instruct-q4_k_m",
    verifier: "qwen2.5-coder-1.5b-instruct-q4_k_m",
    json: include_str!("../../../docs/eval/filter-study/dev/head.json"),
}];

/// The head shipped for `draft` drafting for `verifier` (names compared without regard to ASCII
/// case), if any.
pub fn shipped_head(draft: &str, verifier: &str) -> Option<FilterHead> {
    let s = SHIPPED.iter().find(|s| {
        s.draft.eq_ignore_ascii_case(draft) && s.verifier.eq_ignore_ascii_case(verifier)
    })?;
    // Every shipped file parses (a test reads them all); a broken one would mean no head.
    FilterHead::from_json(s.json).ok()
}

/// The filter a generation runs with, once settled: what a page shows before it generates.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterChoice {
    /// Never `auto`.
    pub mode: FilterMode,
    /// The upload threshold: on `u` (0..1), or in mode `learned` on the head's `P(reject)`.
    pub uncertainty_threshold: f32,
    /// Mode `learned`: what its head was fitted on, and its fingerprint.
    pub head: Option<String>,
}

/// What `mode` (with an optional head and threshold of the user's) becomes for this pair of
/// models. Errors when mode `learned` has no head: none given and none shipped for the pair.
pub fn settle(cfg: &GenerationConfig, draft: &str, verifier: &str) -> Result<GenerationConfig> {
    let mut out = cfg.clone();
    let head = cfg.head.clone().or_else(|| match cfg.mode {
        FilterMode::Auto | FilterMode::Learned => shipped_head(draft, verifier),
        _ => None,
    });
    out.mode = match (cfg.mode, &head) {
        (FilterMode::Auto, Some(_)) => FilterMode::Learned,
        (FilterMode::Auto, None) => FilterMode::Uncertainty,
        (FilterMode::Learned, None) => {
            return Err(EngineError::model(format!(
                "mode `learned` needs a filter head: none ships for draft `{draft}` with \
                 verifier `{verifier}`; pass one (the filter study's head.json: --filter-head, \
                 or `filterHead` in the browser) or use mode `auto`"
            )))
        }
        (mode, _) => mode,
    };
    out.head = head.filter(|_| out.mode == FilterMode::Learned);
    // A head's threshold is on P(reject), not on u: unless the user set one, its suggestion.
    let suggested = out.head.as_ref().and_then(|h| h.suggested_threshold);
    if let (Some(t), false) = (suggested, cfg.threshold_set) {
        out.knobs.uncertainty_threshold = t as f32;
    }
    Ok(out)
}

/// The filter mode `auto` with the default threshold becomes for this pair.
pub fn default_filter(draft: &str, verifier: &str) -> FilterChoice {
    let cfg = GenerationConfig::default();
    let settled = settle(&cfg, draft, verifier).unwrap_or(cfg);
    FilterChoice::of(&settled)
}

impl FilterChoice {
    /// One line for a person: `filter: learned at P(reject) > 0.0173 (head: …)`.
    pub fn describe(&self) -> String {
        match (&self.head, self.mode) {
            (Some(h), _) => format!(
                "filter: {} at P(reject) > {} (head: {h})",
                self.mode, self.uncertainty_threshold
            ),
            (None, FilterMode::Always | FilterMode::Never) => format!("filter: {}", self.mode),
            (None, _) => format!(
                "filter: {} at u > {}",
                self.mode, self.uncertainty_threshold
            ),
        }
    }

    /// The filter a settled configuration runs.
    pub fn of(cfg: &GenerationConfig) -> Self {
        Self {
            mode: cfg.mode,
            uncertainty_threshold: cfg.knobs.uncertainty_threshold,
            head: cfg.head.as_ref().map(|h| h.describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAFT: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";
    const VERIFIER: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m";

    #[test]
    fn every_shipped_head_parses_and_names_its_pair() {
        for s in SHIPPED {
            let head = FilterHead::from_json(s.json).expect("a shipped head parses");
            assert!(head.suggested_threshold.is_some(), "{}", s.draft);
            assert!(
                head.fitted_on.contains(s.draft) && head.fitted_on.contains(s.verifier),
                "{} says it was fitted on {}",
                s.draft,
                head.fitted_on
            );
            assert!(head.inputs.iter().all(|i| !i.needs_attention()));
        }
    }

    #[test]
    fn auto_is_the_pairs_head_at_its_threshold_or_u_hlm() {
        let c = default_filter(DRAFT, VERIFIER);
        let head = shipped_head(DRAFT, VERIFIER).unwrap();
        assert_eq!(c.mode, FilterMode::Learned);
        assert_eq!(
            c.uncertainty_threshold,
            head.suggested_threshold.unwrap() as f32
        );
        assert_eq!(c.head, Some(head.describe()));
        // Names are compared without regard to case.
        assert_eq!(default_filter(&DRAFT.to_uppercase(), VERIFIER), c);
        // Another pair, or the pair the wrong way round: U-HLM at its threshold.
        for (d, v) in [(VERIFIER, DRAFT), ("smollm2-135m", VERIFIER), ("", "")] {
            let c = default_filter(d, v);
            assert_eq!(c.mode, FilterMode::Uncertainty, "{d} {v}");
            assert_eq!(c.uncertainty_threshold, 0.07);
            assert_eq!(c.head, None);
        }
    }

    #[test]
    fn a_given_threshold_or_head_wins_and_learned_without_a_head_is_an_error() {
        let mut cfg = GenerationConfig {
            threshold_set: true,
            ..Default::default()
        };
        cfg.knobs.uncertainty_threshold = 0.3;
        let s = settle(&cfg, DRAFT, VERIFIER).unwrap();
        assert_eq!(
            (s.mode, s.knobs.uncertainty_threshold),
            (FilterMode::Learned, 0.3)
        );
        let mut own = shipped_head(DRAFT, VERIFIER).unwrap();
        own.suggested_threshold = Some(0.5);
        let cfg = GenerationConfig {
            head: Some(own.clone()),
            ..Default::default()
        };
        let s = settle(&cfg, "smollm2-135m", "smollm2-360m").unwrap();
        assert_eq!(
            (s.mode, s.knobs.uncertainty_threshold, s.head),
            (FilterMode::Learned, 0.5, Some(own))
        );
        let learned = GenerationConfig {
            mode: FilterMode::Learned,
            ..Default::default()
        };
        let err = settle(&learned, "smollm2-135m", "smollm2-360m").unwrap_err();
        assert!(err
            .to_string()
            .contains("none ships for draft `smollm2-135m`"));
        assert!(settle(&learned, DRAFT, VERIFIER).unwrap().head.is_some());
        // Other modes keep their threshold and carry no head.
        let u = GenerationConfig {
            mode: FilterMode::UncertaintyImportance,
            ..Default::default()
        };
        let s = settle(&u, DRAFT, VERIFIER).unwrap();
        assert_eq!(
            (s.mode, s.knobs.uncertainty_threshold, s.head),
            (FilterMode::UncertaintyImportance, 0.07, None)
        );
    }
}
