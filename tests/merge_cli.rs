//! `ptune merge`: weighted averages of checkpoints written as model directories that every
//! command reads, and one-line errors for what cannot be merged.

mod common;

use common::{assert_clean_error, max_abs_diff, ptune, zh_mini};
use ptune::Cpu;
use ptune::model::ModelDir;

fn weights_of(dir: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    ModelDir::open(dir)
        .unwrap()
        .load::<Cpu>(&Default::default())
        .unwrap()
        .hf_tensors()
        .into_iter()
        .map(|(k, t)| (k, t.data))
        .collect()
}

#[test]
fn a_merge_is_a_model_directory_every_command_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let zh = zh_mini();
    let zh = zh.to_str().unwrap();
    let out = tmp.path().join("merged");
    let o = ptune(&[
        "merge",
        "--model",
        zh,
        zh,
        "--weights",
        "0.25,0.75",
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        "f16",
        "--shard-mib",
        "8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("model.safetensors.index.json").is_file());
    // a model averaged with itself is itself, to f16 rounding
    let (a, b) = (weights_of(&zh_mini()), weights_of(&out));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        let d = max_abs_diff(va, vb);
        assert!(d <= 2e-3, "{ka}: {d}");
    }
    let o = ptune(&["inspect", "--model", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && stdout.contains("float16"), "{stdout}");
}

#[test]
fn what_cannot_be_merged_is_one_line_with_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let zh = zh_mini();
    let zh = zh.to_str().unwrap();
    let out = tmp.path().join("m");
    let out = out.to_str().unwrap();
    let o = ptune(&[
        "merge",
        "--model",
        zh,
        zh,
        "--weights",
        "0.7,0.2",
        "--out",
        out,
    ]);
    assert_clean_error(&o, &["sum to 0.9"]);
    let o = ptune(&["merge", "--model", zh, zh, "--weights", "1", "--out", out]);
    assert_clean_error(&o, &["--weights has 1 values for 2 models"]);
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = ptune(&[
        "merge",
        "--model",
        zh,
        empty.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert_clean_error(&o, &["config.json"]);
    let o = ptune(&["merge", "--model", zh, "--out", out]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "one model is refused by the parser"
    );
    assert!(
        !std::path::Path::new(out).exists(),
        "nothing is written on error"
    );
}
