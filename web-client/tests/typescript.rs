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
