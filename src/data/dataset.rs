//! Reading data splits, UTF-8, in three formats picked by the file's extension:
//!
//! - `.tsv`: headerless `text<TAB>label` (or `text_a<TAB>text_b<TAB>label`), one example per line;
//! - `.csv`: a header row, then one record per example (quoted fields may hold commas, quotes and
//!   newlines; read with the `csv` crate), columns chosen by name;
//! - `.jsonl`: one JSON object per line, fields chosen by key (a numeric or boolean label is
//!   read as its text, so `1` and `"1"` are the same class).
//!
//! Field names are [`Fields`]; the defaults match common public few-shot sets: the text is
//! `sentence`, else `text`; a pair is `sentence1`/`sentence2`, else `text_a`/`text_b`; the
//! label is `label`. Every error names `file:line` (for CSV the line where the record starts).

use std::path::Path;

use super::csv::parse_csv;
use super::jsonl::parse_jsonl;
use super::record::esc;
pub use super::record::{Fields, Labels, Record};
use super::tsv::parse_tsv;
use crate::error::{Error, Result, read_file};

/// One labelled example of a split, its label mapped to a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The text (the first sentence of a pair).
    pub text_a: String,
    /// The second sentence of a pair; `None` for single-sentence tasks.
    pub text_b: Option<String>,
    /// Class index (into the verbalizer's classes).
    pub label: usize,
    /// 1-based line in the source file, for messages.
    pub line: usize,
}

/// The file format of a split, named by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Headerless tab-separated `text<TAB>label` or `text_a<TAB>text_b<TAB>label` (`.tsv`).
    Tsv,
    /// Comma-separated with a header row; columns chosen by name (`.csv`).
    Csv,
    /// One JSON object per line; fields chosen by key (`.jsonl`).
    Jsonl,
}

impl Format {
    /// Every supported format.
    pub const ALL: [Format; 3] = [Format::Tsv, Format::Csv, Format::Jsonl];

    /// The file extension of this format, lowercase and without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Tsv => "tsv",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }

    /// The format a file's extension names (case-insensitive).
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Format::ALL.into_iter().find(|f| f.extension() == ext)
    }
}

/// Parses a split's bytes (`path` names it in messages) in `format`.
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    format: Format,
    fields: &Fields,
    pair: bool,
    labels: Labels,
) -> Result<Vec<Record>> {
    match format {
        Format::Tsv => {
            if !fields.is_default() {
                return Err(Error::file(
                    path,
                    "a .tsv split is headerless text<TAB>label: `text_field`, `text_b_field` and `label_field` apply to .csv and .jsonl",
                ));
            }
            parse_tsv(path, bytes, pair, labels)
        }
        Format::Csv => parse_csv(path, bytes, fields, pair, labels),
        Format::Jsonl => parse_jsonl(path, bytes, fields, pair, labels),
    }
}

/// Reads the rows of a file in the format its extension names.
pub fn read_records(
    path: &Path,
    fields: &Fields,
    pair: bool,
    labels: Labels,
) -> Result<Vec<Record>> {
    let format = Format::of(path).ok_or_else(|| {
        Error::file(
            path,
            "unknown data format: the file name must end in .tsv, .csv or .jsonl",
        )
    })?;
    parse_records(path, &read_file(path)?, format, fields, pair, labels)
}

/// Maps each record's label to its class index.
pub fn to_examples(path: &Path, records: Vec<Record>, classes: &[String]) -> Result<Vec<Example>> {
    if records.is_empty() {
        return Err(Error::file(path, "no examples"));
    }
    records
        .into_iter()
        .map(|r| {
            let label_str = r.label.as_deref().unwrap_or("");
            let label = classes.iter().position(|c| c == label_str).ok_or_else(|| {
                Error::line(
                    path,
                    r.line,
                    format!(
                        "unknown label \"{}\" (classes: {}; set them with `labels` CLASS=WORD,...)",
                        esc(label_str),
                        classes.join(", ")
                    ),
                )
            })?;
            Ok(Example {
                text_a: r.text_a,
                text_b: r.text_b,
                label,
                line: r.line,
            })
        })
        .collect()
}

/// Reads a labelled split (any format) whose labels are among `classes`.
pub fn read_split(
    path: &Path,
    fields: &Fields,
    classes: &[String],
    pair: bool,
) -> Result<Vec<Example>> {
    let records = read_records(path, fields, pair, Labels::Required)?;
    to_examples(path, records, classes)
}

/// Reads a labelled TSV file. Every malformed row is an error naming `file:line`; blank
/// lines are skipped (they hold no example).
pub fn read_tsv(path: &Path, classes: &[String], pair: bool) -> Result<Vec<Example>> {
    let records = parse_tsv(path, &read_file(path)?, pair, Labels::Required)?;
    to_examples(path, records, classes)
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

    fn classes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn parse(name: &str, content: &str, fields: &Fields, pair: bool) -> Result<Vec<Record>> {
        let p = Path::new(name);
        parse_records(
            p,
            content.as_bytes(),
            Format::of(p).unwrap(),
            fields,
            pair,
            Labels::Required,
        )
    }

    #[test]
    fn csv_quoted_fields_embedded_newlines_and_line_numbers() {
        let csv = "sentence,label\n\"好,很好\",Positive\n\"第一行\n第二行\",Negative\n\"说\"\"好\"\"\",Positive\n";
        let recs = parse("d.csv", csv, &Fields::default(), false).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].text_a, "好,很好");
        assert_eq!(
            (recs[1].text_a.as_str(), recs[1].line),
            ("第一行\n第二行", 3)
        );
        assert_eq!((recs[2].text_a.as_str(), recs[2].line), ("说\"好\"", 5));
        let ex = to_examples(
            Path::new("d.csv"),
            recs,
            &classes(&["Negative", "Positive"]),
        )
        .unwrap();
        assert_eq!(
            ex.iter().map(|e| e.label).collect::<Vec<_>>(),
            vec![1, 0, 1]
        );
        // wrong column count names the record's line
        let e = parse(
            "d.csv",
            "text,label\na,1\n\"x\ny\",1,extra\n",
            &Fields::default(),
            false,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "d.csv:3: 3 fields, but the header has 2");
        // configurable names, pairs, and a missing column
        let f = Fields {
            text: Some("q".into()),
            text_b: Some("p".into()),
            label: Some("y".into()),
        };
        let recs = parse("d.csv", "id,q,p,y\n1,问,答,yes\n", &f, true).unwrap();
        assert_eq!(
            (recs[0].text_b.as_deref(), recs[0].label.as_deref()),
            (Some("答"), Some("yes"))
        );
        let e = parse(
            "d.csv",
            "sentence,target\n好,1\n",
            &Fields::default(),
            false,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "d.csv:1: no column \"label\" in the header (columns: sentence, target); set `label_field`"
        );
        let e = parse("d.csv", "sentence1,label\n好,1\n", &Fields::default(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column \"sentence2\" or \"text_b\""), "{e}");
        let e = to_examples(
            Path::new("d.csv"),
            parse(
                "d.csv",
                "text,label\na,1\nb,Neutral\n",
                &Fields::default(),
                false,
            )
            .unwrap(),
            &classes(&["0", "1"]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("d.csv:3: unknown label \"Neutral\""), "{e}");
    }

    #[test]
    fn jsonl_fields_labels_and_errors() {
        let j = "{\"id\": 1, \"sentence\": \"很好\", \"label\": \"Positive\"}\n\n{\"text\": \"差\", \"label\": 0}\r\n";
        let recs = parse("d.jsonl", j, &Fields::default(), false).unwrap();
        assert_eq!(recs[0].label.as_deref(), Some("Positive"));
        assert_eq!(
            (
                recs[1].text_a.as_str(),
                recs[1].label.as_deref(),
                recs[1].line
            ),
            ("差", Some("0"), 3)
        );
        let pair = "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": true}\n";
        let recs = parse("d.jsonl", pair, &Fields::default(), true).unwrap();
        assert_eq!(
            (recs[0].text_b.as_deref(), recs[0].label.as_deref()),
            (Some("b"), Some("true"))
        );
        for (content, want) in [
            (
                "{\"text\": \"a\", \"label\": 1}\n[1, 2]\n",
                "d.jsonl:2: not a JSON object",
            ),
            (
                "{\"body\": \"a\", \"label\": 1}\n",
                "d.jsonl:1: no field \"sentence\" or \"text\" (fields: body, label); set `text_field`",
            ),
            (
                "{\"text\": \"a\"}\n",
                "d.jsonl:1: no label (field \"label\"); set `label_field`",
            ),
            (
                "{\"text\": 5, \"label\": 1}\n",
                "d.jsonl:1: field \"text\" is not a string",
            ),
            (
                "{\"text\": \"a\", \"label\": [1]}\n",
                "d.jsonl:1: field \"label\" is not a string or number",
            ),
            (
                "{\"text\": \"  \", \"label\": 1}\n",
                "d.jsonl:1: empty text",
            ),
            ("{\"text\": \"a\", \n", "d.jsonl:1: malformed JSON"),
        ] {
            let e = parse("d.jsonl", content, &Fields::default(), false)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e} / {want}");
            assert!(!e.contains('\n'), "{e}");
        }
        // unlabelled input is allowed where asked for
        let recs = parse_records(
            Path::new("u.jsonl"),
            b"{\"text\": \"a\"}\n",
            Format::Jsonl,
            &Fields::default(),
            false,
            Labels::Optional,
        )
        .unwrap();
        assert_eq!(recs[0].label, None);
        // field names do not apply to headerless TSV
        let f = Fields {
            text: Some("x".into()),
            ..Fields::default()
        };
        assert!(
            parse("d.tsv", "a\t1\n", &f, false)
                .unwrap_err()
                .to_string()
                .contains("headerless")
        );
    }
}
