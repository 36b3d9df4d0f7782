//! Bad checkpoints give one line naming the file and the cause, exit code 2, and no panic.

mod common;

use std::fs;

use common::*;

fn inspect(dir: &std::path::Path) -> std::process::Output {
    ptune(&["inspect", "--model", dir.to_str().unwrap()])
}

fn tiny_copy() -> tempfile::TempDir {
    copy_dir(&fixture("tiny-bert"))
}

#[test]
fn missing_directory() {
    assert_clean_error(
        &inspect(std::path::Path::new("/no/such/model")),
        &["/no/such/model", "does not exist"],
    );
}

#[test]
fn missing_config_or_vocab_or_weights() {
    let d = tiny_copy();
    fs::remove_file(d.path().join("config.json")).unwrap();
    assert_clean_error(&inspect(d.path()), &["config.json", "missing"]);

    let d = tiny_copy();
    fs::remove_file(d.path().join("vocab.txt")).unwrap();
    assert_clean_error(&inspect(d.path()), &["vocab.txt", "missing"]);

    let d = tiny_copy();
    fs::remove_file(d.path().join("model.safetensors")).unwrap();
    fs::remove_file(d.path().join("pytorch_model.bin")).unwrap();
    assert_clean_error(&inspect(d.path()), &["no weight file"]);
}

#[test]
fn malformed_and_incomplete_config() {
    let d = tiny_copy();
    fs::write(d.path().join("config.json"), "{\"hidden_size\": 16,").unwrap();
    assert_clean_error(&inspect(d.path()), &["config.json", "malformed JSON"]);

    let d = tiny_copy();
    let cfg = fs::read_to_string(d.path().join("config.json")).unwrap();
    let cfg = cfg.replace("\"num_attention_heads\"", "\"num_attention_heads_removed\"");
    fs::write(d.path().join("config.json"), cfg).unwrap();
    assert_clean_error(
        &inspect(d.path()),
        &["config.json", "missing field \"num_attention_heads\""],
    );
}

#[test]
fn vocab_size_disagrees_with_embeddings() {
    // vocab.txt longer than config.json's vocab_size
    let d = tiny_copy();
    let mut vocab = fs::read_to_string(d.path().join("vocab.txt")).unwrap();
    vocab.push_str("extra\n");
    fs::write(d.path().join("vocab.txt"), vocab).unwrap();
    assert_clean_error(&inspect(d.path()), &["vocab.txt", "vocab_size"]);

    // config and vocab agree with each other, not with the embedding matrix
    let d = tiny_copy();
    let cfg = fs::read_to_string(d.path().join("config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let n = v["vocab_size"].as_u64().unwrap();
    fs::write(
        d.path().join("config.json"),
        cfg.replace(
            &format!("\"vocab_size\": {n}"),
            &format!("\"vocab_size\": {}", n + 1),
        ),
    )
    .unwrap();
    let mut vocab = fs::read_to_string(d.path().join("vocab.txt")).unwrap();
    vocab.push_str("extra\n");
    fs::write(d.path().join("vocab.txt"), vocab).unwrap();
    assert_clean_error(&inspect(d.path()), &["model.safetensors", "rows"]);
}

#[test]
fn truncated_or_corrupt_safetensors() {
    let d = tiny_copy();
    let p = d.path().join("model.safetensors");
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &inspect(d.path()),
        &["model.safetensors", "not a valid safetensors file"],
    );

    fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}").unwrap();
    assert_clean_error(
        &inspect(d.path()),
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn unknown_dtype() {
    let d = tiny_copy();
    let header = br#"{"bert.embeddings.word_embeddings.weight":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0, 0]);
    fs::write(d.path().join("model.safetensors"), bytes).unwrap();
    assert_clean_error(
        &inspect(d.path()),
        &["model.safetensors", "unsupported dtype"],
    );
}

#[test]
fn pickle_naming_another_global_is_rejected_without_running_it() {
    let d = tiny_copy();
    fs::remove_file(d.path().join("model.safetensors")).unwrap();
    fs::copy(
        fixture("evil/pytorch_model.bin"),
        d.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let out = inspect(d.path());
    let err = assert_clean_error(&out, &["pytorch_model.bin", "posix.system", "not allowed"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("must never run"),
        "{err}"
    );

    fs::write(
        d.path().join("pytorch_model.bin"),
        b"PK\x03\x04 truncated zip",
    )
    .unwrap();
    assert_clean_error(
        &inspect(d.path()),
        &["pytorch_model.bin", "not a PyTorch zip checkpoint"],
    );
}

#[test]
fn missing_and_unexpected_keys_are_named() {
    let d = tiny_copy();
    let p = d.path().join("model.safetensors");
    let map = ptune::model::tensors::read_safetensors(&p).unwrap();
    let renamed = map.iter().map(|(k, t)| {
        let k = if k == "bert.encoder.layer.1.output.dense.bias" {
            "bert.encoder.layer.1.output.dense.bias_typo".to_string()
        } else {
            k.clone()
        };
        (k, &t.shape[..], &t.data[..])
    });
    fs::write(&p, ptune::model::tensors::safetensors_bytes(renamed, None)).unwrap();
    assert_clean_error(
        &inspect(d.path()),
        &[
            "missing keys [\"bert.encoder.layer.1.output.dense.bias\"]",
            "unexpected keys {\"bert.encoder.layer.1.output.dense.bias_typo\"}",
        ],
    );
}

#[test]
fn bare_bert_keys_load_like_prefixed_ones() {
    // a state dict without the `bert.` prefix (saved from BertModel plus a head) is accepted
    let d = tiny_copy();
    let p = d.path().join("model.safetensors");
    let map = ptune::model::tensors::read_safetensors(&p).unwrap();
    let stripped = map.iter().map(|(k, t)| {
        (
            k.strip_prefix("bert.").unwrap_or(k).to_string(),
            &t.shape[..],
            &t.data[..],
        )
    });
    fs::write(&p, ptune::model::tensors::safetensors_bytes(stripped, None)).unwrap();
    let out = inspect(d.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: a config asking for 10000 layers built them all (20+ s) before failing.
#[test]
fn layer_count_is_checked_before_allocating() {
    let d = tiny_copy();
    let cfg = fs::read_to_string(d.path().join("config.json")).unwrap();
    let cfg = cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 10000");
    fs::write(d.path().join("config.json"), cfg).unwrap();
    let t = std::time::Instant::now();
    assert_clean_error(&inspect(d.path()), &["10000", "2 encoder layers"]);
    assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
}

/// Regression: non-finite weights loaded silently (NaN predictions, exit code 0).
#[test]
fn non_finite_weights_are_named() {
    let d = tiny_copy();
    fs::remove_file(d.path().join("pytorch_model.bin")).unwrap();
    let path = d.path().join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (k, v.shape().to_vec(), data)
        })
        .collect();
    let i = tensors
        .iter()
        .position(|t| t.0 == "bert.encoder.layer.1.output.dense.bias")
        .unwrap();
    tensors[i].2[3] = f32::NAN;
    let out = ptune::model::tensors::safetensors_bytes(
        tensors.iter().map(|(k, s, d)| (k.clone(), &s[..], &d[..])),
        None,
    );
    fs::write(&path, out).unwrap();
    assert_clean_error(
        &inspect(d.path()),
        &["bert.encoder.layer.1.output.dense.bias", "non-finite"],
    );
}
