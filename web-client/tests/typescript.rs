//! The npm package's generated declarations (`web-client/js/types.generated.d.ts`) are those of
//! the Rust types as they are now: a change to a type that crosses the wasm boundary fails here
//! until the file is regenerated with
//! `HLM_WRITE_TYPES=1 cargo test --release -p hlm-web-client --test typescript`.

use std::path::PathBuf;

#[test]
fn generated_declarations_are_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/types.generated.d.ts");
    let fresh = hlm_web_client::api::typescript();
    if std::env::var_os("HLM_WRITE_TYPES").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: regenerate it with \
         `HLM_WRITE_TYPES=1 cargo test --release -p hlm-web-client --test typescript`",
        path.display()
    );
}

/// The package's run-time lists of names (`MODES` ...) in `index.js`, as the Rust enums name their
/// variants: a variant added in Rust fails here until the list has it too.
#[test]
fn the_packages_name_lists_are_the_rust_enums() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/index.js");
    let js = std::fs::read_to_string(&path).unwrap();
    let list = |name: &str| -> Vec<String> {
        let start = format!("export const {name} = Object.freeze([");
        let from = js
            .find(&start)
            .unwrap_or_else(|| panic!("{name} not in index.js"))
            + start.len();
        let body = &js[from..from + js[from..].find("])").unwrap()];
        body.split(',')
            .map(|s| s.trim().trim_matches('\'').to_string())
            .collect()
    };
    let modes: Vec<String> = hlm_core::FilterMode::ALL
        .iter()
        .map(|m| m.as_str().to_string())
        .collect();
    assert_eq!(list("MODES"), modes);
}
