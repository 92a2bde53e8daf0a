//! Tiny random models for tests (feature `testing`): safetensors + `config.json` + a word-level
//! `tokenizer.json`, written to a temporary directory. They exercise every code path quickly; the
//! evidence that the system works comes from the real-weight tests.

use crate::decode::Drafter;
use crate::link::{LocalLink, VerifierLink};
use crate::model::{LoadOptions, Model};
use crate::verifier::VerifierSession;
use crate::EngineError;
use candle_core::{DType, Device, Tensor};
use rand::Rng as _;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub const VOCAB: usize = 97;

/// Writes a random Qwen2-style model (biases on q/k/v) with `seed` into `dir`.
pub fn write_tiny_model(dir: &Path, seed: u64, arch: &str) {
    let (hidden, heads, kv, layers, ffn) = (64usize, 4usize, 2usize, 2usize, 128usize);
    let hd = hidden / heads;
    let dev = Device::Cpu;
    let mut rng = hlm_core::seeded_rng(seed);
    let mut w: HashMap<String, Tensor> = HashMap::new();
    // Uniform in [-scale·√3, scale·√3): unit variance times `scale`.
    let mut rnd = |w: &mut HashMap<String, Tensor>, name: String, shape: &[usize], scale: f64| {
        let n: usize = shape.iter().product();
        let a = (scale * 3f64.sqrt()) as f32;
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * a)
            .collect();
        w.insert(
            name,
            Tensor::from_vec(v, shape, &dev).expect("tiny test model"),
        );
    };
    rnd(
        &mut w,
        "model.embed_tokens.weight".into(),
        &[VOCAB, hidden],
        1.0,
    );
    for i in 0..layers {
        let p = format!("model.layers.{i}.");
        rnd(
            &mut w,
            format!("{p}self_attn.q_proj.weight"),
            &[heads * hd, hidden],
            0.3,
        );
        rnd(
            &mut w,
            format!("{p}self_attn.k_proj.weight"),
            &[kv * hd, hidden],
            0.3,
        );
        rnd(
            &mut w,
            format!("{p}self_attn.v_proj.weight"),
            &[kv * hd, hidden],
            0.3,
        );
        if arch == "qwen2" {
            rnd(
                &mut w,
                format!("{p}self_attn.q_proj.bias"),
                &[heads * hd],
                0.1,
            );
            rnd(&mut w, format!("{p}self_attn.k_proj.bias"), &[kv * hd], 0.1);
            rnd(&mut w, format!("{p}self_attn.v_proj.bias"), &[kv * hd], 0.1);
        }
        rnd(
            &mut w,
            format!("{p}self_attn.o_proj.weight"),
            &[hidden, heads * hd],
            0.1,
        );
        rnd(
            &mut w,
            format!("{p}mlp.gate_proj.weight"),
            &[ffn, hidden],
            0.1,
        );
        rnd(
            &mut w,
            format!("{p}mlp.up_proj.weight"),
            &[ffn, hidden],
            0.1,
        );
        rnd(
            &mut w,
            format!("{p}mlp.down_proj.weight"),
            &[hidden, ffn],
            0.1,
        );
        w.insert(
            format!("{p}input_layernorm.weight"),
            Tensor::ones(hidden, DType::F32, &dev).expect("tiny test model"),
        );
        w.insert(
            format!("{p}post_attention_layernorm.weight"),
            Tensor::ones(hidden, DType::F32, &dev).expect("tiny test model"),
        );
    }
    w.insert(
        "model.norm.weight".into(),
        Tensor::ones(hidden, DType::F32, &dev).expect("tiny test model"),
    );
    std::fs::create_dir_all(dir).expect("tiny test model");
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).expect("tiny test model");
    let cfg = serde_json::json!({
        "model_type": arch, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": ffn,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 512,
        "eos_token_id": 0, "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).expect("tiny test model");
    std::fs::write(dir.join("tokenizer.json"), word_tokenizer_json()).expect("tiny test model");
}

/// A word-level tokenizer over "t0" .. "t96" (t0 doubles as end of sequence).
pub fn word_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..VOCAB)
        .map(|i| (format!("t{i}"), serde_json::json!(i)))
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t1"}
    })
    .to_string()
}

pub fn tiny_model(seed: u64) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().expect("tiny test model");
    write_tiny_model(dir.path(), seed, "qwen2");
    let m = Model::from_safetensors(dir.path(), &LoadOptions::default()).expect("tiny test model");
    (dir, m)
}

pub fn tiny_drafter(seed: u64) -> (tempfile::TempDir, Drafter) {
    let dir = tempfile::tempdir().expect("tiny test model");
    write_tiny_model(dir.path(), seed, "qwen2");
    let (m, tok) = crate::load_model_and_tokenizer(dir.path(), &LoadOptions::default())
        .expect("tiny test model");
    (dir, Drafter::new(Arc::new(m), tok))
}

pub use crate::link::block_on;

/// A verifier in the same process whose connection dies at chosen frames and comes back, on
/// [`VerifierLink::reconnect`], as a fresh session: a verifier restart, for tests of recovery.
pub struct FlakyLink {
    model: Arc<Model>,
    vocab: hlm_protocol::VocabInfo,
    inner: LocalLink,
    /// Frames sent so far (all of them, across connections).
    pub sent: usize,
    /// Frame numbers (0-based, counting every frame sent) at which the connection dies. An even
    /// one is lost on the way; an odd one reaches the verifier and its reply is lost.
    pub drop_at: Vec<usize>,
    down: bool,
    pub reconnects: usize,
}

impl FlakyLink {
    pub fn new(model: Arc<Model>, vocab: hlm_protocol::VocabInfo, drop_at: Vec<usize>) -> Self {
        let inner = Self::fresh(&model, &vocab);
        Self {
            model,
            vocab,
            inner,
            sent: 0,
            drop_at,
            down: false,
            reconnects: 0,
        }
    }

    fn fresh(model: &Arc<Model>, vocab: &hlm_protocol::VocabInfo) -> LocalLink {
        LocalLink::new(VerifierSession::new(
            model.clone(),
            vocab.clone(),
            "flaky",
            4096,
        ))
    }
}

impl VerifierLink for FlakyLink {
    async fn send(&mut self, frame: Vec<u8>) -> crate::Result<()> {
        if self.down {
            return Err(EngineError::Link("connection reset (test)".into()));
        }
        let n = self.sent;
        self.sent += 1;
        if self.drop_at.contains(&n) {
            self.down = true;
            if n % 2 == 1 {
                let _ = self.inner.send(frame).await; // handled, but the reply never arrives
            }
            return Ok(());
        }
        self.inner.send(frame).await
    }

    async fn recv(&mut self) -> crate::Result<Vec<u8>> {
        if self.down {
            return Err(EngineError::Link("connection reset (test)".into()));
        }
        self.inner.recv().await
    }

    async fn reconnect(&mut self) -> crate::Result<()> {
        self.inner = Self::fresh(&self.model, &self.vocab);
        self.down = false;
        self.reconnects += 1;
        Ok(())
    }
}
