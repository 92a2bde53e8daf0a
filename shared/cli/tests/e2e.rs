//! End to end: the `hlm` binary as a real subprocess, talking over a real WebSocket on loopback to
//! a verifier server running the default 1.5B model, in every filter mode; and the errors a user
//! meets when the verifier is unreachable or runs a model of another vocabulary.

use std::process::Command;
use std::sync::Arc;

async fn start_server(model: &str) -> String {
    let path = hlm_fetch::resolve(model, &mut |_| {}).unwrap();
    let (m, tok) = hlm_engine::load_model_and_tokenizer(&path, &Default::default()).unwrap();
    let vocab = hlm_engine::decode::vocab_info(&tok, m.config());
    let state = verifier_server::AppState::new(Arc::new(m), vocab, 4096);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, verifier_server::router(state, None))
            .await
            .unwrap();
    });
    format!("ws://{addr}/ws")
}

fn hlm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hlm"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlm_generate_over_websocket_in_every_mode() {
    let url = start_server("qwen2.5-coder-1.5b-instruct-q4_k_m").await;
    for mode in [
        "auto",
        "always",
        "uncertainty",
        "uncertainty+importance",
        "never",
    ] {
        let url = url.clone();
        let out = tokio::task::spawn_blocking(move || {
            hlm(&[
                "generate",
                "--server",
                &url,
                "--mode",
                mode,
                "--max-tokens",
                "16",
                "--prompt",
                "Write a Python function that adds two numbers.",
            ])
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value =
            serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
        // `auto` runs the learned head shipped for this pair, and says so first.
        let ran = if mode == "auto" { "learned" } else { mode };
        assert_eq!(summary["mode"], ran);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("filter: {ran}")), "{stderr}");
        let n = |k: &str| summary[k].as_u64().unwrap();
        assert_eq!(n("tokens"), 16, "{summary}");
        assert_eq!(n("tokens"), n("skipped") + n("accepted") + n("resampled"));
        for key in [
            "bytes_up",
            "bytes_down",
            "llm_forward_passes",
            "wall_time_s",
            "uploaded",
        ] {
            assert!(summary.get(key).is_some(), "summary lacks {key}");
        }
        match mode {
            "never" => assert_eq!(n("bytes_up"), 0),
            "always" => assert_eq!(n("uploaded"), 16),
            _ => assert!(n("bytes_up") > 0),
        }
        // The streamed text precedes the summary.
        assert!(stdout.contains(
            summary["text"]
                .as_str()
                .unwrap()
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
}

/// `--server-only`: the verifier generates alone and streams its answer over the same socket;
/// greedy, that is the text the hybrid loop produces in mode `always` (lossless).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlm_generate_server_only_is_the_hybrids_text() {
    let url = start_server("qwen2.5-coder-1.5b-instruct-q4_k_m").await;
    let run = |extra: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["generate", "--server", &url, "--max-tokens", "16"];
            args.extend(["--prompt", "Write a Python function that adds two numbers."]);
            args.extend(extra.split_whitespace());
            let out = hlm(&args);
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let summary: serde_json::Value =
                serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
            summary
        })
    };
    let server = run("--server-only").await.unwrap();
    let hybrid = run("--mode always").await.unwrap();
    assert_eq!(server["text"], hybrid["text"]);
    assert_eq!(server["ids"], hybrid["ids"]);
    assert_eq!(server["tokens"], 16);
    assert_eq!(server["llm_forward_passes"], 16);
    assert_eq!(server["draft_forward_passes"], 0);
}

/// `--stop`: the same greedy generation ends where its text first contains the string, cut before
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlm_generate_stops_at_a_stop_string() {
    let url = start_server("qwen2.5-coder-1.5b-instruct-q4_k_m").await;
    let run = move |stop: Option<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "generate".to_string(),
                "--server".into(),
                url,
                "--mode".into(),
                "always".into(),
                "--max-tokens".into(),
                "24".into(),
                "--prompt".into(),
                "Write a Python function that adds two numbers.".into(),
            ];
            if let Some(s) = stop {
                args.extend(["--stop".into(), s]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = hlm(&args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            serde_json::from_str::<serde_json::Value>(stdout.trim().lines().last().unwrap())
                .unwrap()
        })
    };
    let full = run(None).await.unwrap();
    let text = full["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 30, "{text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    assert!(!stop.contains('\\'), "{stop:?}");
    let cut = &text[..text.find(&stop).unwrap()];
    let stopped = run(Some(stop.clone())).await.unwrap();
    assert_eq!(stopped["stop_reason"], "stop-string", "{stopped}");
    assert_eq!(stopped["text"].as_str().unwrap(), cut, "stop {stop:?}");
    assert!(stopped["tokens"].as_u64() < full["tokens"].as_u64());
}

#[test]
fn unreachable_verifier_is_a_clear_error() {
    let out = hlm(&[
        "generate",
        "--server",
        "ws://127.0.0.1:9/ws",
        "--draft",
        "smollm2-135m-instruct-q4_1",
        "--prompt",
        "hi",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("verifier unreachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_mismatch_is_a_clear_error() {
    let url = start_server("smollm2-135m-instruct-q4_1").await;
    let out = tokio::task::spawn_blocking(move || {
        hlm(&[
            "generate",
            "--server",
            &url,
            "--prompt",
            "hi",
            "--max-tokens",
            "4",
        ])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model mismatch"), "{err}");
}

/// nginx terminating TLS in front of a verifier, with a CA and a server certificate for
/// `localhost` / 127.0.0.1 made with openssl.
struct TlsProxy {
    dir: tempfile::TempDir,
    port: u16,
    _nginx: verifier_server::loadgen::Nginx,
}

impl TlsProxy {
    /// Passes WebSockets to `upstream` (`ws://host:port/ws`).
    async fn start(upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let made = Command::new("sh")
            .args([
                "-ec",
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                   -keyout ca.key -out ca.pem -days 2 -subj /CN=hlm-test-ca
                 openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                   -keyout server.key -out server.csr -subj /CN=localhost
                 printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext.cnf
                 openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                   -out server.pem -days 2 -extfile ext.cnf",
            ])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let port = verifier_server::loadgen::free_port().unwrap();
        let up = upstream.trim_start_matches("ws://").trim_end_matches("/ws");
        let p = d.display();
        let conf = format!(
            "daemon off; worker_processes 1; pid {p}/nginx.pid;
             events {{}}
             http {{
               access_log off;
               client_body_temp_path {p}/cb; proxy_temp_path {p}/px; fastcgi_temp_path {p}/fc;
               uwsgi_temp_path {p}/uw; scgi_temp_path {p}/sc;
               server {{
                 listen 127.0.0.1:{port} ssl;
                 ssl_certificate {p}/server.pem;
                 ssl_certificate_key {p}/server.key;
                 location / {{
                   proxy_pass http://{up};
                   proxy_http_version 1.1;
                   proxy_set_header Upgrade $http_upgrade;
                   proxy_set_header Connection upgrade;
                   proxy_read_timeout 600s;
                 }}
               }}
             }}"
        );
        let nginx = verifier_server::loadgen::Nginx::start(d, &conf, port).expect("nginx");
        Self {
            dir,
            port,
            _nginx: nginx,
        }
    }
}

/// `hlm generate --server wss://…` through a TLS-terminating nginx whose certificate comes from a
/// private CA: works with `--ca-cert`, and without it fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlm_generate_over_wss_through_a_tls_proxy() {
    let url = start_server("qwen2.5-coder-1.5b-instruct-q4_k_m").await;
    let proxy = TlsProxy::start(&url).await;
    let wss = format!("wss://localhost:{}/ws", proxy.port);
    let ca = proxy.dir.path().join("ca.pem").display().to_string();
    let run = |extra: Vec<String>| {
        let wss = wss.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["generate", "--server", &wss, "--max-tokens", "4"];
            args.extend(["--prompt", "Say hi."]);
            args.extend(extra.iter().map(String::as_str));
            hlm(&args)
        })
    };
    let out = run(vec!["--ca-cert".into(), ca]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(summary["tokens"], 4, "{summary}");

    let out = run(Vec::new()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unreachable") && stderr.contains("certificate"),
        "{stderr}"
    );
    let missing = run(vec!["--ca-cert".into(), "/nonexistent/ca.pem".into()])
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("CA certificate /nonexistent/ca.pem"),
        "{stderr}"
    );
}
