//! Each kernel alone against a plain-Rust reference on random inputs, at sizes that are not
//! multiples of the workgroup size. The quantised products are checked against candle: weights are
//! quantised with candle's `QTensor::quantize`, its raw bytes go to the GPU as they are, and the
//! reference is candle's dequantisation of the same bytes with an f64 dot product (candle's own
//! `QMatMul` quantises the activations to 8 bits, so it is compared too, with a looser bound).
//!
//! These tests need a GPU adapter; on a machine without a GPU, a software Vulkan driver
//! (Debian: `mesa-vulkan-drivers`, which CI installs) provides one. Without any they fail.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use hlm_gpu::kernels::{
    self, ActQuant, AttentionParams, AttnMeanParams, MatvecParams, RmsNormParams, RopeParams, Step,
};
use hlm_gpu::{Dispatch, GpuContext, Kernels, QuantFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::OnceLock;

struct Gpu {
    ctx: GpuContext,
    k: Kernels,
}

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let ctx = GpuContext::new_blocking().unwrap_or_else(|e| {
            panic!("the wgpu kernel tests need a GPU adapter (none found): {e}")
        });
        eprintln!("adapter: {}", ctx.describe());
        let k = Kernels::new(&ctx);
        Gpu { ctx, k }
    })
}

fn run(g: &Gpu, ds: &[&Dispatch]) {
    let mut enc = g
        .ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    kernels::record(&mut enc, ds);
    g.ctx.queue.submit([enc.finish()]);
}

fn read(g: &Gpu, b: &wgpu::Buffer, off: usize, len: usize) -> Vec<f32> {
    g.ctx.read_f32_blocking(b, off, len).unwrap()
}

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, amp: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-amp..amp)).collect()
}

fn step_buf(g: &Gpu, pos: usize) -> wgpu::Buffer {
    g.ctx.uniform("step", &Step::at(pos))
}

fn dtype(f: QuantFormat) -> GgmlDType {
    match f {
        QuantFormat::Q4_0 => GgmlDType::Q4_0,
        QuantFormat::Q4_1 => GgmlDType::Q4_1,
        QuantFormat::Q5_0 => GgmlDType::Q5_0,
        QuantFormat::Q8_0 => GgmlDType::Q8_0,
        QuantFormat::Q4K => GgmlDType::Q4K,
        QuantFormat::Q6K => GgmlDType::Q6K,
    }
}

/// Errors of one quantised product: `(max |gpu - ref|, max |gpu - ref| / Σ|w x| over rows,
/// max |gpu - candle QMatMul| / Σ|w x|)`.
fn check_matvec(f: QuantFormat, rows: usize, cols: usize, seed: u64) -> (f32, f64, f64) {
    let g = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w = rand_vec(&mut rng, rows * cols, 1.0);
    let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
    let qt = QTensor::quantize(&t, dtype(f)).unwrap();
    let bytes = qt.data().unwrap().into_owned();
    assert_eq!(bytes.len(), f.matrix_bytes(rows, cols));
    let deq = qt
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let x = rand_vec(&mut rng, cols, 1.0);
    let candle = QMatMul::from_qtensor(qt)
        .unwrap()
        .forward(&Tensor::from_slice(&x, (1, cols), &Device::Cpu).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();

    // Non-zero offsets everywhere: 8 bytes before the matrix, 4 values before x, 5 before y; y starts
    // with values the kernel must add to (accumulate) or overwrite.
    let mut wb = vec![0xAAu8; 8];
    wb.extend_from_slice(&bytes);
    let wbuf = g.ctx.storage_from_bytes("w", &wb).unwrap();
    let mut xv = vec![7.0f32; 4];
    xv.extend_from_slice(&x);
    let xbuf = g.ctx.storage_from_f32("x", &xv).unwrap();
    let y0 = rand_vec(&mut rng, rows + 5, 1.0);
    let ybuf = g.ctx.storage_from_f32("y", &y0).unwrap();
    let p = MatvecParams {
        rows: rows as u32,
        cols: cols as u32,
        w_off: 8,
        x_off: 4,
        y_off: 5,
        accumulate: (seed % 2) as u32,
        _pad: [0; 2],
    };
    let d = g.k.matvec(&g.ctx, f, &wbuf, &xbuf, &ybuf, p).unwrap();
    run(g, &[&d]);
    let y = read(g, &ybuf, 0, rows + 5);
    assert_eq!(&y[..5], &y0[..5], "{f:?}: values before y_off changed");
    let (mut abs, mut rel, mut rel_candle) = (0f32, 0f64, 0f64);
    for r in 0..rows {
        let row = &deq[r * cols..(r + 1) * cols];
        let exact: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
        let scale: f64 = row
            .iter()
            .zip(&x)
            .map(|(&a, &b)| (a as f64 * b as f64).abs())
            .sum();
        let got = y[5 + r] as f64
            - if p.accumulate == 1 {
                y0[5 + r] as f64
            } else {
                0.0
            };
        abs = abs.max((got - exact).abs() as f32);
        rel = rel.max((got - exact).abs() / scale.max(1e-30));
        rel_candle = rel_candle.max((got - candle[r] as f64).abs() / scale.max(1e-30));
    }
    eprintln!(
        "matvec {f:?} {rows}x{cols}: max abs err {abs:.2e}, max err / sum|wx| {rel:.2e} (vs candle QMatMul {rel_candle:.2e})"
    );
    assert!(
        rel < 2e-6,
        "{f:?} {rows}x{cols}: error {rel:e} vs exact product of the blocks"
    );
    // candle quantises x to 8 bits for most formats; its error is about 1 % of Σ|w x| at worst.
    assert!(
        rel_candle < 2e-2,
        "{f:?} {rows}x{cols}: {rel_candle:e} vs candle"
    );
    (abs, rel, rel_candle)
}

#[test]
fn matvec_small_block_formats() {
    for (i, f) in [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
    ]
    .into_iter()
    .enumerate()
    {
        // 7 units per row (fewer than the 64 threads), 45 (not a multiple of 64), 1 row.
        for (j, (rows, cols)) in [(77, 224), (130, 1440), (1, 32)].into_iter().enumerate() {
            check_matvec(f, rows, cols, (10 * i + j) as u64);
        }
    }
}

#[test]
fn matvec_k_quants() {
    for (i, f) in [QuantFormat::Q4K, QuantFormat::Q6K].into_iter().enumerate() {
        // 768: 24 units (3 super-blocks); 4864 = 19 x 256 (the 0.5B model's ffn width): 152 units.
        for (j, (rows, cols)) in [(77, 768), (65, 4864), (1, 256)].into_iter().enumerate() {
            check_matvec(f, rows, cols, (10 * i + j) as u64);
        }
    }
}

/// More rows than one dispatch dimension holds (an output projection has 151,936).
#[test]
fn matvec_rows_beyond_one_grid_dimension() {
    let max = gpu().ctx.limits().max_compute_workgroups_per_dimension as usize;
    check_matvec(QuantFormat::Q8_0, max * kernels::MATVEC_ROWS + 1001, 32, 1);
}

#[test]
fn matvec_rejects_bad_shapes() {
    let g = gpu();
    let w = g.ctx.storage_from_bytes("w", &[0u8; 34 * 4]).unwrap();
    let x = g.ctx.storage_zeroed("x", 64).unwrap();
    let y = g.ctx.storage_zeroed("y", 4).unwrap();
    let p = |rows, cols, w_off| MatvecParams {
        rows,
        cols,
        w_off,
        ..Default::default()
    };
    assert!(g
        .k
        .matvec(&g.ctx, QuantFormat::Q8_0, &w, &x, &y, p(2, 64, 0))
        .is_ok());
    // Columns not whole blocks; matrix past the buffer; unaligned offsets; y too short.
    assert!(g
        .k
        .matvec(&g.ctx, QuantFormat::Q8_0, &w, &x, &y, p(2, 48, 0))
        .is_err());
    assert!(g
        .k
        .matvec(&g.ctx, QuantFormat::Q8_0, &w, &x, &y, p(3, 64, 0))
        .is_err());
    assert!(g
        .k
        .matvec(&g.ctx, QuantFormat::Q8_0, &w, &x, &y, p(1, 64, 2))
        .is_err());
    assert!(g
        .k
        .matvec(&g.ctx, QuantFormat::Q8_0, &w, &x, &y, p(5, 32, 0))
        .is_err());
    assert!(g
        .k
        .matvec(&g.ctx, QuantFormat::Q4K, &w, &x, &y, p(1, 64, 0))
        .is_err());
    let unaligned_x = MatvecParams {
        x_off: 2,
        ..p(1, 32, 0)
    };
    assert!(g
        .k
        .matvec(&g.ctx, QuantFormat::Q8_0, &w, &x, &y, unaligned_x)
        .is_err());
}

fn rms_norm_ref(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let n = w.len();
    x.chunks(n)
        .flat_map(|row| {
            let ss: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
            let scale = 1.0 / (ss / n as f64 + eps as f64).sqrt();
            row.iter()
                .zip(w)
                .map(move |(&v, &g)| (v as f64 * scale * g as f64) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&u, &v)| (u - v).abs() / v.abs().max(1.0))
        .fold(0.0, f32::max)
}

#[test]
fn rms_norm_matches_reference() {
    let g = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (rows, n) in [(1, 896), (3, 1000), (2, 7)] {
        let x = rand_vec(&mut rng, 2 + rows * n, 3.0);
        let w = rand_vec(&mut rng, n, 2.0);
        let xb = g.ctx.storage_from_f32("x", &x).unwrap();
        let wb = g.ctx.storage_from_f32("w", &w).unwrap();
        let yb = g.ctx.storage_zeroed("y", rows * n + 1).unwrap();
        let p = RmsNormParams {
            n: n as u32,
            x_off: 2,
            y_off: 1,
            g_off: 0,
            eps: 1e-6,
            _pad: [0; 3],
        };
        let d = g.k.rms_norm(&g.ctx, &xb, &wb, &yb, p, rows).unwrap();
        run(g, &[&d]);
        let y = read(g, &yb, 1, rows * n);
        let err = max_rel(&y, &rms_norm_ref(&x[2..], &w, 1e-6));
        eprintln!("rms_norm {rows}x{n}: max rel err {err:.2e}");
        assert!(err < 1e-5, "rms_norm {rows}x{n}: {err}");
    }
}

/// The CPU engine's rotation (`hlm_engine` `ops::Rope::apply`), on the same table.
fn rope_ref(
    x: &mut [f32],
    heads: usize,
    hd: usize,
    style: u32,
    table: &[f32],
    pos: usize,
    max_pos: usize,
) {
    let hh = hd / 2;
    for head in x.chunks_exact_mut(hd).take(heads) {
        for i in 0..hh {
            let (a, b) = if style == 0 {
                (i, i + hh)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (c, s) = (table[pos * hh + i], table[(max_pos + pos) * hh + i]);
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

#[test]
fn rope_matches_reference_both_styles() {
    let g = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let max_pos = 2048;
    // 14 query + 2 key heads of 64 (Qwen2-0.5B); 3 heads of 10 (15 pairs: a partial workgroup).
    for (heads, hd, theta) in [(16usize, 64usize, 1_000_000f32), (3, 10, 10_000.0)] {
        let table = rope_table(hd, theta, max_pos);
        let tb = g.ctx.storage_from_f32("table", &table).unwrap();
        for style in [0u32, 1] {
            for pos in [0usize, 5, 1000, max_pos - 1] {
                let x = rand_vec(&mut rng, 4 + heads * hd + 3, 2.0);
                let xb = g.ctx.storage_from_f32("x", &x).unwrap();
                let step = step_buf(g, pos);
                let p = RopeParams {
                    heads: heads as u32,
                    head_dim: hd as u32,
                    off: 4,
                    style,
                    max_pos: max_pos as u32,
                    _pad: [0; 3],
                };
                let d = g.k.rope(&g.ctx, &step, &tb, &xb, p).unwrap();
                run(g, &[&d]);
                let y = read(g, &xb, 0, x.len());
                let mut want = x.clone();
                rope_ref(&mut want[4..], heads, hd, style, &table, pos, max_pos);
                let err = max_rel(&y, &want);
                assert!(
                    err < 1e-6,
                    "rope heads {heads} hd {hd} style {style} pos {pos}: {err}"
                );
                if pos == 0 {
                    assert_eq!(y, x, "position 0 is the identity");
                }
            }
        }
    }
}

use hlm_gpu::kernels::rope_table;

#[test]
fn rope_table_matches_the_engine_formula() {
    // inv_freq in f32, angle in f64, as hlm-engine's `Rope::tables`.
    let t = rope_table(8, 10_000.0, 20);
    let f = 1.0 / 10_000f64.powf(2.0 * 3.0 / 8.0) as f32;
    let a = 17.0 * f as f64;
    assert_eq!(t[17 * 4 + 3], a.cos() as f32);
    assert_eq!(t[(20 + 17) * 4 + 3], a.sin() as f32);
}

#[test]
fn swiglu_and_add_match_reference() {
    let g = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for n in [1usize, 63, 4864 + 7] {
        let gv = rand_vec(&mut rng, n + 2, 8.0);
        let uv = rand_vec(&mut rng, n + 1, 2.0);
        let gb = g.ctx.storage_from_f32("g", &gv).unwrap();
        let ub = g.ctx.storage_from_f32("u", &uv).unwrap();
        let d = g.k.swiglu(&g.ctx, &gb, 2, &ub, 1, n).unwrap();
        run(g, &[&d]);
        let got = read(g, &gb, 0, n + 2);
        let want: Vec<f32> = (0..n)
            .map(|i| {
                let z = gv[2 + i] as f64;
                (z / (1.0 + (-z).exp()) * uv[1 + i] as f64) as f32
            })
            .collect();
        assert_eq!(&got[..2], &gv[..2]);
        let err = max_rel(&got[2..], &want);
        eprintln!("swiglu n={n}: max rel err {err:.2e}");
        assert!(err < 1e-6, "swiglu n={n}: {err}");

        let d = g.k.add(&g.ctx, &gb, 1, &ub, 0, n).unwrap();
        let before = read(g, &gb, 0, n + 2);
        run(g, &[&d]);
        let got = read(g, &gb, 0, n + 2);
        for i in 0..n + 2 {
            let want = if (1..=n).contains(&i) {
                before[i] + uv[i - 1]
            } else {
                before[i]
            };
            assert_eq!(got[i], want, "add n={n} at {i}");
        }
    }
}

/// Reference attention for one query (f64): `(out, probs[h][j])`.
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kvh: usize,
    hd: usize,
    n: usize,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let kvw = kvh * hd;
    let mut out = vec![0f32; heads * hd];
    let mut probs = Vec::new();
    for h in 0..heads {
        let g = h / (heads / kvh);
        let qh = &q[h * hd..(h + 1) * hd];
        let s: Vec<f64> = (0..n)
            .map(|j| {
                let kj = &k[j * kvw + g * hd..j * kvw + (g + 1) * hd];
                qh.iter()
                    .zip(kj)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    / (hd as f64).sqrt()
            })
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|x| x / sum).collect();
        for i in 0..hd {
            out[h * hd + i] = (0..n)
                .map(|j| p[j] * v[j * kvw + g * hd + i] as f64)
                .sum::<f64>() as f32;
        }
        probs.push(p.iter().map(|&x| x as f32).collect());
    }
    (out, probs)
}

#[test]
fn attention_matches_reference_and_returns_probabilities() {
    let g = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    // Qwen2-0.5B's shape (14 heads over 2 kv heads of 64) and an odd one (6 over 3 of 40).
    for (heads, kvh, hd) in [(14usize, 2usize, 64usize), (6, 3, 40)] {
        let stride = 300;
        let kvw = kvh * hd;
        // Cache rows beyond n hold garbage the kernel must not read.
        let k = rand_vec(&mut rng, 1 + stride * kvw, 1.5);
        let v = rand_vec(&mut rng, 2 + stride * kvw, 1.0);
        let kb = g.ctx.storage_from_f32("k", &k).unwrap();
        let vb = g.ctx.storage_from_f32("v", &v).unwrap();
        let probs_b = g.ctx.storage_zeroed("probs", heads * stride).unwrap();
        let out_b = g.ctx.storage_zeroed("out", heads * hd + 1).unwrap();
        let row_b = g.ctx.storage_zeroed("row", stride).unwrap();
        for pos in [0usize, 1, 63, 64, 65, 299] {
            let n = pos + 1;
            let q = rand_vec(&mut rng, 3 + heads * hd, 1.5);
            let qb = g.ctx.storage_from_f32("q", &q).unwrap();
            let step = step_buf(g, pos);
            let p = AttentionParams {
                heads: heads as u32,
                kv_heads: kvh as u32,
                head_dim: hd as u32,
                stride: stride as u32,
                q_off: 3,
                k_off: 1,
                v_off: 2,
                out_off: 1,
            };
            let d =
                g.k.attention(&g.ctx, &step, &qb, &kb, &vb, &probs_b, &out_b, p)
                    .unwrap();
            // Two "layers": the mean row is their average over heads and layers.
            let mean = |acc| {
                g.k.attn_mean(
                    &g.ctx,
                    &step,
                    &probs_b,
                    &row_b,
                    AttnMeanParams {
                        heads: heads as u32,
                        stride: stride as u32,
                        scale: 1.0 / (2 * heads) as f32,
                        accumulate: acc,
                    },
                )
                .unwrap()
            };
            let (m0, m1) = (mean(0), mean(1));
            run(g, &[&d, &m0, &m1]);
            let out = read(g, &out_b, 1, heads * hd);
            let probs = read(g, &probs_b, 0, heads * stride);
            let row = read(g, &row_b, 0, n);
            let (want_out, want_p) = attention_ref(&q[3..], &k[1..], &v[2..], heads, kvh, hd, n);
            let err_out = max_rel(&out, &want_out);
            let mut err_p = 0f32;
            let mut want_row = vec![0f32; n];
            for h in 0..heads {
                err_p = err_p.max(max_rel(&probs[h * stride..h * stride + n], &want_p[h]));
                for j in 0..n {
                    want_row[j] += want_p[h][j] / heads as f32;
                }
            }
            let err_row = max_rel(&row, &want_row);
            eprintln!(
                "attention {heads}/{kvh}x{hd} n={n}: out {err_out:.2e}, probs {err_p:.2e}, mean row {err_row:.2e}"
            );
            assert!(err_out < 1e-5 && err_p < 1e-6 && err_row < 1e-6, "n={n}");
            let total: f32 = row.iter().sum();
            assert!((total - 1.0).abs() < 1e-5, "mean row sums to {total}");
        }
    }
}

#[test]
fn argmax_matches_hlm_core_rule() {
    let g = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 151_936;
    let out = g.ctx.storage_zeroed("out", 2).unwrap();
    let am = |x: &[f32]| {
        let xb = g.ctx.storage_from_f32("x", x).unwrap();
        let d = g.k.argmax(&g.ctx, &xb, &out, x.len()).unwrap();
        run(g, &[&d]);
        read(g, &out, 0, 1)[0].to_bits()
    };
    let cpu = |x: &[f32]| {
        let mut best = (0usize, f32::NEG_INFINITY);
        for (i, &v) in x.iter().enumerate() {
            if v > best.1 {
                best = (i, v);
            }
        }
        best.0 as u32
    };
    for _ in 0..3 {
        let x = rand_vec(&mut rng, n, 10.0);
        assert_eq!(am(&x), cpu(&x));
    }
    // Ties go to the lowest index; NaN never wins; all -inf gives 0.
    let mut x = rand_vec(&mut rng, 1001, 1.0);
    x[700] = 5.0;
    x[300] = 5.0;
    x[10] = f32::NAN;
    assert_eq!(am(&x), 300);
    assert_eq!(am(&vec![f32::NEG_INFINITY; 77]), 0);
}

/// The activation quantiser gives candle's Q8_1 blocks (d, s and every q), bit for bit.
#[test]
fn quantize_q8_32_matches_candle() {
    let g = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 32 * 45;
    let mut x = rand_vec(&mut rng, n + 7, 3.0);
    // A zero block and a block with one large value.
    x[7 + 64..7 + 96].iter_mut().for_each(|v| *v = 0.0);
    x[7 + 100] = 250.0;
    let xb = g.ctx.storage_from_f32("x", &x).unwrap();
    let xq = g.ctx.storage_zeroed("xq", kernels::q8_32_words(n)).unwrap();
    let d =
        g.k.quantize(&g.ctx, ActQuant::Q8_32, &xb, 7, &xq, n)
            .unwrap();
    run(g, &[&d]);
    let got: Vec<u32> = read(g, &xq, 0, kernels::q8_32_words(n))
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let t = Tensor::from_slice(&x[7..], (1, n), &Device::Cpu).unwrap();
    let bytes = QTensor::quantize(&t, GgmlDType::Q8_1)
        .unwrap()
        .data()
        .unwrap()
        .into_owned();
    let f16 = |b: &[u8]| half_to_f32(u16::from_le_bytes([b[0], b[1]]));
    let mut q_diff = 0;
    for (blk, c) in bytes.chunks_exact(36).enumerate() {
        let w = &got[blk * 10..blk * 10 + 10];
        assert_eq!(f32::from_bits(w[0]), f16(&c[0..2]), "d of block {blk}");
        assert_eq!(f32::from_bits(w[1]), f16(&c[2..4]), "s of block {blk}");
        for j in 0..32 {
            let gq = (w[2 + j / 4] >> (8 * (j % 4))) as u8 as i8;
            q_diff += (gq != c[4 + j] as i8) as usize;
        }
    }
    assert_eq!(q_diff, 0, "quantised values differ from candle's");
}

/// IEEE half to f32 (the test's own, independent of the kernels).
fn half_to_f32(h: u16) -> f32 {
    let (s, e, m) = ((h >> 15) as u32, ((h >> 10) & 31) as u32, (h & 1023) as u32);
    let v = match e {
        0 => m as f32 * 2f32.powi(-24),
        31 => {
            if m == 0 {
                f32::INFINITY
            } else {
                f32::NAN
            }
        }
        _ => (1024 + m) as f32 * 2f32.powi(e as i32 - 25),
    };
    if s == 1 {
        -v
    } else {
        v
    }
}

/// With 8-bit activations the products equal candle's `QMatMul` (which quantises the same way) up
/// to the order of the float sums, for every format.
#[test]
fn matvec_q8_matches_candle_qmatmul() {
    let g = gpu();
    for (i, f) in QuantFormat::ALL.into_iter().enumerate() {
        let kind = f.activation_quant();
        let shapes: &[(usize, usize)] = match kind {
            ActQuant::Q8_32 => &[(77, 224), (130, 1536), (1, 64)],
            ActQuant::Q8K => &[(77, 768), (65, 4864), (1, 256)],
        };
        for &(rows, cols) in shapes {
            let mut rng = ChaCha8Rng::seed_from_u64(100 + i as u64);
            let w = rand_vec(&mut rng, rows * cols, 1.0);
            let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
            let qt = QTensor::quantize(&t, dtype(f)).unwrap();
            let wb = g.ctx.storage_from_bytes("w", &qt.data().unwrap()).unwrap();
            let b = kind.block();
            let x = rand_vec(&mut rng, b + cols, 2.0);
            let candle = QMatMul::from_qtensor(qt)
                .unwrap()
                .forward(&Tensor::from_slice(&x[b..], (1, cols), &Device::Cpu).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let xb = g.ctx.storage_from_f32("x", &x).unwrap();
            let xq = g.ctx.storage_zeroed("xq", kind.words(b + cols)).unwrap();
            let yb = g.ctx.storage_zeroed("y", rows).unwrap();
            let qd = g.k.quantize(&g.ctx, kind, &xb, 0, &xq, b + cols).unwrap();
            let p = MatvecParams {
                rows: rows as u32,
                cols: cols as u32,
                x_off: b as u32,
                ..Default::default()
            };
            let md = g.k.matvec_q8(&g.ctx, f, &wb, &xq, &yb, p).unwrap();
            run(g, &[&qd, &md]);
            let y = read(g, &yb, 0, rows);
            let scale = candle.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let err = y
                .iter()
                .zip(&candle)
                .map(|(a, b)| (a - b).abs() / scale)
                .fold(0f32, f32::max);
            eprintln!("matvec_q8 {f:?} {rows}x{cols}: max err vs candle / max|y| {err:.2e}");
            assert!(err < 1e-5, "{f:?} {rows}x{cols}: {err:e}");
        }
    }
}

/// The Q8_K quantiser gives candle's blocks (d and every q), bit for bit.
#[test]
fn quantize_q8_k_matches_candle() {
    let g = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let n = 256 * 19;
    let mut x = rand_vec(&mut rng, n + 3, 3.0);
    x[3..3 + 256].iter_mut().for_each(|v| *v = 0.0);
    x[3 + 300] = -40.0;
    let xb = g.ctx.storage_from_f32("x", &x).unwrap();
    let xq = g.ctx.storage_zeroed("xq", ActQuant::Q8K.words(n)).unwrap();
    let d = g.k.quantize(&g.ctx, ActQuant::Q8K, &xb, 3, &xq, n).unwrap();
    run(g, &[&d]);
    let got: Vec<u32> = read(g, &xq, 0, ActQuant::Q8K.words(n))
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let t = Tensor::from_slice(&x[3..], (1, n), &Device::Cpu).unwrap();
    let bytes = QTensor::quantize(&t, GgmlDType::Q8K)
        .unwrap()
        .data()
        .unwrap()
        .into_owned();
    // candle's BlockQ8K: f32 d, 256 int8 q, 16 int16 sums of 16.
    let mut q_diff = 0;
    for (blk, c) in bytes.chunks_exact(292).enumerate() {
        let w = &got[blk * 65..blk * 65 + 65];
        let d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        assert_eq!(f32::from_bits(w[0]), d, "d of block {blk}");
        for j in 0..256 {
            let gq = (w[1 + j / 4] >> (8 * (j % 4))) as u8 as i8;
            q_diff += (gq != c[4 + j] as i8) as usize;
        }
    }
    assert_eq!(q_diff, 0, "quantised values differ from candle's");
}
