//! Hugging Face Hub names (`--model ORG/NAME[@REV]`) against a mock Hub started by each test
//! on 127.0.0.1 (what hf-hub 0.5's blocking client sends and needs: the repository listing
//! `/api/models/ORG/NAME/revision/REV`, `Range: bytes=0-0` metadata requests answered with
//! `etag`/`x-linked-etag`, `x-repo-commit` and `Content-Range`, a 302 to a CDN for LFS files,
//! then `Range: bytes=0-` downloads), and against a pre-filled cache with HF_HUB_OFFLINE=1.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{assert_clean_error, fixture, repo};
use sha2::Digest;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn sha256_hex(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn git_blob_id(b: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// The weights' transfer stops halfway (Content-Length promises all of it).
    Truncate,
    /// The weights arrive complete in length but with changed bytes.
    Corrupt,
    /// The Hub announces a larger size than the file it serves.
    WrongSize,
}

#[derive(Clone)]
struct MockRepo {
    files: Vec<(String, Vec<u8>)>,
    /// Bearer token required (a gated repository): 401 without one, 403 with another.
    token: Option<&'static str>,
    fault: Fault,
}

fn is_lfs(file: &str) -> bool {
    file.ends_with(".safetensors") || file.ends_with(".bin")
}

fn tiny_files() -> Vec<(String, Vec<u8>)> {
    ["config.json", "vocab.txt", "model.safetensors"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                fs::read(fixture("tiny-bert").join(f)).unwrap(),
            )
        })
        .collect()
}

/// tiny-bert with its weights split into two shards and an index.
fn sharded_files() -> Vec<(String, Vec<u8>)> {
    let bytes = fs::read(fixture("tiny-bert/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let half = tensors.len() / 2;
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut weight_map = serde_json::Map::new();
    let mut out: Vec<(String, Vec<u8>)> = tiny_files().into_iter().take(2).collect();
    for (i, part) in [&tensors[..half], &tensors[half..]].iter().enumerate() {
        for (k, _) in part.iter() {
            weight_map.insert(k.clone(), names[i].into());
        }
        let views: Vec<(String, &safetensors::tensor::TensorView)> =
            part.iter().map(|(k, v)| (k.clone(), v)).collect();
        out.push((
            names[i].into(),
            safetensors::serialize(views, None).unwrap(),
        ));
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    out.push((
        "model.safetensors.index.json".into(),
        index.to_string().into_bytes(),
    ));
    out
}

struct MockHub {
    url: String,
    requests: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<String>>>,
}

impl MockHub {
    fn start(repos: HashMap<&'static str, MockRepo>) -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (r, l, u) = (requests.clone(), log.clone(), url.clone());
        let repos = Arc::new(repos);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (repos, r, l, u) = (repos.clone(), r.clone(), l.clone(), u.clone());
                std::thread::spawn(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = serve(stream, &repos, &l, &u);
                });
            }
        });
        MockHub { url, requests, log }
    }
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, HashMap<String, String>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((path, headers))
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    content_length: usize,
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {content_length}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn error(stream: &mut TcpStream, status: &str, code: &str) -> std::io::Result<()> {
    let body = format!("{{\"error\": \"{code}\"}}");
    respond(
        stream,
        status,
        &[
            ("X-Error-Code", code.into()),
            ("Content-Type", "application/json".into()),
        ],
        body.as_bytes(),
        body.len(),
    )
}

fn serve(
    mut stream: TcpStream,
    repos: &HashMap<&'static str, MockRepo>,
    log: &Mutex<Vec<String>>,
    base: &str,
) -> std::io::Result<()> {
    let (path, headers) = read_request(&mut stream)?;
    log.lock().unwrap().push(path.clone());
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(6, '/').collect();
    // /api/models/ORG/NAME/revision/REV
    if parts.first() == Some(&"api") {
        let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (repo_id, rev) = (
            format!("{}/{}", p[2], p[3]),
            p.get(5).copied().unwrap_or(""),
        );
        let Some(repo) = repos.get(repo_id.as_str()) else {
            return error(&mut stream, "404 Not Found", "RepoNotFound");
        };
        if rev != "main" && rev != COMMIT {
            return error(&mut stream, "404 Not Found", "RevisionNotFound");
        }
        let siblings: Vec<_> = repo
            .files
            .iter()
            .map(|(f, _)| serde_json::json!({ "rfilename": f }))
            .collect();
        let body =
            serde_json::json!({ "id": repo_id, "sha": COMMIT, "siblings": siblings }).to_string();
        return respond(&mut stream, "200 OK", &[], body.as_bytes(), body.len());
    }
    // /ORG/NAME/resolve/REV/FILE or /cdn/ORG/NAME/FILE
    let cdn = parts.first() == Some(&"cdn");
    let (repo_id, file) = if cdn {
        (
            format!("{}/{}", parts[1], parts[2]),
            parts.get(3).copied().unwrap_or(""),
        )
    } else {
        if parts.get(2) != Some(&"resolve") {
            return error(&mut stream, "404 Not Found", "EntryNotFound");
        }
        (
            format!("{}/{}", parts[0], parts[1]),
            parts.get(4).copied().unwrap_or(""),
        )
    };
    let Some(repo) = repos.get(repo_id.as_str()) else {
        return error(&mut stream, "404 Not Found", "RepoNotFound");
    };
    if !cdn {
        if parts[3] != "main" && parts[3] != COMMIT {
            return error(&mut stream, "404 Not Found", "RevisionNotFound");
        }
        if let Some(t) = repo.token {
            match headers.get("authorization") {
                None => return error(&mut stream, "401 Unauthorized", "GatedRepo"),
                Some(a) if *a != format!("Bearer {t}") => {
                    return error(&mut stream, "403 Forbidden", "GatedRepo");
                }
                _ => {}
            }
        }
    }
    let Some((_, content)) = repo.files.iter().find(|(f, _)| f == file) else {
        return error(&mut stream, "404 Not Found", "EntryNotFound");
    };
    let commit = ("X-Repo-Commit", COMMIT.to_string());
    if is_lfs(file) && !cdn {
        // LFS: the Hub redirects to its CDN; the etag is the content's SHA-256.
        return respond(
            &mut stream,
            "302 Found",
            &[
                commit,
                ("X-Linked-Etag", format!("\"{}\"", sha256_hex(content))),
                ("X-Linked-Size", content.len().to_string()),
                ("Location", format!("{base}/cdn/{repo_id}/{file}")),
            ],
            b"",
            0,
        );
    }
    let mut body = content.clone();
    let fault = if is_lfs(file) {
        repo.fault
    } else {
        Fault::None
    };
    if fault == Fault::Corrupt {
        let n = body.len();
        body[n / 2] ^= 0xff;
    }
    let total = body.len() + if fault == Fault::WrongSize { 10 } else { 0 };
    let mut out_headers = vec![commit, ("ETag", format!("\"{}\"", git_blob_id(content)))];
    let start = match headers.get("range").and_then(|r| r.strip_prefix("bytes=")) {
        Some("0-0") => {
            out_headers.push(("Content-Range", format!("bytes 0-0/{total}")));
            return respond(
                &mut stream,
                "206 Partial Content",
                &out_headers,
                &body[..1],
                1,
            );
        }
        Some(r) => r.trim_end_matches('-').parse::<usize>().unwrap_or(0),
        None => 0,
    };
    let rest = &body[start.min(body.len())..];
    out_headers.push((
        "Content-Range",
        format!(
            "bytes {start}-{}/{}",
            body.len().saturating_sub(1),
            body.len()
        ),
    ));
    if fault == Fault::Truncate {
        // Promise everything, send half, hang up.
        return respond(
            &mut stream,
            "206 Partial Content",
            &out_headers,
            &rest[..rest.len() / 2],
            rest.len(),
        );
    }
    respond(
        &mut stream,
        "206 Partial Content",
        &out_headers,
        rest,
        rest.len(),
    )
}

fn repos() -> HashMap<&'static str, MockRepo> {
    let plain = |fault| MockRepo {
        files: tiny_files(),
        token: None,
        fault,
    };
    HashMap::from([
        ("org/tiny", plain(Fault::None)),
        ("org/truncated", plain(Fault::Truncate)),
        ("org/corrupt", plain(Fault::Corrupt)),
        ("org/wrongsize", plain(Fault::WrongSize)),
        (
            "org/gated",
            MockRepo {
                files: tiny_files(),
                token: Some("hf_good"),
                fault: Fault::None,
            },
        ),
        (
            "org/sharded",
            MockRepo {
                files: sharded_files(),
                token: None,
                fault: Fault::None,
            },
        ),
        (
            "org/noweights",
            MockRepo {
                files: tiny_files().into_iter().take(2).collect(),
                token: None,
                fault: Fault::None,
            },
        ),
    ])
}

/// `ptune inspect --model SPEC` with the Hub settings of a test (and nothing from the host).
fn inspect(spec: &str, cache: &Path, endpoint: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptune"));
    cmd.args(["inspect", "--model", spec])
        .current_dir(repo())
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", cache.join("no-home"))
        .env("HF_ENDPOINT", endpoint)
        .env("NO_PROXY", "127.0.0.1");
    for v in [
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HF_TOKEN_PATH",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ptune")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Every file (or symlink) under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Nothing partial in the cache: no temporary download folder or .part/.lock file, no entry
/// for `file` (the one whose download failed), and every blob is a complete served file.
fn assert_nothing_partial(cache: &Path, file: &str) {
    let all = files_under(cache);
    let complete: Vec<String> = tiny_files()
        .iter()
        .map(|(_, b)| sha256_hex(b))
        .chain(tiny_files().iter().map(|(_, b)| git_blob_id(b)))
        .collect();
    for f in &all {
        assert!(
            !f.contains(".ptune-download")
                && !f.ends_with(".part")
                && !f.ends_with(".lock")
                && !f.ends_with(".incomplete"),
            "left behind: {f} (cache: {all:?})"
        );
        assert!(!f.ends_with(file), "entry for the failed file: {f}");
        if let Some(blob) = f.split("/blobs/").nth(1) {
            assert!(complete.contains(&blob.to_string()), "unknown blob {f}");
            let content = fs::read(cache.join(f)).unwrap();
            assert!(
                sha256_hex(&content) == blob || git_blob_id(&content) == blob,
                "corrupt blob {f}"
            );
        }
    }
    let dirs: Vec<_> = fs::read_dir(cache)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    for d in dirs {
        let d = cache.join(d);
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !n.starts_with(".ptune-download"),
                    "temporary download folder left: {n}"
                );
            }
        }
    }
}

#[test]
fn downloads_into_the_standard_cache_then_uses_it_without_the_network() {
    let hub = MockHub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    let out = inspect("org/tiny", cache.path(), &hub.url, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo_dir = cache.path().join("models--org--tiny");
    let snap = repo_dir.join("snapshots").join(COMMIT);
    assert!(
        stdout(&out).contains(&format!("model      {}", snap.display())),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("(weights used)"));
    assert_eq!(
        fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    // The layout huggingface_hub uses: relative symlinks into blobs/<etag>.
    for (f, content) in tiny_files() {
        let link = fs::read_link(snap.join(&f)).unwrap();
        let etag = if is_lfs(&f) {
            sha256_hex(&content)
        } else {
            git_blob_id(&content)
        };
        assert_eq!(link, Path::new("../../blobs").join(&etag), "{f}");
        assert_eq!(fs::read(snap.join(&f)).unwrap(), content, "{f}");
    }
    let mut expected: Vec<String> = vec!["refs/main".into()];
    for (f, c) in tiny_files() {
        let etag = if is_lfs(&f) {
            sha256_hex(&c)
        } else {
            git_blob_id(&c)
        };
        expected.push(format!("blobs/{etag}"));
        expected.push(format!("snapshots/{COMMIT}/{f}"));
    }
    expected.sort();
    assert_eq!(
        files_under(&repo_dir),
        expected,
        "nothing else in the cache"
    );
    assert!(
        hub.log
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.starts_with("/cdn/")),
        "followed the CDN redirect"
    );

    // Cache first: a second resolution, of the branch or the commit, asks the Hub nothing.
    let before = hub.requests.load(Ordering::SeqCst);
    for spec in ["org/tiny", &format!("org/tiny@{COMMIT}")] {
        let again = inspect(spec, cache.path(), &hub.url, &[]);
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert!(stdout(&again).contains(&snap.display().to_string()));
    }
    assert_eq!(hub.requests.load(Ordering::SeqCst), before);
}

#[test]
fn sharded_weights_and_a_token_for_a_gated_repo() {
    let hub = MockHub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    let out = inspect("org/sharded", cache.path(), &hub.url, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap = cache
        .path()
        .join("models--org--sharded/snapshots")
        .join(COMMIT);
    for f in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snap.join(f).is_file(), "{f}");
    }
    assert!(
        stdout(&out).contains("model.safetensors.index.json  (weights used)"),
        "{}",
        stdout(&out)
    );

    let out = inspect(
        "org/gated",
        cache.path(),
        &hub.url,
        &[("HF_TOKEN", "hf_good")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The token file `huggingface-cli login` writes works too.
    let home = tempfile::tempdir().unwrap();
    fs::write(home.path().join("token"), "hf_good\n").unwrap();
    let cache2 = tempfile::tempdir().unwrap();
    let out = inspect(
        "org/gated",
        cache2.path(),
        &hub.url,
        &[("HF_HOME", home.path().to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name, extra environment, what the error must say, and the file whose download fails.
type FailureCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

#[test]
fn hub_failures_are_one_line_errors_and_leave_nothing_partial() {
    let hub = MockHub::start(repos());
    let cases: &[FailureCase] = &[
        (
            "org/missing",
            &[],
            &["org/missing@main", "no model repository org/missing"],
            "config.json",
        ),
        (
            "org/tiny@v9",
            &[],
            &["org/tiny@v9", "revision \"v9\" not found in org/tiny"],
            "config.json",
        ),
        (
            "org/gated",
            &[],
            &[
                "org/gated@main: config.json: the Hub refused access (HTTP 401)",
                "HF_TOKEN",
            ],
            "config.json",
        ),
        (
            "org/gated",
            &[("HF_TOKEN", "hf_wrong")],
            &[
                "org/gated@main: config.json: access denied (HTTP 403)",
                "HF_TOKEN",
            ],
            "config.json",
        ),
        (
            "org/truncated",
            &[],
            &[
                "org/truncated@main",
                "model.safetensors",
                "nothing was kept in the cache",
            ],
            "model.safetensors",
        ),
        (
            "org/corrupt",
            &[],
            &[
                "org/corrupt@main: model.safetensors: checksum mismatch",
                "nothing was kept",
            ],
            "model.safetensors",
        ),
        (
            "org/wrongsize",
            &[],
            &[
                "org/wrongsize@main: model.safetensors: download incomplete",
                "the Hub announced",
            ],
            "model.safetensors",
        ),
        (
            "org/noweights",
            &[],
            &["org/noweights@main", "has no weights", "model.safetensors"],
            "model.safetensors",
        ),
    ];
    for (spec, env, needles, file) in cases {
        let cache = tempfile::tempdir().unwrap();
        let out = inspect(spec, cache.path(), &hub.url, env);
        let err = assert_clean_error(&out, needles);
        eprint!("{spec}: {err}");
        assert_nothing_partial(cache.path(), file);
        // a failed name never leaves a half-made snapshot
        let name = spec.split('@').next().unwrap().replace('/', "--");
        let snap = cache
            .path()
            .join(format!("models--{name}/snapshots/{COMMIT}"));
        assert!(!snap.join(file).exists(), "{spec}");
        assert!(
            !cache
                .path()
                .join(format!("models--{name}/refs/main"))
                .exists(),
            "{spec}"
        );
    }
    // A download folder left by a killed process is removed by the next resolution; one of a
    // running process is not.
    let cache = tempfile::tempdir().unwrap();
    let repo_dir = cache.path().join("models--org--tiny");
    let dead = {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let orphan = repo_dir.join(format!(".ptune-download-{dead}-abc/blobs"));
    let live = repo_dir.join(format!(".ptune-download-{}-abc/blobs", std::process::id()));
    for d in [&orphan, &live] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("x.part"), b"half").unwrap();
    }
    let out = inspect("org/tiny", cache.path(), &hub.url, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!orphan.exists(), "orphaned download folder kept");
    assert!(live.exists(), "a running process's download folder removed");

    // No Hub at the endpoint: a clear error naming the repository and the offline switch.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cache = tempfile::tempdir().unwrap();
    let out = inspect("org/tiny", cache.path(), &closed, &[]);
    assert_clean_error(&out, &["org/tiny@main", "HF_HUB_OFFLINE=1"]);
    assert_nothing_partial(cache.path(), "config.json");
}

/// A cache laid out as huggingface_hub leaves it (blobs, relative symlinks, refs/main).
fn prefill(cache: &Path, repo_id: &str, with_weights: bool) -> PathBuf {
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snap = repo_dir.join("snapshots").join(COMMIT);
    fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(repo_dir.join("refs")).unwrap();
    fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
    for (f, content) in tiny_files() {
        if is_lfs(&f) && !with_weights {
            continue;
        }
        let etag = if is_lfs(&f) {
            sha256_hex(&content)
        } else {
            git_blob_id(&content)
        };
        fs::write(repo_dir.join("blobs").join(&etag), &content).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&etag), snap.join(&f)).unwrap();
    }
    snap
}

#[test]
fn offline_uses_a_prefilled_cache_and_names_what_is_missing() {
    let cache = tempfile::tempdir().unwrap();
    let snap = prefill(cache.path(), "hfl/tiny-offline", true);
    prefill(cache.path(), "hfl/no-weights", false);
    // The endpoint is a closed port: any request would fail.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let offline = [("HF_HUB_OFFLINE", "1")];
    for spec in [
        "hfl/tiny-offline".to_string(),
        format!("hfl/tiny-offline@{COMMIT}"),
    ] {
        let out = inspect(&spec, cache.path(), &closed, &offline);
        assert!(
            out.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout(&out).contains(&format!("model      {}", snap.display())));
    }
    // HF_HOME/hub is the cache when HF_HUB_CACHE is unset.
    let home = tempfile::tempdir().unwrap();
    prefill(&home.path().join("hub"), "hfl/tiny-offline", true);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptune"));
    let out = cmd
        .args(["inspect", "--model", "hfl/tiny-offline"])
        .current_dir(repo())
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", &closed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = inspect("hfl/no-weights", cache.path(), &closed, &offline);
    assert_clean_error(
        &out,
        &[
            "hfl/no-weights@main",
            "HF_HUB_OFFLINE",
            "model.safetensors",
            "is not in the cache",
        ],
    );
    let out = inspect("hfl/never-downloaded", cache.path(), &closed, &offline);
    assert_clean_error(
        &out,
        &[
            "hfl/never-downloaded@main",
            "HF_HUB_OFFLINE",
            "revision \"main\" is not in the cache",
        ],
    );
    let out = inspect("hfl/tiny-offline@v2", cache.path(), &closed, &offline);
    assert_clean_error(
        &out,
        &["hfl/tiny-offline@v2", "revision \"v2\" is not in the cache"],
    );
    // A path that does not look like a Hub name stays a local path.
    let out = inspect("./no/such/dir", cache.path(), &closed, &offline);
    assert_clean_error(&out, &["no/such/dir", "model directory does not exist"]);
}

#[test]
fn an_existing_local_directory_wins_over_a_hub_name() {
    // `org/name` exists under the working directory: it is read locally, no Hub involved.
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("org/name");
    fs::create_dir_all(&local).unwrap();
    for (f, c) in tiny_files() {
        fs::write(local.join(f), c).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args(["inspect", "--model", "org/name"])
        .current_dir(work.path())
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("model      org/name"),
        "{}",
        stdout(&out)
    );
    assert!(files_under(cache.path()).is_empty());
}
