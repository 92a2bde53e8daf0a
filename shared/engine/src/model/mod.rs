//! Decoder-only transformers (Qwen2 and Llama families) on candle's CPU backend.
//!
//! Written for this project rather than taken from candle-transformers because both sides need
//! hooks the stock models lack:
//! * logits for **chosen rows** of a multi-token forward (the verifier checks several drafted tokens
//!   after one batched "catch-up" pass; computing the 151,936-wide output projection only where a
//!   row is needed keeps that pass cheap),
//! * a KV cache that can be **truncated** (both sides roll back on a rejection),
//! * the **attention probabilities** of the newest query, averaged over heads and the last layers
//!   (the importance filter reads them).
//!
//! Data flow of [`Model::forward`] for `m` new tokens at positions `p0 .. p0+m`:
//! embed → for each layer { RMSNorm → q,k,v projections (+bias for Qwen2) → RoPE → append k,v to the
//! cache → causal attention over `0 ..= p` → output projection → residual → RMSNorm → SwiGLU MLP →
//! residual } → final RMSNorm → output projection on the requested rows.
//!
//! Matrix products go through candle's `QMatMul` (its x86 build repacks Q4_K / Q6_K / Q8_0 weights so
//! that a multi-row product reads each weight once); everything else runs on plain `f32` slices,
//! which at batch sizes of 1-16 is cheaper than a tensor op per step and keeps every row's arithmetic
//! independent of the others.

mod attention;
mod config;
mod kv_cache;
mod linear;
mod loader;
mod ops;

pub use config::{Architecture, ModelConfig, RopeStyle};
pub use kv_cache::KvCache;
pub use linear::{kernel_backend, kernel_format, kernel_parallel, set_kernel_parallel, CandlePool};
pub use loader::{LoadOptions, ModelFormat};

use crate::{EngineError, Result};
use linear::{Embedding, Linear};

/// A weight matrix as a [`Model`] holds it, `(out, in)`: what another backend (the wgpu one in
/// `hlm-gpu`) uploads. Quantised matrices are the GGUF blocks as stored (or re-quantised to Q8_0 at
/// load, see [`LoadOptions::requantize_q5`]).
pub enum WeightMatrix<'a> {
    Quantized(&'a std::sync::Arc<candle_core::quantized::QTensor>),
    /// Dense (safetensors): f32, or f16.
    Dense(&'a candle_core::Tensor),
}

/// One decoder layer's weights, borrowed from a [`Model`] (see [`Model::layer_weights`]).
pub struct LayerWeights<'a> {
    pub attn_norm: &'a [f32],
    pub wq: WeightMatrix<'a>,
    pub wk: WeightMatrix<'a>,
    pub wv: WeightMatrix<'a>,
    /// Biases of q, k, v (Qwen2; `None` for Llama).
    pub bq: Option<&'a [f32]>,
    pub bk: Option<&'a [f32]>,
    pub bv: Option<&'a [f32]>,
    pub wo: WeightMatrix<'a>,
    pub ffn_norm: &'a [f32],
    pub w_gate: WeightMatrix<'a>,
    pub w_up: WeightMatrix<'a>,
    pub w_down: WeightMatrix<'a>,
}

/// Which rows of a forward pass need logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogitRows {
    /// None: only the KV cache (and the last hidden state) are updated.
    None,
    /// Only the last new token.
    Last,
    /// These indices into the new tokens (sorted, unique).
    Rows(Vec<usize>),
    /// Every new token.
    All,
}

/// One item's attention weights over its positions, when captured.
type AttentionWeights = Option<Vec<f32>>;

/// A batch's new tokens stacked into one matrix: item `i`'s rows are `spans[i]`, and each row's
/// rotary tables are those of its own position in its sequence.
struct Stacked {
    ids: Vec<u32>,
    spans: Vec<std::ops::Range<usize>>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Stacked {
    fn new(items: &[BatchItem<'_>], rope: &ops::Rope) -> Self {
        let mut spans = Vec::with_capacity(items.len());
        let (mut ids, mut positions) = (Vec::new(), Vec::new());
        for it in items {
            let (start, p0) = (ids.len(), it.cache.len());
            ids.extend_from_slice(it.tokens);
            positions.extend(p0..p0 + it.tokens.len());
            spans.push(start..ids.len());
        }
        let (cos, sin) = rope.tables(&positions);
        Stacked {
            ids,
            spans,
            cos,
            sin,
        }
    }

    fn rows(&self) -> usize {
        self.ids.len()
    }
}

/// One sequence's share of a [`Model::forward_batch`]: its cache, its new tokens (at positions
/// `cache.len() ..`) and the rows that need logits.
pub struct BatchItem<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub rows: LogitRows,
}

/// `(row index, logits over the vocabulary)` for each requested row of one sequence.
pub type RowLogits = Vec<(usize, Vec<f32>)>;

/// What a forward pass returns.
#[derive(Debug, Clone, Default)]
pub struct ForwardOutput {
    /// `(row index, logits over the vocabulary)` for each requested row.
    pub logits: RowLogits,
    /// Attention probabilities of the last new token over positions `0 ..= p`, averaged over heads
    /// and over the captured layers (present when `capture_attention` was asked).
    pub attention: Option<Vec<f32>>,
    /// The final-norm hidden state of the last new token (to compute its logits later on demand).
    pub last_hidden: Vec<f32>,
}

impl ForwardOutput {
    /// Logits of the last requested row.
    pub fn last_logits(&self) -> Option<&[f32]> {
        self.logits.last().map(|(_, l)| l.as_slice())
    }
}

pub(crate) struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: Linear,
    ffn_norm: Vec<f32>,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

impl Layer {
    /// The layer's seven weight matrices.
    fn matrices(&self) -> [&Linear; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }

    /// Bytes of the layer's seven weight matrices (the file's blocks).
    fn matrix_bytes(&self) -> usize {
        self.matrices().iter().map(|w| w.bytes()).sum()
    }

    /// Bytes of the matrices' copies repacked for the CPU kernels.
    fn packed_bytes(&self) -> usize {
        self.matrices().iter().map(|w| w.packed_bytes()).sum()
    }
}

/// A loaded model: configuration and weights. Immutable; all per-sequence state is in [`KvCache`],
/// so one model can serve many sessions.
pub struct Model {
    config: ModelConfig,
    embedding: Embedding,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    lm_head: Linear,
    rope: ops::Rope,
    /// Size of the weights in memory, bytes.
    weight_bytes: usize,
    name: String,
}

impl Model {
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// A short name (file stem) for logs and handshakes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of weights held in memory: the file's blocks, and the copies of them repacked for
    /// the CPU kernels (`Q4_K` on x86-64).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Bytes of weights one decode step reads: every layer's matrices and the output projection
    /// (of the embedding table, only one row).
    pub fn bytes_per_token(&self) -> usize {
        self.layers.iter().map(Layer::matrix_bytes).sum::<usize>() + self.lm_head.bytes()
    }

    /// Layer `i`'s weights, for another backend to upload (`None` past the last layer).
    pub fn layer_weights(&self, i: usize) -> Option<LayerWeights<'_>> {
        let l = self.layers.get(i)?;
        Some(LayerWeights {
            attn_norm: &l.attn_norm,
            wq: l.wq.weights(),
            wk: l.wk.weights(),
            wv: l.wv.weights(),
            bq: l.bq.as_deref(),
            bk: l.bk.as_deref(),
            bv: l.bv.as_deref(),
            wo: l.wo.weights(),
            ffn_norm: &l.ffn_norm,
            w_gate: l.w_gate.weights(),
            w_up: l.w_up.weights(),
            w_down: l.w_down.weights(),
        })
    }

    /// The token embedding table `(vocabulary, hidden)`.
    pub fn embedding_weights(&self) -> WeightMatrix<'_> {
        self.embedding.weights()
    }

    /// The final norm's gain.
    pub fn output_norm(&self) -> &[f32] {
        &self.out_norm
    }

    /// The output projection `(vocabulary, hidden)` (the embedding table when the file ties them).
    pub fn lm_head_weights(&self) -> WeightMatrix<'_> {
        self.lm_head.weights()
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config)
    }

    /// Runs `tokens` (the new tokens, at positions `cache.len() ..`) through the model, appends
    /// their keys and values to `cache`, and returns the requested logits.
    ///
    /// `capture_attention`: average the newest query's attention over the last `n` layers (0 = off).
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        rows: &LogitRows,
        capture_attention: usize,
    ) -> Result<ForwardOutput> {
        let mut item = [BatchItem {
            cache,
            tokens,
            rows: rows.clone(),
        }];
        let mut out = self.forward_batch(&mut item, capture_attention)?;
        Ok(out.pop().unwrap_or_default())
    }

    /// One forward pass over several sequences at once (a verifier's rounds from different
    /// sessions): their new tokens are stacked, so each weight matrix is read once for all rows,
    /// while each sequence keeps its own positions, KV cache and causal attention.
    ///
    /// Each item's output is what [`Model::forward`] gives it alone: the layers' products treat
    /// every row on its own (exactly, with the `hlm-kernels` backend; candle's kernels may round a
    /// row differently in a batch), and attention never mixes sequences. Every item is checked
    /// before any work, so a bad item fails the call without touching any cache.
    pub fn forward_batch(
        &self,
        items: &mut [BatchItem<'_>],
        capture_attention: usize,
    ) -> Result<Vec<ForwardOutput>> {
        let cfg = &self.config;
        let wanted = items
            .iter()
            .map(|it| self.check_item(it))
            .collect::<Result<Vec<_>>>()?;
        let stacked = Stacked::new(items, &self.rope);
        let (spans, total) = (&stacked.spans, stacked.rows());
        let mut x = self.embedding.rows(&stacked.ids)?;
        debug_assert_eq!(x.len(), total * cfg.hidden);
        let capture_from = cfg.layers.saturating_sub(capture_attention);
        let mut attn_acc: Vec<AttentionWeights> = vec![None; items.len()];
        let mut captured = 0usize;
        for (li, layer) in self.layers.iter().enumerate() {
            let capture = capture_attention > 0 && li >= capture_from;
            captured += capture as usize;
            let h = ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps);
            let (o, probs) = self.attention(li, &h, items, &stacked, capture)?;
            ops::add_assign(&mut x, &o);
            for (probs, acc) in probs.into_iter().zip(&mut attn_acc) {
                if let Some(p) = probs {
                    match acc {
                        Some(acc) => acc.iter_mut().zip(&p).for_each(|(a, b)| *a += b),
                        None => *acc = Some(p),
                    }
                }
            }
            let h = ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps);
            ops::add_assign(&mut x, &Self::feed_forward(layer, &h, total)?);
        }
        for (it, span) in items.iter_mut().zip(spans) {
            it.cache.commit(span.len());
        }
        let mut logits = self.batch_logits(&x, spans, &wanted)?.into_iter();
        let d = cfg.hidden;
        let outputs = spans
            .iter()
            .zip(attn_acc)
            .map(|(span, acc)| ForwardOutput {
                logits: logits.next().unwrap_or_default(),
                attention: acc.map(|mut a| {
                    let n = captured.max(1) as f32;
                    a.iter_mut().for_each(|w| *w /= n);
                    a
                }),
                last_hidden: ops::rms_norm(
                    &x[(span.end - 1) * d..span.end * d],
                    &self.out_norm,
                    cfg.rms_eps,
                ),
            })
            .collect();
        Ok(outputs)
    }

    /// Layer `li`'s attention over the normalised rows `h` of the stacked batch: each item's
    /// keys and values go into its cache, its queries attend to its own cache only. Returns the
    /// output projection's rows and, with `capture`, each item's attention weights.
    fn attention(
        &self,
        li: usize,
        h: &[f32],
        items: &mut [BatchItem<'_>],
        stacked: &Stacked,
        capture: bool,
    ) -> Result<(Vec<f32>, Vec<AttentionWeights>)> {
        let (cfg, layer) = (&self.config, &self.layers[li]);
        let (spans, total, cos, sin) = (&stacked.spans, stacked.rows(), &stacked.cos, &stacked.sin);
        let [mut q, mut k, mut v] =
            Linear::forward_shared([&layer.wq, &layer.wk, &layer.wv], h, total)?;
        for (t, b) in [
            (&mut q, &layer.bq),
            (&mut k, &layer.bk),
            (&mut v, &layer.bv),
        ] {
            if let Some(b) = b {
                ops::add_bias(t, b);
            }
        }
        self.rope.apply(&mut q, cfg.heads, cos, sin);
        self.rope.apply(&mut k, cfg.kv_heads, cos, sin);
        let (qw, kvw) = (cfg.heads * cfg.head_dim, cfg.kv_width());
        for (it, span) in items.iter_mut().zip(spans) {
            let rows_kv = span.start * kvw..span.end * kvw;
            it.cache
                .append(li, &k[rows_kv.clone()], &v[rows_kv], span.len());
        }
        // Every sequence's attention in one parallel pass: one dispatch per layer rather
        // than one per sequence. (A cache's length moves only at `commit`.)
        let seqs: Vec<attention::Queries> = items
            .iter()
            .zip(spans)
            .map(|(it, span)| attention::Queries {
                q: &q[span.start * qw..span.end * qw],
                kv: it.cache.layer(li),
                p0: it.cache.len(),
                m: span.len(),
            })
            .collect();
        let (attn, probs) = attention::causal_batch(cfg, &seqs, capture, kernel_parallel());
        Ok((layer.wo.forward(&attn, total)?, probs))
    }

    /// The feed-forward block on the normalised rows `h`: `down(silu(gate h) · up h)`.
    fn feed_forward(layer: &Layer, h: &[f32], rows: usize) -> Result<Vec<f32>> {
        let [mut g, u] = Linear::forward_shared([&layer.w_gate, &layer.w_up], h, rows)?;
        ops::silu_mul_on(&mut g, &u, kernel_parallel());
        layer.w_down.forward(&g, rows)
    }

    /// Checks one item of a batch before any work: tokens present and in the vocabulary, room in
    /// the context, logit rows among the new tokens. Returns the rows that need logits.
    fn check_item(&self, it: &BatchItem<'_>) -> Result<Vec<usize>> {
        let cfg = &self.config;
        let m = it.tokens.len();
        if m == 0 {
            return Err(EngineError::model("forward called with no tokens"));
        }
        if let Some(&bad) = it.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(EngineError::model(format!(
                "token id {bad} is outside the vocabulary (size {})",
                cfg.vocab_size
            )));
        }
        let p0 = it.cache.len();
        if p0 + m > cfg.max_context {
            return Err(EngineError::model(format!(
                "context full: {} + {m} tokens exceed the model's {} positions",
                p0, cfg.max_context
            )));
        }
        Ok(match &it.rows {
            LogitRows::None => vec![],
            LogitRows::Last => vec![m - 1],
            LogitRows::All => (0..m).collect(),
            LogitRows::Rows(r) => {
                if let Some(&bad) = r.iter().find(|&&i| i >= m) {
                    return Err(EngineError::model(format!(
                        "logit row {bad} requested from a forward of {m} tokens"
                    )));
                }
                r.clone()
            }
        })
    }

    /// The output projection over the wanted rows of every item (one product for the whole
    /// batch): per item, `(row index, logits)` pairs.
    fn batch_logits(
        &self,
        x: &[f32],
        spans: &[std::ops::Range<usize>],
        wanted: &[Vec<usize>],
    ) -> Result<Vec<RowLogits>> {
        let d = self.config.hidden;
        let n: usize = wanted.iter().map(Vec::len).sum();
        let mut per_item: Vec<RowLogits> = wanted.iter().map(|_| Vec::new()).collect();
        if n == 0 {
            return Ok(per_item);
        }
        let mut sel = Vec::with_capacity(n * d);
        for (span, rows) in spans.iter().zip(wanted) {
            for &i in rows {
                let r = span.start + i;
                sel.extend_from_slice(&x[r * d..(r + 1) * d]);
            }
        }
        let normed = ops::rms_norm(&sel, &self.out_norm, self.config.rms_eps);
        let mut all = self.lm_head.forward_rows(&normed, n)?.into_iter();
        for (out, rows) in per_item.iter_mut().zip(wanted) {
            for &i in rows {
                let l = all
                    .next()
                    .ok_or_else(|| EngineError::model("fewer logit rows than asked for"))?;
                out.push((i, l));
            }
        }
        Ok(per_item)
    }

    /// Greedy decoding with this model alone (the "LLM-only" / "SLM-only" baselines): the prompt
    /// in one forward, then one token per forward, up to `max_tokens` or an end token (included).
    pub fn generate_greedy(&self, prompt: &[u32], max_tokens: usize) -> Result<Vec<u32>> {
        self.generate_greedy_until(prompt, max_tokens, &mut |_| true)
    }

    /// [`Model::generate_greedy`] that also ends after a token for which `go_on` says `false`
    /// (a stop condition met). Its forward passes: one over the prompt, then one per token but
    /// the last.
    pub fn generate_greedy_until(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        go_on: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let mut cache = self.new_cache();
        let mut out = Vec::with_capacity(max_tokens);
        let first = self.forward(&mut cache, prompt, &LogitRows::Last, 0)?;
        let mut next = hlm_core::argmax(first.last_logits().unwrap_or_default());
        while out.len() < max_tokens {
            out.push(next);
            if self.config.eos_ids.contains(&next) || out.len() == max_tokens || !go_on(next) {
                break;
            }
            let o = self.forward(&mut cache, &[next], &LogitRows::Last, 0)?;
            next = hlm_core::argmax(o.last_logits().unwrap_or_default());
        }
        Ok(out)
    }

    /// Logits from a final-norm hidden state kept from an earlier forward ([`ForwardOutput::last_hidden`]).
    pub fn logits_from_hidden(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        if hidden.len() != self.config.hidden {
            return Err(EngineError::model("hidden state of the wrong width"));
        }
        self.lm_head.forward(hidden, 1)
    }
}
