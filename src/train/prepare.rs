//! Reading and encoding a run's data once: tokenizer, template, verbalizer, splits.

use std::path::{Path, PathBuf};

use crate::data::{Example, read_tsv};
use crate::error::{Error, Result};
use crate::model::ModelDir;
use crate::prompt::{Encoded, Template, Verbalizer};
use crate::tokenizer::BertTokenizer;

use super::config::{Method, TrainConfig};

#[derive(Debug, Clone)]
pub struct DataFiles {
    pub train: PathBuf,
    pub valid: PathBuf,
    pub test: PathBuf,
}

impl DataFiles {
    /// `train.tsv`, `valid.tsv` and `test.tsv` in one directory.
    pub fn in_dir(dir: &Path) -> Self {
        DataFiles {
            train: dir.join("train.tsv"),
            valid: dir.join("valid.tsv"),
            test: dir.join("test.tsv"),
        }
    }
}

/// A split, encoded: `(example ids, class index)`.
pub type EncodedSplit = Vec<(Encoded, usize)>;

pub struct Prepared {
    pub tokenizer: BertTokenizer,
    pub template: Template,
    pub verbalizer: Verbalizer,
    /// The few-shot training rows (before encoding), for reports.
    pub fewshot: Vec<Example>,
    pub train: EncodedSplit,
    pub valid: EncodedSplit,
    pub test: EncodedSplit,
}

impl Prepared {
    pub fn load(config: &TrainConfig, model: &ModelDir, data: &DataFiles) -> Result<Self> {
        let tokenizer = model.tokenizer()?;
        let template = Template::parse(&config.template, &tokenizer)?;
        let verbalizer = Verbalizer::parse(&config.labels, &tokenizer, template.n_mask())?;
        if config.max_len > model.config.max_position_embeddings {
            return Err(Error::invalid(format!(
                "max_len {} exceeds the model's max_position_embeddings {}",
                config.max_len, model.config.max_position_embeddings
            )));
        }
        // the tokens' positions start after the prefix (as transformers and PEFT number them)
        if config.prefix_len + config.max_len > model.config.max_position_embeddings {
            return Err(Error::invalid(format!(
                "prefix_len {} + max_len {} exceeds the model's max_position_embeddings {}",
                config.prefix_len, config.max_len, model.config.max_position_embeddings
            )));
        }
        if config.method == Method::Ptune && template.n_pseudo() == 0 {
            return Err(Error::invalid(format!(
                "ptune needs pseudo tokens [P] in the template \"{}\"",
                config.template
            )));
        }
        let pair = template.is_pair();
        let read = |p: &Path| read_tsv(p, &verbalizer.classes, pair);
        let encode = |rows: &[Example]| -> Result<EncodedSplit> {
            rows.iter()
                .map(|e| {
                    Ok((
                        template.encode(
                            &tokenizer,
                            &e.text_a,
                            e.text_b.as_deref(),
                            config.max_len,
                        )?,
                        e.label,
                    ))
                })
                .collect()
        };
        let all_train = read(&data.train)?;
        let fewshot = config
            .fewshot
            .select(&all_train, verbalizer.n_classes(), config.seed)?;
        let (valid, test) = (read(&data.valid)?, read(&data.test)?);
        Ok(Prepared {
            train: encode(&fewshot)?,
            valid: encode(&valid)?,
            test: encode(&test)?,
            fewshot,
            tokenizer,
            template,
            verbalizer,
        })
    }
}
