//! Stop conditions: where a generation ends besides an end-of-sequence token and `max_tokens`.
//!
//! Conditions are checked on *final* text only (a token is final once the verifier has ruled on
//! it, or it was skipped), so a rejected draft can never end a generation.
//!
//! * **Stop strings** (OpenAI's `stop`): the generation ends as soon as its text contains one of
//!   them; the text is cut just before the first occurrence. While the end of the text could still
//!   be the start of a stop string, that tail is held back from the streamed pieces, so a caller
//!   never sees text that the cut later removes.
//! * **End of the first code block**: the generation ends when the first fenced block (a line
//!   opening with three backticks, then a later line starting with three backticks) closes; the
//!   text keeps the closing fence. This is how a code answer ends where the code ends.

use serde::{Deserialize, Serialize};

/// Three backticks: a Markdown code fence.
const FENCE: &str = "```";

/// What ends a generation early. Empty by default (only end-of-sequence and `max_tokens`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StopConditions {
    /// The generation ends when its text contains one of these; the text is cut before it.
    pub strings: Vec<String>,
    /// The generation ends when the first fenced code block closes (the fence is kept).
    pub code_block_end: bool,
}

impl StopConditions {
    /// Refuses an empty stop string (it would end every generation before its first token).
    pub fn validate(&self) -> Result<(), String> {
        if self.strings.iter().any(String::is_empty) {
            return Err("a stop string is empty".into());
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty() && !self.code_block_end
    }
}

/// Which condition ended the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopHit {
    String,
    CodeBlockEnd,
}

/// Follows the final text of one generation against its [`StopConditions`].
#[derive(Debug, Clone)]
pub struct StopMatcher {
    conditions: StopConditions,
    /// The final text so far (uncut).
    text: String,
    /// Bytes of `text` already handed out by [`StopMatcher::push`].
    emitted: usize,
    /// Where the text ends and why, once a condition is met.
    hit: Option<(StopHit, usize)>,
}

impl StopMatcher {
    pub fn new(conditions: &StopConditions) -> Self {
        Self {
            conditions: conditions.clone(),
            text: String::new(),
            emitted: 0,
            hit: None,
        }
    }

    /// Adds the text a final token brought and returns the part of the text that may now be
    /// shown. After a hit, returns nothing more.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit.is_some() {
            return String::new();
        }
        self.text.push_str(piece);
        self.hit = self.find_hit();
        let safe = match self.hit {
            Some((_, end)) => end,
            None => self.text.len() - self.held_back(),
        };
        let out = self
            .text
            .get(self.emitted..safe)
            .unwrap_or_default()
            .to_string();
        self.emitted = self.emitted.max(safe);
        out
    }

    /// The text held back so far (the generation ended without a hit).
    pub fn flush(&mut self) -> String {
        if self.hit.is_some() {
            return String::new();
        }
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// The condition met, if any.
    pub fn hit(&self) -> Option<StopHit> {
        self.hit.map(|(h, _)| h)
    }

    /// `full` (the generation's whole decoded text) cut where a condition ended it.
    pub fn cut<'t>(&self, full: &'t str) -> &'t str {
        match self.hit {
            Some((_, end)) => full.get(..end).unwrap_or(full),
            None => full,
        }
    }

    fn find_hit(&self) -> Option<(StopHit, usize)> {
        let string = self
            .conditions
            .strings
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
            .map(|at| (StopHit::String, at));
        let block = self
            .conditions
            .code_block_end
            .then(|| first_code_block_end(&self.text))
            .flatten()
            .map(|end| (StopHit::CodeBlockEnd, end));
        match (string, block) {
            (Some(s), Some(b)) => Some(if s.1 <= b.1 { s } else { b }),
            (s, b) => s.or(b),
        }
    }

    /// Bytes at the end of the text that could still begin a stop string.
    fn held_back(&self) -> usize {
        let mut keep = 0;
        for s in &self.conditions.strings {
            for (i, _) in s.char_indices().skip(1) {
                if self.text.ends_with(&s[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        keep
    }
}

/// The byte offset just past the closing fence of the first fenced code block of `text`.
fn first_code_block_end(text: &str) -> Option<usize> {
    let open = text.find(FENCE)?;
    let body = open + text[open..].find('\n')? + 1;
    let mut at = body;
    loop {
        let line = &text[at..];
        if line.starts_with(FENCE) {
            return Some(at + FENCE.len());
        }
        at += line.find('\n')? + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &StopConditions, pieces: &[&str]) -> (String, Option<StopHit>) {
        let mut m = StopMatcher::new(c);
        let mut shown: String = pieces.iter().map(|p| m.push(p)).collect();
        shown += &m.flush();
        (shown, m.hit())
    }

    #[test]
    fn a_code_block_ends_at_its_closing_fence() {
        let c = StopConditions {
            code_block_end: true,
            ..Default::default()
        };
        let answer = [
            "Here:\n`",
            "``py",
            "thon\ndef f():\n",
            "    return '```'\n",
            "``",
            "`\nMore text",
        ];
        let (shown, hit) = feed(&c, &answer);
        assert_eq!(shown, "Here:\n```python\ndef f():\n    return '```'\n```");
        assert_eq!(hit, Some(StopHit::CodeBlockEnd));
        // An open block never ends the text.
        assert_eq!(
            feed(&c, &["```python\n", "x = 1\n"]),
            ("```python\nx = 1\n".into(), None)
        );
        assert_eq!(first_code_block_end("```\n```"), Some(7));
        assert_eq!(first_code_block_end("no fence"), None);
    }

    #[test]
    fn stop_strings_cut_before_and_hold_back_partial_matches() {
        let c = StopConditions {
            strings: vec!["\n\n".into(), "END".into()],
            ..Default::default()
        };
        let mut m = StopMatcher::new(&c);
        assert_eq!(
            m.push("one\n"),
            "one",
            "a lone newline may begin a stop string"
        );
        assert_eq!(m.push("two"), "\ntwo");
        assert_eq!(m.push(" EN"), " ");
        assert_eq!(m.push("D and more"), "");
        assert_eq!(m.hit(), Some(StopHit::String));
        assert_eq!(m.cut("one\ntwo END and more"), "one\ntwo ");
        assert_eq!(m.push("ignored"), "");
        // Held-back text comes out at the end when nothing matched.
        assert_eq!(feed(&c, &["a", "E"]), ("aE".into(), None));
        // Multibyte text is cut on character boundaries.
        let c = StopConditions {
            strings: vec!["é!".into()],
            ..Default::default()
        };
        assert_eq!(
            feed(&c, &["ça é", "!x"]),
            ("ça ".into(), Some(StopHit::String))
        );
        assert!(StopConditions {
            strings: vec![String::new()],
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
