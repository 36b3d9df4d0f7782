//! `ptune pretrain` end to end on a small model and corpus: an interrupted run resumed ends
//! with the same weights as an uninterrupted one; the written model directory is accepted by
//! the other commands; bad input is a one-line error.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// A corpus of the first `n` training reviews, one per line, a blank line every 10 lines.
fn corpus(dir: &Path, n: usize) -> std::path::PathBuf {
    let text = fs::read_to_string(reviews().join("train.tsv")).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().take(n).enumerate() {
        out.push_str(line.split('\t').next().unwrap());
        out.push('\n');
        if i % 10 == 9 {
            out.push('\n');
        }
    }
    let p = dir.join("corpus.txt");
    fs::write(&p, out).unwrap();
    p
}

/// The arguments of a small run; `extra` flags replace the defaults of the same name
/// (`--layers` with an empty value removes one), other flags are appended.
fn pretrain_args(corpus: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut pairs: Vec<(String, String)> = [
        ("--corpus", corpus.to_str().unwrap()),
        ("--out", out.to_str().unwrap()),
        ("--layers", "1"),
        ("--hidden", "32"),
        ("--heads", "2"),
        ("--max-len", "32"),
        ("--batch-size", "8"),
        ("--steps", "6"),
        ("--warmup", "2"),
        ("--eval-every", "3"),
        ("--save-every", "3"),
        ("--eval-sequences", "16"),
        ("--threads", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut flags = vec!["--wwm".to_string(), "--quiet".to_string()];
    let mut i = 0;
    while i < extra.len() {
        let k = extra[i].to_string();
        if k == "--resume" {
            flags.push(k);
            i += 1;
            continue;
        }
        let v = extra[i + 1].to_string();
        pairs.retain(|(pk, _)| *pk != k);
        if !v.is_empty() {
            pairs.push((k, v));
        }
        i += 2;
    }
    let mut args = vec!["pretrain".to_string()];
    for (k, v) in pairs {
        args.push(k);
        args.push(v);
    }
    args.extend(flags);
    args
}

fn run(args: &[String]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = ptune(&a);
    assert!(
        out.status.success(),
        "ptune {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn heldout(out: &Path) -> Vec<(u64, f64)> {
    fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["heldout_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let c = corpus(tmp.path(), 300);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    run(&pretrain_args(&c, &a, &[]));
    // a zero time budget stops after the first step (checkpoint and model written) ...
    let first = run(&pretrain_args(&c, &b, &["--max-minutes", "0"]));
    assert!(String::from_utf8_lossy(&first.stdout).contains("time limit"));
    assert!(b.join("model/model.safetensors").is_file());
    // ... and --resume continues the same schedule to the end
    run(&pretrain_args(&c, &b, &["--resume"]));
    let wa = fs::read(a.join("model/model.safetensors")).unwrap();
    let wb = fs::read(b.join("model/model.safetensors")).unwrap();
    assert!(
        wa == wb,
        "resumed weights differ from the uninterrupted run's"
    );
    let (ha, hb) = (heldout(&a), heldout(&b));
    assert_eq!(ha.last(), hb.last());
    assert_eq!(ha.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 3, 6]);
    assert!(ha.iter().all(|r| r.1.is_finite()));
    assert!(ha[2].1 < ha[0].1, "held-out loss did not fall: {ha:?}");
    // the model directory is a Hugging Face one the other commands accept
    let m = a.join("model");
    for f in ["config.json", "vocab.txt", "tokenizer_config.json"] {
        assert!(m.join(f).is_file(), "{f}");
    }
    let out = ptune(&[
        "fill-mask",
        "--model",
        m.to_str().unwrap(),
        "这个[MASK]很好",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a second run into the same directory is refused unless it resumes
    let again = ptune(
        &pretrain_args(&c, &a, &[])
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );
    assert_clean_error(&again, &["already holds a pretraining run"]);
}

#[test]
fn continued_pretraining_writes_sharded_half_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let c = corpus(tmp.path(), 200);
    let init = tmp.path().join("init");
    run(&pretrain_args(&c, &init, &["--steps", "1"]));
    let out = tmp.path().join("cont");
    let init_model = init.join("model");
    // --init alone gives the architecture
    run(&pretrain_args(
        &c,
        &out,
        &[
            "--init",
            init_model.to_str().unwrap(),
            "--layers",
            "",
            "--hidden",
            "",
            "--heads",
            "",
            "--steps",
            "2",
            "--dtype",
            "f16",
            "--shard-mib",
            "1",
        ],
    ));
    let m = out.join("model");
    assert!(m.join("model.safetensors.index.json").is_file());
    let out = ptune(&["inspect", "--model", m.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("float16"), "{text}");
}

#[test]
fn bad_pretraining_input_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let empty = tmp.path().join("empty.txt");
    fs::write(&empty, "\n \n").unwrap();
    let e = ptune(
        &pretrain_args(&empty, &out, &[])
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );
    assert_clean_error(&e, &["empty.txt", "no text"]);
    let bad = tmp.path().join("bad.txt");
    fs::write(&bad, b"fine\n\xc3\x28\n").unwrap();
    let e = ptune(
        &pretrain_args(&bad, &out, &[])
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );
    assert_clean_error(&e, &["bad.txt:2", "UTF-8"]);
    let c = corpus(tmp.path(), 100);
    let not_bert = tmp.path().join("notbert");
    fs::create_dir_all(&not_bert).unwrap();
    fs::write(not_bert.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let e = ptune(&[
        "pretrain",
        "--corpus",
        c.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--init",
        not_bert.to_str().unwrap(),
    ]);
    assert_clean_error(&e, &["--init", "gpt2"]);
    let e = ptune(
        &pretrain_args(&c, &out, &["--hidden", "30", "--heads", "4"])
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );
    assert_clean_error(&e, &["multiple"]);
    let e = ptune(
        &pretrain_args(&c, &out, &["--max-len", "9999"])
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
    );
    assert_clean_error(&e, &["max length"]);
}
