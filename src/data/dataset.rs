//! `text<TAB>label` (or `text_a<TAB>text_b<TAB>label`) files, UTF-8, one example per line.

use std::path::Path;

use crate::error::{Error, Result, read_file};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub text_a: String,
    pub text_b: Option<String>,
    /// Class index (into the verbalizer's classes).
    pub label: usize,
    /// 1-based line in the source file, for messages.
    pub line: usize,
}

/// Reads a labelled TSV file. Every malformed row is an error naming `file:line`; blank
/// lines are skipped (they hold no example).
pub fn read_tsv(path: &Path, classes: &[String], pair: bool) -> Result<Vec<Example>> {
    let bytes = read_file(path)?;
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = std::str::from_utf8(raw).map_err(|e| {
            Error::line(
                path,
                line_no,
                format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
            )
        })?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
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
        let label_str = fields[want - 1].trim();
        let label = classes.iter().position(|c| c == label_str).ok_or_else(|| {
            Error::line(
                path,
                line_no,
                format!(
                    "unknown label \"{label_str}\" (classes: {})",
                    classes.join(", ")
                ),
            )
        })?;
        if fields[0].trim().is_empty() || (pair && fields[1].trim().is_empty()) {
            return Err(Error::line(path, line_no, "empty text"));
        }
        out.push(Example {
            text_a: fields[0].to_string(),
            text_b: pair.then(|| fields[1].to_string()),
            label,
            line: line_no,
        });
    }
    if out.is_empty() {
        return Err(Error::file(path, "no examples"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &[u8]) -> Result<Vec<Example>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tsv");
        std::fs::write(&p, content).unwrap();
        read_tsv(&p, &["0".into(), "1".into()], false)
    }

    #[test]
    fn reads_rows_and_skips_blank_lines() {
        let ex = read("好\t1\r\n\n差\t0\n".as_bytes()).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (ex[1].text_a.as_str(), ex[1].label, ex[1].line),
            ("差", 0, 3)
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = read("好\t1\n没有制表符\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("x.tsv:2: no tab: expected text<TAB>label"),
            "{e}"
        );
        let e = read("好\t2\n".as_bytes()).unwrap_err().to_string();
        assert!(e.contains(":1: unknown label \"2\""), "{e}");
        let e = read(" \t1\n".as_bytes()).unwrap_err().to_string();
        assert!(e.contains(":1: empty text"), "{e}");
        let e = read(b"ok\t1\nbad \xff\t0\n").unwrap_err().to_string();
        assert!(e.contains(":2: not valid UTF-8"), "{e}");
    }
}
