//! Draft decode speed on the available adapter: `cargo run --release -p hlm-gpu --example gpu_bench
//! -- [model name or GGUF path] [tokens]` (default: SmolLM2-135M, 32 tokens). Greedy, one token per
//! submission, only the argmax read back; also times a step that reads back logits and attention.
//! `HLM_GPU_ACTIVATIONS=q8` selects 8-bit activations (default: f32).
//! On a software adapter (lavapipe) the figures show overhead and correctness, not GPU speed.

use hlm_engine::model::LoadOptions;
use hlm_gpu::{Activations, GpuContext, GpuModel, GpuOptions};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("smollm2-135m-instruct-q4_1");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let path = hlm_fetch::resolve(name, &mut |_| {}).expect("model");
    let opts = LoadOptions {
        requantize_q5: false,
        ..Default::default()
    };
    let (model, tok) = hlm_engine::load_model_and_tokenizer(&path, &opts).expect("model loads");
    let ctx = GpuContext::new_blocking().expect("a GPU adapter");
    let adapter = ctx.describe();
    let t0 = Instant::now();
    let activations = match std::env::var("HLM_GPU_ACTIVATIONS").as_deref() {
        Ok("q8") => Activations::Q8,
        _ => Activations::F32,
    };
    let opts = GpuOptions {
        max_context: 1024,
        activations,
    };
    let mut g = GpuModel::new(ctx, &model, opts).expect("upload");
    let upload = t0.elapsed();
    drop(model);
    let prompt = tok
        .encode("def fibonacci(n):", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let mut next = 0;
    for &t in &prompt {
        next = g.forward_greedy_blocking(t).unwrap();
    }
    let t0 = Instant::now();
    let mut out = vec![];
    for _ in 0..n {
        out.push(next);
        next = g.forward_greedy_blocking(next).unwrap();
    }
    let greedy = t0.elapsed();
    let t0 = Instant::now();
    let reps = 4;
    for _ in 0..reps {
        g.forward_blocking(next, 4).unwrap();
    }
    let full = t0.elapsed() / reps;
    println!("adapter: {adapter}");
    println!("model: {name}; activations {activations:?}; upload + kernel build {upload:.2?}");
    println!(
        "greedy decode: {n} tokens in {greedy:.2?} = {:.2} tok/s ({:.1} ms/token)",
        n as f64 / greedy.as_secs_f64(),
        greedy.as_secs_f64() * 1e3 / n as f64
    );
    println!("step reading back logits + attention row: {full:.2?}");
    println!("text: {:?}", tok.decode(&out, false).unwrap());
    let prof = g.profile_blocking(next).unwrap();
    let total: f64 = prof.iter().map(|p| p.1).sum();
    println!(
        "per kernel, one token with each kernel submitted alone (total {:.1} ms):",
        total * 1e3
    );
    for (name, secs, n) in prof {
        println!(
            "  {name:<12} {:>8.2} ms  {:>5.1} %  {n} launches",
            secs * 1e3,
            100.0 * secs / total
        );
    }
}
