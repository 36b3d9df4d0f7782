//! `ptune train --method ptune-v2` end to end on small data: exact resume, export to a
//! deep-prompt adapter (f32 and f16), predict with it, and the bad inputs of deep prompts.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn v2_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--method",
        "ptune-v2",
        "--recipe",
        "quick",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--shots",
        "8",
        "--max-len",
        "48",
        "--batch-size",
        "8",
        "--passes",
        "1",
        "--epochs",
        "2",
        "--prefix-len",
        "4",
        "--threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn deep_prompt_run_resumes_exactly_and_exports_an_adapter_that_predicts() {
    let data = small_data(200, 30);
    let full = tempfile::tempdir().unwrap();
    // reparameterised prefixes, a linear head and [P] tokens: every trainable part at once
    let extra = [
        "--reparam",
        "mlp",
        "--reparam-hidden",
        "32",
        // the recipe starts plain prefixes from a text; an MLP starts random
        "--prefix-init",
        "random",
        "--head",
        "linear",
        "--template",
        "[P]*2 [MASK]{text}",
        "--prompt-encoder",
        "embedding",
    ];
    let o = run_owned(&v2_args(data.path(), full.path(), &extra));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value =
        serde_json::from_str(&fs::read_to_string(full.path().join("summary.json")).unwrap())
            .unwrap();
    // 2 × 256 prompt vectors + MLP (4 × 256, 256 × 32 + 32, 32 × 2048 + 2048) + head 2 × 256 + 2
    let expected = 2 * 256 + 4 * 256 + 256 * 32 + 32 + 32 * 2048 + 2048 + 2 * 256 + 2;
    assert_eq!(summary["trainable_params"], expected);
    for f in [
        "best/deep_prompt.safetensors",
        "best/head.safetensors",
        "best/prompt_encoder.safetensors",
    ] {
        assert!(full.path().join(f).is_file(), "missing {f}");
    }

    // killed (SIGKILL) right after epoch 1's checkpoint, then resumed: the same numbers
    let cut = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args(v2_args(data.path(), cut.path(), &extra))
        .current_dir(repo())
        .spawn()
        .unwrap();
    let latest = cut.path().join("checkpoint/LATEST");
    let start = std::time::Instant::now();
    while !latest.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before its first checkpoint"
        );
        assert!(start.elapsed().as_secs() < 300, "no checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at = fs::read_to_string(&latest).unwrap();
    assert!(at.trim() < "epoch-0002", "the kill came too late ({at})");
    let mut resumed = v2_args(data.path(), cut.path(), &extra);
    resumed.push("--resume".into());
    let o = run_owned(&resumed);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        metrics(cut.path()),
        metrics(full.path()),
        "resumed ptune-v2 run differs"
    );

    // export (f32 and f16) and predict
    let tmp = tempfile::tempdir().unwrap();
    let mut labels = Vec::new();
    for dtype in ["f32", "f16"] {
        let adapter = tmp.path().join(format!("v2-{dtype}.adapter"));
        let o = ptune(&[
            "export",
            "--run",
            full.path().to_str().unwrap(),
            "--out",
            adapter.to_str().unwrap(),
            "--dtype",
            dtype,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let said = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            said.contains("deep prompts 4 × 4 layers × 2 × 256"),
            "{said}"
        );
        assert!(said.contains("linear head"), "{said}");
        let size = fs::metadata(&adapter).unwrap().len() as usize;
        // prefix 4 × 2048 + 2 prompt vectors × 256 + head 514 floats, plus the header
        let floats = 4 * 2048 + 2 * 256 + 514;
        let width = if dtype == "f32" { 4 } else { 2 };
        assert!(
            size >= floats * width && size < floats * width + 4096,
            "{dtype}: {size} bytes"
        );
        let o = ptune(&[
            "predict",
            "--adapter",
            adapter.to_str().unwrap(),
            "--format",
            "jsonl",
            "物流很快，包装完好",
            "质量太差，再也不买了",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rows: Vec<Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        labels.push(rows);
    }
    // f16 storage moves the probabilities by little
    for (a, b) in labels[0].iter().zip(&labels[1]) {
        for c in ["0", "1"] {
            let (x, y) = (
                a["probs"][c].as_f64().unwrap(),
                b["probs"][c].as_f64().unwrap(),
            );
            assert!((x - y).abs() < 1e-2, "f16 vs f32: {x} vs {y}");
        }
    }
}

#[test]
fn deep_prompt_bad_input_is_one_line() {
    let data = small_data(100, 10);
    let out = tempfile::tempdir().unwrap();
    let with_prefix = |n: &str| {
        let mut a = v2_args(data.path(), out.path(), &[]);
        let i = a.iter().position(|x| x == "--prefix-len").unwrap();
        a[i + 1] = n.into();
        a
    };
    let o = run_owned(&with_prefix("0"));
    assert_clean_error(&o, &["prefix_len must be at least 1"]);
    let o = run_owned(&with_prefix("500"));
    assert_clean_error(
        &o,
        &["prefix_len 500 + max_len 48", "max_position_embeddings 512"],
    );
    let mut a = v2_args(data.path(), out.path(), &[]);
    a[2] = "finetune".into();
    assert_clean_error(
        &run_owned(&a),
        &["--prefix-len applies to --method ptune-v2"],
    );
    // prefixes from a text: the text must be there, have tokens, and need plain prefixes
    // (clap's own form: the error line, then a pointer to --help)
    for (value, needle) in [
        ("text:", "needs a text after the colon"),
        ("words", "unknown prefix init \"words\""),
    ] {
        let o = run_owned(&v2_args(data.path(), out.path(), &["--prefix-init", value]));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(
            first.contains("--prefix-init") && first.contains(needle),
            "{stderr}"
        );
    }
    let o = run_owned(&v2_args(
        data.path(),
        out.path(),
        &["--prefix-init", "text:\u{200b}"],
    ));
    assert_clean_error(&o, &["prefix_init text", "has no tokens"]);
    let o = run_owned(&v2_args(
        data.path(),
        out.path(),
        &["--prefix-init", "text:这是评论", "--reparam", "mlp"],
    ));
    assert_clean_error(&o, &["prefix_init = text needs reparam = none"]);
    // the quick recipe's text start with an MLP asked for on the command line: told what to do
    let o = run_owned(&v2_args(data.path(), out.path(), &["--reparam", "mlp"]));
    assert_clean_error(&o, &["needs reparam = none", "prefix_init = random"]);
}

/// `--prefix-init text:…` starts the prefixes at the frozen LM's own keys and values of that
/// text (unit-tested in `model::prefix_init`): such a run is recorded in config.toml, trains,
/// and differs from the random start; the same seed repeats it exactly.
#[test]
fn deep_prompts_start_from_a_text() {
    let data = small_data(200, 30);
    let run = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let o = run_owned(&v2_args(data.path(), out.path(), extra));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let config = fs::read_to_string(out.path().join("config.toml")).unwrap();
        let losses: Vec<f64> = metrics(out.path())
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect();
        (config, losses)
    };
    let text = [
        "--prefix-init",
        "text:这是一条顾客评论。",
        "--head",
        "linear",
    ];
    let (config, from_text) = run(&text);
    assert!(
        config.contains("prefix_init") && config.contains("这是一条顾客评论。"),
        "{config}"
    );
    let (_, again) = run(&text);
    assert_eq!(from_text, again, "same seed, same numbers");
    let (_, random) = run(&["--prefix-init", "random", "--head", "linear"]);
    assert_ne!(from_text, random, "the text start must change the run");
    assert!(from_text.iter().all(|l| l.is_finite()));
}

/// `--head cls` reads the class at `[CLS]`: it trains its own run (not the `[MASK]` head's
/// numbers), its adapter says so, and `predict` with that adapter reproduces the run's own
/// test accuracy at its best valid epoch.
#[test]
fn cls_head_trains_exports_and_predicts_the_runs_test_accuracy() {
    let data = small_data(200, 30);
    let run = |head: &str| {
        let out = tempfile::tempdir().unwrap();
        let extra = ["--head", head, "--prefix-init", "random"];
        let o = run_owned(&v2_args(data.path(), out.path(), &extra));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (cls, mask) = (run("cls"), run("linear"));
    assert_ne!(
        metrics(cls.path()),
        metrics(mask.path()),
        "[CLS] vs [MASK] head"
    );
    let adapter = cls.path().join("cls.adapter");
    let o = export(cls.path(), &adapter);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = ptune::adapter::Adapter::read(&adapter).unwrap();
    assert!(read.info.head && read.info.head_on_cls, "{:?}", read.info);
    // the run's test split, scored by predict through the adapter
    let test = fs::read_to_string(data.path().join("test.tsv")).unwrap();
    let (texts, labels): (Vec<&str>, Vec<&str>) =
        test.lines().map(|l| l.split_once('\t').unwrap()).unzip();
    let mut args = vec![
        "predict",
        "--adapter",
        adapter.to_str().unwrap(),
        "--format",
        "jsonl",
    ];
    args.extend(&texts);
    let o = ptune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    let right = said
        .lines()
        .zip(&labels)
        .filter(|(l, want)| {
            let row: Value = serde_json::from_str(l).unwrap();
            row["label"].as_str() == Some(**want)
        })
        .count();
    let summary: Value =
        serde_json::from_str(&fs::read_to_string(cls.path().join("summary.json")).unwrap())
            .unwrap();
    let acc = summary["test_at_best_valid"].as_f64().unwrap();
    assert!(
        (right as f64 / labels.len() as f64 - acc).abs() < 1e-9,
        "predict {right}/{} vs the run's test {acc}",
        labels.len()
    );
}

/// A valid deep-prompt adapter for zh-mini, then variants of it that must be refused.
#[test]
fn deep_prompt_adapters_are_checked_against_the_backbone() {
    use ptune::adapter::{Adapter, AdapterInfo, FORMAT_V2};
    use ptune::model::tensors::StorageDType;
    let backbone = {
        let dir = ptune::model::ModelDir::open(&zh_mini()).unwrap();
        let lm = dir.load::<ptune::Cpu>(&Default::default()).unwrap();
        ptune::adapter::fingerprint(&dir, &lm).unwrap()
    };
    let good = Adapter {
        info: AdapterInfo {
            format: FORMAT_V2.into(),
            template: "[MASK]{text}".into(),
            labels: "0=不,1=很".into(),
            max_len: 64,
            hidden_size: 256,
            n_prompts: 0,
            backbone,
            source: "test".into(),
            prefix_len: 3,
            num_layers: 4,
            num_heads: 4,
            head: false,
            head_on_cls: false,
            head_on_transform: false,
        },
        vectors: Vec::new(),
        prefix: (0..3 * 2048)
            .map(|i| ((i % 17) as f32 - 8.0) * 0.05)
            .collect(),
        head: None,
        class_bias: None,
    };
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, a: &Adapter| {
        let p = tmp.path().join(name);
        a.write(&p, StorageDType::F32).unwrap();
        p
    };
    let predict = |p: &Path| ptune(&["predict", "--adapter", p.to_str().unwrap(), "不错"]);
    let o = predict(&write("good.adapter", &good));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut layers = good.clone();
    layers.info.num_layers = 3;
    layers.prefix.truncate(3 * 3 * 2 * 256);
    assert_clean_error(
        &predict(&write("layers.adapter", &layers)),
        &["deep prompts for 3 layers × 4 heads", "backbone has 4 × 4"],
    );
    let mut shape = good.clone();
    shape.info.prefix_len = 2; // the tensor still has 3 rows
    let p = tmp.path().join("shape.adapter");
    {
        // write the 3-row tensor under metadata that says 2 rows
        let mut meta = std::collections::HashMap::new();
        meta.insert(
            "ptune".to_string(),
            serde_json::to_string(&shape.info).unwrap(),
        );
        let s = [3usize, 2048];
        let bytes = ptune::model::tensors::safetensors_bytes(
            [("prefix".to_string(), &s[..], &good.prefix[..])],
            Some(meta),
        );
        fs::write(&p, bytes).unwrap();
    }
    assert_clean_error(
        &predict(&p),
        &["prefix has shape [3, 2048]", "metadata says [2, 2048]"],
    );
    let mut nan = good.clone();
    nan.prefix[7] = f32::NAN;
    assert_clean_error(
        &predict(&write("nan.adapter", &nan)),
        &["prefix", "non-finite"],
    );
    let mut other = good.clone();
    other.info.backbone = "0".repeat(64);
    assert_clean_error(
        &predict(&write("other.adapter", &other)),
        &["another backbone"],
    );
    let mut long = good.clone();
    long.info.max_len = 511; // + 3 prefix positions > 512
    assert_clean_error(
        &predict(&write("long.adapter", &long)),
        &["max_len 511", "less the prefix of 3"],
    );
}

/// `--head-lr`: the head's own step at the same rate as the rest is the joint step (the same
/// numbers), another rate changes the run, and the option is refused without a linear head.
#[test]
fn head_learning_rate_is_its_own_and_checked() {
    let data = small_data(100, 30);
    // the quick recipe without its head lr, so that no --head-lr is the joint step
    let recipe_dir = tempfile::tempdir().unwrap();
    let recipe = recipe_dir.path().join("joint.toml");
    let quick = fs::read_to_string(repo().join("recipes/quick.toml")).unwrap();
    let joint_recipe: Vec<&str> = quick
        .lines()
        .filter(|l| !l.starts_with("head_lr"))
        .collect();
    assert!(
        joint_recipe.len() < quick.lines().count(),
        "quick.toml has no head_lr"
    );
    fs::write(&recipe, joint_recipe.join("\n")).unwrap();
    let run = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let mut args = v2_args(data.path(), out.path(), &["--lr", "1e-2"]);
        let at = args.iter().position(|a| a == "--recipe").unwrap();
        args[at + 1] = recipe.to_str().unwrap().to_string();
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = run_owned(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        metrics(out.path())
    };
    let joint = run(&[]);
    assert_eq!(
        run(&["--head-lr", "1e-2"]),
        joint,
        "same rate, different numbers"
    );
    let slow = run(&["--head-lr", "1e-6"]);
    assert_eq!(slow.len(), joint.len());
    assert_ne!(
        slow[1]["loss"], joint[1]["loss"],
        "--head-lr changed nothing"
    );
    // the quick recipe's head lr is its trained head's: the label words drop it
    let out = tempfile::tempdir().unwrap();
    let o = run_owned(&v2_args(data.path(), out.path(), &["--head", "mlm"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config = fs::read_to_string(out.path().join("config.toml")).unwrap();
    assert!(
        config.contains("head = \"mlm\"") && !config.contains("head_lr"),
        "{config}"
    );
    let out = tempfile::tempdir().unwrap();
    let o = run_owned(&v2_args(
        data.path(),
        out.path(),
        &["--head", "mlm", "--head-lr", "1e-3"],
    ));
    assert_clean_error(&o, &["--head-lr applies to a trained head only"]);
    let o = run_owned(&v2_args(data.path(), out.path(), &["--head-lr", "0"]));
    assert_clean_error(&o, &["--head-lr must be a positive number"]);
}
