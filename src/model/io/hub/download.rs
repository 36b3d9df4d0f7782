//! Downloading the files a snapshot lacks through `hf-hub`, into a private temporary cache,
//! each verified (size, content hash) before it is moved into the shared cache (see the
//! `hub` module's docs).

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use sha2::Digest;

use super::cache::{WEIGHTS, is_commit, link, safe_file_name, shard_names};
use super::name::{HubName, NOT_LOCAL, file_err, hub_err};
use super::settings::HubSettings;
use crate::error::{Error, Result, write_atomic};

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

pub(super) fn download_missing(
    name: &HubName,
    s: &HubSettings,
    repo_dir: &Path,
) -> Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
