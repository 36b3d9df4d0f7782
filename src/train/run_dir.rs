//! A run directory, the one owner of its layout: every path in it and every read and write of
//! its files goes through [`RunDir`].
//!
//! ```text
//! config.toml      the run's TrainConfig (a comment line names the model and data)
//! run.json         what the run was made from (RunInfo: backbone fingerprint, data SHA-256)
//! metrics.jsonl    one EpochRecord per evaluated epoch
//! summary.json     the Summary (model selection on valid)
//! curve.svg        valid and test accuracy per epoch
//! calibration.json a calibrated zero-shot run's class prior and bias (Calibrated)
//! best/            the best-on-valid weights (prompt_encoder, deep_prompt, head safetensors;
//!                  a trained LM as a Hugging Face model directory)
//! checkpoint/      crash-safe epoch checkpoints (see [`super::checkpoint`])
//! ```
//!
//! The start rule: a directory that already holds a run (a checkpoint or metrics) is only
//! continued ([`Start::Resume`]) or cleared ([`Start::Force`]), never silently overwritten.

use std::path::{Path, PathBuf};

use super::checkpoint::{Checkpoints, read_saved_config};
use super::config::TrainConfig;
use super::plot::{Series, write_curves};
use super::report::{EpochRecord, Summary};
use super::run_info::{self, RunInfo};
use crate::classifier::Calibration;
use crate::error::{Error, Result, read_file, write_atomic};

const CONFIG: &str = "config.toml";
const METRICS: &str = "metrics.jsonl";
const SUMMARY: &str = "summary.json";
const CURVE: &str = "curve.svg";
const BEST: &str = "best";
const CALIBRATION: &str = "calibration.json";

/// A calibrated zero-shot run's `calibration.json`: where its class prior came from, the prior
/// and the bias added to the class scores (what `export` puts in the adapter).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibrated {
    /// The prior's source.
    pub source: Calibration,
    /// How many texts the prior is the mean over.
    pub texts: usize,
    /// The classes, in order.
    pub classes: Vec<String>,
    /// Mean class probabilities over those texts.
    pub prior: Vec<f32>,
    /// `-ln prior`, added to the class scores.
    pub bias: Vec<f32>,
}

impl Calibrated {
    /// Writes `calibration.json` in `run`, atomically.
    pub fn write(&self, run: &RunDir) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("serialisable");
        write_atomic(&run.calibration_path(), json.as_bytes())
    }

    /// Reads `calibration.json` of `run`; its bias must be finite.
    pub fn read(run: &RunDir) -> Result<Self> {
        let path = run.calibration_path();
        let c: Calibrated = serde_json::from_slice(&read_file(&path)?)
            .map_err(|e| Error::file(&path, format!("bad calibration: {e}")))?;
        if c.bias.is_empty()
            || c.bias.len() != c.classes.len()
            || c.bias.iter().any(|b| !b.is_finite())
        {
            return Err(Error::file(
                &path,
                "bad calibration: the bias needs one finite value per class",
            ));
        }
        Ok(c)
    }
}

/// File names inside `best/` (written by training, read by `export`).
pub mod best_files {
    /// The prompt encoder, PyTorch names (`embedding.weight`, `lstm.*`, `mlp.*`).
    pub const PROMPT_ENCODER: &str = "prompt_encoder.safetensors";
    /// The deep prompts, PEFT names (`embedding.weight`, `transform.*`).
    pub const DEEP_PROMPT: &str = "deep_prompt.safetensors";
    /// The linear head (`weight` `[classes, hidden]`, `bias`).
    pub const HEAD: &str = "head.safetensors";
    /// A trained LM's weights (Hugging Face names), next to its `config.json` and `vocab.txt`.
    pub const LM_WEIGHTS: &str = "model.safetensors";
}

/// How a run starts in its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A fresh run; refused where a run already is.
    New,
    /// Continue the run there from its latest checkpoint (or start it when there is none).
    Resume,
    /// Remove the outputs of any run there, then start afresh.
    Force,
}

impl Start {
    /// The start a command line's `resume` and `force` switches ask for.
    pub fn from_flags(resume: bool, force: bool) -> Self {
        match (resume, force) {
            (true, _) => Start::Resume,
            (false, true) => Start::Force,
            (false, false) => Start::New,
        }
    }
}

/// [`RunDir::prepare`] refused: the directory holds a run, and the start was [`Start::New`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldsRun(pub PathBuf);

/// A run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root` (nothing is created until [`RunDir::create`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.toml`: the run's configuration.
    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG)
    }

    /// `metrics.jsonl`: one [`EpochRecord`] per evaluated epoch.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(METRICS)
    }

    /// `run.json`: what the run was made from ([`RunInfo`]).
    pub fn run_info_path(&self) -> PathBuf {
        self.root.join(run_info::FILE)
    }

    /// `calibration.json`: a calibrated zero-shot run's [`Calibrated`].
    pub fn calibration_path(&self) -> PathBuf {
        self.root.join(CALIBRATION)
    }

    /// `best/`: the best-on-valid weights.
    pub fn best_dir(&self) -> PathBuf {
        self.root.join(BEST)
    }

    fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(&self.root)
    }

    /// Whether a run has been started here (it has a checkpoint or metrics).
    pub fn holds_run(&self) -> bool {
        self.checkpoints().dir().exists() || self.metrics_path().exists()
    }

    /// The start rule: a directory holding a run is refused for a new run; with
    /// [`Start::Force`] the outputs of the old run are removed first.
    pub fn prepare(&self, start: Start) -> std::result::Result<(), HoldsRun> {
        if start == Start::New && self.holds_run() {
            return Err(HoldsRun(self.root.clone()));
        }
        if start == Start::Force {
            let checkpoint = self.checkpoints().dir().to_path_buf();
            for path in [
                checkpoint,
                self.best_dir(),
                self.metrics_path(),
                self.root.join(SUMMARY),
                self.root.join(CURVE),
                self.calibration_path(),
            ] {
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
        Ok(())
    }

    /// Creates the directory.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))
    }

    /// Writes `config.toml`: a comment line `header`, then the configuration.
    pub fn write_config(&self, header: &str, config: &TrainConfig) -> Result<()> {
        let text = format!("# {header}\n{}", config.to_toml());
        write_atomic(&self.config_path(), text.as_bytes())
    }

    /// Whether `config.toml` holds another configuration than `config`.
    pub fn config_differs(&self, config: &TrainConfig) -> Result<bool> {
        let saved: TrainConfig = read_saved_config(&self.config_path())?;
        Ok(saved != *config)
    }

    /// Fails unless `config.toml` holds `config` (a resumed run keeps its configuration).
    pub fn check_config(&self, config: &TrainConfig) -> Result<()> {
        if self.config_differs(config)? {
            return Err(Error::file(
                self.config_path(),
                "cannot resume: this run was started with a different configuration",
            ));
        }
        Ok(())
    }

    /// The run's configuration (for export).
    pub fn read_config(&self) -> Result<TrainConfig> {
        let path = self.config_path();
        let text =
            String::from_utf8(read_file(&path)?).map_err(|_| Error::file(&path, "not UTF-8"))?;
        toml::from_str(&text).map_err(|e| Error::file(&path, e.message().to_string()))
    }

    /// The run's `run.json`, or `None` when the directory has none.
    /// Returns `Error::File` when it is malformed.
    pub fn read_info(&self) -> Result<Option<RunInfo>> {
        RunInfo::read(&self.root)
    }

    /// Writes `run.json` atomically.
    pub fn write_info(&self, info: &RunInfo) -> Result<()> {
        info.write(&self.root)
    }

    /// Fails, naming what changed, when the run was made from other files than `now`.
    pub fn check_info(&self, saved: &RunInfo, now: &RunInfo) -> Result<()> {
        saved.check_same(now, &self.root)
    }

    /// The evaluated epochs as `metrics.jsonl` records (lines that do not parse are skipped).
    pub fn read_metrics(&self) -> Result<Vec<EpochRecord>> {
        let path = self.metrics_path();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// metrics.jsonl, the learning-curve plot (titled `title`) and, once the run has one,
    /// summary.json, each written atomically.
    pub fn write_outputs(
        &self,
        history: &[EpochRecord],
        summary: Option<&Summary>,
        title: &str,
    ) -> Result<()> {
        let mut jsonl = String::new();
        for r in history {
            jsonl.push_str(&serde_json::to_string(r).expect("serialisable"));
            jsonl.push('\n');
        }
        write_atomic(&self.metrics_path(), jsonl.as_bytes())?;
        let series = |name: &str, f: fn(&EpochRecord) -> Option<f64>| Series {
            label: name.to_string(),
            points: history
                .iter()
                .filter_map(|r| Some((r.epoch as f64, f(r)?)))
                .collect(),
        };
        write_curves(
            &self.root.join(CURVE),
            title,
            &[
                series("valid accuracy", |r| Some(r.valid.accuracy)),
                series("test accuracy", |r| r.test.as_ref().map(|t| t.accuracy)),
            ],
        )?;
        match summary {
            Some(summary) => {
                let json = serde_json::to_string_pretty(summary).expect("serialisable");
                write_atomic(&self.root.join(SUMMARY), json.as_bytes())
            }
            None => Ok(()),
        }
    }

    /// Writes files into `best/`, each atomically.
    pub fn write_best(&self, files: &[(&str, Vec<u8>)]) -> Result<()> {
        let dir = self.best_dir();
        for (name, bytes) in files {
            write_atomic(&dir.join(name), bytes)?;
        }
        Ok(())
    }

    /// The path of `best/<file>`, which must exist.
    pub fn best_file(&self, file: &str) -> Result<PathBuf> {
        let path = self.best_dir().join(file);
        if !path.is_file() {
            return Err(Error::file(
                &path,
                "missing: the run has no best checkpoint yet",
            ));
        }
        Ok(path)
    }

    /// The checkpoint directory (for messages).
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.checkpoints().dir().to_path_buf()
    }

    /// The directory of the newest complete checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<PathBuf>> {
        self.checkpoints().latest()
    }

    /// Writes epoch `epoch`'s checkpoint files and makes it the latest (older ones go).
    pub fn write_checkpoint(&self, epoch: usize, files: &[(&str, &[u8])]) -> Result<PathBuf> {
        self.checkpoints()
            .write(&format!("epoch-{epoch:04}"), files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_rule_refuses_new_runs_over_old_ones_and_force_clears() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        assert!(!run.holds_run());
        run.prepare(Start::New).unwrap();
        run.write_checkpoint(1, &[("a", b"1")]).unwrap();
        run.write_best(&[("x.safetensors", b"x".to_vec())]).unwrap();
        std::fs::write(run.config_path(), "kept").unwrap();
        assert!(run.holds_run());
        assert_eq!(
            run.prepare(Start::New),
            Err(HoldsRun(tmp.path().to_path_buf()))
        );
        run.prepare(Start::Resume).unwrap();
        assert!(run.latest_checkpoint().unwrap().is_some());
        run.prepare(Start::Force).unwrap();
        assert!(!run.holds_run());
        assert!(!run.best_dir().exists());
        assert!(run.config_path().is_file());
        assert!(run.best_file("x.safetensors").is_err());
    }

    #[test]
    fn start_from_flags() {
        assert_eq!(Start::from_flags(false, false), Start::New);
        assert_eq!(Start::from_flags(true, false), Start::Resume);
        assert_eq!(Start::from_flags(false, true), Start::Force);
    }
}
