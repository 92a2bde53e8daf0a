//! Prompt formatting and streaming detokenisation.

use tokenizers::Tokenizer;

/// Wraps a user message in the ChatML template used by Qwen2.5 and SmolLM2 instruct models.
pub fn chatml(user: &str, system: Option<&str>) -> String {
    let system = system.unwrap_or("You are a helpful assistant.");
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// A conversation in the ChatML template, ending with the assistant's turn opened. Without a
/// `system` message first, [`chatml`]'s default system message is added. Roles other than
/// `system`, `user` and `assistant` are refused.
pub fn chatml_messages<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, String> {
    let mut out = String::new();
    for (i, (role, content)) in messages.into_iter().enumerate() {
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(format!(
                "message {i}: role `{role}` is not system, user or assistant"
            ));
        }
        if i == 0 && role != "system" {
            out.push_str("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
        }
        out.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
    }
    if out.is_empty() {
        return Err("no messages".into());
    }
    out.push_str("<|im_start|>assistant\n");
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_message_is_the_single_turn_template() {
        assert_eq!(
            chatml_messages([("user", "hi")]).unwrap(),
            chatml("hi", None)
        );
        assert_eq!(
            chatml_messages([("system", "Be brief."), ("user", "hi")]).unwrap(),
            chatml("hi", Some("Be brief."))
        );
        let turns = chatml_messages([("user", "a"), ("assistant", "b"), ("user", "c")]).unwrap();
        assert!(turns.ends_with("<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"));
        assert!(chatml_messages([("tool", "x")])
            .unwrap_err()
            .contains("role `tool`"));
        assert!(chatml_messages(std::iter::empty()).is_err());
    }
}
