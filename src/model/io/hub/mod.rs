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

mod cache;
mod download;
mod name;
mod settings;

use std::path::{Path, PathBuf};

use hf_hub::{Repo, RepoType};

use crate::error::Result;
use cache::{cached_snapshot, missing_in_snapshot};
use download::download_missing;
pub use name::{HubName, ModelSpec};
use name::{NOT_LOCAL, hub_err};
pub use settings::{DEFAULT_ENDPOINT, HubSettings};

/// The model directory `spec` names: a local path as given, or a Hub name resolved (and
/// downloaded when missing) through the cache. `settings` is only called for a Hub name.
pub fn resolve(spec: &Path, settings: impl FnOnce() -> Result<HubSettings>) -> Result<PathBuf> {
    match ModelSpec::parse(spec) {
        ModelSpec::Local(p) => Ok(p),
        ModelSpec::Hub(name) => fetch(&name, &settings()?),
    }
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
