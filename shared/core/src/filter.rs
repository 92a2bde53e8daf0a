//! The token filter: skip (keep the draft token locally) or upload (have the verifier check it).

use crate::importance::Importance;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FilterMode {
    /// The default: the learned head shipped for the draft and verifier pair when there is one
    /// (mode `learned`, at the head's suggested threshold), else U-HLM (mode `uncertainty`).
    /// The decoding loop settles it when it knows both models' names
    /// (`hlm_engine::heads::default_filter`); [`decide`] never sees it.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Standard HLM: upload every token.
    #[serde(rename = "always")]
    Always,
    /// U-HLM: upload iff `u > u_th`.
    #[serde(rename = "uncertainty")]
    Uncertainty,
    /// The seed's rule: upload iff `u > u_th` and the token is important by attention.
    #[serde(rename = "uncertainty+importance")]
    UncertaintyImportance,
    /// A learned head ([`crate::head::FilterHead`]): upload iff its `P(reject) > u_th`.
    #[serde(rename = "learned")]
    Learned,
    /// The draft model alone.
    #[serde(rename = "never")]
    Never,
}

impl FilterMode {
    pub const ALL: [FilterMode; 6] = [
        FilterMode::Auto,
        FilterMode::Always,
        FilterMode::Uncertainty,
        FilterMode::UncertaintyImportance,
        FilterMode::Learned,
        FilterMode::Never,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FilterMode::Auto => "auto",
            FilterMode::Always => "always",
            FilterMode::Uncertainty => "uncertainty",
            FilterMode::UncertaintyImportance => "uncertainty+importance",
            FilterMode::Learned => "learned",
            FilterMode::Never => "never",
        }
    }
}

impl fmt::Display for FilterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FilterMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FilterMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown filter mode `{s}` (auto, always, uncertainty, \
                     uncertainty+importance, learned, never)"
                )
            })
    }
}

/// The two knobs.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FilterKnobs {
    /// `u_th`: upload only when the uncertainty exceeds it (U-HLM's risk-averse value ≈ 0.07);
    /// in mode `learned`, when the head's probability of a rejection exceeds it.
    pub uncertainty_threshold: f32,
    /// λ of the adaptive importance threshold: higher marks fewer tokens important.
    pub importance_strictness: f32,
}

impl Default for FilterKnobs {
    fn default() -> Self {
        Self {
            uncertainty_threshold: 0.07,
            importance_strictness: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Skip,
    Upload,
}

/// `always` → upload; `never` → skip; `uncertainty` → upload iff `u > u_th`;
/// `uncertainty+importance` → upload iff `u > u_th` and important (no importance known: treated
/// as important, i.e. U-HLM); `learned` → upload iff `u > u_th` where `u` is the head's
/// `P(reject)`; `auto`, settled before the loop runs, decides as `uncertainty` if it ever
/// arrives here. `force_upload` (e.g. an end-of-sequence token) uploads in every mode but `never`.
pub fn decide(
    mode: FilterMode,
    knobs: &FilterKnobs,
    u: f32,
    importance: Option<&Importance>,
    force_upload: bool,
) -> Decision {
    let upload = match mode {
        FilterMode::Never => return Decision::Skip,
        FilterMode::Always => true,
        FilterMode::Auto | FilterMode::Uncertainty | FilterMode::Learned => {
            u > knobs.uncertainty_threshold
        }
        FilterMode::UncertaintyImportance => {
            u > knobs.uncertainty_threshold && importance.is_none_or(|i| i.important)
        }
    };
    if upload || force_upload {
        Decision::Upload
    } else {
        Decision::Skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        let k = FilterKnobs::default();
        let imp = |important| Importance {
            score: 0.1,
            threshold: 0.05,
            important,
        };
        use Decision::*;
        use FilterMode::*;
        let cases = [
            (Always, 0.0, None, false, Upload),
            (Never, 1.0, Some(imp(true)), true, Skip),
            (Uncertainty, 0.05, None, false, Skip),
            (Uncertainty, 0.5, Some(imp(false)), false, Upload),
            (Uncertainty, 0.0, None, true, Upload),
            (UncertaintyImportance, 0.5, Some(imp(true)), false, Upload),
            (UncertaintyImportance, 0.5, Some(imp(false)), false, Skip),
            (UncertaintyImportance, 0.01, Some(imp(true)), false, Skip),
            (UncertaintyImportance, 0.5, None, false, Upload),
            (UncertaintyImportance, 0.0, Some(imp(false)), true, Upload),
            (Learned, 0.5, Some(imp(false)), false, Upload),
            (Learned, 0.01, None, false, Skip),
        ];
        for (mode, u, i, force, want) in cases {
            assert_eq!(
                decide(mode, &k, u, i.as_ref(), force),
                want,
                "{mode} u={u} {i:?} {force}"
            );
        }
        for m in FilterMode::ALL {
            assert_eq!(m.to_string().parse::<FilterMode>().unwrap(), m);
        }
        assert!("sometimes".parse::<FilterMode>().is_err());
    }
}
