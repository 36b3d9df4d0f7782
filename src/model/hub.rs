//! Hugging Face Hub model names: `ORG/NAME[@REVISION]` wherever a model directory is taken.
//!
//! A name resolves to a snapshot directory of the standard Hub cache (shared with Python
//! tools): `<cache>/models--ORG--NAME/snapshots/<commit>/`, whose files are relative symlinks
//! into `blobs/<etag>`, with `refs/<revision>` holding the commit of a branch or tag. The cache
//! is `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub` ([`HubSettings`]).
//!
//! Resolution is cache first: when the snapshot the revision points to already holds
//! `config.json`, `vocab.txt` and complete weights, it is used without touching the network
//! (pin a commit, `@<sha>`, to be exact; delete `refs/<branch>` to follow a moved branch).
//! Otherwise the repository listing (`/api/models/ORG/NAME/revision/REV`) picks the files
//! — `config.json`, `vocab.txt`, `tokenizer_config.json` when present, and the weights:
//! `model.safetensors`, else `model.safetensors.index.json` and its shards, else
//! `pytorch_model.bin` — and every missing one is downloaded at the listed commit.
//! With [`HubSettings::offline`] (`HF_HUB_OFFLINE=1`) the network is never used and a file
//! missing from the cache is an error naming it.
//!
//! Downloads go through the `hf-hub` crate, 0.5 with its blocking `ureq` client (1.0 is an
//! async rewrite that pulls in reqwest and the Xet storage client: far more to build for the
//! few files a BERT checkpoint has). It does the metadata request, redirects to the CDN, auth
//! and user-agent headers and the progress bar, but not straight into the cache: it renames its
//! `.part` file into `blobs/` without checking the size it was told, leaves the `.part` file
//! behind when a transfer fails (to resume it later), checks no hash, and leaves `.lock` files
//! next to the blobs. Its `Cache` reads only `HF_HOME` (and panics without a home directory),
//! and it reads neither `HF_HUB_CACHE`, `HF_TOKEN` nor `HF_HUB_OFFLINE`: [`HubSettings`] does.
//! So each resolution gives `hf-hub` a private temporary cache inside the repository's folder; a downloaded file is checked there — its size against the size the
//! Hub announced, and its content against the etag (SHA-256 for LFS files, the git blob id,
//! SHA-1, for the others) — and only then renamed into `blobs/` (same filesystem, atomic) and
//! linked from the snapshot. The temporary cache is removed on every exit path, so a failed,
//! truncated or corrupt download leaves nothing in the cache; one left by a process killed
//! mid-download (its name carries the pid) is removed by the next download of that repository.

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use sha2::Digest;

use crate::error::{Error, Result, write_atomic};

/// Where the Hub and its cache are, and whether the network may be used. Built from the
/// environment by [`HubSettings::from_env`] at the command-line boundary; tests build it
/// directly.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The hub cache (the directory holding `models--ORG--NAME/`).
    pub cache_dir: PathBuf,
    /// Base URL, e.g. `https://huggingface.co` (no trailing slash).
    pub endpoint: String,
    /// Bearer token for gated and private repositories.
    pub token: Option<String>,
    /// Never use the network: only what the cache holds.
    pub offline: bool,
    /// Draw a progress bar for downloads (only when stderr is a terminal).
    pub progress: bool,
}

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// `HF_HUB_OFFLINE`-style booleans, as huggingface_hub reads them.
fn env_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl HubSettings {
    /// The settings huggingface_hub would use: `HF_HUB_CACHE`, `HF_HOME` (default
    /// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`), `HF_ENDPOINT`, `HF_TOKEN`
    /// (else the token file `HF_TOKEN_PATH` or `HF_HOME/token` that `huggingface-cli login`
    /// writes), `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_PROGRESS_BARS`.
    pub fn from_env() -> Result<Self> {
        let hf_home = || -> Result<PathBuf> {
            if let Some(h) = env_nonempty("HF_HOME") {
                return Ok(PathBuf::from(h));
            }
            if let Some(x) = env_nonempty("XDG_CACHE_HOME") {
                return Ok(PathBuf::from(x).join("huggingface"));
            }
            env_nonempty("HOME")
                .map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
                .ok_or_else(|| {
                    Error::invalid(
                        "no Hugging Face cache directory: set HF_HUB_CACHE or HF_HOME (HOME is not set)",
                    )
                })
        };
        let cache_dir = match env_nonempty("HF_HUB_CACHE") {
            Some(c) => PathBuf::from(c),
            None => hf_home()?.join("hub"),
        };
        let cache_dir = std::path::absolute(&cache_dir).map_err(|e| Error::io(&cache_dir, e))?;
        let endpoint = env_nonempty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let token = match env_nonempty("HF_TOKEN") {
            Some(t) => Some(t.trim().to_string()),
            None => {
                let path = match env_nonempty("HF_TOKEN_PATH") {
                    Some(p) => Some(PathBuf::from(p)),
                    None => hf_home().ok().map(|h| h.join("token")),
                };
                path.and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            }
        };
        let settings = HubSettings {
            cache_dir,
            endpoint,
            token,
            offline: env_true("HF_HUB_OFFLINE"),
            progress: !env_true("HF_HUB_DISABLE_PROGRESS_BARS"),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<()> {
        let e = &self.endpoint;
        let rest = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(Error::invalid(format!(
                "HF_ENDPOINT \"{e}\" is not an http:// or https:// URL"
            )));
        }
        if !self.cache_dir.is_absolute() {
            return Err(Error::invalid(format!(
                "hub cache {} is not an absolute path",
                self.cache_dir.display()
            )));
        }
        Ok(())
    }
}

/// A Hub model name: `ORG/NAME` and a revision (branch, tag or commit; default `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubName {
    pub repo: String,
    pub revision: String,
}

impl std::fmt::Display for HubName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// What a `--model` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    Local(PathBuf),
    Hub(HubName),
}

fn valid_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.contains("--")
        && !s.contains("..")
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

impl HubName {
    /// `ORG/NAME` or `ORG/NAME@REVISION`; `None` when `s` is not of that form.
    pub fn parse(s: &str) -> Option<HubName> {
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (s, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let revision_ok = !revision.is_empty()
            && !revision.contains(char::is_whitespace)
            && !revision.contains("..")
            && !revision.starts_with('/')
            && !revision.ends_with('/');
        (valid_repo_part(org) && valid_repo_part(name) && repo.len() <= 96 && revision_ok).then(
            || HubName {
                repo: repo.to_string(),
                revision: revision.to_string(),
            },
        )
    }
}

impl ModelSpec {
    /// A path that exists is local, whatever it looks like. Otherwise `ORG/NAME[@REV]` (exactly
    /// one `/`, Hub characters only) is a Hub name; anything else (`./a/b`, `/abs`, `a/b/c`,
    /// `name`) stays a local path, whose absence is reported by [`super::ModelDir::open`].
    pub fn parse(spec: &Path) -> ModelSpec {
        if spec.exists() {
            return ModelSpec::Local(spec.to_path_buf());
        }
        match spec.to_str().and_then(HubName::parse) {
            Some(name) => ModelSpec::Hub(name),
            None => ModelSpec::Local(spec.to_path_buf()),
        }
    }
}

/// The model directory `spec` names: a local path as given, or a Hub name resolved (and
/// downloaded when missing) through the cache. `settings` is only called for a Hub name.
pub fn resolve(spec: &Path, settings: impl FnOnce() -> Result<HubSettings>) -> Result<PathBuf> {
    match ModelSpec::parse(spec) {
        ModelSpec::Local(p) => Ok(p),
        ModelSpec::Hub(name) => fetch(&name, &settings()?),
    }
}

fn hub_err(name: &HubName, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{name}: {msg}"))
}

/// Said when a name is unknown: it may have been meant as a local path.
const NOT_LOCAL: &str = "no local directory of that name either";

fn file_err(name: &HubName, file: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{name}: {file}: {msg}"))
}

const WEIGHTS: [&str; 3] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
];

/// Shard file names listed by an index's `weight_map`, in first-seen order.
fn shard_names(index: &Path) -> std::result::Result<Vec<String>, String> {
    let bytes = std::fs::read(index).map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("malformed JSON: {e}"))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("missing object field \"weight_map\"")?;
    let mut out: Vec<String> = Vec::new();
    for (key, f) in map {
        let f = f
            .as_str()
            .filter(|f| safe_file_name(f))
            .ok_or_else(|| format!("weight_map[\"{key}\"] is not a file name"))?;
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    if out.is_empty() {
        return Err("weight_map is empty".into());
    }
    Ok(out)
}

fn safe_file_name(f: &str) -> bool {
    !f.is_empty() && !f.contains(['/', '\\']) && f != "." && f != ".."
}

/// The first file a snapshot directory lacks for a complete model, if any.
fn missing_in_snapshot(snap: &Path) -> Option<String> {
    for f in ["config.json", "vocab.txt"] {
        if !snap.join(f).is_file() {
            return Some(f.into());
        }
    }
    if snap.join(WEIGHTS[0]).is_file() || snap.join(WEIGHTS[2]).is_file() {
        return None;
    }
    let index = snap.join(WEIGHTS[1]);
    if !index.is_file() {
        return Some(format!(
            "{} (or {}, {})",
            WEIGHTS[0], WEIGHTS[1], WEIGHTS[2]
        ));
    }
    match shard_names(&index) {
        Ok(shards) => shards.into_iter().find(|s| !snap.join(s).is_file()),
        Err(_) => Some(WEIGHTS[1].into()),
    }
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The snapshot `revision` points to in the cache, if the cache knows it.
fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if is_commit(revision) && snapshots.join(revision).is_dir() {
        return Some(snapshots.join(revision));
    }
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let commit = commit.trim();
    (is_commit(commit) && snapshots.join(commit).is_dir()).then(|| snapshots.join(commit))
}

/// Resolves a Hub name to a complete snapshot directory, downloading what is missing.
pub fn fetch(name: &HubName, s: &HubSettings) -> Result<PathBuf> {
    s.validate()?;
    let repo = Repo::with_revision(name.repo.clone(), RepoType::Model, name.revision.clone());
    let repo_dir = s.cache_dir.join(repo.folder_name());
    let cached = cached_snapshot(&repo_dir, &name.revision);
    if let Some(snap) = &cached
        && missing_in_snapshot(snap).is_none()
    {
        return Ok(snap.clone());
    }
    if s.offline {
        let what = match &cached {
            Some(snap) => format!(
                "{} is not in the cache ({})",
                missing_in_snapshot(snap).unwrap_or_default(),
                snap.display()
            ),
            None => format!(
                "revision \"{}\" is not in the cache ({})",
                name.revision,
                repo_dir.display()
            ),
        };
        return Err(hub_err(
            name,
            format!("HF_HUB_OFFLINE is set and {what}; unset it to download ({NOT_LOCAL})"),
        ));
    }
    let result = download_missing(name, s, &repo_dir);
    if result.is_err() {
        // Leave no empty folders behind for a name that did not resolve (only empty ones
        // are removed; verified blobs of an interrupted multi-file download stay).
        for d in ["snapshots", "blobs", "refs", ""] {
            let _ = std::fs::remove_dir(repo_dir.join(d));
        }
    }
    result
}

/// Why a request failed, in words, from the status code when there is one.
fn request_failure(name: &HubName, s: &HubSettings, file: Option<&str>, e: &ureq::Error) -> Error {
    let what = file.unwrap_or(&name.repo);
    let token_hint = if s.token.is_some() {
        "the token in HF_TOKEN has no access to it"
    } else {
        "set HF_TOKEN to a token with access"
    };
    let msg = match e {
        ureq::Error::StatusCode(401) => format!(
            "{what}: the Hub refused access (HTTP 401): the repository is gated or private, or does not exist; {token_hint}"
        ),
        ureq::Error::StatusCode(403) => format!(
            "{what}: access denied (HTTP 403): a gated repository needs its terms accepted on the Hub, and {token_hint}"
        ),
        ureq::Error::StatusCode(404) => match file {
            Some(f) => format!("{f} not found at revision \"{}\" (HTTP 404)", name.revision),
            None => format!("no model repository {} (HTTP 404; {NOT_LOCAL})", name.repo),
        },
        ureq::Error::StatusCode(c) => format!("{what}: the Hub answered HTTP {c}"),
        e => format!(
            "cannot download {what} from {}: {e} (set HF_HUB_OFFLINE=1 to use only the cache)",
            s.endpoint
        ),
    };
    hub_err(name, msg)
}

fn api_failure(name: &HubName, s: &HubSettings, file: &str, e: ApiError) -> Error {
    match e {
        ApiError::RequestError(e) => request_failure(name, s, Some(file), &e),
        ApiError::TooManyRetries(e) => api_failure(name, s, file, *e),
        e => file_err(
            name,
            file,
            format!("download failed: {e}; nothing was kept in the cache"),
        ),
    }
}

/// The repository's listing at a revision: its commit and file names.
fn repo_info(api: &Api, name: &HubName, s: &HubSettings) -> Result<(String, Vec<String>)> {
    let repo = Repo::with_revision(name.repo.clone(), RepoType::Model, name.revision.clone());
    let mut response = api
        .repo(repo)
        .info_request()
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .map_err(|e| request_failure(name, s, None, &e))?;
    let status = response.status().as_u16();
    if status != 200 {
        // The Hub says which of repository and revision is unknown in X-Error-Code.
        let code = response
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if code == "RevisionNotFound" {
            return Err(hub_err(
                name,
                format!(
                    "revision \"{}\" not found in {} (HTTP {status})",
                    name.revision, name.repo
                ),
            ));
        }
        if code == "RepoNotFound" || code == "RepositoryNotFound" {
            return Err(hub_err(
                name,
                format!(
                    "no model repository {} on {} (HTTP {status}; a private one needs HF_TOKEN; {NOT_LOCAL})",
                    name.repo, s.endpoint
                ),
            ));
        }
        return Err(request_failure(
            name,
            s,
            None,
            &ureq::Error::StatusCode(status),
        ));
    }
    let info: hf_hub::api::RepoInfo = response.body_mut().read_json().map_err(|e| {
        hub_err(
            name,
            format!("the Hub's repository listing is malformed: {e}"),
        )
    })?;
    if !is_commit(&info.sha) {
        return Err(hub_err(
            name,
            format!(
                "the Hub's repository listing has no commit id (sha \"{}\")",
                info.sha
            ),
        ));
    }
    Ok((
        info.sha,
        info.siblings.into_iter().map(|x| x.rfilename).collect(),
    ))
}

/// Temporary download folders are `<repo folder>/.ptune-download-<pid>-<random>`.
const TMP_PREFIX: &str = ".ptune-download-";

/// Removes the temporary download folders of processes that no longer run (killed mid-download,
/// so their folder's drop never ran); those of running processes are left alone.
fn remove_orphaned_downloads(repo_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(repo_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TMP_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM means it exists under another user.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: i32) -> bool {
    true
}

fn download_missing(name: &HubName, s: &HubSettings, repo_dir: &Path) -> Result<PathBuf> {
    let io = |p: &Path, e: std::io::Error| Error::io(p, e);
    std::fs::create_dir_all(repo_dir).map_err(|e| io(repo_dir, e))?;
    remove_orphaned_downloads(repo_dir);
    // hf-hub's own cache for this resolution (see the module docs for why): removed on drop.
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{}-", std::process::id()))
        .tempdir_in(repo_dir)
        .map_err(|e| io(repo_dir, e))?;
    let api = ApiBuilder::from_cache(Cache::new(tmp.path().to_path_buf()))
        .with_endpoint(s.endpoint.trim_end_matches('/').to_string())
        .with_token(s.token.clone())
        .with_progress(s.progress)
        .with_user_agent("ptune", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| hub_err(name, format!("cannot set up the Hub client: {e}")))?;
    let (commit, files) = repo_info(&api, name, s)?;
    let has = |f: &str| files.iter().any(|x| x == f);
    for f in ["config.json", "vocab.txt"] {
        if !has(f) {
            return Err(hub_err(
                name,
                format!(
                    "the repository has no {f} at revision \"{}\" (ptune needs a BERT checkpoint: config.json, vocab.txt, weights)",
                    name.revision
                ),
            ));
        }
    }
    let weights = WEIGHTS.iter().copied().find(|w| has(w)).ok_or_else(|| {
        hub_err(
            name,
            format!(
                "the repository has no weights at revision \"{}\" ({}, {} or {})",
                name.revision, WEIGHTS[0], WEIGHTS[1], WEIGHTS[2]
            ),
        )
    })?;
    let pinned = Fetcher {
        api: &api,
        name,
        settings: s,
        repo: Repo::with_revision(name.repo.clone(), RepoType::Model, commit.clone()),
        repo_dir,
        snapshot: repo_dir.join("snapshots").join(&commit),
    };
    let mut wanted = vec!["config.json", "vocab.txt"];
    if has("tokenizer_config.json") {
        wanted.push("tokenizer_config.json");
    }
    for f in wanted {
        pinned.ensure(f)?;
    }
    let weight_file = pinned.ensure(weights)?;
    if weights == WEIGHTS[1] {
        let shards = shard_names(&weight_file).map_err(|m| file_err(name, WEIGHTS[1], m))?;
        for shard in &shards {
            pinned.ensure(shard)?;
        }
    }
    if name.revision != commit {
        let r = repo_dir.join("refs").join(&name.revision);
        // Python's huggingface_hub writes the commit without a newline.
        write_atomic(&r, commit.as_bytes())?;
    }
    drop(tmp);
    Ok(pinned.snapshot)
}

struct Fetcher<'a> {
    api: &'a Api,
    name: &'a HubName,
    settings: &'a HubSettings,
    /// The repository at the listed commit, so that every file comes from one snapshot.
    repo: Repo,
    repo_dir: &'a Path,
    snapshot: PathBuf,
}

impl Fetcher<'_> {
    /// `snapshots/<commit>/<file>`, downloaded and verified first unless already there.
    fn ensure(&self, file: &str) -> Result<PathBuf> {
        let name = self.name;
        if !safe_file_name(file) {
            return Err(file_err(name, file, "not a plain file name"));
        }
        let target = self.snapshot.join(file);
        if target.is_file() {
            return Ok(target);
        }
        let api_repo = self.api.repo(self.repo.clone());
        let meta = self
            .api
            .metadata(&api_repo.url(file))
            .map_err(|e| api_failure(name, self.settings, file, e))?;
        let etag = meta.etag().to_string();
        if etag.is_empty()
            || !etag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(file_err(
                name,
                file,
                format!("the Hub sent an unusable etag \"{etag}\""),
            ));
        }
        let blob = self.repo_dir.join("blobs").join(&etag);
        if !blob.is_file() {
            let downloaded = api_repo
                .download(file)
                .map_err(|e| api_failure(name, self.settings, file, e))?;
            // hf-hub links the snapshot entry to its blob; check and move the blob itself.
            let tmp_blob =
                std::fs::canonicalize(&downloaded).map_err(|e| Error::io(&downloaded, e))?;
            verify(&tmp_blob, meta.size() as u64, &etag)
                .map_err(|m| file_err(name, file, format!("{m}; nothing was kept in the cache")))?;
            let blobs = self.repo_dir.join("blobs");
            std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
            std::fs::rename(&tmp_blob, &blob).map_err(|e| Error::io(&blob, e))?;
        }
        link(&blob, &target)?;
        Ok(target)
    }
}

/// Checks a downloaded file's size and, where the etag is a content hash, its hash.
fn verify(path: &Path, size: u64, etag: &str) -> std::result::Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("reading the download: {e}"))?;
    let len = f
        .metadata()
        .map_err(|e| format!("reading the download: {e}"))?
        .len();
    if len != size {
        return Err(format!(
            "download incomplete: got {len} bytes, the Hub announced {size}"
        ));
    }
    let hex = etag.len() == 64 || etag.len() == 40;
    if !hex || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(()); // not a content hash: the size is all there is to check
    }
    let mut sha256 = sha2::Sha256::new();
    let mut sha1 = sha1::Sha1::new();
    if etag.len() == 40 {
        // A git blob id: SHA-1 of "blob <len>\0" and the content.
        sha1.update(format!("blob {len}\0").as_bytes());
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("reading the download: {e}"))?;
        if n == 0 {
            break;
        }
        if etag.len() == 64 {
            sha256.update(&buf[..n]);
        } else {
            sha1.update(&buf[..n]);
        }
    }
    let got: String = if etag.len() == 64 {
        sha256
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    } else {
        sha1.finalize().iter().map(|b| format!("{b:02x}")).collect()
    };
    if !got.eq_ignore_ascii_case(etag) {
        let kind = if etag.len() == 64 {
            "SHA-256"
        } else {
            "git blob id"
        };
        return Err(format!(
            "checksum mismatch: {kind} of the download is {got}, the Hub's etag is {etag}"
        ));
    }
    Ok(())
}

/// Points `link` at `blob` by a relative symlink (as huggingface_hub does), replacing any
/// entry atomically; a copy where symlinks are unavailable.
fn link(blob: &Path, link: &Path) -> Result<()> {
    let dir = link.parent().expect("snapshot file has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = link.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.ptune-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    let made = {
        // snapshots/<commit>/<file> -> ../../blobs/<etag>
        let rel = Path::new("../../blobs").join(blob.file_name().unwrap_or_default());
        std::os::unix::fs::symlink(rel, &tmp)
    };
    #[cfg(not(unix))]
    let made = std::fs::copy(blob, &tmp).map(|_| ());
    made.and_then(|()| std::fs::rename(&tmp, link))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(link, e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_keeps_paths_local() {
        let n = HubName::parse("hfl/chinese-roberta-wwm-ext").unwrap();
        assert_eq!(
            (n.repo.as_str(), n.revision.as_str()),
            ("hfl/chinese-roberta-wwm-ext", "main")
        );
        let n = HubName::parse("google-bert/bert-base-chinese@v1.0").unwrap();
        assert_eq!(n.revision, "v1.0");
        assert_eq!(
            HubName::parse("a/b@refs/pr/1").unwrap().revision,
            "refs/pr/1"
        );
        for bad in [
            "a", "a/b/c", "./a", "/abs/x", "a/", "/b", "a--x/b", "a/b@", "a/b@x y", "a/../b",
            "a/.b", "a b/c",
        ] {
            assert_eq!(HubName::parse(bad), None, "{bad}");
        }
        // An existing path is local even when it looks like a Hub name.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("org/name")).unwrap();
        let cwd_rel = dir.path().join("org/name");
        assert_eq!(
            ModelSpec::parse(&cwd_rel),
            ModelSpec::Local(cwd_rel.clone())
        );
        assert!(matches!(
            ModelSpec::parse(Path::new("no-such-org-xyz/model")),
            ModelSpec::Hub(_)
        ));
        assert!(matches!(
            ModelSpec::parse(Path::new("./no-such-org-xyz/model")),
            ModelSpec::Local(_)
        ));
    }

    #[test]
    fn verify_checks_size_and_both_hash_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `git hash-object` of "hello\n" and sha256sum of it.
        let git = "ce013625030ba8dba906f756967f9e9ca394464a";
        let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(verify(&p, 6, git), Ok(()));
        assert_eq!(verify(&p, 6, sha), Ok(()));
        assert!(
            verify(&p, 7, sha)
                .unwrap_err()
                .contains("got 6 bytes, the Hub announced 7")
        );
        let wrong = "0".repeat(64);
        assert!(
            verify(&p, 6, &wrong)
                .unwrap_err()
                .contains("checksum mismatch")
        );
        assert_eq!(verify(&p, 6, "W-opaque"), Ok(()));
    }
}
