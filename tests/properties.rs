//! Property tests for every parser that reads outside input: arbitrary and structured-but-
//! mutated input never panics or hangs and ends in `Ok` or an error of one line.
//!
//! The runs are deterministic (a fixed seed; set `PTUNE_PROPTEST_SEED=<u64>` to explore
//! others). Each property prints how many cases it ran (`--nocapture` shows them) and checks
//! that it ran them all.
//! The model files (safetensors, pickle, config.json) have theirs in
//! `model_file_properties.rs`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::props::*;
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use ptune::model::ModelDir;
use serde_json::{Value, json};

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
