//! Loading a [`Model`] from a GGUF file (quantised) or from Hugging Face safetensors (dense).

use super::config::{Architecture, ModelConfig, RopeStyle};
use super::linear::{Embedding, Linear};
use super::{ops::Rope, Layer, Model};
use crate::{EngineError, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::{Read, Seek};

use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    Safetensors,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Re-quantise Q5_0 / Q5_1 tensors to Q8_0 at load (on by default). candle's CPU path has no
    /// SIMD kernel for Q5 formats (54 % of the Qwen2.5 0.5B Q4_K_M file's bytes), and our own
    /// `Q5_0` kernel, which reads a third fewer bytes, is bound by unpacking the 5-bit values and
    /// still slower than `Q8_0` here (0.5B decode 39-42 against 43-47 tok/s): this makes the draft
    /// model faster for ~50 % more memory on those tensors.
    pub requantize_q5: bool,
    /// Cap on the context length (defaults to the model's own, e.g. 32,768).
    pub max_context: Option<usize>,
    /// Where the weight matrices live: the CPU, or a CUDA device (feature `cuda`; embeddings,
    /// norms, attention and the KV cache stay on the CPU).
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            requantize_q5: true,
            max_context: Some(8192),
            device: Device::Cpu,
        }
    }
}

/// Tokens that end a turn or a text in the families we run.
pub(crate) const END_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "</s>",
];

impl Model {
    /// Builds the model from a parsed GGUF and a reader over the same bytes (a file natively, a
    /// `Cursor` over fetched bytes in the browser).
    pub fn from_gguf<R: Read + Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        name: &str,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let md = &content.metadata;
        let arch_name = meta_str(md, "general.architecture")?;
        let arch = match arch_name.as_str() {
            "qwen2" => Architecture::Qwen2,
            "llama" => Architecture::Llama,
            other => {
                return Err(EngineError::model(format!(
                    "unsupported architecture `{other}` (supported: qwen2, llama)"
                )))
            }
        };
        let eos_ids = gguf_eos_ids(content)?;
        let mut t = GgufTensors {
            content,
            reader,
            requantize_q5: opts.requantize_q5,
        };
        let embd = Arc::new(t.tensor("token_embd.weight")?);
        let vocab_size = embd.shape().dims2()?.0;
        let mut config = gguf_config(md, &arch_name, arch, vocab_size, eos_ids)?;
        if let Some(cap) = opts.max_context {
            config.max_context = config.max_context.min(cap);
        }
        config.validate().map_err(EngineError::Model)?;
        // The biggest tensors first: reading one briefly holds its bytes twice (the file's and the
        // blocks), and the freed copy is then reused by the smaller tensors that follow. Loaded
        // last, that copy would be the peak, and in wasm, whose memory never shrinks, the size.
        let out_norm = t.vector("output_norm.weight")?;
        let lm_head = if content.tensor_infos.contains_key("output.weight") {
            t.linear("output.weight")?
        } else {
            Linear::quantized(embd.clone())?
        };
        let layers = (0..config.layers)
            .map(|i| t.layer(i))
            .collect::<Result<Vec<_>>>()?;
        Self::assemble(
            config,
            Embedding::Quantized(embd),
            layers,
            out_norm,
            lm_head,
            name,
        )?
        .on_device(&opts.device)
    }

    /// Loads Hugging Face safetensors: `path` is a directory (or a file inside one) holding
    /// `config.json` and `*.safetensors`. Weights are kept dense in f32.
    pub fn from_safetensors(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let hf = HfConfig::read(path, &dir)?;
        // Before reading gigabytes of weights.
        let arch = hf.architecture()?;
        let mut w = DenseWeights::load(&dir)?;
        let embed = w.take("model.embed_tokens.weight")?;
        let mut config = hf.model_config(arch, embed.dims2()?.0)?;
        if let Some(cap) = opts.max_context {
            config.max_context = config.max_context.min(cap);
        }
        config.validate().map_err(EngineError::Model)?;
        let layers = (0..config.layers)
            .map(|i| w.layer(i))
            .collect::<Result<Vec<_>>>()?;
        let out_norm = w.take("model.norm.weight")?.to_vec1()?;
        let lm_head = match w.take("lm_head.weight") {
            Ok(t) => Linear::dense(t)?,
            Err(_) => Linear::dense(embed.clone())?,
        };
        Self::assemble(
            config,
            Embedding::Dense(embed),
            layers,
            out_norm,
            lm_head,
            &file_stem(&dir),
        )?
        .on_device(&opts.device)
    }

    /// Moves the weight matrices to `device` (nothing to do for the CPU).
    fn on_device(mut self, device: &Device) -> Result<Self> {
        if device.is_cpu() {
            return Ok(self);
        }
        for l in &mut self.layers {
            for w in [
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.w_gate,
                &mut l.w_up,
                &mut l.w_down,
            ] {
                *w = w.to_device(device)?;
            }
        }
        self.lm_head = self.lm_head.to_device(device)?;
        Ok(self)
    }

    fn assemble(
        config: ModelConfig,
        embedding: Embedding,
        layers: Vec<Layer>,
        out_norm: Vec<f32>,
        lm_head: Linear,
        name: &str,
    ) -> Result<Self> {
        check_shapes(&config, &embedding, &layers, &out_norm, &lm_head)
            .map_err(|e| EngineError::model(format!("{name}: {e}")))?;
        let weight_bytes = embedding.bytes()
            + lm_head.bytes()
            + lm_head.packed_bytes()
            + layers
                .iter()
                .map(|l| l.matrix_bytes() + l.packed_bytes())
                .sum::<usize>();
        let rope = Rope::new(config.head_dim, config.rope_theta, config.rope_style);
        Ok(Self {
            config,
            embedding,
            layers,
            out_norm,
            lm_head,
            rope,
            weight_bytes,
            name: name.to_string(),
        })
    }
}

/// Every tensor must have the shape the configuration implies, or the forward pass would index
/// out of bounds: a corrupt file is an error here.
fn check_shapes(
    cfg: &ModelConfig,
    embedding: &Embedding,
    layers: &[Layer],
    out_norm: &[f32],
    lm_head: &Linear,
) -> std::result::Result<(), String> {
    let (d, q, kv, f) = (
        cfg.hidden,
        cfg.heads * cfg.head_dim,
        cfg.kv_heads * cfg.head_dim,
        cfg.ffn,
    );
    let expect = |what: String, got: (usize, usize), want: (usize, usize)| {
        if got == want {
            Ok(())
        } else {
            Err(format!("{what} has shape {got:?}, expected {want:?}"))
        }
    };
    expect(
        "token embedding".into(),
        embedding.dims().map_err(|e| e.to_string())?,
        (cfg.vocab_size, d),
    )?;
    expect(
        "output projection".into(),
        lm_head.dims(),
        (cfg.vocab_size, d),
    )?;
    expect("output norm".into(), (out_norm.len(), 1), (d, 1))?;
    for (i, l) in layers.iter().enumerate() {
        expect(format!("layer {i} q"), l.wq.dims(), (q, d))?;
        expect(format!("layer {i} k"), l.wk.dims(), (kv, d))?;
        expect(format!("layer {i} v"), l.wv.dims(), (kv, d))?;
        expect(format!("layer {i} o"), l.wo.dims(), (d, q))?;
        expect(format!("layer {i} gate"), l.w_gate.dims(), (f, d))?;
        expect(format!("layer {i} up"), l.w_up.dims(), (f, d))?;
        expect(format!("layer {i} down"), l.w_down.dims(), (d, f))?;
        expect(
            format!("layer {i} norms"),
            (l.attn_norm.len(), l.ffn_norm.len()),
            (d, d),
        )?;
        for (name, b, n) in [("q", &l.bq, q), ("k", &l.bk, kv), ("v", &l.bv, kv)] {
            if let Some(b) = b {
                expect(format!("layer {i} {name} bias"), (b.len(), 1), (n, 1))?;
            }
        }
    }
    Ok(())
}

/// The ids that end a generation: the GGUF's `eos_token_id`, and every token of the vocabulary
/// that is one of [`END_TOKENS`].
fn gguf_eos_ids(content: &gguf_file::Content) -> Result<Vec<u32>> {
    let mut eos_ids: Vec<u32> = meta_usize(&content.metadata, "tokenizer.ggml.eos_token_id")
        .ok()
        .map(|i| vec![i as u32])
        .unwrap_or_default();
    // The token strings are freed (on return) before the tensors are read.
    let tokens = crate::tokenizer::vocab_tokens(content)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    for (i, t) in tokens.iter().enumerate() {
        if END_TOKENS.contains(&t.as_str()) && !eos_ids.contains(&(i as u32)) {
            eos_ids.push(i as u32);
        }
    }
    Ok(eos_ids)
}

/// The model's shape and constants from a GGUF's metadata (keys under `arch_name.`).
fn gguf_config(
    md: &HashMap<String, gguf_file::Value>,
    arch_name: &str,
    arch: Architecture,
    vocab_size: usize,
    eos_ids: Vec<u32>,
) -> Result<ModelConfig> {
    let key = |k: &str| format!("{arch_name}.{k}");
    let hidden = meta_usize(md, &key("embedding_length"))?;
    let heads = meta_usize(md, &key("attention.head_count"))?;
    Ok(ModelConfig {
        arch,
        vocab_size,
        hidden,
        layers: meta_usize(md, &key("block_count"))?,
        heads,
        kv_heads: meta_usize(md, &key("attention.head_count_kv")).unwrap_or(heads),
        head_dim: meta_usize(md, &key("attention.key_length"))
            .unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
        ffn: meta_usize(md, &key("feed_forward_length"))?,
        rms_eps: meta_f32(md, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        rope_theta: meta_f32(md, &key("rope.freq_base")).unwrap_or(10_000.0),
        rope_style: match arch {
            Architecture::Qwen2 => RopeStyle::Halves,
            Architecture::Llama => RopeStyle::Interleaved,
        },
        max_context: meta_usize(md, &key("context_length")).unwrap_or(4096),
        bos_id: meta_usize(md, "tokenizer.ggml.bos_token_id")
            .ok()
            .map(|i| i as u32),
        eos_ids,
    })
}

/// A Hugging Face model directory's `config.json`.
struct HfConfig(serde_json::Value);

impl HfConfig {
    /// `dir/config.json`; `path` (what the user named) goes into the error.
    fn read(path: &Path, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            EngineError::model(format!(
                "{}: not a GGUF file, and no readable {} ({e})",
                path.display(),
                cfg_path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map(HfConfig)
            .map_err(|e| EngineError::model(format!("{}: {e}", cfg_path.display())))
    }

    fn usize(&self, k: &str) -> Result<usize> {
        self.0
            .get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| EngineError::model(format!("config.json lacks `{k}`")))
    }

    fn f64_or(&self, k: &str, default: f64) -> f64 {
        self.0.get(k).and_then(|v| v.as_f64()).unwrap_or(default)
    }

    /// `eos_token_id`: one id, a list of them, or none.
    fn eos_ids(&self) -> Vec<u32> {
        match self.0.get("eos_token_id") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            Some(v) => v.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            None => vec![],
        }
    }

    /// `model_type`, one of those we run.
    fn architecture(&self) -> Result<Architecture> {
        match self.0.get("model_type").and_then(|v| v.as_str()) {
            Some("qwen2") => Ok(Architecture::Qwen2),
            Some("llama") => Ok(Architecture::Llama),
            other => Err(EngineError::model(format!(
                "unsupported model_type {other:?} (supported: qwen2, llama)"
            ))),
        }
    }

    /// The model's shape and constants (the vocabulary's size from the embedding matrix).
    fn model_config(&self, arch: Architecture, vocab_size: usize) -> Result<ModelConfig> {
        let heads = self.usize("num_attention_heads")?;
        let hidden = self.usize("hidden_size")?;
        Ok(ModelConfig {
            arch,
            vocab_size,
            hidden,
            layers: self.usize("num_hidden_layers")?,
            heads,
            kv_heads: self.usize("num_key_value_heads").unwrap_or(heads),
            head_dim: self
                .usize("head_dim")
                .unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
            ffn: self.usize("intermediate_size")?,
            rms_eps: self.f64_or("rms_norm_eps", 1e-6) as f32,
            rope_theta: self.f64_or("rope_theta", 10_000.0) as f32,
            rope_style: RopeStyle::Halves,
            max_context: self.usize("max_position_embeddings").unwrap_or(4096),
            bos_id: self
                .0
                .get("bos_token_id")
                .and_then(|v| v.as_u64())
                .map(|v| v as u32),
            eos_ids: self.eos_ids(),
        })
    }
}

/// The tensors of a directory's `*.safetensors` files, taken out by name as f32.
struct DenseWeights(HashMap<String, Tensor>);

impl DenseWeights {
    fn load(dir: &Path) -> Result<Self> {
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(EngineError::model(format!(
                "no *.safetensors in {}",
                dir.display()
            )));
        }
        let mut w = HashMap::new();
        for f in &files {
            w.extend(candle_core::safetensors::load(f, &Device::Cpu)?);
        }
        Ok(DenseWeights(w))
    }

    fn take(&mut self, name: &str) -> Result<Tensor> {
        self.0
            .remove(name)
            .ok_or_else(|| EngineError::model(format!("safetensors lack `{name}`")))?
            .to_dtype(DType::F32)
            .map_err(Into::into)
    }

    /// Layer `i`'s matrices, norms and (Qwen2's) attention biases.
    fn layer(&mut self, i: usize) -> Result<Layer> {
        let p = format!("model.layers.{i}.");
        let mut lin = |n: &str| Linear::dense(self.take(&format!("{p}{n}.weight"))?);
        let (wq, wk, wv, wo) = (
            lin("self_attn.q_proj")?,
            lin("self_attn.k_proj")?,
            lin("self_attn.v_proj")?,
            lin("self_attn.o_proj")?,
        );
        let (w_gate, w_up, w_down) = (
            lin("mlp.gate_proj")?,
            lin("mlp.up_proj")?,
            lin("mlp.down_proj")?,
        );
        let mut bias = |n: &str| -> Result<Option<Vec<f32>>> {
            match self.take(&format!("{p}{n}.bias")) {
                Ok(t) => Ok(Some(t.to_vec1()?)),
                Err(_) => Ok(None),
            }
        };
        let (bq, bk, bv) = (
            bias("self_attn.q_proj")?,
            bias("self_attn.k_proj")?,
            bias("self_attn.v_proj")?,
        );
        Ok(Layer {
            attn_norm: self
                .take(&format!("{p}input_layernorm.weight"))?
                .to_vec1()?,
            ffn_norm: self
                .take(&format!("{p}post_attention_layernorm.weight"))?
                .to_vec1()?,
            wq,
            wk,
            wv,
            wo,
            w_gate,
            w_up,
            w_down,
            bq,
            bk,
            bv,
        })
    }
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// `elems` values of block type `T` at `start`, read into a zeroed `Vec<T>` in place.
pub(super) fn read_blocks<T, R>(
    reader: &mut R,
    start: u64,
    elems: usize,
    dims: Vec<usize>,
) -> std::result::Result<QTensor, String>
where
    T: candle_core::quantized::k_quants::GgmlType + Send + Sync + 'static,
    R: Read + Seek,
{
    if !elems.is_multiple_of(T::BLCK_SIZE) {
        return Err(format!(
            "{elems} values are not a whole number of {}-value blocks",
            T::BLCK_SIZE
        ));
    }
    let n = elems / T::BLCK_SIZE;
    let size = n * std::mem::size_of::<T>();
    let file_len = reader
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| e.to_string())?;
    if start.saturating_add(size as u64) > file_len {
        return Err(format!(
            "needs {size} bytes at offset {start}, the file has {file_len}"
        ));
    }
    let mut blocks = vec![T::zeros(); n];
    // SAFETY: the block types are plain `repr(C)` structs of f16 / u8 / i8 fields, for which
    // every byte pattern is valid; the buffer is initialised (zeroed) and exactly `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr() as *mut u8, size) };
    reader
        .seek(std::io::SeekFrom::Start(start))
        .and_then(|_| reader.read_exact(bytes))
        .map_err(|e| e.to_string())?;
    QTensor::new(
        candle_core::quantized::QStorage::Cpu(Box::new(blocks)),
        dims,
    )
    .map_err(|e| e.to_string())
}

/// Re-quantises a tensor of 32-value blocks `T` to Q8_0, a slice of blocks at a time (never the
/// whole tensor in f32): the same Q8_0 blocks as `QTensor::quantize(dequantize(qt))`, without
/// its 4-bytes-per-weight intermediate.
fn requantize_q8_0<T>(qt: &QTensor) -> std::result::Result<QTensor, String>
where
    T: candle_core::quantized::k_quants::GgmlType,
{
    use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
    if T::BLCK_SIZE != BlockQ8_0::BLCK_SIZE {
        return Err("block sizes differ".into());
    }
    let data = qt.data().map_err(|e| e.to_string())?;
    let size = std::mem::size_of::<T>();
    if !data.len().is_multiple_of(size)
        || !(data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        return Err("quantised weight of unexpected size".into());
    }
    // SAFETY: `data` is the storage of a `Vec<T>` (checked above for size and alignment); the
    // block types are plain `repr(C)` data.
    let src = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) };
    const CHUNK: usize = 1024;
    let q8_0_bytes = hlm_kernels::Format::Q8_0.block_bytes();
    if std::mem::size_of::<BlockQ8_0>() != q8_0_bytes {
        return Err("candle's Q8_0 block is not the file's 34 bytes".into());
    }
    let mut dst = vec![BlockQ8_0::zeros(); src.len()];
    let mut buf = vec![0f32; CHUNK * T::BLCK_SIZE];
    for (s, d) in src.chunks(CHUNK).zip(dst.chunks_mut(CHUNK)) {
        let f = &mut buf[..s.len() * T::BLCK_SIZE];
        T::to_float(s, f);
        // SAFETY: `BlockQ8_0` is a `repr(C)` pair of an f16 and 32 i8 (34 bytes, checked
        // above), for which every byte pattern is valid.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(d.as_mut_ptr() as *mut u8, d.len() * q8_0_bytes)
        };
        // candle's `BlockQ8_0::from_float`, to the bit, without a library call per value.
        hlm_kernels::quantize_row_q8_0(f, bytes).map_err(|e| e.to_string())?;
    }
    QTensor::new(
        candle_core::quantized::QStorage::Cpu(Box::new(dst)),
        qt.shape().clone(),
    )
    .map_err(|e| e.to_string())
}

/// Reads tensors of one GGUF by name.
struct GgufTensors<'a, R> {
    content: &'a gguf_file::Content,
    reader: &'a mut R,
    requantize_q5: bool,
}

impl<R: Read + Seek> GgufTensors<'_, R> {
    /// Reads one tensor. Block formats are read straight into their final buffer (candle's own
    /// reader holds the bytes twice: a raw copy, then the blocks), which halves the peak memory
    /// of loading a large tensor; other formats go through candle.
    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        let err = |e: &dyn std::fmt::Display| EngineError::model(format!("tensor `{name}`: {e}"));
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| err(&"missing from the file"))?;
        let start = self.content.tensor_data_offset.saturating_add(info.offset);
        let dims = info.shape.dims().to_vec();
        let elems = info.shape.elem_count();
        use candle_core::quantized::k_quants::*;
        let direct = match info.ggml_dtype {
            GgmlDType::Q4_0 => read_blocks::<BlockQ4_0, R>(self.reader, start, elems, dims),
            GgmlDType::Q4_1 => read_blocks::<BlockQ4_1, R>(self.reader, start, elems, dims),
            GgmlDType::Q5_0 => read_blocks::<BlockQ5_0, R>(self.reader, start, elems, dims),
            GgmlDType::Q5_1 => read_blocks::<BlockQ5_1, R>(self.reader, start, elems, dims),
            GgmlDType::Q8_0 => read_blocks::<BlockQ8_0, R>(self.reader, start, elems, dims),
            GgmlDType::Q2K => read_blocks::<BlockQ2K, R>(self.reader, start, elems, dims),
            GgmlDType::Q3K => read_blocks::<BlockQ3K, R>(self.reader, start, elems, dims),
            GgmlDType::Q4K => read_blocks::<BlockQ4K, R>(self.reader, start, elems, dims),
            GgmlDType::Q5K => read_blocks::<BlockQ5K, R>(self.reader, start, elems, dims),
            GgmlDType::Q6K => read_blocks::<BlockQ6K, R>(self.reader, start, elems, dims),
            _ => {
                return self
                    .content
                    .tensor(self.reader, name, &Device::Cpu)
                    .map_err(|e| err(&e))
            }
        };
        direct.map_err(|e| err(&e))
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        use candle_core::quantized::k_quants::{BlockQ5_0, BlockQ5_1};
        let mut qt = self.tensor(name)?;
        if self.requantize_q5 {
            let err = |e: String| EngineError::model(format!("tensor `{name}`: {e}"));
            match qt.dtype() {
                GgmlDType::Q5_0 => qt = requantize_q8_0::<BlockQ5_0>(&qt).map_err(err)?,
                GgmlDType::Q5_1 => qt = requantize_q8_0::<BlockQ5_1>(&qt).map_err(err)?,
                _ => {}
            }
        }
        Linear::quantized(Arc::new(qt))
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        Ok(t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?)
    }

    fn optional_vector(&mut self, name: &str) -> Result<Option<Vec<f32>>> {
        if self.content.tensor_infos.contains_key(name) {
            self.vector(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Block `i`'s matrices, norms and (Qwen2's) attention biases.
    fn layer(&mut self, i: usize) -> Result<Layer> {
        let p = format!("blk.{i}.");
        Ok(Layer {
            wq: self.linear(&format!("{p}attn_q.weight"))?,
            wk: self.linear(&format!("{p}attn_k.weight"))?,
            wv: self.linear(&format!("{p}attn_v.weight"))?,
            wo: self.linear(&format!("{p}attn_output.weight"))?,
            w_gate: self.linear(&format!("{p}ffn_gate.weight"))?,
            w_up: self.linear(&format!("{p}ffn_up.weight"))?,
            w_down: self.linear(&format!("{p}ffn_down.weight"))?,
            attn_norm: self.vector(&format!("{p}attn_norm.weight"))?,
            ffn_norm: self.vector(&format!("{p}ffn_norm.weight"))?,
            bq: self.optional_vector(&format!("{p}attn_q.bias"))?,
            bk: self.optional_vector(&format!("{p}attn_k.bias"))?,
            bv: self.optional_vector(&format!("{p}attn_v.bias"))?,
        })
    }
}

fn meta<'a>(md: &'a HashMap<String, gguf_file::Value>, k: &str) -> Result<&'a gguf_file::Value> {
    md.get(k)
        .ok_or_else(|| EngineError::model(format!("GGUF metadata lacks `{k}`")))
}

pub(crate) fn meta_usize(md: &HashMap<String, gguf_file::Value>, k: &str) -> Result<usize> {
    let v = meta(md, k)?;
    let n = crate::tokenizer::int(v)
        .ok_or_else(|| EngineError::model(format!("GGUF `{k}` is not an integer: {v:?}")))?;
    usize::try_from(n).map_err(|_| EngineError::model(format!("GGUF `{k}` out of range: {n}")))
}

fn meta_f32(md: &HashMap<String, gguf_file::Value>, k: &str) -> Result<f32> {
    use gguf_file::Value as V;
    match meta(md, k)? {
        V::F32(x) => Ok(*x),
        V::F64(x) => Ok(*x as f32),
        other => Err(EngineError::model(format!(
            "GGUF `{k}` is not a float: {other:?}"
        ))),
    }
}

fn meta_str(md: &HashMap<String, gguf_file::Value>, k: &str) -> Result<String> {
    match meta(md, k)? {
        gguf_file::Value::String(s) => Ok(s.clone()),
        other => Err(EngineError::model(format!(
            "GGUF `{k}` is not a string: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Block-by-block re-quantisation gives exactly the blocks of the whole-tensor route.
    #[test]
    fn requantize_in_slices_equals_dequantize_then_quantize() {
        let (n, k) = (70, 96); // 70 × 3 blocks of 32: not a multiple of the 1,024-block slices
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 37.0)
            .collect();
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q5_0, GgmlDType::Q5_1] {
            let q5 = QTensor::quantize(&w, dtype).unwrap();
            let whole =
                QTensor::quantize(&q5.dequantize(&Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
            let sliced = match dtype {
                GgmlDType::Q5_0 => {
                    requantize_q8_0::<candle_core::quantized::k_quants::BlockQ5_0>(&q5)
                }
                _ => requantize_q8_0::<candle_core::quantized::k_quants::BlockQ5_1>(&q5),
            }
            .unwrap();
            assert_eq!(sliced.dtype(), GgmlDType::Q8_0);
            assert_eq!(sliced.shape(), whole.shape());
            assert_eq!(sliced.data().unwrap(), whole.data().unwrap(), "{dtype:?}");
        }
    }
}
