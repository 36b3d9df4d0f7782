//! Property tests for the model files read from outside: `model.safetensors`,
//! `pytorch_model.bin` (zip + pickle) and `config.json`. Arbitrary and structured-but-mutated
//! input never panics or hangs and ends in `Ok` or an error of one line (runner and seed as in
//! `properties.rs`).

mod common;

use std::path::Path;

use common::props::*;
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use ptune::model::ModelDir;
use serde_json::{Value, json};

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
