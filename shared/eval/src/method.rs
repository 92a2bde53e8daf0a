//! The methods an evaluation compares (its rows), their names, and the loop options each runs
//! with.
//!
//! * `llm-only`: the verifier alone (greedy); the device sends the prompt and receives every
//!   token. Upload rate 1 by definition: every token is the LLM's.
//! * `slm-only`: the draft alone (the loop in mode `never`: nothing is sent).
//! * `standard-hlm`: every drafted token uploaded (mode `always`).
//! * `u-hlm`: uploads chosen by uncertainty alone (mode `uncertainty`); `u-hlm:expected` with u
//!   computed as the expected value of U-HLM's draws instead of sampled.
//! * `learned`: the run's filter head (`--filter-head head.json`, mode `learned`): upload iff its
//!   probability of a rejection exceeds the threshold.
//! * `ours`: uncertainty and attention importance (mode `uncertainty+importance`), with
//!   `ours:<rule>` variants for the importance-rule ablation.
//!
//! Knobs set per row are written `@u=<u_th>` and `@l=<λ>` (e.g. `ours@u=0.2@l=1`).

use hlm_core::head::FilterHead;
use hlm_core::{FilterMode, ImportanceRuleName, UncertaintyEstimate};
use hlm_engine::decode::{GenerationOptions, Pipeline, StopConditions};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Method {
    LlmOnly,
    SlmOnly,
    StandardHlm,
    /// U-HLM, at the run's `u_th` or at its own (a knob sweep's point); `u-hlm:expected`
    /// computes u as the expected value of U-HLM's draws.
    UHlm {
        u_th: Option<f32>,
        estimate: UncertaintyEstimate,
    },
    /// The learned filter head of the run (`--filter-head`), at the run's threshold or its own
    /// (`learned@u=0.3`: upload iff P(reject) > 0.3).
    Learned {
        u_th: Option<f32>,
    },
    /// Ours with the named importance rule, at the run's knobs or at its own.
    Ours {
        rule: ImportanceRuleName,
        u_th: Option<f32>,
        lambda: Option<f32>,
    },
}

/// The importance rule of `ours` without a `:<rule>` suffix.
pub const DEFAULT_RULE: ImportanceRuleName = ImportanceRuleName::SinkZscore;

impl Method {
    /// U-HLM as published (sampled u), at the run's `u_th` or at its own.
    pub fn u_hlm(u_th: Option<f32>) -> Self {
        Method::UHlm {
            u_th,
            estimate: UncertaintyEstimate::Sampled,
        }
    }

    /// `ours` with the default rule and the run's knobs.
    pub fn ours() -> Self {
        Method::Ours {
            rule: DEFAULT_RULE,
            u_th: None,
            lambda: None,
        }
    }

    /// The row's name: the method, `:<rule>` for another importance rule, and `@u=<u_th>` /
    /// `@l=<λ>` for knobs set per method (e.g. `ours@u=0.2@l=1`).
    pub fn name(&self) -> String {
        let knobs = |u: &Option<f32>, l: &Option<f32>| {
            let mut s = String::new();
            if let Some(u) = u {
                s += &format!("@u={u}");
            }
            if let Some(l) = l {
                s += &format!("@l={l}");
            }
            s
        };
        match self {
            Method::LlmOnly => "llm-only".into(),
            Method::SlmOnly => "slm-only".into(),
            Method::StandardHlm => "standard-hlm".into(),
            Method::UHlm {
                u_th,
                estimate: UncertaintyEstimate::Sampled,
            } => format!("u-hlm{}", knobs(u_th, &None)),
            Method::UHlm { u_th, estimate } => format!("u-hlm:{estimate}{}", knobs(u_th, &None)),
            Method::Learned { u_th } => format!("learned{}", knobs(u_th, &None)),
            Method::Ours { rule, u_th, lambda } if *rule == DEFAULT_RULE => {
                format!("ours{}", knobs(u_th, lambda))
            }
            Method::Ours { rule, u_th, lambda } => format!("ours:{rule}{}", knobs(u_th, lambda)),
        }
    }

    /// Parses what [`Method::name`] writes.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let unknown = || {
            format!(
                "unknown method `{s}` (llm-only, slm-only, standard-hlm, u-hlm, u-hlm:expected, \
                 learned, ours, ours:<{}>, with @u=<u_th> for u-hlm and learned, @u and @l=<λ> \
                 for ours)",
                ImportanceRuleName::ALL.map(|r| r.as_str()).join("|")
            )
        };
        let mut parts = s.split('@');
        let base = parts.next().unwrap_or_default();
        let (mut u_th, mut lambda) = (None, None);
        for p in parts {
            let (k, v) = p.split_once('=').ok_or_else(unknown)?;
            let v: f32 = v
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("`{p}` in `{s}`: the value must be a number ≥ 0"))?;
            match k {
                "u" => u_th = Some(v),
                "l" => lambda = Some(v),
                _ => return Err(unknown()),
            }
        }
        let knobless = |m: Method| {
            if u_th.is_some() || lambda.is_some() {
                Err(format!("`{s}`: only u-hlm, learned and ours take knobs"))
            } else {
                Ok(m)
            }
        };
        match base {
            "llm-only" => knobless(Method::LlmOnly),
            "slm-only" => knobless(Method::SlmOnly),
            "standard-hlm" => knobless(Method::StandardHlm),
            "u-hlm" | "u-hlm:expected" | "learned" if lambda.is_some() => {
                Err(format!("`{s}`: only ours has an importance knob"))
            }
            "learned" => Ok(Method::Learned { u_th }),
            "u-hlm" => Ok(Method::UHlm {
                u_th,
                estimate: UncertaintyEstimate::Sampled,
            }),
            "u-hlm:expected" => Ok(Method::UHlm {
                u_th,
                estimate: UncertaintyEstimate::Expected,
            }),
            "ours" => Ok(Method::Ours {
                rule: DEFAULT_RULE,
                u_th,
                lambda,
            }),
            other => match other.strip_prefix("ours:") {
                Some(rule) => match rule.parse() {
                    Ok(rule) => Ok(Method::Ours { rule, u_th, lambda }),
                    Err(_) => Err(unknown()),
                },
                None => Err(unknown()),
            },
        }
    }

    /// The default rows.
    pub fn all() -> Vec<Method> {
        vec![
            Method::LlmOnly,
            Method::SlmOnly,
            Method::StandardHlm,
            Method::u_hlm(None),
            Method::ours(),
        ]
    }

    /// The rows of a knob sweep: U-HLM and ours at each `u_th` of `us` (ours at the run's λ),
    /// and ours at each λ of `lambdas` (at the run's `u_th`).
    pub fn sweep(us: &[f32], lambdas: &[f32]) -> Vec<Method> {
        let mut v = Vec::new();
        for &u in us {
            v.push(Method::u_hlm(Some(u)));
            v.push(Method::Ours {
                rule: DEFAULT_RULE,
                u_th: Some(u),
                lambda: None,
            });
        }
        for &l in lambdas {
            v.push(Method::Ours {
                rule: DEFAULT_RULE,
                u_th: None,
                lambda: Some(l),
            });
        }
        v
    }
}

/// The run-wide settings a method's loop options start from.
#[derive(Debug, Clone)]
pub struct RunKnobs {
    pub max_tokens: usize,
    pub seed: u64,
    pub uncertainty_threshold: f32,
    pub importance_strictness: f32,
    /// The filter head of `learned` rows.
    pub head: Option<FilterHead>,
    /// Drafting ahead while a round is in flight (the text is the same either way; the
    /// real-link timings and the discarded drafts differ).
    pub pipeline: Pipeline,
}

impl Method {
    /// The family a row belongs to and the knobs it ran at, given the run's: `(family, u_th, λ)`
    /// with family `u-hlm` or `ours` (other rules and the baselines are not on knob curves).
    pub fn knobs(&self, run: (f32, f32)) -> Option<(&'static str, f32, f32)> {
        match self {
            Method::UHlm { u_th, estimate } => {
                let family = match estimate {
                    UncertaintyEstimate::Sampled => "u-hlm",
                    UncertaintyEstimate::Expected => "u-hlm:expected",
                };
                Some((family, u_th.unwrap_or(run.0), run.1))
            }
            // Without its own threshold it runs at its head's suggestion, not on the curve.
            Method::Learned { u_th } => u_th.map(|u| ("learned", u, run.1)),
            Method::Ours { rule, u_th, lambda } if *rule == DEFAULT_RULE => {
                Some(("ours", u_th.unwrap_or(run.0), lambda.unwrap_or(run.1)))
            }
            _ => None,
        }
    }

    /// Whether the row sets its own knobs (a point of a knob sweep).
    pub fn is_sweep_point(&self) -> bool {
        matches!(
            self,
            Method::UHlm { u_th: Some(_), .. } | Method::Learned { u_th: Some(_) }
        ) || matches!(self, Method::Ours { u_th, lambda, .. } if u_th.is_some() || lambda.is_some())
    }

    /// The decoding loop's options for this method (`None` for `llm-only`, which does not run
    /// the loop).
    pub fn options(&self, run: &RunKnobs, stop: &StopConditions) -> Option<GenerationOptions> {
        let (mut u_th, mut lambda) = (run.uncertainty_threshold, run.importance_strictness);
        let (mode, rule) = match self {
            Method::LlmOnly => return None,
            Method::SlmOnly => (FilterMode::Never, DEFAULT_RULE),
            Method::StandardHlm => (FilterMode::Always, DEFAULT_RULE),
            Method::UHlm { u_th: u, .. } => {
                u_th = u.unwrap_or(u_th);
                (FilterMode::Uncertainty, DEFAULT_RULE)
            }
            Method::Learned { u_th: u } => {
                // Without its own threshold, the head's suggested one (the run's u_th is on u).
                let suggested = run.head.as_ref().and_then(|h| h.suggested_threshold);
                u_th = u.or(suggested.map(|s| s as f32)).unwrap_or(u_th);
                (FilterMode::Learned, DEFAULT_RULE)
            }
            Method::Ours {
                rule,
                u_th: u,
                lambda: l,
            } => {
                u_th = u.unwrap_or(u_th);
                lambda = l.unwrap_or(lambda);
                (FilterMode::UncertaintyImportance, *rule)
            }
        };
        let uncertainty = match self {
            Method::UHlm { estimate, .. } => *estimate,
            _ => UncertaintyEstimate::Sampled,
        };
        Some(GenerationOptions {
            max_tokens: run.max_tokens,
            seed: run.seed,
            mode,
            uncertainty_threshold: Some(u_th),
            importance_strictness: lambda,
            importance_rule: rule,
            uncertainty,
            head: (mode == FilterMode::Learned)
                .then(|| run.head.clone())
                .flatten(),
            stop: stop.strings.clone(),
            stop_at_code_block_end: stop.code_block_end,
            pipeline_depth: run.pipeline.depth_option(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip_and_bad_names_are_explained() {
        let mut all = Method::all();
        all.extend(Method::sweep(&[0.0, 0.25], &[1.5]));
        all.push(Method::Ours {
            rule: ImportanceRuleName::MedianMad,
            u_th: Some(0.1),
            lambda: Some(3.0),
        });
        all.push(Method::parse("u-hlm:expected@u=0.2").unwrap());
        all.push(Method::parse("learned@u=0.3").unwrap());
        all.push(Method::Learned { u_th: None });
        for m in &all {
            assert_eq!(Method::parse(&m.name()).as_ref(), Ok(m), "{}", m.name());
        }
        assert_eq!(Method::sweep(&[0.25], &[]).len(), 2);
        assert_eq!(
            Method::parse("ours@u=0.2@l=1").unwrap().name(),
            "ours@u=0.2@l=1"
        );
        for (bad, says) in [
            ("gpt", "unknown method"),
            ("ours:nope", "unknown method"),
            ("u-hlm@l=1", "only ours has an importance knob"),
            ("u-hlm:expected@l=1", "only ours has an importance knob"),
            ("learned@l=1", "only ours has an importance knob"),
            ("u-hlm:exact", "unknown method"),
            ("slm-only@u=0.1", "only u-hlm, learned and ours"),
            ("ours@u=-1", "number ≥ 0"),
            ("ours@u=x", "number ≥ 0"),
            ("ours@z=1", "unknown method"),
        ] {
            let e = Method::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
