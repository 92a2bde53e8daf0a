//! Rounds from several sessions that wait at the same moment are verified in one forward pass,
//! over real WebSockets: each session gets the verdict it gets alone, a bad round fails only its
//! own session, a session that leaves mid-batch frees its slot, and `/metrics` shows the batch.
//! (Its own test binary: the metrics are process-wide.)

use futures_util::{SinkExt, StreamExt};
use hlm_engine::testing::{tiny_drafter, without_timing, ScriptedClient};
use hlm_engine::verifier::VerifierSession;
use hlm_protocol::*;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{http_get, metric};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, msg: &ClientMsg) {
    let frame = encode_client(msg);
    ws.send(Message::Binary(frame.into())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("server answered in time")
        .expect("socket open")
        .unwrap()
}

async fn recv_server_msg(ws: &mut Ws) -> ServerMsg {
    match recv(ws).await {
        Message::Binary(b) => decode_server(&b).unwrap(),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

/// Polls `cond` every 10 ms for up to 20 s.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_waiting_together_share_one_forward_and_each_gets_its_own_verdict() {
    let (_dir, verifier) = tiny_drafter(12);
    let (model, vocab) = (verifier.model_arc(), verifier.vocab_info());
    let state = verifier_server::AppState::new(model.clone(), vocab.clone(), 256);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let app = verifier_server::router(state.clone(), None);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Five sessions say hello; then, while the model is busy (the test holds its turn), each
    // sends its first round: three good ones, one out of sync, and one whose client then leaves.
    let n = 5;
    let mut clients: Vec<ScriptedClient> = (0..n)
        .map(|i| ScriptedClient::new(i as u64, vocab.clone(), Sampling::Greedy))
        .collect();
    let mut sockets = Vec::new();
    for c in &mut clients {
        let mut ws = tokio_tungstenite::connect_async(&url).await.unwrap().0;
        send(&mut ws, &c.next_msg()).await;
        assert!(matches!(
            recv_server_msg(&mut ws).await,
            ServerMsg::Welcome { .. }
        ));
        sockets.push(ws);
    }
    let rounds: Vec<ClientMsg> = clients.iter_mut().map(|c| c.next_msg()).collect();
    let turn = state.compute.acquire().await.unwrap();
    for (i, ws) in sockets.iter_mut().enumerate() {
        let mut msg = rounds[i].clone();
        if let (3, ClientMsg::Round(r)) = (i, &mut msg) {
            r.base = 7;
        }
        send(ws, &msg).await;
    }
    // The worker holds the first message while it waits for the turn; the others queue.
    wait_until("every round is queued", || state.queued_messages() == n - 1).await;
    let leaver = sockets.pop().unwrap();
    drop(leaver);
    drop(turn);

    // Each good session's verdict is the one a session alone gives for the same messages.
    for (i, ws) in sockets.iter_mut().enumerate().take(3) {
        let mut alone = VerifierSession::new(model.clone(), vocab.clone(), "alone", 256);
        let mut c = ScriptedClient::new(i as u64, vocab.clone(), Sampling::Greedy);
        alone.handle(c.next_msg()).unwrap();
        let expected = alone.handle(rounds[i].clone()).unwrap().unwrap();
        assert!(matches!(expected, ServerMsg::Verdict(_)));
        let got = without_timing(recv_server_msg(ws).await);
        assert_eq!(got, without_timing(expected), "session {i}");
        clients[i].on_reply(&got);
    }
    match recv_server_msg(&mut sockets[3]).await {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::OutOfSync),
        other => panic!("expected the out-of-sync error, got {other:?}"),
    }
    match recv(&mut sockets[3]).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), ErrorCode::OutOfSync.close_code()),
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The leaver's and the out-of-sync session's slots come back; the good three stay open.
    wait_until("two slots are freed", || state.active_sessions() == 3).await;

    // One forward pass verified the four rounds that passed their checks.
    let text = http_get(&url, "/metrics").await;
    assert_eq!(metric(&text, "hlm_batch_rounds_count"), 1.0, "{text}");
    assert_eq!(metric(&text, "hlm_batch_rounds_sum"), 4.0, "{text}");
    let positions: usize = rounds
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, m)| match m {
            ClientMsg::Round(r) => r.tokens.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(metric(&text, "hlm_batch_positions_sum"), positions as f64);

    // Sessions go on after the batch: each follows its verdict with its next round.
    for (i, ws) in sockets.iter_mut().enumerate().take(3) {
        send(ws, &clients[i].next_msg()).await;
        match recv_server_msg(ws).await {
            ServerMsg::Verdict(v) => assert_eq!(v.round, 1),
            other => panic!("expected a verdict, got {other:?}"),
        }
    }
}
