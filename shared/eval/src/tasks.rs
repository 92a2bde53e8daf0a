//! What an evaluation generates for: tasks from the built-in datasets or from a user's JSONL file.
//!
//! A tasks file (`hlm eval --tasks FILE.jsonl`) holds one JSON object per line, all of one kind:
//! * HumanEval format, `{"task_id", "prompt", "test", "entry_point"}` (`canonical_solution`
//!   optional): asked as a code completion, scored by pass@1 (and by BERTScore against the
//!   canonical solution when given);
//! * prompt/reference, `{"id", "prompt", "reference"}`: the prompt is the user message, scored by
//!   BERTScore against the reference.
//!
//! The whole file is read and checked before anything runs: a malformed line is refused with its
//! line number and what is wrong.

use crate::humaneval::Problem;
use crate::{EvalError, Result};
use hlm_engine::decode::StopConditions;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

/// One prompt to generate for.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    /// The user message (the chat template is applied by the harness).
    pub instruction: String,
    /// A reference answer when the dataset has one.
    pub reference: Option<String>,
    /// For code tasks: the problem, to run the answer's code against its tests.
    pub problem: Option<Problem>,
}

impl Task {
    /// Where an answer ends besides end-of-sequence: a code answer at the closing fence of its
    /// first code block (the code the tests run is that block).
    pub fn stop(&self) -> StopConditions {
        StopConditions {
            code_block_end: self.problem.is_some(),
            ..Default::default()
        }
    }
}

/// A HumanEval problem as a chat task (the canonical solution, when known, is the reference).
pub fn humaneval_task(p: &Problem) -> Task {
    Task {
        id: p.task_id.clone(),
        instruction: format!(
            "Complete the following Python function. Answer with the whole function in one \
             ```python code block.\n\n```python\n{}```",
            p.prompt
        ),
        reference: (!p.canonical_solution.is_empty())
            .then(|| format!("{}{}", p.prompt, p.canonical_solution)),
        problem: Some(p.clone()),
    }
}

/// A prompt/reference line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptLine {
    id: String,
    prompt: String,
    reference: String,
}

/// The two kinds of line a tasks file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    HumanEval,
    PromptReference,
}

impl Kind {
    fn of(v: &serde_json::Value) -> Option<Self> {
        let has = |k: &str| v.get(k).is_some();
        if has("task_id") {
            Some(Kind::HumanEval)
        } else if has("id") {
            Some(Kind::PromptReference)
        } else {
            None
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::HumanEval => "HumanEval format (task_id, prompt, test, entry_point)",
            Kind::PromptReference => "prompt/reference format (id, prompt, reference)",
        }
    }
}

/// Reads a tasks file; see the module documentation for its two formats.
pub fn load_file(path: &Path) -> Result<Vec<Task>> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::File {
        path: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text).map_err(|message| EvalError::File {
        path: path.display().to_string(),
        message,
    })
}

/// Parses a tasks file's text (blank lines are skipped; line numbers count them).
pub fn parse(text: &str) -> std::result::Result<Vec<Task>, String> {
    let mut kind: Option<Kind> = None;
    let mut ids = HashSet::new();
    let mut tasks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| format!("line {}: {m}", i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(at("not a JSON object".into()));
        }
        let k = Kind::of(&v).ok_or_else(|| {
            at("neither `task_id` (HumanEval format) nor `id` (prompt/reference format)".into())
        })?;
        match kind {
            Some(first) if first != k => {
                return Err(at(format!(
                    "{}, but the file's first task is in {}",
                    k.describe(),
                    first.describe()
                )))
            }
            _ => kind = Some(k),
        }
        let task = match k {
            Kind::HumanEval => {
                let p: Problem = serde_json::from_value(v).map_err(|e| at(e.to_string()))?;
                if p.entry_point.trim().is_empty() || p.test.trim().is_empty() {
                    return Err(at("`entry_point` and `test` must not be empty".into()));
                }
                humaneval_task(&p)
            }
            Kind::PromptReference => {
                let p: PromptLine = serde_json::from_value(v).map_err(|e| at(e.to_string()))?;
                Task {
                    id: p.id,
                    instruction: p.prompt,
                    reference: Some(p.reference),
                    problem: None,
                }
            }
        };
        if task.id.trim().is_empty() {
            return Err(at("the id is empty".into()));
        }
        if task.instruction.trim().is_empty() {
            return Err(at("the prompt is empty".into()));
        }
        if !ids.insert(task.id.clone()) {
            return Err(at(format!("the id `{}` appears twice", task.id)));
        }
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Err("no tasks in the file".into());
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HE: &str = r#"{"task_id": "t/0", "prompt": "def f(x):\n", "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": "f"}"#;

    #[test]
    fn both_formats_read() {
        let t = parse(&format!("{HE}\n\n{}\n", HE.replace("t/0", "t/1"))).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].problem.is_some() && t[0].reference.is_none());
        assert!(t[0].stop().code_block_end);
        let t = parse(r#"{"id": "a", "prompt": "Say hi.", "reference": "Hi."}"#).unwrap();
        assert_eq!(t[0].instruction, "Say hi.");
        assert_eq!(t[0].reference.as_deref(), Some("Hi."));
        assert!(!t[0].stop().code_block_end);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let pr = r#"{"id": "a", "prompt": "p", "reference": "r"}"#;
        for (text, says) in [
            (format!("{pr}\n{{oops"), "line 2: not JSON"),
            (format!("{pr}\n\n[1]"), "line 3: not a JSON object"),
            (r#"{"name": "x"}"#.to_string(), "line 1: neither `task_id`"),
            (format!("{pr}\n{HE}"), "line 2: HumanEval format"),
            (
                r#"{"id": "a", "prompt": "p"}"#.to_string(),
                "line 1: missing field `reference`",
            ),
            (
                r#"{"id": "a", "prompt": "p", "reference": "r", "extra": 1}"#.to_string(),
                "line 1: unknown field `extra`",
            ),
            (
                HE.replace(r#", "entry_point": "f""#, ""),
                "line 1: missing field `entry_point`",
            ),
            (
                HE.replace(r#""t/0""#, "7"),
                "line 1: invalid type: integer `7`, expected a string",
            ),
            (format!("{pr}\n{pr}"), "line 2: the id `a` appears twice"),
            (
                r#"{"id": "a", "prompt": " ", "reference": "r"}"#.to_string(),
                "line 1: the prompt is empty",
            ),
            ("\n\n".to_string(), "no tasks"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
