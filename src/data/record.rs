//! What every split reader shares: the row type ([`Record`]), the field names ([`Fields`]),
//! whether labels are required ([`Labels`]), and the checks and message pieces that keep every
//! error one line naming `file:line`.

use std::path::Path;

use crate::error::{Error, Result};

/// One row of a split before its label is mapped to a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The text (the first sentence of a pair).
    pub text_a: String,
    /// The second sentence of a pair; `None` for single-sentence input.
    pub text_b: Option<String>,
    /// The label as written; `None` when the row has none (allowed for unlabelled input).
    pub label: Option<String>,
    /// 1-based line where the row starts.
    pub line: usize,
}

/// Column (CSV) or key (JSONL) names; `None` takes the first default the file has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// Name of the text (first sentence) field; default `sentence`, else `text` (for a pair
    /// `sentence1`, else `text_a`).
    pub text: Option<String>,
    /// Name of the second-sentence field; default `sentence2`, else `text_b`.
    pub text_b: Option<String>,
    /// Name of the label field; default `label`.
    pub label: Option<String>,
}

impl Fields {
    pub(super) fn is_default(&self) -> bool {
        self.text.is_none() && self.text_b.is_none() && self.label.is_none()
    }

    pub(super) fn text_candidates(&self, pair: bool) -> Vec<&str> {
        match (&self.text, pair) {
            (Some(t), _) => vec![t.as_str()],
            (None, false) => vec!["sentence", "text"],
            (None, true) => vec!["sentence1", "text_a"],
        }
    }

    pub(super) fn text_b_candidates(&self) -> Vec<&str> {
        match &self.text_b {
            Some(t) => vec![t.as_str()],
            None => vec!["sentence2", "text_b"],
        }
    }

    pub(super) fn label_name(&self) -> &str {
        self.label.as_deref().unwrap_or("label")
    }
}

pub(super) fn flag_hint(flag: &str, explicit: bool) -> String {
    if explicit {
        String::new()
    } else {
        format!("; set {flag}")
    }
}

/// Text from the data as shown in a message: control characters (a newline inside a quoted
/// CSV field or a JSON string) escaped, so that every error stays one line.
pub(super) fn esc(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_string()
    }
}

pub(super) fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{}\"", esc(n)))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Whether a split must carry a label on every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// Every row must have a label; a row without one is an error naming `file:line`.
    Required,
    /// Rows may lack a label (input to classify). A TSV row's first column is its text.
    Optional,
}

pub(super) fn utf8_line<'a>(path: &Path, line_no: usize, raw: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(raw).map_err(|e| {
        Error::line(
            path,
            line_no,
            format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
        )
    })
}

pub(super) fn check_text(path: &Path, line: usize, a: &str, b: Option<&str>) -> Result<()> {
    if a.trim().is_empty() || b.is_some_and(|b| b.trim().is_empty()) {
        return Err(Error::line(path, line, "empty text"));
    }
    Ok(())
}
