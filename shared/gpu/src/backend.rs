//! [`GpuBackend`]: [`GpuModel`] as the engine's [`DraftBackend`], with the start-up self-check that
//! decides whether an adapter may run the draft model.
//!
//! Choosing a backend ([`choose`]): `cpu` never touches the GPU; `gpu` insists on it (an error
//! says why it cannot run); `auto` takes the GPU when a hardware adapter opens, the weights fit and
//! the self-check passes, and otherwise stays on the CPU with the reason in [`Choice::note`]. A
//! software adapter (lavapipe natively, a browser's fallback adapter) is slower than candle on the
//! same CPU, so `auto` passes it over; `gpu` still uses it (that is how CI tests this path).
//!
//! The self-check runs a few tokens through both the GPU and candle on the CPU and compares the
//! last position's logits: all finite, cosine similarity ≥ [`SELF_CHECK_MIN_COSINE`]. A correct
//! backend lands near 0.9999 (0.99989 measured on SmolLM2: it differs from candle only by candle's
//! 8-bit activation rounding); a miscompiled kernel or a driver bug lands far below.

use crate::{GpuContext, GpuError, GpuModel, GpuOptions, Result};
use hlm_engine::decode::{BackendFuture, DraftBackend, DraftStep, Drafter};
use hlm_engine::model::{KvCache, LogitRows, Model};
use std::str::FromStr;

/// Least cosine similarity between GPU and CPU logits the self-check accepts.
pub const SELF_CHECK_MIN_COSINE: f64 = 0.995;

/// Tokens the self-check runs (ids below the vocabulary size; any ids exercise every kernel).
const SELF_CHECK_TOKENS: usize = 4;

/// The draft model on a GPU, for [`Drafter::set_backend`].
pub struct GpuBackend {
    model: GpuModel,
    kind: &'static str,
    /// Set by the self-check when candle's batched per-token cost beats this adapter's single
    /// step (see [`DraftBackend::prefers_cpu_prefill`]).
    cpu_prefill: bool,
}

/// What the self-check measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfCheck {
    pub cosine: f64,
    pub max_abs_diff: f64,
    pub same_argmax: bool,
    /// One GPU step (submission and read-back), and candle's batched forward per token, in ms.
    pub gpu_ms_per_token: f64,
    pub cpu_ms_per_token: f64,
}

impl SelfCheck {
    /// Cosine at least [`SELF_CHECK_MIN_COSINE`] (a NaN, from non-finite logits, fails).
    pub fn passed(&self) -> bool {
        self.cosine >= SELF_CHECK_MIN_COSINE
    }
}

impl GpuBackend {
    /// Opens the preferred adapter and uploads `model`'s weights.
    pub async fn new(model: &Model, opts: GpuOptions) -> Result<Self> {
        Self::with_context(GpuContext::new().await?, model, opts)
    }

    /// Uploads `model`'s weights to an open device.
    pub fn with_context(ctx: GpuContext, model: &Model, opts: GpuOptions) -> Result<Self> {
        let kind = match ctx.adapter_info().backend {
            wgpu::Backend::BrowserWebGpu => "webgpu",
            wgpu::Backend::Vulkan => "wgpu-vulkan",
            wgpu::Backend::Metal => "wgpu-metal",
            wgpu::Backend::Dx12 => "wgpu-dx12",
            wgpu::Backend::Gl => "wgpu-gl",
            _ => "wgpu",
        };
        Ok(Self {
            model: GpuModel::new(ctx, model, opts)?,
            kind,
            cpu_prefill: false,
        })
    }

    pub fn model(&self) -> &GpuModel {
        &self.model
    }

    /// Overrides the self-check's choice of where prompts run (true: on the CPU, then imported).
    pub fn set_cpu_prefill(&mut self, on: bool) {
        self.cpu_prefill = on;
    }

    pub fn model_mut(&mut self) -> &mut GpuModel {
        &mut self.model
    }

    /// Runs [`SELF_CHECK_TOKENS`] tokens on the GPU and on `cpu` (the same model, on candle) and
    /// compares the last logits; leaves the GPU cache empty. Fails if they disagree.
    pub async fn self_check(&mut self, cpu: &Model) -> Result<SelfCheck> {
        let vocab = cpu.config().vocab_size as u32;
        let ids: Vec<u32> = (0..SELF_CHECK_TOKENS as u32)
            .map(|i| (1 + i * 7919) % vocab)
            .collect();
        let mut cache = cpu.new_cache();
        let t = web_time::Instant::now();
        let want = cpu
            .forward(&mut cache, &ids, &LogitRows::Last, 0)
            .map_err(|e| GpuError::Model(format!("self-check on the CPU: {e}")))?;
        let cpu_ms = t.elapsed().as_secs_f64() * 1e3 / ids.len() as f64;
        let want = want.last_logits().unwrap_or_default().to_vec();
        self.model.truncate(0);
        // The first step pays for pipeline creation in some drivers: timed from the second on.
        let mut got = self.model.forward(ids[0], 0).await?.logits;
        let t = web_time::Instant::now();
        for &id in &ids[1..] {
            got = self.model.forward(id, 0).await?.logits;
        }
        let gpu_ms = t.elapsed().as_secs_f64() * 1e3 / (ids.len() - 1) as f64;
        self.model.truncate(0);
        let mut check = compare(&got, &want);
        check.gpu_ms_per_token = gpu_ms;
        check.cpu_ms_per_token = cpu_ms;
        self.cpu_prefill = cpu_ms < gpu_ms;
        if !check.passed() {
            return Err(GpuError::Model(format!(
                "self-check failed on {}: logits cosine {:.6} against the CPU (needs ≥ {}), max |Δ| {:.3}",
                self.model.context().describe(),
                check.cosine,
                SELF_CHECK_MIN_COSINE,
                check.max_abs_diff
            )));
        }
        Ok(check)
    }
}

/// Cosine, largest difference and argmax agreement of two logit vectors (non-finite values make
/// the cosine NaN, which fails the check).
fn compare(got: &[f32], want: &[f32]) -> SelfCheck {
    if got.len() != want.len() || got.is_empty() {
        return SelfCheck {
            cosine: f64::NAN,
            max_abs_diff: f64::INFINITY,
            same_argmax: false,
            gpu_ms_per_token: 0.0,
            cpu_ms_per_token: 0.0,
        };
    }
    let (mut dot, mut ng, mut nw, mut max) = (0f64, 0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        dot += g * w;
        ng += g * g;
        nw += w * w;
        max = f64::max(max, (g - w).abs());
    }
    if got.iter().any(|v| !v.is_finite()) {
        max = f64::NAN;
    }
    SelfCheck {
        cosine: dot / (ng.sqrt() * nw.sqrt()),
        max_abs_diff: max,
        same_argmax: hlm_core::argmax(got) == hlm_core::argmax(want),
        gpu_ms_per_token: 0.0,
        cpu_ms_per_token: 0.0,
    }
}

impl DraftBackend for GpuBackend {
    fn describe(&self) -> String {
        format!("{}: {}", self.kind, self.model.context().describe())
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn len(&self) -> usize {
        self.model.len()
    }

    fn truncate(&mut self, len: usize) {
        self.model.truncate(len);
    }

    fn prefers_cpu_prefill(&self) -> bool {
        self.cpu_prefill
    }

    fn import_cache(&mut self, cache: &KvCache) -> std::result::Result<(), String> {
        let layers: Vec<(&[f32], &[f32])> = (0..self.model.config().layers)
            .map(|l| {
                cache
                    .layer_kv(l)
                    .ok_or_else(|| format!("no layer {l} in the cache"))
            })
            .collect::<std::result::Result<_, _>>()?;
        self.model
            .import_cache(&layers, cache.len())
            .map_err(|e| e.to_string())
    }

    /// One submission per id (the kernels decode one position at a time); only the last one reads
    /// anything back, so a prompt costs one wait.
    fn feed<'a>(
        &'a mut self,
        ids: &'a [u32],
        attention_layers: usize,
    ) -> BackendFuture<'a, std::result::Result<DraftStep, String>> {
        Box::pin(async move {
            let (&last, before) = ids
                .split_last()
                .ok_or_else(|| "feed called with no tokens".to_string())?;
            for &id in before {
                self.model.advance(id).map_err(|e| e.to_string())?;
            }
            let out = self
                .model
                .forward(last, attention_layers)
                .await
                .map_err(|e| e.to_string())?;
            Ok((out.logits, out.attention))
        })
    }
}

/// Where the caller wants the draft model to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    /// The GPU if it opens and passes the self-check, else the CPU.
    #[default]
    Auto,
    /// The GPU or an error.
    Gpu,
    /// candle on the CPU.
    Cpu,
}

impl FromStr for Preference {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "gpu" | "webgpu" | "wgpu" => Ok(Self::Gpu),
            "cpu" | "wasm" | "wasm-simd" => Ok(Self::Cpu),
            other => Err(format!(
                "unknown draft backend `{other}` (auto, gpu / webgpu, cpu / wasm)"
            )),
        }
    }
}

/// The outcome of [`choose`].
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// [`Drafter::backend_kind`] after the choice.
    pub kind: &'static str,
    /// [`Drafter::backend_description`] after the choice.
    pub description: String,
    /// Why `auto` stayed on the CPU, or the self-check's figures.
    pub note: String,
    pub self_check: Option<SelfCheck>,
    /// The device the backend runs on (a handle: `destroy()` on it acts like a driver reset, which
    /// is how the browser client lets an app test its fallback).
    pub device: Option<wgpu::Device>,
}

/// Attaches a [`GpuBackend`] to `drafter` as `pref` says. Errors only for [`Preference::Gpu`].
pub async fn choose(drafter: &mut Drafter, pref: Preference, opts: GpuOptions) -> Result<Choice> {
    if pref == Preference::Cpu {
        drafter.take_backend();
        return Ok(choice(drafter, "the CPU path was asked for".into(), None));
    }
    let attempt = async {
        let ctx = GpuContext::new().await?;
        if pref == Preference::Auto && ctx.adapter_info().device_type == wgpu::DeviceType::Cpu {
            return Err(GpuError::SoftwareAdapter(ctx.describe()));
        }
        let mut b = GpuBackend::with_context(ctx, drafter.model(), opts)?;
        let check = b.self_check(drafter.model()).await?;
        Ok::<_, GpuError>((b, check))
    }
    .await;
    match attempt {
        Ok((b, check)) => {
            let device = b.model().context().device.clone();
            drafter.set_backend(Box::new(b));
            let note = format!(
                "self-check passed: logits cosine {:.6}, max |Δ| {:.3} against the CPU; \
                 {:.1} ms per step (CPU {:.1} ms per prompt token{})",
                check.cosine,
                check.max_abs_diff,
                check.gpu_ms_per_token,
                check.cpu_ms_per_token,
                if check.cpu_ms_per_token < check.gpu_ms_per_token {
                    ": prompts are run on the CPU"
                } else {
                    ""
                }
            );
            let mut c = choice(drafter, note, Some(check));
            c.device = Some(device);
            Ok(c)
        }
        Err(e) if pref == Preference::Auto => {
            drafter.take_backend();
            Ok(choice(drafter, format!("GPU not used: {e}"), None))
        }
        Err(e) => Err(e),
    }
}

fn choice(drafter: &Drafter, note: String, self_check: Option<SelfCheck>) -> Choice {
    Choice {
        kind: drafter.backend_kind(),
        description: drafter.backend_description(),
        note,
        self_check,
        device: None,
    }
}

/// [`choose`], blocking (native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn choose_blocking(
    drafter: &mut Drafter,
    pref: Preference,
    opts: GpuOptions,
) -> Result<Choice> {
    pollster::block_on(choose(drafter, pref, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_garbage_and_accepts_rounding() {
        let want: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 5.0)
            .collect();
        let close: Vec<f32> = want.iter().map(|w| w + 0.01).collect();
        let c = compare(&close, &want);
        assert!(c.cosine > 0.9999 && c.same_argmax, "{c:?}");
        let garbage: Vec<f32> = want.iter().rev().copied().collect();
        assert!(!compare(&garbage, &want).passed());
        let mut nan = want.clone();
        nan[3] = f32::NAN;
        assert!(!compare(&nan, &want).passed());
        assert!(compare(&want[..10], &want).cosine.is_nan());
    }

    #[test]
    fn preferences_parse_with_their_browser_names() {
        assert_eq!("webgpu".parse::<Preference>(), Ok(Preference::Gpu));
        assert_eq!("wasm".parse::<Preference>(), Ok(Preference::Cpu));
        assert_eq!("auto".parse::<Preference>(), Ok(Preference::Auto));
        assert!("tpu".parse::<Preference>().unwrap_err().contains("unknown"));
    }
}
