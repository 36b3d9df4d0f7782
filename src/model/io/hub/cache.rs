//! The Hub cache layout shared with Python tools: `models--ORG--NAME/snapshots/<commit>/`
//! entries linked to `blobs/<etag>`, `refs/<revision>` holding a commit; what a complete
//! model snapshot holds.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(super) const WEIGHTS: [&str; 3] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
];

/// Shard file names listed by an index's `weight_map`, in first-seen order.
pub(super) fn shard_names(index: &Path) -> std::result::Result<Vec<String>, String> {
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

pub(super) fn safe_file_name(f: &str) -> bool {
    !f.is_empty() && !f.contains(['/', '\\']) && f != "." && f != ".."
}

/// The first file a snapshot directory lacks for a complete model, if any.
pub(super) fn missing_in_snapshot(snap: &Path) -> Option<String> {
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

pub(super) fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The snapshot `revision` points to in the cache, if the cache knows it.
pub(super) fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if is_commit(revision) && snapshots.join(revision).is_dir() {
        return Some(snapshots.join(revision));
    }
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let commit = commit.trim();
    (is_commit(commit) && snapshots.join(commit).is_dir()).then(|| snapshots.join(commit))
}

/// Points `link` at `blob` by a relative symlink (as huggingface_hub does), replacing any
/// entry atomically; a copy where symlinks are unavailable.
pub(super) fn link(blob: &Path, link: &Path) -> Result<()> {
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
