//! The training loop shared by every method: [`train`] sets up a run (its directory, the
//! model a method trains) and `Loop` runs its epochs; batches come from [`Sampler`], what is
//! saved goes through `saved` and [`RunDir`], progress to the caller's [`Reporter`].

use std::path::Path;
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::config::{Method, OptimizerKind, TrainConfig};
use super::metrics::Metrics;
use super::optim::FusedAdam;
use super::prepare::{DataFiles, EncodedSplit, Prepared};
use super::report::{EpochRecord, Reporter, StepProgress, Summary, best_index};
use super::run_dir::Calibrated;
use super::run_dir::RunDir;
use super::run_info::RunInfo;
use super::sampler::Sampler;
use super::saved::{TrainerState, restore, restore_best, save_best, save_checkpoint};
use super::step::loss_and_grads;
use crate::classifier::{
    CONTENT_FREE_TEXTS, Calibration, Head, PromptClassifier, argmax, content_free_inputs,
    linear_head_init, prior_bias, score_all, verbalizer_head_init,
};
use crate::error::{Error, Result};
use crate::model::bert::BertForMaskedLM;
use crate::model::deep_prompt::DeepPrompt;
use crate::model::kernels::mix;
use crate::model::prefix_init::{PrefixInit, prefix_from_tokens};
use crate::model::prompt_encoder::PromptEncoder;
use crate::model::tensors::RawTensor;
use crate::model::{Kernels, ModelDir, TrainBackend};

/// Everything one training run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The training settings.
    pub config: TrainConfig,
    /// The backbone model directory.
    pub model: ModelDir,
    /// The train, valid and test split files.
    pub data: DataFiles,
    /// Where the run's files go.
    pub run: RunDir,
    /// Continue from the run directory's checkpoint if it has one.
    pub resume: bool,
    /// Parts each training batch is split into and computed on in parallel (CPU threads);
    /// the gradients are summed, so the step is the same up to float rounding.
    pub micro_batches: usize,
    /// Evaluate the test split after every epoch; otherwise once, after the last epoch, with
    /// the best-on-valid weights (all that "test at best valid" needs).
    pub test_every_epoch: bool,
}

/// Trains (or, for zero-shot, evaluates) as `spec` says, writing the run directory and
/// telling `reporter` how it goes.
pub fn train<B: TrainBackend>(
    spec: &RunSpec,
    reporter: &mut dyn Reporter,
    device: &B::Device,
) -> Result<Summary> {
    let prepared = Prepared::load(&spec.config, &spec.model, &spec.data)?;
    train_prepared::<B>(spec, &prepared, reporter, device)
}

/// As [`train`], with the data already read and encoded.
pub fn train_prepared<B: TrainBackend>(
    spec: &RunSpec,
    prepared: &Prepared,
    reporter: &mut dyn Reporter,
    device: &B::Device,
) -> Result<Summary> {
    let (c, run) = (&spec.config, &spec.run);
    run.create()?;
    let resuming = spec.resume && run.latest_checkpoint()?.is_some();
    if resuming {
        run.check_config(c)?;
    } else {
        let data = spec.data.train.parent().unwrap_or(Path::new("."));
        let header = format!(
            "ptune run: model {}, data {}",
            spec.model.dir.display(),
            data.display()
        );
        run.write_config(&header, c)?;
    }
    let lm = spec
        .model
        .load_with_config::<B>(&c.lm_config(&spec.model.config), device)?;
    let backbone = crate::adapter::fingerprint(&spec.model, &lm)?;
    let info = RunInfo::new(&spec.model.dir, backbone, &spec.data)?;
    match run.read_info()? {
        Some(saved) if resuming => run.check_info(&saved, &info)?,
        _ => run.write_info(&info)?,
    }
    let model = init_model(c, prepared, lm, device);
    let epochs = Loop {
        spec,
        prepared,
        reporter,
        device,
    };
    if !c.trains() {
        return epochs.zero_shot(model);
    }
    let adam = match c.optimizer {
        OptimizerKind::Adam => FusedAdam::adam(c.weight_decay),
        OptimizerKind::Adamw => FusedAdam::adamw(c.weight_decay),
    };
    epochs.run(model, adam.init())
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
    let prompt = c.has_prompt_encoder(pseudo.len()).then(|| {
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
    let head = match c.head {
        Head::Mlm => None,
        Head::Verbalizer => Some(verbalizer_head_init(
            &lm,
            &prepared.verbalizer.word_ids,
            device,
        )),
        Head::Linear | Head::Cls => Some(linear_head_init(
            lm.hidden_size(),
            prepared.verbalizer.n_classes(),
            &mut StdRng::seed_from_u64(mix(c.seed, HEAD_STREAM)),
            device,
        )),
    };
    let lm = if c.lm_trains() { lm } else { lm.no_grad() };
    PromptClassifier {
        lm,
        prompt,
        deep,
        head,
        head_kind: c.head, // `head` is Some exactly for the linear kinds
        class_bias: None,
    }
}

/// Random streams of the deep prompts' and the head's initialisation (the prompt encoder's is
/// the seed itself).
const DEEP_STREAM: u64 = 0xdee9;
const HEAD_STREAM: u64 = 0x4ead;

fn evaluate<B: Kernels>(
    model: &PromptClassifier<B>,
    prepared: &Prepared,
    split: &EncodedSplit,
    eval_batch: usize,
    device: &B::Device,
) -> Metrics {
    let encoded: Vec<_> = split.iter().map(|(e, _)| e.clone()).collect();
    let scores = score_all(
        model,
        &encoded,
        &prepared.verbalizer.word_ids,
        eval_batch,
        prepared.tokenizer.pad_id,
        device,
    );
    let pred: Vec<usize> = scores.iter().map(|s| argmax(s)).collect();
    let gold: Vec<usize> = split.iter().map(|(_, l)| *l).collect();
    Metrics::compute(&gold, &pred, &prepared.verbalizer.classes)
}

/// Per-epoch seed: the same (seed, epoch) gives the same shuffles, masks and dropout, so a
/// resumed run continues exactly as an uninterrupted one.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    mix(seed, epoch as u64)
}

/// One epoch's training, summed.
struct EpochTraining {
    loss_sum: f64,
    examples: usize,
    /// The learning rate of the last step.
    lr: f64,
    seconds: f64,
}

/// A run's epochs: built once for every training method and optimizer.
struct Loop<'a, B: TrainBackend> {
    spec: &'a RunSpec,
    prepared: &'a Prepared,
    reporter: &'a mut dyn Reporter,
    device: &'a B::Device,
}

impl<B: TrainBackend> Loop<'_, B> {
    fn run<O>(mut self, model: PromptClassifier<B>, optim: O) -> Result<Summary>
    where
        O: Optimizer<PromptClassifier<B>, B>,
    {
        let c = &self.spec.config;
        let start = Instant::now();
        let (mut model, mut optim, mut state) = self.start(model, optim)?;
        let wall_before = state.wall_seconds;
        let trainable = trainable_params(&model, c);
        let _memory = crate::train::memory::LowPeakWhileLarge::new(trainable);
        let steps = c.steps_per_epoch(self.prepared.train.len());
        let mut best_valid =
            best_index(&state.history).map_or(-1.0, |i| state.history[i].valid.accuracy);
        for epoch in state.epoch + 1..=c.epochs {
            let trained;
            (model, trained) = self.train_epoch(model, &mut optim, &mut state, epoch, steps)?;
            let inner = model.valid();
            let (record, improved) =
                self.evaluate_epoch(&inner, epoch, state.step, steps, &trained, best_valid);
            if improved {
                best_valid = record.valid.accuracy;
                save_best(&self.spec.run, &inner, c.lm_trains(), &self.spec.model)?;
            }
            self.reporter
                .epoch_done(c.method, c.epochs, &record, improved);
            state.history.push(record);
            state.epoch = epoch;
            state.wall_seconds = wall_before + start.elapsed().as_secs_f64();
            save_checkpoint(&self.spec.run, &model, &optim, &state, c.lm_trains())?;
            self.write_outputs(&state.history, trainable, state.wall_seconds)?;
        }
        if state.history.is_empty() {
            return Err(Error::invalid(
                "no epoch to run (the run had already finished; start without `resume` to start over)",
            ));
        }
        // a run that stopped between its last epoch and this test gets it when resumed
        if let Some(best) = best_index(&state.history)
            && state.history[best].test.is_none()
        {
            self.test_best(&mut state.history, best, model.valid())?;
        }
        let wall = wall_before + start.elapsed().as_secs_f64();
        Ok(self
            .write_outputs(&state.history, trainable, wall)?
            .expect("the best epoch is evaluated on test"))
    }

    /// Evaluates the best-on-valid epoch `best` of `history` on test, once, with the weights `best/`
    /// keeps (`model` gives the shapes and the frozen LM). Test is not looked at before this
    /// unless the run tests every epoch; a resumed run whose best epoch came before the
    /// restart reads the same files.
    fn test_best(
        &mut self,
        history: &mut [EpochRecord],
        best: usize,
        model: PromptClassifier<B::InnerBackend>,
    ) -> Result<()> {
        let spec = self.spec;
        let t = Instant::now();
        let model = restore_best(&spec.run, model, &spec.config, &spec.model, self.device)?;
        let record = &mut history[best];
        record.test = Some(self.metrics(&model, &self.prepared.test));
        record.eval_seconds += t.elapsed().as_secs_f64();
        self.reporter.tested(spec.config.method, record);
        Ok(())
    }

    /// The model, optimizer and loop state to start from: the latest checkpoint's when
    /// resuming, else the fresh ones.
    fn start<O>(
        &mut self,
        model: PromptClassifier<B>,
        optim: O,
    ) -> Result<(PromptClassifier<B>, O, TrainerState)>
    where
        O: Optimizer<PromptClassifier<B>, B>,
    {
        if self.spec.resume
            && let Some(dir) = self.spec.run.latest_checkpoint()?
        {
            let (spec, device) = (self.spec, self.device);
            let restored = restore(&dir, model, optim, &spec.config, &spec.model, device)?;
            self.reporter
                .resumed(&dir, restored.2.epoch, restored.2.step);
            return Ok(restored);
        }
        Ok((model, optim, TrainerState::default()))
    }

    /// Epoch `epoch`'s `steps` optimizer steps.
    fn train_epoch<O>(
        &mut self,
        mut model: PromptClassifier<B>,
        optim: &mut O,
        state: &mut TrainerState,
        epoch: usize,
        steps: usize,
    ) -> Result<(PromptClassifier<B>, EpochTraining)>
    where
        O: Optimizer<PromptClassifier<B>, B>,
    {
        let c = &self.spec.config;
        let seed = epoch_seed(c.seed, epoch);
        let mut sampler = Sampler::new(c, self.prepared, seed);
        self.reporter
            .epoch_started(c.method, epoch, c.epochs, steps);
        let t0 = Instant::now();
        let (mut loss_sum, mut examples, mut lr) = (0.0f64, 0usize, 0.0);
        for s in 0..steps {
            let batch = sampler.next_batch();
            lr = c.schedule.lr(c.lr, epoch, state.step);
            let step_seed = mix(seed, state.step as u64);
            let (micro, pad_id) = (self.spec.micro_batches, self.prepared.tokenizer.pad_id);
            let (value, mut grads) =
                loss_and_grads(&model, &batch, micro, 1.0, step_seed, pad_id, self.device);
            if !value.is_finite() {
                self.reporter.diverged();
                return Err(self.diverged(value, epoch, s + 1, lr, state.epoch)?);
            }
            if let (Some(head_lr), Some(head)) = (c.head_lr, &model.head) {
                // the head's own step first, at its rate on the same schedule; each tensor is
                // still updated once per step (the optimizer skips tensors without gradients)
                let head_grads = take_grads(&mut grads, head);
                model = optim.step(lr * head_lr / c.lr, model, head_grads);
            }
            model = optim.step(lr, model, grads);
            state.step += 1;
            loss_sum += value;
            examples += batch.batch_size;
            self.reporter.stepped(&StepProgress {
                step: s + 1,
                mean_loss: loss_sum / (s + 1) as f64,
                lr,
                examples,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        self.reporter.epoch_trained();
        let seconds = t0.elapsed().as_secs_f64();
        Ok((
            model,
            EpochTraining {
                loss_sum,
                examples,
                lr,
                seconds,
            },
        ))
    }

    /// The error of a run whose loss became `value` at `step` of `epoch`, after `done` epochs.
    fn diverged(
        &self,
        value: f64,
        epoch: usize,
        step: usize,
        lr: f64,
        done: usize,
    ) -> Result<Error> {
        let kept = match self.spec.run.latest_checkpoint()? {
            Some(d) => format!(
                "the last good checkpoint (epoch {done}) is kept in {}",
                d.display()
            ),
            None => "no epoch had completed, so there is no checkpoint".to_string(),
        };
        Ok(Error::Diverged(format!(
            "training stopped: the loss became {value} at epoch {epoch}, step {step} (lr {lr:.3e}); {kept}"
        )))
    }

    /// Evaluates epoch `epoch` on valid (and on test when the run tests every epoch). Returns
    /// the record and whether it improved on `best_valid`.
    fn evaluate_epoch(
        &self,
        inner: &PromptClassifier<B::InnerBackend>,
        epoch: usize,
        step: usize,
        steps: usize,
        trained: &EpochTraining,
        best_valid: f64,
    ) -> (EpochRecord, bool) {
        let t1 = Instant::now();
        let valid = self.metrics(inner, &self.prepared.valid);
        // improved: strictly better on valid than every earlier epoch (so ties keep the first)
        let improved = valid.accuracy > best_valid;
        let test = (self.spec.test_every_epoch).then(|| self.metrics(inner, &self.prepared.test));
        let record = EpochRecord {
            epoch,
            step,
            loss: Some(trained.loss_sum / steps as f64),
            lr: trained.lr,
            train_examples: trained.examples,
            train_seconds: trained.seconds,
            examples_per_s: trained.examples as f64 / trained.seconds,
            valid,
            test,
            eval_seconds: t1.elapsed().as_secs_f64(),
        };
        (record, improved)
    }

    /// One split's metrics, at the run's evaluation batch size.
    fn metrics(&self, inner: &PromptClassifier<B::InnerBackend>, split: &EncodedSplit) -> Metrics {
        let batch = self.spec.config.eval_batch;
        evaluate(inner, self.prepared, split, batch, self.device)
    }

    /// A zero-shot run: one evaluation of the untrained model.
    fn zero_shot(self, model: PromptClassifier<B>) -> Result<Summary> {
        let start = Instant::now();
        let mut inner = model.valid();
        let c = &self.spec.config;
        if let Some(source) = c.calibrate {
            inner.class_bias = Some(self.calibrate(&inner, source)?);
        }
        let (valid, test) = (
            self.metrics(&inner, &self.prepared.valid),
            Some(self.metrics(&inner, &self.prepared.test)),
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
        self.reporter.zero_shot_done(&record);
        let wall = start.elapsed().as_secs_f64();
        Ok(self
            .write_outputs(&[record], 0, wall)?
            .expect("zero-shot evaluates test"))
    }

    /// The calibration bias of the zero-shot model from `source`, also written to the run's
    /// [`Calibrated`] file, where `export` reads it.
    fn calibrate(
        &self,
        inner: &PromptClassifier<B::InnerBackend>,
        source: Calibration,
    ) -> Result<Vec<f32>> {
        let (p, c) = (self.prepared, &self.spec.config);
        let (inputs, texts) = match source {
            Calibration::ContentFree => (
                content_free_inputs(&p.template, &p.tokenizer, c.max_len)?,
                CONTENT_FREE_TEXTS.len(),
            ),
            // the labels stay unread: only the encoded texts are scored
            Calibration::Fewshot => (
                p.train.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
                p.train.len(),
            ),
        };
        let bias = prior_bias(
            inner,
            &inputs,
            &p.verbalizer.word_ids,
            c.eval_batch,
            p.tokenizer.pad_id,
            self.device,
        );
        let record = Calibrated {
            source,
            texts,
            classes: p.verbalizer.classes.clone(),
            prior: bias.iter().map(|b| (-b).exp()).collect(),
            bias: bias.clone(),
        };
        record.write(&self.spec.run)?;
        Ok(bias)
    }

    /// The summary of `history` (once its best epoch is tested), written with the metrics and
    /// the curve.
    fn write_outputs(
        &self,
        history: &[EpochRecord],
        trainable: usize,
        wall: f64,
    ) -> Result<Option<Summary>> {
        let (c, model_dir) = (&self.spec.config, &self.spec.model.dir);
        let summary = Summary::of(
            c.method,
            model_dir.display().to_string(),
            self.prepared.train.len(),
            history,
            trainable,
            wall,
        );
        let name = model_dir.file_name().unwrap_or_default().to_string_lossy();
        let title = format!("{} on {name}", c.method.name());
        self.spec
            .run
            .write_outputs(history, summary.as_ref(), &title)?;
        Ok(summary)
    }
}

/// The gradients of `head`'s tensors, moved out of `grads`.
fn take_grads<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    head: &burn::nn::Linear<B>,
) -> GradientsParams {
    let mut taken = GradientsParams::new();
    if let Some(g) = grads.remove::<B::InnerBackend, 2>(head.weight.id) {
        taken.register(head.weight.id, g);
    }
    if let Some(b) = &head.bias
        && let Some(g) = grads.remove::<B::InnerBackend, 1>(b.id)
    {
        taken.register(b.id, g);
    }
    taken
}

/// Number of parameters the optimizer updates.
fn trainable_params<B: AutodiffBackend>(model: &PromptClassifier<B>, c: &TrainConfig) -> usize {
    if c.lm_trains() {
        model.prompt_params() + model.lm.num_params()
    } else {
        model.prompt_params()
    }
}
