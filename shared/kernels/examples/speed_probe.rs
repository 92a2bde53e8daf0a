//! Probe: one activation row (or `M`, the first argument) against a 896 × 4864 matrix (the 0.5B's
//! `ffn_down`; or `N × K`, the next two arguments) of each format (or of the formats named after
//! them, best backend only), on one thread, the portable reference and the best backend here,
//! in ms per product and weight GB/s. `HLM_KERNELS=avx2` (a backend's name) runs that backend in
//! place of the best one.
//!
//! Natively: `cargo run --release -p hlm-kernels --example speed_probe`; in WebAssembly (SIMD128,
//! under Node's V8): `CARGO_TARGET_WASM32_WASIP1_RUNNER="node scripts/wasi-run.mjs" cargo run
//! --release --target wasm32-wasip1 -p hlm-kernels --example speed_probe`; in a Chromium page, add
//! `--chromium` after the script's name, and for the relaxed-SIMD kernels
//! `RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd"` with a target dir of their own
//! (`--target-dir target/wasm-relaxed`).
use hlm_kernels::{matmul, Backend, Format, Layout, Serial, Weights};
use std::time::Instant;

/// Random blocks whose f16 scales are all 0.0625 (bytes `00 2c`), so no product overflows, and
/// whose `Q8_0` values are never −128, as ggml's quantiser writes them (`round(x / (amax / 127))`;
/// the relaxed-SIMD kernel takes a slow path for a block holding −128).
fn weights(format: Format, n: usize, k: usize) -> Vec<u8> {
    let mut state = 1u64;
    let mut data: Vec<u8> = (0..n * format.row_bytes(k))
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    let scales: &[usize] = match format {
        Format::Q4K => &[0, 2],
        Format::Q6K => &[208],
        _ => &[0],
    };
    for blk in data.chunks_exact_mut(format.block_bytes()) {
        if format == Format::Q8_0 {
            blk.iter_mut().for_each(|q| *q = (*q as i8).max(-127) as u8);
        }
        for &at in scales {
            blk[at..at + 2].copy_from_slice(&[0x00, 0x2c]);
        }
    }
    data
}

fn main() {
    let arg = |i: usize, default: usize, what: &str| {
        std::env::args().nth(i).map_or(default, |a| {
            a.parse().unwrap_or_else(|_| panic!("{what}: {a}"))
        })
    };
    let m = arg(1, 1, "the first argument is the rows M");
    let (n, k) = (
        arg(2, 896, "then the outputs N"),
        arg(3, 4864, "then the inputs K"),
    );
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let mut y = vec![0f32; m * n];
    // Formats named after the sizes (`Q4K Q6K ...`): only those, and only the best backend.
    let only: Vec<String> = std::env::args().skip(4).collect();
    // `HLM_KERNELS=avx2` (a backend's name) in place of the best one.
    let best = std::env::var("HLM_KERNELS")
        .ok()
        .and_then(|name| Backend::by_name(&name))
        .unwrap_or_else(Backend::best);
    let backends: &[Backend] = if only.is_empty() {
        &[Backend::Portable, best]
    } else {
        &[best]
    };
    for format in [
        Format::Q4K,
        Format::Q6K,
        Format::Q8_0,
        Format::Q5_0,
        Format::Q4_1,
    ] {
        if !only.is_empty() && !only.contains(&format!("{format:?}")) {
            continue;
        }
        let data = weights(format, n, k);
        let w = Weights::new(format, &data, n, k).unwrap();
        for &backend in backends {
            let packed = w.pack(backend);
            let layouts = [Some(w), packed.as_ref().map(|p| p.weights())];
            for w in layouts.iter().flatten() {
                let s = time_product(backend, w, &x, m, &mut y);
                let gbs = data.len() as f64 / s / 1e9;
                println!(
                    "{format:?} {}{} ({m} rows): {:.2} ms, {gbs:.2} GB/s",
                    backend.name(),
                    if w.layout() == Layout::Rows {
                        ""
                    } else {
                        " packed"
                    },
                    s * 1e3
                );
            }
        }
    }
}

/// Seconds per product: the best of fifteen batches (the machines here are shared and noisy),
/// after a warm-up (V8 runs WebAssembly on its baseline compiler until the optimised code is
/// ready).
fn time_product(backend: Backend, w: &Weights, x: &[f32], m: usize, y: &mut [f32]) -> f64 {
    let reps = 20;
    for _ in 0..reps {
        matmul(backend, w, x, m, y, &Serial).unwrap();
    }
    (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                matmul(backend, w, x, m, y, &Serial).unwrap();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}
