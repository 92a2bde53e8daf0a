//! # verifier-server
//!
//! The large model behind a WebSocket. Each connection is one session with its own KV cache
//! ([`hlm_engine::verifier::VerifierSession`]); binary frames carry the shared protocol
//! (`hlm-protocol`). Model work runs on blocking threads, one forward at a time (the model's
//! kernels already use every core), so sessions take turns fairly in arrival order.
//!
//! ```text
//! browser / CLI ──ws──► /ws ──► session task ──► spawn_blocking(VerifierSession::handle_frame)
//!                                         ▲                 │ (one at a time: `compute` permit)
//!                                         └──── verdict ◄───┘
//! ```

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hlm_engine::model::Model;
use hlm_engine::verifier::VerifierSession;
use hlm_protocol::{ErrorCode, VocabInfo, MAX_MESSAGE_BYTES};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::{info, warn, Instrument};

/// What every session shares.
pub struct AppState {
    pub model: Arc<Model>,
    pub vocab: VocabInfo,
    pub max_context: u32,
    /// One model forward at a time.
    pub compute: Semaphore,
    pub next_session: AtomicU64,
    pub server_name: String,
}

impl AppState {
    pub fn new(model: Arc<Model>, vocab: VocabInfo, max_context: u32) -> Arc<Self> {
        Arc::new(Self {
            model,
            vocab,
            max_context,
            compute: Semaphore::new(1),
            next_session: AtomicU64::new(1),
            server_name: format!("verifier-server/{}", env!("CARGO_PKG_VERSION")),
        })
    }
}

/// The HTTP routes: `/ws` (sessions) and `/health`; `www` is served at `/` when given.
pub fn router(state: Arc<AppState>, www: Option<std::path::PathBuf>) -> Router {
    let mut app = Router::new()
        .route("/ws", get(ws_handler))
        .route("/health", get(health))
        .with_state(state);
    if let Some(dir) = www {
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    app
}

async fn health(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    format!(
        "ok {} vocab={} context={}\n",
        state.model.name(),
        state.vocab.size,
        state.max_context
    )
}

async fn ws_handler(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            run_session(socket, state).instrument(tracing::info_span!("session", id))
        })
}

async fn run_session(mut socket: WebSocket, state: Arc<AppState>) {
    info!("connected");
    let mut session = Some(VerifierSession::new(
        state.model.clone(),
        state.vocab.clone(),
        &state.server_name,
        state.max_context,
    ));
    while let Some(msg) = socket.recv().await {
        let frame = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) => break,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Text(_)) => {
                close(&mut socket, 1003, "binary frames only").await;
                return;
            }
            Err(e) => {
                let why = e.to_string();
                info!("connection ended: {why}");
                if why.contains("Space limit") || why.contains("too long") {
                    let limit = format!("message larger than {MAX_MESSAGE_BYTES} bytes");
                    close(&mut socket, ErrorCode::TooLarge.close_code(), &limit).await;
                }
                return;
            }
        };
        let permit = match state.compute.acquire().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let mut s = session
            .take()
            .expect("session is returned after each frame");
        let joined = tokio::task::spawn_blocking(move || {
            let reply = s.handle_frame(&frame);
            (s, reply)
        })
        .await;
        drop(permit);
        let (s, reply) = match joined {
            Ok(x) => x,
            Err(e) => {
                warn!("verification task failed: {e}");
                close(&mut socket, 1011, "internal error").await;
                return;
            }
        };
        session = Some(s);
        if let Some(f) = reply.frame {
            if socket.send(Message::Binary(f.into())).await.is_err() {
                return;
            }
        }
        if let Some((code, why)) = reply.close {
            warn!("protocol error {code:?}: {why}");
            close(&mut socket, code.close_code(), &why).await;
            return;
        }
    }
    if let Some(s) = session {
        info!(stats = ?s.stats, "disconnected");
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
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
