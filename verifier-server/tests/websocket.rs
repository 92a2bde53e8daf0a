//! The verifier over a real WebSocket on loopback, with tiny random models: hybrid generation in
//! every filter mode, and every bad input answered with its named error and close code while other
//! sessions carry on.

use futures_util::{SinkExt, StreamExt};
use hlm_core::FilterMode;
use hlm_engine::decode::{Drafter, GenerationConfig, HybridSession};
use hlm_engine::testing::tiny_drafter;
use hlm_engine::ws_link::WsLink;
use hlm_protocol::*;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{http_get, metric};

struct Server {
    url: String,
    _dir: tempfile::TempDir,
    verifier: Drafter,
    state: std::sync::Arc<verifier_server::AppState>,
}

async fn start() -> Server {
    start_with(verifier_server::ServerConfig {
        max_context: 256,
        ..Default::default()
    })
    .await
}

async fn start_with(config: verifier_server::ServerConfig) -> Server {
    let (dir, verifier) = tiny_drafter(12);
    let state =
        verifier_server::AppState::with_config(verifier.model_arc(), verifier.vocab_info(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = verifier_server::router(state.clone(), None);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        url: format!("ws://{addr}/ws"),
        _dir: dir,
        verifier,
        state,
    }
}

async fn generate(
    url: &str,
    drafter: &mut Drafter,
    mode: FilterMode,
) -> hlm_engine::decode::Summary {
    let link = WsLink::connect(url).await.unwrap();
    let mut s = HybridSession::connect(link, drafter.vocab_info(), "test")
        .await
        .unwrap();
    let cfg = GenerationConfig {
        max_tokens: 24,
        mode,
        ..Default::default()
    };
    s.generate(drafter, &[5, 6, 7], &cfg, &mut |_| true)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_generation_in_every_mode() {
    let server = start().await;
    let (_d, mut drafter) = tiny_drafter(11);
    for mode in [
        FilterMode::Always,
        FilterMode::Uncertainty,
        FilterMode::UncertaintyImportance,
        FilterMode::Never,
    ] {
        let s = generate(&server.url, &mut drafter, mode).await;
        let t = &s.totals;
        assert_eq!(t.tokens, t.skipped + t.accepted + t.resampled, "{mode}");
        match mode {
            FilterMode::Always => {
                assert_eq!(t.skipped, 0);
                assert!(t.llm_forward_passes > 0 && t.bytes_down > 0);
            }
            FilterMode::Never => assert_eq!(t.bytes_up, 0),
            _ => assert!(t.bytes_up > 0),
        }
    }
    drop(server.verifier);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn hello(ws: &mut Ws, vocab: &VocabInfo, sampling: Sampling) {
    let msg = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        client: "raw".into(),
        vocab: vocab.clone(),
        sampling,
    };
    ws.send(Message::Binary(encode_client(&msg).into()))
        .await
        .unwrap();
    match next_msg(ws).await {
        Some(Message::Binary(b)) => assert!(matches!(
            decode_server(&b).unwrap(),
            ServerMsg::Welcome { .. }
        )),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

async fn next_msg(ws: &mut Ws) -> Option<Message> {
    tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
        .await
        .expect("server answered in time")
        .map(|r| r.unwrap_or(Message::Close(None)))
}

/// Sends `frame` and expects an Error message with `code`, then a close frame with its code.
async fn expect_rejected(ws: &mut Ws, frame: Vec<u8>, code: ErrorCode) {
    ws.send(Message::Binary(frame.into())).await.unwrap();
    let mut saw_error = false;
    loop {
        match next_msg(ws).await {
            Some(Message::Binary(b)) => match decode_server(&b).unwrap() {
                ServerMsg::Error { code: c, message } => {
                    assert_eq!(c, code, "{message}");
                    assert!(!message.is_empty());
                    saw_error = true;
                }
                other => panic!("expected an error, got {other:?}"),
            },
            Some(Message::Close(Some(f))) => {
                assert!(saw_error, "close without an error message");
                assert_eq!(u16::from(f.code), code.close_code());
                return;
            }
            other => panic!("expected Error then Close, got {other:?}"),
        }
    }
}

fn round(tokens: Vec<BlockToken>) -> Vec<u8> {
    encode_client(&ClientMsg::Round(Round {
        round: 0,
        base: 0,
        tokens,
    }))
}

fn tok(id: u32, verify: bool, dist: Option<DraftDist>) -> BlockToken {
    BlockToken { id, verify, dist }
}

/// A table of bad inputs run against one server with a bystander session open: long because the
/// table is, each entry a few lines (the frame, the expected code and close code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_named_and_do_not_disturb_other_sessions() {
    let server = start().await;
    let vocab = server.verifier.vocab_info();
    let temp = Sampling::Temperature {
        temperature: 1.0,
        seed: 1,
    };
    // A healthy session that stays open throughout.
    let (_d, mut drafter) = tiny_drafter(11);
    let link = WsLink::connect(&server.url).await.unwrap();
    let mut healthy = HybridSession::connect(link, drafter.vocab_info(), "healthy")
        .await
        .unwrap();
    let cfg = GenerationConfig {
        max_tokens: 8,
        mode: FilterMode::Always,
        ..Default::default()
    };

    let mut wrong_version = encode_client(&ClientMsg::Reset { sampling: temp });
    wrong_version[0] = 99;
    let mut other_vocab = vocab.clone();
    other_vocab.fingerprint ^= 1;
    let bad_prob = |p: f32| {
        Some(DraftDist::Exact {
            vocab_size: vocab.size,
            entries: vec![(1, p), (2, 0.1)],
        })
    };
    let cases: Vec<(&str, bool, Sampling, Vec<u8>, ErrorCode)> = vec![
        (
            "garbage frame",
            false,
            temp,
            [&PROTOCOL_VERSION.to_le_bytes()[..], &[0xff; 5]].concat(),
            ErrorCode::Malformed,
        ),
        (
            "truncated frame",
            false,
            temp,
            vec![1],
            ErrorCode::Malformed,
        ),
        (
            "unknown version",
            false,
            temp,
            wrong_version,
            ErrorCode::UnsupportedVersion,
        ),
        (
            "round before hello",
            false,
            temp,
            round(vec![tok(3, false, None)]),
            ErrorCode::OutOfSync,
        ),
        (
            "vocabulary mismatch",
            false,
            temp,
            encode_client(&ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                client: "x".into(),
                vocab: other_vocab,
                sampling: temp,
            }),
            ErrorCode::VocabMismatch,
        ),
        (
            "token outside the vocabulary",
            true,
            temp,
            round(vec![tok(vocab.size + 5, false, None)]),
            ErrorCode::TokenOutOfRange,
        ),
        (
            "NaN probability",
            true,
            temp,
            round(vec![tok(3, false, None), tok(4, true, bad_prob(f32::NAN))]),
            ErrorCode::BadDistribution,
        ),
        (
            "negative probability",
            true,
            temp,
            round(vec![tok(3, false, None), tok(4, true, bad_prob(-0.5))]),
            ErrorCode::BadDistribution,
        ),
        (
            "probabilities summing over 1",
            true,
            temp,
            round(vec![tok(3, false, None), tok(4, true, bad_prob(1.5))]),
            ErrorCode::BadDistribution,
        ),
        (
            "upload without distribution",
            true,
            temp,
            round(vec![tok(3, false, None), tok(4, true, None)]),
            ErrorCode::BadDistribution,
        ),
        (
            "wrong base position",
            true,
            temp,
            encode_client(&ClientMsg::Round(Round {
                round: 0,
                base: 7,
                tokens: vec![tok(3, false, None)],
            })),
            ErrorCode::OutOfSync,
        ),
        (
            "context overflow",
            true,
            temp,
            round((0..300).map(|i| tok(i % 90, false, None)).collect()),
            ErrorCode::ContextFull,
        ),
    ];
    for (name, needs_hello, sampling, frame, code) in cases {
        let mut ws = raw(&server.url).await;
        if needs_hello {
            hello(&mut ws, &vocab, sampling).await;
        }
        eprintln!("case: {name}");
        expect_rejected(&mut ws, frame, code).await;
        // The healthy session still generates.
        let s = healthy
            .generate(&mut drafter, &[5, 6, 7], &cfg, &mut |_| true)
            .await
            .unwrap();
        assert!(s.totals.tokens > 0, "after {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_refused() {
    let server = start().await;
    let mut ws = raw(&server.url).await;
    let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
    let _ = ws.send(Message::Binary(big.into())).await;
    // The close code is what tells the client why (the server recognises the error by its type).
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), ErrorCode::TooLarge.close_code())
        }
        other => panic!("expected a close frame with TooLarge's code, got {other:?}"),
    }
    // The server still serves new sessions.
    let (_d, mut drafter) = tiny_drafter(11);
    let s = generate(&server.url, &mut drafter, FilterMode::Always).await;
    assert!(s.totals.tokens > 0);
}

/// Reads the refusal a server sends right after the upgrade: an Error message, then a close frame.
async fn expect_refusal(ws: &mut Ws, code: ErrorCode) {
    match next_msg(ws).await {
        Some(Message::Binary(b)) => match decode_server(&b).unwrap() {
            ServerMsg::Error { code: c, message } => assert_eq!(c, code, "{message}"),
            other => panic!("expected an error, got {other:?}"),
        },
        other => panic!("expected an error message, got {other:?}"),
    }
    match next_msg(ws).await {
        Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), code.close_code()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_by_header_or_subprotocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = start_with(verifier_server::ServerConfig {
        tokens: vec!["s3cret".into(), "other-token".into()],
        ..Default::default()
    })
    .await;
    let vocab = server.verifier.vocab_info();
    // No token, then a wrong one: refused by name.
    let mut ws = raw(&server.url).await;
    expect_refusal(&mut ws, ErrorCode::Unauthorized).await;
    let mut req = server.url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer s3cre".parse().unwrap());
    let mut ws = tokio_tungstenite::connect_async(req).await.unwrap().0;
    expect_refusal(&mut ws, ErrorCode::Unauthorized).await;
    // The engine's client with the right token generates.
    let (_d, mut drafter) = tiny_drafter(11);
    let link = WsLink::connect_with_token(&server.url, Some("s3cret"))
        .await
        .unwrap();
    let mut s = HybridSession::connect(link, drafter.vocab_info(), "t")
        .await
        .unwrap();
    let cfg = GenerationConfig {
        max_tokens: 6,
        ..Default::default()
    };
    assert!(
        s.generate(&mut drafter, &[5, 6], &cfg, &mut |_| true)
            .await
            .unwrap()
            .totals
            .tokens
            > 0
    );
    // A wrong token through the engine's client is a clear error.
    let link = WsLink::connect_with_token(&server.url, Some("nope"))
        .await
        .unwrap();
    let err = HybridSession::connect(link, drafter.vocab_info(), "t")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("wrong token"), "{err}");
    // Browsers: the token as a subprotocol; the server selects `hlm-v1`.
    let mut req = server.url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "hlm-v1, hlm-token.other-token".parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "hlm-v1"
    );
    hello(&mut ws, &vocab, Sampling::Greedy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_sessions_are_refused_and_slots_come_back() {
    let server = start_with(verifier_server::ServerConfig {
        max_sessions: 1,
        ..Default::default()
    })
    .await;
    let vocab = server.verifier.vocab_info();
    let mut first = raw(&server.url).await;
    hello(&mut first, &vocab, Sampling::Greedy).await;
    let mut second = raw(&server.url).await;
    expect_refusal(&mut second, ErrorCode::Overloaded).await;
    first.close(None).await.unwrap();
    drop(first);
    // The slot is freed once the first session has ended.
    let mut admitted = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut ws = raw(&server.url).await;
        let msg = ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            client: "again".into(),
            vocab: vocab.clone(),
            sampling: Sampling::Greedy,
        };
        ws.send(Message::Binary(encode_client(&msg).into()))
            .await
            .unwrap();
        if let Some(Message::Binary(b)) = next_msg(&mut ws).await {
            if matches!(decode_server(&b).unwrap(), ServerMsg::Welcome { .. }) {
                admitted = true;
                break;
            }
        }
    }
    assert!(admitted, "the freed slot was never reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed() {
    let server = start_with(verifier_server::ServerConfig {
        idle_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut ws = raw(&server.url).await;
    hello(&mut ws, &server.verifier.vocab_info(), Sampling::Greedy).await;
    let t = std::time::Instant::now();
    expect_refusal(&mut ws, ErrorCode::Idle).await;
    assert!(t.elapsed() >= std::time::Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_session_with_1001() {
    let server = start().await;
    let vocab = server.verifier.vocab_info();
    let mut a = raw(&server.url).await;
    let mut b = raw(&server.url).await;
    hello(&mut a, &vocab, Sampling::Greedy).await;
    hello(&mut b, &vocab, Sampling::Greedy).await;
    assert_eq!(server.state.active_sessions(), 2);
    let drain = tokio::spawn({
        let state = server.state.clone();
        async move { state.shut_down(std::time::Duration::from_secs(5)).await }
    });
    for ws in [&mut a, &mut b] {
        match next_msg(ws).await {
            Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    drop((a, b));
    assert_eq!(drain.await.unwrap(), 0, "sessions left after the drain");
    // Draining: a new session is refused before the upgrade (HTTP 503, which a balancer such as
    // nginx passes on to another replica), and /health says so.
    match tokio_tungstenite::connect_async(server.url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected HTTP 503 while draining, got {other:?}"),
    }
    let health = http_get(&server.url, "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("draining"),
        "{health}"
    );
}

/// The real binary: SIGTERM closes open sessions with 1001 and the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_verifier-server"))
        .args([
            "--model",
            "smollm2-135m-instruct-q4_1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--drain",
            "5",
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut ws = None;
    for _ in 0..200 {
        if let Ok((w, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
            ws = Some(w);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut ws = ws.expect("server came up");
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    drop(ws);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = start_with(verifier_server::ServerConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..Default::default()
    })
    .await;
    let vocab = server.verifier.vocab_info();
    let with_origin = |origin: &str| {
        let mut req = server.url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(with_origin("https://evil.example"))
        .await
        .unwrap();
    expect_refusal(&mut ws, ErrorCode::ForbiddenOrigin).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(with_origin("https://app.example"))
        .await
        .unwrap();
    hello(&mut ws, &vocab, Sampling::Greedy).await;
    // The server's own page (same host) is allowed.
    let host = server
        .url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(with_origin(&format!("http://{host}")))
        .await
        .unwrap();
    hello(&mut ws, &vocab, Sampling::Greedy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_endpoints() {
    let server = start().await;
    let health = http_get(&server.url, "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("ok "),
        "{health}"
    );
    let before = http_get(&server.url, "/metrics").await;
    let (_d, mut drafter) = tiny_drafter(11);
    generate(&server.url, &mut drafter, FilterMode::Always).await;
    let after = http_get(&server.url, "/metrics").await;
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");
    use verifier_server::telemetry::names;
    let round_seconds_count = format!("{}_count", names::ROUND_SECONDS);
    for name in [
        names::ROUNDS_TOTAL,
        names::TOKENS_VERIFIED_TOTAL,
        names::FORWARD_TOKENS_TOTAL,
        names::BYTES_IN_TOTAL,
        names::BYTES_OUT_TOTAL,
        names::SESSIONS_TOTAL,
        &round_seconds_count,
    ] {
        assert!(
            metric(&after, name) > metric(&before, name),
            "{name} did not grow:\n{after}"
        );
    }
}

/// `/health` is ready only when the model answers: with the model held busy and no recent
/// forward, it answers 503; once the model is free, the one-token probe passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_the_model() {
    let server = start_with(verifier_server::ServerConfig {
        max_context: 256,
        health_patience: std::time::Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let busy = server.state.compute.acquire().await.unwrap();
    let health = http_get(&server.url, "/health").await;
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains("not ready"), "{health}");
    drop(busy);
    let health = http_get(&server.url, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("kv_per_session_mb="), "{health}");
}

#[test]
fn kv_memory_budget_is_checked_with_hand_computed_sizes() {
    let (_d, v) = tiny_drafter(12);
    let cfg = v.model().config();
    let per_position = cfg.layers * 2 * cfg.kv_heads * cfg.head_dim * 4;
    let mut config = verifier_server::ServerConfig {
        max_context: 200,
        max_sessions: 10,
        ..Default::default()
    };
    assert_eq!(config.kv_bytes_per_session(cfg), 200 * per_position);
    assert!(
        config.check_memory(cfg).is_ok(),
        "no budget: nothing to check"
    );
    config.max_kv_bytes = Some(10 * 200 * per_position);
    assert!(config.check_memory(cfg).is_ok(), "exactly fits");
    config.max_kv_bytes = Some(10 * 200 * per_position - 1);
    let err = config.check_memory(cfg).unwrap_err();
    assert!(err.contains("--max-sessions to 9"), "{err}");
    assert!(err.contains("--max-context to 199"), "{err}");
}

/// The verifier alone over a real socket (`Generate`): its streamed tokens are the model's own
/// greedy generation, and a client that stops early ends the server's generation (the server
/// reads the `Reset` between tokens) and can ask again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_generation_streams_over_the_socket() {
    let server = start().await;
    // The demo's "server alone" figure: one over the health probe's one-token forward time.
    let config = http_get(&server.url, "/client-config.json").await;
    assert!(config.contains("\"server_alone_tok_s\":null"), "{config}");
    assert!(http_get(&server.url, "/health").await.contains("200 OK"));
    let config = http_get(&server.url, "/client-config.json").await;
    let body = config.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["server_alone_tok_s"].as_f64().unwrap() > 0.0, "{config}");
    let prompt = [5u32, 6, 7];
    let expected = server
        .verifier
        .model()
        .generate_greedy(&prompt, 24)
        .unwrap();
    let link = WsLink::connect(&server.url).await.unwrap();
    let vocab = server.verifier.vocab_info();
    let mut s = HybridSession::connect(link, vocab, "test").await.unwrap();
    let cfg = GenerationConfig {
        max_tokens: 24,
        ..Default::default()
    };
    let tok = server.verifier.tokenizer();
    let mut n = 0;
    let stopped = s
        .generate_on_server(tok, &prompt, &cfg, &mut |_| {
            n += 1;
            n < 2
        })
        .await
        .unwrap();
    assert_eq!(stopped.ids, expected[..2]);
    let full = s
        .generate_on_server(tok, &prompt, &cfg, &mut |_| true)
        .await
        .unwrap();
    assert_eq!(full.ids, expected);
    assert_eq!(full.totals.llm_forward_passes, expected.len());
    let text = http_get(&server.url, "/metrics").await;
    assert!(metric(&text, "hlm_solo_tokens_total") >= expected.len() as f64);
}
