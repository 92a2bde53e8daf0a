//! Cost of the per-token signals on a Qwen-sized vocabulary (151,936 logits):
//! `cargo run --release -p hlm-core --example signal_cost`.
use hlm_core::*;
use rand::Rng as _;
use std::time::Instant;

fn main() {
    let mut rng = seeded_rng(1);
    let logits: Vec<f32> = (0..151_936)
        .map(|_| rng.random::<f32>() * 12.0 - 6.0)
        .collect();
    let n = 50;
    // Uniform logits put a sixth of the vocabulary within 2 of the largest: the worst case for
    // the uncertainty's bounds, which then sum those exactly. A language model's logits have a
    // few near the top and the bulk far below (10-30 under, measured on Qwen2.5-Coder 0.5B).
    let mut lm_like = logits.clone();
    for (i, l) in lm_like.iter_mut().enumerate() {
        *l -= 12.0;
        if i % 10_000 == 7 {
            *l += 18.0;
        }
    }
    for (what, logits) in [("uniform logits", &logits), ("LM-like logits", &lm_like)] {
        let x = argmax(logits);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(temperature_perturbation(
                logits,
                x,
                &UncertaintyConfig::default(),
                &mut rng,
            ));
        }
        println!(
            "uncertainty (K = 20), {what}: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    }
    let t = Instant::now();
    for i in 0..n * 20 {
        std::hint::black_box(sampling::sum_exp_shifted(
            &logits,
            6.0,
            1.0 / (0.1 + i as f32 * 0.001),
        ));
    }
    println!(
        "one exp pass: {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / (n * 20) as f64
    );
    let t = Instant::now();
    let mut p = vec![];
    for _ in 0..n {
        p = softmax(&logits, 0.8);
    }
    println!(
        "softmax: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(compress(&p, &CompressConfig::default()));
    }
    println!(
        "compress: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
