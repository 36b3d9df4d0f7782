//! Masked-LM pretraining: from scratch or continued from a model directory, on plain-text
//! corpora, ending in a Hugging Face model directory.
//!
//! Determinism and resume: the training sequences of micro-batch `g` come from the epoch's
//! seeded order, its masks from `(seed, g)`, its dropout from `(seed, g)`; nothing else is
//! random. A checkpoint holds the weights, the AdamW moments and the step, so `--resume`
//! continues with the same numbers as an uninterrupted run.

pub mod corpus;
pub mod init;
pub mod masking;
pub mod optim;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsAccumulator;
use burn::tensor::ElementConversion;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::classifier::PromptClassifier;
use crate::error::{Error, Result, read_file, write_atomic};
use crate::model::bert::BertForMaskedLM;
use crate::model::hf_dir::{SaveOptions, save_model_dir};
use crate::model::kernels::mix;
use crate::model::tensors::{StorageDType, parse_safetensors, safetensors_bytes};
use crate::model::weights::Weights;
use crate::model::{BertConfig, Kernels, ModelDir, TrainBackend};
use crate::tokenizer::BertTokenizer;
use crate::train::checkpoint::{Checkpoints, read_saved_config};
use crate::train::plot::{Series, write_curves};
use crate::train::step::loss_and_grads;
use corpus::{Corpus, Packing, Span};
use masking::Masking;
use optim::PretrainAdamW;

/// Learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Linear,
    Cosine,
}

/// The settings of a pretraining run (saved in the run directory; `--resume` requires the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup: usize,
    pub decay: Decay,
    pub weight_decay: f64,
    /// Global gradient-norm clipping (0: off).
    pub max_grad_norm: f64,
    /// Sequence length including `[CLS]` and `[SEP]`.
    pub max_len: usize,
    pub packing: Packing,
    pub whole_word_mask: bool,
    pub mask_rate: f64,
    /// Sort sequences by length inside groups of 50 batches (less padding).
    pub group_by_length: bool,
    pub seed: u64,
    /// Held-out sequences (never trained on) for the MLM loss.
    pub eval_sequences: usize,
    pub eval_every: usize,
    pub save_every: usize,
    /// Also write `model-stepN/` every this many steps (0: only the final `model/`).
    pub export_every: usize,
    pub dtype: StorageDType,
    /// Shard size of the written model in MiB (0: one file).
    pub shard_mib: usize,
}

impl PretrainConfig {
    /// Checks the values that would make training meaningless or crash.
    pub fn validate(&self, model: &BertConfig) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(m));
        if self.steps == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad("steps, batch size and gradient accumulation must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(self.mask_rate > 0.0 && self.mask_rate < 1.0) {
            return bad(format!(
                "mask rate must be in (0, 1), got {}",
                self.mask_rate
            ));
        }
        if self.max_len < 3 || self.max_len > model.max_position_embeddings {
            return bad(format!(
                "max length {} must be in 3..={} (the model's max_position_embeddings)",
                self.max_len, model.max_position_embeddings
            ));
        }
        if !(self.weight_decay >= 0.0 && self.max_grad_norm >= 0.0) {
            return bad("weight decay and gradient clipping must be ≥ 0".into());
        }
        if self.eval_every == 0 || self.save_every == 0 {
            return bad("evaluation and checkpoint intervals must be positive".into());
        }
        Ok(())
    }

    /// Learning rate for the update after `step` updates: linear warmup, then decay to 0.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        match self.decay {
            Decay::Linear => self.lr * (1.0 - t),
            Decay::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
        }
    }
}

/// Where the weights start.
#[derive(Debug, Clone)]
pub enum Start {
    /// Random initialisation of this architecture, with this vocabulary.
    Scratch {
        config: BertConfig,
        vocab_file: PathBuf,
        lowercase: bool,
    },
    /// Continue from a model directory.
    From(ModelDir),
}

impl Start {
    fn config(&self) -> &BertConfig {
        match self {
            Start::Scratch { config, .. } => config,
            Start::From(m) => &m.config,
        }
    }

    fn vocab(&self) -> (&std::path::Path, bool) {
        match self {
            Start::Scratch {
                vocab_file,
                lowercase,
                ..
            } => (vocab_file, *lowercase),
            Start::From(m) => (&m.vocab_file, m.lowercase),
        }
    }
}

/// One pretraining run.
#[derive(Debug, Clone)]
pub struct PretrainSpec {
    pub config: PretrainConfig,
    pub start: Start,
    pub corpus: Vec<PathBuf>,
    /// Where tokenized shards are cached.
    pub cache_dir: PathBuf,
    pub out_dir: PathBuf,
    pub resume: bool,
    pub progress: bool,
    /// Row groups per micro-batch computed on parallel threads (CPU).
    pub micro_batches: usize,
    /// Set (e.g. by a Ctrl-C handler) to save a checkpoint and stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Wall-clock budget in seconds for this invocation: when it is spent, the run ends as if
    /// the current step were the last (evaluation, checkpoint, model), with the schedule
    /// unfinished. `--resume` can continue it.
    pub time_limit: Option<f64>,
}

/// One evaluation of a run, a line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainRecord {
    pub step: usize,
    /// Tokens (including `[CLS]`/`[SEP]`) trained on so far.
    pub tokens: u64,
    /// Mean training loss since the previous record (`None` before the first step).
    pub train_loss: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub heldout_loss: f64,
    pub heldout_ppl: f64,
    pub tokens_per_s: f64,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    step: usize,
    tokens: u64,
    wall_seconds: f64,
    history: Vec<PretrainRecord>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainSummary {
    pub steps: usize,
    pub tokens: u64,
    pub corpus_tokens: usize,
    pub train_sequences: usize,
    pub heldout_sequences: usize,
    pub parameters: usize,
    pub heldout_loss: Option<f64>,
    pub heldout_ppl: Option<f64>,
    pub tokens_per_s: f64,
    pub wall_seconds: f64,
    /// Stopped early by [`PretrainSpec::stop`]; `--resume` continues.
    pub interrupted: bool,
    /// Ended by [`PretrainSpec::time_limit`] before `steps`.
    pub time_limit_reached: bool,
    pub model_dir: Option<PathBuf>,
}

/// The corpus cut into training and held-out sequences.
struct Data {
    corpus: Corpus,
    train: Vec<Span>,
    heldout: Vec<Span>,
}

/// Held-out sequences are chosen by a fixed seed (not the run's), so runs with different
/// seeds or settings evaluate on the same text.
const HELDOUT_SEED: u64 = 0x05ee_d0f4_e1d0_u64;

impl Data {
    fn load(spec: &PretrainSpec, tokenizer: &BertTokenizer) -> Result<Data> {
        let (vocab, lowercase) = spec.start.vocab();
        let c = &spec.config;
        let corpus = Corpus::open_or_build(
            &spec.corpus,
            vocab,
            tokenizer,
            lowercase,
            c.whole_word_mask,
            &spec.cache_dir,
            spec.progress,
        )?;
        let spans = corpus.spans(c.packing, c.max_len - 2);
        if spans.len() < c.eval_sequences + c.batch_size {
            return Err(Error::invalid(format!(
                "the corpus gives {} sequences, fewer than the {} held out plus one batch of {}",
                spans.len(),
                c.eval_sequences,
                c.batch_size
            )));
        }
        let mut idx: Vec<usize> = (0..spans.len()).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(HELDOUT_SEED));
        let mut held: Vec<usize> = idx[..c.eval_sequences].to_vec();
        let mut train: Vec<usize> = idx[c.eval_sequences..].to_vec();
        held.sort_unstable();
        train.sort_unstable();
        // A text that occurs more than once (repeated lines, a file given twice to weight it)
        // must not be trained on through another copy of a held-out sequence.
        let key = |i: usize| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            corpus.read(spans[i]).0.hash(&mut h);
            h.finish()
        };
        let held_keys: std::collections::HashSet<u64> = held.iter().map(|&i| key(i)).collect();
        train.retain(|&i| !held_keys.contains(&key(i)));
        Ok(Data {
            train: train.iter().map(|&i| spans[i]).collect(),
            heldout: held.iter().map(|&i| spans[i]).collect(),
            corpus,
        })
    }

    /// The training sequences of each batch of `epoch`: a seeded shuffle, optionally sorted by
    /// length inside groups of 50 batches with the batches shuffled again (the last partial
    /// batch is dropped).
    fn epoch_batches(&self, c: &PretrainConfig, epoch: usize) -> Vec<Vec<usize>> {
        let mut rng = StdRng::seed_from_u64(mix(c.seed, 0xe90c_0000 + epoch as u64));
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut rng);
        let b = c.batch_size;
        let mut batches: Vec<Vec<usize>> = Vec::new();
        if c.group_by_length {
            for group in order.chunks(50 * b) {
                let mut g = group.to_vec();
                g.sort_by_key(|&i| std::cmp::Reverse(self.train[i].len));
                batches.extend(g.chunks_exact(b).map(|x| x.to_vec()));
            }
            batches.shuffle(&mut rng);
        } else {
            batches.extend(order.chunks_exact(b).map(|x| x.to_vec()));
        }
        batches
    }
}

fn masking(tok: &BertTokenizer, c: &PretrainConfig) -> Masking {
    Masking {
        rate: c.mask_rate,
        whole_word: c.whole_word_mask,
        cls_id: tok.cls_id,
        sep_id: tok.sep_id,
        pad_id: tok.pad_id,
        mask_id: tok.mask_id,
        unk_id: tok.unk_id,
        vocab_size: tok.vocab_size(),
    }
}

/// Held-out MLM loss (mean cross-entropy over masked tokens, fixed masks, no dropout).
fn heldout_loss<B: Kernels>(
    lm: &BertForMaskedLM<B>,
    data: &Data,
    m: &Masking,
    device: &B::Device,
) -> f64 {
    use rayon::prelude::*;
    let model = PromptClassifier::new(lm.clone(), None);
    let chunks: Vec<(usize, &[Span])> = data.heldout.chunks(64).enumerate().collect();
    let sums: Vec<(f64, usize)> = chunks
        .par_iter()
        .map(|(k, spans)| {
            let seqs: Vec<_> = spans.iter().map(|s| data.corpus.read(*s)).collect();
            let batch = m.batch(
                &seqs,
                &mut StdRng::seed_from_u64(mix(HELDOUT_SEED, *k as u64)),
            );
            if batch.targets.is_empty() {
                return (0.0, 0);
            }
            let loss: f64 = model.loss(&batch, None, device).into_scalar().elem();
            (loss * batch.targets.len() as f64, batch.targets.len())
        })
        .collect();
    let (sum, n) = sums.iter().fold((0.0, 0), |(s, n), (a, b)| (s + a, n + b));
    sum / n.max(1) as f64
}

/// Runs (or resumes) pretraining as `spec` says; writes the run directory and the model.
pub fn pretrain<B: TrainBackend>(
    spec: &PretrainSpec,
    device: &B::Device,
) -> Result<PretrainSummary> {
    let c = &spec.config;
    let model_config = spec.start.config().clone();
    c.validate(&model_config)?;
    std::fs::create_dir_all(&spec.out_dir).map_err(|e| Error::io(&spec.out_dir, e))?;
    let checkpoints = Checkpoints::new(&spec.out_dir);
    let config_path = spec.out_dir.join("pretrain.toml");
    let resuming = spec.resume && checkpoints.latest()?.is_some();
    let config_text = toml::to_string(c).expect("serialisable");
    if resuming {
        let saved: PretrainConfig = read_saved_config(&config_path)?;
        if saved != *c {
            return Err(Error::file(
                &config_path,
                "this run was started with different settings; resume with the same ones",
            ));
        }
    } else if checkpoints.latest()?.is_some() {
        return Err(Error::file(
            &spec.out_dir,
            "already holds a pretraining run (resume it, or choose another output directory)",
        ));
    } else {
        write_atomic(&config_path, config_text.as_bytes())?;
    }

    let (vocab_file, lowercase) = spec.start.vocab();
    let tokenizer = BertTokenizer::from_vocab_file(vocab_file, lowercase)?;
    if tokenizer.vocab_size() != model_config.vocab_size {
        return Err(Error::file(
            vocab_file,
            format!(
                "has {} entries but the model's vocab_size is {}",
                tokenizer.vocab_size(),
                model_config.vocab_size
            ),
        ));
    }
    let data = Data::load(spec, &tokenizer)?;
    let m = masking(&tokenizer, c);

    let mut lm: BertForMaskedLM<B> = match &spec.start {
        Start::From(dir) => dir.load::<B>(device)?,
        Start::Scratch { config, .. } => {
            let map = init::random_weights(config, c.seed);
            let w = Weights::new(std::path::Path::new("<random init>"), map)?;
            BertForMaskedLM::from_weights(config, w, device)?
        }
    };
    let names: Vec<String> = lm.hf_tensors().into_iter().map(|(k, _)| k).collect();
    let clip = (c.max_grad_norm > 0.0).then_some(c.max_grad_norm);
    let mut opt = PretrainAdamW::<B>::new(&names, c.weight_decay, clip);
    let mut state = State {
        step: 0,
        tokens: 0,
        wall_seconds: 0.0,
        history: Vec::new(),
    };
    if resuming && let Some(dir) = checkpoints.latest()? {
        let read = |f: &str| read_file(&dir.join(f));
        let sp = dir.join("state.json");
        state = serde_json::from_slice(&read("state.json")?)
            .map_err(|e| Error::file(&sp, e.to_string()))?;
        let wp = dir.join("model.safetensors");
        let map =
            parse_safetensors(&read("model.safetensors")?).map_err(|e| Error::file(&wp, e))?;
        let w = Weights::new(&wp, map)?;
        lm = BertForMaskedLM::from_weights(&model_config, w, device)?;
        let op = dir.join("optimizer.safetensors");
        let map =
            parse_safetensors(&read("optimizer.safetensors")?).map_err(|e| Error::file(&op, e))?;
        opt.load_state(&map, state.step, device)
            .map_err(|e| Error::file(&op, e))?;
        if spec.progress {
            eprintln!("resuming from {} (step {})", dir.display(), state.step);
        }
    }
    let parameters = lm.num_params();
    let mut model = PromptClassifier::new(lm, None);
    let _memory = crate::train::memory::LowPeakWhileLarge::new(parameters);

    let save_opts = SaveOptions {
        dtype: c.dtype,
        max_shard_bytes: (c.shard_mib > 0).then_some(c.shard_mib << 20),
    };
    let export = |lm: &BertForMaskedLM<B>, name: &str| -> Result<PathBuf> {
        let out = spec.out_dir.join(name);
        save_model_dir(lm, &model_config, vocab_file, lowercase, &out, &save_opts)?;
        Ok(out)
    };
    let save_checkpoint = |model: &PromptClassifier<B>, opt: &PretrainAdamW<B>, state: &State| {
        let weights = model.lm.hf_tensors();
        let w = safetensors_bytes(
            weights
                .iter()
                .map(|(k, t)| (k.clone(), &t.shape[..], &t.data[..])),
            None,
        );
        let o = opt.state_tensors();
        let o = safetensors_bytes(o.iter().map(|(k, s, d)| (k.clone(), &s[..], &d[..])), None);
        let st = serde_json::to_vec_pretty(state).expect("serialisable");
        checkpoints.write(
            &format!("step-{:07}", state.step),
            &[
                ("model.safetensors", &w),
                ("optimizer.safetensors", &o),
                ("state.json", &st),
            ],
        )
    };

    let bpe = data.train.len() / c.batch_size;
    if bpe == 0 {
        return Err(Error::invalid("fewer training sequences than one batch"));
    }
    let bar = progress_bar(spec, state.step);
    let start = Instant::now();
    let wall_before = state.wall_seconds;
    let mut epoch_cache: Option<(usize, Vec<Vec<usize>>)> = None;
    let (mut loss_sum, mut loss_n) = (0.0, 0usize);
    let mut tokens_since = (state.tokens, Instant::now());
    let mut interrupted = false;
    let mut time_limit_reached = false;
    let mut lr = 0.0;
    if state.history.is_empty() {
        // the starting point of the curve: the held-out loss before any update
        let held = heldout_loss(&model.lm.valid(), &data, &m, device);
        state.history.push(PretrainRecord {
            step: 0,
            tokens: 0,
            train_loss: None,
            lr: 0.0,
            grad_norm: 0.0,
            heldout_loss: held,
            heldout_ppl: held.exp(),
            tokens_per_s: 0.0,
            wall_seconds: 0.0,
        });
        write_history(spec, &state.history)?;
        tokens_since = (state.tokens, Instant::now());
    }
    while state.step < c.steps {
        lr = c.lr_at(state.step);
        let mut acc = GradientsAccumulator::new();
        let mut step_loss = 0.0;
        let mut batches = Vec::with_capacity(c.grad_accum);
        for k in 0..c.grad_accum {
            let g = state.step * c.grad_accum + k;
            let epoch = g / bpe;
            if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_cache = Some((epoch, data.epoch_batches(c, epoch)));
            }
            let rows = &epoch_cache.as_ref().expect("set").1[g % bpe];
            let seqs: Vec<_> = rows
                .iter()
                .map(|&i| data.corpus.read(data.train[i]))
                .collect();
            state.tokens += seqs.iter().map(|(s, _)| s.len() as u64 + 2).sum::<u64>();
            let batch = m.batch(&seqs, &mut StdRng::seed_from_u64(mix(c.seed, g as u64)));
            batches.push(batch);
        }
        let total_targets: usize = batches.iter().map(|b| b.targets.len()).sum();
        for (k, batch) in batches.iter().enumerate() {
            if batch.targets.is_empty() {
                continue;
            }
            let g = state.step * c.grad_accum + k;
            let scale = batch.targets.len() as f64 / total_targets as f64;
            let (v, grads) = loss_and_grads(
                &model,
                batch,
                spec.micro_batches,
                scale,
                mix(c.seed ^ 0xd5, g as u64),
                device,
            );
            step_loss += v;
            acc.accumulate(&model, grads);
        }
        if !step_loss.is_finite() {
            bar.abandon();
            let kept = match checkpoints.latest()? {
                Some(d) => format!("the last checkpoint is kept in {}", d.display()),
                None => "no checkpoint had been written".to_string(),
            };
            return Err(Error::Diverged(format!(
                "pretraining stopped: the loss became {step_loss} at step {} (lr {lr:.3e}); lower --lr or raise --warmup; {kept}",
                state.step + 1
            )));
        }
        let (next, norm) = opt.step(lr, model, acc.grads());
        model = next;
        let last_norm = norm;
        state.step += 1;
        loss_sum += step_loss;
        loss_n += 1;
        let now_wall = wall_before + start.elapsed().as_secs_f64();
        bar.set_position(state.step as u64);
        bar.set_message(format!(
            "loss {:.3}  lr {lr:.2e}  {:.0} tok/s",
            loss_sum / loss_n as f64,
            (state.tokens - tokens_since.0) as f64 / tokens_since.1.elapsed().as_secs_f64()
        ));
        let stop = spec.stop.load(Ordering::SeqCst);
        let out_of_time = spec
            .time_limit
            .is_some_and(|t| start.elapsed().as_secs_f64() >= t);
        time_limit_reached |= out_of_time && state.step < c.steps;
        let last = state.step == c.steps || out_of_time;
        if state.step.is_multiple_of(c.eval_every) || last {
            let held = heldout_loss(&model.lm.valid(), &data, &m, device);
            let secs = tokens_since.1.elapsed().as_secs_f64();
            let record = PretrainRecord {
                step: state.step,
                tokens: state.tokens,
                train_loss: Some(loss_sum / loss_n.max(1) as f64),
                lr,
                grad_norm: last_norm,
                heldout_loss: held,
                heldout_ppl: held.exp(),
                tokens_per_s: (state.tokens - tokens_since.0) as f64 / secs.max(1e-9),
                wall_seconds: now_wall,
            };
            if spec.progress {
                bar.suspend(|| {
                    eprintln!(
                        "step {}/{}  tokens {}  train loss {:.4}  held-out loss {:.4} (ppl {:.1})  {:.0} tok/s",
                        record.step,
                        c.steps,
                        record.tokens,
                        record.train_loss.unwrap_or(f64::NAN),
                        record.heldout_loss,
                        record.heldout_ppl,
                        record.tokens_per_s
                    )
                });
            }
            state.history.push(record);
            write_history(spec, &state.history)?;
            (loss_sum, loss_n) = (0.0, 0);
            tokens_since = (state.tokens, Instant::now());
        }
        state.wall_seconds = now_wall;
        if state.step.is_multiple_of(c.save_every) || last || stop {
            save_checkpoint(&model, &opt, &state)?;
        }
        if c.export_every > 0 && state.step.is_multiple_of(c.export_every) && !last {
            export(&model.lm, &format!("model-step{}", state.step))?;
        }
        if stop && !last {
            interrupted = true;
            break;
        }
        if last {
            break;
        }
    }
    bar.finish_and_clear();
    let _ = lr;
    let model_dir = if interrupted {
        None
    } else {
        Some(export(&model.lm, "model")?)
    };
    let last = state.history.last();
    let summary = PretrainSummary {
        steps: state.step,
        tokens: state.tokens,
        corpus_tokens: data.corpus.n_tokens,
        train_sequences: data.train.len(),
        heldout_sequences: data.heldout.len(),
        parameters,
        heldout_loss: last.map(|r| r.heldout_loss),
        heldout_ppl: last.map(|r| r.heldout_ppl),
        tokens_per_s: if state.wall_seconds > 0.0 {
            state.tokens as f64 / state.wall_seconds
        } else {
            0.0
        },
        wall_seconds: state.wall_seconds,
        interrupted,
        time_limit_reached,
        model_dir,
    };
    write_atomic(
        &spec.out_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("json")
            .as_bytes(),
    )?;
    Ok(summary)
}

fn progress_bar(spec: &PretrainSpec, done: usize) -> indicatif::ProgressBar {
    if !spec.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(spec.config.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "pretrain [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(done as u64);
    bar
}

/// `metrics.jsonl` and `curve.svg` (held-out and training loss against tokens).
fn write_history(spec: &PretrainSpec, history: &[PretrainRecord]) -> Result<()> {
    let mut jsonl = String::new();
    for r in history {
        jsonl.push_str(&serde_json::to_string(r).expect("serialisable"));
        jsonl.push('\n');
    }
    write_atomic(&spec.out_dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    let series = |label: &str, f: fn(&PretrainRecord) -> Option<f64>| Series {
        label: label.to_string(),
        points: history
            .iter()
            .filter_map(|r| f(r).map(|y| (r.tokens as f64 / 1e6, y)))
            .collect(),
    };
    write_curves(
        &spec.out_dir.join("curve.svg"),
        "MLM loss against tokens (millions)",
        &[
            series("held-out loss", |r| Some(r.heldout_loss)),
            series("training loss", |r| r.train_loss),
        ],
    )
}
