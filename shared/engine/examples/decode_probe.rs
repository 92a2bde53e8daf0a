//! Probe: a model's decode step (one token's forward pass, greedy) timed on its own, and the
//! uncertainty of each drafted token (U-HLM's 20 perturbed draws, the loop's main work per token),
//! natively or in WebAssembly: where the browser's draft time goes, without a browser.
//!
//! Natively: `cargo run --release -p hlm-engine --example decode_probe -- FILE.gguf [TOKENS]`;
//! with a third argument `K`, forwards over `K` new tokens each (all rows' logits, the cache
//! truncated back after each) in place of decode steps.
//! In WebAssembly under Node's WASI (the same SIMD128 kernels as the page, one thread):
//! `cargo build --release --target wasm32-wasip1 -p hlm-engine --example decode_probe`, then
//! `node scripts/wasi-run.mjs target/wasm32-wasip1/release/examples/decode_probe.wasm FILE.gguf`;
//! add `node --cpu-prof` for a profile by function (`.cpuprofile`, opens in Chromium's DevTools).
//! Node 20 can crash in a garbage collection while WebAssembly memory grows to several hundred
//! MB; building with the memory there from the start avoids it: `RUSTFLAGS="-C
//! target-feature=+simd128 -C link-arg=--initial-memory=1073741824" ... --target-dir
//! target/wasm-probe`.
use hlm_core::sampling::argmax;
use hlm_core::uncertainty::{uncertainty, UncertaintyConfig};
use hlm_engine::model::{LoadOptions, LogitRows};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: decode_probe FILE.gguf [TOKENS [K]]"))?;
    let tokens: usize = args.next().map_or(Ok(32), |t| t.parse())?;
    let t = Instant::now();
    let (model, _) = hlm_engine::load_model_and_tokenizer(path.as_ref(), &LoadOptions::default())?;
    println!("loaded in {:.1} s", t.elapsed().as_secs_f64());
    let mut cache = model.new_cache();
    let prompt: Vec<u32> = (100..116).collect();
    let out = model.forward(&mut cache, &prompt, &LogitRows::Last, 0)?;
    let mut next = argmax(&out.logits[0].1);
    let (mut steps, mut uncertain) = (vec![], vec![]);
    let mut rng = hlm_core::sampling::seeded_rng(1);
    // A third argument K: forwards over K new tokens (a verification round's shape) instead.
    let k: usize = args.next().map_or(Ok(0), |k| k.parse())?;
    if k > 0 {
        let base = cache.len();
        let ids: Vec<u32> = (200..200 + k as u32).collect();
        let mut steps = vec![];
        for _ in 0..tokens {
            let t = Instant::now();
            model.forward(&mut cache, &ids, &LogitRows::All, 0)?;
            steps.push(t.elapsed().as_secs_f64());
            cache.truncate(base);
        }
        report(&format!("{tokens} forwards over {k}"), steps);
        return Ok(());
    }
    for _ in 0..tokens {
        let t = Instant::now();
        let out = model.forward(&mut cache, &[next], &LogitRows::Last, 0)?;
        steps.push(t.elapsed().as_secs_f64());
        let logits = &out.logits[0].1;
        next = argmax(logits);
        let t = Instant::now();
        std::hint::black_box(uncertainty(
            logits,
            next,
            &UncertaintyConfig::default(),
            &mut rng,
        ));
        uncertain.push(t.elapsed().as_secs_f64());
    }
    report(&format!("{tokens} decode steps"), steps);
    report("their uncertainty", uncertain);
    Ok(())
}

fn report(what: &str, mut s: Vec<f64>) {
    s.sort_by(f64::total_cmp);
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    println!(
        "{what}: mean {:.1} ms, median {:.1} ms, best {:.1} ms per token",
        mean * 1e3,
        s[s.len() / 2] * 1e3,
        s[0] * 1e3
    );
}
