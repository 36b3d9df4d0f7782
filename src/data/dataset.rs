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

/// One row of a split before its label is mapped to a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub text_a: String,
    pub text_b: Option<String>,
    /// The label as written; `None` when the row has none (allowed for unlabelled input).
    pub label: Option<String>,
    /// 1-based line where the row starts.
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tsv,
    Csv,
    Jsonl,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Tsv, Format::Csv, Format::Jsonl];

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

/// Column (CSV) or key (JSONL) names; `None` takes the first default the file has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub text: Option<String>,
    pub text_b: Option<String>,
    pub label: Option<String>,
}

impl Fields {
    fn is_default(&self) -> bool {
        self.text.is_none() && self.text_b.is_none() && self.label.is_none()
    }

    fn text_candidates(&self, pair: bool) -> Vec<&str> {
        match (&self.text, pair) {
            (Some(t), _) => vec![t.as_str()],
            (None, false) => vec!["sentence", "text"],
            (None, true) => vec!["sentence1", "text_a"],
        }
    }

    fn text_b_candidates(&self) -> Vec<&str> {
        match &self.text_b {
            Some(t) => vec![t.as_str()],
            None => vec!["sentence2", "text_b"],
        }
    }

    fn label_name(&self) -> &str {
        self.label.as_deref().unwrap_or("label")
    }
}

fn flag_hint(flag: &str, explicit: bool) -> String {
    if explicit {
        String::new()
    } else {
        format!("; set {flag}")
    }
}

/// Text from the data as shown in a message: control characters (a newline inside a quoted
/// CSV field or a JSON string) escaped, so that every error stays one line.
fn esc(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_string()
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{}\"", esc(n)))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Whether a split must carry a label on every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    Required,
    /// Rows may lack a label (input to classify). A TSV row's first column is its text.
    Optional,
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
                    "a .tsv split is headerless text<TAB>label: --text-field, --text-b-field and --label-field apply to .csv and .jsonl",
                ));
            }
            parse_tsv(path, bytes, pair, labels)
        }
        Format::Csv => parse_csv(path, bytes, fields, pair, labels),
        Format::Jsonl => parse_jsonl(path, bytes, fields, pair, labels),
    }
}

fn utf8_line<'a>(path: &Path, line_no: usize, raw: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(raw).map_err(|e| {
        Error::line(
            path,
            line_no,
            format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
        )
    })
}

fn check_text(path: &Path, line: usize, a: &str, b: Option<&str>) -> Result<()> {
    if a.trim().is_empty() || b.is_some_and(|b| b.trim().is_empty()) {
        return Err(Error::line(path, line, "empty text"));
    }
    Ok(())
}

fn parse_tsv(path: &Path, bytes: &[u8], pair: bool, labels: Labels) -> Result<Vec<Record>> {
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
        out.push(Record {
            text_a: fields[0].to_string(),
            text_b: pair.then(|| fields[1].to_string()),
            label: Some(fields[want - 1].trim().to_string()),
            line: line_no,
        });
    }
    Ok(out)
}

fn csv_error(path: &Path, e: &csv::Error) -> Error {
    let line = |p: Option<&csv::Position>| p.map_or(1, |p| p.line() as usize);
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => Error::line(
            path,
            line(pos.as_ref()),
            format!("{len} fields, but the header has {expected_len}"),
        ),
        csv::ErrorKind::Utf8 { pos, err } => Error::line(
            path,
            line(pos.as_ref()),
            format!(
                "not valid UTF-8 (field {}, byte {})",
                err.field() + 1,
                err.valid_up_to() + 1
            ),
        ),
        csv::ErrorKind::Io(io) => Error::file(path, format!("reading: {io}")),
        _ => Error::file(path, format!("malformed CSV: {e}")),
    }
}

fn parse_csv(
    path: &Path,
    bytes: &[u8],
    fields: &Fields,
    pair: bool,
    labels: Labels,
) -> Result<Vec<Record>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let header = rdr.headers().map_err(|e| csv_error(path, &e))?.clone();
    let header_line = header.position().map_or(1, |p| p.line() as usize);
    let columns: Vec<&str> = header.iter().map(str::trim).collect();
    if columns.iter().all(|c| c.is_empty()) {
        return Err(Error::line(
            path,
            header_line,
            "no header row (a .csv split starts with column names, e.g. sentence,label)",
        ));
    }
    let listing = columns
        .iter()
        .map(|c| esc(c))
        .collect::<Vec<_>>()
        .join(", ");
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| columns.iter().position(|c| c == n))
    };
    let missing = |names: &[&str], flag: &str, explicit: bool| {
        Error::line(
            path,
            header_line,
            format!(
                "no column {} in the header (columns: {listing}){}",
                quoted(names),
                flag_hint(flag, explicit)
            ),
        )
    };
    let text_names = fields.text_candidates(pair);
    let text_col = find(&text_names)
        .ok_or_else(|| missing(&text_names, "--text-field", fields.text.is_some()))?;
    let text_b_col = if pair {
        let names = fields.text_b_candidates();
        Some(
            find(&names)
                .ok_or_else(|| missing(&names, "--text-b-field", fields.text_b.is_some()))?,
        )
    } else {
        None
    };
    let label_name = fields.label_name();
    let label_col = columns.iter().position(|c| *c == label_name);
    if label_col.is_none() && labels == Labels::Required {
        return Err(missing(
            &[label_name],
            "--label-field",
            fields.label.is_some(),
        ));
    }
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(path, &e))?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        // A record of one empty field is a blank line.
        if rec.len() == 1 && rec[0].trim().is_empty() && columns.len() > 1 {
            continue;
        }
        let text_a = rec.get(text_col).unwrap_or_default();
        let text_b = text_b_col.map(|c| rec.get(c).unwrap_or_default());
        check_text(path, line, text_a, text_b)?;
        let label = label_col
            .map(|c| rec.get(c).unwrap_or_default().trim())
            .filter(|l| !l.is_empty());
        if label.is_none() && labels == Labels::Required {
            return Err(Error::line(
                path,
                line,
                format!("empty label (column \"{}\")", esc(label_name)),
            ));
        }
        out.push(Record {
            text_a: text_a.to_string(),
            text_b: text_b.map(str::to_string),
            label: label.map(str::to_string),
            line,
        });
    }
    Ok(out)
}

fn parse_jsonl(
    path: &Path,
    bytes: &[u8],
    fields: &Fields,
    pair: bool,
    labels: Labels,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let text_names = fields.text_candidates(pair);
    let text_b_names = fields.text_b_candidates();
    let label_name = fields.label_name();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = utf8_line(path, line_no, raw)?;
        // A UTF-8 byte-order mark may start the file.
        let line = if i == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if line.trim().is_empty() {
            continue;
        }
        let err = |m: String| Error::line(path, line_no, m);
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(format!("malformed JSON: {e}")))?;
        let serde_json::Value::Object(obj) = value else {
            return Err(err(
                "not a JSON object (each line holds one example, e.g. {\"sentence\": ..., \"label\": ...})".into(),
            ));
        };
        let text = |names: &[&str], flag: &str, explicit: bool| -> Result<String> {
            let Some((key, v)) = names.iter().find_map(|n| obj.get(*n).map(|v| (*n, v))) else {
                let keys: Vec<String> = obj.keys().map(|k| esc(k)).collect();
                return Err(err(format!(
                    "no field {} (fields: {}){}",
                    quoted(names),
                    keys.join(", "),
                    flag_hint(flag, explicit)
                )));
            };
            match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                _ => Err(err(format!("field \"{}\" is not a string", esc(key)))),
            }
        };
        let text_a = text(&text_names, "--text-field", fields.text.is_some())?;
        let text_b = if pair {
            Some(text(
                &text_b_names,
                "--text-b-field",
                fields.text_b.is_some(),
            )?)
        } else {
            None
        };
        check_text(path, line_no, &text_a, text_b.as_deref())?;
        let label = match obj.get(label_name) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => {
                Some(s.trim().to_string()).filter(|s| !s.is_empty())
            }
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
            Some(_) => {
                return Err(err(format!(
                    "field \"{}\" is not a string or number",
                    esc(label_name)
                )));
            }
        };
        if label.is_none() && labels == Labels::Required {
            return Err(err(format!(
                "no label (field \"{}\"){}",
                esc(label_name),
                flag_hint("--label-field", fields.label.is_some())
            )));
        }
        out.push(Record {
            text_a,
            text_b,
            label,
            line: line_no,
        });
    }
    Ok(out)
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
                        "unknown label \"{}\" (classes: {}; set them with --labels CLASS=WORD,...)",
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
            "d.csv:1: no column \"label\" in the header (columns: sentence, target); set --label-field"
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
                "d.jsonl:1: no field \"sentence\" or \"text\" (fields: body, label); set --text-field",
            ),
            (
                "{\"text\": \"a\"}\n",
                "d.jsonl:1: no label (field \"label\"); set --label-field",
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

/// Property tests: whatever the bytes, the readers end in `Ok` or in a one-line error naming
/// the file, never a panic. Run by hand-driven runners so that each reports its case count.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    /// Parses `bytes` as `name` in every label mode and pairing and checks the outcome;
    /// returns how many of the parses found at least one record.
    fn check(name: &str, bytes: &[u8], fields: &Fields) -> std::result::Result<u32, TestCaseError> {
        let path = Path::new(name);
        let format = Format::of(path).unwrap();
        let mut found = 0;
        for pair in [false, true] {
            for labels in [Labels::Required, Labels::Optional] {
                match parse_records(path, bytes, format, fields, pair, labels) {
                    Ok(recs) => {
                        found += !recs.is_empty() as u32;
                        for r in &recs {
                            prop_assert!(!r.text_a.trim().is_empty());
                            // a TSV read for classification takes the first column only
                            let has_b =
                                pair && (labels == Labels::Required || format != Format::Tsv);
                            prop_assert_eq!(r.text_b.is_some(), has_b);
                            prop_assert!(r.line >= 1);
                            if labels == Labels::Required {
                                prop_assert!(r.label.as_deref().is_some_and(|l| !l.is_empty()));
                            }
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        prop_assert!(
                            msg.starts_with(name),
                            "error does not name the file: {}",
                            msg
                        );
                        prop_assert!(
                            !msg.contains('\n') && !msg.contains('\r'),
                            "not one line: {:?}",
                            msg
                        );
                    }
                }
            }
        }
        Ok(found)
    }

    /// Runs `strategy` for `cases` cases through `check` on `name`, reporting the count run
    /// and how many parses produced records (at least `min_found`: the inputs reach past the
    /// first checks).
    fn run<S: Strategy<Value = Vec<u8>>>(
        label: &str,
        name: &str,
        strategy: S,
        (cases, min_found): (u32, u32),
        fields: Fields,
    ) {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let count = std::cell::Cell::new(0u32);
        let found = std::cell::Cell::new(0u32);
        runner
            .run(&strategy, |bytes| {
                count.set(count.get() + 1);
                found.set(found.get() + check(name, &bytes, &fields)?);
                Ok(())
            })
            .unwrap();
        eprintln!(
            "property {label}: {} cases, {} parses with records",
            count.get(),
            found.get()
        );
        assert!(
            count.get() >= cases,
            "{label}: ran {} of {cases} cases",
            count.get()
        );
        assert!(
            found.get() >= min_found,
            "{label}: only {} parses found records",
            found.get()
        );
    }

    /// Byte strings built from pieces that matter to the format (syntax, likely field names),
    /// mixed with arbitrary bytes: a token soup that mostly ends in errors of every kind.
    fn pieces(tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => proptest::sample::select(tokens).prop_map(|t| t.as_bytes().to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 1..4),
            1 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
        ];
        proptest::collection::vec(piece, 0..48).prop_map(|v| v.concat())
    }

    /// A short text: a common word or a few arbitrary characters.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => proptest::sample::select(&["好", "差", "很好", "0", "1", "Positive", "a,b", "x\"y", "第一行\n第二行"][..])
                .prop_map(str::to_string),
            1 => proptest::sample::select(&["", " ", "\r"][..])
                .prop_map(str::to_string),
            1 => proptest::collection::vec(any::<char>(), 0..4).prop_map(|c| c.into_iter().collect()),
        ]
    }

    /// Inserts a few arbitrary bytes at a random place, sometimes.
    fn maybe_damage(doc: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
        (
            doc,
            proptest::option::weighted(
                0.3,
                (
                    any::<proptest::sample::Index>(),
                    proptest::collection::vec(any::<u8>(), 0..3),
                ),
            ),
        )
            .prop_map(|(doc, damage)| {
                let mut b = doc.into_bytes();
                if let Some((at, junk)) = damage {
                    let at = at.index(b.len() + 1);
                    b.truncate(at.max(b.len() / 2));
                    b.extend(junk);
                }
                b
            })
    }

    /// CSV documents: a header of likely column names, then records of quoted or bare fields.
    fn csv_docs() -> impl Strategy<Value = Vec<u8>> {
        let header = proptest::sample::select(
            &[
                "sentence,label",
                "text,label",
                "sentence1,sentence2,label",
                "label,sentence",
                "id,text,label",
                "text_a,text_b,label",
                "sentence",
                "a,b",
            ][..],
        );
        let field = (word(), any::<bool>()).prop_map(|(w, quote)| {
            if quote || w.contains([',', '"', '\n']) && !w.is_empty() {
                format!("\"{}\"", w.replace('"', "\"\""))
            } else {
                w
            }
        });
        let records = proptest::collection::vec(
            (
                proptest::collection::vec(field, 4),
                proptest::option::weighted(0.15, 1..5usize),
            ),
            0..5,
        );
        let doc = (header, records, any::<bool>()).prop_map(|(h, recs, crlf)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let width = h.split(',').count();
            let mut d = format!("{h}{nl}");
            for (fields, other_width) in recs {
                d.push_str(&fields[..other_width.unwrap_or(width).min(4)].join(","));
                d.push_str(nl);
            }
            d
        });
        maybe_damage(doc)
    }

    /// JSONL documents: objects with likely keys and any kind of value, one per line.
    fn jsonl_docs() -> impl Strategy<Value = Vec<u8>> {
        let key = proptest::sample::select(
            &[
                "sentence",
                "text",
                "label",
                "sentence1",
                "sentence2",
                "text_b",
                "id",
            ][..],
        );
        let value = prop_oneof![
            4 => word().prop_map(serde_json::Value::from),
            1 => any::<i64>().prop_map(serde_json::Value::from),
            1 => any::<bool>().prop_map(serde_json::Value::from),
            1 => Just(serde_json::Value::Null),
            1 => Just(serde_json::json!([1, "a"])),
        ];
        let likely = (
            proptest::option::weighted(
                0.9,
                (proptest::sample::select(&["sentence", "text"][..]), word()),
            ),
            proptest::option::weighted(0.9, value.clone()),
            proptest::collection::vec((key, value), 0..3),
        );
        let object = likely.prop_map(|(text, label, extra)| {
            let mut map = serde_json::Map::new();
            for (k, v) in extra {
                map.insert(k.to_string(), v);
            }
            if let Some((k, t)) = text {
                map.insert(k.to_string(), t.into());
            }
            if let Some(l) = label {
                map.insert("label".into(), l);
            }
            serde_json::Value::Object(map).to_string()
        });
        let line = prop_oneof![
            8 => object,
            1 => Just(String::new()),
            1 => Just("[1, 2]".to_string()),
        ];
        let doc = proptest::collection::vec(line, 0..4).prop_map(|l| l.join("\n"));
        maybe_damage(doc)
    }

    const CSV_TOKENS: &[&str] = &[
        ",",
        ",",
        "\"",
        "\"\"",
        "\n",
        "\r\n",
        "\r",
        " ",
        "sentence",
        "sentence1",
        "sentence2",
        "text",
        "label",
        "好",
        "1",
        "0",
        "Positive",
        "\u{feff}",
        "#",
        "\t",
        "sentence,label\n",
        "text_a,text_b,label\n",
    ];
    const JSONL_TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\n",
        "\r\n",
        " ",
        "\"sentence\"",
        "\"sentence1\"",
        "\"sentence2\"",
        "\"text\"",
        "\"label\"",
        "\"好\"",
        "\" \"",
        "\"\"",
        "1",
        "-0.5e3",
        "true",
        "null",
        "\"\\u00e9\\n\"",
        "\"\\ud800\"",
        "\u{feff}",
        "{\"sentence\": \"好\", \"label\": 1}\n",
    ];

    #[test]
    fn csv_reader_never_panics() {
        run(
            "csv/arbitrary-bytes",
            "p.csv",
            proptest::collection::vec(any::<u8>(), 0..256),
            (1500, 0),
            Fields::default(),
        );
        run(
            "csv/token-soup",
            "p.csv",
            pieces(CSV_TOKENS),
            (3000, 0),
            Fields::default(),
        );
        run(
            "csv/documents",
            "p.csv",
            csv_docs(),
            (3000, 300),
            Fields::default(),
        );
        let named = Fields {
            text: Some("text".into()),
            text_b: Some("label".into()),
            label: Some("1".into()),
        };
        run(
            "csv/documents-named-fields",
            "p.csv",
            csv_docs(),
            (1000, 30),
            named,
        );
    }

    #[test]
    fn jsonl_reader_never_panics() {
        run(
            "jsonl/arbitrary-bytes",
            "p.jsonl",
            proptest::collection::vec(any::<u8>(), 0..256),
            (1500, 0),
            Fields::default(),
        );
        run(
            "jsonl/token-soup",
            "p.jsonl",
            pieces(JSONL_TOKENS),
            (3000, 0),
            Fields::default(),
        );
        run(
            "jsonl/documents",
            "p.jsonl",
            jsonl_docs(),
            (3000, 300),
            Fields::default(),
        );
        let named = Fields {
            text: Some("label".into()),
            text_b: None,
            label: Some("sentence".into()),
        };
        run(
            "jsonl/documents-named-fields",
            "p.jsonl",
            jsonl_docs(),
            (1000, 30),
            named,
        );
    }

    #[test]
    fn tsv_reader_never_panics() {
        run(
            "tsv/arbitrary-bytes",
            "p.tsv",
            proptest::collection::vec(any::<u8>(), 0..256),
            (1000, 0),
            Fields::default(),
        );
    }
}
