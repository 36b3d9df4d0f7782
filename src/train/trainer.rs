//! The training loop shared by every method.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoints, read_saved_config};
use super::config::{Method, OptimizerKind, TrainConfig};
use super::metrics::Metrics;
use super::optim::FusedAdam;
use super::plot::{Series, write_curves};
use super::prepare::{DataFiles, EncodedSplit, Prepared};
use super::run_info::RunInfo;
use super::step::loss_and_grads;
use crate::classifier::{
    Head, PromptClassifier, argmax, linear_head_from_tensors, linear_head_init,
    linear_head_tensors, score_all,
};
use crate::data::Batch;
use crate::error::{Error, Result, write_atomic};
use crate::model::bert::BertForMaskedLM;
use crate::model::deep_prompt::DeepPrompt;
use crate::model::kernels::mix;
use crate::model::prefix_init::{PrefixInit, prefix_from_tokens};
use crate::model::prompt_encoder::PromptEncoder;
use crate::model::tensors::RawTensor;
use crate::model::tensors::{TensorMap, parse_safetensors, safetensors_bytes};
use crate::model::weights::Weights;
use crate::model::{Kernels, ModelDir, TrainBackend};

/// Everything one training run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub config: TrainConfig,
    pub model: ModelDir,
    pub data: DataFiles,
    pub out_dir: PathBuf,
    /// Continue from `out_dir/checkpoint` if it has one.
    pub resume: bool,
    /// Progress bars and per-epoch lines on stderr.
    pub progress: bool,
    /// Parts each training batch is split into and computed on in parallel (CPU threads);
    /// the gradients are summed, so the step is the same up to float rounding.
    pub micro_batches: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Optimizer steps taken so far in the run.
    pub step: usize,
    /// Mean training loss over the epoch (`None` for zero-shot).
    pub loss: Option<f64>,
    pub lr: f64,
    pub train_examples: usize,
    pub train_seconds: f64,
    pub examples_per_s: f64,
    pub valid: Metrics,
    pub test: Metrics,
    pub eval_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub method: Method,
    pub model: String,
    pub fewshot_size: usize,
    pub trainable_params: usize,
    pub epochs: usize,
    pub steps: usize,
    /// Model selection on valid: the first epoch with the best valid accuracy.
    pub best_epoch: usize,
    pub best_valid: f64,
    pub test_at_best_valid: f64,
    pub test_macro_f1_at_best_valid: f64,
    /// The published code's column (it selected on test): best test accuracy of any epoch.
    pub best_test: f64,
    pub train_seconds: f64,
    pub examples_per_s: f64,
    pub wall_seconds: f64,
}

/// Resumable state written with every epoch checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    epoch: usize,
    step: usize,
    history: Vec<EpochRecord>,
    wall_seconds: f64,
}

/// Trains (or, for zero-shot, evaluates) as `spec` says, writing the run directory.
pub fn train<B: TrainBackend>(spec: &RunSpec, device: &B::Device) -> Result<Summary> {
    let prepared = Prepared::load(&spec.config, &spec.model, &spec.data)?;
    train_prepared::<B>(spec, &prepared, device)
}

/// As [`train`], with the data already read and encoded.
pub fn train_prepared<B: TrainBackend>(
    spec: &RunSpec,
    prepared: &Prepared,
    device: &B::Device,
) -> Result<Summary> {
    let c = &spec.config;
    std::fs::create_dir_all(&spec.out_dir).map_err(|e| Error::io(&spec.out_dir, e))?;
    let config_path = spec.out_dir.join("config.toml");
    let config_text = format!(
        "# ptune run: model {}, data {}\n{}",
        spec.model.dir.display(),
        spec.data.train.parent().unwrap_or(Path::new(".")).display(),
        c.to_toml()
    );
    let checkpoints = Checkpoints::new(&spec.out_dir);
    if spec.resume && checkpoints.latest()?.is_some() {
        let saved_config: TrainConfig = read_saved_config(&config_path)?;
        if saved_config != *c {
            return Err(Error::file(
                &config_path,
                "--resume: this run was started with a different configuration",
            ));
        }
    } else {
        write_atomic(&config_path, config_text.as_bytes())?;
    }
    let lm_config = if c.no_dropout {
        spec.model.config.clone().without_dropout()
    } else {
        spec.model.config.clone()
    };
    let lm = spec.model.load_with_config::<B>(&lm_config, device)?;
    let info = RunInfo::new(
        &spec.model.dir,
        crate::adapter::fingerprint(&spec.model, &lm)?,
        &spec.data,
    )?;
    match RunInfo::read(&spec.out_dir)? {
        Some(saved) if spec.resume && checkpoints.latest()?.is_some() => {
            saved.check_same(&info, &spec.out_dir)?
        }
        _ => info.write(&spec.out_dir)?,
    }
    let model = init_model(c, prepared, lm, device);
    match (c.method, c.optimizer) {
        (Method::Zeroshot, _) => zero_shot(spec, prepared, model, device),
        (_, OptimizerKind::Adam) => Loop {
            spec,
            prepared,
            checkpoints,
            device,
        }
        .run(model, FusedAdam::adam(c.weight_decay).init()),
        (_, OptimizerKind::Adamw) => Loop {
            spec,
            prepared,
            checkpoints,
            device,
        }
        .run(model, FusedAdam::adamw(c.weight_decay).init()),
    }
}

/// The classifier a run starts from: the LM (frozen unless it trains), a fresh prompt encoder
/// (P-tuning; ptune-v2 when the template has `[P]` tokens), fresh deep prompts (ptune-v2) and a
/// fresh linear head (`head = "linear"`), each seeded from the run's seed.
fn init_model<B: TrainBackend>(
    c: &TrainConfig,
    prepared: &Prepared,
    lm: BertForMaskedLM<B>,
    device: &B::Device,
) -> PromptClassifier<B> {
    let pseudo = prepared.template.pseudo_ids();
    let wants_encoder =
        c.method == Method::Ptune || (c.method == Method::PtuneV2 && !pseudo.is_empty());
    let prompt = wants_encoder.then(|| {
        PromptEncoder::init(
            c.prompt_encoder,
            lm.token_embeddings(pseudo),
            &mut StdRng::seed_from_u64(c.seed),
            device,
        )
    });
    let lm_config = lm.prefix_shape();
    let deep = (c.method == Method::PtuneV2).then(|| match &c.prefix_init {
        PrefixInit::Random => DeepPrompt::init(
            c.reparam,
            c.prefix_len,
            c.reparam_hidden,
            lm_config,
            &mut StdRng::seed_from_u64(mix(c.seed, DEEP_STREAM)),
            device,
        ),
        PrefixInit::Text(text) => {
            let tok = &prepared.tokenizer;
            let ids = tok.tokenize(text);
            // validated when the run is prepared: the text has tokens, reparam is none
            let m = prefix_from_tokens(&lm, &ids, tok.cls_id, tok.sep_id, c.prefix_len);
            let shape = m.dims().to_vec();
            let data = m.into_data().to_vec::<f32>().expect("an f32 tensor");
            let map = [("embedding.weight".to_string(), RawTensor::new(shape, data))].into();
            DeepPrompt::from_tensors(&map, lm_config, device)
                .expect("the LM's own activations have the prefix shape")
        }
    });
    let head = (c.head == Head::Linear).then(|| {
        linear_head_init(
            lm.hidden_size(),
            prepared.verbalizer.n_classes(),
            &mut StdRng::seed_from_u64(mix(c.seed, HEAD_STREAM)),
            device,
        )
    });
    let lm = if c.lm_trains() { lm } else { lm.no_grad() };
    PromptClassifier {
        lm,
        prompt,
        deep,
        head,
    }
}

/// Random streams of the deep prompts' and the head's initialisation (the prompt encoder's is
/// the seed itself).
const DEEP_STREAM: u64 = 0xdee9;
const HEAD_STREAM: u64 = 0x4ead;

fn zero_shot<B: TrainBackend>(
    spec: &RunSpec,
    prepared: &Prepared,
    model: PromptClassifier<B>,
    device: &B::Device,
) -> Result<Summary> {
    let start = Instant::now();
    let inner = model.valid();
    let (valid, test) = (
        evaluate(&inner, prepared, &prepared.valid, spec, device),
        evaluate(&inner, prepared, &prepared.test, spec, device),
    );
    let record = EpochRecord {
        epoch: 0,
        step: 0,
        loss: None,
        lr: 0.0,
        train_examples: 0,
        train_seconds: 0.0,
        examples_per_s: 0.0,
        valid,
        test,
        eval_seconds: start.elapsed().as_secs_f64(),
    };
    if spec.progress {
        eprintln!(
            "zeroshot: valid {:.4}  test {:.4}",
            record.valid.accuracy, record.test.accuracy
        );
    }
    let summary = summarize(
        spec,
        prepared,
        std::slice::from_ref(&record),
        0,
        start.elapsed().as_secs_f64(),
    );
    write_outputs(spec, &[record], &summary)?;
    Ok(summary)
}

fn evaluate<B: Kernels>(
    model: &PromptClassifier<B>,
    prepared: &Prepared,
    split: &EncodedSplit,
    spec: &RunSpec,
    device: &B::Device,
) -> Metrics {
    let encoded: Vec<_> = split.iter().map(|(e, _)| e.clone()).collect();
    let scores = score_all(
        model,
        &encoded,
        &prepared.verbalizer.word_ids,
        spec.config.eval_batch,
        prepared.tokenizer.pad_id,
        device,
    );
    let pred: Vec<usize> = scores.iter().map(|s| argmax(s)).collect();
    let gold: Vec<usize> = split.iter().map(|(_, l)| *l).collect();
    Metrics::compute(&gold, &pred, &prepared.verbalizer.classes)
}

/// Number of parameters the optimizer updates.
fn trainable_params<B: AutodiffBackend>(model: &PromptClassifier<B>, c: &TrainConfig) -> usize {
    match c.method {
        Method::Zeroshot => 0,
        _ if c.lm_trains() => model.prompt_params() + model.lm.num_params(),
        _ => model.prompt_params(),
    }
}

fn summarize(
    spec: &RunSpec,
    prepared: &Prepared,
    history: &[EpochRecord],
    trainable: usize,
    wall: f64,
) -> Summary {
    let best = history
        .iter()
        .fold(None::<&EpochRecord>, |b, r| match b {
            Some(b) if b.valid.accuracy >= r.valid.accuracy => Some(b),
            _ => Some(r),
        })
        .expect("at least one evaluated epoch");
    let train_seconds: f64 = history.iter().map(|r| r.train_seconds).sum();
    let examples: usize = history.iter().map(|r| r.train_examples).sum();
    Summary {
        method: spec.config.method,
        model: spec.model.dir.display().to_string(),
        fewshot_size: prepared.train.len(),
        trainable_params: trainable,
        epochs: history.last().map_or(0, |r| r.epoch),
        steps: history.last().map_or(0, |r| r.step),
        best_epoch: best.epoch,
        best_valid: best.valid.accuracy,
        test_at_best_valid: best.test.accuracy,
        test_macro_f1_at_best_valid: best.test.macro_f1,
        best_test: history.iter().map(|r| r.test.accuracy).fold(0.0, f64::max),
        train_seconds,
        examples_per_s: if train_seconds > 0.0 {
            examples as f64 / train_seconds
        } else {
            0.0
        },
        wall_seconds: wall,
    }
}

/// metrics.jsonl, the learning-curve plot and summary.json, each written atomically.
fn write_outputs(spec: &RunSpec, history: &[EpochRecord], summary: &Summary) -> Result<()> {
    let mut jsonl = String::new();
    for r in history {
        jsonl.push_str(&serde_json::to_string(r).expect("serialisable"));
        jsonl.push('\n');
    }
    write_atomic(&spec.out_dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    let series = |name: &str, f: fn(&EpochRecord) -> f64| Series {
        label: name.to_string(),
        points: history.iter().map(|r| (r.epoch as f64, f(r))).collect(),
    };
    write_curves(
        &spec.out_dir.join("curve.svg"),
        &format!(
            "{} on {}",
            spec.config.method.name(),
            spec.model
                .dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ),
        &[
            series("valid accuracy", |r| r.valid.accuracy),
            series("test accuracy", |r| r.test.accuracy),
        ],
    )?;
    let json = serde_json::to_string_pretty(summary).expect("serialisable");
    write_atomic(&spec.out_dir.join("summary.json"), json.as_bytes())
}

/// Trainable weights by name: `prompt.<PyTorch name>`, `deep.<PEFT name>`, `head.weight|bias`
/// and, when the LM trains, `lm.<HF name>`.
fn trainable_tensors<B: Backend>(
    model: &PromptClassifier<B>,
    lm_trains: bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut put =
        |prefix: &str,
         map: std::collections::BTreeMap<String, crate::model::tensors::RawTensor>| {
            out.extend(
                map.into_iter()
                    .map(|(k, t)| (format!("{prefix}.{k}"), t.shape, t.data)),
            )
        };
    if let Some(p) = &model.prompt {
        put("prompt", p.named_tensors());
    }
    if let Some(d) = &model.deep {
        put("deep", d.named_tensors());
    }
    if let Some(h) = &model.head {
        put("head", linear_head_tensors(h));
    }
    if lm_trains {
        out.extend(
            model
                .lm
                .hf_tensors()
                .into_iter()
                .map(|(k, t)| (format!("lm.{k}"), t.shape, t.data)),
        );
    }
    out
}

fn to_safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    safetensors_bytes(
        tensors.iter().map(|(k, s, d)| (k.clone(), &s[..], &d[..])),
        None,
    )
}

fn sub_map(map: &TensorMap, prefix: &str) -> TensorMap {
    map.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

struct Loop<'a, B: TrainBackend> {
    spec: &'a RunSpec,
    prepared: &'a Prepared,
    checkpoints: Checkpoints,
    device: &'a B::Device,
}

/// Per-epoch seed: the same (seed, epoch) gives the same shuffles, masks and dropout, so a
/// resumed run continues exactly as an uninterrupted one.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    mix(seed, epoch as u64)
}

impl<B: TrainBackend> Loop<'_, B> {
    fn lm_trains(&self) -> bool {
        self.spec.config.lm_trains()
    }

    fn run<O>(self, mut model: PromptClassifier<B>, mut optim: O) -> Result<Summary>
    where
        O: Optimizer<PromptClassifier<B>, B>,
    {
        let c = &self.spec.config;
        let start = Instant::now();
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let mut state = TrainerState {
            epoch: 0,
            step: 0,
            history: Vec::new(),
            wall_seconds: 0.0,
        };
        if self.spec.resume
            && let Some(dir) = self.checkpoints.latest()?
        {
            (model, optim, state) = self.restore(&dir, model, optim, &recorder)?;
            if self.spec.progress {
                eprintln!(
                    "resuming from {} (epoch {} done, step {})",
                    dir.display(),
                    state.epoch,
                    state.step
                );
            }
        }
        let wall_before = state.wall_seconds;
        let trainable = trainable_params(&model, c);
        let _memory = crate::train::memory::LowPeakWhileLarge::new(trainable);
        let n = self.prepared.train.len();
        let steps = c.steps_per_epoch(n);
        let mut best_valid = state
            .history
            .iter()
            .map(|r| r.valid.accuracy)
            .fold(-1.0, f64::max);
        for epoch in state.epoch + 1..=c.epochs {
            let seed = epoch_seed(c.seed, epoch);
            let mut rng = StdRng::seed_from_u64(seed);
            let bar = self.progress_bar(epoch, steps);
            let t0 = Instant::now();
            let (mut loss_sum, mut examples) = (0.0f64, 0usize);
            let mut order: Vec<usize> = Vec::new();
            let mut lr = 0.0;
            for s in 0..steps {
                if order.is_empty() {
                    order = (0..n).collect();
                    order.shuffle(&mut rng);
                    order.reverse(); // taken from the back below, so batches follow the shuffle
                }
                let take = c.batch_size.min(order.len());
                let idx: Vec<usize> = (0..take).map(|_| order.pop().expect("non-empty")).collect();
                let items: Vec<_> = idx
                    .iter()
                    .map(|&i| (&self.prepared.train[i].0, self.prepared.train[i].1))
                    .collect();
                let mut batch = Batch::collate(&items, self.prepared.tokenizer.pad_id);
                if let Some(aug) = c.mlm_augment {
                    aug.apply(
                        &mut batch,
                        &mut rng,
                        self.prepared.tokenizer.mask_id,
                        self.prepared.tokenizer.vocab_size(),
                    );
                } else {
                    for &p in &batch.mask_positions {
                        batch.ids[p] = self.prepared.tokenizer.mask_id;
                    }
                }
                batch.set_label_targets(&self.prepared.verbalizer.word_ids);
                if c.head == Head::Linear {
                    // the head's loss is over classes; MLM augmentation only corrupts the input
                    batch.keep_label_targets_only();
                }
                lr = c.schedule.lr(c.lr, epoch, state.step);
                let (value, grads) = loss_and_grads(
                    &model,
                    &batch,
                    self.spec.micro_batches,
                    1.0,
                    mix(seed, state.step as u64),
                    self.device,
                );
                if !value.is_finite() {
                    bar.abandon();
                    let kept = match self.checkpoints.latest()? {
                        Some(d) => format!(
                            "the last good checkpoint (epoch {}) is kept in {}",
                            state.epoch,
                            d.display()
                        ),
                        None => "no epoch had completed, so there is no checkpoint".to_string(),
                    };
                    return Err(Error::Diverged(format!(
                        "training stopped: the loss became {value} at epoch {epoch}, step {} (lr {lr:.3e}); {kept}",
                        s + 1
                    )));
                }
                model = optim.step(lr, model, grads);
                state.step += 1;
                loss_sum += value;
                examples += take;
                bar.inc(1);
                bar.set_message(format!(
                    "loss {:.4}  lr {lr:.2e}  {:.1} ex/s",
                    loss_sum / (s + 1) as f64,
                    examples as f64 / t0.elapsed().as_secs_f64()
                ));
            }
            bar.finish_and_clear();
            let train_seconds = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let inner = model.valid();
            let valid = evaluate(
                &inner,
                self.prepared,
                &self.prepared.valid,
                self.spec,
                self.device,
            );
            let test = evaluate(
                &inner,
                self.prepared,
                &self.prepared.test,
                self.spec,
                self.device,
            );
            let record = EpochRecord {
                epoch,
                step: state.step,
                loss: Some(loss_sum / steps as f64),
                lr,
                train_examples: examples,
                train_seconds,
                examples_per_s: examples as f64 / train_seconds,
                valid,
                test,
                eval_seconds: t1.elapsed().as_secs_f64(),
            };
            let improved = record.valid.accuracy > best_valid;
            if improved {
                best_valid = record.valid.accuracy;
                self.save_best(&inner)?;
            }
            if self.spec.progress {
                eprintln!(
                    "{} epoch {epoch}/{}  loss {:.4}  lr {lr:.2e}  valid {:.4}  test {:.4}{}  {:.1} ex/s  (train {:.0}s, eval {:.0}s)",
                    c.method.name(),
                    c.epochs,
                    record.loss.unwrap_or(f64::NAN),
                    record.valid.accuracy,
                    record.test.accuracy,
                    if improved { "  *best valid" } else { "" },
                    record.examples_per_s,
                    record.train_seconds,
                    record.eval_seconds
                );
            }
            state.history.push(record);
            state.epoch = epoch;
            state.wall_seconds = wall_before + start.elapsed().as_secs_f64();
            self.save_checkpoint(&model, &optim, &state, &recorder)?;
            let summary = summarize(
                self.spec,
                self.prepared,
                &state.history,
                trainable,
                state.wall_seconds,
            );
            write_outputs(self.spec, &state.history, &summary)?;
        }
        if state.history.is_empty() {
            return Err(Error::invalid(
                "no epoch to run (the run had already finished; remove --resume to start over)",
            ));
        }
        let summary = summarize(
            self.spec,
            self.prepared,
            &state.history,
            trainable,
            wall_before + start.elapsed().as_secs_f64(),
        );
        write_outputs(self.spec, &state.history, &summary)?;
        Ok(summary)
    }

    fn progress_bar(&self, epoch: usize, steps: usize) -> indicatif::ProgressBar {
        if !self.spec.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!(
            "{} epoch {epoch}/{}",
            self.spec.config.method.name(),
            self.spec.config.epochs
        ));
        bar
    }

    /// The best-on-valid weights, in formats other tools read: the prompt encoder as
    /// safetensors with PyTorch names; a trained LM as a Hugging Face model directory.
    fn save_best(&self, model: &PromptClassifier<B::InnerBackend>) -> Result<()> {
        let dir = self.spec.out_dir.join("best");
        if let Some(p) = &model.prompt {
            let named: Vec<(String, Vec<usize>, Vec<f32>)> = p
                .named_tensors()
                .into_iter()
                .map(|(k, t)| (k, t.shape, t.data))
                .collect();
            write_atomic(
                &dir.join("prompt_encoder.safetensors"),
                &to_safetensors(&named),
            )?;
        }
        if let Some(d) = &model.deep {
            let named: Vec<(String, Vec<usize>, Vec<f32>)> = d
                .named_tensors()
                .into_iter()
                .map(|(k, t)| (k, t.shape, t.data))
                .collect();
            write_atomic(
                &dir.join("deep_prompt.safetensors"),
                &to_safetensors(&named),
            )?;
        }
        if let Some(h) = &model.head {
            let named: Vec<(String, Vec<usize>, Vec<f32>)> = linear_head_tensors(h)
                .into_iter()
                .map(|(k, t)| (k, t.shape, t.data))
                .collect();
            write_atomic(&dir.join("head.safetensors"), &to_safetensors(&named))?;
        }
        if self.lm_trains() {
            let named: Vec<(String, Vec<usize>, Vec<f32>)> = (model.lm.hf_tensors().into_iter())
                .map(|(k, t)| (k, t.shape, t.data))
                .collect();
            write_atomic(&dir.join("model.safetensors"), &to_safetensors(&named))?;
            for f in ["config.json", "vocab.txt"] {
                let src = self.spec.model.dir.join(f);
                let bytes = crate::error::read_file(&src)?;
                write_atomic(&dir.join(f), &bytes)?;
            }
        }
        Ok(())
    }

    fn save_checkpoint<O>(
        &self,
        model: &PromptClassifier<B>,
        optim: &O,
        state: &TrainerState,
        recorder: &BinBytesRecorder<FullPrecisionSettings>,
    ) -> Result<()>
    where
        O: Optimizer<PromptClassifier<B>, B>,
    {
        let weights = to_safetensors(&trainable_tensors(model, self.lm_trains()));
        let optim_bytes = recorder.record(optim.to_record(), ()).map_err(|e| {
            Error::file(
                self.checkpoints.dir(),
                format!("cannot serialise the optimizer state: {e}"),
            )
        })?;
        let state_json = serde_json::to_vec_pretty(state).expect("serialisable");
        self.checkpoints.write(
            &format!("epoch-{:04}", state.epoch),
            &[
                ("trainable.safetensors", &weights),
                ("optimizer.bin", &optim_bytes),
                ("state.json", &state_json),
            ],
        )?;
        Ok(())
    }

    fn restore<O>(
        &self,
        dir: &Path,
        model: PromptClassifier<B>,
        optim: O,
        recorder: &BinBytesRecorder<FullPrecisionSettings>,
    ) -> Result<(PromptClassifier<B>, O, TrainerState)>
    where
        O: Optimizer<PromptClassifier<B>, B>,
    {
        let read = |f: &str| crate::error::read_file(&dir.join(f));
        let state_path = dir.join("state.json");
        let state: TrainerState = serde_json::from_slice(&read("state.json")?)
            .map_err(|e| Error::file(&state_path, e.to_string()))?;
        let weights_path = dir.join("trainable.safetensors");
        let map: TensorMap = parse_safetensors(&read("trainable.safetensors")?)
            .map_err(|m| Error::file(&weights_path, m))?;
        let PromptClassifier {
            mut lm,
            mut prompt,
            mut deep,
            mut head,
        } = model;
        if let Some(d) = &deep {
            deep = Some(
                DeepPrompt::from_tensors(&sub_map(&map, "deep."), d.shape(), self.device)
                    .map_err(|m| Error::file(&weights_path, m))?,
            );
        }
        if let Some(h) = &head {
            let [hidden, classes] = h.weight.dims();
            head = Some(
                linear_head_from_tensors(&sub_map(&map, "head."), hidden, classes, self.device)
                    .map_err(|m| Error::file(&weights_path, m))?,
            );
        }
        if let Some(p) = &prompt {
            let kind = p.kind();
            prompt = Some(
                PromptEncoder::from_tensors(kind, &sub_map(&map, "prompt."), self.device)
                    .map_err(|m| Error::file(&weights_path, m))?,
            );
        }
        if self.lm_trains() {
            let config = if self.spec.config.no_dropout {
                self.spec.model.config.clone().without_dropout()
            } else {
                self.spec.model.config.clone()
            };
            let w = Weights::new(&weights_path, sub_map(&map, "lm."))?;
            lm = BertForMaskedLM::from_weights(&config, w, self.device)?;
        }
        let bytes = read("optimizer.bin")?;
        let record = recorder.load(bytes, self.device).map_err(|e| {
            Error::file(
                dir.join("optimizer.bin"),
                format!("cannot read the optimizer state: {e}"),
            )
        })?;
        Ok((
            PromptClassifier {
                lm,
                prompt,
                deep,
                head,
            },
            optim.load_record(record),
            state,
        ))
    }
}
