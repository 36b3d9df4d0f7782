//! Prompts: templates that place the text, pseudo tokens and `[MASK]`s, and verbalizers that
//! map classes to label words.

pub mod template;
pub mod verbalizer;

pub use template::{Encoded, Template};
pub use verbalizer::Verbalizer;

use crate::error::Result;
use crate::tokenizer::BertTokenizer;

/// A task's prompt: the template and the label words at its `[MASK]`s, parsed together (the
/// verbalizer's words must fill the template's `[MASK]` slot).
#[derive(Debug, Clone)]
pub struct PromptSpec {
    /// The parsed template.
    pub template: Template,
    /// The label words, one per class, each exactly as many tokens as the template has `[MASK]`s.
    pub verbalizer: Verbalizer,
}

impl PromptSpec {
    /// Parses a template spec (`"[P]*4 [MASK] [P]*4 {text}"`) and label words
    /// (`"0=不,1=很"`) against `tokenizer`.
    pub fn parse(template: &str, labels: &str, tokenizer: &BertTokenizer) -> Result<Self> {
        let template = Template::parse(template, tokenizer)?;
        let verbalizer = Verbalizer::parse(labels, tokenizer, template.n_mask())?;
        Ok(PromptSpec {
            template,
            verbalizer,
        })
    }
}
