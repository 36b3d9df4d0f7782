//! Property tests for every parser that reads outside input: arbitrary and structured-but-
//! mutated input never panics or hangs and ends in `Ok` or an error of one line.
//!
//! The runs are deterministic (a fixed seed; set `PTUNE_PROPTEST_SEED=<u64>` to explore
//! others). Each property prints how many cases it ran (`--nocapture` shows them) and checks
//! that it ran them all.

mod common;

use std::cell::Cell;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use ptune::model::ModelDir;
use ptune::tokenizer::BertTokenizer;
use serde_json::{Value, json};

type CaseResult = Result<(), TestCaseError>;

/// Runs `cases` cases of `property`; a case that panics, fails, or takes over `slow` fails the
/// test with the (shrunk) input.
fn check<S: Strategy>(
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
fn one_line(e: impl Display) -> CaseResult {
    let s = e.to_string();
    prop_assert!(!s.trim().is_empty(), "empty error message");
    prop_assert!(!s.contains(['\n', '\r']), "error of several lines: {s:?}");
    Ok(())
}

fn zh_tokenizer() -> BertTokenizer {
    ModelDir::open(&zh_mini()).unwrap().tokenizer().unwrap()
}

/// Any character, often one that breaks lines, quoting or tokenizing.
fn a_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => any::<char>(),
        1 => prop::sample::select(
            &['\n', '\r', '\t', '\0', '"', '\\', '\u{1}', '\u{301}', '\u{feff}', '好'][..]
        ),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(a_char(), 0..max).prop_map(String::from_iter)
}

/// Strings made of `pieces` (and now and then an arbitrary character).
fn spliced(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
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
enum Edit {
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
}

fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
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
fn apply(base: &[u8], span: usize, edits: &[Edit]) -> Vec<u8> {
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
fn json_value() -> impl Strategy<Value = Value> {
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
enum FieldEdit {
    Replace(Index, Value),
    Remove(Index),
    Add(String, Value),
}

fn field_edits(max: usize) -> impl Strategy<Value = Vec<FieldEdit>> {
    prop::collection::vec(
        prop_oneof![
            4 => (any::<Index>(), json_value()).prop_map(|(i, v)| FieldEdit::Replace(i, v)),
            1 => any::<Index>().prop_map(FieldEdit::Remove),
            1 => (text(8), json_value()).prop_map(|(k, v)| FieldEdit::Add(k, v)),
        ],
        1..max,
    )
}

fn edit_object(obj: &mut serde_json::Map<String, Value>, edits: &[FieldEdit]) {
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

fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const TEMPLATE_PIECES: &[&str] = &[
    "[P]",
    "[MASK]",
    "[SEP]",
    "[CLS]",
    "[unused5]",
    "[NOPE]",
    "*",
    "*4",
    "*0",
    "*99999999999",
    "*4096",
    "{text}",
    "{text_a}",
    "{text_b}",
    "{label}",
    "[",
    "]",
    "{",
    "}",
    "满意",
    "。",
    "x",
    " ",
    "\n",
    "\u{1}",
    "\u{301}",
];

#[test]
fn template_specs() {
    let tok = zh_tokenizer();
    let spec = prop_oneof![text(40), spliced(TEMPLATE_PIECES, 12)];
    check(
        "Template::parse",
        1500,
        (spec, 0usize..40, text(30)),
        |(spec, extra, input)| {
            match ptune::prompt::Template::parse(&spec, &tok) {
                Err(e) => one_line(e)?,
                Ok(t) => {
                    let max_len = t.fixed_len() + extra;
                    let b = t.is_pair().then_some("乙");
                    match t.encode(&tok, &input, b, max_len) {
                        Err(e) => one_line(e)?,
                        Ok(enc) => {
                            prop_assert!(enc.ids.len() <= max_len.max(t.fixed_len()));
                            prop_assert_eq!(enc.ids.len(), enc.token_types.len());
                            prop_assert_eq!(enc.mask_positions.len(), t.n_mask());
                            prop_assert_eq!(enc.pseudo_positions.len(), t.n_pseudo());
                        }
                    }
                }
            }
            Ok(())
        },
    );
}

const LABEL_PIECES: &[&str] = &[
    "0", "1", "2", "pos", "=", ",", "不", "很", "好", "坏", "不好", " ", "\n", "\r", "\t", "[UNK]",
    "☃", "",
];

#[test]
fn label_specs() {
    let tok = zh_tokenizer();
    let spec = prop_oneof![text(30), spliced(LABEL_PIECES, 14)];
    check(
        "Verbalizer::parse",
        1500,
        (spec, 1usize..4),
        |(spec, n_mask)| {
            match ptune::prompt::Verbalizer::parse(&spec, &tok, n_mask) {
                Err(e) => one_line(e)?,
                Ok(v) => {
                    prop_assert!(v.classes.len() >= 2);
                    prop_assert!(v.word_ids.iter().all(|w| w.len() == n_mask));
                }
            }
            Ok(())
        },
    );
}

const TSV_PIECES: &[&str] = &[
    "好", "很好", "\t", "\t", "\n", "\n", "\r", "\r\n", "0", "1", "2", " ", "\u{1}", "\u{feff}",
];

#[test]
fn tsv_files() {
    let tmp = tempfile::tempdir().unwrap();
    let classes = vec!["0".to_string(), "1".to_string()];
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        spliced(TSV_PIECES, 40).prop_map(String::into_bytes),
        (spliced(TSV_PIECES, 40), edits(4)).prop_map(|(s, e)| apply(s.as_bytes(), usize::MAX, &e)),
    ];
    check("read_tsv", 1500, (bytes, any::<bool>()), |(bytes, pair)| {
        let p = write_tmp(tmp.path(), "data.tsv", &bytes);
        match ptune::data::dataset::read_tsv(&p, &classes, pair) {
            Err(e) => one_line(e)?,
            Ok(rows) => {
                prop_assert!(!rows.is_empty());
                prop_assert!(
                    rows.iter()
                        .all(|r| r.label < 2 && r.text_b.is_some() == pair)
                );
            }
        }
        Ok(())
    });
}

/// `model.safetensors` of the tiny fixture, with its header's end.
fn tiny_safetensors() -> (Vec<u8>, usize) {
    let bytes = std::fs::read(fixture("tiny-bert/model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (bytes, 8 + n)
}

/// The file with one header entry's field (dtype, shape or data_offsets) replaced.
fn with_header_field(
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

fn safetensors_inputs() -> impl Strategy<Value = Vec<u8>> {
    let (base, header_end) = tiny_safetensors();
    let b1 = base.clone();
    let b2 = base.clone();
    let shapes = prop_oneof![
        json_value(),
        prop::collection::vec(prop_oneof![0u64..40, Just(u64::MAX), Just(1 << 40)], 0..4)
            .prop_map(|v| json!(v)),
    ];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64),
        2 => edits(6).prop_map(move |e| apply(&b1, header_end, &e)),
        1 => edits(6).prop_map(move |e| apply(&b2, usize::MAX, &e)),
        3 => (any::<usize>(), any::<usize>(), shapes)
            .prop_map(move |(i, f, v)| with_header_field(&base, header_end, i, f, &v)),
    ]
}

#[test]
fn safetensors_files() {
    let tmp = tempfile::tempdir().unwrap();
    check("read_safetensors", 1000, safetensors_inputs(), |bytes| {
        let p = write_tmp(tmp.path(), "model.safetensors", &bytes);
        match ptune::model::tensors::read_safetensors(&p) {
            Err(e) => one_line(e)?,
            Ok(map) => {
                for t in map.values() {
                    prop_assert_eq!(t.shape.iter().product::<usize>(), t.data.len());
                }
            }
        }
        Ok(())
    });
}

/// A copy of the tiny fixture model with one file replaced; loads it (config, weights) on CPU.
fn load_tiny_with(dir: &Path, name: &str, bytes: &[u8], drop_safetensors: bool) -> CaseResult {
    for f in [
        "config.json",
        "vocab.txt",
        "model.safetensors",
        "pytorch_model.bin",
    ] {
        std::fs::copy(fixture("tiny-bert").join(f), dir.join(f)).unwrap();
    }
    if drop_safetensors {
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    }
    std::fs::write(dir.join(name), bytes).unwrap();
    let r = ModelDir::open(dir).and_then(|m| {
        m.tokenizer()?;
        m.load::<ptune::Cpu>(&Default::default()).map(|_| ())
    });
    if let Err(e) = r {
        one_line(e)?;
    }
    Ok(())
}

#[test]
fn weight_loading() {
    let tmp = tempfile::tempdir().unwrap();
    check(
        "ModelDir::load (safetensors)",
        300,
        safetensors_inputs(),
        |bytes| load_tiny_with(tmp.path(), "model.safetensors", &bytes, false),
    );
}

/// The tiny fixture's `pytorch_model.bin` entries (name, bytes).
fn tiny_torch_zip() -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let f = std::fs::File::open(fixture("tiny-bert/pytorch_model.bin")).unwrap();
    let mut zip = zip::ZipArchive::new(f).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut e = zip.by_index(i).unwrap();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (e.name().to_string(), b)
        })
        .collect()
}

fn torch_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Torch zips whose pickle is arbitrary or mutated, or whose storages are cut or mutated.
fn pickle_inputs() -> impl Strategy<Value = Vec<u8>> {
    let entries = tiny_torch_zip();
    let pkl = entries
        .iter()
        .position(|(n, _)| n.ends_with("data.pkl"))
        .unwrap();
    let (e1, e2, e3) = (entries.clone(), entries.clone(), entries.clone());
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(move |b| {
            let mut e = e1.clone();
            e[pkl].1 = b;
            torch_zip(&e)
        }),
        4 => edits(5).prop_map(move |ed| {
            let mut e = e2.clone();
            e[pkl].1 = apply(&e[pkl].1, usize::MAX, &ed);
            torch_zip(&e)
        }),
        1 => (any::<Index>(), edits(3)).prop_map(move |(i, ed)| {
            let mut e = e3.clone();
            let k = i.index(e.len());
            e[k].1 = apply(&e[k].1, usize::MAX, &ed);
            torch_zip(&e)
        }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn pickle_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    check("read_torch_zip", 1000, pickle_inputs(), |bytes| {
        let p = write_tmp(tmp.path(), "pytorch_model.bin", &bytes);
        match ptune::model::pickle::read_torch_zip(&p) {
            Err(e) => one_line(e)?,
            Ok(map) => {
                for t in map.values() {
                    prop_assert_eq!(t.shape.iter().product::<usize>(), t.data.len());
                }
            }
        }
        Ok(())
    });
    let dir = tempfile::tempdir().unwrap();
    check("ModelDir::load (pickle)", 200, pickle_inputs(), |bytes| {
        load_tiny_with(dir.path(), "pytorch_model.bin", &bytes, true)
    });
}

#[test]
fn config_files() {
    let base: Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny-bert/config.json")).unwrap()).unwrap();
    let b1 = base.clone();
    let raw = serde_json::to_vec_pretty(&base).unwrap();
    let inputs = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..100),
        1 => edits(4).prop_map(move |e| apply(&raw, usize::MAX, &e)),
        4 => field_edits(4).prop_map(move |e| {
            let mut v = b1.clone();
            edit_object(v.as_object_mut().unwrap(), &e);
            serde_json::to_vec(&v).unwrap()
        }),
    ];
    check("BertConfig::from_json", 1500, inputs, |bytes| {
        if let Err(e) = ptune::model::config::BertConfig::from_json(&bytes) {
            one_line(e)?;
        }
        Ok(())
    });
    // the whole path: config.json read, validated against the weights, model built
    let small = field_edits(3).prop_map(move |e| {
        let mut v = base.clone();
        let o = v.as_object_mut().unwrap();
        edit_object(o, &e);
        // keep sizes small: the property is about refusing, not about allocating
        for (_, x) in o.iter_mut() {
            if x.as_u64().is_some_and(|n| n > 300) {
                *x = json!(x.as_u64().unwrap() % 300);
            }
        }
        serde_json::to_vec(&v).unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    check("ModelDir::load (config.json)", 300, small, |bytes| {
        load_tiny_with(dir.path(), "config.json", &bytes, false)
    });
}

fn zh_adapter_bytes(dir: &Path, prompts: bool) -> Vec<u8> {
    use ptune::adapter::{Adapter, AdapterInfo, FORMAT};
    let p = zero_shot_adapter(dir, 64);
    if !prompts {
        return std::fs::read(p).unwrap();
    }
    let mut a = Adapter::read(&p).unwrap();
    a.info = AdapterInfo {
        format: FORMAT.into(),
        template: "[P]*2 [MASK] [P]*2 {text}".into(),
        n_prompts: 4,
        ..a.info
    };
    a.vectors = (0..4 * a.info.hidden_size)
        .map(|i| (i % 7) as f32 * 0.01)
        .collect();
    a.write(&p, ptune::model::tensors::StorageDType::F32)
        .unwrap();
    std::fs::read(p).unwrap()
}

/// The adapter's `ptune` metadata with some fields replaced; the tensors kept.
fn with_metadata(bytes: &[u8], edits: &[FieldEdit]) -> Vec<u8> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut info: Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["ptune"]).unwrap();
    edit_object(info.as_object_mut().unwrap(), edits);
    let tensors = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let owned: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let d = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k, v.shape().to_vec(), d)
        })
        .collect();
    let mut m = std::collections::HashMap::new();
    m.insert("ptune".to_string(), info.to_string());
    ptune::model::tensors::safetensors_bytes(
        owned.iter().map(|(k, s, d)| (k.clone(), &s[..], &d[..])),
        Some(m),
    )
}

const ADAPTER_FIELD_VALUES: &[&str] = &[
    "[P]*2 [MASK] [P]*2 {text}",
    "[MASK]满意。{text}",
    "[P]*3 [MASK] {text}",
    "[MASK] {text_a} [SEP] {text_b}",
    "0=不,1=很",
    "0=不,1=不",
    "a=很好,b=不",
    "ptune-adapter-v1",
    "ptune-adapter-v2",
    "\n",
];

#[test]
fn adapter_files() {
    let tmp = tempfile::tempdir().unwrap();
    let model = ModelDir::open(&zh_mini()).unwrap();
    let tok = model.tokenizer().unwrap();
    let device = Default::default();
    let lm = model.load::<ptune::Cpu>(&device).unwrap();
    let (zs, pt) = (
        zh_adapter_bytes(tmp.path(), false),
        zh_adapter_bytes(tmp.path(), true),
    );
    let meta_edits = prop::collection::vec(
        prop_oneof![
            2 => (any::<Index>(), json_value()).prop_map(|(i, v)| FieldEdit::Replace(i, v)),
            2 => (any::<Index>(), prop::sample::select(ADAPTER_FIELD_VALUES))
                .prop_map(|(i, v)| FieldEdit::Replace(i, json!(v))),
            1 => (any::<Index>(), prop_oneof![0u64..20, 60u64..70, 500u64..600, Just(u64::MAX)])
                .prop_map(|(i, v)| FieldEdit::Replace(i, json!(v))),
            1 => any::<Index>().prop_map(FieldEdit::Remove),
        ],
        1..4,
    );
    let (z1, p1, p2) = (zs.clone(), pt.clone(), pt.clone());
    let inputs = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..100),
        2 => (any::<bool>(), edits(5))
            .prop_map(move |(b, e)| apply(if b { &z1 } else { &p1 }, 400, &e)),
        4 => (any::<bool>(), meta_edits)
            .prop_map(move |(b, e)| with_metadata(if b { &zs } else { &p2 }, &e)),
    ];
    check("Adapter::read (+ task, classify)", 600, inputs, |bytes| {
        let p = write_tmp(tmp.path(), "a.adapter", &bytes);
        let adapter = match ptune::adapter::Adapter::read(&p) {
            Err(e) => return one_line(e),
            Ok(a) => a,
        };
        let task = match adapter.task(&lm, &tok, &device) {
            Err(e) => return one_line(e),
            Ok(t) => t,
        };
        let pair = task.template.is_pair().then_some("乙");
        match task.classify(&tok, &[("很好", pair)], 8, &device) {
            Err(e) => one_line(e)?,
            Ok(p) => {
                prop_assert_eq!(p.len(), 1);
                prop_assert!(p[0].probs.iter().all(|x| x.is_finite()));
            }
        }
        Ok(())
    });
}

const BODY_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"task\"",
    "\"texts\"",
    "\"zs\"",
    "\"好\"",
    "\"\"",
    "\"\\n\"",
    "\"\\u0001\"",
    "\"\\ud800\"",
    "1",
    "-1e999",
    "null",
    "true",
    " ",
    "\"extra\"",
];

/// Requests built from mostly-valid parts.
fn request_bodies() -> impl Strategy<Value = Vec<u8>> {
    let texts = prop::collection::vec(
        prop_oneof![
            12 => text(12).prop_map(Value::from),
            2 => text(20).prop_map(Value::from),
            2 => prop::sample::select(&["好", "很好", "  ", "", "\u{1}", "\u{301}", "不\n好"][..])
                .prop_map(Value::from),
            1 => json_value(),
        ],
        0..6,
    );
    let task = prop_oneof![
        4 => Just(json!("zs")),
        1 => text(6).prop_map(Value::from),
        1 => json_value(),
    ];
    let structured =
        (task, texts, field_edits(2), prop::bool::weighted(0.2)).prop_map(|(t, x, e, mutate)| {
            let mut v = json!({ "task": t, "texts": x });
            if mutate {
                edit_object(v.as_object_mut().unwrap(), &e);
            }
            serde_json::to_vec(&v).unwrap()
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..100),
        1 => spliced(BODY_PIECES, 20).prop_map(String::into_bytes),
        4 => structured,
    ]
}

#[test]
fn http_request_bodies() {
    use ptune::serve::{ServeConfig, TaskInfo};
    use tower::ServiceExt;
    let tmp = tempfile::tempdir().unwrap();
    let model = ModelDir::open(&zh_mini()).unwrap();
    let tok = model.tokenizer().unwrap();
    let device = Default::default();
    let lm = model.load::<ptune::Cpu>(&device).unwrap();
    let adapter = ptune::adapter::Adapter::read(&zero_shot_adapter(tmp.path(), 32)).unwrap();
    let task = adapter.task(&lm, &tok, &device).unwrap();
    let info = TaskInfo {
        name: "zs".into(),
        classes: task.verbalizer.classes.clone(),
        label_words: task.verbalizer.words.clone(),
        template: adapter.info.template.clone(),
        prompts: 0,
        prefix_len: 0,
        linear_head: false,
        source: "test".into(),
    };
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap());
    config.max_wait = Duration::ZERO;
    config.max_text_chars = 15;
    config.max_texts_per_request = 4;
    config.max_body_bytes = 400;
    let app = ptune::serve::app(vec![(info, task)], tok, &config, device).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let content_type = prop::sample::select(
        &[
            "application/json",
            "application/json",
            "application/json",
            "application/json",
            "text/plain",
            "application/json; charset=utf-8",
            "",
        ][..],
    );
    let method = prop::sample::select(&["POST", "POST", "POST", "POST", "POST", "GET", "PUT"][..]);
    check(
        "POST /v1/classify bodies",
        800,
        (
            request_bodies(),
            prop_oneof![
                6 => Just(("POST", "application/json")),
                1 => (method, content_type),
            ],
        ),
        |(body, (method, ct))| {
            let mut req = axum::http::Request::builder()
                .method(method)
                .uri("/v1/classify");
            if !ct.is_empty() {
                req = req.header("content-type", ct);
            }
            let req = req.body(axum::body::Body::from(body.clone())).unwrap();
            let response = runtime.block_on(app.router.clone().oneshot(req)).unwrap();
            let status = response.status().as_u16();
            *statuses.borrow_mut().entry(status).or_default() += 1;
            let bytes = runtime
                .block_on(http_body_util::BodyExt::collect(response.into_body()))
                .unwrap()
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                TestCaseError::fail(format!("{status}: body not JSON ({e}): {bytes:?}"))
            })?;
            prop_assert!(
                [200, 400, 404, 405, 413, 415, 422].contains(&status),
                "status {} for {:?}: {}",
                status,
                String::from_utf8_lossy(&body),
                v
            );
            if status == 200 {
                let sent: Value = serde_json::from_slice(&body).unwrap();
                let results = v["results"].as_array().unwrap();
                prop_assert_eq!(results.len(), sent["texts"].as_array().unwrap().len());
                for r in results {
                    prop_assert!(r["label"].is_string() && r["truncated"].is_boolean());
                }
            } else {
                let msg = v["error"].as_str();
                prop_assert!(msg.is_some(), "{}: no error string: {}", status, v);
                one_line(msg.unwrap())?;
            }
            Ok(())
        },
    );
    eprintln!("POST /v1/classify statuses: {:?}", statuses.borrow());
    assert!(
        statuses.borrow().get(&200).is_some_and(|&n| n >= 50),
        "too few valid requests to exercise classification: {:?}",
        statuses.borrow()
    );
    app.join();
}

/// Regressions the properties found: errors that quoted input holding a line break (or a
/// carriage return) were several lines.
#[test]
fn errors_quoting_line_breaks_stay_one_line() {
    let tok = zh_tokenizer();
    let tmp = tempfile::tempdir().unwrap();
    let mut errors: Vec<String> = Vec::new();
    errors.push(
        ptune::prompt::Template::parse("\n", &tok)
            .unwrap_err()
            .to_string(),
    );
    errors.push(
        ptune::prompt::Verbalizer::parse("\n", &tok, 1)
            .unwrap_err()
            .to_string(),
    );
    let tsv = write_tmp(tmp.path(), "d.tsv", "0\r好\t0\r1\n".as_bytes());
    let classes = ["0".to_string(), "1".to_string()];
    errors.push(
        ptune::data::dataset::read_tsv(&tsv, &classes, false)
            .unwrap_err()
            .to_string(),
    );
    let (st, header_end) = tiny_safetensors();
    // a tensor's dtype (entry 0 is `__metadata__`)
    let bad = with_header_field(&st, header_end, 1, 0, &json!("\n"));
    let p = write_tmp(tmp.path(), "model.safetensors", &bad);
    errors.push(
        ptune::model::tensors::read_safetensors(&p)
            .unwrap_err()
            .to_string(),
    );
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny-bert/config.json")).unwrap()).unwrap();
    config["model_type"] = json!("a\nb");
    errors.push(
        ptune::model::config::BertConfig::from_json(config.to_string().as_bytes()).unwrap_err(),
    );
    let zs = zh_adapter_bytes(tmp.path(), false);
    let bad = with_metadata(&zs, &[FieldEdit::Add("format".into(), json!("\n"))]);
    let p = write_tmp(tmp.path(), "a.adapter", &bad);
    errors.push(ptune::adapter::Adapter::read(&p).unwrap_err().to_string());
    for e in &errors {
        assert!(!e.contains(['\n', '\r']), "{e:?}");
    }
    assert!(errors[0].contains("template \"\\n\""), "{}", errors[0]);
    assert!(
        errors[2].contains("d.tsv:1") && errors[2].contains("\"0\\r1\""),
        "{}",
        errors[2]
    );
}
