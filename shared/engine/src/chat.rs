//! Prompt formatting and streaming detokenisation.

use tokenizers::Tokenizer;

/// Wraps a user message in the ChatML template used by Qwen2.5 and SmolLM2 instruct models.
pub fn chatml(user: &str, system: Option<&str>) -> String {
    let system = system.unwrap_or("You are a helpful assistant.");
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// Turns a growing list of token ids into text pieces. Byte-level BPE tokens can split a UTF-8
/// character; a piece is held back until it decodes cleanly.
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl Default for TextStream {
    fn default() -> Self {
        Self::new()
    }
}

impl TextStream {
    pub fn new() -> Self {
        Self {
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds a token and returns the text that became final (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.ids.push(id);
        let text = tok.decode(&self.ids, true).unwrap_or_default();
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted {
            return String::new();
        }
        let piece = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
        piece
    }

    /// The whole text so far.
    pub fn text(&self, tok: &Tokenizer) -> String {
        tok.decode(&self.ids, true).unwrap_or_default()
    }
}
