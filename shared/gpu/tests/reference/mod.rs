//! A plain f64 forward pass of a [`Model`] on its dequantised weights: exact arithmetic for what
//! the quantised blocks encode, to tell which of two backends is closer to the model's maths.

use candle_core::Device;
use hlm_engine::model::{Model, RopeStyle, WeightMatrix};

fn deq(w: WeightMatrix<'_>) -> (Vec<f32>, usize, usize) {
    let t = match w {
        WeightMatrix::Quantized(q) => q.dequantize(&Device::Cpu).unwrap(),
        WeightMatrix::Dense(t) => t.clone(),
    };
    let (r, c) = t.dims2().unwrap();
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (v, r, c)
}

/// `(values, rows, cols)`: the dequantised weights are exact in f32; products are summed in f64.
struct Mat(Vec<f32>, usize, usize);

impl Mat {
    fn mv(&self, x: &[f64]) -> Vec<f64> {
        (0..self.1)
            .map(|r| {
                self.0[r * self.2..(r + 1) * self.2]
                    .iter()
                    .zip(x)
                    .map(|(&a, b)| a as f64 * b)
                    .sum()
            })
            .collect()
    }
}

fn mat(w: WeightMatrix<'_>) -> Mat {
    let (v, r, c) = deq(w);
    Mat(v, r, c)
}

struct Layer {
    an: Vec<f64>,
    fnorm: Vec<f64>,
    q: Mat,
    k: Mat,
    v: Mat,
    o: Mat,
    g: Mat,
    u: Mat,
    d: Mat,
    b: [Option<Vec<f64>>; 3],
}

pub struct Reference {
    layers: Vec<Layer>,
    emb: Mat,
    head: Mat,
    out_norm: Vec<f64>,
    kc: Vec<Vec<Vec<f64>>>,
    vc: Vec<Vec<Vec<f64>>>,
    eps: f64,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    theta: f64,
    style: RopeStyle,
}

fn v64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn norm(x: &[f64], g: &[f64], eps: f64) -> Vec<f64> {
    let ss: f64 = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ss + eps).sqrt();
    x.iter().zip(g).map(|(a, b)| a * s * b).collect()
}

impl Reference {
    pub fn new(m: &Model) -> Self {
        let c = m.config();
        let layers = (0..c.layers)
            .map(|i| {
                let l = m.layer_weights(i).unwrap();
                Layer {
                    an: v64(l.attn_norm),
                    fnorm: v64(l.ffn_norm),
                    q: mat(l.wq),
                    k: mat(l.wk),
                    v: mat(l.wv),
                    o: mat(l.wo),
                    g: mat(l.w_gate),
                    u: mat(l.w_up),
                    d: mat(l.w_down),
                    b: [l.bq.map(v64), l.bk.map(v64), l.bv.map(v64)],
                }
            })
            .collect();
        Self {
            layers,
            emb: mat(m.embedding_weights()),
            head: mat(m.lm_head_weights()),
            out_norm: v64(m.output_norm()),
            kc: vec![vec![]; c.layers],
            vc: vec![vec![]; c.layers],
            eps: c.rms_eps as f64,
            heads: c.heads,
            kv_heads: c.kv_heads,
            hd: c.head_dim,
            theta: c.rope_theta as f64,
            style: c.rope_style,
        }
    }

    fn rope(&self, x: &mut [f64], pos: usize) {
        let hd = self.hd;
        let hh = hd / 2;
        for head in x.chunks_exact_mut(hd) {
            for i in 0..hh {
                let f = 1.0 / self.theta.powf(2.0 * i as f64 / hd as f64);
                let a = pos as f64 * f;
                let (c, s) = (a.cos(), a.sin());
                let (p, q) = match self.style {
                    RopeStyle::Halves => (i, i + hh),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (x0, x1) = (head[p], head[q]);
                head[p] = x0 * c - x1 * s;
                head[q] = x0 * s + x1 * c;
            }
        }
    }

    /// Logits of `token` at the next position, and its attention row averaged over heads and the
    /// last `capture` layers.
    pub fn forward(&mut self, token: u32, capture: usize) -> (Vec<f64>, Vec<f64>) {
        let d = self.emb.2;
        let mut x = v64(&self.emb.0[token as usize * d..(token as usize + 1) * d]);
        let pos = self.kc[0].len();
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.hd);
        let n_layers = self.layers.len();
        let mut row = vec![0f64; pos + 1];
        for li in 0..n_layers {
            let l = &self.layers[li];
            let h = norm(&x, &l.an, self.eps);
            let mut q = l.q.mv(&h);
            let mut k = l.k.mv(&h);
            let mut v = l.v.mv(&h);
            for (t, b) in [(&mut q, &l.b[0]), (&mut k, &l.b[1]), (&mut v, &l.b[2])] {
                if let Some(b) = b {
                    t.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                }
            }
            self.rope(&mut q, pos);
            self.rope(&mut k, pos);
            self.kc[li].push(k);
            self.vc[li].push(v);
            let l = &self.layers[li];
            let mut att = vec![0f64; nh * hd];
            for hh in 0..nh {
                let g = hh / (nh / nkv);
                let qh = &q[hh * hd..(hh + 1) * hd];
                let s: Vec<f64> = self.kc[li]
                    .iter()
                    .map(|k| {
                        qh.iter()
                            .zip(&k[g * hd..(g + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                if li + capture >= n_layers {
                    for (r, ej) in row.iter_mut().zip(&e) {
                        *r += ej / z / (nh * capture) as f64;
                    }
                }
                for (j, vj) in self.vc[li].iter().enumerate() {
                    for i in 0..hd {
                        att[hh * hd + i] += e[j] / z * vj[g * hd + i];
                    }
                }
            }
            let o = l.o.mv(&att);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = norm(&x, &l.fnorm, self.eps);
            let gt = l.g.mv(&h);
            let up = l.u.mv(&h);
            let a: Vec<f64> = gt
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let dn = l.d.mv(&a);
            x.iter_mut().zip(&dn).for_each(|(a, b)| *a += b);
        }
        (self.head.mv(&norm(&x, &self.out_norm, self.eps)), row)
    }
}
