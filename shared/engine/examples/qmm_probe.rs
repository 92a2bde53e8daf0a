//! Probe: products of m rows over every layer's tensor of one kind (for m = 1, bound by memory
//! reads, like a decode step): candle's QMatMul (repacked tiles on x86), candle's k_quants::matmul
//! (vec_dot on the raw blocks) and our kernels (hlm-kernels, on the raw blocks), all on candle's
//! worker threads.
//!
//! `cargo run --release -p hlm-engine --example qmm_probe -- FILE.gguf [KIND] [M]`
use candle_core::quantized::{gguf_file, k_quants, GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use hlm_engine::model::{kernel_format, CandlePool};
use std::time::Instant;

fn raw<T>(d: &[u8]) -> &[T] {
    unsafe {
        std::slice::from_raw_parts(d.as_ptr() as *const T, d.len() / std::mem::size_of::<T>())
    }
}

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let kind = std::env::args().nth(2).unwrap_or("ffn_gate".into());
    let m: usize = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let mut f = std::fs::File::open(&path).unwrap();
    let c = gguf_file::Content::read(&mut f).unwrap();
    let mut ts = vec![];
    for i in 0..64 {
        let name = format!("blk.{i}.{kind}.weight");
        if !c.tensor_infos.contains_key(&name) {
            break;
        }
        let qt = c.tensor(&mut f, &name, &Device::Cpu).unwrap();
        let data = qt.data().unwrap().into_owned();
        ts.push((
            qt.dtype(),
            qt.shape().dims2().unwrap(),
            data,
            QMatMul::from_qtensor(qt).unwrap(),
        ));
    }
    let bytes: usize = ts.iter().map(|t| t.2.len()).sum();
    let (n, k) = ts[0].1;
    let x = Tensor::randn(0f32, 1f32, (m, k), &Device::Cpu).unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for round in 0..3 {
        let t = Instant::now();
        for (_, _, _, mm) in &ts {
            let _ = mm.forward(&x).unwrap();
        }
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (dt, (n, k), data, _) in &ts {
            let mut dst = vec![0f32; m * n];
            match dt {
                GgmlDType::Q4K => {
                    k_quants::matmul((m, *k, *n), &xs, raw::<k_quants::BlockQ4K>(data), &mut dst)
                        .unwrap()
                }
                GgmlDType::Q6K => {
                    k_quants::matmul((m, *k, *n), &xs, raw::<k_quants::BlockQ6K>(data), &mut dst)
                        .unwrap()
                }
                GgmlDType::Q8_0 => {
                    k_quants::matmul((m, *k, *n), &xs, raw::<k_quants::BlockQ8_0>(data), &mut dst)
                        .unwrap()
                }
                GgmlDType::Q5_0 => {
                    k_quants::matmul((m, *k, *n), &xs, raw::<k_quants::BlockQ5_0>(data), &mut dst)
                        .unwrap()
                }
                GgmlDType::Q4_1 => {
                    k_quants::matmul((m, *k, *n), &xs, raw::<k_quants::BlockQ4_1>(data), &mut dst)
                        .unwrap()
                }
                other => panic!("no vec_dot case for {other:?}"),
            }
        }
        let b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let backend = hlm_kernels::Backend::best();
        for (dt, (n, k), data, _) in &ts {
            let mut dst = vec![0f32; m * n];
            let w = hlm_kernels::Weights::new(kernel_format(*dt).unwrap(), data, *n, *k).unwrap();
            hlm_kernels::matmul(backend, &w, &xs, m, &mut dst, &CandlePool).unwrap();
        }
        let c = t.elapsed().as_secs_f64();
        if round > 0 {
            let gbs = |s: f64| bytes as f64 / s / 1e9;
            println!(
                "{kind} x{} ({n}x{k}, {} MB) m={m}: QMatMul {:.2} ms ({:.1} GB/s)  vec_dot {:.2} ms ({:.1} GB/s)  ours ({backend:?}) {:.2} ms ({:.1} GB/s)",
                ts.len(), bytes / 1_000_000, a * 1e3, gbs(a), b * 1e3, gbs(b), c * 1e3, gbs(c)
            );
        }
    }
}
