//! A `tokenizers::Tokenizer` built from a GGUF file's own metadata, so that one file is enough.
//!
//! GGUF carries the byte-level BPE vocabulary (`tokenizer.ggml.tokens`, in id order), the merges,
//! each token's type (`tokenizer.ggml.token_type`) and the name of the pre-tokenizer
//! (`tokenizer.ggml.pre`), which llama.cpp maps to the splitting rule of the model family. This
//! module rebuilds what the family's official `tokenizer.json` would contain:
//!
//! | `tokenizer.ggml.pre` | normalizer | pre-tokenizer |
//! | --- | --- | --- |
//! | `qwen2`, `deepseek-r1-qwen` | NFC | Qwen2's regex (digits one by one), byte level |
//! | `llama3`, `llama-v3`, `llama-bpe`, `smaug-bpe` | none | Llama 3's regex (digits in groups of up to three), byte level; merges are not applied to whole vocabulary words (`ignore_merges`) |
//! | `smollm`, `starcoder`, `refact`, `codeshell` | none | every digit alone (`\p{N}`), then GPT-2's rule |
//! | `gpt2`, `gpt-2`, `default`, or no key at all | none | GPT-2's rule |
//!
//! Control tokens (type 3) become special added tokens and user-defined tokens (type 4) plain
//! added tokens, so that `<|im_start|>` and the like encode to one id each and are never split by
//! the regex. Any other `tokenizer.ggml.pre` and any model other than byte-level BPE (`gpt2`),
//! e.g. SentencePiece (`llama`), is refused with an error that says so.
//!
//! Adapted from candle-core 0.11.1's `quantized::tokenizer` (MIT/Apache-2.0, by the candle
//! authors), which is not compiled for wasm32 and has no rule for SmolLM. Everything here builds
//! for wasm32 with `tokenizers`' `unstable_wasm` feature (regexes run on fancy-regex, no onig).

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

/// What can be wrong with a GGUF's tokenizer metadata.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata lacks `{0}`, which a tokenizer needs")]
    Missing(&'static str),
    #[error("GGUF metadata `{key}` is not {expected}")]
    BadType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("unsupported tokenizer model `{0}` (tokenizer.ggml.model): only byte-level BPE (`gpt2`) is supported, not e.g. SentencePiece (`llama`)")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer `{name}` (tokenizer.ggml.pre); supported: {supported}")]
    UnsupportedPre { name: String, supported: String },
    #[error(
        "invalid merge `{0}` in tokenizer.ggml.merges (expected two tokens separated by one space)"
    )]
    BadMerge(String),
    #[error("building the tokenizer: {0}")]
    Build(String),
}

/// Qwen2's split rule, exactly as in its tokenizer.json: `\p{N}` alone, so digits one by one.
const REGEX_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's rule: numbers in groups of up to three digits.
const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The splitting rules this module knows, by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreRule {
    Qwen2,
    Llama3,
    /// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_SMOLLM` (and StarCoder's): `\p{N}`, then GPT-2's regex.
    SmolLm,
    Gpt2,
}

/// `tokenizer.ggml.pre` values and their rule.
const PRE_NAMES: &[(&str, PreRule)] = &[
    ("qwen2", PreRule::Qwen2),
    ("deepseek-r1-qwen", PreRule::Qwen2),
    ("llama3", PreRule::Llama3),
    ("llama-v3", PreRule::Llama3),
    ("llama-bpe", PreRule::Llama3),
    ("smaug-bpe", PreRule::Llama3),
    ("smollm", PreRule::SmolLm),
    ("starcoder", PreRule::SmolLm),
    ("refact", PreRule::SmolLm),
    ("codeshell", PreRule::SmolLm),
    ("gpt2", PreRule::Gpt2),
    ("gpt-2", PreRule::Gpt2),
    ("default", PreRule::Gpt2),
];

/// The `tokenizer.ggml.pre` values [`tokenizer_from_gguf`] accepts (a missing key means `gpt2`).
pub fn supported_pre_tokenizers() -> Vec<&'static str> {
    PRE_NAMES.iter().map(|(n, _)| *n).collect()
}

const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

fn get<'a>(content: &'a Content, key: &'static str) -> Result<&'a Value, TokenizerError> {
    content
        .metadata
        .get(key)
        .ok_or(TokenizerError::Missing(key))
}

fn string<'a>(content: &'a Content, key: &'static str) -> Result<Option<&'a str>, TokenizerError> {
    content
        .metadata
        .get(key)
        .map(|v| {
            v.to_string()
                .map(|s| s.as_str())
                .map_err(|_| TokenizerError::BadType {
                    key,
                    expected: "a string",
                })
        })
        .transpose()
}

fn strings(content: &Content, key: &'static str) -> Result<Vec<String>, TokenizerError> {
    let bad = TokenizerError::BadType {
        key,
        expected: "an array of strings",
    };
    let arr = get(content, key)?.to_vec().map_err(|_| bad)?;
    arr.iter()
        .map(|x| {
            x.to_string()
                .map(|s| s.to_string())
                .map_err(|_| TokenizerError::BadType {
                    key,
                    expected: "an array of strings",
                })
        })
        .collect()
}

/// Any GGUF integer as i64.
pub(crate) fn int(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

fn token_id(content: &Content, key: &'static str, n_tokens: usize) -> Option<u32> {
    let id = content.metadata.get(key).and_then(int)?;
    (0..n_tokens as i64).contains(&id).then_some(id as u32)
}

fn flag(content: &Content, key: &'static str) -> bool {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false)
}

fn build_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

/// `tokenizer.ggml.tokens`, in id order.
pub fn vocab_tokens(content: &Content) -> Result<Vec<String>, TokenizerError> {
    strings(content, "tokenizer.ggml.tokens")
}

fn pre_rule(content: &Content) -> Result<PreRule, TokenizerError> {
    let Some(name) = string(content, "tokenizer.ggml.pre")? else {
        return Ok(PreRule::Gpt2);
    };
    PRE_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .ok_or_else(|| TokenizerError::UnsupportedPre {
            name: name.to_string(),
            supported: supported_pre_tokenizers().join(", "),
        })
}

fn split(regex: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    Split::new(
        SplitPattern::Regex(regex.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(Into::into)
    .map_err(build_err)
}

/// Builds the tokenizer described by a GGUF's metadata (see the module documentation).
pub fn tokenizer_from_gguf(content: &Content) -> Result<Tokenizer, TokenizerError> {
    let model = string(content, "tokenizer.ggml.model")?
        .ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?;
    if !model.eq_ignore_ascii_case("gpt2") {
        return Err(TokenizerError::UnsupportedModel(model.to_string()));
    }
    let rule = pre_rule(content)?;
    let tokens = vocab_tokens(content)?;
    let merges = strings(content, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_string(), b.to_string()))
            }
            _ => Err(TokenizerError::BadMerge(m)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut bpe = BPE::builder().vocab_and_merges(vocab, merges);
    if let Some(unk) = token_id(content, "tokenizer.ggml.unknown_token_id", tokens.len()) {
        bpe = bpe.unk_token(tokens[unk as usize].clone());
    }
    if rule == PreRule::Llama3 {
        // Llama 3's tokenizer.json: a word that is itself in the vocabulary is one token.
        bpe = bpe.ignore_merges(true);
    }
    let mut tok = Tokenizer::new(bpe.build().map_err(build_err)?);

    let (pre, trim_offsets): (PreTokenizerWrapper, bool) = match rule {
        PreRule::Qwen2 => {
            tok.with_normalizer(Some(NFC)).map_err(build_err)?;
            let seq = vec![
                split(REGEX_QWEN2)?,
                ByteLevel::new(false, false, false).into(),
            ];
            (Sequence::new(seq).into(), false)
        }
        PreRule::Llama3 => {
            let seq = vec![
                split(REGEX_LLAMA3)?,
                ByteLevel::new(false, true, false).into(),
            ];
            (Sequence::new(seq).into(), true)
        }
        PreRule::SmolLm => {
            let seq = vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ];
            (Sequence::new(seq).into(), true)
        }
        PreRule::Gpt2 => (ByteLevel::new(false, true, true).into(), true),
    };
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, trim_offsets, true)));
    let byte_level = ByteLevelProcessor::new(false, trim_offsets, true);
    tok.with_post_processor(Some(post_processor(content, &tokens, byte_level)?));

    // Control and user-defined tokens, matched on the raw text before any splitting.
    if let Some(types) = content.metadata.get("tokenizer.ggml.token_type") {
        let types = types.to_vec().map_err(|_| TokenizerError::BadType {
            key: "tokenizer.ggml.token_type",
            expected: "an array of integers",
        })?;
        let added: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter_map(|(t, s)| match int(t) {
                Some(TOKEN_TYPE_CONTROL) => Some(AddedToken::from(s.clone(), true)),
                Some(TOKEN_TYPE_USER_DEFINED) => Some(AddedToken::from(s.clone(), false)),
                _ => None,
            })
            .map(|t| t.normalized(false))
            .collect();
        tok.add_tokens(added).map_err(build_err)?;
    }
    Ok(tok)
}

/// BOS/EOS around `encode(.., add_special_tokens = true)` as `tokenizer.ggml.add_bos_token` /
/// `add_eos_token` ask; otherwise the byte-level post-processor alone (offsets only).
fn post_processor(
    content: &Content,
    tokens: &[String],
    byte_level: ByteLevelProcessor,
) -> Result<PostProcessorWrapper, TokenizerError> {
    let n = tokens.len();
    let bos = token_id(content, "tokenizer.ggml.bos_token_id", n)
        .filter(|_| flag(content, "tokenizer.ggml.add_bos_token"));
    let eos = token_id(content, "tokenizer.ggml.eos_token_id", n)
        .filter(|_| flag(content, "tokenizer.ggml.add_eos_token"));
    if bos.is_none() && eos.is_none() {
        return Ok(byte_level.into());
    }
    let name = |id: Option<u32>| id.map(|i| tokens[i as usize].clone());
    let (bos_s, eos_s) = (name(bos), name(eos));
    let mut single = Vec::new();
    let mut pair = Vec::new();
    single.extend(bos_s.clone());
    single.push("$A".to_string());
    single.extend(eos_s.clone());
    for seq in ["$A:0", "$B:1"] {
        let type_id = &seq[3..];
        pair.extend(bos_s.as_ref().map(|b| format!("{b}:{type_id}")));
        pair.push(seq.to_string());
        pair.extend(eos_s.as_ref().map(|e| format!("{e}:{type_id}")));
    }
    let specials: Vec<(String, u32)> = bos_s
        .into_iter()
        .zip(bos)
        .chain(eos_s.into_iter().zip(eos))
        .collect();
    let template = TemplateProcessing::builder()
        .try_single(single)
        .map_err(build_err)?
        .try_pair(pair)
        .map_err(build_err)?
        .special_tokens(specials)
        .build()
        .map_err(build_err)?;
    Ok(PostProcessorWrapper::Sequence(
        tokenizers::processors::sequence::Sequence::new(vec![byte_level.into(), template.into()]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::VersionedMagic;
    use std::collections::HashMap;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    /// A GGUF tokenizer over the 256 byte-level characters, a few merged tokens and two added
    /// tokens (`<|im_start|>` control, `<tool_call>` user-defined).
    fn content(model: &str, pre: Option<&str>) -> Content {
        let mut tokens: Vec<String> = ByteLevel::alphabet()
            .into_iter()
            .map(String::from)
            .collect();
        tokens.sort();
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "1 2", "12 3"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        tokens.push("<|im_start|>".into());
        tokens.push("<tool_call>".into());
        let n = tokens.len();
        let mut types = vec![Value::I32(1); n];
        types[n - 2] = Value::I32(3);
        types[n - 1] = Value::I32(4);
        let mut md = HashMap::new();
        md.insert("tokenizer.ggml.model".to_string(), s(model));
        if let Some(p) = pre {
            md.insert("tokenizer.ggml.pre".to_string(), s(p));
        }
        md.insert(
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(tokens.iter().map(|t| s(t)).collect()),
        );
        md.insert(
            "tokenizer.ggml.merges".to_string(),
            Value::Array(merges.iter().map(|m| s(m)).collect()),
        );
        md.insert("tokenizer.ggml.token_type".to_string(), Value::Array(types));
        Content {
            magic: VersionedMagic::GgufV3,
            metadata: md,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    fn pieces(tok: &Tokenizer, text: &str) -> Vec<String> {
        let mut pts = PreTokenizedString::from(text);
        tok.get_pre_tokenizer()
            .unwrap()
            .pre_tokenize(&mut pts)
            .unwrap();
        pts.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(_, (a, b), _)| text[a..b].to_string())
            .collect()
    }

    #[test]
    fn splitting_rules_per_family() {
        let text = "x 12345 it's";
        let cases: [(Option<&str>, &[&str]); 5] = [
            (
                Some("qwen2"),
                &["x", " ", "1", "2", "3", "4", "5", " it", "'s"],
            ),
            (Some("llama3"), &["x", " ", "123", "45", " it", "'s"]),
            (
                Some("smollm"),
                &["x", " ", "1", "2", "3", "4", "5", " it", "'s"],
            ),
            (Some("gpt2"), &["x", " 12345", " it", "'s"]),
            (None, &["x", " 12345", " it", "'s"]),
        ];
        for (pre, want) in cases {
            let tok = tokenizer_from_gguf(&content("gpt2", pre)).unwrap();
            assert_eq!(pieces(&tok, text), want, "{pre:?}");
        }
    }

    #[test]
    fn merges_added_tokens_and_round_trips() {
        let c = content("gpt2", Some("qwen2"));
        let tokens = vocab_tokens(&c).unwrap();
        let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;
        let tok = tokenizer_from_gguf(&c).unwrap();
        let enc = tok
            .encode("hello<|im_start|> w<tool_call>123", false)
            .unwrap();
        assert_eq!(
            enc.get_ids(),
            [
                id("hello"),
                id("<|im_start|>"),
                id("Ġw"),
                id("<tool_call>"),
                id("1"),
                id("2"),
                id("3")
            ]
        );
        // Control tokens are special (skipped on request), user-defined ones are text.
        assert_eq!(
            tok.decode(enc.get_ids(), true).unwrap(),
            "hello w<tool_call>123"
        );
        let text = "naïve café — 数字 🚀\r\n\tend <|im_start|>user\n";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        // With SmolLM's rule digits are split too; with GPT-2's, "123" is one merged token.
        let smol = tokenizer_from_gguf(&content("gpt2", Some("smollm"))).unwrap();
        assert_eq!(
            smol.encode("123", false).unwrap().get_ids(),
            [id("1"), id("2"), id("3")]
        );
        let gpt2 = tokenizer_from_gguf(&content("gpt2", None)).unwrap();
        assert_eq!(gpt2.encode("123", false).unwrap().get_ids(), [id("123")]);
    }

    #[test]
    fn bos_is_added_when_the_gguf_asks() {
        let mut c = content("gpt2", Some("llama3"));
        let n = vocab_tokens(&c).unwrap().len() as u32;
        c.metadata.insert(
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(n - 2), // <|im_start|> as BOS
        );
        let tok = tokenizer_from_gguf(&c).unwrap();
        assert_eq!(tok.encode("hello", true).unwrap().get_ids().len(), 1);
        c.metadata
            .insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
        let tok = tokenizer_from_gguf(&c).unwrap();
        let ids = tok.encode("hello", true).unwrap().get_ids().to_vec();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], n - 2);
        assert_eq!(tok.encode("hello", false).unwrap().get_ids().len(), 1);
    }

    #[test]
    fn unsupported_models_and_pre_tokenizers_are_named() {
        let e = tokenizer_from_gguf(&content("llama", None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`llama`") && e.contains("SentencePiece"), "{e}");
        let e = tokenizer_from_gguf(&content("gpt2", Some("chatglm-bpe")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`chatglm-bpe`") && e.contains("qwen2") && e.contains("smollm"),
            "{e}"
        );
        let mut c = content("gpt2", None);
        c.metadata.remove("tokenizer.ggml.merges");
        let e = tokenizer_from_gguf(&c).unwrap_err().to_string();
        assert!(e.contains("tokenizer.ggml.merges"), "{e}");
        c.metadata
            .insert("tokenizer.ggml.merges".into(), Value::Array(vec![s("ab")]));
        let e = tokenizer_from_gguf(&c).unwrap_err().to_string();
        assert!(e.contains("invalid merge `ab`"), "{e}");
        c.metadata.remove("tokenizer.ggml.model");
        assert!(matches!(
            tokenizer_from_gguf(&c),
            Err(TokenizerError::Missing("tokenizer.ggml.model"))
        ));
    }
}
