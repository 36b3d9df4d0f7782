//! Crash-safe epoch checkpoints: each epoch's files go to `checkpoint/epoch-NNNN/` (each file
//! written atomically), then the one-line `checkpoint/LATEST` is atomically switched to it,
//! then older epochs are removed. A kill at any moment leaves `LATEST` naming a complete set.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, write_atomic};

/// Reads the TOML settings a run was started with (`config.toml`, `pretrain.toml`), to compare
/// with a resume's.
pub fn read_saved_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| Error::file(path, e.message().to_string()))
}

/// The `checkpoint/` directory of a run (training or pretraining): epoch or step directories
/// and the `LATEST` pointer.
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    /// The checkpoints of the run directory `run_dir` (`run_dir/checkpoint`; nothing is created).
    pub fn new(run_dir: &Path) -> Self {
        Checkpoints {
            dir: run_dir.join("checkpoint"),
        }
    }

    /// The `checkpoint/` directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        let pointer = self.dir.join("LATEST");
        if !pointer.is_file() {
            return Ok(None);
        }
        let name = std::fs::read_to_string(&pointer).map_err(|e| Error::io(&pointer, e))?;
        let name = name.trim();
        if name.is_empty() || name.contains('/') || name.contains("..") {
            return Err(Error::file(
                &pointer,
                format!("does not name a checkpoint: \"{name}\""),
            ));
        }
        let dir = self.dir.join(name);
        if !dir.is_dir() {
            return Err(Error::file(
                &pointer,
                format!("names {name}, which does not exist"),
            ));
        }
        Ok(Some(dir))
    }

    /// Writes the files of checkpoint `name` (e.g. `epoch-0003`) and makes it the latest;
    /// every other checkpoint directory is removed.
    pub fn write(&self, name: &str, files: &[(&str, &[u8])]) -> Result<PathBuf> {
        let dir = self.dir.join(name);
        for (file, bytes) in files {
            write_atomic(&dir.join(file), bytes)?;
        }
        write_atomic(&self.dir.join("LATEST"), format!("{name}\n").as_bytes())?;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && n != name {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_follows_writes_and_prunes() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(tmp.path());
        assert!(c.latest().unwrap().is_none());
        c.write("epoch-0001", &[("a", b"1")]).unwrap();
        let d2 = c.write("epoch-0002", &[("a", b"2")]).unwrap();
        assert_eq!(c.latest().unwrap().unwrap(), d2);
        assert_eq!(std::fs::read(d2.join("a")).unwrap(), b"2");
        assert!(!tmp.path().join("checkpoint/epoch-0001").exists());
        // an orphan directory from a killed write does not change LATEST
        std::fs::create_dir_all(tmp.path().join("checkpoint/epoch-0003")).unwrap();
        assert_eq!(c.latest().unwrap().unwrap(), d2);
    }
}
