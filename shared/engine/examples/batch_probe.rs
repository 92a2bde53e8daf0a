//! Probe: a verifier's rounds from many sessions, each alone and then stacked in one
//! [`Model::forward_batch`](hlm_engine::model::Model::forward_batch): what batching saves per round.
//!
//! `cargo run --release -p hlm-engine --example batch_probe -- FILE.gguf [SESSIONS [K [HISTORY [REPS]]]]`
//! (defaults 32 sessions, rounds of 5 new tokens, 256 positions of history each, 5 repetitions;
//! the best repetition is reported). `BATCH_ONLY=1` skips the rounds alone (to profile the
//! batched pass: `perf record -D MS`, past the histories' prefill).
use hlm_engine::model::{BatchItem, LoadOptions, LogitRows};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: batch_probe FILE.gguf [SESSIONS [K [HISTORY [REPS]]]]")
    })?;
    let mut num =
        |d: usize| -> anyhow::Result<usize> { Ok(args.next().map_or(Ok(d), |a| a.parse())?) };
    let (sessions, k, history, reps) = (num(32)?, num(5)?, num(256)?, num(5)?);
    let (model, _) = hlm_engine::load_model_and_tokenizer(path.as_ref(), &LoadOptions::default())?;
    let mut caches: Vec<_> = (0..sessions)
        .map(|s| {
            let mut c = model.new_cache();
            let h: Vec<u32> = (0..history as u32)
                .map(|i| 100 + (i * 7 + s as u32) % 5000)
                .collect();
            model.forward(&mut c, &h, &LogitRows::None, 0).map(|_| c)
        })
        .collect::<Result<_, _>>()?;
    let ids: Vec<u32> = (300..300 + k as u32).collect();
    let (mut alone, mut batched) = (vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        let only_batched = std::env::var_os("BATCH_ONLY").is_some();
        for c in caches.iter_mut().filter(|_| !only_batched) {
            model.forward(c, &ids, &LogitRows::All, 0)?;
            c.truncate(history);
        }
        alone.push(t.elapsed().as_secs_f64() / sessions as f64);
        let t = Instant::now();
        let mut items: Vec<BatchItem> = caches
            .iter_mut()
            .map(|cache| BatchItem {
                cache,
                tokens: &ids,
                rows: LogitRows::All,
            })
            .collect();
        model.forward_batch(&mut items, 0)?;
        batched.push(t.elapsed().as_secs_f64() / sessions as f64);
        caches.iter_mut().for_each(|c| c.truncate(history));
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min) * 1e3;
    let (a, b) = (best(&alone), best(&batched));
    println!(
        "{sessions} rounds of {k} after {history}: alone {a:.1} ms per round, batched {b:.1} ms per round ({:.2} x)",
        a / b
    );
    Ok(())
}
