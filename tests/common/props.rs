//! The property runner and input strategies shared by `properties.rs` and
//! `model_file_properties.rs`.

use std::cell::Cell;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use ptune::model::ModelDir;
use ptune::tokenizer::BertTokenizer;
use serde_json::{Value, json};

use super::{fixture, zh_mini};

pub type CaseResult = Result<(), TestCaseError>;

/// Runs `cases` cases of `property`; a case that panics, fails, or takes over `slow` fails the
/// test with the (shrunk) input.
pub fn check<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> CaseResult,
) where
    S::Value: std::fmt::Debug,
{
    let seed: u64 = std::env::var("PTUNE_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let ran = Cell::new(0u32);
    let slow = Duration::from_secs(5);
    let t0 = Instant::now();
    let result = runner.run(&strategy, |v| {
        ran.set(ran.get() + 1);
        let start = Instant::now();
        let r = property(v);
        prop_assert!(start.elapsed() < slow, "case took {:?}", start.elapsed());
        r
    });
    if let Err(e) = result {
        panic!("property {name}: {e}");
    }
    eprintln!(
        "property {name}: {} cases in {:.1} s",
        ran.get(),
        t0.elapsed().as_secs_f64()
    );
    assert!(ran.get() >= cases, "{name}: ran {} of {cases}", ran.get());
}

/// The error's message is one non-empty line.
pub fn one_line(e: impl Display) -> CaseResult {
    let s = e.to_string();
    prop_assert!(!s.trim().is_empty(), "empty error message");
    prop_assert!(!s.contains(['\n', '\r']), "error of several lines: {s:?}");
    Ok(())
}

pub fn zh_tokenizer() -> BertTokenizer {
    ModelDir::open(&zh_mini()).unwrap().tokenizer().unwrap()
}

/// Any character, often one that breaks lines, quoting or tokenizing.
pub fn a_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => any::<char>(),
        1 => prop::sample::select(
            &['\n', '\r', '\t', '\0', '"', '\\', '\u{1}', '\u{301}', '\u{feff}', '好'][..]
        ),
    ]
}

pub fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(a_char(), 0..max).prop_map(String::from_iter)
}

/// Strings made of `pieces` (and now and then an arbitrary character).
pub fn spliced(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(pieces).prop_map(str::to_string),
            1 => a_char().prop_map(String::from),
        ],
        0..max,
    )
    .prop_map(|v| v.concat())
}

/// A byte-level edit of a file.
#[derive(Debug, Clone)]
pub enum Edit {
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
}

pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..12))
                .prop_map(|(i, b)| Edit::Insert(i, b)),
            1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Remove(i, n)),
            1 => any::<Index>().prop_map(Edit::Truncate),
        ],
        1..max,
    )
}

/// Applies `edits` at positions within the first `span` bytes of `base`.
pub fn apply(base: &[u8], span: usize, edits: &[Edit]) -> Vec<u8> {
    let mut b = base.to_vec();
    for e in edits {
        let at = |i: &Index, b: &Vec<u8>| i.index(span.min(b.len()).max(1)).min(b.len());
        match e {
            Edit::Set(i, x) => {
                let p = at(i, &b);
                if p < b.len() {
                    b[p] = *x;
                }
            }
            Edit::Insert(i, x) => {
                let p = at(i, &b);
                b.splice(p..p, x.iter().copied());
            }
            Edit::Remove(i, n) => {
                let p = at(i, &b);
                let end = (p + n).min(b.len());
                b.drain(p..end);
            }
            Edit::Truncate(i) => {
                let p = at(i, &b);
                b.truncate(p);
            }
        }
    }
    b
}

/// Arbitrary JSON values, biased to the troublesome: huge, negative, fractional, wrong types.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..100).prop_map(Value::from),
        (-1e30f64..1e30).prop_map(|x| json!(x)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        text(12).prop_map(Value::from),
        prop::sample::select(
            &[
                "F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "a\nb", ""
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((text(6), inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A JSON object with some fields replaced by arbitrary values, removed, or added.
#[derive(Debug, Clone)]
pub enum FieldEdit {
    Replace(Index, Value),
    Remove(Index),
    Add(String, Value),
}

pub fn field_edits(max: usize) -> impl Strategy<Value = Vec<FieldEdit>> {
    prop::collection::vec(
        prop_oneof![
            4 => (any::<Index>(), json_value()).prop_map(|(i, v)| FieldEdit::Replace(i, v)),
            1 => any::<Index>().prop_map(FieldEdit::Remove),
            1 => (text(8), json_value()).prop_map(|(k, v)| FieldEdit::Add(k, v)),
        ],
        1..max,
    )
}

pub fn edit_object(obj: &mut serde_json::Map<String, Value>, edits: &[FieldEdit]) {
    for e in edits {
        let keys: Vec<String> = obj.keys().cloned().collect();
        match e {
            FieldEdit::Replace(i, v) if !keys.is_empty() => {
                obj.insert(keys[i.index(keys.len())].clone(), v.clone());
            }
            FieldEdit::Remove(i) if !keys.is_empty() => {
                obj.remove(&keys[i.index(keys.len())]);
            }
            FieldEdit::Add(k, v) => {
                obj.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

pub fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `model.safetensors` of the tiny fixture, with its header's end.
pub fn tiny_safetensors() -> (Vec<u8>, usize) {
    let bytes = std::fs::read(fixture("tiny-bert/model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (bytes, 8 + n)
}

/// The file with one header entry's field (dtype, shape or data_offsets) replaced.
pub fn with_header_field(
    bytes: &[u8],
    header_end: usize,
    entry: usize,
    field: usize,
    v: &Value,
) -> Vec<u8> {
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..header_end]).unwrap();
    let names: Vec<String> = header.keys().cloned().collect();
    let name = &names[entry % names.len()];
    if let Some(Value::Object(t)) = header.get_mut(name) {
        let f = ["dtype", "shape", "data_offsets"][field % 3];
        t.insert(f.into(), v.clone());
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[header_end..]);
    out
}
