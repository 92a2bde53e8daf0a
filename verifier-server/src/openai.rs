//! The verifier as a plain server: an OpenAI-compatible chat endpoint, so that existing clients
//! (the `openai` SDKs, curl, anything that speaks `/v1/chat/completions`) can use a verifier's
//! model directly, and compare it with the hybrid using tools they already have.
//!
//! - `POST /v1/chat/completions`: `messages` (system / user / assistant) in the ChatML template,
//!   `max_tokens` (or `max_completion_tokens`), `temperature` and `seed` (greedy without a
//!   temperature), `stop` (a string or a list), `stream` (server-sent events, ending with
//!   `data: [DONE]`). Other fields are ignored.
//! - `GET /v1/models`: the one model served.
//!
//! The same rules as a WebSocket session: the token (`Authorization: Bearer …`), the allowed
//! origins, a session slot for the whole generation. Errors are OpenAI's JSON shape,
//! `{"error": {"message", "type", "code"}}`, with the matching status. The generation itself is
//! a verifier session's own (the protocol's `Generate`, one code path with a hybrid client's
//! `hlm generate --server-only`): each token's forward goes through the batch queue, so it
//! shares batches with hybrid sessions' rounds.

use crate::batch;
use crate::{auth, telemetry, AppState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use hlm_engine::chat::TextStream;
use hlm_engine::stop::{StopConditions, StopMatcher};
use hlm_engine::verifier::{Input, VerifierSession};
use hlm_protocol::{
    decode_server, ClientMsg, GenerateRequest, Generated, GenerationEnd, Sampling, ServerMsg,
    PROTOCOL_VERSION,
};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

/// `max_tokens` when a request names none.
pub const DEFAULT_MAX_TOKENS: usize = 256;
/// Streamed events waiting for a slow client before generation pauses (bounded: a client that
/// stops reading holds back the model, never the server's memory).
const STREAM_BUFFER: usize = 16;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<StopField>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

/// An OpenAI-style error: status, `type`, `code`, message.
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"message": self.message, "type": self.kind, "code": self.code}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// A request checked and turned into what the model needs.
struct Job {
    prompt: Vec<u32>,
    sampling: Sampling,
    max_tokens: usize,
    stop: StopConditions,
    stream: bool,
}

/// `GET /v1/models` (the same token and origin rules).
pub async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_caller(&state, &headers) {
        return e.into_response();
    }
    axum::Json(json!({
        "object": "list",
        "data": [{"id": state.model.name(), "object": "model", "created": 0, "owned_by": "hybrid-llm"}],
    }))
    .into_response()
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match admit(&state, &headers) {
        Err(e) => e.into_response(),
        Ok(slot) => match parse(&state, &body) {
            Err(e) => e.into_response(),
            Ok(job) if job.stream => stream(state, job, slot).await,
            Ok(job) => complete(state, job, slot).await,
        },
    }
}

fn refuse(status: StatusCode, kind: &'static str, code: &'static str, message: &str) -> ApiError {
    ApiError {
        status,
        kind,
        code,
        message: message.to_string(),
    }
}

/// The origin and the token, as for a WebSocket session.
fn check_caller(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let cfg = &state.config;
    match auth::check_caller(headers, &cfg.allowed_origins, &cfg.tokens) {
        Ok(()) => Ok(()),
        Err(auth::Denied::Origin) => {
            telemetry::refused("origin");
            Err(refuse(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "forbidden_origin",
                "origin not allowed",
            ))
        }
        Err(auth::Denied::Unauthorized) => {
            telemetry::refused("unauthorized");
            Err(refuse(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                "missing or wrong token (Authorization: Bearer …)",
            ))
        }
    }
}

/// The same admission as a WebSocket session: draining, origin, token, a session slot.
fn admit(
    state: &Arc<AppState>,
    headers: &HeaderMap,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    if state.draining() {
        telemetry::refused("draining");
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "draining",
            "draining: retry to reach another replica",
        ));
    }
    check_caller(state, headers)?;
    state.sessions.clone().try_acquire_owned().map_err(|_| {
        telemetry::refused("overloaded");
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            "all session slots are busy, retry later",
        )
    })
}

fn parse(state: &AppState, body: &[u8]) -> Result<Job, ApiError> {
    let req: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("invalid_json", format!("request body: {e}")))?;
    let tokenizer = state.tokenizer().ok_or_else(|| ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        kind: "server_error",
        code: "no_tokenizer",
        message: "this server has no tokenizer for its model".into(),
    })?;
    let text = hlm_engine::chat::chatml_messages(
        req.messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str())),
    )
    .map_err(|e| ApiError::invalid("invalid_messages", e))?;
    let prompt = tokenizer
        .encode(text, false)
        .map_err(|e| {
            ApiError::invalid("invalid_messages", format!("tokenising the messages: {e}"))
        })?
        .get_ids()
        .to_vec();
    let room = (state.config.max_context as usize).saturating_sub(prompt.len());
    if room == 0 {
        return Err(ApiError::invalid(
            "context_length_exceeded",
            format!(
                "the messages take {} tokens; the context holds {}",
                prompt.len(),
                state.config.max_context
            ),
        ));
    }
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .map_or(DEFAULT_MAX_TOKENS, |n| n as usize);
    if max_tokens == 0 {
        return Err(ApiError::invalid(
            "invalid_max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    let sampling = match req.temperature {
        Some(t) if !t.is_finite() || t < 0.0 => {
            return Err(ApiError::invalid(
                "invalid_temperature",
                format!("temperature {t} is not a number ≥ 0"),
            ))
        }
        Some(t) if t > 0.0 => Sampling::Temperature {
            temperature: t,
            seed: req.seed.unwrap_or_else(clock_seed),
        },
        _ => Sampling::Greedy,
    };
    let stop = StopConditions {
        strings: match req.stop {
            None => vec![],
            Some(StopField::One(s)) => vec![s],
            Some(StopField::Many(v)) => v,
        },
        code_block_end: false,
    };
    stop.validate()
        .map_err(|e| ApiError::invalid("invalid_stop", e))?;
    let _ = req.model; // one model per server: any name is accepted
    Ok(Job {
        prompt,
        sampling,
        max_tokens,
        stop,
        stream: req.stream,
    })
}

/// What the generation task reports.
enum Piece {
    Text(String),
    /// The end: OpenAI's `finish_reason` and the token counts.
    Done {
        finish: &'static str,
        prompt: usize,
        completion: usize,
    },
    Failed(String),
}

/// Runs the generation as a verifier session's own (`Generate`, then a `Continue` per token),
/// each step through the batch queue like a WebSocket session's messages, so that its forward
/// passes share batches with hybrid sessions' rounds. Sends text pieces into `tx` (held back by
/// the stop matcher until final); ends early when the receiver is gone (the client left).
async fn generate(state: Arc<AppState>, job: Job, tx: mpsc::Sender<Piece>) {
    let Some(tokenizer) = state.tokenizer() else {
        return;
    };
    let mut session = VerifierSession::new(
        state.model.clone(),
        state.vocab.clone(),
        &state.server_name,
        state.config.max_context,
    );
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        client: "openai-compatible endpoint".into(),
        vocab: state.vocab.clone(),
        sampling: job.sampling,
    };
    if let Err(e) = session.handle(hello) {
        let _ = tx.send(Piece::Failed(e.to_string())).await;
        return;
    }
    let mut input = Input::Message(Ok(ClientMsg::Generate(GenerateRequest {
        request: 0,
        base: 0,
        prompt: job.prompt.clone(),
        max_tokens: job.max_tokens.min(u32::MAX as usize) as u32,
    })));
    let (mut text, mut stop) = (TextStream::new(), StopMatcher::new(&job.stop));
    let mut completion = 0;
    let finish = loop {
        let token = match next_token(&state, session, input).await {
            Ok((s, token)) => {
                session = s;
                token
            }
            Err(e) => {
                let _ = tx.send(Piece::Failed(e)).await;
                return;
            }
        };
        // An end-of-sequence token ends the answer and is not part of it.
        if token.end != Some(GenerationEnd::EndOfSequence) {
            completion += 1;
            let piece = stop.push(&text.push(&tokenizer, token.id));
            if !piece.is_empty() && tx.send(Piece::Text(piece)).await.is_err() {
                return; // the client left
            }
            if stop.hit().is_some() {
                break "stop";
            }
        }
        if let Some(end) = token.end {
            let rest = stop.flush();
            if !rest.is_empty() {
                let _ = tx.send(Piece::Text(rest)).await;
            }
            break match end {
                GenerationEnd::EndOfSequence => "stop",
                GenerationEnd::MaxTokens | GenerationEnd::ContextFull => "length",
            };
        }
        input = Input::Continue;
    };
    telemetry::solo_tokens(completion);
    let _ = tx
        .send(Piece::Done {
            finish,
            prompt: job.prompt.len(),
            completion,
        })
        .await;
}

/// One step of the session's generation through the batch queue: the session back, and its
/// token.
async fn next_token(
    state: &Arc<AppState>,
    session: VerifierSession,
    input: Input,
) -> Result<(VerifierSession, Generated), String> {
    let (session, reply) = batch::submit_one(state, session, input, 0)
        .await
        .ok_or_else(|| "the server is shutting down".to_string())?;
    if let Some((code, why)) = reply.close {
        return Err(format!("{code:?}: {why}"));
    }
    let frame = reply.frame.ok_or("the generation step gave no token")?;
    match decode_server(&frame).map_err(|e| e.to_string())? {
        ServerMsg::Generated(g) => Ok((session, g)),
        ServerMsg::Error { code, message } => Err(format!("{code:?}: {message}")),
        other => Err(format!("expected a generated token, got {other:?}")),
    }
}

/// A seed for a request that names none: the clock's nanoseconds.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn completion_id(state: &AppState) -> String {
    format!(
        "chatcmpl-{}",
        state.next_session.fetch_add(1, Ordering::Relaxed)
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `stream: false`: one `chat.completion` object.
async fn complete(
    state: Arc<AppState>,
    job: Job,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let (tx, mut rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(generate(state.clone(), job, tx));
    let mut content = String::new();
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Text(t) => content.push_str(&t),
            Piece::Failed(why) => return server_error(why),
            Piece::Done {
                finish,
                prompt,
                completion,
            } => {
                drop(slot);
                return axum::Json(json!({
                    "id": completion_id(&state),
                    "object": "chat.completion",
                    "created": unix_now(),
                    "model": state.model.name(),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
                }))
                .into_response();
            }
        }
    }
    server_error("the generation ended without a result".into())
}

fn server_error(why: String) -> Response {
    tracing::warn!("chat completion failed: {why}");
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        code: "generation_failed",
        message: why,
    }
    .into_response()
}

/// `stream: true`: `chat.completion.chunk` events, then `[DONE]`.
async fn stream(
    state: Arc<AppState>,
    job: Job,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(generate(state.clone(), job, tx));
    let (id, created, model) = (
        completion_id(&state),
        unix_now(),
        state.model.name().to_string(),
    );
    let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
        Event::default().data(
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    // The slot travels with the stream: it is released when the response ends or the client leaves.
    let events = futures_util::stream::unfold(
        (rx, Some(slot), false),
        move |(mut rx, slot, done)| {
            let chunk = chunk.clone();
            async move {
                if done {
                    return None;
                }
                let event = match rx.recv().await {
                    Some(Piece::Text(t)) if t.is_empty() => Event::default().comment("empty piece"),
                    Some(Piece::Text(t)) => chunk(json!({"content": t}), None),
                    Some(Piece::Done { finish, .. }) => {
                        return Some((Ok(chunk(json!({}), Some(finish))), (rx, slot, true)));
                    }
                    Some(Piece::Failed(why)) => {
                        tracing::warn!("chat completion failed while streaming: {why}");
                        Event::default().data(json!({"error": {"message": why, "type": "server_error", "code": "generation_failed"}}).to_string())
                    }
                    None => return None,
                };
                Some((Ok::<_, std::convert::Infallible>(event), (rx, slot, false)))
            }
        },
    );
    let done = futures_util::stream::once(async { Ok(Event::default().data("[DONE]")) });
    let all = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok(first) }),
        events,
    );
    Sse::new(futures_util::StreamExt::chain(all, done)).into_response()
}
