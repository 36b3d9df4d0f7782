//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod props;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn zh_mini() -> PathBuf {
    repo().join("assets/models/zh-mini")
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

pub fn reviews() -> PathBuf {
    repo().join("assets/data/reviews")
}

/// Runs the built `ptune` binary.
pub fn ptune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run ptune")
}

/// `ptune export --run RUN --out ADAPTER`.
pub fn export(run: &Path, adapter: &Path) -> Output {
    ptune(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        adapter.to_str().unwrap(),
    ])
}

/// Asserts the command failed cleanly: exit code 2, one line on stderr that contains each
/// of `needles`, and no panic.
pub fn assert_clean_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
    stderr
}

/// Copies a model directory into a fresh temporary directory.
pub fn copy_dir(src: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
        }
    }
    tmp
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A zero-shot adapter on zh-mini (manual template `[MASK]满意。{text}`, labels 0=不,1=很, no
/// prompt vectors), made in-process in a second: no training run.
pub fn zero_shot_adapter(dir: &Path, max_len: usize) -> PathBuf {
    use ptune::adapter::{Adapter, AdapterInfo, FORMAT, fingerprint};
    static BACKBONE: std::sync::OnceLock<(usize, String)> = std::sync::OnceLock::new();
    let (hidden_size, backbone) = BACKBONE.get_or_init(|| {
        let model = ptune::model::ModelDir::open(&zh_mini()).unwrap();
        let lm = model.load::<ptune::Cpu>(&Default::default()).unwrap();
        (model.config.hidden_size, fingerprint(&model, &lm).unwrap())
    });
    let adapter = Adapter {
        info: AdapterInfo {
            format: FORMAT.into(),
            template: "[MASK]满意。{text}".into(),
            labels: "0=不,1=很".into(),
            max_len,
            hidden_size: *hidden_size,
            n_prompts: 0,
            backbone: backbone.clone(),
            source: "test (zero-shot)".into(),
            prefix_len: 0,
            num_layers: 0,
            num_heads: 0,
            head: false,
            head_on_cls: false,
            head_on_transform: false,
        },
        vectors: Vec::new(),
        prefix: Vec::new(),
        head: None,
        class_bias: None,
    };
    let p = dir.join("zs.adapter");
    adapter
        .write(&p, ptune::model::tensors::StorageDType::F32)
        .unwrap();
    p
}

/// A `ptune serve` process on 127.0.0.1 (port 0), its stderr collected; killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Server {
    /// `ptune serve --adapter zs=ADAPTER --addr 127.0.0.1:0 EXTRA...`
    pub fn start(adapter: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptune"));
        cmd.args(["serve", "--adapter"])
            .arg(format!("zs={}", adapter.display()))
            .args(["--addr", "127.0.0.1:0"])
            .args(extra);
        Server::spawn(cmd)
    }

    /// Starts `cmd` (a `ptune serve`) and waits for its "listening on" line.
    pub fn spawn(mut cmd: Command) -> Server {
        use std::io::BufRead;
        let mut child = cmd
            .current_dir(repo())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ptune serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let Some(url) = first.split_whitespace().find(|w| w.starts_with("http://")) else {
            let _ = child.wait();
            panic!(
                "no listening line: {first:?}; stderr: {}",
                log.lock().unwrap()
            );
        };
        Server {
            addr: url.trim_start_matches("http://").to_string(),
            child,
            log,
            _stdout: stdout,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `within` for `needle` in the server's stderr.
    pub fn wait_for_log(&self, needle: &str, within: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + within;
        while std::time::Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.log().contains(needle)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw TCP connection to the server, with a 5 s read timeout.
pub fn connect(addr: &str) -> std::net::TcpStream {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    tcp
}

/// Reads one HTTP response (head and Content-Length bytes of body); `None` if the connection
/// closed (or was reset) before a whole head arrived.
pub fn read_response(tcp: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if got.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&got[..end + 4 + len]).into_owned());
            }
        }
        match tcp.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a response: {e}"),
        }
    }
}

/// Whether the server closes the connection: reads until EOF or reset (`true`) or until the
/// read timeout passes (`false`); any bytes read are returned too.
pub fn closed_by_server(tcp: &mut std::net::TcpStream) -> (bool, String) {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (true, String::from_utf8_lossy(&got).into_owned());
            }
            Err(_) => return (false, String::from_utf8_lossy(&got).into_owned()),
        }
    }
}

/// Writes `bytes` one at a time, `every` apart, from a thread (stops at the first error).
pub fn trickle(
    tcp: &std::net::TcpStream,
    bytes: &'static [u8],
    every: std::time::Duration,
) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    let mut w = tcp.try_clone().unwrap();
    std::thread::spawn(move || {
        for b in bytes {
            if w.write_all(std::slice::from_ref(b)).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    })
}

/// train/valid/test.tsv with the first rows of the shipped splits.
pub fn small_data(n_train: usize, n_eval: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (split, n) in [("train", n_train), ("valid", n_eval), ("test", n_eval)] {
        let text = std::fs::read_to_string(reviews().join(format!("{split}.tsv"))).unwrap();
        let head: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.path().join(format!("{split}.tsv")), head).unwrap();
    }
    dir
}

/// A run's metrics.jsonl without the timing fields, which differ between runs.
pub fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in ["train_seconds", "examples_per_s", "eval_seconds"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

/// Runs the built `ptune` binary with owned arguments.
pub fn run_owned(args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    ptune(&a)
}

/// The tensors under `prefix`, with it stripped from their names.
pub fn with_prefix(
    map: &std::collections::BTreeMap<String, ptune::model::tensors::RawTensor>,
    prefix: &str,
) -> std::collections::BTreeMap<String, ptune::model::tensors::RawTensor> {
    map.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// A JSON array of non-negative integers.
pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `ptune train` on small data (8 shots, max length 64, batch 8, one pass, 2 threads), quiet,
/// plus `extra`.
pub fn train_args<'a>(data: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--shots",
        "8",
        "--max-len",
        "64",
        "--batch-size",
        "8",
        "--passes",
        "1",
        "--threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}
