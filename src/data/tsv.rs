//! `.tsv` splits: headerless `text<TAB>label` (or `text_a<TAB>text_b<TAB>label`), one example
//! per line.

use std::path::Path;

use super::record::{Labels, Record, check_text, utf8_line};
use crate::error::{Error, Result};

pub(super) fn parse_tsv(
    path: &Path,
    bytes: &[u8],
    pair: bool,
    labels: Labels,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = utf8_line(path, line_no, raw)?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if labels == Labels::Optional {
            // Input to classify: the first column is the text (a TSV row's label, if any,
            // and further columns are ignored).
            check_text(path, line_no, fields[0], None)?;
            out.push(Record {
                text_a: fields[0].to_string(),
                text_b: None,
                label: None,
                line: line_no,
            });
            continue;
        }
        let want = if pair { 3 } else { 2 };
        if fields.len() != want {
            let what = if pair {
                "text_a<TAB>text_b<TAB>label"
            } else {
                "text<TAB>label"
            };
            let msg = if fields.len() == 1 {
                format!("no tab: expected {what}")
            } else {
                format!(
                    "{} tab-separated fields, expected {want} ({what})",
                    fields.len()
                )
            };
            return Err(Error::line(path, line_no, msg));
        }
        check_text(path, line_no, fields[0], pair.then(|| fields[1]))?;
        let label = fields[want - 1].trim();
        if label.is_empty() {
            return Err(Error::line(
                path,
                line_no,
                "empty label (after the last tab)",
            ));
        }
        out.push(Record {
            text_a: fields[0].to_string(),
            text_b: pair.then(|| fields[1].to_string()),
            label: Some(label.to_string()),
            line: line_no,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (found by the property test): a row whose label column is empty was read
    /// as a record with the label "".
    #[test]
    fn an_empty_label_is_an_error_naming_the_line() {
        let path = Path::new("d.tsv");
        let e = parse_tsv(path, "好\t1\n\0\t\n".as_bytes(), false, Labels::Required).unwrap_err();
        assert_eq!(e.to_string(), "d.tsv:2: empty label (after the last tab)");
        let e = parse_tsv(path, "a\tb\t \n".as_bytes(), true, Labels::Required).unwrap_err();
        assert_eq!(e.to_string(), "d.tsv:1: empty label (after the last tab)");
        // reading input to classify, the label column is not looked at
        let r = parse_tsv(path, b"x\t\n", false, Labels::Optional).unwrap();
        assert_eq!(r.len(), 1);
    }
}
