//! Property tests: whatever the bytes, the readers end in `Ok` or in a one-line error naming
//! the file, never a panic. Run by hand-driven runners so that each reports its case count.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::dataset::{Format, parse_records};
use super::record::{Fields, Labels};

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
                        let has_b = pair && (labels == Labels::Required || format != Format::Tsv);
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
