//! Prompts: templates that place the text, pseudo tokens and `[MASK]`s, and verbalizers that
//! map classes to label words.

pub mod template;
pub mod verbalizer;

pub use template::{Encoded, Template};
pub use verbalizer::Verbalizer;
