//! `.csv` splits: a header row, then one record per example (quoted fields may hold commas,
//! quotes and newlines; read with the `csv` crate), columns chosen by name.

use std::path::Path;

use super::record::{Fields, Labels, Record, check_text, esc, flag_hint, quoted};
use crate::error::{Error, Result};

fn csv_error(path: &Path, e: &::csv::Error) -> Error {
    let line = |p: Option<&::csv::Position>| p.map_or(1, |p| p.line() as usize);
    match e.kind() {
        ::csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => Error::line(
            path,
            line(pos.as_ref()),
            format!("{len} fields, but the header has {expected_len}"),
        ),
        ::csv::ErrorKind::Utf8 { pos, err } => Error::line(
            path,
            line(pos.as_ref()),
            format!(
                "not valid UTF-8 (field {}, byte {})",
                err.field() + 1,
                err.valid_up_to() + 1
            ),
        ),
        ::csv::ErrorKind::Io(io) => Error::file(path, format!("reading: {io}")),
        _ => Error::file(path, format!("malformed CSV: {e}")),
    }
}

pub(super) fn parse_csv(
    path: &Path,
    bytes: &[u8],
    fields: &Fields,
    pair: bool,
    labels: Labels,
) -> Result<Vec<Record>> {
    let mut rdr = ::csv::ReaderBuilder::new()
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
        .ok_or_else(|| missing(&text_names, "`text_field`", fields.text.is_some()))?;
    let text_b_col = if pair {
        let names = fields.text_b_candidates();
        Some(
            find(&names)
                .ok_or_else(|| missing(&names, "`text_b_field`", fields.text_b.is_some()))?,
        )
    } else {
        None
    };
    let label_name = fields.label_name();
    let label_col = columns.iter().position(|c| *c == label_name);
    if label_col.is_none() && labels == Labels::Required {
        return Err(missing(
            &[label_name],
            "`label_field`",
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
