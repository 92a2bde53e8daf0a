//! One finished generation ([`Sample`]) and where a run keeps them: JSON lines in its output
//! folder, appended the moment each one is done, so a killed run loses at most the generation in
//! progress. A rerun into the same folder skips every (task, method) already there; a shard
//! (`--shard i/n`) writes its own file, and the report is built from all files present. The same
//! [`Store`] keeps any other per-task [`Record`] (the filter study's traces).

use crate::bertscore::Score;
use crate::{EvalError, Result};
use hlm_engine::decode::StopReason;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One task under one method: what was generated and what it took, as counts (what the energy
/// and throughput columns are derived from) and as measured seconds (reported, not derived from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub task: String,
    pub method: String,
    pub text: String,
    pub ids: Vec<u32>,
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    pub tokens: usize,
    pub uploaded: usize,
    /// Uploaded tokens the verifier replaced.
    pub rejected: usize,
    pub rounds: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
    pub draft_forward_passes: usize,
    pub draft_forward_tokens: usize,
    pub uncertainty_draws: usize,
    pub llm_forward_passes: usize,
    pub llm_forward_tokens: usize,
    /// Measured on this machine (noisy under load; the table derives its figures from counts).
    pub wall_s: f64,
    /// Wall time when the loop's verifier ran behind the real constrained link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_link_wall_s: Option<f64>,
    /// Real link only: seconds from the request until the first token was final at the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_link_first_token_s: Option<f64>,
    /// Microseconds the verifier's model reported spending on this answer (its rounds, or its
    /// own tokens): the server's busy time. Absent where the verifier does not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_compute_us: Option<u64>,
    /// Seconds the client spent drafting (the draft model and the filter); absent for LLM-only
    /// and in runs from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_time_s: Option<f64>,
    pub passed: Option<bool>,
    pub bert_vs_llm: Option<Score>,
    pub bert_vs_reference: Option<Score>,
    /// Standard HLM only: each token's uncertainty and whether the verifier rejected it (the
    /// U-HLM calibration's input).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<(f32, bool)>,
}

impl Sample {
    /// The answer ran into `max_tokens`.
    pub fn hit_cap(&self) -> bool {
        self.stop_reason == StopReason::MaxTokens
    }
}

/// A slice of a run's tasks: those whose index is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `i/n` with `0 ≤ i < n`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("shard `{s}`: expected i/n with 0 ≤ i < n (e.g. 0/2)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub fn takes(&self, task_index: usize) -> bool {
        task_index % self.count == self.index
    }
}

/// What a [`Store`] keeps: one JSON line per record, found again by its key.
pub trait Record: Serialize + DeserializeOwned {
    /// Files of this kind are `<PREFIX>*.jsonl`.
    const PREFIX: &'static str;
    /// (task, method): a rerun skips a key already stored.
    fn key(&self) -> (String, String);
}

impl Record for Sample {
    const PREFIX: &'static str = "samples";
    fn key(&self) -> (String, String) {
        (self.task.clone(), self.method.clone())
    }
}

/// The records of a run folder: every `<PREFIX>*.jsonl` in it, and the file this process appends
/// to.
pub struct Store<T: Record = Sample> {
    file: PathBuf,
    samples: Vec<T>,
    done: HashSet<(String, String)>,
}

/// The file a (shard of a) run appends its records to.
pub fn file_name(prefix: &str, shard: Option<Shard>) -> String {
    match shard {
        None => format!("{prefix}.jsonl"),
        Some(s) => format!("{prefix}-shard-{}-of-{}.jsonl", s.index, s.count),
    }
}

impl<T: Record> Store<T> {
    /// Opens `dir` (created if missing) and reads every sample already there. A last line cut
    /// short by a killed run is dropped from its file (that generation runs again).
    pub fn open(dir: &Path, shard: Option<Shard>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join(file_name(T::PREFIX, shard));
        if file.exists() {
            drop_partial_line(&file)?;
        }
        let samples: Vec<T> = read_records(dir)?;
        let done = samples.iter().map(Record::key).collect();
        Ok(Self {
            file,
            samples,
            done,
        })
    }

    pub fn samples(&self) -> &[T] {
        &self.samples
    }

    pub fn is_done(&self, task: &str, method: &str) -> bool {
        self.done.contains(&(task.to_string(), method.to_string()))
    }

    /// The record of `task` under `method`, if one is stored.
    pub fn get(&self, task: &str, method: &str) -> Option<&T> {
        let key = (task.to_string(), method.to_string());
        self.samples.iter().find(|s| s.key() == key)
    }

    /// Appends `s` to this process's file at once (one write of one line, then flushed).
    pub fn append(&mut self, s: T) -> Result<()> {
        let mut line = serde_json::to_string(&s).map_err(|e| EvalError::File {
            path: self.file.display().to_string(),
            message: e.to_string(),
        })?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        self.done.insert(s.key());
        self.samples.push(s);
        Ok(())
    }
}

/// Every sample in `dir`'s `samples*.jsonl` files (see [`read_records`]).
pub fn read_dir(dir: &Path) -> Result<Vec<Sample>> {
    read_records(dir)
}

/// Every record in `dir`'s `<PREFIX>*.jsonl` files, in file-name order; the first of duplicates
/// (the same key in two files) is kept.
pub fn read_records<T: Record>(dir: &Path) -> Result<Vec<T>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(T::PREFIX) && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        // A last line without its newline is being written (or was cut by a kill): not yet a sample.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        for (i, line) in text[..complete].lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let s: T = serde_json::from_str(line).map_err(|e| EvalError::File {
                path: f.display().to_string(),
                message: format!("line {}: {e}", i + 1),
            })?;
            if seen.insert(s.key()) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Cuts `file` after its last newline (a line being written when the run was killed).
fn drop_partial_line(file: &Path) -> Result<()> {
    let bytes = std::fs::read(file)?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        eprintln!(
            "{}: dropping a partial last line ({} bytes) left by an interrupted run",
            file.display(),
            bytes.len() - keep
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)?
            .set_len(keep as u64)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(task: &str, method: &str) -> Sample {
        Sample {
            task: task.into(),
            method: method.into(),
            text: "x".into(),
            ids: vec![1, 2],
            stop_reason: StopReason::EndOfSequence,
            prompt_tokens: 3,
            tokens: 2,
            uploaded: 1,
            rejected: 0,
            rounds: 1,
            bytes_up: 10,
            bytes_down: 5,
            draft_forward_passes: 2,
            draft_forward_tokens: 4,
            uncertainty_draws: 2,
            llm_forward_passes: 1,
            llm_forward_tokens: 5,
            wall_s: 0.5,
            real_link_wall_s: None,
            real_link_first_token_s: None,
            draft_time_s: None,
            llm_compute_us: None,
            passed: Some(true),
            bert_vs_llm: None,
            bert_vs_reference: None,
            verdicts: vec![],
        }
    }

    #[test]
    fn a_killed_run_resumes_and_shards_read_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut a: Store = Store::open(dir.path(), None).unwrap();
        a.append(sample("t0", "u-hlm")).unwrap();
        a.append(sample("t1", "u-hlm")).unwrap();
        // A kill mid-write leaves half a line.
        let f = dir.path().join("samples.jsonl");
        let mut text = std::fs::read_to_string(&f).unwrap();
        text += r#"{"task": "t2", "meth"#;
        std::fs::write(&f, &text).unwrap();
        assert_eq!(
            read_dir(dir.path()).unwrap().len(),
            2,
            "partial line ignored"
        );
        let mut b: Store = Store::open(dir.path(), None).unwrap();
        assert!(b.is_done("t1", "u-hlm") && !b.is_done("t2", "u-hlm"));
        b.append(sample("t2", "u-hlm")).unwrap();
        let mut s: Store = Store::open(dir.path(), Some("1/2".parse().unwrap())).unwrap();
        s.append(sample("t3", "ours")).unwrap();
        s.append(sample("t0", "u-hlm")).unwrap(); // a duplicate: the first file's is kept
        let all = read_dir(dir.path()).unwrap();
        assert_eq!(all.len(), 4);
        assert!(dir.path().join("samples-shard-1-of-2.jsonl").exists());
        assert_eq!(
            Store::<Sample>::open(dir.path(), None)
                .unwrap()
                .samples()
                .len(),
            4
        );
    }

    #[test]
    fn shards_parse_and_partition() {
        let s: Shard = "1/3".parse().unwrap();
        assert!(s.takes(1) && s.takes(4) && !s.takes(0));
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
