//! Pipelined drafting ([`hlm_engine::pipeline`]) on tiny random models: the loop that drafts
//! ahead while a round is in flight produces exactly what the loop without it produces (greedy
//! and sampled, every filter mode, stop strings, aborts), and its sampled output follows the
//! verifier's distribution (χ²).

use hlm_core::{softmax, FilterKnobs, FilterMode};
use hlm_engine::decode::{
    Drafter, GenerationConfig, HybridSession, Pipeline, StopConditions, StopReason, Summary,
    TokenEvent,
};
use hlm_engine::link::{LocalLink, VerifierLink};
use hlm_engine::model::{LogitRows, Model};
use hlm_engine::testing::*;
use hlm_engine::verifier::VerifierSession;
use hlm_protocol::Sampling;
use std::sync::Arc;

const PROMPT: [u32; 4] = [5, 6, 7, 8];

struct Pair {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    drafter: Drafter,
    verifier: Arc<Model>,
}

fn pair() -> Pair {
    let (dd, drafter) = tiny_drafter(11);
    let (vd, verifier) = tiny_drafter(12);
    Pair {
        _dirs: (dd, vd),
        drafter,
        verifier: verifier.model_arc(),
    }
}

impl Pair {
    fn local(&self) -> LocalLink {
        let vocab = self.drafter.vocab_info();
        LocalLink::new(VerifierSession::new(
            self.verifier.clone(),
            vocab,
            "test",
            512,
        ))
    }

    fn session<L: VerifierLink>(&self, link: L) -> HybridSession<L> {
        block_on(HybridSession::connect(link, self.drafter.vocab_info(), "t")).unwrap()
    }

    /// One generation on a fresh session: over a [`SlowLink`] (verdicts seen only when waited
    /// for, so a pipelined loop drafts ahead) or over a plain local link.
    fn run(&mut self, cfg: &GenerationConfig, slow: bool) -> (Summary, Vec<TokenEvent>) {
        if slow {
            let mut s = self.session(SlowLink(self.local()));
            generate(&mut s, &mut self.drafter, cfg, usize::MAX)
        } else {
            let mut s = self.session(self.local());
            generate(&mut s, &mut self.drafter, cfg, usize::MAX)
        }
    }
}

/// Generates after [`PROMPT`]; the caller aborts after `abort_after` tokens.
fn generate<L: VerifierLink>(
    s: &mut HybridSession<L>,
    drafter: &mut Drafter,
    cfg: &GenerationConfig,
    abort_after: usize,
) -> (Summary, Vec<TokenEvent>) {
    let mut events = Vec::new();
    let summary = block_on(s.generate(drafter, &PROMPT, cfg, &mut |e| {
        events.push(e.clone());
        events.len() < abort_after
    }))
    .unwrap();
    (summary, events)
}

fn config(mode: FilterMode, sampling: Sampling, per_round: usize, p: Pipeline) -> GenerationConfig {
    GenerationConfig {
        max_tokens: 40,
        mode,
        sampling,
        uploads_per_round: per_round,
        pipeline: p,
        knobs: FilterKnobs {
            // These random models are unsure of everything: a high threshold makes a mix.
            uncertainty_threshold: 0.6,
            ..FilterKnobs::default()
        },
        ..Default::default()
    }
}

fn check_counts(s: &Summary, events: &[TokenEvent]) {
    let t = &s.totals;
    assert_eq!(events.len(), t.tokens);
    assert_eq!(t.tokens, t.skipped + t.accepted + t.resampled);
    assert_eq!(t.uploaded, t.accepted + t.resampled);
    let ids: Vec<u32> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, s.ids);
    assert_eq!(
        events.iter().map(|e| e.text.as_str()).collect::<String>(),
        s.text
    );
}

/// The same ids, text and decisions with pipelining (fixed depths and adaptive, over a link
/// whose verdicts always arrive late) as without, in every mode, greedy and sampled, one or
/// several uploads per round; drafts ahead are made, and some are thrown away.
#[test]
fn pipelined_loop_produces_what_the_plain_loop_produces() {
    let mut p = pair();
    let (mut ahead, mut discarded) = (0, 0);
    let samplings = [
        Sampling::Greedy,
        Sampling::Temperature {
            temperature: 1.0,
            seed: 7,
        },
        Sampling::Temperature {
            temperature: 4.0,
            seed: 8,
        },
    ];
    for mode in [
        FilterMode::Always,
        FilterMode::Uncertainty,
        FilterMode::UncertaintyImportance,
        FilterMode::Never,
    ] {
        for sampling in samplings {
            for per_round in [1, 3] {
                let plain = p.run(&config(mode, sampling, per_round, Pipeline::Off), false);
                check_counts(&plain.0, &plain.1);
                assert_eq!(plain.0.totals.drafted_ahead, 0);
                for depth in [Pipeline::Depth(1), Pipeline::Depth(5), Pipeline::Adaptive] {
                    for slow in [true, false] {
                        let cfg = config(mode, sampling, per_round, depth);
                        let (s, ev) = p.run(&cfg, slow);
                        let what = format!("{mode:?} {sampling:?} {per_round}/round {depth}");
                        check_counts(&s, &ev);
                        assert_eq!(s.ids, plain.0.ids, "{what}");
                        assert_eq!(s.text, plain.0.text, "{what}");
                        let kinds = |e: &[TokenEvent]| e.iter().map(|e| e.kind).collect::<Vec<_>>();
                        assert_eq!(kinds(&ev), kinds(&plain.1), "{what}");
                        assert_eq!(s.totals.uploaded, plain.0.totals.uploaded, "{what}");
                        assert_eq!(s.stop_reason, plain.0.stop_reason, "{what}");
                        assert!(s.totals.discarded >= plain.0.totals.discarded, "{what}");
                        if mode == FilterMode::Never {
                            assert_eq!(s.totals.bytes_up, 0);
                        } else if slow {
                            ahead += s.totals.drafted_ahead;
                            discarded += s.totals.discarded - plain.0.totals.discarded;
                        }
                    }
                }
            }
        }
    }
    assert!(ahead > 100, "{ahead} tokens drafted ahead");
    assert!(discarded > 10, "{discarded} drafts ahead thrown away");
}

/// A stop string reached in tokens drafted ahead ends the text where the plain loop ends it.
#[test]
fn stop_strings_end_a_pipelined_generation_where_they_end_a_plain_one() {
    let mut p = pair();
    let sampling = Sampling::Temperature {
        temperature: 1.5,
        seed: 3,
    };
    let cfg = |pipe| config(FilterMode::Uncertainty, sampling, 1, pipe);
    let (full, _) = p.run(&cfg(Pipeline::Off), false);
    let tok = p.drafter.tokenizer().clone();
    let stop = tok.decode(&full.ids[12..14], true).unwrap();
    let with_stop = |pipe| GenerationConfig {
        stop: StopConditions {
            strings: vec![stop.clone()],
            code_block_end: false,
        },
        ..cfg(pipe)
    };
    let (plain, _) = p.run(&with_stop(Pipeline::Off), false);
    assert_eq!(plain.stop_reason, StopReason::StopString);
    for pipe in [Pipeline::Depth(6), Pipeline::Adaptive] {
        let (s, ev) = p.run(&with_stop(pipe), true);
        check_counts(&s, &ev);
        assert_eq!((&s.text, &s.ids), (&plain.text, &plain.ids), "{pipe}");
        assert_eq!(s.stop_reason, StopReason::StopString);
    }
}

/// An abort while a round is in flight leaves the session clean: the next generation on it
/// equals one on a fresh session.
#[test]
fn an_abort_mid_flight_leaves_the_session_ready_for_the_next_generation() {
    let mut p = pair();
    let cfg = config(
        FilterMode::Uncertainty,
        Sampling::Greedy,
        1,
        Pipeline::Depth(8),
    );
    let (fresh, _) = p.run(&cfg, true);
    let mut s = p.session(SlowLink(p.local()));
    let (aborted, ev) = generate(&mut s, &mut p.drafter, &cfg, 3);
    assert_eq!(aborted.stop_reason, StopReason::Aborted);
    assert_eq!(ev.len(), 3);
    // The round still in flight was answered and counted: the client's counts are the server's.
    let server = &s.link_mut().0.session.stats;
    assert_eq!(aborted.totals.rounds as u64, server.rounds);
    assert_eq!(
        aborted.totals.llm_forward_tokens as u64,
        server.forward_tokens
    );
    let (again, _) = generate(&mut s, &mut p.drafter, &cfg, usize::MAX);
    assert_eq!(again.ids, fresh.ids);
}

/// χ² critical value at p = 0.001 for `df` degrees of freedom (Wilson-Hilferty).
fn chi2_critical(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.09;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// χ² of `counts` against probabilities `expected` over `n` draws, cells expected below 5 pooled.
fn chi2(counts: &[u64], expected: &[f64], n: u64) -> (f64, usize) {
    let (mut stat, mut cells) = (0.0, 0);
    let (mut pool_c, mut pool_e) = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(expected) {
        let e = p * n as f64;
        if e < 5.0 {
            (pool_c, pool_e) = (pool_c + c as f64, pool_e + e);
        } else {
            stat += (c as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    if pool_e > 0.0 {
        stat += (pool_c - pool_e).powi(2) / pool_e;
        cells += 1;
    }
    (stat, cells - 1)
}

/// The distribution of the second generated token (or of the generation ending after one):
/// `Σ_a m(a) · m(b | a)` under `model` at temperature `t`. Index `VOCAB` is the end.
fn second_token_marginal(model: &Model, t: f32, eos: u32) -> Vec<f64> {
    let step = |cache: &mut hlm_engine::model::KvCache, ids: &[u32]| {
        let out = model.forward(cache, ids, &LogitRows::Last, 0).unwrap();
        softmax(out.last_logits().unwrap(), t)
    };
    let mut cache = model.new_cache();
    let first = step(&mut cache, &PROMPT);
    let mut marginal = vec![0.0; VOCAB + 1];
    for (a, &pa) in first.iter().enumerate() {
        if a as u32 == eos {
            marginal[VOCAB] += f64::from(pa);
            continue;
        }
        cache.truncate(PROMPT.len());
        for (b, &pb) in step(&mut cache, &[a as u32]).iter().enumerate() {
            marginal[b] += f64::from(pa) * f64::from(pb);
        }
    }
    marginal
}

/// Under sampling every token of mode `always` follows the verifier's distribution, the second
/// one too, which a pipelined loop drafts ahead while the first is in flight and redrafts after
/// a rejection. One session serves every draw (each generation opens with `Reset`).
#[test]
fn pipelined_sampling_follows_the_verifiers_distribution() {
    let mut p = pair();
    const N: u64 = 3000;
    // Hot enough that these random models' distributions spread (at 1 they are one-hot) and
    // differ (total variation 0.4 between the two): drafts are often rejected.
    let t = 4.0;
    let eos = 0;
    let mut s = p.session(SlowLink(p.local()));
    let mut counts = vec![0u64; VOCAB + 1];
    let mut ahead = 0;
    for seed in 0..N {
        let sampling = Sampling::Temperature {
            temperature: t,
            seed,
        };
        let cfg = GenerationConfig {
            max_tokens: 2,
            ..config(FilterMode::Always, sampling, 1, Pipeline::Depth(4))
        };
        let (sum, _) = generate(&mut s, &mut p.drafter, &cfg, usize::MAX);
        ahead += sum.totals.drafted_ahead;
        counts[sum.ids.get(1).map_or(VOCAB, |&b| b as usize)] += 1;
    }
    assert!(ahead as u64 >= N, "the second token is drafted ahead");
    let q = second_token_marginal(&p.verifier, t, eos);
    let (stat, df) = chi2(&counts, &q, N);
    assert!(stat < chi2_critical(df), "χ² {stat:.1} with {df} df");
    // The test can tell: the draft model's own distribution is far off.
    let d = second_token_marginal(p.drafter.model(), t, eos);
    let (stat, df) = chi2(&counts, &d, N);
    assert!(stat > chi2_critical(df), "χ² against the draft {stat:.1}");
}
