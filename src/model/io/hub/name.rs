//! Hub model names, `ORG/NAME[@REVISION]`, and what a `--model` value names; the errors
//! that name a Hub model.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// A Hub model name: `ORG/NAME` and a revision (branch, tag or commit; default `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubName {
    /// `ORG/NAME`.
    pub repo: String,
    /// Branch, tag or commit.
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
    /// A local model directory (it may not exist).
    Local(PathBuf),
    /// A model on the Hub, to be downloaded or found in the cache.
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
    /// `name`) stays a local path, whose absence is reported by `ModelDir::open`.
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

pub(super) fn hub_err(name: &HubName, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{name}: {msg}"))
}

/// Said when a name is unknown: it may have been meant as a local path.
pub(super) const NOT_LOCAL: &str = "no local directory of that name either";

pub(super) fn file_err(name: &HubName, file: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{name}: {file}: {msg}"))
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
}
