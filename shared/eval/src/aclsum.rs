//! ACLSum (PyPI `aclsum==0.1.2`): ACL papers with one-sentence reference summaries of their
//! challenge, approach and outcome. A task gives the model the title and abstract and asks for
//! the approach in one sentence; the reference is the dataset's `approach` summary.

use crate::tasks::Task;
use crate::{EvalError, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct Paper {
    pub id: String,
    pub title: String,
    pub summary: HashMap<String, String>,
    pub sentences: HashMap<String, Vec<String>>,
}

/// Reads one split (`aclsum.{train,val,test}.jsonl`).
pub fn load(path: &Path) -> Result<Vec<Paper>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| EvalError::File {
                path: path.display().to_string(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// The paper's abstract as running text (the dataset stores tokenised sentences: " ," → ",").
pub fn abstract_text(p: &Paper) -> String {
    let joined = p
        .sentences
        .get("abstract")
        .map(|s| s.join(" "))
        .unwrap_or_default();
    let mut out = joined;
    for (from, to) in [
        (" ,", ","),
        (" .", "."),
        (" ;", ";"),
        (" :", ":"),
        ("( ", "("),
        (" )", ")"),
    ] {
        out = out.replace(from, to);
    }
    out
}

pub fn task(p: &Paper) -> Task {
    Task {
        id: p.id.clone(),
        instruction: format!(
            "Title: {}\n\nAbstract: {}\n\nIn one sentence, what approach does this paper propose?",
            p.title,
            abstract_text(p)
        ),
        reference: p.summary.get("approach").cloned(),
        problem: None,
    }
}
