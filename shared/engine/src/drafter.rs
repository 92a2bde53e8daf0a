//! The client's model: [`Drafter`] holds the draft transformer, its tokenizer and where its forward
//! pass runs.
//!
//! The forward pass runs on candle on the CPU (natively with SIMD and threads, in the browser as
//! WASM SIMD) unless a [`DraftBackend`] is attached: a GPU implementation (crate `hlm-gpu`:
//! Vulkan natively, WebGPU in the browser). The CPU model stays loaded as the fallback: if the
//! attached backend fails (a lost device, a driver error), the drafter re-runs the ids the backend
//! had seen on the CPU, drops the backend, records a notice the decoding loop reports with the next
//! token, and the generation goes on with the same cache contents.

use crate::decode::vocab_info;
use crate::model::{KvCache, LogitRows, Model};
use crate::{EngineError, Result};
use hlm_protocol::VocabInfo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokenizers::Tokenizer;

/// What one feed returns: the logits of the last fed position, and (if asked) its attention row
/// over positions `0 ..= pos`, averaged over heads and the last `attention_layers` layers.
pub type DraftStep = (Vec<f32>, Option<Vec<f32>>);

/// `Send + Sync` natively (the CLI and the harness move drafters across threads); nothing in the
/// browser, where the WebGPU handles are tied to their thread.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync + ?Sized> MaybeSend for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// The future a [`DraftBackend`] returns (`Send` natively).
#[cfg(not(target_arch = "wasm32"))]
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
#[cfg(target_arch = "wasm32")]
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A place other than candle-on-the-CPU where the draft model's forward pass runs, with its own
/// KV cache. It must compute what [`Model::forward`] computes (same logits up to rounding, same
/// attention row); `hlm-gpu` tests its implementation against the CPU model.
pub trait DraftBackend: MaybeSend {
    /// What runs, for logs and the page: `"webgpu: SwiftShader Device (Subzero)"`.
    fn describe(&self) -> String;
    /// Short name: `"webgpu"`, `"wgpu-vulkan"` ...
    fn kind(&self) -> &'static str;
    /// Positions in its cache.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Rolls the cache back to its first `len` positions.
    fn truncate(&mut self, len: usize);
    /// Whether a prompt should be run through candle on the CPU in one batched forward and its
    /// keys and values imported ([`DraftBackend::import_cache`]) rather than fed here one position
    /// at a time: true where this backend's single-token step is slower than the CPU's batched
    /// per-token cost (software adapters). Default: false.
    fn prefers_cpu_prefill(&self) -> bool {
        false
    }
    /// Replaces the cache with `cache`'s positions (computed by the same model on the CPU).
    /// Default: unsupported.
    fn import_cache(&mut self, cache: &KvCache) -> std::result::Result<(), String> {
        let _ = cache;
        Err("this backend cannot import a cache".into())
    }
    /// Runs `ids` at the next positions; see [`DraftStep`]. An error means the backend is unusable
    /// from here on (the drafter falls back to the CPU).
    fn feed<'a>(
        &'a mut self,
        ids: &'a [u32],
        attention_layers: usize,
    ) -> BackendFuture<'a, std::result::Result<DraftStep, String>>;
}

/// The client's model: the draft transformer with its cache, the tokenizer, and optionally a
/// [`DraftBackend`] that runs the forward pass instead of the CPU.
pub struct Drafter {
    model: Arc<Model>,
    cache: KvCache,
    tokenizer: Tokenizer,
    backend: Option<Box<dyn DraftBackend>>,
    /// The ids in the cache (the backend's while one is attached): what the CPU must re-run to take
    /// over from a failed backend.
    fed: Vec<u32>,
    /// Messages for the user (a backend that failed), taken by the decoding loop.
    notices: Vec<String>,
}

impl Drafter {
    pub fn new(model: Arc<Model>, tokenizer: Tokenizer) -> Self {
        let cache = model.new_cache();
        Self {
            model,
            cache,
            tokenizer,
            backend: None,
            fed: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Runs the forward pass on `backend` from now on (the cache starts empty).
    pub fn set_backend(&mut self, backend: Box<dyn DraftBackend>) {
        self.backend = Some(backend);
        self.clear();
    }

    /// Back to the CPU path; returns the backend that was attached.
    pub fn take_backend(&mut self) -> Option<Box<dyn DraftBackend>> {
        let b = self.backend.take();
        self.clear();
        b
    }

    /// Short name of where the forward pass runs: the backend's [`DraftBackend::kind`] or `"cpu"`.
    pub fn backend_kind(&self) -> &'static str {
        self.backend.as_ref().map_or("cpu", |b| b.kind())
    }

    /// One line on where the forward pass runs.
    pub fn backend_description(&self) -> String {
        self.backend
            .as_ref()
            .map_or_else(|| "cpu: candle".to_string(), |b| b.describe())
    }

    /// Messages for the user since the last call (a failed backend and the fallback).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn model_arc(&self) -> Arc<Model> {
        self.model.clone()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// The vocabulary's identity for the handshake.
    pub fn vocab_info(&self) -> VocabInfo {
        vocab_info(&self.tokenizer, self.model.config())
    }

    /// Empties the cache.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Rolls the cache back to its first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.fed.truncate(len);
        match &mut self.backend {
            Some(b) => b.truncate(len),
            None => self.cache.truncate(len),
        }
    }

    /// Runs `ids` at the next positions; see [`DraftStep`].
    pub async fn feed(&mut self, ids: &[u32], attention_layers: usize) -> Result<DraftStep> {
        if let Some(b) = &mut self.backend {
            let done = Self::backend_feed(
                b.as_mut(),
                &self.model,
                &mut self.cache,
                ids,
                attention_layers,
            )
            .await;
            match done {
                Ok(step) => {
                    self.fed.extend_from_slice(ids);
                    return Ok(step);
                }
                Err(e) => {
                    let from = b.describe();
                    self.backend = None;
                    self.notices.push(format!(
                        "draft backend {from} failed ({e}); continuing on the CPU"
                    ));
                    // The CPU cache is empty while a backend runs: give it what the backend held.
                    self.cache.clear();
                    let mut all = std::mem::take(&mut self.fed);
                    all.extend_from_slice(ids);
                    let step = self.cpu_feed(&all, attention_layers)?;
                    self.fed = all;
                    return Ok(step);
                }
            }
        }
        let step = self.cpu_feed(ids, attention_layers)?;
        self.fed.extend_from_slice(ids);
        Ok(step)
    }

    /// Feeds `ids` to `backend`; a prompt (more than one id on an empty cache) goes through
    /// `model` on the CPU first when the backend prefers it, all but its last id in one batched
    /// forward whose keys and values the backend imports.
    async fn backend_feed(
        backend: &mut dyn DraftBackend,
        model: &Model,
        scratch: &mut KvCache,
        ids: &[u32],
        attention_layers: usize,
    ) -> std::result::Result<DraftStep, String> {
        if ids.len() > 1 && backend.is_empty() && backend.prefers_cpu_prefill() {
            let (&last, before) = ids.split_last().unwrap_or((&0, &[]));
            scratch.clear();
            model
                .forward(scratch, before, &LogitRows::None, 0)
                .map_err(|e| format!("prefill on the CPU: {e}"))?;
            let imported = backend.import_cache(scratch);
            scratch.clear();
            imported?;
            return backend
                .feed(std::slice::from_ref(&last), attention_layers)
                .await;
        }
        backend.feed(ids, attention_layers).await
    }

    fn cpu_feed(&mut self, ids: &[u32], attention_layers: usize) -> Result<DraftStep> {
        let out = self
            .model
            .forward(&mut self.cache, ids, &LogitRows::Last, attention_layers)?;
        let logits = out.logits.into_iter().next_back().map(|(_, l)| l);
        Ok((logits.unwrap_or_default(), out.attention))
    }
}
