//! Masked-LM pretraining: from scratch or continued from a model directory, on plain-text
//! corpora, ending in a Hugging Face model directory.
//!
//! Determinism and resume: the training sequences of micro-batch `g` come from the epoch's
//! seeded order, its masks from `(seed, g)`, its dropout from `(seed, g)`; nothing else is
//! random. A checkpoint holds the weights, the AdamW moments and the step, so `--resume`
//! continues with the same numbers as an uninterrupted run.
//!
//! Files: `config.rs` (the settings and their checks, the spec, records and summary),
//! `data.rs` (training and held-out sequences, each step's masked batches, held-out loss),
//! `files.rs` (the run directory: settings, checkpoints, resume, metrics, models), `corpus.rs`,
//! `masking.rs`, `optim.rs`, `init.rs`. This file is the loop.

mod config;
pub mod corpus;
mod data;
mod files;
pub mod init;
pub mod masking;
pub mod optim;

use std::sync::atomic::Ordering;
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsAccumulator;

use crate::classifier::PromptClassifier;
use crate::error::{Error, Result};
use crate::model::TrainBackend;
use crate::model::bert::BertForMaskedLM;
use crate::model::hf_dir::SaveOptions;
use crate::model::kernels::mix;
use crate::model::weights::Weights;
use crate::tokenizer::BertTokenizer;
use crate::train::step::loss_and_grads;
pub use config::{Decay, PretrainConfig, PretrainRecord, PretrainSpec, PretrainSummary, Start};
use data::{Data, Epochs, heldout_loss, masking};
use files::{ExportModel, RunFiles, State};
use optim::PretrainAdamW;

/// Runs (or resumes) pretraining as `spec` says; writes the run directory and the model.
pub fn pretrain<B: TrainBackend>(
    spec: &PretrainSpec,
    device: &B::Device,
) -> Result<PretrainSummary> {
    let c = &spec.config;
    let model_config = spec.start.config().clone();
    c.validate(&model_config)?;
    let files = RunFiles::create(&spec.out_dir)?;
    let resuming = files.start(c, spec.resume)?;

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
    let mut state = State::new();
    if resuming && let Some(dir) = files.latest()? {
        (state, lm) = files.load_checkpoint(&dir, &model_config, &mut opt, device)?;
        if spec.progress {
            eprintln!("resuming from {} (step {})", dir.display(), state.step);
        }
    }
    let parameters = lm.num_params();
    let mut model = PromptClassifier::new(lm, None);
    let _memory = crate::train::memory::LowPeakWhileLarge::new(parameters);

    let written = ExportModel {
        config: &model_config,
        vocab_file,
        lowercase,
        save: SaveOptions::with_shard_mib(c.dtype, c.shard_mib),
    };

    let bpe = data.train.len() / c.batch_size;
    if bpe == 0 {
        return Err(Error::invalid("fewer training sequences than one batch"));
    }
    let bar = progress_bar(spec, state.step);
    let start = Instant::now();
    let wall_before = state.wall_seconds;
    let mut epochs = Epochs::new(bpe);
    let (mut loss_sum, mut loss_n) = (0.0, 0usize);
    let mut tokens_since = (state.tokens, Instant::now());
    // batch positions (with padding) since the last record
    let mut positions_since = 0usize;
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
            positions_per_s: 0.0,
            wall_seconds: 0.0,
        });
        files.write_history(&state.history)?;
        tokens_since = (state.tokens, Instant::now());
    }
    while state.step < c.steps {
        lr = c.lr_at(state.step);
        let mut acc = GradientsAccumulator::new();
        let mut step_loss = 0.0;
        let batches = data.step_batches(c, &m, state.step, &mut epochs, &mut state.tokens);
        let total_targets: usize = batches.iter().map(|b| b.targets.len()).sum();
        positions_since += batches
            .iter()
            .map(|b| b.batch_size * b.seq_len)
            .sum::<usize>();
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
                m.pad_id,
                device,
            );
            step_loss += v;
            acc.accumulate(&model, grads);
        }
        if !step_loss.is_finite() {
            bar.abandon();
            let kept = match files.latest()? {
                Some(d) => format!("the last checkpoint is kept in {}", d.display()),
                None => "no checkpoint had been written".to_string(),
            };
            return Err(Error::Diverged(format!(
                "pretraining stopped: the loss became {step_loss} at step {} (lr {lr:.3e}); lower `lr` or raise `warmup`; {kept}",
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
            // training throughput: the held-out pass is not part of it
            let secs = tokens_since.1.elapsed().as_secs_f64();
            let held = heldout_loss(&model.lm.valid(), &data, &m, device);
            let record = PretrainRecord {
                step: state.step,
                tokens: state.tokens,
                train_loss: Some(loss_sum / loss_n.max(1) as f64),
                lr,
                grad_norm: last_norm,
                heldout_loss: held,
                heldout_ppl: held.exp(),
                tokens_per_s: (state.tokens - tokens_since.0) as f64 / secs.max(1e-9),
                positions_per_s: positions_since as f64 / secs.max(1e-9),
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
            files.write_history(&state.history)?;
            (loss_sum, loss_n) = (0.0, 0);
            tokens_since = (state.tokens, Instant::now());
            positions_since = 0;
        }
        state.wall_seconds = now_wall;
        if state.step.is_multiple_of(c.save_every) || last || stop {
            files.save_checkpoint(&model, &opt, &state)?;
        }
        if c.export_every > 0 && state.step.is_multiple_of(c.export_every) && !last {
            files.export(&model.lm, &format!("model-step{}", state.step), &written)?;
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
        Some(files.export(&model.lm, "model", &written)?)
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
    files.write_summary(&summary)?;
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
