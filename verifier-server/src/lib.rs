//! # verifier-server
//!
//! The large model behind a WebSocket. Each connection is one session with its own KV cache
//! ([`hlm_engine::verifier::VerifierSession`]); binary frames carry the shared protocol
//! (`hlm-protocol`). Model work runs on blocking threads, one forward at a time (the model's
//! kernels already use every core); rounds that wait at the same moment are verified together in
//! one forward pass ([`batch`]), first come first served.
//!
//! ```text
//! browser / CLI ──ws──► /ws ──► session task ──► batch queue ──► spawn_blocking(answer_batch)
//!                                         ▲                          │ (`compute` permit)
//!                                         └──── verdict ◄────────────┘
//! ```
//!
//! Before a session starts it must present a token when the server has any ([`auth`]), and find
//! a free session slot (`max_sessions`); a session that sends nothing for `idle_timeout` is closed.
//! Refusals happen after the upgrade, as an `Error` message and a close code, because a browser
//! sees neither the status nor the body of a failed upgrade.

pub mod auth;
pub mod batch;
pub mod loadgen;
pub mod openai;
pub mod telemetry;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use hlm_engine::model::Model;
use hlm_engine::verifier::{Input, VerifierSession};
use hlm_protocol::{close, encode_server, ServerMsg};
use hlm_protocol::{ErrorCode, VocabInfo, MAX_MESSAGE_BYTES};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn, Instrument};

/// What an operator sets.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_context: u32,
    /// Accepted tokens; empty means no authentication.
    pub tokens: Vec<String>,
    /// Sessions served at once; more are refused with "overloaded" (close 1013).
    pub max_sessions: usize,
    /// A session that sends nothing for this long is closed (close 4408).
    pub idle_timeout: Duration,
    /// Browser origins allowed besides the server's own (`*` for any).
    pub allowed_origins: Vec<String>,
    /// Memory all sessions' KV caches may take together; `None` = not checked.
    pub max_kv_bytes: Option<usize>,
    /// How long `/health` waits for its turn to probe the model before answering 503.
    pub health_patience: Duration,
    /// The draft model offered to browsers at `/models/draft.gguf`: (name, file).
    pub draft_model: Option<(String, std::path::PathBuf)>,
    /// How many sessions' rounds one forward pass may verify together ([`batch`]).
    pub batch: batch::BatchLimits,
}

impl ServerConfig {
    /// The most KV-cache memory one session can hold with this model: `max_context` positions of
    /// `layers × 2 × kv_heads × head_dim × 4` bytes (the cache never reserves past its context).
    pub fn kv_bytes_per_session(&self, model: &hlm_engine::model::ModelConfig) -> usize {
        let positions = (self.max_context as usize).min(model.max_context);
        positions * hlm_engine::model::KvCache::bytes_per_position(model)
    }

    /// Checks that `max_sessions` full sessions fit in `max_kv_bytes`, and says what would fit.
    pub fn check_memory(&self, model: &hlm_engine::model::ModelConfig) -> Result<(), String> {
        let Some(budget) = self.max_kv_bytes else {
            return Ok(());
        };
        let per = self.kv_bytes_per_session(model);
        let need = per * self.max_sessions;
        if need <= budget {
            return Ok(());
        }
        let per_position = hlm_engine::model::KvCache::bytes_per_position(model);
        Err(format!(
            "{} sessions of up to {} tokens need {} MB of KV cache, over the budget of {} MB: \
             lower --max-sessions to {} or --max-context to {}, or raise --max-kv-mb",
            self.max_sessions,
            self.max_context,
            need >> 20,
            budget >> 20,
            budget / per.max(1),
            budget / self.max_sessions.max(1) / per_position.max(1),
        ))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_context: 4096,
            tokens: Vec::new(),
            max_sessions: 64,
            idle_timeout: Duration::from_secs(300),
            allowed_origins: Vec::new(),
            max_kv_bytes: None,
            health_patience: HEALTH_FRESHNESS,
            draft_model: None,
            batch: batch::BatchLimits::default(),
        }
    }
}

/// What every session shares.
/// How long a successful forward pass vouches for the model's health.
pub const HEALTH_FRESHNESS: Duration = Duration::from_secs(10);

pub struct AppState {
    pub model: Arc<Model>,
    pub vocab: VocabInfo,
    pub config: ServerConfig,
    /// One model forward at a time.
    pub compute: Semaphore,
    /// Session slots.
    pub sessions: Arc<Semaphore>,
    pub next_session: AtomicU64,
    pub server_name: String,
    /// Flips to `true` when the server shuts down: sessions close with 1001 between frames.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// When the model last answered a forward pass (a round or a health probe).
    last_forward_ok: std::sync::Mutex<Option<std::time::Instant>>,
    /// Microseconds of the fastest health probe's one-token forward (`u64::MAX` = none yet): what
    /// one token of the server alone costs at best, shown by the demo next to the hybrid's speed.
    one_token_us: AtomicU64,
    /// The model's tokenizer, for the OpenAI-compatible endpoint ([`openai`]); without it that
    /// endpoint answers 501.
    tokenizer: std::sync::OnceLock<Arc<tokenizers::Tokenizer>>,
    /// The queue every session's messages go through ([`batch`]); started on first use.
    batcher: std::sync::OnceLock<batch::Batcher>,
}

impl AppState {
    /// Defaults for everything but the context length.
    pub fn new(model: Arc<Model>, vocab: VocabInfo, max_context: u32) -> Arc<Self> {
        Self::with_config(
            model,
            vocab,
            ServerConfig {
                max_context,
                ..Default::default()
            },
        )
    }

    pub fn with_config(model: Arc<Model>, vocab: VocabInfo, config: ServerConfig) -> Arc<Self> {
        telemetry::handle();
        Arc::new(Self {
            model,
            vocab,
            compute: Semaphore::new(1),
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            config,
            next_session: AtomicU64::new(1),
            server_name: format!("verifier-server/{}", env!("CARGO_PKG_VERSION")),
            shutdown: tokio::sync::watch::channel(false).0,
            last_forward_ok: std::sync::Mutex::new(None),
            one_token_us: AtomicU64::new(u64::MAX),
            tokenizer: std::sync::OnceLock::new(),
            batcher: std::sync::OnceLock::new(),
        })
    }

    /// Serves `/v1/chat/completions` with this tokenizer (the model's own; set once).
    pub fn set_tokenizer(&self, tokenizer: tokenizers::Tokenizer) {
        let _ = self.tokenizer.set(Arc::new(tokenizer));
    }

    pub fn tokenizer(&self) -> Option<Arc<tokenizers::Tokenizer>> {
        self.tokenizer.get().cloned()
    }

    pub(crate) fn forward_succeeded(&self) {
        if let Ok(mut t) = self.last_forward_ok.lock() {
            *t = Some(std::time::Instant::now());
        }
    }

    /// Ready when the model has answered a forward pass in the last [`HEALTH_FRESHNESS`];
    /// otherwise runs a one-token forward now (in its turn with the sessions' work).
    pub async fn readiness(&self) -> Result<(), String> {
        if self.draining() {
            return Err("draining: sessions are moving to other replicas".into());
        }
        let fresh = self
            .last_forward_ok
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() < HEALTH_FRESHNESS);
        if fresh {
            return Ok(());
        }
        let _permit = tokio::time::timeout(self.config.health_patience, self.compute.acquire())
            .await
            .map_err(|_| "the model is busy beyond the probe's patience".to_string())?
            .map_err(|_| "shutting down".to_string())?;
        let model = self.model.clone();
        let started = std::time::Instant::now();
        let probe = tokio::task::spawn_blocking(move || {
            let mut cache = model.new_cache();
            model
                .forward(&mut cache, &[0], &hlm_engine::model::LogitRows::Last, 0)
                .map_err(|e| e.to_string())
                .and_then(|o| match o.logits.first() {
                    Some((_, l)) if !l.is_empty() && l.iter().all(|x| x.is_finite()) => Ok(()),
                    _ => Err("the model's logits are not finite".to_string()),
                })
        })
        .await
        .map_err(|e| format!("probe failed: {e}"))?;
        if probe.is_ok() {
            self.forward_succeeded();
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.one_token_us.fetch_min(us.max(1), Ordering::Relaxed);
        }
        probe
    }

    /// Sessions in progress.
    /// Shutting down: new sessions are refused (HTTP 503 before the upgrade, so a balancer
    /// tries another replica) and `/health` answers 503.
    pub fn draining(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Messages queued for the next batch ([`batch::Batcher::queued`]); 0 before the first.
    pub fn queued_messages(&self) -> usize {
        self.batcher.get().map_or(0, batch::Batcher::queued)
    }

    pub fn active_sessions(&self) -> usize {
        self.config.max_sessions - self.sessions.available_permits()
    }

    /// Asks every session to close (code 1001) once its current frame is answered, then waits up
    /// to `drain` for them to end. Returns the number still open.
    pub async fn shut_down(&self, drain: Duration) -> usize {
        self.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + drain;
        while self.active_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.active_sessions()
    }
}

/// URL path of the draft model file offered to browsers.
pub const DRAFT_MODEL_PATH: &str = "/models/draft.gguf";

/// The HTTP routes: `/ws` (sessions), `/health`, `/metrics`, `/client-config.json` (what the
/// demo page needs to know), the draft model when configured, and `www` at `/` when given.
pub fn router(state: Arc<AppState>, www: Option<std::path::PathBuf>) -> Router {
    let mut app = Router::new()
        .route("/ws", get(ws_handler))
        .route("/health", get(health))
        .route("/metrics", get(|| async { telemetry::handle().render() }))
        .route("/client-config.json", get(client_config))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models));
    if let Some((_, file)) = &state.config.draft_model {
        app = app.route_service(DRAFT_MODEL_PATH, tower_http::services::ServeFile::new(file));
    }
    let mut app = app.with_state(state);
    if let Some(dir) = www {
        app = app
            .fallback_service(tower_http::services::ServeDir::new(dir))
            .layer(axum::middleware::map_response(cross_origin_isolated));
    }
    app
}

/// The headers that make a page cross-origin isolated (`COOP: same-origin`, `COEP:
/// require-corp`), on every response when the server serves pages: the draft model in the demo
/// can then use WebAssembly threads (shared memory). Everything the demo loads is same-origin.
async fn cross_origin_isolated(mut res: axum::response::Response) -> axum::response::Response {
    use axum::http::{header::HeaderName, HeaderValue};
    let h = res.headers_mut();
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-embedder-policy"),
        HeaderValue::from_static("require-corp"),
    );
    res
}

/// `{ draft_model_url, draft_model_name, verifier_url, token_required, verifier_model,
/// server_alone_tok_s }`; a null `verifier_url` means "this server's own `/ws`", and
/// `server_alone_tok_s` is one over the fastest health probe's one-token forward time (null before
/// any probe).
async fn client_config(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let draft = state.config.draft_model.as_ref();
    axum::Json(serde_json::json!({
        "draft_model_url": draft.map(|_| DRAFT_MODEL_PATH),
        "draft_model_name": draft.map(|(n, _)| n.as_str()),
        "verifier_url": null,
        "token_required": !state.config.tokens.is_empty(),
        "verifier_model": state.model.name(),
        "server_alone_tok_s": match state.one_token_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(1e6 / us as f64),
        },
    }))
}

/// 200 `ok …` when the model answers a one-token forward ([`AppState::readiness`]), 503 otherwise.
async fn health(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    use axum::http::StatusCode;
    match state.readiness().await {
        Ok(()) => (
            StatusCode::OK,
            format!(
                "ok {} vocab={} context={} sessions={}/{} kv_per_session_mb={}\n",
                state.model.name(),
                state.vocab.size,
                state.config.max_context,
                state.active_sessions(),
                state.config.max_sessions,
                state.config.kv_bytes_per_session(state.model.config()) >> 20,
            ),
        ),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Why a connection is refused once upgraded.
enum Refusal {
    Origin,
    Unauthorized,
    Overloaded,
}

async fn ws_handler(
    ws: WebSocketUpgrade,
    headers: axum::http::HeaderMap,
    State(state): State<Arc<AppState>>,
) -> axum::response::Response {
    if state.draining() {
        // Before the upgrade: a balancer (nginx's `proxy_next_upstream http_503`) sends the
        // client on to another replica, and a direct client's reconnect backs off and retries.
        telemetry::refused("draining");
        let why = "draining: connect again to reach another replica";
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let cfg = &state.config;
    let admitted = match auth::check_caller(&headers, &cfg.allowed_origins, &cfg.tokens) {
        Err(auth::Denied::Origin) => Err(Refusal::Origin),
        Err(auth::Denied::Unauthorized) => Err(Refusal::Unauthorized),
        Ok(()) => state
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Overloaded),
    };
    ws.protocols([auth::PROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |mut socket| {
            async move {
                match admitted {
                    Ok(slot) => run_session(socket, state, slot).await,
                    Err(Refusal::Origin) => {
                        telemetry::refused("origin");
                        warn!("refused: origin not allowed");
                        refuse(
                            &mut socket,
                            ErrorCode::ForbiddenOrigin,
                            "origin not allowed",
                        )
                        .await
                    }
                    Err(Refusal::Unauthorized) => {
                        telemetry::refused("unauthorized");
                        warn!("refused: missing or wrong token");
                        refuse(
                            &mut socket,
                            ErrorCode::Unauthorized,
                            "missing or wrong token",
                        )
                        .await
                    }
                    Err(Refusal::Overloaded) => {
                        telemetry::refused("overloaded");
                        warn!(
                            "refused: all {} session slots busy",
                            state.config.max_sessions
                        );
                        refuse(
                            &mut socket,
                            ErrorCode::Overloaded,
                            "overloaded, retry later",
                        )
                        .await
                    }
                }
            }
            .instrument(tracing::info_span!("session", id))
        })
        .into_response()
}

/// Resolves once the server's shutdown flag is set (never, if the sender is gone).
async fn shutdown_requested(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let down = *rx.borrow_and_update();
        if down {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Tells the client why, then closes with the error's code.
async fn refuse(socket: &mut WebSocket, code: ErrorCode, why: &str) {
    let msg = encode_server(&ServerMsg::Error {
        code,
        message: why.to_string(),
    });
    let _ = socket.send(Message::Binary(msg.into())).await;
    send_close(socket, code.close_code(), why).await;
}

async fn run_session(socket: WebSocket, state: Arc<AppState>, _slot: OwnedSemaphorePermit) {
    info!("connected");
    telemetry::session(true);
    serve_session(socket, state).await;
    telemetry::session(false);
}

/// What the session loop waits for next.
enum Incoming {
    /// A message, or the socket's error.
    Message(Result<Message, axum::Error>),
    /// The client went away without a close frame.
    Gone,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// The server shuts down.
    Shutdown,
    /// Nothing arrived, and the session's own generation has a token to go.
    Continue,
}

/// One client's connection: the socket, its verifier session and the server's state. Each kind
/// of event has its step; a step says whether the loop goes on.
struct Connection {
    socket: WebSocket,
    /// `None` only while a frame is verified on the blocking pool (or after that task failed).
    session: Option<VerifierSession>,
    state: Arc<AppState>,
}

async fn serve_session(socket: WebSocket, state: Arc<AppState>) {
    let session = VerifierSession::new(
        state.model.clone(),
        state.vocab.clone(),
        &state.server_name,
        state.config.max_context,
    );
    let mut shutdown = state.shutdown.subscribe();
    let mut conn = Connection {
        socket,
        session: Some(session),
        state,
    };
    // Frames are answered whole: shutdown and idleness are only noticed between them.
    while conn.next(&mut shutdown).await.is_continue() {}
    if let Some(s) = conn.session {
        info!(stats = ?s.stats, "disconnected");
    }
}

impl Connection {
    /// Waits for the next event and takes its step.
    async fn next(&mut self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Flow {
        let idle = self.state.config.idle_timeout;
        let generating = self.generating();
        // A message that has arrived comes first; otherwise a generation in progress takes its
        // next step (`recv` is cancel-safe: nothing is lost when the step wins).
        let incoming = tokio::select! {
            biased;
            _ = shutdown_requested(shutdown) => Incoming::Shutdown,
            r = tokio::time::timeout(idle, self.socket.recv()) => match r {
                Ok(Some(msg)) => Incoming::Message(msg),
                Ok(None) => Incoming::Gone,
                Err(_) => Incoming::Idle,
            },
            _ = std::future::ready(()), if generating => Incoming::Continue,
        };
        match incoming {
            Incoming::Continue => self.on_continue().await,
            Incoming::Message(Ok(msg)) => self.on_message(msg).await,
            Incoming::Message(Err(e)) => self.on_socket_error(e).await,
            Incoming::Gone => Flow::Break(()),
            Incoming::Idle => self.on_idle().await,
            Incoming::Shutdown => self.on_shutdown().await,
        }
    }

    async fn on_message(&mut self, msg: Message) -> Flow {
        match msg {
            Message::Binary(frame) => self.on_frame(frame).await,
            Message::Close(_) => Flow::Break(()),
            Message::Ping(_) | Message::Pong(_) => Flow::Continue(()),
            Message::Text(_) => {
                send_close(
                    &mut self.socket,
                    close::UNSUPPORTED_DATA,
                    "binary frames only",
                )
                .await;
                Flow::Break(())
            }
        }
    }

    /// The socket failed; a message over the size limit is told so.
    async fn on_socket_error(&mut self, e: axum::Error) -> Flow {
        info!("connection ended: {e}");
        if is_too_large(&e) {
            let limit = format!("message larger than {MAX_MESSAGE_BYTES} bytes");
            send_close(&mut self.socket, ErrorCode::TooLarge.close_code(), &limit).await;
        }
        Flow::Break(())
    }

    async fn on_idle(&mut self) -> Flow {
        telemetry::refused("idle");
        info!("idle for {:?}: closing", self.state.config.idle_timeout);
        refuse(&mut self.socket, ErrorCode::Idle, "idle timeout").await;
        Flow::Break(())
    }

    async fn on_shutdown(&mut self) -> Flow {
        info!("server shutting down: closing");
        send_close(&mut self.socket, close::GOING_AWAY, "server shutting down").await;
        Flow::Break(())
    }

    /// A protocol frame: decoded, queued for the next batch ([`batch`]), the reply sent, the
    /// connection closed after a protocol error.
    async fn on_frame(&mut self, frame: axum::body::Bytes) -> Flow {
        telemetry::bytes_in(frame.len());
        let msg = hlm_protocol::decode_client(&frame);
        self.submit(Input::Message(msg), frame.len()).await
    }

    /// The next token of the session's own generation, between the client's messages.
    async fn on_continue(&mut self) -> Flow {
        self.submit(Input::Continue, 0).await
    }

    /// Queues the session's input for the next batch and sends the reply.
    async fn submit(&mut self, input: Input, bytes: usize) -> Flow {
        let started = std::time::Instant::now();
        let Some(session) = self.session.take() else {
            return Flow::Break(());
        };
        let before = session.stats.clone();
        let Some((s, reply)) = batch::submit_one(&self.state, session, input, bytes).await else {
            warn!("verification task failed");
            send_close(&mut self.socket, close::INTERNAL_ERROR, "internal error").await;
            return Flow::Break(());
        };
        if s.stats.rounds > before.rounds {
            telemetry::rounds(&before, &s.stats, started.elapsed());
        }
        if s.stats.generated > before.generated {
            telemetry::solo_tokens((s.stats.generated - before.generated) as usize);
        }
        self.session = Some(s);
        self.send_reply(reply).await
    }

    /// Whether the session's own generation has a token to go.
    fn generating(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(VerifierSession::generating)
    }

    async fn send_reply(&mut self, reply: hlm_engine::verifier::Reply) -> Flow {
        if let Some(f) = reply.frame {
            telemetry::bytes_out(f.len());
            if self.socket.send(Message::Binary(f.into())).await.is_err() {
                return Flow::Break(());
            }
        }
        if let Some((code, why)) = reply.close {
            telemetry::protocol_error(code);
            warn!("protocol error {code:?}: {why}");
            send_close(&mut self.socket, code.close_code(), &why).await;
            return Flow::Break(());
        }
        Flow::Continue(())
    }
}

/// Whether a socket error is a message (or frame) over the size limit set in [`ws_handler`]:
/// axum wraps the error of the tungstenite it uses, which reports that as a capacity error (the
/// other capacity error, too many headers, only happens during the handshake).
fn is_too_large(e: &axum::Error) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|t| matches!(t, tungstenite::Error::Capacity(_)))
}

/// Whether the session loop goes on after a step.
type Flow = std::ops::ControlFlow<()>;

/// Sends a close frame with `code` and `reason` (cut to the 123 bytes a close reason may hold).
async fn send_close(socket: &mut WebSocket, code: u16, reason: &str) {
    // A close reason may hold at most 123 bytes.
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::error::CapacityError;

    #[test]
    fn too_large_is_recognised_by_type() {
        let too_long = CapacityError::MessageTooLong {
            size: MAX_MESSAGE_BYTES + 1,
            max_size: MAX_MESSAGE_BYTES,
        };
        assert!(is_too_large(&axum::Error::new(
            tungstenite::Error::Capacity(too_long)
        )));
        // Other socket errors are not, even when their text says so.
        assert!(!is_too_large(&axum::Error::new(
            tungstenite::Error::ConnectionClosed
        )));
        let text = std::io::Error::other("Space limit exceeded: Message too long: 5 > 4");
        assert!(!is_too_large(&axum::Error::new(text)));
    }
}
