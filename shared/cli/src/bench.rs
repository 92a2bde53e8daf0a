//! `hlm bench`: speed of the draft and verifier models, the cost of one verifier forward over k
//! pending tokens, and end-to-end hybrid decoding over a real loopback WebSocket against
//! verifier-alone decoding. Figures are wall-clock on this machine: compare ratios within a run.

use crate::{load_drafter, DecodeOptions};
use anyhow::Context;
use clap::Args;
use hlm_core::FilterMode;
use hlm_engine::decode::{Drafter, HybridSession};
use hlm_engine::model::{LogitRows, Model};
use hlm_engine::ws_link::WsLink;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "qwen2.5-coder-0.5b-instruct-q4_k_m")]
    draft: String,
    #[arg(long, default_value = "qwen2.5-coder-1.5b-instruct-q4_k_m")]
    verifier: String,
    /// Tokens per decode measurement.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Skip the end-to-end part.
    #[arg(long)]
    no_e2e: bool,
    /// Draft backends to compare (cpu, gpu, auto), comma-separated: draft tok/s through the
    /// drafter and, on a GPU, each kernel's share of a token.
    #[arg(long, value_delimiter = ',')]
    draft_backends: Vec<hlm_gpu::Preference>,
    /// Only the draft backends comparison (needs --draft-backends).
    #[arg(long)]
    backends_only: bool,
    /// Also measure the machine's memory read bandwidth (all cores reading 1 GiB), the ceiling of
    /// a decode step's bytes per second.
    #[arg(long)]
    bandwidth: bool,
    #[command(flatten)]
    decode: DecodeOptions,
}

const PROMPT: &str = "Write a Python function `fib(n)` that returns the n-th Fibonacci number iteratively, with a docstring and two doctests.";

/// Greedy single-token decoding speed (tokens/s) after a prefill of `prompt`.
fn decode_speed(model: &Model, prompt: &[u32], n: usize) -> anyhow::Result<f64> {
    let mut cache = model.new_cache();
    let out = model.forward(&mut cache, prompt, &LogitRows::Last, 0)?;
    let mut next = hlm_core::argmax(out.last_logits().unwrap_or_default());
    let t = Instant::now();
    for _ in 0..n {
        let out = model.forward(&mut cache, &[next], &LogitRows::Last, 0)?;
        next = hlm_core::argmax(out.last_logits().unwrap_or_default());
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Bytes per second all cores read from a 1 GiB buffer (best of 5), in GB/s.
fn read_bandwidth_gbs() -> f64 {
    let words = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = words.div_ceil(threads);
    let mut best = f64::INFINITY;
    let mut check = 0u64;
    for _ in 0..5 {
        let t = Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let parts: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &v| a.wrapping_add(v))))
                .collect();
            parts
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        best = best.min(t.elapsed().as_secs_f64());
        check = check.wrapping_add(std::hint::black_box(sum));
    }
    std::hint::black_box(check);
    (words * 8) as f64 / best / 1e9
}

/// Median time of one forward over `k` new tokens on a cache holding `prompt`, logits for the
/// last row only (what a verification round costs), in milliseconds.
fn forward_cost(model: &Model, prompt: &[u32], k: usize, reps: usize) -> anyhow::Result<f64> {
    let mut cache = model.new_cache();
    model.forward(&mut cache, prompt, &LogitRows::None, 0)?;
    let base = cache.len();
    let new: Vec<u32> = prompt.iter().cycle().take(k).copied().collect();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        cache.truncate(base);
        let t = Instant::now();
        model.forward(&mut cache, &new, &LogitRows::Last, 0)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut drafter = load_drafter(&args.draft)?;
    let prompt = drafter.encode(&hlm_engine::chat::chatml(PROMPT, None))?;
    let mut report = serde_json::Map::new();
    report.insert("prompt_tokens".into(), json!(prompt.len()));
    if !args.draft_backends.is_empty() {
        let rows =
            crate::backend_bench::run(&mut drafter, &prompt, args.tokens, &args.draft_backends)
                .await?;
        report.insert("draft_backends".into(), rows);
        if args.backends_only {
            println!("{}", serde_json::Value::Object(report));
            return Ok(());
        }
    }
    let verifier_drafter = load_drafter(&args.verifier)?;

    let kernels = match hlm_engine::model::kernel_backend() {
        hlm_kernels::Backend::Portable => "candle".to_string(),
        b => format!("hlm-kernels {}", b.name()),
    };
    eprintln!("quantised products: {kernels}");
    report.insert("kernels".into(), json!(kernels));
    if args.bandwidth {
        let gbs = read_bandwidth_gbs();
        eprintln!("memory read bandwidth {gbs:5.1} GB/s");
        report.insert("read_bandwidth_gbs".into(), json!(gbs));
    }
    let d = decode_speed(drafter.model(), &prompt, args.tokens)?;
    let v = decode_speed(verifier_drafter.model(), &prompt, args.tokens)?;
    for (label, key, tok_s, model) in [
        ("draft", "draft", d, drafter.model()),
        ("verifier", "verifier", v, verifier_drafter.model()),
    ] {
        let gbs = tok_s * model.bytes_per_token() as f64 / 1e9;
        eprintln!(
            "{label:8} decode {tok_s:6.1} tok/s, weights read at {gbs:4.1} GB/s ({})",
            model.name()
        );
        report.insert(format!("{key}_tok_s"), json!(tok_s));
        report.insert(format!("{key}_weights_gbs"), json!(gbs));
    }

    let mut costs = serde_json::Map::new();
    let one = forward_cost(verifier_drafter.model(), &prompt, 1, 7)?;
    for k in [1usize, 2, 4, 8, 16] {
        let ms = if k == 1 {
            one
        } else {
            forward_cost(verifier_drafter.model(), &prompt, k, 7)?
        };
        eprintln!(
            "verifier forward k={k:2}: {ms:7.1} ms  ({:.2}x k=1)",
            ms / one
        );
        costs.insert(k.to_string(), json!({"ms": ms, "ratio": ms / one}));
    }
    report.insert("verifier_forward".into(), serde_json::Value::Object(costs));

    if !args.no_e2e {
        let verifier = Arc::new(verifier_drafter);
        let e2e = end_to_end(&mut drafter, verifier, &prompt, &args).await?;
        report.insert("end_to_end".into(), e2e);
    }
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}

/// Starts a verifier server on a loopback port in this process and decodes through it with each
/// filter mode; also decodes with the verifier alone for comparison.
async fn end_to_end(
    drafter: &mut Drafter,
    verifier: Arc<Drafter>,
    prompt: &[u32],
    args: &BenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let vmodel = verifier.model();
    let t = Instant::now();
    let alone = vmodel
        .generate_greedy(prompt, args.decode.max_tokens)?
        .len();
    let alone_s = t.elapsed().as_secs_f64();
    eprintln!(
        "verifier alone: {alone} tokens in {alone_s:.2}s = {:.1} tok/s (incl. prefill)",
        alone as f64 / alone_s
    );
    let server = spawn_server(verifier.clone()).await?;
    let mut rows = vec![
        json!({"method": "verifier-alone", "tokens": alone, "wall_time_s": alone_s, "tokens_per_s": alone as f64 / alone_s}),
    ];
    // Mode `learned` when a filter head is given (`--filter-head`) or ships for the pair.
    let with_head = args.decode.config()?.head.is_some()
        || hlm_engine::heads::shipped_head(drafter.model().name(), vmodel.name()).is_some();
    for mode in FilterMode::ALL
        .into_iter()
        .filter(|&m| with_head || m != FilterMode::Learned)
    {
        let link = WsLink::connect(&server).await?;
        let mut session = HybridSession::connect(link, drafter.vocab_info(), "hlm-bench").await?;
        let mut cfg = args.decode.config()?;
        cfg.mode = mode;
        let s = session
            .generate(drafter, prompt, &cfg, &mut |_| true)
            .await
            .with_context(|| format!("hybrid decoding, mode {mode}"))?;
        let _ = session.close().await;
        let mode = match mode {
            FilterMode::Auto => format!("auto ({})", s.mode),
            m => m.to_string(),
        };
        eprintln!(
            "{:24} {:4} tokens {:6.1} tok/s  upload rate {:.2}  LLM passes {:3}  up {:6} B  down {:5} B",
            mode,
            s.totals.tokens,
            s.tokens_per_s,
            s.upload_rate,
            s.totals.llm_forward_passes,
            s.totals.bytes_up,
            s.totals.bytes_down
        );
        rows.push(serde_json::to_value(&s)?);
    }
    Ok(serde_json::Value::Array(rows))
}

async fn spawn_server(verifier: Arc<Drafter>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let vocab = verifier.vocab_info();
    let state = verifier_server::AppState::new(verifier.model_arc(), vocab, 4096);
    tokio::spawn(async move {
        let _ = axum::serve(listener, verifier_server::router(state, None)).await;
    });
    Ok(format!("ws://{addr}/ws"))
}
