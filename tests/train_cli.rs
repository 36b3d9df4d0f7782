//! `ptune train` end to end on small data: determinism, resume after kill -9, divergence,
//! and bad input. Runs go through the binary so each has its own process (burn's CPU
//! backend keeps one global RNG).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn same_seed_same_numbers_and_outputs_written() {
    let data = small_data(200, 40);
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    for (out, seed) in [(&a, "1"), (&b, "1"), (&c, "2")] {
        let o = run_owned(&train_args(
            data.path(),
            out.path(),
            &[
                "--method", "ptune", "--epochs", "2", "--lr", "1e-3", "--seed", seed,
            ],
        ));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (ma, mb, mc) = (metrics(a.path()), metrics(b.path()), metrics(c.path()));
    assert_eq!(ma.len(), 2);
    assert_eq!(ma, mb, "same seed, different numbers");
    assert_ne!(
        ma[1]["loss"], mc[1]["loss"],
        "different seeds gave identical losses"
    );
    for f in [
        "config.toml",
        "summary.json",
        "curve.svg",
        "best/prompt_encoder.safetensors",
        "run.json",
        "checkpoint/LATEST",
    ] {
        assert!(a.path().join(f).is_file(), "missing {f}");
    }
    let svg = fs::read_to_string(a.path().join("curve.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "curve.svg is not a line plot"
    );
    let summary: Value =
        serde_json::from_slice(&fs::read(a.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["trainable_params"].as_u64().unwrap(),
        924160,
        "LSTM prompt encoder size at H=256"
    );
    assert!(ma[0]["valid"]["per_class"].as_array().unwrap().len() == 2);
}

/// Kills a run with SIGKILL as soon as its first epoch checkpoint appears.
fn kill_after_first_checkpoint(args: &[String], out: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args(args)
        .current_dir(repo())
        .spawn()
        .unwrap();
    let latest = out.join("checkpoint/LATEST");
    let start = Instant::now();
    while !latest.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before its first checkpoint"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn resume_after_kill_matches_uninterrupted_run() {
    let data = small_data(400, 200);
    let full = tempfile::tempdir().unwrap();
    let cut = tempfile::tempdir().unwrap();
    let extra = ["--method", "finetune", "--epochs", "3", "--seed", "5"];
    let o = run_owned(&train_args(data.path(), full.path(), &extra));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    kill_after_first_checkpoint(&train_args(data.path(), cut.path(), &extra), cut.path());
    let latest = fs::read_to_string(cut.path().join("checkpoint/LATEST")).unwrap();
    assert!(
        latest.trim() < "epoch-0003",
        "the kill came too late to test anything ({latest})"
    );
    // without --resume the run directory is protected
    let o = run_owned(&train_args(data.path(), cut.path(), &extra));
    assert_clean_error(&o, &["already holds a run", "--resume"]);
    let mut resumed = train_args(data.path(), cut.path(), &extra);
    resumed.push("--resume".into());
    let o = run_owned(&resumed);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        metrics(cut.path()),
        metrics(full.path()),
        "resumed run differs from the uninterrupted one"
    );
    // a different configuration cannot resume this run
    let mut other = resumed.clone();
    other.extend(["--lr".to_string(), "1e-4".to_string()]);
    assert_clean_error(
        &run_owned(&other),
        &["config.toml", "different configuration"],
    );
}

#[test]
fn divergence_stops_and_keeps_the_last_good_checkpoint() {
    let data = small_data(200, 40);
    let out = tempfile::tempdir().unwrap();
    let recipe = out.path().join("explode.toml");
    // epoch 1 trains normally; epoch 2's learning rate is 1e30 times larger
    let text = include_str!("../recipes/seed.toml").replace(
        "schedule = { exponential = 0.98 }",
        "schedule = { exponential = 1e30 }",
    );
    fs::write(&recipe, text).unwrap();
    let run_dir = out.path().join("run");
    let o = run_owned(&train_args(
        data.path(),
        &run_dir,
        &[
            "--method",
            "ptune",
            "--epochs",
            "3",
            "--lr",
            "1e-3",
            "--recipe",
            recipe.to_str().unwrap(),
        ],
    ));
    assert_clean_error(
        &o,
        &["loss became", "epoch 2", "last good checkpoint (epoch 1)"],
    );
    assert_eq!(
        fs::read_to_string(run_dir.join("checkpoint/LATEST"))
            .unwrap()
            .trim(),
        "epoch-0001"
    );
    assert_eq!(metrics(&run_dir).len(), 1);
}

#[test]
fn bad_data_is_reported_with_file_and_line() {
    let cases: [(&[u8], &str); 4] = [
        (b"\xe5\xa5\xbd\t1\nno tab here\n", "train.tsv:2: no tab"),
        (
            "好\t1\n差\t7\n".as_bytes(),
            "train.tsv:2: unknown label \"7\"",
        ),
        ("好\t1\n\t0\n".as_bytes(), "train.tsv:2: empty text"),
        (
            b"good\t1\nbad \xff\xfe\t0\n",
            "train.tsv:2: not valid UTF-8",
        ),
    ];
    for (content, needle) in cases {
        let data = small_data(10, 10);
        fs::write(data.path().join("train.tsv"), content).unwrap();
        let out = tempfile::tempdir().unwrap();
        let run_dir = out.path().join("run");
        let o = run_owned(&train_args(
            data.path(),
            &run_dir,
            &["--method", "zeroshot"],
        ));
        assert_clean_error(&o, &[needle]);
        assert!(!run_dir.exists(), "a failed run left files behind");
    }
}

#[test]
fn bad_templates_and_label_words_are_rejected() {
    let data = small_data(40, 10);
    let cases: [(&[&str], &str); 6] = [
        (&["--template", "[P]*4 {text}"], "no [MASK]"),
        (&["--template", "[P]*4 [MASK]"], "no text slot"),
        (&["--template", "[P]*99 [MASK] {text}"], "[unused100]"),
        (
            &["--template", "[FOO] [MASK] {text}"],
            "unknown token [FOO]",
        ),
        (&["--labels", "0=不,1=😀"], "tokenizes to [UNK]"),
        (&["--labels", "0=不好,1=很"], "is 2 tokens"),
    ];
    for (extra, needle) in cases {
        let out = tempfile::tempdir().unwrap();
        let mut args = train_args(
            data.path(),
            out.path(),
            &["--method", "ptune", "--epochs", "1"],
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        assert_clean_error(&run_owned(&args), &[needle]);
    }
}

#[test]
fn manual_template_with_two_token_label_words_runs() {
    // PET-style template with consecutive [MASK]s and two-character label words
    let data = small_data(40, 20);
    let out = tempfile::tempdir().unwrap();
    let o = run_owned(&train_args(
        data.path(),
        out.path(),
        &[
            "--method",
            "zeroshot",
            "--template",
            "[MASK]*2满意。{text}",
            "--labels",
            "0=不太,1=非常",
        ],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = metrics(out.path());
    assert_eq!(m[0]["valid"]["n"], 20);
}

#[test]
fn prompt_encoder_kinds_and_tune_lm_train() {
    let data = small_data(200, 20);
    for (extra, params) in [
        (
            vec!["--prompt-encoder", "mlp"],
            8 * 256 + 2 * (256 * 256 + 256),
        ),
        (vec!["--prompt-encoder", "embedding"], 8 * 256),
        (
            vec!["--prompt-encoder", "embedding", "--tune-lm"],
            8 * 256 + 8_787_336,
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut args = train_args(
            data.path(),
            out.path(),
            &["--method", "ptune", "--epochs", "1", "--lr", "1e-3"],
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = run_owned(&args);
        assert!(
            o.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let summary: Value =
            serde_json::from_slice(&fs::read(out.path().join("summary.json")).unwrap()).unwrap();
        assert_eq!(
            summary["trainable_params"].as_u64().unwrap(),
            params as u64,
            "{extra:?}"
        );
    }
}

#[test]
fn compare_prints_one_table_and_writes_a_plot() {
    let data = small_data(200, 30);
    let out = tempfile::tempdir().unwrap();
    let o = ptune(&[
        "compare",
        "--data",
        data.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--quiet",
        "--shots",
        "8",
        "--epochs",
        "1",
        "--passes",
        "1",
        "--threads",
        "2",
        "--max-len",
        "64",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for method in ["zeroshot", "finetune", "ptune", "ptune-v2"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("| {method} |"))),
            "no row for {method}:\n{stdout}"
        );
    }
    for f in [
        "compare.md",
        "compare.json",
        "compare.svg",
        "ptune-seed42/metrics.jsonl",
    ] {
        assert!(out.path().join(f).is_file(), "missing {f}");
    }
    // the output directory now holds results: a second compare is refused without --force
    // (it used to delete them silently), before anything is computed
    let again = [
        "compare",
        "--data",
        data.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--quiet",
        "--methods",
        "zeroshot",
        "--max-len",
        "64",
    ];
    assert_clean_error(&ptune(&again), &["is not empty", "--force"]);
    assert!(out.path().join("ptune-seed42/metrics.jsonl").is_file());
    let mut forced = again.to_vec();
    forced.push("--force");
    let o = ptune(&forced);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.path().join("zeroshot-seed42/metrics.jsonl").is_file());
    assert!(
        !out.path().join("ptune-seed42").exists(),
        "--force replaces the directory"
    );
}

/// Regression: `--resume` after the data (or the backbone) changed on disk resumed silently.
#[test]
fn resume_refuses_changed_data_or_backbone() {
    let data = small_data(200, 40);
    let out = tempfile::tempdir().unwrap();
    let extra = ["--method", "finetune", "--epochs", "1", "--max-steps", "2"];
    let o = run_owned(&train_args(data.path(), out.path(), &extra));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let valid = data.path().join("valid.tsv");
    let text = fs::read_to_string(&valid).unwrap();
    fs::write(&valid, format!("！{text}")).unwrap();
    let mut resumed = train_args(data.path(), out.path(), &extra);
    resumed.extend(["--resume".to_string()]);
    assert_clean_error(
        &run_owned(&resumed),
        &["run.json", "the valid split changed"],
    );
    fs::write(&valid, text).unwrap();
    // the same files again: no complaint (the run had finished, so nothing is left to do)
    let o = run_owned(&resumed);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("changed"), "{err}");
}

/// Regression: `export` used the default backbone, not the run's, and its fingerprint.
#[test]
fn export_takes_the_runs_backbone_and_refuses_another() {
    let data = small_data(40, 20);
    let out = tempfile::tempdir().unwrap();
    let tiny = fixture("tiny-bert");
    let o = run_owned(&train_args(
        data.path(),
        out.path(),
        &["--method", "zeroshot", "--model", tiny.to_str().unwrap()],
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = out.path().to_str().unwrap();
    let adapter = out.path().join("a.adapter");
    let o = ptune(&["export", "--run", run, "--out", adapter.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // predicting with the shipped backbone is refused by the adapter's fingerprint
    let o = ptune(&["predict", "--adapter", adapter.to_str().unwrap(), "很好"]);
    assert_clean_error(&o, &["another backbone"]);
    // exporting against another backbone is refused by the run's record
    let zh = zh_mini();
    let o = ptune(&[
        "export",
        "--run",
        run,
        "--model",
        zh.to_str().unwrap(),
        "--out",
        adapter.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["run.json", "pass that backbone as --model"]);
}

/// The small TSV data rewritten as CSV (custom column names, string labels, quoting) and as
/// JSONL (default field names, other string labels).
fn as_csv_and_jsonl(tsv: &Path) -> (tempfile::TempDir, tempfile::TempDir) {
    let (csv_dir, jsonl_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for split in ["train", "valid", "test"] {
        let text = fs::read_to_string(tsv.join(format!("{split}.tsv"))).unwrap();
        let rows: Vec<(&str, &str)> = text.lines().map(|l| l.rsplit_once('\t').unwrap()).collect();
        let mut w = csv::Writer::from_path(csv_dir.path().join(format!("{split}.csv"))).unwrap();
        w.write_record(["stars", "review"]).unwrap();
        for (t, l) in &rows {
            w.write_record([if *l == "1" { "good" } else { "bad" }, t])
                .unwrap();
        }
        w.flush().unwrap();
        let jsonl: String = rows
            .iter()
            .map(|(t, l)| {
                let label = if *l == "1" { "Positive" } else { "Negative" };
                format!(
                    "{}\n",
                    serde_json::json!({ "id": 1, "sentence": t, "label": label })
                )
            })
            .collect();
        fs::write(jsonl_dir.path().join(format!("{split}.jsonl")), jsonl).unwrap();
    }
    (csv_dir, jsonl_dir)
}

#[test]
fn csv_and_jsonl_splits_with_string_labels_train_like_tsv() {
    let data = small_data(60, 24);
    let (csv_dir, jsonl_dir) = as_csv_and_jsonl(data.path());
    let out = tempfile::tempdir().unwrap();
    let run = |dir: &Path, name: &str, extra: &[&str]| {
        let run_dir = out.path().join(name);
        let mut args = vec!["--method", "ptune", "--epochs", "1", "--no-dropout"];
        args.extend_from_slice(extra);
        let o = run_owned(&train_args(dir, &run_dir, &args));
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        metrics(&run_dir)
    };
    let tsv = run(data.path(), "tsv", &["--labels", "0=不,1=很"]);
    let csv = run(
        csv_dir.path(),
        "csv",
        &[
            "--labels",
            "bad=不,good=很",
            "--text-field",
            "review",
            "--label-field",
            "stars",
        ],
    );
    let jsonl = run(
        jsonl_dir.path(),
        "jsonl",
        &["--labels", "Negative=不,Positive=很"],
    );
    // Same rows, same class order: the same numbers (per-class counts are keyed by class name).
    let strip = |m: &[Value]| -> Vec<(Value, Value, Value)> {
        m.iter()
            .map(|r| {
                (
                    r["loss"].clone(),
                    r["valid"]["accuracy"].clone(),
                    r["test"]["accuracy"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&csv), strip(&tsv));
    assert_eq!(strip(&jsonl), strip(&tsv));
}

#[test]
fn bad_csv_and_jsonl_data_is_reported_with_file_and_line() {
    let data = small_data(60, 10);
    let (csv_dir, jsonl_dir) = as_csv_and_jsonl(data.path());
    let csv_flags = [
        "--labels",
        "bad=不,good=很",
        "--text-field",
        "review",
        "--label-field",
        "stars",
    ];
    let jsonl_flags = ["--labels", "Negative=不,Positive=很"];
    let cases: Vec<(&Path, &str, &str, &[&str], &str)> = vec![
        (
            csv_dir.path(),
            "train.csv",
            "stars,review\ngood,好\nbad,\"差\n很差\",extra\n",
            &csv_flags[..],
            "train.csv:3: 3 fields, but the header has 2",
        ),
        (
            csv_dir.path(),
            "valid.csv",
            "stars,review\nneutral,一般\n",
            &csv_flags[..],
            "valid.csv:2: unknown label \"neutral\"",
        ),
        (
            csv_dir.path(),
            "train.csv",
            "score,review\n1,好\n",
            &csv_flags[..],
            "train.csv:1: no column \"stars\" in the header (columns: score, review)",
        ),
        (
            jsonl_dir.path(),
            "train.jsonl",
            "{\"sentence\": \"好\", \"label\": \"Positive\"}\n[\"差\"]\n",
            &jsonl_flags[..],
            "train.jsonl:2: not a JSON object",
        ),
        (
            jsonl_dir.path(),
            "test.jsonl",
            "{\"sentence\": \"好\", \"label\": \"Positive\"}\n{\"label\": \"Negative\"}\n",
            &jsonl_flags[..],
            "test.jsonl:2: no field \"sentence\" or \"text\" (fields: label); set --text-field",
        ),
        (
            jsonl_dir.path(),
            "test.jsonl",
            "{\"sentence\": \"好\"}\n",
            &jsonl_flags[..],
            "test.jsonl:1: no label (field \"label\")",
        ),
        (
            jsonl_dir.path(),
            "valid.jsonl",
            "{\"sentence\": \"好\", \"label\": \"Neutral\"}\n",
            &jsonl_flags[..],
            "valid.jsonl:1: unknown label \"Neutral\"",
        ),
    ];
    for (dir, file, content, flags, needle) in cases {
        let path = dir.join(file);
        let saved = fs::read(&path).unwrap();
        fs::write(&path, content).unwrap();
        let out = tempfile::tempdir().unwrap();
        let run_dir = out.path().join("run");
        let mut extra = vec!["--method", "zeroshot"];
        extra.extend_from_slice(flags);
        let o = run_owned(&train_args(dir, &run_dir, &extra));
        assert_clean_error(&o, &[needle]);
        assert!(!run_dir.exists(), "a failed run left files behind");
        fs::write(&path, saved).unwrap();
    }
    // Two files for one split, and none.
    fs::write(jsonl_dir.path().join("train.tsv"), "好\t1\n").unwrap();
    let o = run_owned(&train_args(
        jsonl_dir.path(),
        &out_dir(),
        &["--method", "zeroshot"],
    ));
    assert_clean_error(
        &o,
        &["2 files for the train split (train.tsv, train.jsonl): keep one"],
    );
    fs::remove_file(jsonl_dir.path().join("train.tsv")).unwrap();
    fs::remove_file(jsonl_dir.path().join("valid.jsonl")).unwrap();
    let o = run_owned(&train_args(
        jsonl_dir.path(),
        &out_dir(),
        &["--method", "zeroshot"],
    ));
    assert_clean_error(
        &o,
        &["no valid split (valid.tsv, valid.csv or valid.jsonl)"],
    );
}

fn out_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ptune-never-written-{}", std::process::id()))
}

#[test]
fn test_split_is_evaluated_once_with_the_best_on_valid_weights() {
    // lr high enough that valid accuracy does not rise every epoch: the best epoch comes
    // before the last, so the test score must come from the weights kept in best/
    let data = small_data(200, 60);
    let (once, every) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = [
        "--method", "ptune", "--epochs", "4", "--lr", "3e-2", "--seed", "3",
    ];
    let o = run_owned(&train_args(data.path(), once.path(), &extra));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut all = train_args(data.path(), every.path(), &extra);
    all.push("--test-every-epoch".into());
    let o = run_owned(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (m1, m2) = (metrics(once.path()), metrics(every.path()));
    assert_eq!(m1.len(), 4);
    let summary = |d: &Path| -> Value {
        serde_json::from_slice(&fs::read(d.join("summary.json")).unwrap()).unwrap()
    };
    let (s1, s2) = (summary(once.path()), summary(every.path()));
    let best = s1["best_epoch"].as_u64().unwrap() as usize;
    assert!(
        best < 4,
        "the best epoch is the last: this data tests nothing"
    );
    for (i, (a, b)) in m1.iter().zip(&m2).enumerate() {
        assert_eq!(a["valid"], b["valid"], "epoch {}: valid differs", i + 1);
        assert!(
            !b["test"].is_null(),
            "--test-every-epoch skipped epoch {}",
            i + 1
        );
        if i + 1 == best {
            assert_eq!(a["test"], b["test"], "test at best valid differs");
        } else {
            assert!(
                a["test"].is_null(),
                "epoch {} was tested without need",
                i + 1
            );
        }
    }
    assert_eq!(s1["test_at_best_valid"], s2["test_at_best_valid"]);
    assert!(s1["best_test"].is_null() && !s2["best_test"].is_null());
}

/// `predict --format tsv` of `input` with `adapter` (on the shipped backbone): each row's
/// label and class probabilities.
fn predict_tsv(adapter: &Path, input: &Path) -> Vec<(String, Vec<f64>)> {
    let o = ptune(&[
        "predict",
        "--adapter",
        adapter.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--format",
        "tsv",
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                f[1..f.len() - 1]
                    .iter()
                    .map(|x| x.parse().unwrap())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn calibrated_zero_shot_divides_by_the_prior_and_its_adapter_does_the_same() {
    let data = small_data(40, 20);
    let dir = tempfile::tempdir().unwrap();
    // the few-shot set is the first half of train (20 texts), so the prior can be recomputed
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut a = train_args(
            data.path(),
            &out,
            &[
                &["--method", "zeroshot", "--template", "[MASK]满意。{text}"],
                extra,
            ]
            .concat(),
        );
        let at = a.iter().position(|x| x == "--shots").unwrap();
        a.splice(at..at + 2, ["--frac".to_string(), "0.5".to_string()]);
        let o = run_owned(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let adapter = dir.path().join(format!("{name}.adapter"));
        let o = export(&out, &adapter);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (out, adapter)
    };
    let (_, raw) = run("raw", &[]);
    let (cal_run, cal) = run("cal", &["--calibrate", "fewshot"]);
    let calibration: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cal_run.join("calibration.json")).unwrap())
            .unwrap();
    assert_eq!(calibration["source"], "fewshot");
    assert_eq!(calibration["texts"], 20);
    let f64s = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (prior, bias) = (f64s(&calibration["prior"]), f64s(&calibration["bias"]));
    // the prior is the mean of the uncalibrated probabilities over the few-shot texts
    let train20 = dir.path().join("train20.txt");
    let train = std::fs::read_to_string(data.path().join("train.tsv")).unwrap();
    std::fs::write(
        &train20,
        train.lines().take(20).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let on_train = predict_tsv(&raw, &train20);
    assert_eq!(on_train.len(), 20);
    for c in 0..2 {
        let mean = on_train.iter().map(|(_, p)| p[c]).sum::<f64>() / 20.0;
        assert!(
            (mean - prior[c]).abs() < 1e-4,
            "class {c}: {mean} vs {}",
            prior[c]
        );
        assert!((bias[c] + prior[c].ln()).abs() < 1e-5);
    }
    // the adapter carries the bias; its probabilities are the raw ones divided by the prior
    let read = ptune::adapter::Adapter::read(&cal).unwrap();
    assert_eq!(read.info.format, ptune::adapter::FORMAT_V2);
    let stored: Vec<f64> = read
        .class_bias
        .as_ref()
        .unwrap()
        .iter()
        .map(|&b| b as f64)
        .collect();
    assert!(
        stored.iter().zip(&bias).all(|(a, b)| (a - b).abs() < 1e-6),
        "{stored:?}"
    );
    let valid = data.path().join("valid.tsv");
    let (p_raw, p_cal) = (predict_tsv(&raw, &valid), predict_tsv(&cal, &valid));
    let mut moved = 0.0f64;
    for ((_, r), (_, c)) in p_raw.iter().zip(&p_cal) {
        let w: Vec<f64> = r.iter().zip(&prior).map(|(r, p)| r / p).collect();
        let z: f64 = w.iter().sum();
        for k in 0..2 {
            assert!((c[k] - w[k] / z).abs() < 1e-4, "{c:?} vs {w:?}");
            moved = moved.max((c[k] - r[k]).abs());
        }
    }
    assert!(moved > 1e-3, "calibration changed nothing ({moved})");
    // predict with the calibrated adapter reproduces the run's own valid accuracy
    let gold: Vec<String> = std::fs::read_to_string(&valid)
        .unwrap()
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap().to_string())
        .collect();
    let right = p_cal
        .iter()
        .zip(&gold)
        .filter(|((l, _), g)| l == *g)
        .count();
    let acc = metrics(&cal_run)[0]["valid"]["accuracy"].as_f64().unwrap();
    assert!(
        (right as f64 / 20.0 - acc).abs() < 1e-9,
        "{right}/20 vs {acc}"
    );
    // content-free calibration: three texts, its own prior
    let (cf_run, _) = run("cf", &["--calibrate", "content-free"]);
    let cf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cf_run.join("calibration.json")).unwrap())
            .unwrap();
    assert_eq!(
        (cf["source"].as_str(), cf["texts"].as_u64()),
        (Some("content-free"), Some(3))
    );
    assert_ne!(f64s(&cf["prior"]), prior);
    // bad input: a trained method, a bias for another number of classes
    let o = run_owned(&train_args(
        data.path(),
        &dir.path().join("bad"),
        &["--method", "ptune", "--calibrate", "fewshot"],
    ));
    assert_clean_error(&o, &["--calibrate applies to --method zeroshot only"]);
    let mut three = read;
    three.class_bias = Some(vec![0.0; 3]);
    let bad = dir.path().join("three.adapter");
    three
        .write(&bad, ptune::model::tensors::StorageDType::F32)
        .unwrap();
    let o = ptune(&["predict", "--adapter", bad.to_str().unwrap(), "很好"]);
    assert_clean_error(&o, &["class_bias has 3 classes, the labels 2"]);
}

/// `--len-multiple` (what GPU backends do by default) reaches training and evaluation: with
/// dropout off, a run whose batches are padded to multiples of 48 positions has the numbers
/// of the run at each batch's own length; with dropout on, the masks cover the wider rows,
/// so the numbers are the padded run's own (the padding is really computed).
#[test]
fn len_multiple_pads_batches_and_changes_nothing_but_rounding() {
    let data = small_data(120, 30);
    let run = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let o = run_owned(&train_args(data.path(), out.path(), extra));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        metrics(out.path())
    };
    for method in ["ptune-v2", "finetune", "ptune"] {
        let base = ["--method", method, "--epochs", "2", "--no-dropout"];
        let own = run(&base);
        let padded = run(&[&base[..], &["--len-multiple", "48"]].concat());
        assert_eq!(own.len(), 2);
        for (a, b) in own.iter().zip(&padded) {
            let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "{method}: {x} vs {y}"
            );
            assert_eq!(a["valid"]["accuracy"], b["valid"]["accuracy"], "{method}");
        }
    }
    let with_dropout = |extra: &[&str]| {
        run(&[&["--method", "finetune", "--epochs", "1"][..], extra].concat())[0]["loss"].clone()
    };
    assert_ne!(with_dropout(&[]), with_dropout(&["--len-multiple", "48"]));
    let o = ptune(&["train", "--len-multiple", "0"]);
    assert_eq!(o.status.code(), Some(2));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.lines().next().unwrap().contains("--len-multiple"),
        "{said}"
    );
}
