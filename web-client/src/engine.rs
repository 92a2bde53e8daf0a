//! The `Engine` class JavaScript sees. One engine holds one draft model (and its tokenizer) and
//! at most one verifier session; one generation runs at a time.
//!
//! ```js
//! const engine = Engine.load(ggufBytes, "qwen2.5-coder-0.5b-instruct-q4_k_m");
//! await engine.connect("ws://host/ws", token, "my-app");
//! const summary = await engine.generate(prompt, { max_tokens: 64, mode: "uncertainty" }, ev => …);
//! engine.abort(); // from a message handler while generate runs
//! ```
//!
//! Events, the summary, the model information and the welcome are [`crate::api`]'s types, as
//! objects; a rejection is an `Error` whose `code` is an [`ErrorCode`].

use crate::api::{
    json_name, Backend, DraftBackend, ErrorCode, LoadMemory, ModelInfo, PageError, Summary,
    TokenEvent, VerifierWelcome,
};
use crate::link::{js_text, BrowserLink};
use crate::reader::JsReader;
use candle_core::quantized::gguf_file;
use hlm_core::energy::Constants;
use hlm_engine::decode::{Drafter, GenerationOptions, HybridSession};
use hlm_engine::model::LoadOptions;
use hlm_engine::EngineError;
use js_sys::{Function, Promise, Uint8Array};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

struct Inner {
    /// Taken out while a generation runs.
    drafter: RefCell<Option<Drafter>>,
    session: RefCell<Option<HybridSession<BrowserLink>>>,
    abort: Cell<bool>,
    info: RefCell<ModelInfo>,
    /// The WebGPU device while the draft model runs there ([`Engine::simulate_gpu_loss`]).
    gpu_device: RefCell<Option<hlm_gpu::wgpu::Device>>,
}

impl Inner {
    /// [`Engine::info`]'s `backend`, `backend_description` and `backend_note` for the backend of
    /// kind `kind` ([`Drafter::backend_kind`]; `description` is used for a GPU).
    fn set_backend_info(&self, kind: &str, description: &str, note: &str) {
        let mut info = self.info.borrow_mut();
        info.backend = DraftBackend::of_kind(kind);
        info.backend_description = if kind == "cpu" {
            WASM_DESCRIPTION.into()
        } else {
            description.into()
        };
        info.backend_note = note.into();
    }

    /// [`Engine::info`] as an object, with the linear memory now.
    fn info_js(&self) -> JsValue {
        let mut info = self.info.borrow_mut();
        info.wasm_memory_bytes = wasm_memory_bytes();
        info.threads = cpu_threads();
        to_js(&*info)
    }

    /// The draft model, taken out for a generation or a change of backend.
    fn take_drafter(&self) -> Result<Drafter, JsValue> {
        self.drafter.borrow_mut().take().ok_or_else(busy)
    }
}

/// [`Engine::info`]'s `backend_description` on the CPU path.
const WASM_DESCRIPTION: &str = "WebAssembly SIMD128 (hlm-kernels products, candle for the rest)";

/// A JavaScript `Error` with the message, and the code under `code`.
fn js_error(e: PageError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    let code = JsValue::from_str(&json_name(e.code));
    let _ = js_sys::Reflect::set(&err, &JsValue::from_str("code"), &code);
    err.into()
}

fn busy() -> JsValue {
    js_error(PageError::new(
        ErrorCode::Busy,
        "busy: a generation is running",
    ))
}

fn engine_error(e: EngineError) -> JsValue {
    js_error(PageError::from_engine(&e))
}

fn load_failed(msg: String) -> JsValue {
    js_error(PageError::new(ErrorCode::LoadFailed, msg))
}

fn bad_option(msg: String) -> JsValue {
    js_error(PageError::new(ErrorCode::BadOption, msg))
}

fn to_js(v: &impl serde::Serialize) -> JsValue {
    serde_json::to_string(v)
        .ok()
        .and_then(|s| js_sys::JSON::parse(&s).ok())
        .unwrap_or(JsValue::NULL)
}

#[wasm_bindgen]
impl Engine {
    /// Builds the draft model and its tokenizer from a GGUF file's bytes. The array is read in
    /// place (never copied whole into wasm memory) and may be dropped afterwards.
    pub fn load(bytes: Uint8Array, name: String) -> Result<Engine, JsValue> {
        console_error_panic_hook::set_once();
        let mut reader = std::io::BufReader::with_capacity(1 << 16, JsReader::new(bytes));
        let at_start = wasm_memory_bytes();
        let mut content = gguf_file::Content::read(&mut reader)
            .map_err(|e| load_failed(format!("{name}: not a valid GGUF file: {e}")))?;
        let after_metadata = wasm_memory_bytes();
        let tokenizer = hlm_engine::tokenizer::tokenizer_from_gguf(&content)
            .map_err(|e| load_failed(format!("{name}: tokenizer: {e}")))?;
        // The model needs the token strings (to find end tokens) but not the merges or the token
        // types: freed here,
        // their memory is reused by the weights (wasm memory never shrinks).
        content.metadata.remove("tokenizer.ggml.merges");
        content.metadata.remove("tokenizer.ggml.token_type");
        let after_tokenizer = wasm_memory_bytes();
        let model = hlm_engine::model::Model::from_gguf(
            &content,
            &mut reader,
            &name,
            &LoadOptions::default(),
        )
        .map_err(|e| load_failed(format!("{name}: {e}")))?;
        drop(content);
        let cfg = model.config();
        let info = ModelInfo {
            vocab_size: cfg.vocab_size,
            layers: cfg.layers,
            weight_bytes: model.weight_bytes(),
            backend: DraftBackend::WasmSimd,
            backend_description: WASM_DESCRIPTION.into(),
            backend_note: String::new(),
            backend_preference: None,
            wasm_memory_bytes: wasm_memory_bytes(),
            threads: cpu_threads(),
            energy_constants: Constants::default_constants(),
            // Linear memory at each loading stage (it only grows): where the bytes went.
            load_memory: LoadMemory {
                at_start,
                after_metadata,
                after_tokenizer,
                after_model: wasm_memory_bytes(),
            },
            name,
        };
        Ok(Engine {
            inner: Rc::new(Inner {
                drafter: RefCell::new(Some(Drafter::new(std::sync::Arc::new(model), tokenizer))),
                session: RefCell::new(None),
                abort: Cell::new(false),
                info: RefCell::new(info),
                gpu_device: RefCell::new(None),
            }),
        })
    }

    /// `{ name, vocab_size, layers, weight_bytes, backend, wasm_memory_bytes }` (the module's
    /// linear memory now: it only grows).
    pub fn info(&self) -> JsValue {
        self.inner.info_js()
    }

    /// Chooses where the draft model runs and resolves with [`Engine::info`], whose `backend`
    /// (`"webgpu"` or `"wasm-simd"`) and `backend_note` say which runs and why:
    /// * `"auto"`: WebGPU if the browser has a hardware adapter, the weights fit its limits and a
    ///   start-up self-check against the CPU path passes; otherwise WASM SIMD;
    /// * `"webgpu"`: WebGPU on any adapter (a software one too) if it passes the self-check;
    ///   otherwise WASM SIMD, with the reason in `backend_note`;
    /// * `"wasm"`: WASM SIMD.
    ///
    /// If WebGPU fails later (a lost device), the running generation continues on WASM SIMD: its
    /// next token event carries a `notice`, and the summary's `draft_backend` says `"wasm-simd"`.
    pub fn use_backend(&self, preference: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let asked: Backend = serde_json::from_value(preference.into())
                .map_err(|e| bad_option(format!("backend: {e}")))?;
            let pref = match asked {
                Backend::Auto => hlm_gpu::Preference::Auto,
                Backend::Webgpu => hlm_gpu::Preference::Gpu,
                Backend::Wasm => hlm_gpu::Preference::Cpu,
            };
            let mut drafter = inner.take_drafter()?;
            let opts = hlm_gpu::GpuOptions::default();
            let choice = match hlm_gpu::choose(&mut drafter, pref, opts).await {
                Ok(c) => Ok(c),
                Err(e) => {
                    // Asked for WebGPU and it cannot run: WASM SIMD, saying why.
                    let cpu = hlm_gpu::choose(&mut drafter, hlm_gpu::Preference::Cpu, opts).await;
                    cpu.map(|mut c| {
                        c.note = format!("WebGPU unavailable: {e}");
                        c
                    })
                }
            };
            *inner.drafter.borrow_mut() = Some(drafter);
            let choice =
                choice.map_err(|e| js_error(PageError::new(ErrorCode::Error, e.to_string())))?;
            *inner.gpu_device.borrow_mut() = choice.device.clone();
            inner.set_backend_info(choice.kind, &choice.description, &choice.note);
            inner.info.borrow_mut().backend_preference = Some(asked);
            Ok(inner.info_js())
        })
    }

    /// Destroys the WebGPU device the draft model runs on, as a driver reset or a GPU process crash
    /// would (like WebGL's `WEBGL_lose_context.loseContext()`): the running or next generation
    /// then continues on WASM SIMD and says so in a token's `notice`. Returns false when the model
    /// is not on WebGPU. For testing an app's handling of the fallback.
    pub fn simulate_gpu_loss(&self) -> bool {
        match self.inner.gpu_device.borrow_mut().take() {
            Some(d) => {
                d.destroy();
                true
            }
            None => false,
        }
    }

    /// Opens a session with the verifier at `url` (handshake and vocabulary check). Rejects
    /// with code `unreachable`, `wrong-token`, `model-mismatch`, `overloaded` or
    /// `origin-not-allowed` ("verifier unreachable at …", "wrong token: …", …).
    pub fn connect(&self, url: String, token: Option<String>, client: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let (vocab, draft_name) = inner
                .drafter
                .borrow()
                .as_ref()
                .map(|d| (d.vocab_info(), d.model().name().to_string()))
                .ok_or_else(busy)?;
            let token = token.filter(|t| !t.is_empty());
            let link = BrowserLink::connect(&url, token.as_deref())
                .await
                .map_err(engine_error)?;
            let session = HybridSession::connect(link, vocab, &client)
                .await
                .map_err(engine_error)?;
            let welcome = VerifierWelcome {
                server: session.server.clone(),
                verifier_model: session.verifier_model.clone(),
                max_context: session.max_context,
                default_filter: hlm_engine::heads::default_filter(
                    &draft_name,
                    &session.verifier_model,
                ),
            };
            *inner.session.borrow_mut() = Some(session);
            Ok(to_js(&welcome))
        })
    }

    /// Generates after `prompt`; `on_event` is called with each final token's
    /// [`TokenEvent`]. Resolves with the [`Summary`]. `options`: `GenerationOptions` fields
    /// (camelCase, all optional), `chat` (default true: wrap the prompt in the ChatML template)
    /// and `energyConstants` (overrides of the shipped energy constants, shaped like them).
    pub fn generate(&self, prompt: String, options: JsValue, on_event: Function) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let (opts, chat, constants) = parse_options(&options).map_err(bad_option)?;
            let mut drafter = inner.take_drafter()?;
            let Some(mut session) = inner.session.borrow_mut().take() else {
                *inner.drafter.borrow_mut() = Some(drafter);
                let msg = "not connected to a verifier: call connect first";
                return Err(js_error(PageError::new(ErrorCode::NotConnected, msg)));
            };
            inner.abort.set(false);
            let text = if chat {
                hlm_engine::chat::chatml(&prompt, None)
            } else {
                prompt
            };
            let result = match drafter.encode(&text) {
                Ok(ids) => {
                    let cfg = opts.config();
                    let abort = &inner.abort;
                    session
                        .generate(&mut drafter, &ids, &cfg, &mut |ev| {
                            let js = to_js(&TokenEvent::new(ev, &constants));
                            let _ = on_event.call1(&JsValue::NULL, &js);
                            !abort.get()
                        })
                        .await
                }
                Err(e) => Err(e),
            };
            let (backend_kind, description) =
                (drafter.backend_kind(), drafter.backend_description());
            *inner.drafter.borrow_mut() = Some(drafter);
            *inner.session.borrow_mut() = Some(session);
            let mut s = result.map_err(engine_error)?;
            if let Some(n) = s.notices.last() {
                // The backend failed and is gone: nothing left to simulate a loss on.
                inner.gpu_device.borrow_mut().take();
                inner.set_backend_info(backend_kind, &description, n);
            }
            let backend = DraftBackend::of_kind(backend_kind);
            s.draft_backend = json_name(backend);
            Ok(to_js(&Summary::new(s, backend, &constants)))
        })
    }

    /// Stops the running generation at its next token (it resolves with `stop_reason: "aborted"`).
    pub fn abort(&self) {
        self.inner.abort.set(true);
    }

    /// Closes the verifier session.
    pub fn disconnect(&self) -> Promise {
        let session = self.inner.session.borrow_mut().take();
        future_to_promise(async move {
            if let Some(s) = session {
                let _ = s.close().await;
            }
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// Size of this module's linear memory in bytes (an `ArrayBuffer`, or a `SharedArrayBuffer`
/// in the threaded build).
pub fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .ok()
        .and_then(|m| js_sys::Reflect::get(&m.buffer(), &JsValue::from_str("byteLength")).ok())
        .and_then(|n| n.as_f64())
        .unwrap_or(0.0)
}

/// [`ModelInfo::threads`] now.
fn cpu_threads() -> u32 {
    #[cfg(target_feature = "atomics")]
    return crate::pool::pool_threads() as u32;
    #[cfg(not(target_feature = "atomics"))]
    1
}

/// Options object → `GenerationOptions` (unknown fields are an error naming them), `chat`, and
/// the energy constants (the shipped ones with the `energyConstants` overrides).
fn parse_options(options: &JsValue) -> Result<(GenerationOptions, bool, Constants), String> {
    if options.is_undefined() || options.is_null() {
        return Ok((
            GenerationOptions::default(),
            true,
            Constants::default_constants(),
        ));
    }
    let json = js_sys::JSON::stringify(options)
        .map_err(|e| format!("options: {}", js_text(&e)))?
        .as_string()
        .unwrap_or_default();
    let mut v: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("options: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| "options must be an object".to_string())?;
    obj.retain(|_, v| !v.is_null());
    let chat = obj
        .remove("chat")
        .map(|c| c.as_bool().unwrap_or(true))
        .unwrap_or(true);
    let constants = match obj.remove("energyConstants") {
        Some(over) => Constants::with_overrides(&over)?,
        None => Constants::default_constants(),
    };
    let opts = serde_json::from_value(v).map_err(|e| format!("options: {e}"))?;
    Ok((opts, chat, constants))
}
