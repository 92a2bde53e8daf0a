//! Tiny random models for tests (feature `testing`): safetensors + `config.json` + a word-level
//! `tokenizer.json`, written to a temporary directory. They exercise every code path quickly; the
//! evidence that the system works comes from the real-weight tests.

use crate::decode::Drafter;
use crate::link::{LocalLink, VerifierLink};
use crate::model::{LoadOptions, Model};
use crate::verifier::{Input, VerifierSession};
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

/// A verifier in the same process whose replies the loop only sees when it waits for them
/// ([`VerifierLink::recv`]), as if each verdict took a while to arrive: a pipelined loop drafts
/// ahead to its full depth on every round.
pub struct SlowLink(pub LocalLink);

impl VerifierLink for SlowLink {
    async fn send(&mut self, frame: Vec<u8>) -> crate::Result<()> {
        self.0.send(frame).await
    }

    async fn recv(&mut self) -> crate::Result<Vec<u8>> {
        self.0.recv().await
    }
}

/// A client that drives a verifier session with random rounds and follows its verdicts: a
/// prompt, then rounds of drafted tokens (every second one, and the last, uploaded), each round
/// opening with the previous correction. For tests that compare two ways of serving the same
/// sessions: equal verdicts keep two runs of the same script in step.
pub struct ScriptedClient {
    rng: hlm_core::Rng,
    vocab: hlm_protocol::VocabInfo,
    sampling: hlm_protocol::Sampling,
    committed: u32,
    opening: Option<u32>,
    round: u32,
    greeted: bool,
}

impl ScriptedClient {
    pub fn new(
        seed: u64,
        vocab: hlm_protocol::VocabInfo,
        sampling: hlm_protocol::Sampling,
    ) -> Self {
        Self {
            rng: hlm_core::seeded_rng(seed),
            vocab,
            sampling,
            committed: 0,
            opening: None,
            round: 0,
            greeted: false,
        }
    }

    /// `Hello` first, then one round per call.
    pub fn next_msg(&mut self) -> hlm_protocol::ClientMsg {
        use hlm_protocol::{BlockToken, ClientMsg, DraftDist, Round, Sampling};
        if !self.greeted {
            self.greeted = true;
            return ClientMsg::Hello {
                version: hlm_protocol::PROTOCOL_VERSION,
                client: "scripted".into(),
                vocab: self.vocab.clone(),
                sampling: self.sampling,
            };
        }
        let size = self.vocab.size;
        let mut tokens = Vec::new();
        if self.committed == 0 && self.opening.is_none() {
            for _ in 0..5 {
                let id = self.rng.random_range(0..size);
                tokens.push(BlockToken {
                    id,
                    verify: false,
                    dist: None,
                });
            }
        }
        if let Some(id) = self.opening.take() {
            tokens.push(BlockToken {
                id,
                verify: false,
                dist: None,
            });
        }
        let drafted = self.rng.random_range(1..6usize);
        for i in 0..drafted {
            let id = self.rng.random_range(0..size);
            let verify = i % 2 == 1 || i + 1 == drafted;
            let dist = match (verify, self.sampling) {
                (true, Sampling::Temperature { .. }) => Some(DraftDist::Exact {
                    vocab_size: size,
                    entries: vec![(id, 0.6), ((id + 1) % size, 0.4)],
                }),
                _ => None,
            };
            tokens.push(BlockToken { id, verify, dist });
        }
        let round = Round {
            round: self.round,
            base: self.committed,
            tokens,
        };
        self.round += 1;
        ClientMsg::Round(round)
    }

    /// Follows a reply: a verdict moves the committed position and names the next opening.
    pub fn on_reply(&mut self, msg: &hlm_protocol::ServerMsg) {
        if let hlm_protocol::ServerMsg::Verdict(v) = msg {
            self.committed += v.accepted;
            self.opening = v.correction;
        }
    }
}

/// A server message with its timing zeroed (`compute_us`), for comparing two runs.
pub fn without_timing(mut msg: hlm_protocol::ServerMsg) -> hlm_protocol::ServerMsg {
    match &mut msg {
        hlm_protocol::ServerMsg::Verdict(v) => v.compute_us = 0,
        hlm_protocol::ServerMsg::Generated(g) => g.compute_us = 0,
        _ => {}
    }
    msg
}

/// Serves `n` [`ScriptedClient`]s (seeds `seed ..`) for `steps` messages each, one message from
/// every client per step: `batched`, through one [`crate::verifier::answer_batch`] call per step,
/// else one session at a time. Returns every client's replies, timing zeroed.
pub fn serve_scripted(
    model: &Arc<Model>,
    vocab: &hlm_protocol::VocabInfo,
    sampling: hlm_protocol::Sampling,
    (n, steps, seed): (usize, usize, u64),
    batched: bool,
) -> Vec<Vec<hlm_protocol::ServerMsg>> {
    let mut sessions: Vec<VerifierSession> = (0..n)
        .map(|_| VerifierSession::new(model.clone(), vocab.clone(), "scripted", 512))
        .collect();
    let mut clients: Vec<ScriptedClient> = (0..n)
        .map(|i| ScriptedClient::new(seed + i as u64, vocab.clone(), sampling))
        .collect();
    let mut replies = vec![Vec::new(); n];
    for _ in 0..steps {
        let msgs: Vec<_> = clients.iter_mut().map(|c| c.next_msg()).collect();
        let answers = if batched {
            let mut refs: Vec<&mut VerifierSession> = sessions.iter_mut().collect();
            let inputs = msgs.into_iter().map(|m| Input::Message(Ok(m))).collect();
            crate::verifier::answer_batch(&mut refs, inputs)
        } else {
            let each = sessions.iter_mut().zip(msgs);
            each.map(|(s, m)| s.handle(m)).collect()
        };
        for (i, a) in answers.into_iter().enumerate() {
            let msg = match a {
                Ok(Some(msg)) => without_timing(msg),
                other => panic!("client {i}: every scripted message is answered, got {other:?}"),
            };
            clients[i].on_reply(&msg);
            replies[i].push(msg);
        }
    }
    replies
}
