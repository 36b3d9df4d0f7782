//! Adapters (`ptune export`), `ptune predict` and `ptune serve` end to end.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;
use serde_json::{Value, json};

fn small_data() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 200), ("valid", 120), ("test", 40)] {
        let text = fs::read_to_string(reviews().join(format!("{split}.tsv"))).unwrap();
        let head: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
        fs::write(dir.path().join(format!("{split}.tsv")), head).unwrap();
    }
    dir
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A short P-tuning run on `data` into `out`, with `extra` flags.
fn train_ptune(data: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--method",
        "ptune",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--shots",
        "8",
        "--epochs",
        "2",
        "--passes",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--max-len",
        "64",
    ];
    args.extend(extra);
    ok(ptune(&args));
}

/// The fraction of `valid` that `predict` through `adapter` labels right.
fn predict_accuracy(adapter: &Path, valid: &Path) -> f64 {
    let gold: Vec<String> = fs::read_to_string(valid)
        .unwrap()
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap().to_string())
        .collect();
    let preds = predict_jsonl(adapter, valid);
    assert_eq!(preds.len(), gold.len());
    let correct = preds
        .iter()
        .zip(&gold)
        .filter(|(p, g)| p["label"] == **g)
        .count();
    correct as f64 / gold.len() as f64
}

/// A run's best valid accuracy, from its `summary.json`.
fn best_valid(run: &Path) -> f64 {
    let summary: Value =
        serde_json::from_slice(&fs::read(run.join("summary.json")).unwrap()).unwrap();
    summary["best_valid"].as_f64().unwrap()
}

/// A short P-tuning run and a zero-shot manual-template run, each exported as an adapter.
fn make_adapters(data: &Path, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let d = data.to_str().unwrap();
    let (pt, zs) = (dir.join("pt"), dir.join("zs"));
    train_ptune(data, &pt, &[]);
    ok(ptune(&[
        "train",
        "--method",
        "zeroshot",
        "--data",
        d,
        "--out",
        zs.to_str().unwrap(),
        "--quiet",
        "--max-len",
        "64",
        "--template",
        "[MASK]满意。{text}",
        "--labels",
        "0=不,1=很",
    ]));
    let (a, b) = (dir.join("pt.adapter"), dir.join("zs.adapter"));
    ok(export(&pt, &a));
    ok(export(&zs, &b));
    (a, b)
}

fn predict_jsonl(adapter: &Path, input: &Path) -> Vec<Value> {
    let out = ok(ptune(&[
        "predict",
        "--adapter",
        adapter.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--format",
        "jsonl",
        "--batch-size",
        "64",
    ]));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The two adapters every test below reads, made once per test process: a short P-tuning run
/// (`pt`) and a zero-shot manual-template run (`zs`), each exported, with the data they ran on.
struct Trained {
    data: tempfile::TempDir,
    /// The run directories `pt/` and `zs/` and the adapters.
    dir: tempfile::TempDir,
    pt: PathBuf,
    zs: PathBuf,
}

static TRAINED: OnceLock<Trained> = OnceLock::new();

/// Removes the shared runs and adapters when the test process exits (a static is never
/// dropped).
extern "C" fn remove_trained() {
    if let Some(t) = TRAINED.get() {
        let _ = fs::remove_dir_all(t.dir.path());
        let _ = fs::remove_dir_all(t.data.path());
    }
}

fn trained() -> &'static Trained {
    TRAINED.get_or_init(|| {
        let data = small_data();
        let dir = tempfile::tempdir().unwrap();
        let (pt, zs) = make_adapters(data.path(), dir.path());
        // SAFETY: registers a plain function without arguments to run at exit
        assert_eq!(unsafe { libc::atexit(remove_trained) }, 0);
        Trained { data, dir, pt, zs }
    })
}

impl Trained {
    fn valid(&self) -> PathBuf {
        self.data.path().join("valid.tsv")
    }

    /// The texts of valid.tsv, in order.
    fn valid_texts(&self) -> Vec<String> {
        fs::read_to_string(self.valid())
            .unwrap()
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    }

    /// valid.tsv's texts as unlabelled .csv (quoted by the writer as needed) in a column
    /// named `review`, after an `id` column.
    fn unlabelled_csv(&self, dir: &Path) -> PathBuf {
        let csv_path = dir.join("unlabelled.csv");
        let mut w = csv::Writer::from_path(&csv_path).unwrap();
        w.write_record(["id", "review"]).unwrap();
        for (i, t) in self.valid_texts().iter().enumerate() {
            w.write_record([i.to_string().as_str(), t.as_str()])
                .unwrap();
        }
        w.flush().unwrap();
        csv_path
    }

    /// `ptune serve` with both adapters (`sent` = pt, `manual` = zs) and small limits.
    fn serve(&self) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptune"));
        cmd.args([
            "serve",
            "--adapter",
            &format!("sent={}", self.pt.display()),
            "--adapter",
            &format!("manual={}", self.zs.display()),
            "--addr",
            "127.0.0.1:0",
            "--max-texts",
            "16",
            "--max-text-chars",
            "300",
            "--max-body-bytes",
            "20000",
        ]);
        Server::spawn(cmd)
    }
}

/// An HTTP client that returns 4xx/5xx responses instead of failing on them.
fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
}

/// `POST /v1/classify` with `body`: the status and the JSON answer.
fn classify(agent: &ureq::Agent, server: &Server, body: &str) -> (u16, Value) {
    let mut r = agent
        .post(&format!("http://{}/v1/classify", server.addr))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_json::<Value>().unwrap(),
    )
}

#[test]
fn ptune_adapter_holds_little_more_than_its_prompt_vectors() {
    assert!(
        fs::metadata(&trained().pt).unwrap().len() < 12_000,
        "8 × 256 floats plus a small header"
    );
}

#[test]
fn adapters_predict_like_their_runs() {
    // accuracy of `predict` on valid.tsv equals the best epoch's valid accuracy (same batches:
    // length-sorted, 64 rows)
    let t = trained();
    for (adapter, run) in [(&t.pt, "pt"), (&t.zs, "zs")] {
        assert_eq!(
            predict_accuracy(adapter, &t.valid()),
            best_valid(&t.dir.path().join(run)),
            "{run}: adapter ≠ run"
        );
    }
}

#[test]
fn ptune_with_a_linear_head_exports_an_adapter_that_predicts_like_its_run() {
    // the quick recipe's P-tuning: prompt vectors and a linear head on the [MASK] state; and
    // the head read through the MLM head's transform, started from the label words
    let t = trained();
    for (head, on_transform) in [("linear", false), ("verbalizer", true)] {
        let run = tempfile::tempdir().unwrap();
        let extra = ["--head", head, "--head-lr", "3e-3"];
        train_ptune(t.data.path(), run.path(), &extra);
        let adapter = run.path().join("head.adapter");
        ok(export(run.path(), &adapter));
        let read = ptune::adapter::Adapter::read(&adapter).unwrap();
        assert!(
            read.info.head
                && !read.info.head_on_cls
                && read.info.head_on_transform == on_transform
                && read.info.prefix_len == 0,
            "{head}: {:?}",
            read.info
        );
        assert_eq!(read.vectors.len(), 8 * 256, "the 8 prompt vectors");
        assert_eq!(
            predict_accuracy(&adapter, &t.valid()),
            best_valid(run.path()),
            "{head}: adapter ≠ run"
        );
    }
}

#[test]
fn unlabelled_csv_and_jsonl_input_predict_like_tsv() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let csv_path = t.unlabelled_csv(tmp.path());
    let jsonl_path = tmp.path().join("unlabelled.jsonl");
    let jsonl: String = t
        .valid_texts()
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "sentence": t })))
        .collect();
    fs::write(&jsonl_path, jsonl).unwrap();
    let from_tsv = predict_jsonl(&t.pt, &t.valid());
    let out = ok(ptune(&[
        "predict",
        "--adapter",
        t.pt.to_str().unwrap(),
        "--input",
        csv_path.to_str().unwrap(),
        "--text-field",
        "review",
        "--format",
        "jsonl",
        "--batch-size",
        "64",
    ]));
    let from_csv: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(from_csv, from_tsv, "csv input");
    assert_eq!(predict_jsonl(&t.pt, &jsonl_path), from_tsv, "jsonl input");
}

#[test]
fn csv_input_without_a_text_column_names_the_flag() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let csv_path = t.unlabelled_csv(tmp.path());
    let o = ptune(&[
        "predict",
        "--adapter",
        t.pt.to_str().unwrap(),
        "--input",
        csv_path.to_str().unwrap(),
    ]);
    assert_clean_error(
        &o,
        &[
            "unlabelled.csv:1: no column \"sentence\" or \"text\"",
            "--text-field",
        ],
    );
}

#[test]
fn stdin_input_and_tsv_output_give_the_labels_of_a_file_and_jsonl() {
    let t = trained();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args([
            "predict",
            "--adapter",
            t.pt.to_str().unwrap(),
            "--input",
            "-",
            "--batch-size",
            "64",
        ])
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&fs::read(t.valid()).unwrap()).unwrap();
    }
    let tsv = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let mut lines = tsv.lines();
    assert_eq!(lines.next(), Some("label\tp_0\tp_1\ttext"));
    let tsv_labels: Vec<&str> = lines.map(|l| l.split('\t').next().unwrap()).collect();
    let jsonl_labels: Vec<String> = predict_jsonl(&t.pt, &t.valid())
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tsv_labels, jsonl_labels);
}

#[test]
fn server_answers_like_predict_for_two_tasks_on_one_backbone() {
    let t = trained();
    let texts: Vec<String> = fs::read_to_string(t.valid())
        .unwrap()
        .lines()
        .take(12)
        .map(|l| l.rsplit_once('\t').unwrap().0.to_string())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("texts.txt");
    fs::write(&input, texts.join("\n") + "\n").unwrap();
    let server = t.serve();
    let agent = agent();
    for (task, adapter) in [("sent", &t.pt), ("manual", &t.zs)] {
        let want = predict_jsonl(adapter, &input);
        let (status, got) = classify(
            &agent,
            &server,
            &json!({ "task": task, "texts": texts }).to_string(),
        );
        assert_eq!(status, 200, "{got}");
        let results = got["results"].as_array().unwrap();
        assert_eq!(results.len(), want.len());
        for (g, w) in results.iter().zip(&want) {
            assert_eq!(g["label"], w["label"]);
            for c in ["0", "1"] {
                let (a, b) = (
                    g["probs"][c].as_f64().unwrap(),
                    w["probs"][c].as_f64().unwrap(),
                );
                assert!((a - b).abs() < 1e-5, "{task}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn server_lists_its_tasks() {
    let server = trained().serve();
    let mut tasks = agent()
        .get(&format!("http://{}/v1/tasks", server.addr))
        .call()
        .unwrap();
    let tasks: Value = tasks.body_mut().read_json().unwrap();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(tasks["tasks"][1]["prompts"], 0);
}

#[test]
fn server_answers_bad_requests_with_json_errors_and_keeps_serving() {
    let server = trained().serve();
    let agent = agent();
    let long = "好".repeat(301);
    let many: Vec<&str> = vec!["好"; 17];
    let huge = format!(
        "{{\"task\": \"sent\", \"texts\": [\"{}\"]}}",
        "a".repeat(30_000)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "{\"task\": \"sent\", \"texts\": [\"x\"".to_string(),
            400,
            "JSON",
        ),
        (
            json!({ "task": "nope", "texts": ["x"] }).to_string(),
            404,
            "unknown task",
        ),
        (
            json!({ "task": "sent", "texts": [] }).to_string(),
            400,
            "empty",
        ),
        (
            json!({ "task": "sent", "texts": ["  "] }).to_string(),
            400,
            "empty",
        ),
        (
            json!({ "task": "sent", "texts": many }).to_string(),
            413,
            "limit",
        ),
        (
            json!({ "task": "sent", "texts": [long] }).to_string(),
            413,
            "characters",
        ),
        (json!({ "task": "sent" }).to_string(), 422, "texts"),
        (
            json!({ "task": "sent", "texts": [1, 2] }).to_string(),
            422,
            "string",
        ),
        (huge, 413, ""),
    ];
    for (body, status, needle) in cases {
        let (s, v) = classify(&agent, &server, &body);
        assert_eq!(s, status, "{body:.80}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
    let (s, _) = classify(
        &agent,
        &server,
        &json!({ "task": "manual", "texts": ["还行"] }).to_string(),
    );
    assert_eq!(s, 200, "the server stopped serving after bad requests");
}

#[test]
fn server_answers_unknown_paths_and_methods_with_json_404_and_405() {
    let server = trained().serve();
    let agent = agent();
    let base = format!("http://{}", server.addr);
    let mut r = agent.get(&format!("{base}/nowhere")).call().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.body_mut().read_json::<Value>().unwrap()["error"].is_string());
    // regression: 405s had an empty body; every 4xx is a JSON error, with Allow
    let mut r = agent.get(&format!("{base}/v1/classify")).call().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "POST");
    assert!(r.body_mut().read_json::<Value>().unwrap()["error"].is_string());
    let mut r = agent.post(&format!("{base}/healthz")).send("{}").unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.body_mut().read_json::<Value>().unwrap()["error"].is_string());
}

#[test]
fn server_refuses_an_over_limit_content_length_before_the_body() {
    // regression: an over-limit Content-Length waited for the whole body; now 413 at once
    use std::io::{Read, Write};
    let server = trained().serve();
    let mut tcp = std::net::TcpStream::connect(&server.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    tcp.write_all(
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nContent-Length: 99999999999\r\n\r\n{",
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = tcp
        .read(&mut buf)
        .expect("an answer before the body is sent");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("\"error\""), "{head}");
}

#[test]
fn server_exits_cleanly_on_sigterm() {
    let mut server = trained().serve();
    let (s, _) = classify(
        &agent(),
        &server,
        &json!({ "task": "manual", "texts": ["还行"] }).to_string(),
    );
    assert_eq!(s, 200);
    server.sigterm();
    let status = server
        .wait_exit(std::time::Duration::from_secs(30))
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "server exit status {status}");
}

#[test]
fn adapter_for_another_backbone_is_refused() {
    let data = small_data();
    let tmp = tempfile::tempdir().unwrap();
    let zs = tmp.path().join("zs");
    ok(ptune(&[
        "train",
        "--method",
        "zeroshot",
        "--data",
        data.path().to_str().unwrap(),
        "--out",
        zs.to_str().unwrap(),
        "--quiet",
    ]));
    let adapter = tmp.path().join("zs.adapter");
    ok(export(&zs, &adapter));
    // same architecture and vocabulary, one weight changed: a different backbone
    let other = copy_dir(&zh_mini());
    let p = other.path().join("model.safetensors");
    let mut map = ptune::model::tensors::read_safetensors(&p).unwrap();
    map.get_mut("cls.predictions.bias").unwrap().data[0] += 0.5;
    fs::write(
        &p,
        ptune::model::tensors::safetensors_bytes(
            map.iter()
                .map(|(k, t)| (k.clone(), &t.shape[..], &t.data[..])),
            None,
        ),
    )
    .unwrap();
    let out = ptune(&[
        "predict",
        "--model",
        other.path().to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "好",
    ]);
    assert_clean_error(&out, &["zs.adapter", "another backbone"]);
    // a run directory that does not exist has no config.toml (the refusal of a real
    // fine-tuned run is tested in defaults_and_runs.rs)
    let out = ptune(&[
        "export",
        "--run",
        "/nonexistent/run",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["config.toml"]);
    let out = ptune(&["predict", "--adapter", p.to_str().unwrap(), "好"]);
    assert_clean_error(&out, &["model.safetensors", "not an adapter"]);
}

#[test]
fn adapter_size_at_bert_base_width() {
    use ptune::adapter::{Adapter, AdapterInfo, FORMAT};
    let adapter = Adapter {
        info: AdapterInfo {
            format: FORMAT.into(),
            template: "[P]*4 [MASK] [P]*4 {text}".into(),
            labels: "0=不,1=很".into(),
            max_len: 128,
            hidden_size: 768,
            n_prompts: 8,
            backbone: "f".repeat(64),
            source: "runs/ptune-seed42 (ptune, best valid epoch)".into(),
            prefix_len: 0,
            num_layers: 0,
            num_heads: 0,
            head: false,
            head_on_cls: false,
            head_on_transform: false,
        },
        vectors: (0..8 * 768).map(|i| i as f32 * 0.001).collect(),
        prefix: Vec::new(),
        head: None,
        class_bias: None,
    };
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("a.adapter");
    adapter
        .write(&p, ptune::model::tensors::StorageDType::F32)
        .unwrap();
    let size = fs::metadata(&p).unwrap().len();
    assert!(size <= 30_000, "{size} bytes");
    assert_eq!(Adapter::read(&p).unwrap(), adapter);
}
