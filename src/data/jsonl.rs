//! `.jsonl` splits: one JSON object per line, fields chosen by key (a numeric or boolean label
//! is read as its text, so `1` and `"1"` are the same class).

use std::path::Path;

use super::record::{Fields, Labels, Record, check_text, esc, flag_hint, quoted, utf8_line};
use crate::error::{Error, Result};

pub(super) fn parse_jsonl(
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
        let text_a = text(&text_names, "`text_field`", fields.text.is_some())?;
        let text_b = if pair {
            Some(text(
                &text_b_names,
                "`text_b_field`",
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
                flag_hint("`label_field`", fields.label.is_some())
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
