//! Training configuration: recipes (TOML, top-level keys for every method, a table per method)
//! resolved into one [`TrainConfig`] per run, then overridden by command-line flags.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::classifier::{Calibration, Head};
use crate::data::{FewShot, MlmAugment};
use crate::error::{Error, Result};
use crate::model::config::BertConfig;
use crate::model::deep_prompt::Reparam;
use crate::model::prefix_init::PrefixInit;
use crate::model::prompt_encoder::PromptEncoderKind;

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Frozen LM; only the prompt encoder trains (add `tune_lm` to train both).
    Ptune,
    /// Every LM weight trains; pseudo tokens are plain `[unusedK]` tokens.
    Finetune,
    /// No training: the template and label words on the pretrained LM.
    Zeroshot,
    /// Deep prompts (P-tuning v2): frozen LM; trainable keys and values in every layer (and
    /// the prompt encoder when the template has `[P]` tokens, and a linear head if asked).
    #[serde(rename = "ptune-v2")]
    PtuneV2,
}

impl Method {
    /// The method's name in recipes, on the command line and in run directories (`ptune-v2` for
    /// [`Method::PtuneV2`]).
    pub fn name(self) -> &'static str {
        match self {
            Method::Ptune => "ptune",
            Method::Finetune => "finetune",
            Method::Zeroshot => "zeroshot",
            Method::PtuneV2 => "ptune-v2",
        }
    }

    /// Every method; a recipe's top-level table named after one applies to that method only.
    pub const ALL: [Method; 4] = [
        Method::Ptune,
        Method::Finetune,
        Method::Zeroshot,
        Method::PtuneV2,
    ];
}

/// The optimizer a run uses; both are [`FusedAdam`](super::optim::FusedAdam).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with L2 weight decay added to the gradient (torch.optim.Adam).
    Adam,
    /// Adam with decoupled weight decay (torch.optim.AdamW).
    Adamw,
}

/// How the learning rate changes during a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// lr × gamma^(epoch − 1), stepped once per epoch (ExponentialLR).
    Exponential(f64),
    /// lr × max(0, 1 − step / n), stepped once per optimizer step.
    Linear(usize),
}

impl Schedule {
    /// Learning rate for the update made at `step` (0-based, counted over the whole run) in
    /// `epoch` (1-based).
    pub fn lr(&self, base: f64, epoch: usize, step: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Exponential(g) => base * g.powi(epoch.saturating_sub(1) as i32),
            Schedule::Linear(n) => base * (1.0 - step as f64 / n.max(1) as f64).max(0.0),
        }
    }
}

/// Everything one training run is set up with: a recipe's values for one method, after the
/// command-line overrides. Unknown keys are refused. Checked by [`TrainConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// What is trained.
    pub method: Method,
    /// With `ptune`: also train the LM's own weights (default false).
    #[serde(default)]
    pub tune_lm: bool,
    /// Template spec, e.g. `"[P]*4 [MASK] [P]*4 {text}"` (see
    /// [`Template`](crate::prompt::Template)).
    pub template: String,
    /// Label words, `class=word,...` (see [`Verbalizer`](crate::prompt::Verbalizer)).
    pub labels: String,
    /// Architecture of the prompt encoder (default LSTM).
    #[serde(default = "default_encoder")]
    pub prompt_encoder: PromptEncoderKind,
    /// Which training rows are used.
    pub fewshot: FewShot,
    /// Seed of the few-shot selection, the initialisation and each epoch's shuffles.
    pub seed: u64,
    /// Longest encoded example in tokens, `[CLS]`, `[SEP]` and the template included; the text is
    /// cut to fit.
    pub max_len: usize,
    /// Examples per optimizer step; positive.
    pub batch_size: usize,
    /// Examples per forward pass when evaluating; positive.
    pub eval_batch: usize,
    /// Training epochs; positive except for `zeroshot` (default 0).
    #[serde(default)]
    pub epochs: usize,
    /// Shuffled passes over the few-shot set per epoch.
    #[serde(default = "one")]
    pub passes: usize,
    /// Cap on optimizer steps per epoch (throughput runs).
    #[serde(default)]
    pub max_steps_per_epoch: Option<usize>,
    /// Adam (L2 decay) or AdamW (decoupled decay); default Adam.
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    /// Base learning rate; a positive number except for `zeroshot`.
    #[serde(default)]
    pub lr: f64,
    /// Learning rate of the linear head (`head = "linear"`), following the same schedule;
    /// default: `lr`, like every other trained tensor.
    #[serde(default)]
    pub head_lr: Option<f64>,
    /// Weight decay coefficient, ≥ 0 (default 0): an L2 term for Adam, decoupled for AdamW.
    #[serde(default)]
    pub weight_decay: f64,
    /// Learning-rate schedule over the run (default constant).
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Random-MLM targets on training batches; `None`: the label word is the only target.
    #[serde(default)]
    pub mlm_augment: Option<MlmAugment>,
    /// Turn the checkpoint's dropout off while training (the reference keeps it on).
    #[serde(default)]
    pub no_dropout: bool,
    /// Deep prompts (`ptune-v2`): virtual tokens prepended to every layer's keys and values.
    #[serde(default)]
    pub prefix_len: usize,
    /// How deep prompts are parameterised while training.
    #[serde(default)]
    pub reparam: Reparam,
    /// Hidden width of the reparameterisation MLP.
    #[serde(default = "default_reparam_hidden")]
    pub reparam_hidden: usize,
    /// How the class is read at `[MASK]`: label words by the MLM head, or a linear head.
    #[serde(default)]
    pub head: Head,
    /// How deep prompts start: random, or the LM's keys and values of a text.
    #[serde(default)]
    pub prefix_init: PrefixInit,
    /// Zero-shot: divide the label words' probabilities by a class prior from this source (see
    /// [`prior_bias`](crate::classifier::prior_bias)); `None`: the LM's scores as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrate: Option<Calibration>,
}

fn default_reparam_hidden() -> usize {
    512
}

fn default_encoder() -> PromptEncoderKind {
    PromptEncoderKind::Lstm
}
fn one() -> usize {
    1
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Adam
}
fn default_schedule() -> Schedule {
    Schedule::Constant
}

/// Recipes compiled into the binary, so `--recipe seed` works from any directory.
pub const BUILTIN_RECIPES: [(&str, &str); 2] = [
    ("seed", include_str!("../../recipes/seed.toml")),
    ("quick", include_str!("../../recipes/quick.toml")),
];

/// A recipe: a built-in name or a TOML file.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The built-in name, or the path the recipe was read from.
    pub name: String,
    table: toml::Table,
}

impl Recipe {
    /// A built-in recipe ([`BUILTIN_RECIPES`]) by name, else a TOML file at that path. Returns
    /// `Error::Invalid` when it is neither or a built-in one does not parse, `Error::Io` when the
    /// file cannot be read and `Error::File` for invalid TOML.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((name, text)) = BUILTIN_RECIPES.iter().find(|(n, _)| *n == name_or_path) {
            let table = text
                .parse::<toml::Table>()
                .map_err(|e| Error::invalid(format!("built-in recipe {name}: {e}")))?;
            return Ok(Recipe {
                name: name.to_string(),
                table,
            });
        }
        let path = Path::new(name_or_path);
        if !path.is_file() {
            let names: Vec<&str> = BUILTIN_RECIPES.iter().map(|(n, _)| *n).collect();
            return Err(Error::invalid(format!(
                "\"{name_or_path}\" is neither a built-in recipe {names:?} nor a file"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| Error::file(path, format!("invalid TOML: {}", e.message())))?;
        Ok(Recipe {
            name: name_or_path.to_string(),
            table,
        })
    }

    /// The configuration for one method: top-level keys, then the method's table.
    pub fn resolve(&self, method: Method) -> Result<TrainConfig> {
        let mut merged = toml::Table::new();
        for (k, v) in &self.table {
            if !Method::ALL.iter().any(|m| m.name() == k) {
                merged.insert(k.clone(), v.clone());
            }
        }
        if let Some(toml::Value::Table(t)) = self.table.get(method.name()) {
            for (k, v) in t {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged.insert("method".into(), toml::Value::String(method.name().into()));
        let config: TrainConfig =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    Error::invalid(format!(
                        "recipe {} [{}]: {}",
                        self.name,
                        method.name(),
                        e.message()
                    ))
                })?;
        config.validate()?;
        Ok(config)
    }
}

impl TrainConfig {
    /// Checks the combinations that cannot train or make no sense (zero batch sizes, epochs or
    /// learning rate; options for another method; a bad `mlm_augment`); returns `Error::Invalid`
    /// naming the problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(m));
        if self.batch_size == 0 || self.eval_batch == 0 {
            return bad("batch sizes must be positive".into());
        }
        if self.method != Method::Zeroshot {
            if self.epochs == 0 || self.passes == 0 {
                return bad(format!(
                    "{}: epochs and passes must be positive",
                    self.method.name()
                ));
            }
            if !(self.lr > 0.0 && self.lr.is_finite()) {
                return bad(format!(
                    "{}: lr must be a positive number, got {}",
                    self.method.name(),
                    self.lr
                ));
            }
        }
        match (self.method, self.prefix_len) {
            (Method::PtuneV2, 0) => {
                return bad("ptune-v2: prefix_len must be at least 1".into());
            }
            (Method::PtuneV2, _) | (_, 0) => {}
            (m, _) => {
                return bad(format!(
                    "prefix_len applies to ptune-v2 only, not {}",
                    m.name()
                ));
            }
        }
        if self.method == Method::PtuneV2
            && self.reparam == Reparam::Mlp
            && self.reparam_hidden == 0
        {
            return bad("ptune-v2: reparam_hidden must be at least 1".into());
        }
        if let PrefixInit::Text(_) = &self.prefix_init {
            if self.method != Method::PtuneV2 {
                return bad(format!(
                    "prefix_init applies to ptune-v2 only, not {}",
                    self.method.name()
                ));
            }
            if self.reparam == Reparam::Mlp {
                return bad(
                    "ptune-v2: prefix_init = text needs reparam = none (an MLP cannot start at given prefixes; set prefix_init = random)"
                        .into(),
                );
            }
        }
        if self.calibrate.is_some() && self.method != Method::Zeroshot {
            return bad(format!(
                "calibrate applies to zeroshot only, not {} (a trained method learns its own class prior)",
                self.method.name()
            ));
        }
        if self.method == Method::Zeroshot && self.head.is_linear() {
            return bad("zeroshot cannot use a linear head (it would be untrained)".into());
        }
        if let Some(lr) = self.head_lr {
            if !self.head.is_linear() {
                return bad(
                    "`head_lr` applies to a trained head only (head = \"linear\", \"cls\" or \"verbalizer\")".into(),
                );
            }
            if !(lr > 0.0 && lr.is_finite()) {
                return bad(format!("`head_lr` must be a positive number, got {lr}"));
            }
        }
        if self.tune_lm && self.method != Method::Ptune {
            return bad(format!(
                "tune_lm applies to ptune only, not {}",
                self.method.name()
            ));
        }
        if self.weight_decay < 0.0 {
            return bad("weight_decay must not be negative".into());
        }
        if let Some(a) = self.mlm_augment
            && (a.mask < 0.0 || a.keep < 0.0 || a.random < 0.0 || a.mask + a.keep + a.random > 1.0)
        {
            return bad(
                "mlm_augment probabilities must be non-negative and sum to at most 1".into(),
            );
        }
        Ok(())
    }

    /// Whether the LM's own weights train (fine-tuning, or P-tuning with `tune_lm`).
    pub fn lm_trains(&self) -> bool {
        self.method == Method::Finetune || (self.method == Method::Ptune && self.tune_lm)
    }

    /// Whether anything trains (every method but zero-shot).
    pub fn trains(&self) -> bool {
        self.method != Method::Zeroshot
    }

    /// Whether a prompt encoder produces the template's `n_pseudo` pseudo-token vectors
    /// (P-tuning; deep prompts when the template has `[P]` tokens).
    pub fn has_prompt_encoder(&self, n_pseudo: usize) -> bool {
        self.method == Method::Ptune || (self.method == Method::PtuneV2 && n_pseudo > 0)
    }

    /// The backbone's configuration as this run uses it (dropout off with `no_dropout`).
    pub fn lm_config(&self, backbone: &BertConfig) -> BertConfig {
        if self.no_dropout {
            backbone.clone().without_dropout()
        } else {
            backbone.clone()
        }
    }

    /// The configuration as TOML, in the form [`Recipe`] files and run directories use.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("TrainConfig serialises")
    }

    /// Optimizer steps in one epoch for a few-shot set of `n` examples.
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        let s = self.passes * n.div_ceil(self.batch_size);
        self.max_steps_per_epoch.map_or(s, |m| m.min(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_recipe_resolves_per_method() {
        let r = Recipe::load("seed").unwrap();
        let p = r.resolve(Method::Ptune).unwrap();
        assert_eq!(
            (p.epochs, p.passes, p.lr, p.optimizer),
            (20, 50, 1e-5, OptimizerKind::Adam)
        );
        assert_eq!(p.schedule, Schedule::Exponential(0.98));
        assert_eq!(p.fewshot, FewShot::Frac(0.01));
        let f = r.resolve(Method::Finetune).unwrap();
        assert_eq!(
            (f.epochs, f.lr, f.optimizer, f.schedule),
            (10, 5e-5, OptimizerKind::Adamw, Schedule::Linear(1500))
        );
        assert_eq!(f.steps_per_epoch(113), 200);
        let back: TrainConfig = toml::from_str(&p.to_toml()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Exponential(0.5).lr(1.0, 3, 99), 0.25);
        assert_eq!(Schedule::Linear(100).lr(1.0, 1, 25), 0.75);
        assert_eq!(Schedule::Linear(100).lr(1.0, 9, 250), 0.0);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        let text = include_str!("../../recipes/seed.toml").replace("epochs = 20", "epochz = 20");
        std::fs::write(&p, text).unwrap();
        let e = Recipe::load(p.to_str().unwrap())
            .unwrap()
            .resolve(Method::Ptune)
            .unwrap_err()
            .to_string();
        assert!(e.contains("epochz"), "{e}");
    }
}
