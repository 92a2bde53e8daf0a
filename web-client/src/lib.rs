//! # hlm-web-client: the hybrid client in the browser
//!
//! The draft model, the token filter and **the** decoding loop of `hlm-engine`, compiled to
//! WebAssembly (SIMD128) and driven from a Web Worker by the npm package in `web-client/js/`.
//!
//! ```text
//! page ──postMessage──► worker.js ──► Engine (this crate, wasm)
//!                                       ├─ Drafter: model + tokenizer from the GGUF bytes
//!                                       ├─ HybridSession::generate (the same loop as `hlm`)
//!                                       └─ BrowserLink: the browser's WebSocket ══► verifier-server
//! ```
//!
//! * [`api`]: what crosses the boundary (token events, the summary, model info, error codes),
//!   compiled natively too: the npm package's TypeScript declarations are generated from it.
//! * [`engine`]: the `Engine` class JavaScript sees (`load`, `connect`, `generate`, `abort`).
//! * [`link`]: [`hlm_engine::link::VerifierLink`] over `web_sys::WebSocket`, with reconnection and
//!   the periodic yield that keeps the worker responsive.
//! * [`head`]: `scoreWithHead`, a filter head's decisions on given token features (the parity
//!   check between native and WebAssembly).
//! * `pool`: threads in the page (the `wasm-threads` build only): Web Workers over the same
//!   shared memory, splitting each of the kernels' products over its weight rows.
//! * [`reader`]: reads the GGUF straight out of a JavaScript `Uint8Array`, so the file is never
//!   copied whole into wasm memory (only the tensors are).

// The threaded build is nightly's (std rebuilt with atomics); its pool waits with
// `memory.atomic.wait32`, not yet stable in `core::arch::wasm32`.
#![cfg_attr(target_feature = "atomics", feature(stdarch_wasm_atomic_wait))]

pub mod api;
#[cfg(target_arch = "wasm32")]
pub mod engine;
#[cfg(target_arch = "wasm32")]
pub mod head;
#[cfg(target_arch = "wasm32")]
pub mod link;
#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
pub mod pool;
#[cfg(target_arch = "wasm32")]
pub mod reader;
