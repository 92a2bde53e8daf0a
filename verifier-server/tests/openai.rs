//! The OpenAI-compatible endpoint over real HTTP on loopback, called with curl as a user would,
//! against a tiny random model: the answer is the model's own generation, streamed or not, the
//! same either way; stop strings cut it; tokens, origins and bad requests are answered in
//! OpenAI's error shape.

use hlm_engine::chat::{chatml_messages, TextStream};
use hlm_engine::decode::Drafter;
use hlm_engine::model::LogitRows;
use hlm_engine::testing::tiny_drafter;
use hlm_engine::verifier::VerifierSession;
use hlm_protocol::{
    decode_server, ClientMsg, GenerateRequest, GenerationEnd, Sampling, ServerMsg, PROTOCOL_VERSION,
};
use serde_json::Value;

const CONTEXT: u32 = 256;

struct Server {
    base: String,
    _dir: tempfile::TempDir,
    verifier: Drafter,
}

async fn start_with(config: verifier_server::ServerConfig) -> Server {
    let (dir, verifier) = tiny_drafter(12);
    let state =
        verifier_server::AppState::with_config(verifier.model_arc(), verifier.vocab_info(), config);
    state.set_tokenizer(verifier.tokenizer().clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = verifier_server::router(state, None);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base: format!("http://{addr}"),
        _dir: dir,
        verifier,
    }
}

async fn start() -> Server {
    start_with(verifier_server::ServerConfig {
        max_context: CONTEXT,
        ..Default::default()
    })
    .await
}

/// `curl` with `args`; returns the HTTP status and the body.
async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl runs (scripts/setup-tools.sh installs it)");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

async fn post(s: &Server, body: &Value, headers: &[&str]) -> (u16, String) {
    let url = format!("{}/v1/chat/completions", s.base);
    let body = body.to_string();
    let mut args = vec![
        "-X",
        "POST",
        &url,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    curl(&args).await
}

/// What the server must answer: the generation a hybrid client's `Generate` gets from a
/// verifier session (the protocol's own, `hlm generate --server-only`) for the same template,
/// decoded the same way, and why it ended. The end-of-sequence token is not part of the answer.
fn expected(
    s: &Server,
    messages: &[(&str, &str)],
    max_tokens: usize,
    sampling: Sampling,
) -> (String, usize, &'static str) {
    let prompt = chatml_messages(messages.iter().copied()).unwrap();
    let ids = s.verifier.encode(&prompt).unwrap();
    let vocab = s.verifier.vocab_info();
    let mut session = VerifierSession::new(s.verifier.model_arc(), vocab.clone(), "ref", CONTEXT);
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        client: "reference".into(),
        vocab,
        sampling,
    };
    session.handle(hello).unwrap();
    let request = ClientMsg::Generate(GenerateRequest {
        request: 0,
        base: 0,
        prompt: ids,
        max_tokens: max_tokens as u32,
    });
    let mut next = session.handle(request).unwrap();
    let (mut text, mut out, mut produced) = (TextStream::new(), String::new(), 0);
    loop {
        let Some(ServerMsg::Generated(g)) = next else {
            panic!("expected a generated token, got {next:?}");
        };
        if g.end == Some(GenerationEnd::EndOfSequence) {
            return (out, produced, "stop");
        }
        out.push_str(&text.push(s.verifier.tokenizer(), g.id));
        produced += 1;
        if g.end.is_some() {
            return (out, produced, "length");
        }
        next = Some(decode_server(&session.handle_continue().frame.unwrap()).unwrap());
    }
}

/// The model's greedy answer computed here, apart from any session code: the prompt's forward,
/// then one forward per argmax token, until an end of sequence or `max_tokens`.
fn greedy_alone(s: &Server, messages: &[(&str, &str)], max_tokens: usize) -> String {
    let model = s.verifier.model();
    let prompt = chatml_messages(messages.iter().copied()).unwrap();
    let mut cache = model.new_cache();
    let mut ids = s.verifier.encode(&prompt).unwrap();
    let (mut text, mut out) = (TextStream::new(), String::new());
    for _ in 0..max_tokens {
        let step = model
            .forward(&mut cache, &ids, &LogitRows::Last, 0)
            .unwrap();
        let id = hlm_core::argmax(step.last_logits().unwrap());
        if model.config().eos_ids.contains(&id) {
            break;
        }
        out.push_str(&text.push(s.verifier.tokenizer(), id));
        ids = vec![id];
    }
    out
}

fn request(messages: &[(&str, &str)], max_tokens: usize, stream: bool) -> Value {
    let messages: Vec<Value> = messages
        .iter()
        .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
        .collect();
    serde_json::json!({"model": "anything", "messages": messages, "max_tokens": max_tokens, "stream": stream})
}

/// The `data:` payloads of a server-sent-events body.
fn events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_string())
        .collect()
}

const CHAT: &[(&str, &str)] = &[("system", "Be brief."), ("user", "Count to five.")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_is_the_models_own_generation_streamed_or_not() {
    let s = start().await;
    let (want, produced, finish) = expected(&s, CHAT, 20, Sampling::Greedy);
    assert_eq!(
        want,
        greedy_alone(&s, CHAT, 20),
        "the protocol's generation is the model's"
    );

    let (status, body) = post(&s, &request(CHAT, 20, false), &[]).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], finish);
    assert_eq!(v["usage"]["completion_tokens"], produced);
    let prompt_tokens = s
        .verifier
        .encode(&chatml_messages(CHAT.iter().copied()).unwrap())
        .unwrap()
        .len();
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["model"], s.verifier.model().name());

    let (status, body) = post(&s, &request(CHAT, 20, true), &[]).await;
    assert_eq!(status, 200, "{body}");
    let data = events(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, want);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        finish
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_seed_and_stop_strings_cut_the_answer() {
    let s = start().await;
    let sampled = |seed: u64| {
        serde_json::json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16,
                           "temperature": 0.9, "seed": seed})
    };
    let (a, b) = (
        post(&s, &sampled(7), &[]).await,
        post(&s, &sampled(7), &[]).await,
    );
    assert_eq!(a.0, 200, "{}", a.1);
    let content = |body: &str| {
        serde_json::from_str::<Value>(body).unwrap()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(content(&a.1), content(&b.1), "same seed, same answer");
    let (want, _, _) = expected(
        &s,
        &[("user", "Hello")],
        16,
        Sampling::Temperature {
            temperature: 0.9,
            seed: 7,
        },
    );
    assert_eq!(content(&a.1), want);

    // A stop string taken from the middle of the greedy answer.
    let (full, _, _) = expected(&s, CHAT, 40, Sampling::Greedy);
    let chars: Vec<char> = full.chars().collect();
    assert!(
        chars.len() >= 6,
        "the tiny model's answer is too short to cut: {full:?}"
    );
    let stop: String = chars[3..5].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let mut req = request(CHAT, 40, false);
    req["stop"] = serde_json::json!([stop]);
    let (status, body) = post(&s, &req, &[]).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], cut);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_origins_and_bad_requests_get_openai_errors() {
    let s = start_with(verifier_server::ServerConfig {
        max_context: CONTEXT,
        tokens: vec!["s3cret".into()],
        ..Default::default()
    })
    .await;
    let ok = request(&[("user", "hi")], 4, false);
    let error = |body: &str| serde_json::from_str::<Value>(body).unwrap()["error"].clone();

    let (status, body) = post(&s, &ok, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(error(&body)["type"], "authentication_error");
    assert_eq!(post(&s, &ok, &["Authorization: Bearer wrong"]).await.0, 401);
    let auth = "Authorization: Bearer s3cret";
    assert_eq!(post(&s, &ok, &[auth]).await.0, 200);
    let (status, body) = post(&s, &ok, &[auth, "Origin: https://elsewhere.example"]).await;
    assert_eq!(status, 403, "{body}");

    for (bad, code) in [
        (
            serde_json::json!({"messages": "not a list"}),
            "invalid_json",
        ),
        (serde_json::json!({"messages": []}), "invalid_messages"),
        (
            serde_json::json!({"messages": [{"role": "tool", "content": "x"}]}),
            "invalid_messages",
        ),
        (
            serde_json::json!({"messages": [{"role": "user", "content": "x"}], "temperature": -1.0}),
            "invalid_temperature",
        ),
        (
            serde_json::json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "invalid_max_tokens",
        ),
        (
            serde_json::json!({"messages": [{"role": "user", "content": "x"}], "stop": [""]}),
            "invalid_stop",
        ),
        (
            serde_json::json!({"messages": [{"role": "user", "content": "x ".repeat(400)}]}),
            "context_length_exceeded",
        ),
    ] {
        let (status, body) = post(&s, &bad, &[auth]).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(error(&body)["code"], code, "{bad}: {body}");
        assert_eq!(error(&body)["type"], "invalid_request_error");
    }
    let url = format!("{}/v1/chat/completions", s.base);
    let (status, body) = curl(&["-X", "POST", &url, "-H", auth, "-d", "{not json"]).await;
    assert_eq!(
        (status, error(&body)["code"].clone()),
        (400, Value::from("invalid_json"))
    );

    let models = format!("{}/v1/models", s.base);
    assert_eq!(curl(&[&models]).await.0, 401);
    let (status, body) = curl(&[&models, "-H", auth]).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["id"], s.verifier.model().name());
}
