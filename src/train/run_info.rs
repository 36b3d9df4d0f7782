//! `run.json` of a run directory: what the run was made from — the backbone (directory and
//! fingerprint), the data splits (SHA-256 of each file) and the precision of the matrix
//! products. `--resume` refuses a run whose backbone, data or precision changed since it
//! started; `export` takes the backbone from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::prepare::DataFiles;
use crate::error::{Error, Result, read_file, write_atomic};
use crate::model::kernels::{Precision, matmul_precision};

/// File name of the run description inside the run directory.
pub const FILE: &str = "run.json";

/// What a run was made from: the backbone and the data, recorded in `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The backbone's directory when the run started.
    pub model: PathBuf,
    /// [`crate::adapter::fingerprint`] of the backbone.
    pub backbone: String,
    /// SHA-256 of train, valid and test files.
    pub data: [String; 3],
    /// Precision of the matrix products (`f32` or `bf16`; runs from before it was recorded:
    /// `f32`, the only one there was).
    #[serde(default = "f32_name")]
    pub precision: String,
}

fn f32_name() -> String {
    Precision::F32.to_string()
}

fn file_sha256(path: &Path) -> Result<String> {
    Ok(Sha256::digest(read_file(path)?)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl RunInfo {
    /// Describes a run of `model` (fingerprint `backbone`) on `data`, hashing the three split files
    /// (the directory canonicalised when it can be), at the products' current precision. Fails
    /// with `Error::Io` when a split cannot be read.
    pub fn new(model: &Path, backbone: String, data: &DataFiles) -> Result<Self> {
        Ok(RunInfo {
            model: std::fs::canonicalize(model).unwrap_or_else(|_| model.to_path_buf()),
            backbone,
            data: [
                file_sha256(&data.train)?,
                file_sha256(&data.valid)?,
                file_sha256(&data.test)?,
            ],
            precision: matmul_precision().to_string(),
        })
    }

    /// Reads `run.json` from `run_dir`: `None` when the file is not there, `Error::File` when it
    /// does not parse.
    pub fn read(run_dir: &Path) -> Result<Option<Self>> {
        let path = run_dir.join(FILE);
        if !path.is_file() {
            return Ok(None);
        }
        serde_json::from_slice(&read_file(&path)?)
            .map(Some)
            .map_err(|e| Error::file(&path, format!("malformed run description: {e}")))
    }

    /// Writes `run.json` into `run_dir` atomically (pretty JSON).
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        write_atomic(
            &run_dir.join(FILE),
            serde_json::to_string_pretty(self).expect("json").as_bytes(),
        )
    }

    /// Fails, naming what changed, when `now` differs from the run's record.
    pub fn check_same(&self, now: &RunInfo, run_dir: &Path) -> Result<()> {
        let mut changed = Vec::new();
        if self.backbone != now.backbone {
            changed.push(format!("the backbone ({})", now.model.display()));
        }
        for (i, name) in ["train", "valid", "test"].iter().enumerate() {
            if self.data[i] != now.data[i] {
                changed.push(format!("the {name} split"));
            }
        }
        if self.precision != now.precision {
            changed.push(format!(
                "the precision ({} then, --precision {} now)",
                self.precision, now.precision
            ));
        }
        if changed.is_empty() {
            return Ok(());
        }
        Err(Error::file(
            run_dir.join(FILE),
            format!(
                "cannot resume: {} changed since the run started (start a new run instead)",
                changed.join(" and ")
            ),
        ))
    }
}
