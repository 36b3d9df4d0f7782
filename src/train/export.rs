//! Baking a run into an adapter file.

use std::path::Path;

use burn::tensor::backend::Backend;

use super::config::{Method, TrainConfig};
use crate::adapter::{Adapter, AdapterInfo, FORMAT, fingerprint};
use crate::error::{Error, Result, read_file};
use crate::model::ModelDir;
use crate::model::prompt_encoder::load_prompt_encoder;
use crate::model::weights::to_host;
use crate::prompt::Template;

/// The adapter of a `ptune` run (its best-on-valid prompt encoder, evaluated once) or of a
/// `zeroshot` run (the template's own `[unusedK]` embeddings). Fine-tuned runs change the
/// backbone itself and cannot be adapters.
pub fn export_run<B: Backend>(
    run_dir: &Path,
    model_dir: &ModelDir,
    device: &B::Device,
) -> Result<Adapter> {
    let config_path = run_dir.join("config.toml");
    let text = String::from_utf8(read_file(&config_path)?)
        .map_err(|_| Error::file(&config_path, "not UTF-8"))?;
    let config: TrainConfig =
        toml::from_str(&text).map_err(|e| Error::file(&config_path, e.message().to_string()))?;
    let lm = model_dir.load::<B>(device)?;
    let tokenizer = model_dir.tokenizer()?;
    let template = Template::parse(&config.template, &tokenizer)?;
    let (vectors, source) = match config.method {
        Method::Ptune if !config.tune_lm => {
            let path = run_dir.join("best/prompt_encoder.safetensors");
            if !path.is_file() {
                return Err(Error::file(
                    &path,
                    "missing: the run has no best checkpoint yet",
                ));
            }
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
            (
                to_host(encoder.forward()).1,
                format!("{} (ptune, best valid epoch)", run_dir.display()),
            )
        }
        Method::Zeroshot => {
            let ids = template.pseudo_ids();
            let vectors = if ids.is_empty() {
                Vec::new()
            } else {
                lm.token_embeddings(ids).data
            };
            (vectors, format!("{} (zeroshot)", run_dir.display()))
        }
        _ => {
            return Err(Error::invalid(format!(
                "{}: only ptune runs with a frozen LM (and zeroshot runs) can be exported; a {} run changed the backbone itself — use its best/ model directory instead",
                run_dir.display(),
                if config.tune_lm {
                    "ptune --tune-lm"
                } else {
                    config.method.name()
                }
            )));
        }
    };
    Ok(Adapter {
        info: AdapterInfo {
            format: FORMAT.to_string(),
            template: config.template.clone(),
            labels: config.labels.clone(),
            max_len: config.max_len,
            hidden_size: lm.hidden_size(),
            n_prompts: template.n_pseudo(),
            backbone: fingerprint(model_dir, &lm)?,
            source,
        },
        vectors,
    })
}
