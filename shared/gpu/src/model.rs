//! [`GpuModel`]: a Qwen2 / Llama decoder running one token at a time on the GPU.
//!
//! Built from a loaded [`hlm_engine::model::Model`]: its quantised matrices are uploaded as they
//! are (blocks, no f32 copy), its norms and biases as f32. Every kernel of a token is prebound at
//! load time; a token then costs one write of its embedding row and position, one command encoder
//! holding every layer's dispatches (and the copies of its key and value into the cache), one
//! submission, and one read-back of the logits (and, if asked, the attention row).
//!
//! Per layer, with `x` the residual stream:
//! `h = rmsnorm(x)` → `qkv = [Wq h | Wk h | Wv h] (+ bias)` → RoPE on q and k → k, v copied into
//! the cache at the position → attention over `0 ..= pos` (probabilities kept) → `x += Wo attn` →
//! `h = rmsnorm(x)` → `g = silu(Wgate h) · (Wup h)` → `x += Wdown g`. Then `h = rmsnorm(x)`,
//! `logits = Wout h`.

use crate::kernels::{
    self, ActQuant, AttentionParams, AttnMeanParams, MatvecParams, RmsNormParams, RopeParams, Step,
};
use crate::{Dispatch, GpuContext, GpuError, Kernels, QuantFormat, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use hlm_engine::model::{Model, ModelConfig, RopeStyle, WeightMatrix};
use std::sync::Arc;

#[cfg(not(target_arch = "wasm32"))]
fn web_time_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// How the matrix-vector products treat their input vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Kept in f32: the model's arithmetic up to f32 rounding (within ~1e-4 of an f64 forward in
    /// the logits on the real models).
    #[default]
    F32,
    /// Quantised to 8 bits per block first, as candle's CPU kernels do (ggml's Q8_0 / Q8_1 / Q8_K),
    /// with the same integer products: each product equals candle's to ~1e-7, but over a whole
    /// forward the 8-bit roundings amplify any difference (a different sum order suffices), so the
    /// logits do not follow candle's more closely than [`Activations::F32`] does (measured). Kept
    /// for the integer-product path on real GPUs (a quarter of the activation bytes).
    Q8,
}

/// Options of [`GpuModel::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOptions {
    /// Positions the cache holds (capped at the model's own context).
    pub max_context: usize,
    pub activations: Activations,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            max_context: 4096,
            activations: Activations::F32,
        }
    }
}

/// An activation vector on the GPU, with its 8-bit forms when products read those.
struct Act {
    x: wgpu::Buffer,
    len: usize,
    q32: Option<wgpu::Buffer>,
    qk: Option<wgpu::Buffer>,
}

impl Act {
    fn new(ctx: &GpuContext, name: &str, len: usize, mode: Activations) -> Result<Self> {
        let q = |kind: ActQuant| -> Result<Option<wgpu::Buffer>> {
            if mode == Activations::Q8 && len.is_multiple_of(kind.block()) {
                Ok(Some(ctx.storage_zeroed(name, kind.words(len))?))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            x: ctx.storage_zeroed(name, len)?,
            len,
            q32: q(ActQuant::Q8_32)?,
            qk: q(ActQuant::Q8K)?,
        })
    }

    fn quantised(&self, kind: ActQuant) -> Option<&wgpu::Buffer> {
        match kind {
            ActQuant::Q8_32 => self.q32.as_ref(),
            ActQuant::Q8K => self.qk.as_ref(),
        }
    }

    /// The quantisations `consumers` read (none in f32 mode), recorded once each.
    fn quantize_for(
        &self,
        ctx: &GpuContext,
        k: &Kernels,
        mode: Activations,
        consumers: &[&QMatrix],
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        if mode == Activations::F32 {
            return Ok(());
        }
        for kind in [ActQuant::Q8_32, ActQuant::Q8K] {
            if consumers
                .iter()
                .any(|m| m.format.activation_quant() == kind)
            {
                let q = self.quantised(kind).ok_or_else(|| {
                    GpuError::Model(format!(
                        "{} values cannot be quantised as {kind:?}",
                        self.len
                    ))
                })?;
                out.push(k.quantize(ctx, kind, &self.x, 0, q, self.len)?);
            }
        }
        Ok(())
    }
}

/// What one token's forward returns.
#[derive(Debug, Clone, Default)]
pub struct GpuForward {
    /// Logits over the vocabulary for the new token's position.
    pub logits: Vec<f32>,
    /// Its attention over positions `0 ..= pos`, averaged over heads and the last
    /// `capture_attention` layers (as [`hlm_engine::model::ForwardOutput::attention`]).
    pub attention: Option<Vec<f32>>,
}

/// A quantised matrix on the GPU, split by rows into parts that each fit one storage binding.
struct QMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    /// `(first row, rows, buffer)`.
    parts: Vec<(usize, usize, wgpu::Buffer)>,
}

fn format_of(dtype: GgmlDType) -> Option<QuantFormat> {
    Some(match dtype {
        GgmlDType::Q4_0 => QuantFormat::Q4_0,
        GgmlDType::Q4_1 => QuantFormat::Q4_1,
        GgmlDType::Q5_0 => QuantFormat::Q5_0,
        GgmlDType::Q8_0 => QuantFormat::Q8_0,
        GgmlDType::Q4K => QuantFormat::Q4K,
        GgmlDType::Q6K => QuantFormat::Q6K,
        _ => return None,
    })
}

impl QMatrix {
    fn upload(ctx: &GpuContext, name: &str, w: WeightMatrix<'_>) -> Result<Self> {
        let qt = match w {
            WeightMatrix::Quantized(qt) => qt,
            WeightMatrix::Dense(_) => {
                return Err(GpuError::Model(format!(
                    "{name}: dense (safetensors) weights are not supported on the GPU yet"
                )))
            }
        };
        let format = format_of(qt.dtype()).ok_or_else(|| {
            GpuError::Model(format!("{name}: no GPU kernel for {:?}", qt.dtype()))
        })?;
        let (rows, cols) = qt
            .shape()
            .dims2()
            .map_err(|e| GpuError::Model(format!("{name}: {e}")))?;
        let data = qt
            .data()
            .map_err(|e| GpuError::Model(format!("{name}: {e}")))?;
        let row_bytes = format.matrix_bytes(1, cols);
        if data.len() != rows * row_bytes {
            return Err(GpuError::Model(format!("{name}: unexpected size")));
        }
        // Whole rows per part, at most one binding (less 4 bytes of padding) each.
        let per_part = ((ctx.max_binding() as usize - 4) / row_bytes).max(1);
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < rows {
            let n = per_part.min(rows - r0);
            let bytes = &data[r0 * row_bytes..(r0 + n) * row_bytes];
            parts.push((r0, n, ctx.storage_from_bytes(name, bytes)?));
            r0 += n;
        }
        Ok(Self {
            format,
            rows,
            cols,
            parts,
        })
    }

    /// `y[y_off ..] (+)= W x`, one dispatch per part (reading `x`'s 8-bit form in Q8 mode).
    #[allow(clippy::too_many_arguments)]
    fn dispatches(
        &self,
        ctx: &GpuContext,
        k: &Kernels,
        mode: Activations,
        x: &Act,
        y: &wgpu::Buffer,
        y_off: usize,
        accumulate: bool,
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        for (r0, n, buf) in &self.parts {
            let p = MatvecParams {
                rows: *n as u32,
                cols: self.cols as u32,
                w_off: 0,
                x_off: 0,
                y_off: (y_off + r0) as u32,
                accumulate: accumulate as u32,
                _pad: [0; 2],
            };
            out.push(match mode {
                Activations::F32 => k.matvec(ctx, self.format, buf, &x.x, y, p)?,
                Activations::Q8 => {
                    let kind = self.format.activation_quant();
                    let xq = x.quantised(kind).ok_or_else(|| {
                        GpuError::Model(format!("no {kind:?} form of a {}-vector", x.len))
                    })?;
                    k.matvec_q8(ctx, self.format, buf, xq, y, p)?
                }
            });
        }
        Ok(())
    }
}

struct GpuLayer {
    /// norm, q, k, v, bias, rope (before the key and value go into the cache).
    pre: Vec<Dispatch>,
    attention: Dispatch,
    /// The head mean of this layer's probabilities, added to the attention row.
    mean: Dispatch,
    /// wo (+ residual), norm, gate, up, swiglu, down (+ residual).
    post: Vec<Dispatch>,
    k_cache: wgpu::Buffer,
    v_cache: wgpu::Buffer,
    _weights: Vec<QMatrix>,
    _vectors: Vec<wgpu::Buffer>,
}

/// The token embedding, looked up on the CPU (one row per token, written with the position).
enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(candle_core::Tensor),
}

/// A decoder on the GPU with its own KV cache (one sequence).
pub struct GpuModel {
    ctx: GpuContext,
    cfg: ModelConfig,
    embedding: Embedding,
    layers: Vec<GpuLayer>,
    head: Vec<Dispatch>,
    argmax: Dispatch,
    x: wgpu::Buffer,
    qkv: wgpu::Buffer,
    logits: wgpu::Buffer,
    attn_row: wgpu::Buffer,
    best: wgpu::Buffer,
    step: wgpu::Buffer,
    max_context: usize,
    pos: usize,
    _keep: Vec<wgpu::Buffer>,
    _acts: Vec<Act>,
    _lm_head: QMatrix,
}

fn vector(ctx: &GpuContext, name: &str, v: &[f32]) -> Result<wgpu::Buffer> {
    ctx.storage_from_f32(name, v)
}

/// The sizes [`GpuModel::new`] builds with.
#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Hidden size, head dimension, query heads, key/value heads, feed-forward size.
    d: usize,
    hd: usize,
    nh: usize,
    nkv: usize,
    f: usize,
    /// One position's keys (or values): `nkv × hd`.
    kvw: usize,
    /// One position's queries, keys and values: `(nh + 2 nkv) × hd`.
    qkv_len: usize,
    /// Positions the cache holds.
    max_context: usize,
    mode: Activations,
}

impl Dims {
    /// The model's sizes with the options' context and activations; fails on a head dimension
    /// the attention kernel cannot take.
    fn new(cfg: &ModelConfig, opts: &GpuOptions) -> Result<Self> {
        let (hd, nh, nkv) = (cfg.head_dim, cfg.heads, cfg.kv_heads);
        if hd > kernels::MAX_HEAD_DIM {
            return Err(GpuError::Model(format!(
                "head dimension {hd} over {}",
                kernels::MAX_HEAD_DIM
            )));
        }
        Ok(Self {
            d: cfg.hidden,
            hd,
            nh,
            nkv,
            f: cfg.ffn,
            kvw: nkv * hd,
            qkv_len: (nh + 2 * nkv) * hd,
            max_context: opts.max_context.min(cfg.max_context).max(1),
            mode: opts.activations,
        })
    }
}

/// The buffers every layer shares: the residual stream `x`, the normed input `h`, queries, keys
/// and values, the attention output, the feed-forward's `gate` and `up`, the attention
/// probabilities and their row, the logits and their argmax, the position uniform and the RoPE
/// table.
struct Scratch {
    x: wgpu::Buffer,
    h: Act,
    qkv: wgpu::Buffer,
    attn: Act,
    gate: Act,
    up: wgpu::Buffer,
    probs: wgpu::Buffer,
    attn_row: wgpu::Buffer,
    logits: wgpu::Buffer,
    best: wgpu::Buffer,
    step: wgpu::Buffer,
    rope: wgpu::Buffer,
}

impl Scratch {
    fn new(ctx: &GpuContext, cfg: &ModelConfig, n: &Dims) -> Result<Self> {
        let (mode, max_context) = (n.mode, n.max_context);
        Ok(Self {
            x: ctx.storage_zeroed("x", n.d)?,
            h: Act::new(ctx, "h", n.d, mode)?,
            qkv: ctx.storage_zeroed("qkv", n.qkv_len)?,
            attn: Act::new(ctx, "attn", n.nh * n.hd, mode)?,
            gate: Act::new(ctx, "gate", n.f, mode)?,
            up: ctx.storage_zeroed("up", n.f)?,
            probs: ctx.storage_zeroed("probs", n.nh * max_context)?,
            attn_row: ctx.storage_zeroed("attn_row", max_context)?,
            logits: ctx.storage_zeroed("logits", cfg.vocab_size)?,
            best: ctx.storage_zeroed("argmax", 2)?,
            step: ctx.uniform("step", &Step::at(0)),
            rope: vector(
                ctx,
                "rope",
                &kernels::rope_table(n.hd, cfg.rope_theta, max_context),
            )?,
        })
    }
}

/// One layer's weights on the GPU, their shapes checked.
struct LayerWeights {
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    wg: QMatrix,
    wu: QMatrix,
    wd: QMatrix,
    attn_norm: wgpu::Buffer,
    ffn_norm: wgpu::Buffer,
    /// The q, k and v biases as one vector (zeros for a missing one), if the model has any.
    qkv_bias: Option<wgpu::Buffer>,
}

impl LayerWeights {
    fn upload(ctx: &GpuContext, model: &Model, li: usize, n: &Dims) -> Result<Self> {
        let lw = model
            .layer_weights(li)
            .ok_or_else(|| GpuError::Model(format!("layer {li} missing")))?;
        let name = |w: &str| format!("blk.{li}.{w}");
        let matrix = |w: &str, m| QMatrix::upload(ctx, &name(w), m);
        let (d, f, q, kvw) = (n.d, n.f, n.nh * n.hd, n.kvw);
        let w = Self {
            wq: matrix("attn_q", lw.wq)?,
            wk: matrix("attn_k", lw.wk)?,
            wv: matrix("attn_v", lw.wv)?,
            wo: matrix("attn_output", lw.wo)?,
            wg: matrix("ffn_gate", lw.w_gate)?,
            wu: matrix("ffn_up", lw.w_up)?,
            wd: matrix("ffn_down", lw.w_down)?,
            attn_norm: vector(ctx, &name("attn_norm"), lw.attn_norm)?,
            ffn_norm: vector(ctx, &name("ffn_norm"), lw.ffn_norm)?,
            qkv_bias: None,
        };
        let shapes = [
            (&w.wq, (q, d)),
            (&w.wk, (kvw, d)),
            (&w.wv, (kvw, d)),
            (&w.wo, (d, q)),
            (&w.wg, (f, d)),
            (&w.wu, (f, d)),
            (&w.wd, (d, f)),
        ];
        for (m, want) in shapes {
            if (m.rows, m.cols) != want {
                return Err(GpuError::Model(format!(
                    "layer {li}: matrix {}x{}, expected {want:?}",
                    m.rows, m.cols
                )));
            }
        }
        let qkv_bias = if lw.bq.is_some() || lw.bk.is_some() || lw.bv.is_some() {
            let mut b = Vec::with_capacity(n.qkv_len);
            b.extend_from_slice(lw.bq.unwrap_or(&vec![0.0; q]));
            b.extend_from_slice(lw.bk.unwrap_or(&vec![0.0; kvw]));
            b.extend_from_slice(lw.bv.unwrap_or(&vec![0.0; kvw]));
            Some(vector(ctx, &name("qkv_bias"), &b)?)
        } else {
            None
        };
        Ok(Self { qkv_bias, ..w })
    }
}

/// The output head: final norm and projection to the logits, and their argmax.
struct Head {
    dispatches: Vec<Dispatch>,
    argmax: Dispatch,
    out_norm: wgpu::Buffer,
    lm_head: QMatrix,
}

/// Binds the kernels to the shared buffers and one layer's (or the head's) weights: the steps
/// of [`GpuModel::new`] after the shared buffers exist.
struct Binder<'a> {
    ctx: &'a GpuContext,
    k: &'a Kernels,
    cfg: &'a ModelConfig,
    n: Dims,
    s: &'a Scratch,
}

impl Binder<'_> {
    /// RMS norm of `xb` with gains `g` into `y`.
    fn norm(&self, xb: &wgpu::Buffer, g: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Dispatch> {
        let p = RmsNormParams {
            n: self.n.d as u32,
            eps: self.cfg.rms_eps,
            ..Default::default()
        };
        self.k.rms_norm(self.ctx, xb, g, y, p, 1)
    }

    /// Layer `li`: its weights uploaded, its KV cache allocated, its kernels bound.
    fn layer(&self, model: &Model, li: usize) -> Result<GpuLayer> {
        let w = LayerWeights::upload(self.ctx, model, li, &self.n)?;
        let pre = self.bind_qkv(&w)?;
        let cache_len = self.n.max_context * self.n.kvw;
        let k_cache = self
            .ctx
            .storage_zeroed(&format!("blk.{li}.k_cache"), cache_len)?;
        let v_cache = self
            .ctx
            .storage_zeroed(&format!("blk.{li}.v_cache"), cache_len)?;
        let (attention, mean) = self.bind_attention(&k_cache, &v_cache)?;
        let post = self.bind_feed_forward(&w)?;
        let LayerWeights {
            wq,
            wk,
            wv,
            wo,
            wg,
            wu,
            wd,
            attn_norm,
            ffn_norm,
            qkv_bias,
        } = w;
        let mut vectors: Vec<wgpu::Buffer> = qkv_bias.into_iter().collect();
        vectors.extend([attn_norm, ffn_norm]);
        Ok(GpuLayer {
            pre,
            attention,
            mean,
            post,
            k_cache,
            v_cache,
            _weights: vec![wq, wk, wv, wo, wg, wu, wd],
            _vectors: vectors,
        })
    }

    /// Before the cache: norm, q, k and v (+ bias), RoPE on q and k.
    fn bind_qkv(&self, w: &LayerWeights) -> Result<Vec<Dispatch>> {
        let (ctx, k, s, n) = (self.ctx, self.k, self.s, &self.n);
        let (mode, q) = (n.mode, n.nh * n.hd);
        let mut pre = vec![self.norm(&s.x, &w.attn_norm, &s.h.x)?];
        s.h.quantize_for(ctx, k, mode, &[&w.wq, &w.wk, &w.wv], &mut pre)?;
        w.wq.dispatches(ctx, k, mode, &s.h, &s.qkv, 0, false, &mut pre)?;
        w.wk.dispatches(ctx, k, mode, &s.h, &s.qkv, q, false, &mut pre)?;
        w.wv.dispatches(ctx, k, mode, &s.h, &s.qkv, q + n.kvw, false, &mut pre)?;
        if let Some(bias) = &w.qkv_bias {
            pre.push(k.add(ctx, &s.qkv, 0, bias, 0, n.qkv_len)?);
        }
        let style = match self.cfg.rope_style {
            RopeStyle::Halves => 0,
            RopeStyle::Interleaved => 1,
        };
        let rope = RopeParams {
            heads: (n.nh + n.nkv) as u32,
            head_dim: n.hd as u32,
            off: 0,
            style,
            max_pos: n.max_context as u32,
            _pad: [0; 3],
        };
        pre.push(k.rope(ctx, &s.step, &s.rope, &s.qkv, rope)?);
        Ok(pre)
    }

    /// Attention over the cache (probabilities kept), and the head mean of those probabilities
    /// added to the attention row (recorded only for the layers whose attention is captured).
    fn bind_attention(
        &self,
        k_cache: &wgpu::Buffer,
        v_cache: &wgpu::Buffer,
    ) -> Result<(Dispatch, Dispatch)> {
        let (ctx, s, n) = (self.ctx, self.s, &self.n);
        let p = AttentionParams {
            heads: n.nh as u32,
            kv_heads: n.nkv as u32,
            head_dim: n.hd as u32,
            stride: n.max_context as u32,
            q_off: 0,
            k_off: 0,
            v_off: 0,
            out_off: 0,
        };
        let attention = self.k.attention(
            ctx, &s.step, &s.qkv, k_cache, v_cache, &s.probs, &s.attn.x, p,
        )?;
        let p = AttnMeanParams {
            heads: n.nh as u32,
            stride: n.max_context as u32,
            scale: 1.0 / n.nh as f32,
            accumulate: 1,
        };
        let mean = self.k.attn_mean(ctx, &s.step, &s.probs, &s.attn_row, p)?;
        Ok((attention, mean))
    }

    /// After attention: wo (+ residual), norm, gate, up, swiglu, down (+ residual).
    fn bind_feed_forward(&self, w: &LayerWeights) -> Result<Vec<Dispatch>> {
        let (ctx, k, s, mode) = (self.ctx, self.k, self.s, self.n.mode);
        let mut post = vec![];
        s.attn.quantize_for(ctx, k, mode, &[&w.wo], &mut post)?;
        w.wo.dispatches(ctx, k, mode, &s.attn, &s.x, 0, true, &mut post)?;
        post.push(self.norm(&s.x, &w.ffn_norm, &s.h.x)?);
        s.h.quantize_for(ctx, k, mode, &[&w.wg, &w.wu], &mut post)?;
        w.wg.dispatches(ctx, k, mode, &s.h, &s.gate.x, 0, false, &mut post)?;
        w.wu.dispatches(ctx, k, mode, &s.h, &s.up, 0, false, &mut post)?;
        post.push(k.swiglu(ctx, &s.gate.x, 0, &s.up, 0, self.n.f)?);
        s.gate.quantize_for(ctx, k, mode, &[&w.wd], &mut post)?;
        w.wd.dispatches(ctx, k, mode, &s.gate, &s.x, 0, true, &mut post)?;
        Ok(post)
    }

    /// The output head: its weights uploaded, final norm and projection bound, and the argmax.
    fn head(&self, model: &Model) -> Result<Head> {
        let (ctx, k, s, mode) = (self.ctx, self.k, self.s, self.n.mode);
        let vocab = self.cfg.vocab_size;
        let out_norm = vector(ctx, "output_norm", model.output_norm())?;
        let lm_head = QMatrix::upload(ctx, "output", model.lm_head_weights())?;
        if (lm_head.rows, lm_head.cols) != (vocab, self.n.d) {
            return Err(GpuError::Model(
                "output projection of the wrong shape".into(),
            ));
        }
        let mut dispatches = vec![self.norm(&s.x, &out_norm, &s.h.x)?];
        s.h.quantize_for(ctx, k, mode, &[&lm_head], &mut dispatches)?;
        lm_head.dispatches(ctx, k, mode, &s.h, &s.logits, 0, false, &mut dispatches)?;
        let argmax = k.argmax(ctx, &s.logits, &s.best, vocab)?;
        Ok(Head {
            dispatches,
            argmax,
            out_norm,
            lm_head,
        })
    }
}

/// One item of a token's forward pass, in order ([`GpuModel::passes`]): what
/// [`GpuModel::record`] puts into one encoder and [`GpuModel::profile_blocking`] submits one
/// kernel at a time.
enum Pass<'a> {
    /// Kernels recorded into one compute pass.
    Kernels(Vec<&'a Dispatch>),
    /// This layer's key and value copied from `qkv` into its cache at the position.
    KvCopy(&'a GpuLayer),
}

impl GpuModel {
    /// Uploads `model`'s weights and prebinds every kernel: the sizes, the shared buffers, then
    /// each layer (weights, KV cache, kernels), the output head and the embedding.
    pub fn new(ctx: GpuContext, model: &Model, opts: GpuOptions) -> Result<Self> {
        let cfg = model.config().clone();
        let n = Dims::new(&cfg, &opts)?;
        let k = Kernels::new(&ctx);
        let s = Scratch::new(&ctx, &cfg, &n)?;
        let binder = Binder {
            ctx: &ctx,
            k: &k,
            cfg: &cfg,
            n,
            s: &s,
        };
        let layers = (0..cfg.layers)
            .map(|li| binder.layer(model, li))
            .collect::<Result<Vec<_>>>()?;
        let head = binder.head(model)?;
        let embedding = match model.embedding_weights() {
            WeightMatrix::Quantized(q) => Embedding::Quantized(q.clone()),
            WeightMatrix::Dense(t) => Embedding::Dense(t.clone()),
        };
        Ok(Self {
            ctx,
            cfg,
            embedding,
            layers,
            head: head.dispatches,
            argmax: head.argmax,
            x: s.x,
            qkv: s.qkv,
            logits: s.logits,
            attn_row: s.attn_row,
            best: s.best,
            step: s.step,
            max_context: n.max_context,
            pos: 0,
            _keep: vec![s.up, s.probs, s.rope, head.out_norm],
            _acts: vec![s.h, s.attn, s.gate],
            _lm_head: head.lm_head,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Positions in the cache.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Positions the cache holds at most.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Rolls the cache back to its first `len` positions (the decoding loop's rejection path);
    /// a no-op if it holds no more.
    pub fn truncate(&mut self, len: usize) {
        self.pos = self.pos.min(len);
    }

    fn embed(&self, token: u32) -> Result<Vec<f32>> {
        let ids = candle_core::Tensor::new(&[token], &candle_core::Device::Cpu)
            .map_err(|e| GpuError::Model(e.to_string()))?;
        let t = match &self.embedding {
            Embedding::Quantized(q) => q.embedding(&ids),
            Embedding::Dense(w) => w.index_select(&ids, 0),
        };
        t.and_then(|t| {
            t.flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()
        })
        .map_err(|e| GpuError::Model(e.to_string()))
    }

    /// Writes the token's inputs and records its whole forward pass into one encoder.
    fn record(
        &self,
        token: u32,
        capture_attention: usize,
        greedy: bool,
    ) -> Result<wgpu::CommandEncoder> {
        self.ctx.check_device()?;
        if token as usize >= self.cfg.vocab_size {
            return Err(GpuError::Model(format!(
                "token id {token} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        if self.pos >= self.max_context {
            return Err(GpuError::Model(format!(
                "context full: {} positions",
                self.max_context
            )));
        }
        let q = &self.ctx.queue;
        q.write_buffer(&self.x, 0, bytemuck::cast_slice(&self.embed(token)?));
        q.write_buffer(&self.step, 0, bytemuck::bytes_of(&Step::at(self.pos)));
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("token"),
            });
        if capture_attention > 0 {
            enc.clear_buffer(&self.attn_row, 0, None);
        }
        for pass in self.passes(capture_attention, greedy) {
            match pass {
                Pass::Kernels(ds) => kernels::record(&mut enc, &ds),
                Pass::KvCopy(l) => self.copy_kv(&mut enc, l),
            }
        }
        Ok(enc)
    }

    /// A token's forward pass in order: per layer the kernels before the cache, the key and
    /// value copied into it, attention (and its head mean for the last `capture_attention`
    /// layers) and the rest of the layer; then the head (and the argmax when `greedy`).
    fn passes(&self, capture_attention: usize, greedy: bool) -> Vec<Pass<'_>> {
        let capture_from = self.cfg.layers.saturating_sub(capture_attention);
        let mut passes = Vec::with_capacity(3 * self.layers.len() + 1);
        for (li, l) in self.layers.iter().enumerate() {
            passes.push(Pass::Kernels(l.pre.iter().collect()));
            passes.push(Pass::KvCopy(l));
            let mut ds = vec![&l.attention];
            if capture_attention > 0 && li >= capture_from {
                ds.push(&l.mean);
            }
            ds.extend(l.post.iter());
            passes.push(Pass::Kernels(ds));
        }
        let mut ds: Vec<&Dispatch> = self.head.iter().collect();
        if greedy {
            ds.push(&self.argmax);
        }
        passes.push(Pass::Kernels(ds));
        passes
    }

    /// Copies layer `l`'s key and value for this position from `qkv` into its cache.
    fn copy_kv(&self, enc: &mut wgpu::CommandEncoder, l: &GpuLayer) {
        let (nh, nkv, hd) = (self.cfg.heads, self.cfg.kv_heads, self.cfg.head_dim);
        let kvw = (nkv * hd) as u64 * 4;
        let at = self.pos as u64 * kvw;
        enc.copy_buffer_to_buffer(&self.qkv, (nh * hd) as u64 * 4, &l.k_cache, at, kvw);
        enc.copy_buffer_to_buffer(&self.qkv, ((nh + nkv) * hd) as u64 * 4, &l.v_cache, at, kvw);
    }

    /// Runs `token` at the next position, appends its key and value to the cache, and returns its
    /// logits (and attention row averaged over the last `capture_attention` layers, 0 = none).
    pub async fn forward(&mut self, token: u32, capture_attention: usize) -> Result<GpuForward> {
        let mut enc = self.record(token, capture_attention, false)?;
        let rb_logits = self
            .ctx
            .copy_for_readback(&mut enc, &self.logits, 0, self.cfg.vocab_size);
        let n = self.pos + 1;
        let rb_attn = (capture_attention > 0)
            .then(|| self.ctx.copy_for_readback(&mut enc, &self.attn_row, 0, n));
        self.ctx.queue.submit([enc.finish()]);
        self.pos += 1;
        let logits = rb_logits.read(&self.ctx).await?;
        self.ctx.check_device()?;
        let attention = match rb_attn {
            Some(rb) => {
                let captured = capture_attention.min(self.cfg.layers) as f32;
                let mut a = rb.read(&self.ctx).await?;
                a.iter_mut().for_each(|w| *w /= captured);
                Some(a)
            }
            None => None,
        };
        Ok(GpuForward { logits, attention })
    }

    /// Replaces the cache with positions `0 .. len` of `layers` (per layer, keys after RoPE and
    /// values, `[position][kv head][dim]`, as the engine's CPU cache holds them): a prompt run on
    /// the CPU in one batched forward continues here.
    pub fn import_cache(&mut self, layers: &[(&[f32], &[f32])], len: usize) -> Result<()> {
        self.ctx.check_device()?;
        let kvw = self.cfg.kv_heads * self.cfg.head_dim;
        if layers.len() != self.layers.len() || len > self.max_context {
            return Err(GpuError::Model(format!(
                "cannot import {} layers × {len} positions into {} layers × {}",
                layers.len(),
                self.layers.len(),
                self.max_context
            )));
        }
        for (l, (k, v)) in self.layers.iter().zip(layers) {
            if k.len() < len * kvw || v.len() < len * kvw {
                return Err(GpuError::Model(format!(
                    "imported cache holds {} values per layer, {} needed",
                    k.len().min(v.len()),
                    len * kvw
                )));
            }
            let q = &self.ctx.queue;
            q.write_buffer(&l.k_cache, 0, bytemuck::cast_slice(&k[..len * kvw]));
            q.write_buffer(&l.v_cache, 0, bytemuck::cast_slice(&v[..len * kvw]));
        }
        self.pos = len;
        Ok(())
    }

    /// Runs `token` at the next position without reading anything back (a prompt's tokens before
    /// its last: the next read waits for this submission too).
    pub fn advance(&mut self, token: u32) -> Result<()> {
        let enc = self.record(token, 0, false)?;
        self.ctx.queue.submit([enc.finish()]);
        self.pos += 1;
        Ok(())
    }

    /// Runs `token` and returns only the greedy next token (8 bytes read back).
    pub async fn forward_greedy(&mut self, token: u32) -> Result<u32> {
        let mut enc = self.record(token, 0, true)?;
        let rb = self.ctx.copy_for_readback(&mut enc, &self.best, 0, 1);
        self.ctx.queue.submit([enc.finish()]);
        self.pos += 1;
        let best = rb.read(&self.ctx).await?[0].to_bits();
        self.ctx.check_device()?;
        Ok(best)
    }

    /// Runs `token` like [`GpuModel::forward`] (capturing 4 layers' attention) but submits each
    /// kernel on its own and waits for it: wall time per kernel name, `(name, seconds, launches)`,
    /// slowest first. Per-submission overhead is included, so the sum exceeds a normal step.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_blocking(&mut self, token: u32) -> Result<Vec<(String, f64, usize)>> {
        let enc = self.record(token, 0, false)?;
        drop(enc); // inputs written; the dispatches are replayed one by one below
        let mut times: Vec<(String, f64, usize)> = Vec::new();
        for pass in self.passes(4, false) {
            match pass {
                Pass::Kernels(ds) => {
                    for d in ds {
                        self.time_one(&mut times, d.label(), |enc| kernels::record(enc, &[d]))?;
                    }
                }
                Pass::KvCopy(l) => {
                    self.time_one(&mut times, "kv copy", |enc| self.copy_kv(enc, l))?
                }
            }
        }
        self.pos += 1;
        times.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(times)
    }

    /// Submits what `f` records on its own, waits for it, and adds its wall time to `label`'s
    /// entry in `times` (`(name, seconds, launches)`).
    #[cfg(not(target_arch = "wasm32"))]
    fn time_one(
        &self,
        times: &mut Vec<(String, f64, usize)>,
        label: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<()> {
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        f(&mut enc);
        let t0 = web_time_now();
        self.ctx.queue.submit([enc.finish()]);
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let dt = t0.elapsed().as_secs_f64();
        match times.iter_mut().find(|(n, _, _)| n == label) {
            Some(e) => {
                e.1 += dt;
                e.2 += 1;
            }
            None => times.push((label.to_string(), dt, 1)),
        }
        Ok(())
    }

    /// [`GpuModel::forward`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(&mut self, token: u32, capture_attention: usize) -> Result<GpuForward> {
        pollster::block_on(self.forward(token, capture_attention))
    }

    /// [`GpuModel::forward_greedy`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_greedy_blocking(&mut self, token: u32) -> Result<u32> {
        pollster::block_on(self.forward_greedy(token))
    }
}
