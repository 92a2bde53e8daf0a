//! Accuracy of the quantised products against the exact f32 product of the dequantised weights,
//! on one tensor of a GGUF file: candle's QMatMul, candle's k_quants::matmul, and our kernels.
//! `cargo run --release -p hlm-engine --example qmm_accuracy -- FILE.gguf TENSOR [M]`
use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{Device, Module, Tensor};

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let name = std::env::args().nth(2).unwrap();
    let m: usize = std::env::args().nth(3).map_or(1, |s| s.parse().unwrap());
    let mut f = std::fs::File::open(&path).unwrap();
    let c = gguf_file::Content::read(&mut f).unwrap();
    let qt = c.tensor(&mut f, &name, &Device::Cpu).unwrap();
    let (n, k) = qt.shape().dims2().unwrap();
    let dt = qt.dtype();
    let w = qt
        .dequantize(&Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let data = qt.data().unwrap().into_owned();
    let x = Tensor::randn(0f32, 1f32, (m, k), &Device::Cpu).unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let exact: Vec<f64> = (0..m)
        .flat_map(|r| {
            let xr = &xs[r * k..(r + 1) * k];
            w.iter().map(move |row| {
                row.iter()
                    .zip(xr)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
            })
        })
        .collect();
    let qmm = QMatMul::from_qtensor(qt)
        .unwrap()
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let format =
        hlm_engine::model::kernel_format(dt).unwrap_or_else(|| panic!("{dt:?}: no kernel of ours"));
    let wk = hlm_kernels::Weights::new(format, &data, n, k).unwrap();
    let mut ours = vec![0f32; m * n];
    hlm_kernels::matmul(
        hlm_kernels::Backend::best(),
        &wk,
        &xs,
        m,
        &mut ours,
        &hlm_kernels::Serial,
    )
    .unwrap();
    let rms = |v: &[f32]| {
        let e: f64 = v
            .iter()
            .zip(&exact)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        let s: f64 = exact.iter().map(|b| b * b).sum::<f64>() / v.len() as f64;
        (e / s).sqrt()
    };
    println!(
        "{name} {dt:?} {n}x{k} m={m}: relative RMS error vs exact f32: QMatMul {:.2e}  ours {:.2e}",
        rms(&qmm),
        rms(&ours)
    );
}
