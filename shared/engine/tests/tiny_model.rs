//! The model and the decoding loop on tiny random models (fast; real weights in real_models.rs).

use hlm_core::head::{FilterHead, HeadInput, HEAD_VERSION};
use hlm_core::{FilterKnobs, FilterMode, UncertaintyEstimate};
use hlm_engine::decode::{
    GenerationConfig, GenerationOptions, HybridSession, StopConditions, StopReason, TokenKind,
};
use hlm_engine::link::LocalLink;
use hlm_engine::model::LogitRows;
use hlm_engine::testing::*;
use hlm_engine::verifier::VerifierSession;
use hlm_protocol::Sampling;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batched_forward_matches_token_by_token() {
    let (_d, m) = tiny_model(1);
    let toks: Vec<u32> = vec![5, 17, 3, 88, 42, 9, 60, 2];
    let mut c1 = m.new_cache();
    let all = m.forward(&mut c1, &toks, &LogitRows::All, 0).unwrap();
    let mut c2 = m.new_cache();
    for (i, &t) in toks.iter().enumerate() {
        let one = m.forward(&mut c2, &[t], &LogitRows::Last, 0).unwrap();
        let d = max_abs_diff(&all.logits[i].1, one.last_logits().unwrap());
        assert!(d < 1e-3, "row {i} differs by {d}");
    }
    assert_eq!(c1.len(), 8);
    assert_eq!(c2.len(), 8);
}

#[test]
fn truncated_cache_recomputes_the_same_logits() {
    let (_d, m) = tiny_model(2);
    let toks: Vec<u32> = (10..22).collect();
    let mut c = m.new_cache();
    let full = m.forward(&mut c, &toks, &LogitRows::All, 0).unwrap();
    c.truncate(5);
    assert_eq!(c.len(), 5);
    let again = m.forward(&mut c, &toks[5..], &LogitRows::All, 0).unwrap();
    for (j, (_, l)) in again.logits.iter().enumerate() {
        assert!(max_abs_diff(l, &full.logits[5 + j].1) < 1e-3);
    }
    // A different continuation after the rollback gives different logits.
    c.truncate(5);
    let other = m.forward(&mut c, &[70, 71], &LogitRows::Last, 0).unwrap();
    assert!(max_abs_diff(other.last_logits().unwrap(), &full.logits[6].1) > 1e-3);
}

#[test]
fn attention_row_is_a_distribution_over_the_prefix() {
    let (_d, m) = tiny_model(3);
    let mut c = m.new_cache();
    let out = m
        .forward(&mut c, &[1, 2, 3, 4, 5], &LogitRows::Last, 2)
        .unwrap();
    let row = out.attention.unwrap();
    assert_eq!(row.len(), 5);
    let s: f32 = row.iter().sum();
    assert!((s - 1.0).abs() < 1e-4, "sum {s}");
    assert!(row.iter().all(|&w| w >= 0.0));
    let out = m.forward(&mut c, &[6], &LogitRows::Last, 1).unwrap();
    assert_eq!(out.attention.unwrap().len(), 6);
}

#[test]
fn bad_tokens_and_overflow_are_errors_not_panics() {
    let (_d, m) = tiny_model(4);
    let mut c = m.new_cache();
    assert!(m
        .forward(&mut c, &[VOCAB as u32], &LogitRows::Last, 0)
        .is_err());
    assert!(m.forward(&mut c, &[], &LogitRows::Last, 0).is_err());
    let long: Vec<u32> = vec![3; 600];
    assert!(m.forward(&mut c, &long, &LogitRows::Last, 0).is_err());
    assert_eq!(c.len(), 0);
}

/// A generation's summary and events, and the verifier's and the draft's greedy text alone.
type Run = (
    hlm_engine::decode::Summary,
    Vec<hlm_engine::decode::TokenEvent>,
    Vec<u32>,
    Vec<u32>,
);

fn run(mode: FilterMode, sampling: Sampling, uploads_per_round: usize) -> Run {
    run_with_stop(mode, sampling, uploads_per_round, StopConditions::default())
}

fn run_with_stop(
    mode: FilterMode,
    sampling: Sampling,
    uploads_per_round: usize,
    stop: StopConditions,
) -> Run {
    run_config(GenerationConfig {
        max_tokens: 40,
        mode,
        sampling,
        uploads_per_round,
        stop,
        ..Default::default()
    })
}

fn run_config(cfg: GenerationConfig) -> Run {
    let (_dd, mut drafter) = tiny_drafter(11);
    let (_vd, verifier) = tiny_drafter(12);
    let vocab = verifier.vocab_info();
    let session = VerifierSession::new(verifier.model_arc(), vocab.clone(), "test", 512);
    let link = LocalLink::new(session);
    let prompt: Vec<u32> = vec![5, 6, 7, 8];
    let mut events = Vec::new();
    let summary = block_on(async {
        let mut s = HybridSession::connect(link, drafter.vocab_info(), "t")
            .await
            .unwrap();
        s.generate(&mut drafter, &prompt, &cfg, &mut |e| {
            events.push(e.clone());
            true
        })
        .await
        .unwrap()
    });
    let v_alone = verifier.model().generate_greedy(&prompt, 40).unwrap();
    let d_alone = drafter.model().generate_greedy(&prompt, 40).unwrap();
    (summary, events, v_alone, d_alone)
}

fn check_totals(s: &hlm_engine::decode::Summary, events: &[hlm_engine::decode::TokenEvent]) {
    let t = &s.totals;
    assert_eq!(events.len(), t.tokens);
    assert_eq!(s.ids.len(), t.tokens);
    assert_eq!(t.tokens, t.skipped + t.accepted + t.resampled);
    assert_eq!(t.uploaded, t.accepted + t.resampled);
    let ids: Vec<u32> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, s.ids);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.index, i);
    }
}

/// A stop string ends every mode exactly where its final text first contains it: the text is cut
/// before it, the ids end with the token that completed it, the streamed pieces add up to the
/// text, and the counts stay consistent (drafts past the stop are discarded, not reported).
#[test]
fn stop_strings_end_every_mode_where_the_text_first_contains_them() {
    let (_d, tok) = tiny_drafter(11);
    let decode = |ids: &[u32]| tok.tokenizer().decode(ids, true).unwrap();
    // Sampled (seeded, so both runs draw alike up to the stop): greedy text from these tiny
    // random models repeats one token.
    let sampling = Sampling::Temperature {
        temperature: 1.5,
        seed: 3,
    };
    for (mode, per_round) in [
        (FilterMode::Always, 1),
        (FilterMode::Always, 4),
        (FilterMode::Never, 1),
        (FilterMode::Uncertainty, 3),
        (FilterMode::UncertaintyImportance, 1),
    ] {
        let (full, ..) = run(mode, sampling, per_round);
        assert!(full.ids.len() > 14, "{mode:?}: {} tokens", full.ids.len());
        let stop = decode(&full.ids[10..12]);
        let at = full.text.find(&stop).unwrap();
        let n = (1..=full.ids.len())
            .find(|&n| decode(&full.ids[..n]).contains(&stop))
            .unwrap();
        assert!(
            n > 6,
            "{mode:?}: the stop string should come mid-text ({stop:?} at {n})"
        );
        let (s, ev, _, _) = run_with_stop(
            mode,
            sampling,
            per_round,
            StopConditions {
                strings: vec!["never appears".into(), stop.clone()],
                code_block_end: false,
            },
        );
        check_totals(&s, &ev);
        assert_eq!(s.stop_reason, StopReason::StopString, "{mode:?}");
        assert_eq!(s.text, full.text[..at], "{mode:?}");
        assert_eq!(s.ids, full.ids[..n], "{mode:?}");
        let streamed: String = ev.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(streamed, s.text, "{mode:?}");
        assert!(s.totals.draft_forward_passes > 0 && s.totals.uncertainty_draws >= n);
    }
    // Without a match the stop strings change nothing, and held-back text is streamed at the end.
    let (full, ..) = run(FilterMode::Always, Sampling::Greedy, 1);
    let (s, ev, _, _) = run_with_stop(
        FilterMode::Always,
        Sampling::Greedy,
        1,
        StopConditions {
            strings: vec![format!("{}X", full.text)],
            code_block_end: true,
        },
    );
    assert_eq!(
        (s.text.as_str(), s.stop_reason),
        (full.text.as_str(), full.stop_reason)
    );
    assert_eq!(
        ev.iter().map(|e| e.text.as_str()).collect::<String>(),
        s.text
    );
}

#[test]
fn mode_always_greedy_reproduces_the_verifier_alone() {
    let (s, ev, v_alone, _) = run(FilterMode::Always, Sampling::Greedy, 1);
    check_totals(&s, &ev);
    assert_eq!(s.ids, v_alone);
    assert_eq!(s.totals.skipped, 0);
    assert!(
        s.totals.resampled > 0,
        "the two random models should disagree sometimes"
    );
    assert!(ev.iter().any(|e| e.kind == TokenKind::UploadedResampled));
}

#[test]
fn mode_always_with_several_uploads_per_round_is_still_lossless() {
    let (s, ev, v_alone, _) = run(FilterMode::Always, Sampling::Greedy, 4);
    check_totals(&s, &ev);
    assert_eq!(s.ids, v_alone);
    assert!(s.totals.rounds < s.totals.tokens);
}

#[test]
fn mode_never_is_the_draft_alone_and_sends_nothing() {
    let (s, ev, _, d_alone) = run(FilterMode::Never, Sampling::Greedy, 1);
    check_totals(&s, &ev);
    assert_eq!(s.ids, d_alone);
    assert_eq!(s.totals.bytes_up, 0);
    assert_eq!(s.totals.llm_forward_passes, 0);
    assert_eq!(s.totals.uploaded, 0);
}

#[test]
fn filtered_modes_upload_a_subset_and_stay_consistent() {
    for mode in [FilterMode::Uncertainty, FilterMode::UncertaintyImportance] {
        let (s, ev, _, _) = run(mode, Sampling::Greedy, 1);
        check_totals(&s, &ev);
        assert!(s.totals.tokens > 0);
        assert!(ev.iter().all(|e| (0.0..=1.0).contains(&e.uncertainty)));
    }
}

#[test]
fn expected_uncertainty_is_chosen_by_an_option_and_takes_no_random_draws() {
    let opts: GenerationOptions =
        serde_json::from_str(r#"{"mode": "uncertainty", "uncertainty": "expected"}"#).unwrap();
    assert!(serde_json::from_str::<GenerationOptions>(r#"{"uncertainty": "exact"}"#).is_err());
    let cfg = GenerationConfig {
        max_tokens: 40,
        ..opts.config()
    };
    assert_eq!(cfg.uncertainty.estimate, UncertaintyEstimate::Expected);
    let runs: Vec<Run> = [1u64, 2]
        .into_iter()
        .map(|seed| {
            run_config(GenerationConfig {
                seed,
                ..cfg.clone()
            })
        })
        .collect();
    for (s, ev, _, _) in &runs {
        check_totals(s, ev);
        assert_eq!(s.uncertainty, UncertaintyEstimate::Expected);
    }
    // Deterministic: another seed gives the same uncertainties and decisions under greedy.
    let u = |r: &Run| r.1.iter().map(|e| e.uncertainty).collect::<Vec<f32>>();
    assert_eq!(u(&runs[0]), u(&runs[1]));
    assert_eq!(runs[0].0.ids, runs[1].0.ids);
}

/// A head over one input, `σ(w · (value − at))`: above one half exactly when `value > at`.
fn step_head(input: HeadInput, at: f64) -> FilterHead {
    FilterHead {
        version: HEAD_VERSION,
        fitted_on: "test".into(),
        inputs: vec![input],
        mean: vec![at],
        scale: vec![1.0],
        weights: vec![50.0],
        bias: 0.0,
        suggested_threshold: None,
    }
}

#[test]
fn a_learned_head_decides_what_it_reads_and_u_hlm_is_its_special_case() {
    let learned = |head: FilterHead| GenerationConfig {
        max_tokens: 40,
        mode: FilterMode::Learned,
        knobs: FilterKnobs {
            uncertainty_threshold: 0.5,
            ..Default::default()
        },
        head: Some(head),
        ..Default::default()
    };
    // A head on the position uploads exactly the tokens after the 10th.
    let (s, ev, _, _) = run_config(learned(step_head(HeadInput::Position, 10.5)));
    check_totals(&s, &ev);
    assert!(s.totals.tokens > 12, "{}", s.totals.tokens);
    for e in &ev {
        let uploaded = e.kind != TokenKind::Skipped;
        let eos = e.index + 1 == ev.len() && s.stop_reason == StopReason::EndOfSequence;
        assert_eq!(
            uploaded,
            e.index > 10 || eos,
            "token {}: {:?}",
            e.index,
            e.kind
        );
    }
    // A head on u with its step at u_th decides as U-HLM does.
    let (h, hev, _, _) = run_config(learned(step_head(HeadInput::U, 0.07)));
    let (u, uev, _, _) = run_config(GenerationConfig {
        max_tokens: 40,
        mode: FilterMode::Uncertainty,
        ..Default::default()
    });
    let kinds =
        |ev: &[hlm_engine::decode::TokenEvent]| ev.iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!((h.ids, kinds(&hev)), (u.ids, kinds(&uev)));
}

#[test]
fn a_learned_mode_without_a_usable_head_is_refused() {
    let (_dd, mut drafter) = tiny_drafter(11);
    let (_vd, verifier) = tiny_drafter(12);
    let session = VerifierSession::new(verifier.model_arc(), verifier.vocab_info(), "test", 512);
    let mut s = block_on(HybridSession::connect(
        LocalLink::new(session),
        drafter.vocab_info(),
        "t",
    ))
    .unwrap();
    let mut short = step_head(HeadInput::U, 0.07);
    short.weights.clear();
    for (head, says) in [
        (None, "needs a filter head"),
        (Some(short), "1 inputs but 1 means, 1 scales and 0 weights"),
        (
            Some(step_head(HeadInput::SelfWeight, 0.1)),
            "attention signal",
        ),
    ] {
        let cfg = GenerationConfig {
            mode: FilterMode::Learned,
            head,
            ..Default::default()
        };
        let e = block_on(s.generate(&mut drafter, &[5, 6], &cfg, &mut |_| true)).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn sampling_mode_runs_and_counts_distribution_bytes() {
    let (s, ev, _, _) = run(
        FilterMode::Always,
        Sampling::Temperature {
            temperature: 0.8,
            seed: 7,
        },
        1,
    );
    check_totals(&s, &ev);
    assert!(s.totals.dist_bits > 0);
    assert!(matches!(
        s.stop_reason,
        StopReason::MaxTokens | StopReason::EndOfSequence
    ));
}

#[test]
fn llama_safetensors_load_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), 5, "llama");
    let m = hlm_engine::model::Model::from_safetensors(dir.path(), &Default::default()).unwrap();
    assert_eq!(m.config().arch, hlm_engine::model::Architecture::Llama);
    let toks = [3u32, 9, 27, 81];
    let mut c = m.new_cache();
    let all = m.forward(&mut c, &toks, &LogitRows::All, 0).unwrap();
    let mut c2 = m.new_cache();
    for (i, &t) in toks.iter().enumerate() {
        let one = m.forward(&mut c2, &[t], &LogitRows::Last, 0).unwrap();
        assert!(max_abs_diff(&all.logits[i].1, one.last_logits().unwrap()) < 1e-3);
    }
    let out = m.generate_greedy(&toks, 5).unwrap();
    assert!(!out.is_empty() && out.len() <= 5);
    assert!(out.iter().all(|&t| (t as usize) < VOCAB));
}

/// The tiny model written as GGUF in several block formats loads and computes what the dense
/// safetensors model computes, within each format's precision.
#[test]
fn gguf_formats_match_the_dense_model() {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), 21, "qwen2");
    let dense =
        hlm_engine::model::Model::from_safetensors(dir.path(), &Default::default()).unwrap();
    let tensors = candle_core::safetensors::load(
        dir.path().join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let gguf_name = |hf: &str| -> String {
        hf.replace("model.embed_tokens.weight", "token_embd.weight")
            .replace("model.norm.weight", "output_norm.weight")
            .replace("model.layers.", "blk.")
            .replace("self_attn.q_proj", "attn_q")
            .replace("self_attn.k_proj", "attn_k")
            .replace("self_attn.v_proj", "attn_v")
            .replace("self_attn.o_proj", "attn_output")
            .replace("mlp.gate_proj", "ffn_gate")
            .replace("mlp.up_proj", "ffn_up")
            .replace("mlp.down_proj", "ffn_down")
            .replace("post_attention_layernorm", "ffn_norm")
            .replace("input_layernorm", "attn_norm")
    };
    use gguf_file::Value as V;
    let tokens = V::Array((0..VOCAB).map(|i| V::String(format!("t{i}"))).collect());
    let md: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("qwen2".into())),
        ("qwen2.embedding_length", V::U32(64)),
        ("qwen2.block_count", V::U32(2)),
        ("qwen2.attention.head_count", V::U32(4)),
        ("qwen2.attention.head_count_kv", V::U32(2)),
        ("qwen2.feed_forward_length", V::U32(128)),
        ("qwen2.attention.layer_norm_rms_epsilon", V::F32(1e-6)),
        ("qwen2.rope.freq_base", V::F32(10000.0)),
        ("qwen2.context_length", V::U32(512)),
        ("tokenizer.ggml.tokens", tokens),
        ("tokenizer.ggml.eos_token_id", V::U32(0)),
    ];
    let ids = [4u32, 8, 15, 16, 23, 42];
    let mut c = dense.new_cache();
    let want = dense.forward(&mut c, &ids, &LogitRows::All, 0).unwrap();
    for (dtype, tol) in [
        (GgmlDType::F32, 1e-4f32),
        (GgmlDType::F16, 3e-3),
        (GgmlDType::Q8_0, 0.05),
        (GgmlDType::Q4_1, 0.75),
    ] {
        let qs: Vec<(String, QTensor)> = tensors
            .iter()
            .map(|(n, t)| {
                let dt = if t.rank() == 2 { dtype } else { GgmlDType::F32 };
                (gguf_name(n), QTensor::quantize(t, dt).unwrap())
            })
            .collect();
        let path = dir.path().join(format!("tiny-{dtype:?}.gguf"));
        let mut f = std::fs::File::create(&path).unwrap();
        let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
        drop(f);
        let mut r = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut r).unwrap();
        let m = hlm_engine::model::Model::from_gguf(&content, &mut r, "tiny", &Default::default())
            .unwrap();
        let mut c = m.new_cache();
        let got = m.forward(&mut c, &ids, &LogitRows::All, 0).unwrap();
        let worst = got
            .logits
            .iter()
            .zip(&want.logits)
            .map(|(a, b)| max_abs_diff(&a.1, &b.1))
            .fold(0.0, f32::max);
        let scale = want
            .logits
            .iter()
            .flat_map(|l| l.1.iter())
            .fold(0f32, |a, &b| a.max(b.abs()));
        // Tolerance relative to the largest logit; random weights magnify 4-bit rounding a lot
        // (Q4_1 on real weights is covered by SmolLM2 in real_models.rs).
        assert!(
            worst < tol * scale,
            "{dtype:?}: logits differ by {worst} (scale {scale})"
        );
        // Single-row decoding (the other kernel path) agrees with the batched pass.
        let mut c1 = m.new_cache();
        m.forward(&mut c1, &ids[..5], &LogitRows::None, 0).unwrap();
        let one = m.forward(&mut c1, &ids[5..], &LogitRows::Last, 0).unwrap();
        let d = max_abs_diff(one.last_logits().unwrap(), &got.logits[5].1);
        assert!(d < 1e-2 * scale, "{dtype:?}: single row differs by {d}");
    }
}

/// A configuration that contradicts the weights, or cannot run, is an error, never a panic.
#[test]
fn inconsistent_models_are_refused() {
    for (key, value, expect) in [
        ("num_attention_heads", 0, "invalid model configuration"),
        ("num_key_value_heads", 3, "invalid model configuration"),
        ("num_key_value_heads", 4, "layer 0 k has shape"),
        ("intermediate_size", 100, "layer 0 gate has shape"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path(), 9, "qwen2");
        let cfg_path = dir.path().join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        cfg[key] = serde_json::json!(value);
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let err = hlm_engine::model::Model::from_safetensors(dir.path(), &Default::default())
            .err()
            .unwrap_or_else(|| panic!("{key} = {value} was accepted"))
            .to_string();
        assert!(err.contains(expect), "{key} = {value}: {err}");
    }
}

#[test]
fn a_verifier_session_never_reserves_more_cache_than_its_context_allows() {
    let (_dd, mut drafter) = tiny_drafter(11);
    let (_vd, verifier) = tiny_drafter(12);
    let limit = 100;
    let session = VerifierSession::new(verifier.model_arc(), verifier.vocab_info(), "t", limit);
    let cfg = GenerationConfig {
        max_tokens: 90,
        mode: FilterMode::Always,
        ..Default::default()
    };
    let per_position = hlm_engine::model::KvCache::bytes_per_position(verifier.model().config());
    block_on(async {
        let mut s = HybridSession::connect(LocalLink::new(session), drafter.vocab_info(), "t")
            .await
            .unwrap();
        let summary = s
            .generate(&mut drafter, &[5, 6, 7, 8], &cfg, &mut |_| true)
            .await
            .unwrap();
        let held = s.link_mut().session.cache_bytes();
        let reserved = s.link_mut().session.cache_reserved_bytes();
        let positions = 4 + summary.ids.len();
        assert!(positions > 64, "the cache grew past a power of two");
        assert!(held >= (positions - 1) * per_position);
        assert!(
            reserved <= limit as usize * per_position,
            "{reserved} bytes reserved, bound {}",
            limit as usize * per_position
        );
    });
}
