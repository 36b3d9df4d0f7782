//! `ptune selftest` passes on this install and fails (exit code 2, FAIL lines) on a model whose
//! weights are off by a little.

mod common;

use std::fs;

use common::*;

#[test]
fn selftest_passes_on_the_shipped_model() {
    let out = ptune(&["selftest", "--threads", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("4 of 4 checks passed"), "{text}");
    assert_eq!(text.matches("PASS").count(), 4, "{text}");
}

#[test]
fn selftest_fails_on_perturbed_weights_and_refuses_another_model() {
    let d = copy_dir(&zh_mini());
    let path = d.path().join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let mut data: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if k == "cls.predictions.bias" {
                data.iter_mut().for_each(|x| *x += 0.01);
            }
            (k, v.shape().to_vec(), data)
        })
        .collect();
    let out = ptune::model::tensors::safetensors_bytes(
        tensors.iter().map(|(k, s, d)| (k.clone(), &s[..], &d[..])),
        None,
    );
    fs::write(&path, out).unwrap();
    let out = ptune(&["selftest", "--model", d.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("FAIL  zh-mini logits"), "{text}");

    let tiny = fixture("tiny-bert");
    assert_clean_error(
        &ptune(&["selftest", "--model", tiny.to_str().unwrap()]),
        &["belong to the shipped zh-mini"],
    );
}
