//! Every kernel against the plain references, on random blocks of every format, with sizes that
//! do not fill registers evenly (odd block counts, 1-17 rows, 1-17 activation rows).

use hlm_kernels::{
    dequantize_row, matmul, Activations, Backend, Format, KernelError, Parallel, Serial, Weights,
};
use std::ops::Range;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    /// Uniform in (-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn f16(&mut self, scale: f32) -> [u8; 2] {
        half::f16::from_f32(self.unit() * scale)
            .to_bits()
            .to_le_bytes()
    }
}

/// Distance in units in the last place (0: the same f32).
fn ulps(a: f32, b: f32) -> u32 {
    let key = |v: f32| {
        let i = v.to_bits() as i32;
        if i < 0 {
            i32::MIN - i
        } else {
            i
        }
    };
    key(a).abs_diff(key(b))
}

/// `rows` random rows of `cols` values: random quants, scales of realistic size.
fn random_weights(rng: &mut Rng, format: Format, rows: usize, cols: usize) -> Vec<u8> {
    let blocks = rows * cols / format.block_values();
    let mut data = Vec::with_capacity(blocks * format.block_bytes());
    for _ in 0..blocks {
        let mut blk: Vec<u8> = (0..format.block_bytes()).map(|_| rng.byte()).collect();
        match format {
            Format::Q8_0 | Format::Q5_0 => blk[0..2].copy_from_slice(&rng.f16(0.01)),
            Format::Q4_1 => {
                blk[0..2].copy_from_slice(&rng.f16(0.01));
                blk[2..4].copy_from_slice(&rng.f16(0.05));
            }
            Format::Q4K => {
                blk[0..2].copy_from_slice(&rng.f16(0.002));
                blk[2..4].copy_from_slice(&rng.f16(0.002));
            }
            Format::Q6K => blk[208..210].copy_from_slice(&rng.f16(0.002)),
        }
        data.extend(blk);
    }
    data
}

fn random_x(rng: &mut Rng, n: usize) -> Vec<f32> {
    // A few outliers, as real activations have.
    (0..n)
        .map(|i| rng.unit() * if i % 97 == 5 { 20.0 } else { 1.0 })
        .collect()
}

/// Splits the rows unevenly over real threads (in turn on WASI, which has none).
struct Threads;

impl Parallel for Threads {
    fn for_ranges(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        let cuts = [0, n / 3, n / 3 + 1.min(n), n].map(|c: usize| c.min(n));
        if cfg!(target_os = "wasi") {
            for w in cuts.windows(2) {
                if w[0] < w[1] {
                    f(w[0]..w[1]);
                }
            }
            return;
        }
        std::thread::scope(|s| {
            for w in cuts.windows(2) {
                let r = w[0]..w[1];
                if !r.is_empty() {
                    s.spawn(move || f(r));
                }
            }
        });
    }
}

fn shapes(format: Format) -> Vec<(usize, usize, usize)> {
    let b = format.block_values();
    let mut cols = vec![b, 3 * b, 7 * b];
    if b == 32 {
        cols.push(29 * b);
    }
    let mut out = vec![];
    for &k in &cols {
        for (n, m) in [
            (1, 1),
            (3, 2),
            (17, 1),
            (5, 8),
            (4, 9),
            (2, 17),
            (40, 6),
            (6, 7),
        ] {
            out.push((n, k, m));
        }
    }
    out
}

#[test]
fn portable_kernels_match_the_f32_product_within_the_quantisation_error() {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for format in Format::ALL {
        for (n, k, m) in shapes(format) {
            let data = random_weights(&mut rng, format, n, k);
            let x = random_x(&mut rng, m * k);
            let w = Weights::new(format, &data, n, k).unwrap();
            let mut y = vec![0f32; m * n];
            matmul(Backend::Portable, &w, &x, m, &mut y, &Serial).unwrap();
            let rb = format.row_bytes(k);
            for j in 0..n {
                let wf = dequantize_row(format, &data[j * rb..(j + 1) * rb]).unwrap();
                for r in 0..m {
                    let xr = &x[r * k..(r + 1) * k];
                    let exact: f64 = wf.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    // Each x is off by at most half its block's step (amax / 127 / 2), and Q8_0's
                    // step is rounded to f16 (relative 2⁻¹¹).
                    let bound: f64 = xr
                        .chunks(format.block_values())
                        .zip(wf.chunks(format.block_values()))
                        .map(|(xb, wb)| {
                            let step = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64 / 127.0;
                            wb.iter()
                                .zip(xb)
                                .map(|(&w, &x)| {
                                    w.abs() as f64 * (step * 0.5 + x.abs() as f64 * 1e-3)
                                })
                                .sum::<f64>()
                        })
                        .sum();
                    let got = y[r * n + j] as f64;
                    assert!(
                        (got - exact).abs() <= bound * 1.01 + 1e-5,
                        "{format:?} n={n} k={k} m={m} row {j} x-row {r}: {got} vs {exact} (bound {bound})"
                    );
                }
            }
        }
    }
}

/// The SIMD backends this CPU runs (each one is tested, not only the fastest).
fn simd_backends() -> Vec<Backend> {
    let found: Vec<Backend> = Backend::ALL
        .into_iter()
        .filter(|b| b.is_accelerated() && b.is_supported())
        .collect();
    if found.is_empty() {
        eprintln!("no SIMD backend on this CPU: nothing to compare");
    }
    found
}

#[test]
fn simd_kernels_match_the_portable_ones() {
    for backend in simd_backends() {
        simd_backend_matches_the_portable_one(backend);
    }
}

fn simd_backend_matches_the_portable_one(backend: Backend) {
    let mut rng = Rng(0xD1B54A32D192ED03);
    for format in Format::ALL {
        for (n, k, m) in shapes(format) {
            let data = random_weights(&mut rng, format, n, k);
            let x = random_x(&mut rng, m * k);
            let w = Weights::new(format, &data, n, k).unwrap();
            let a = Activations::quantize(format, &x, m, k).unwrap();
            let (mut want, mut got, mut threaded) =
                (vec![0f32; m * n], vec![0f32; m * n], vec![0f32; m * n]);
            hlm_kernels::matmul_quantized(Backend::Portable, &w, &a, &mut want, &Serial).unwrap();
            hlm_kernels::matmul_quantized(backend, &w, &a, &mut got, &Serial).unwrap();
            hlm_kernels::matmul_quantized(backend, &w, &a, &mut threaded, &Threads).unwrap();
            assert_eq!(
                got, threaded,
                "{format:?} n={n} k={k} m={m}: threads changed the result"
            );
            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                // Same integers, scales exact in f64, sums in f64: the same f32.
                assert!(
                    ulps(g, e) <= 1,
                    "{format:?} n={n} k={k} m={m} out {i}: {backend:?} {g} vs portable {e}"
                );
            }
        }
    }
}

/// Activations large enough to be quantised on the threads (a batch's): the same products as
/// quantised on one.
#[test]
fn quantising_on_threads_changes_nothing() {
    let mut rng = Rng(0x2545F4914F6CDD1D);
    let (n, k, m) = (24, 512, 40);
    for backend in [Backend::Portable].into_iter().chain(simd_backends()) {
        for format in Format::ALL {
            let data = random_weights(&mut rng, format, n, k);
            let x = random_x(&mut rng, m * k);
            let w = Weights::new(format, &data, n, k).unwrap();
            let (mut one, mut threads) = (vec![0f32; m * n], vec![0f32; m * n]);
            hlm_kernels::matmul(backend, &w, &x, m, &mut one, &Serial).unwrap();
            hlm_kernels::matmul(backend, &w, &x, m, &mut threads, &Threads).unwrap();
            assert_eq!(one, threads, "{backend:?} {format:?}");
        }
    }
}

/// The VNNI kernels are the AVX2 ones with fused integer products: the same integers, the same
/// f64 arithmetic, the same f32s.
#[test]
fn avx512_vnni_gives_the_bits_of_avx2() {
    if !Backend::Avx512Vnni.is_supported() {
        eprintln!("no AVX-512 VNNI on this CPU: nothing to compare");
        return;
    }
    let mut rng = Rng(0x3C6E_F372_FE94_F82B);
    for format in Format::ALL {
        for (n, k, m) in shapes(format) {
            let data = random_weights(&mut rng, format, n, k);
            let x = random_x(&mut rng, m * k);
            let w = Weights::new(format, &data, n, k).unwrap();
            let (mut avx2, mut vnni) = (vec![0f32; m * n], vec![0f32; m * n]);
            matmul(Backend::Avx2, &w, &x, m, &mut avx2, &Serial).unwrap();
            matmul(Backend::Avx512Vnni, &w, &x, m, &mut vnni, &Threads).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&avx2), bits(&vnni), "{format:?} n={n} k={k} m={m}");
        }
    }
}

/// `Q4_K` repacked eight rows at a time (`Weights::pack`) gives the bits of the file's layout,
/// on every backend that packs, for every number of activation rows and with threads.
#[test]
fn packed_weights_give_the_bits_of_the_file_layout() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let format = Format::Q4K;
    for backend in simd_backends() {
        for (n, k) in [(8, 256), (16, 768), (40, 1792)] {
            let data = random_weights(&mut rng, format, n, k);
            let w = Weights::new(format, &data, n, k).unwrap();
            let Some(packed) = w.pack(backend) else {
                eprintln!("{backend:?} keeps the file's layout");
                continue;
            };
            assert_eq!(packed.bytes(), n * k / 256 * 148);
            for m in [1, 2, 3, 5, 8, 9, 17] {
                let x = random_x(&mut rng, m * k);
                let (mut want, mut got) = (vec![0f32; m * n], vec![0f32; m * n]);
                matmul(backend, &w, &x, m, &mut want, &Serial).unwrap();
                matmul(backend, &packed.weights(), &x, m, &mut got, &Threads).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&want),
                    bits(&got),
                    "{backend:?} {format:?} n={n} k={k} m={m}"
                );
            }
        }
    }
}

#[test]
fn packing_is_for_the_layouts_that_have_one() {
    let mut rng = Rng(11);
    // Rows not a multiple of eight, another format, the portable backend: the file's layout.
    let data = random_weights(&mut rng, Format::Q4K, 12, 256);
    let w = Weights::new(Format::Q4K, &data, 12, 256).unwrap();
    assert!(w.pack(Backend::Avx2).is_none());
    let data = random_weights(&mut rng, Format::Q6K, 8, 256);
    let w = Weights::new(Format::Q6K, &data, 8, 256).unwrap();
    assert!(w.pack(Backend::Avx2).is_none());
    let data = random_weights(&mut rng, Format::Q4K, 8, 256);
    let w = Weights::new(Format::Q4K, &data, 8, 256).unwrap();
    assert!(w.pack(Backend::Portable).is_none());
    // Packed weights on a backend without their kernels: an error, not a wrong answer.
    if let Some(packed) = w.pack(Backend::Avx2) {
        let mut y = vec![0f32; 8];
        assert!(matches!(
            matmul(
                Backend::Portable,
                &packed.weights(),
                &[0.5; 256],
                1,
                &mut y,
                &Serial
            ),
            Err(KernelError::Layout { .. })
        ));
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let data = vec![0u8; 2 * 34];
    assert!(matches!(
        Weights::new(Format::Q8_0, &data, 1, 48),
        Err(KernelError::RaggedRow { .. })
    ));
    assert!(matches!(
        Weights::new(Format::Q8_0, &data, 2, 64),
        Err(KernelError::WrongSize { .. })
    ));
    let w = Weights::new(Format::Q8_0, &data, 1, 64).unwrap();
    let mut y = vec![0f32; 1];
    assert!(matches!(
        matmul(Backend::Portable, &w, &[0.0; 63], 1, &mut y, &Serial),
        Err(KernelError::ActivationShape { .. })
    ));
    assert!(matches!(
        matmul(Backend::Portable, &w, &[0.0; 128], 2, &mut y, &Serial),
        Err(KernelError::OutputShape { .. })
    ));
    let a = Activations::quantize(Format::Q4_1, &[0.0; 64], 1, 64).unwrap();
    assert!(matches!(
        hlm_kernels::matmul_quantized(Backend::Portable, &w, &a, &mut y, &Serial),
        Err(KernelError::ActivationFormat { .. })
    ));
    assert!(dequantize_row(Format::Q4K, &[0u8; 100]).is_err());
}

#[test]
fn zero_activations_give_zero() {
    let mut rng = Rng(7);
    for backend in Backend::ALL.into_iter().filter(|b| b.is_supported()) {
        for format in Format::ALL {
            let k = format.block_values() * 2;
            let data = random_weights(&mut rng, format, 3, k);
            let w = Weights::new(format, &data, 3, k).unwrap();
            let mut y = vec![1f32; 3];
            matmul(backend, &w, &vec![0.0; k], 1, &mut y, &Serial).unwrap();
            assert_eq!(y, vec![0.0; 3], "{backend:?} {format:?}");
        }
    }
}

#[test]
fn a_row_gets_the_same_result_alone_or_with_others() {
    for backend in Backend::ALL.into_iter().filter(|b| b.is_supported()) {
        a_row_alone_or_with_others(backend);
    }
}

/// A thread's outputs go into `y` a part at a time (about 256 KiB of them): with more weight
/// rows than fit in one part, every part lands in its own columns.
#[test]
fn outputs_of_many_rows_land_in_their_columns() {
    let mut rng = Rng(0x0DD5_EED5);
    let (format, n, k, m) = (Format::Q8_0, 1700, 64, 40);
    let data = random_weights(&mut rng, format, n, k);
    let w = Weights::new(format, &data, n, k).unwrap();
    let x = random_x(&mut rng, m * k);
    for backend in Backend::ALL.into_iter().filter(|b| b.is_supported()) {
        let mut together = vec![0f32; m * n];
        matmul(backend, &w, &x, m, &mut together, &Serial).unwrap();
        for r in [0, 17, m - 1] {
            let mut alone = vec![0f32; n];
            matmul(backend, &w, &x[r * k..(r + 1) * k], 1, &mut alone, &Serial).unwrap();
            assert_eq!(alone, together[r * n..(r + 1) * n], "{backend:?} row {r}");
        }
    }
}

/// Output rows of their own, apart and not initialised (here: filled with NaN first), get every
/// value that one output buffer gets, for one activation row and for many, on several threads.
#[test]
fn outputs_into_rows_of_their_own_equal_one_buffer() {
    use std::mem::MaybeUninit;
    let mut rng = Rng(0x5EED_F0A5);
    for (format, n, k) in [(Format::Q8_0, 1700, 64), (Format::Q4K, 24, 512)] {
        let data = random_weights(&mut rng, format, n, k);
        let w = Weights::new(format, &data, n, k).unwrap();
        for m in [1, 3, 40] {
            let x = random_x(&mut rng, m * k);
            for backend in Backend::ALL.into_iter().filter(|b| b.is_supported()) {
                let a = Activations::quantize(format, &x, m, k).unwrap();
                let mut one = vec![0f32; m * n];
                hlm_kernels::matmul_quantized(backend, &w, &a, &mut one, &Serial).unwrap();
                let mut ys = vec![vec![MaybeUninit::new(f32::NAN); n]; m];
                let mut rows: Vec<&mut [MaybeUninit<f32>]> =
                    ys.iter_mut().map(|y| y.as_mut_slice()).collect();
                hlm_kernels::matmul_quantized_rows(backend, &w, &a, &mut rows, &Threads).unwrap();
                for (r, y) in ys.iter().enumerate() {
                    // SAFETY: initialised (with NaN, then by the product).
                    let got: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
                    assert_eq!(
                        got,
                        one[r * n..(r + 1) * n],
                        "{backend:?} {format:?} m={m} row {r}"
                    );
                }
            }
        }
    }
    // Rows of the wrong number or length are refused.
    let data = random_weights(&mut rng, Format::Q8_0, 4, 32);
    let w = Weights::new(Format::Q8_0, &data, 4, 32).unwrap();
    let a = Activations::quantize(Format::Q8_0, &random_x(&mut rng, 64), 2, 32).unwrap();
    let mut short = [MaybeUninit::new(0f32); 3];
    let mut long = [MaybeUninit::new(0f32); 4];
    let err = hlm_kernels::matmul_quantized_rows(
        Backend::Portable,
        &w,
        &a,
        &mut [&mut long[..], &mut short[..]],
        &Serial,
    );
    assert!(
        matches!(err, Err(KernelError::OutputShape { .. })),
        "{err:?}"
    );
}

fn a_row_alone_or_with_others(backend: Backend) {
    // Every backend runs a row through the same f64 arithmetic whatever the others.
    let mut rng = Rng(0xA5A5_5A5A_1234_5678);
    for format in Format::ALL {
        let (n, k) = (5, format.block_values() * 6);
        let data = random_weights(&mut rng, format, n, k);
        let w = Weights::new(format, &data, n, k).unwrap();
        for m in [2, 3, 5, 7, 9, 17] {
            let x = random_x(&mut rng, m * k);
            let mut together = vec![0f32; m * n];
            matmul(backend, &w, &x, m, &mut together, &Serial).unwrap();
            for r in 0..m {
                let mut alone = vec![0f32; n];
                matmul(backend, &w, &x[r * k..(r + 1) * k], 1, &mut alone, &Serial).unwrap();
                for j in 0..n {
                    let (a, b) = (alone[j], together[r * n + j]);
                    assert!(
                        a.to_bits() == b.to_bits(),
                        "{backend:?} {format:?} m={m} row {r} out {j}: alone {a}, with others {b}"
                    );
                }
            }
        }
    }
}

/// candle's `BlockQ8_0::from_float` as it is written (`f32::max`, `f32::round`, `as i8`).
fn candle_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = vec![];
    for x in x.chunks_exact(32) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

#[test]
fn weights_quantised_to_q8_0_are_candles_blocks() {
    let mut rng = Rng(0x005E_ED0F_0008);
    let mut x: Vec<f32> = (0..64 * 32).map(|_| rng.unit() * 3.0 - 1.5).collect();
    // Whole numbers times a power of two (as a dequantised `Q5_0` block holds), blocks of
    // zeros, of one value, with NaN and infinities, and of ties.
    for (i, v) in x[..32 * 8].iter_mut().enumerate() {
        *v = ((i * 7 % 32) as f32 - 16.0) * 0.125;
    }
    x[32 * 8..32 * 9].fill(0.0);
    x[32 * 9..32 * 10].fill(-0.75);
    x[32 * 10 + 3] = f32::NAN;
    x[32 * 11 + 5] = f32::INFINITY;
    x[32 * 12 + 7] = f32::NEG_INFINITY;
    x[32 * 13 + 1] = 1e-40; // subnormal
                            // `amax = 127`, so `d = 1` and every value x.5 is a tie, which goes away from zero.
    for (i, v) in x[32 * 14..32 * 15].iter_mut().enumerate() {
        *v = if i == 0 { 127.0 } else { i as f32 - 15.5 };
    }
    let mut got = vec![0u8; x.len() / 32 * 34];
    hlm_kernels::quantize_row_q8_0(&x, &mut got).unwrap();
    let want = candle_q8_0(&x);
    for (b, (g, w)) in got.chunks(34).zip(want.chunks(34)).enumerate() {
        assert_eq!(g, w, "block {b}");
    }
    assert!(hlm_kernels::quantize_row_q8_0(&x[..31], &mut got[..0]).is_err());
    assert!(hlm_kernels::quantize_row_q8_0(&x[..32], &mut got[..33]).is_err());
}
