//! A learned filter head's decisions on given token features, computed by the same code the
//! decoding loop runs ([`hlm_core::head::FilterHead::decide`]): for checking in a page (or in
//! Node) that a head decides in WebAssembly exactly as it does natively.

use hlm_core::head::{FilterHead, TokenFeatures};
use wasm_bindgen::prelude::*;

/// `scoreWithHead(headJson, featuresJson, threshold)`: `headJson` is a `head.json`,
/// `featuresJson` an array of token features (the filter study's `TokenFeatures`), `threshold`
/// the upload threshold on `P(reject)`. Returns a JSON array of `[probability, upload]` pairs.
#[wasm_bindgen(js_name = scoreWithHead)]
pub fn score_with_head(
    head_json: &str,
    features_json: &str,
    threshold: f32,
) -> Result<String, JsError> {
    let head = FilterHead::from_json(head_json).map_err(|e| JsError::new(&e.to_string()))?;
    let features: Vec<TokenFeatures> = serde_json::from_str(features_json)
        .map_err(|e| JsError::new(&format!("token features: {e}")))?;
    let out: Vec<(f32, bool)> = features.iter().map(|f| head.decide(f, threshold)).collect();
    serde_json::to_string(&out).map_err(|e| JsError::new(&e.to_string()))
}
