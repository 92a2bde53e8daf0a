//! A `tokenizers::Tokenizer` built from a GGUF file's own metadata, so that one file is enough.
//!
//! GGUF carries the byte-level BPE vocabulary (`tokenizer.ggml.tokens`), the merges, each token's
//! type (`tokenizer.ggml.token_type`: 3 = control, 4 = user-defined become added tokens) and the
//! name of the pre-tokenizer (`tokenizer.ggml.pre`), which selects the splitting rule llama.cpp
//! uses for that family. Adapted from candle-core 0.11.1's `quantized::tokenizer` (MIT/Apache-2.0),
//! which is not built for wasm32 and lacks SmolLM's rule.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata lacks `{0}`")]
    Missing(&'static str),
    #[error("GGUF metadata `{0}` has an unexpected type")]
    BadType(&'static str),
    #[error("unsupported tokenizer model `{0}` (only byte-level BPE, `gpt2`)")]
    UnsupportedModel(String),
    #[error("invalid merge `{0}`")]
    BadMerge(String),
    #[error("building the tokenizer: {0}")]
    Build(String),
}

/// Qwen2's split rule (from its tokenizer.json; `\p{N}` alone: digits one by one).
const REGEX_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's rule: numbers in groups of up to three digits.
const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings(content: &Content, key: &'static str) -> Result<Vec<String>, TokenizerError> {
    let v = content
        .metadata
        .get(key)
        .ok_or(TokenizerError::Missing(key))?;
    let arr = v.to_vec().map_err(|_| TokenizerError::BadType(key))?;
    arr.iter()
        .map(|x| {
            x.to_string()
                .map(|s| s.to_string())
                .map_err(|_| TokenizerError::BadType(key))
        })
        .collect()
}

/// `tokenizer.ggml.tokens`, in id order.
pub fn vocab_tokens(content: &Content) -> Result<Vec<String>, TokenizerError> {
    strings(content, "tokenizer.ggml.tokens")
}

fn split(regex: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    Split::new(
        SplitPattern::Regex(regex.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(Into::into)
    .map_err(|e| TokenizerError::Build(e.to_string()))
}

pub fn tokenizer_from_gguf(content: &Content) -> Result<Tokenizer, TokenizerError> {
    let model = content
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?;
    if model != "gpt2" {
        return Err(TokenizerError::UnsupportedModel(model.clone()));
    }
    let tokens = vocab_tokens(content)?;
    let merges = strings(content, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or(TokenizerError::BadMerge(m.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "gpt2".into());
    let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
        "qwen2" => {
            tok.with_normalizer(Some(NFC))
                .map_err(|e| TokenizerError::Build(e.to_string()))?;
            Sequence::new(vec![
                split(REGEX_QWEN2)?,
                ByteLevel::new(false, false, false).into(),
            ])
            .into()
        }
        "llama3" | "llama-bpe" | "smaug-bpe" => Sequence::new(vec![
            split(REGEX_LLAMA3)?,
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        // SmolLM: every digit alone, then GPT-2's rule.
        "smollm" => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        _ => ByteLevel::new(false, true, true).into(),
    };
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    if let Some(Value::Array(types)) = content.metadata.get("tokenizer.ggml.token_type") {
        let specials: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.to_i32(), Ok(3) | Ok(4)))
            .filter_map(|(i, t)| {
                let special = matches!(t.to_i32(), Ok(3));
                tokens.get(i).map(|s| AddedToken::from(s.clone(), special))
            })
            .collect();
        tok.add_tokens(specials)
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
    }
    Ok(tok)
}
