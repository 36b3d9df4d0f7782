//! `ptune serve` against slow, idle, too many and misbehaving clients, and its shutdown; raw
//! TCP on 127.0.0.1. Each test starts its own server on a zero-shot adapter (no training).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn body_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").expect("head and body").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn slow_request_head_is_cut_off_but_idle_connection_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &zero_shot_adapter(tmp.path(), 64),
        &["--header-timeout-ms", "400", "--idle-timeout-ms", "60000"],
    );
    // half a head, then nothing: closed after the header timeout
    let mut half = connect(&server.addr);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    // a head trickled a byte every 50 ms (never finishing within 400 ms): closed as well
    let mut slow = connect(&server.addr);
    let writer = trickle(
        &slow,
        b"GET /healthz HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\r\n",
        MS(50),
    );
    // a connection that sends nothing is idle, not slow: the header timeout does not apply
    let mut idle = connect(&server.addr);
    let t0 = Instant::now();
    let (closed, _) = closed_by_server(&mut half);
    let took = t0.elapsed();
    assert!(closed, "a half-sent head held the connection");
    assert!(took >= MS(300) && took < MS(3000), "closed after {took:?}");
    let (closed, got) = closed_by_server(&mut slow);
    assert!(
        closed && got.is_empty(),
        "a trickled head was served: {got}"
    );
    assert!(t0.elapsed() < MS(3000));
    writer.join().unwrap();

    idle.set_read_timeout(Some(MS(300))).unwrap();
    let (closed, _) = closed_by_server(&mut idle);
    assert!(
        !closed,
        "an idle connection was closed by the header timeout"
    );
    assert!(t0.elapsed() > MS(600));
    idle.set_read_timeout(Some(MS(5000))).unwrap();
    idle.write_all(HEALTHZ).unwrap();
    let r = read_response(&mut idle).expect("an answer on the idle connection");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &zero_shot_adapter(tmp.path(), 64),
        &["--idle-timeout-ms", "400", "--header-timeout-ms", "60000"],
    );
    let mut tcp = connect(&server.addr);
    tcp.write_all(HEALTHZ).unwrap();
    let r = read_response(&mut tcp).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // kept alive: a second request on the same connection is answered
    tcp.write_all(HEALTHZ).unwrap();
    assert!(read_response(&mut tcp).unwrap().starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    let (closed, rest) = closed_by_server(&mut tcp);
    let took = t0.elapsed();
    assert!(
        closed && rest.is_empty(),
        "idle connection kept open: {rest}"
    );
    assert!(took >= MS(300) && took < MS(3000), "closed after {took:?}");
    // a connection that never sends a request is closed after the idle timeout too
    let mut never = connect(&server.addr);
    let t0 = Instant::now();
    assert!(closed_by_server(&mut never).0);
    assert!(t0.elapsed() < MS(3000));
}

#[test]
fn slow_request_body_gets_408() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &zero_shot_adapter(tmp.path(), 64),
        &["--body-timeout-ms", "400"],
    );
    let head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nContent-Length: 100\r\n\r\n";
    // part of the body, then nothing
    let mut stalled = connect(&server.addr);
    stalled.write_all(head).unwrap();
    stalled.write_all(b"{\"task\": \"zs\"").unwrap();
    // the body trickled a byte every 50 ms: the deadline is for the whole body, not per chunk
    let mut trickled = connect(&server.addr);
    trickled.write_all(head).unwrap();
    let writer = trickle(&trickled, b"{\"task\": \"zs\", \"texts\": [\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]}", MS(50));
    let t0 = Instant::now();
    for tcp in [&mut stalled, &mut trickled] {
        let r = read_response(&mut *tcp).expect("a 408 answer");
        assert!(r.starts_with("HTTP/1.1 408"), "{r}");
        let msg = body_of(&r)["error"].as_str().unwrap().to_string();
        assert!(msg.contains("within 400 ms"), "{msg}");
        assert!(r.to_lowercase().contains("connection: close"), "{r}");
        assert!(closed_by_server(tcp).0, "connection left open after 408");
    }
    let took = t0.elapsed();
    assert!(took >= MS(300) && took < MS(3000), "408s after {took:?}");
    writer.join().unwrap();
    // the server still answers
    let mut ok = connect(&server.addr);
    ok.write_all(HEALTHZ).unwrap();
    assert!(read_response(&mut ok).unwrap().starts_with("HTTP/1.1 200"));
}

#[test]
fn connections_over_the_cap_are_closed_and_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &zero_shot_adapter(tmp.path(), 64),
        &["--max-connections", "2"],
    );
    let mut open: Vec<_> = (0..2)
        .map(|_| {
            let mut tcp = connect(&server.addr);
            tcp.write_all(HEALTHZ).unwrap();
            assert!(read_response(&mut tcp).unwrap().starts_with("HTTP/1.1 200"));
            tcp
        })
        .collect();
    // the third is closed at once, without an answer
    let mut third = connect(&server.addr);
    let _ = third.write_all(HEALTHZ);
    let t0 = Instant::now();
    let (closed, got) = closed_by_server(&mut third);
    assert!(closed && got.is_empty(), "over the cap and served: {got}");
    assert!(t0.elapsed() < MS(2000));
    assert!(
        server.wait_for_log("refused 1 connection", MS(2000)),
        "{}",
        server.log()
    );
    // the default log format: text, one line per request
    assert!(
        server.log().lines().any(|l| l.contains("request")
            && l.contains("path=/healthz")
            && l.contains("status=200")),
        "{}",
        server.log()
    );
    // the open ones are unaffected
    for tcp in &mut open {
        tcp.write_all(HEALTHZ).unwrap();
        assert!(read_response(tcp).unwrap().starts_with("HTTP/1.1 200"));
    }
    // once one closes there is room again
    drop(open.pop());
    let end = Instant::now() + MS(3000);
    loop {
        let mut tcp = connect(&server.addr);
        let _ = tcp.write_all(HEALTHZ);
        if let Some(r) = read_response(&mut tcp) {
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            break;
        }
        assert!(Instant::now() < end, "no room after a connection closed");
        std::thread::sleep(MS(50));
    }
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    // fields 14 and 15 of stat(5); `after_name` starts at field 3
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn out_of_file_descriptors_is_logged_backed_off_and_survived() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = zero_shot_adapter(tmp.path(), 64);
    // a low descriptor limit: the server runs out while accepting
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 40 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_ptune"))
        .args(["serve", "--adapter"])
        .arg(format!("zs={}", adapter.display()))
        .args(["--addr", "127.0.0.1:0", "--max-connections", "1000"]);
    let server = Server::spawn(cmd);
    let held: Vec<_> = (0..60).map(|_| connect(&server.addr)).collect();
    assert!(
        server.wait_for_log("accept failed", MS(5000)),
        "no accept failure logged: {}",
        server.log()
    );
    assert!(
        server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
    // backing off, not spinning on the failing accept: well under a core
    let (t0, c0) = (Instant::now(), cpu_ticks(server.pid()));
    std::thread::sleep(MS(1000));
    let ticks = cpu_ticks(server.pid()) - c0;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = ticks as f64 / hz / t0.elapsed().as_secs_f64();
    assert!(
        cpu < 0.3,
        "{:.0}% of a core while out of descriptors",
        cpu * 100.0
    );
    // and it serves again once descriptors are free
    drop(held);
    let end = Instant::now() + MS(5000);
    loop {
        if let Ok(mut tcp) = std::net::TcpStream::connect(&server.addr) {
            tcp.set_read_timeout(Some(MS(2000))).unwrap();
            let _ = tcp.write_all(HEALTHZ);
            if let Some(r) = read_response(&mut tcp) {
                assert!(r.starts_with("HTTP/1.1 200"), "{r}");
                break;
            }
        }
        assert!(
            Instant::now() < end,
            "not serving after descriptors were freed: {}",
            server.log()
        );
        std::thread::sleep(MS(100));
    }
}

#[test]
fn shutdown_finishes_requests_in_flight_and_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &zero_shot_adapter(tmp.path(), 64),
        &[
            "--shutdown-grace-ms",
            "1500",
            "--header-timeout-ms",
            "60000",
            "--body-timeout-ms",
            "60000",
            "--idle-timeout-ms",
            "60000",
            // a request waits 800 ms for batch-mates: it is in flight when SIGTERM comes
            "--max-wait-ms",
            "800",
        ],
    );
    // slow clients that would hold the server forever without a grace period
    let mut half_head = connect(&server.addr);
    half_head
        .write_all(b"POST /v1/classify HTTP/1.1\r\nHost:")
        .unwrap();
    let mut half_body = connect(&server.addr);
    half_body
        .write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nContent-Length: 100\r\n\r\n{\"task\"")
        .unwrap();
    let mut idle = connect(&server.addr);
    idle.write_all(HEALTHZ).unwrap();
    assert!(
        read_response(&mut idle)
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    // a request in flight
    let addr = server.addr.clone();
    let in_flight = std::thread::spawn(move || {
        let mut tcp = connect(&addr);
        let body = json!({ "task": "zs", "texts": ["很好", "不好"] }).to_string();
        write!(
            tcp,
            "POST /v1/classify HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        read_response(&mut tcp)
    });
    std::thread::sleep(MS(250));
    let t0 = Instant::now();
    server.sigterm();
    // it stops accepting at once
    std::thread::sleep(MS(300));
    assert!(
        std::net::TcpStream::connect(&server.addr).is_err(),
        "still accepting after SIGTERM"
    );
    // the request in flight is answered
    let r = in_flight
        .join()
        .unwrap()
        .expect("the request in flight was dropped");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body_of(&r)["results"].as_array().unwrap().len(), 2);
    // the idle connection is closed at once; the slow ones at the end of the grace period
    assert!(closed_by_server(&mut idle).0);
    let status = server
        .wait_exit(MS(5000))
        .expect("no exit within 5 s of SIGTERM");
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}: {}", server.log());
    assert!(
        took >= MS(1200) && took < MS(4000),
        "exited {took:?} after SIGTERM (grace 1500 ms)"
    );
    assert!(closed_by_server(&mut half_head).0);
    assert!(closed_by_server(&mut half_body).0);
    assert!(
        server.log().contains("after the shutdown grace period"),
        "{}",
        server.log()
    );
}

#[test]
fn truncated_and_tokenless_texts() {
    let tmp = tempfile::tempdir().unwrap();
    // [CLS] [MASK] 满 意 。 [SEP]: 6 fixed tokens, room for 10 of text
    let adapter = zero_shot_adapter(tmp.path(), 16);
    let server = Server::start(&adapter, &[]);
    let long = "很".repeat(11);
    let post = |body: String| {
        let mut tcp = connect(&server.addr);
        write!(
            tcp,
            "POST /v1/classify HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let r = read_response(&mut tcp).unwrap();
        let status: u16 = r[9..12].parse().unwrap();
        (status, body_of(&r))
    };
    let (s, v) = post(json!({ "task": "zs", "texts": ["好", "很".repeat(10), long] }).to_string());
    assert_eq!(s, 200, "{v}");
    let flags: Vec<bool> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["truncated"].as_bool().unwrap())
        .collect();
    assert_eq!(flags, [false, false, true]);
    // nothing but characters the tokenizer drops (a control character, a combining accent)
    for bad in ["\u{1}", "\u{301}", "\u{1}\u{301}\u{7f}"] {
        let (s, v) = post(json!({ "task": "zs", "texts": ["好", bad] }).to_string());
        assert_eq!(s, 400, "{bad:?}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("texts[1]") && msg.contains("no tokens"),
            "{msg}"
        );
    }

    // predict: the same flag in JSONL, and the same refusal
    let a = adapter.to_str().unwrap();
    let out = ptune(&[
        "predict",
        "--adapter",
        a,
        "--format",
        "jsonl",
        "好",
        long.as_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flags: Vec<bool> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["truncated"]
                .as_bool()
                .unwrap()
        })
        .collect();
    assert_eq!(flags, [false, true]);
    let out = ptune(&["predict", "--adapter", a, "好", "\u{1}\u{301}"]);
    assert_clean_error(&out, &["text argument 2", "no tokens"]);
    let input = tmp.path().join("texts.txt");
    std::fs::write(&input, "好\n\u{1}\n").unwrap();
    let out = ptune(&[
        "predict",
        "--adapter",
        a,
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["texts.txt:2", "no tokens"]);
}

/// Sends one request on a fresh connection; returns the whole response.
fn send(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> String {
    let mut tcp = connect(addr);
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_response(&mut tcp).unwrap()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
}

/// The value of the sample `name{...}` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let ok = series.starts_with(&format!("{name}{{")) || series == name;
        (ok && labels.iter().all(|x| series.contains(x))).then(|| value.parse().unwrap())
    })
}

#[test]
fn metrics_request_ids_and_request_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &zero_shot_adapter(tmp.path(), 64),
        &["--log-format", "json"],
    );
    let two = json!({ "task": "zs", "texts": ["很好", "不好"] }).to_string();
    let one = json!({ "task": "zs", "texts": ["还行"] }).to_string();
    let r = send(
        &server.addr,
        "POST",
        "/v1/classify",
        "x-request-id: abc-123\r\n",
        &two,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        header(&r, "x-request-id"),
        Some("abc-123"),
        "incoming id not echoed"
    );
    let r1 = send(&server.addr, "POST", "/v1/classify", "", &one);
    let r2 = send(&server.addr, "GET", "/healthz", "", "");
    let (id1, id2) = (
        header(&r1, "x-request-id").unwrap(),
        header(&r2, "x-request-id").unwrap(),
    );
    assert!(!id1.is_empty() && id1 != id2, "{id1} {id2}");
    let bad = json!({ "task": "nope", "texts": ["x"] }).to_string();
    assert!(send(&server.addr, "POST", "/v1/classify", "", &bad).starts_with("HTTP/1.1 404"));

    let m = send(&server.addr, "GET", "/metrics", "", "");
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(
        header(&m, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let m = m.split_once("\r\n\r\n").unwrap().1;
    let classify_ok = [r#"endpoint="classify""#, r#"task="zs""#, r#"status="200""#];
    assert_eq!(
        sample(m, "ptune_requests_total", &classify_ok),
        Some(2.0),
        "{m}"
    );
    let unknown = [r#"endpoint="classify""#, r#"task="""#, r#"status="404""#];
    assert_eq!(
        sample(m, "ptune_requests_total", &unknown),
        Some(1.0),
        "{m}"
    );
    assert!(!m.contains("nope"), "a client's task name became a label");
    assert_eq!(
        sample(m, "ptune_texts_total", &[r#"task="zs""#]),
        Some(3.0),
        "{m}"
    );
    assert!(sample(m, "ptune_batch_texts_count", &[]).unwrap() >= 1.0);
    assert_eq!(sample(m, "ptune_batch_texts_sum", &[]), Some(3.0), "{m}");
    assert_eq!(
        sample(m, "ptune_queue_wait_seconds_count", &[]),
        Some(2.0),
        "{m}"
    );
    assert!(sample(m, "ptune_inference_seconds_count", &[r#"task="zs""#]).unwrap() >= 1.0);
    let le_inf = [r#"endpoint="classify""#, r#"task="zs""#, r#"le="+Inf""#];
    assert_eq!(
        sample(m, "ptune_request_duration_seconds_bucket", &le_inf),
        Some(2.0),
        "{m}"
    );
    // this one, and maybe earlier ones whose close the server has not seen yet
    assert!(
        sample(m, "ptune_open_connections", &[]).unwrap() >= 1.0,
        "{m}"
    );

    // one JSON log line per request, with the request's id, task, texts, status and latency
    assert!(server.wait_for_log("/metrics", MS(2000)));
    let lines: Vec<Value> = server
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert_eq!(requests.len(), 5, "{lines:?}");
    let first = requests
        .iter()
        .find(|l| l["request_id"] == "abc-123")
        .unwrap();
    assert_eq!(first["task"], "zs");
    assert_eq!(first["texts"], 2);
    assert_eq!(first["status"], 200);
    assert_eq!(first["path"], "/v1/classify");
    assert!(first["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        requests
            .iter()
            .any(|l| l["status"] == 404 && l["task"] == "")
    );
    assert!(requests.iter().any(|l| l["request_id"] == id1));
}
