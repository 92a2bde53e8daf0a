//! `tsc --strict` (the TypeScript compiler pinned in web-client/tests/package.json) on the npm
//! package: the page side (index.js checked as JavaScript against the generated types and the
//! worker messages, index.d.ts) with a typed use of it (usage.ts), and the worker (worker.js,
//! against the WebAssembly module's declarations).
//!
//! Needs `npm ci` in web-client/tests and `scripts/build-web.sh` (the module's declarations);
//! `.ci/run` does both.

use std::path::{Path, PathBuf};
use std::process::Command;

fn require(path: &Path, how: &str) {
    assert!(path.exists(), "{} is missing: {how}", path.display());
}

#[test]
fn package_and_a_typed_use_pass_tsc_strict() {
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tests = web.join("tests");
    let tsc = tests.join("node_modules/.bin/tsc");
    require(&tsc, "run `npm ci` in web-client/tests");
    require(
        &web.join("js/wasm/hlm_web_client.d.ts"),
        "run scripts/build-web.sh",
    );
    for project in ["tsconfig.page.json", "tsconfig.worker.json"] {
        let out = Command::new(&tsc)
            .arg("-p")
            .arg(tests.join(project))
            .current_dir(&tests)
            .output()
            .expect("run tsc");
        assert!(
            out.status.success(),
            "tsc -p {project} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
