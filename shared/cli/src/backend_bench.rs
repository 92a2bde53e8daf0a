//! `hlm bench --draft-backends cpu,gpu`: draft decode speed per backend through the drafter the
//! decoding loop uses (each step reads back the logits and the attention row the filter needs),
//! and on the GPU the share of one token's time per kernel.
//!
//! On a machine whose only adapter is a software one (lavapipe), the GPU figures show the
//! backend's overhead and correctness, not GPU speed.

use hlm_engine::decode::Drafter;
use hlm_gpu::{GpuBackend, GpuOptions, Preference};
use serde_json::{json, Value};
use std::time::Instant;

/// Attention layers the importance filter reads per step (the engine's default).
const ATTENTION_LAYERS: usize = 4;

/// One row per backend in `prefs`: `{backend, description, note, prefill_ms, tok_s,
/// uncertainty_ms_per_token, same_text_as_first, kernels}`.
pub async fn run(
    drafter: &mut Drafter,
    prompt: &[u32],
    tokens: usize,
    prefs: &[Preference],
) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    let mut reference: Option<Vec<u32>> = None;
    for &pref in prefs {
        let choice = hlm_gpu::choose(drafter, pref, GpuOptions::default()).await?;
        drafter.clear();
        let t = Instant::now();
        let (mut logits, _) = drafter.feed(prompt, 0).await?;
        let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut ids = Vec::with_capacity(tokens);
        let mut rng = hlm_core::seeded_rng(0);
        let signal = hlm_core::UncertaintyConfig::default();
        let mut filter_secs = 0.0;
        let t = Instant::now();
        for _ in 0..tokens {
            let x = hlm_core::argmax(&logits);
            ids.push(x);
            // The filter's uncertainty (K perturbed draws over the logits) runs on the CPU, on the
            // logits read back: timed apart, as the alternative is a GPU kernel reading back only u.
            let tf = Instant::now();
            std::hint::black_box(hlm_core::temperature_perturbation(
                &logits, x, &signal, &mut rng,
            ));
            filter_secs += tf.elapsed().as_secs_f64();
            logits = drafter.feed(&[x], ATTENTION_LAYERS).await?.0;
        }
        let secs = t.elapsed().as_secs_f64();
        let filter_ms = filter_secs * 1e3 / tokens as f64;
        let tok_s = tokens as f64 / secs;
        let same = reference.get_or_insert_with(|| ids.clone()) == &ids;
        eprintln!(
            "draft on {:<12} {tok_s:7.2} tok/s ({:.1} ms/token, of which uncertainty on the CPU \
             {filter_ms:.2} ms; prefill {prefill_ms:.0} ms){}  [{}]",
            choice.kind,
            secs * 1e3 / tokens as f64,
            if same {
                ""
            } else {
                "  greedy text differs from the first backend's"
            },
            choice.description
        );
        let kernels = if choice.kind == "cpu" {
            Value::Null
        } else {
            drafter.take_backend();
            kernel_shares(drafter, prompt).await?
        };
        rows.push(json!({
            "backend": choice.kind,
            "description": choice.description,
            "note": choice.note,
            "prefill_ms": prefill_ms,
            "tok_s": tok_s,
            "uncertainty_ms_per_token": filter_ms,
            "same_text_as_first": same,
            "kernels": kernels,
        }));
    }
    drafter.take_backend();
    Ok(Value::Array(rows))
}

/// Where the GPU's time goes: a step reading back only the argmax (greedy decoding with the token
/// chosen on the GPU, 8 bytes) against one reading back the logits and the attention row (what
/// the filter needs: uncertainty is computed on the CPU from the logits), `{greedy_ms, full_ms}`;
/// then each kernel of one token submitted alone and waited for, `{name: {ms, share, launches}}`,
/// printed slowest first (per-submission overhead included, so the sum exceeds a normal step).
async fn kernel_shares(drafter: &Drafter, prompt: &[u32]) -> anyhow::Result<Value> {
    const REPS: u32 = 4;
    let mut b = GpuBackend::new(drafter.model(), GpuOptions::default()).await?;
    let g = b.model_mut();
    for &t in prompt {
        g.advance(t)?;
    }
    let last = prompt.last().copied().unwrap_or(0);
    let base = g.len();
    let time = |g: &mut hlm_gpu::GpuModel, full: bool| -> anyhow::Result<f64> {
        let t = Instant::now();
        for _ in 0..REPS {
            g.truncate(base);
            if full {
                g.forward_blocking(last, ATTENTION_LAYERS)?;
            } else {
                g.forward_greedy_blocking(last)?;
            }
        }
        Ok(t.elapsed().as_secs_f64() * 1e3 / REPS as f64)
    };
    time(g, true)?; // warm-up
    let full_ms = time(g, true)?;
    let greedy_ms = time(g, false)?;
    g.truncate(base);
    eprintln!("  step reading back the argmax {greedy_ms:.1} ms, the logits + attention row {full_ms:.1} ms");
    let prof = g.profile_blocking(last)?;
    let total: f64 = prof.iter().map(|p| p.1).sum();
    let mut out = serde_json::Map::new();
    for (name, secs, n) in prof {
        let share = secs / total;
        eprintln!(
            "  {name:<12} {:>8.2} ms  {:>5.1} %  {n} launches",
            secs * 1e3,
            100.0 * share
        );
        out.insert(
            name,
            json!({"ms": secs * 1e3, "share": share, "launches": n}),
        );
    }
    Ok(json!({"greedy_ms": greedy_ms, "full_ms": full_ms, "per_kernel": out}))
}
