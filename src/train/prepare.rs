//! Reading and encoding a run's data once: tokenizer, template, verbalizer, splits.

use std::path::{Path, PathBuf};

use crate::data::{Example, Fields, Format, read_split};
use crate::error::{Error, Result};
use crate::model::ModelDir;
use crate::model::prefix_init::PrefixInit;
use crate::prompt::{Encoded, PromptSpec, Template, Verbalizer};
use crate::tokenizer::BertTokenizer;

use super::config::{Method, TrainConfig};

/// The three split files of a run.
#[derive(Debug, Clone)]
pub struct DataFiles {
    /// Training split (the few-shot rows are chosen from it).
    pub train: PathBuf,
    /// Validation split (selects the best epoch).
    pub valid: PathBuf,
    /// Test split (reported at the best validation epoch).
    pub test: PathBuf,
    /// Column/key names of .csv and .jsonl splits.
    pub fields: Fields,
}

impl DataFiles {
    /// `train.*`, `valid.*` and `test.*` in one directory, each `.tsv`, `.csv` or `.jsonl`
    /// (found by extension; two files for one split is an error).
    pub fn find(dir: &Path, fields: Fields) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "data directory does not exist"));
        }
        let split = |name: &str| -> Result<PathBuf> {
            let found: Vec<PathBuf> = Format::ALL
                .iter()
                .map(|f| dir.join(format!("{name}.{}", f.extension())))
                .filter(|p| p.is_file())
                .collect();
            match found.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(Error::file(
                    dir,
                    format!("no {name} split ({name}.tsv, {name}.csv or {name}.jsonl)"),
                )),
                many => Err(Error::file(
                    dir,
                    format!(
                        "{} files for the {name} split ({}): keep one",
                        many.len(),
                        many.iter()
                            .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        };
        Ok(DataFiles {
            train: split("train")?,
            valid: split("valid")?,
            test: split("test")?,
            fields,
        })
    }
}

/// A split, encoded: `(example ids, class index)`.
pub type EncodedSplit = Vec<(Encoded, usize)>;

/// A run's data read and encoded once: the tokenizer, the parsed prompt and the three splits.
pub struct Prepared {
    /// The backbone's tokenizer.
    pub tokenizer: BertTokenizer,
    /// The parsed template.
    pub template: Template,
    /// The parsed label words.
    pub verbalizer: Verbalizer,
    /// The chosen few-shot training examples, encoded.
    pub train: EncodedSplit,
    /// The whole validation split, encoded.
    pub valid: EncodedSplit,
    /// The whole test split, encoded.
    pub test: EncodedSplit,
}

impl Prepared {
    /// Parses the prompt, reads the splits, chooses the few-shot rows and encodes everything.
    /// Returns `Error::Invalid` when `max_len` (plus `prefix_len`) exceeds the model's positions,
    /// a `prefix_init` text has no tokens, `ptune` has no `[P]` in its template, or the prompt
    /// or the few-shot selection is invalid; reading errors name `file:line`.
    pub fn load(config: &TrainConfig, model: &ModelDir, data: &DataFiles) -> Result<Self> {
        let tokenizer = model.tokenizer()?;
        let PromptSpec {
            template,
            verbalizer,
        } = PromptSpec::parse(&config.template, &config.labels, &tokenizer)?;
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
        if let PrefixInit::Text(text) = &config.prefix_init
            && tokenizer.tokenize(text).is_empty()
        {
            return Err(Error::invalid(format!(
                "prefix_init text {text:?} has no tokens in this model's vocabulary"
            )));
        }
        if config.method == Method::Ptune && template.n_pseudo() == 0 {
            return Err(Error::invalid(format!(
                "ptune needs pseudo tokens [P] in the template \"{}\"",
                config.template
            )));
        }
        let pair = template.is_pair();
        let read = |p: &Path| read_split(p, &data.fields, &verbalizer.classes, pair);
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
            tokenizer,
            template,
            verbalizer,
        })
    }
}
