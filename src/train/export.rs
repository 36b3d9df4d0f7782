//! Baking a run into an adapter file.

use super::config::Method;
use super::run_dir::Calibrated;
use super::run_dir::{RunDir, best_files};
use crate::adapter::{Adapter, AdapterInfo, fingerprint};
use crate::classifier::Head;
use crate::error::{Error, Result};
use crate::model::ModelDir;
use crate::model::deep_prompt::DeepPrompt;
use crate::model::host::to_host;
use crate::model::prompt_encoder::load_prompt_encoder;
use crate::prompt::PromptSpec;

/// The adapter of a `ptune` run (its best-on-valid prompt encoder, evaluated once), of a
/// `ptune-v2` run (its best deep prompts folded into the prefix matrix, its prompt encoder if
/// the template has `[P]` tokens, its linear head if any) or of a `zeroshot` run (the
/// template's own `[unusedK]` embeddings). Fine-tuned runs change the backbone itself and
/// cannot be adapters.
pub fn export_run<B: crate::model::kernels::Kernels>(
    run: &RunDir,
    model_dir: &ModelDir,
    device: &B::Device,
) -> Result<Adapter> {
    let config = run.read_config()?;
    let run_dir = run.root();
    let lm = model_dir.load::<B>(device)?;
    let tokenizer = model_dir.tokenizer()?;
    let PromptSpec {
        template,
        verbalizer,
    } = PromptSpec::parse(&config.template, &config.labels, &tokenizer)?;
    let best = |file: &str| run.best_file(file);
    let trained_prompts = |_: ()| -> Result<Vec<f32>> {
        let path = best(best_files::PROMPT_ENCODER)?;
        let encoder = load_prompt_encoder::<B>(&path, config.prompt_encoder, device)?;
        if encoder.n_prompts() != template.n_pseudo() {
            return Err(Error::file(
                &path,
                format!(
                    "has {} prompts, the template {}",
                    encoder.n_prompts(),
                    template.n_pseudo()
                ),
            ));
        }
        Ok(to_host(encoder.forward()).data)
    };
    let (vectors, source) = match config.method {
        _ if config.lm_trains() => {
            return Err(Error::invalid(format!(
                "{}: only runs with a frozen LM (ptune, ptune-v2, zeroshot) can be exported; a {} run changed the backbone itself — use its best/ model directory instead{}",
                run_dir.display(),
                if config.tune_lm {
                    "ptune with tune_lm"
                } else {
                    config.method.name()
                },
                if config.head.is_linear() {
                    " (its linear head, best/head.safetensors, is not part of that model: with --head mlm the model classifies by its label words alone)"
                } else {
                    ""
                }
            )));
        }
        Method::Ptune => (
            trained_prompts(())?,
            format!("{} (ptune, best valid epoch)", run_dir.display()),
        ),
        Method::PtuneV2 => (
            if template.n_pseudo() > 0 {
                trained_prompts(())?
            } else {
                Vec::new()
            },
            format!("{} (ptune-v2, best valid epoch)", run_dir.display()),
        ),
        Method::Zeroshot | Method::Finetune => {
            let ids = template.pseudo_ids();
            let vectors = if ids.is_empty() {
                Vec::new()
            } else {
                lm.token_embeddings(ids).data
            };
            (vectors, format!("{} (zeroshot)", run_dir.display()))
        }
    };
    let shape = lm.prefix_shape();
    let prefix = if config.method == Method::PtuneV2 {
        let path = best(best_files::DEEP_PROMPT)?;
        let map = crate::model::tensors::read_safetensors(&path)?;
        let deep = DeepPrompt::<B>::from_tensors(&map, shape, device)
            .map_err(|m| Error::file(&path, m))?;
        to_host(deep.forward()).data
    } else {
        Vec::new()
    };
    let head = if config.head.is_linear() {
        let path = best(best_files::HEAD)?;
        let map = crate::model::tensors::read_safetensors(&path)?;
        let t = |k: &str| {
            map.get(k)
                .map(|t| t.data.clone())
                .ok_or_else(|| Error::file(&path, format!("missing tensor \"{k}\"")))
        };
        Some((t("weight")?, t("bias")?))
    } else {
        None
    };
    let class_bias = match config.calibrate {
        Some(_) => {
            let c = Calibrated::read(run)?;
            if c.classes != verbalizer.classes {
                return Err(Error::file(
                    run.calibration_path(),
                    format!(
                        "its classes {:?} are not the run's {:?}",
                        c.classes, verbalizer.classes
                    ),
                ));
            }
            Some(c.bias)
        }
        None => None,
    };
    let prefix_len = if prefix.is_empty() {
        0
    } else {
        config.prefix_len
    };
    let (num_layers, num_heads) = if prefix_len > 0 {
        (shape.num_layers, shape.num_heads)
    } else {
        (0, 0)
    };
    let head_kind = if head.is_some() {
        config.head
    } else {
        Head::Mlm
    };
    Ok(Adapter {
        info: AdapterInfo {
            format: Adapter::format_for(prefix_len, head.is_some(), class_bias.is_some())
                .to_string(),
            template: config.template.clone(),
            labels: config.labels.clone(),
            max_len: config.max_len,
            hidden_size: lm.hidden_size(),
            n_prompts: template.n_pseudo(),
            backbone: fingerprint(model_dir, &lm)?,
            source,
            prefix_len,
            num_layers,
            num_heads,
            head: false,
            head_on_cls: false,
            head_on_transform: false,
        }
        .with_head_kind(head_kind),
        vectors,
        prefix,
        head,
        class_bias,
    })
}
