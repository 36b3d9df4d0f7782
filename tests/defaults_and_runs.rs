//! A binary that works outside the source tree (default model and data from `PTUNE_HOME`, the
//! working directory, then the build directory), and a fine-tuned run's `best/` directory:
//! not an adapter, but a model of its own.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// Runs `ptune` in `cwd` with `PTUNE_HOME` set (or removed).
fn ptune_in(cwd: &Path, home: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptune"));
    cmd.args(args).current_dir(cwd);
    match home {
        Some(h) => cmd.env("PTUNE_HOME", h),
        None => cmd.env_remove("PTUNE_HOME"),
    };
    cmd.output().expect("run ptune")
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn default_model_is_found_in_ptune_home_then_the_working_directory_then_the_build_tree() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let in_home = home.path().join("assets/models/zh-mini");
    copy_tree(&fixture("tiny-bert"), &in_home);
    let model_line = |o: &Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        out.lines().next().unwrap_or_default().to_string()
    };
    // PTUNE_HOME first
    let o = ptune_in(cwd.path(), Some(home.path()), &["inspect"]);
    assert!(
        model_line(&o).contains(in_home.to_str().unwrap()),
        "{}",
        model_line(&o)
    );
    // then the working directory's assets/
    let in_cwd = cwd.path().join("assets/models/zh-mini");
    copy_tree(&fixture("tiny-bert"), &in_cwd);
    let o = ptune_in(cwd.path(), None, &["inspect"]);
    assert_eq!(model_line(&o), "model      assets/models/zh-mini");
    // a PTUNE_HOME without the asset falls through to the next place
    let empty = tempfile::tempdir().unwrap();
    let o = ptune_in(cwd.path(), Some(empty.path()), &["inspect"]);
    assert_eq!(model_line(&o), "model      assets/models/zh-mini");
    // then the source tree the binary was built from
    let bare = tempfile::tempdir().unwrap();
    let o = ptune_in(bare.path(), None, &["inspect"]);
    assert!(
        model_line(&o).contains(zh_mini().to_str().unwrap()),
        "{}",
        model_line(&o)
    );
}

#[test]
fn a_fine_tuned_run_is_refused_by_export_and_its_best_dir_loads_as_a_model() {
    let data = small_data(40, 20);
    let out = tempfile::tempdir().unwrap();
    let tiny = fixture("tiny-bert");
    let args = vec![
        "train",
        "--method",
        "finetune",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--quiet",
        "--shots",
        "4",
        "--max-len",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--threads",
        "2",
    ];
    let o = ptune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let best = out.path().join("best");
    for f in ["model.safetensors", "config.json", "vocab.txt"] {
        assert!(best.join(f).is_file(), "missing best/{f}");
    }
    // the real refusal: a fine-tuned run changed the backbone, so it is no adapter
    let adapter = out.path().join("x.adapter");
    let o = export(out.path(), &adapter);
    assert_clean_error(
        &o,
        &[
            "only runs with a frozen LM",
            "a finetune run",
            "use its best/ model directory instead",
        ],
    );
    assert!(!adapter.exists());
    // with a linear head (the quick recipe's), the refusal says where the head is
    let with_head = tempfile::tempdir().unwrap();
    let mut args = args.clone();
    let at = args.iter().position(|a| *a == "--out").unwrap();
    args[at + 1] = with_head.path().to_str().unwrap();
    args.extend(["--head", "linear"]);
    let o = ptune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(with_head.path().join("best/head.safetensors").is_file());
    let o = export(with_head.path(), &adapter);
    assert_clean_error(
        &o,
        &["a finetune run", "best/head.safetensors", "--head mlm"],
    );
    assert!(!adapter.exists());
    // ... and that directory is a model: it loads and predicts
    let o = ptune(&[
        "fill-mask",
        "--model",
        best.to_str().unwrap(),
        "--json",
        "很[MASK]",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let preds: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(preds.as_array().unwrap().len(), 1, "one [MASK]");
    let o = ptune(&["inspect", "--model", best.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("model.safetensors"));
}
