//! WASI 0.3 functions (`wasi:http/service@0.3.0`) beside 0.2 ones: the same routes, budgets,
//! limits, sandbox, logs and background semantics, on the `guest-p3` test guest (built from
//! `tests/guests/p3` on the `wasip3` crate).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::background::{FAST, accepted_id, post, wait_state};
use crate::sandbox::upstream;
use crate::support::{Server, admin_get, get, send};

/// A server with the 0.3 guest as `p3` beside the 0.2 `hello`, with `toml` appended.
fn server(toml: &str) -> Server {
    Server::with(&["hello"])
        .function_as("p3", "guest-p3")
        .config(toml)
        .start()
}

fn p3(server: &Server, route: &str) -> String {
    server.url(&format!("/.netlify/functions/p3/{route}"))
}

#[tokio::test]
async fn a_0_3_function_answers_beside_a_0_2_one_and_says_which_world_it_speaks() {
    let server = server("[server]\nadmin_token = \"t\"\n");
    let reply = get(&p3(&server, "hi")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        "hello from wasi:http@0.3 GET /.netlify/functions/p3/hi"
    );
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );

    let table = server.stdout.lock().unwrap().join("\n");
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
            .to_string()
    };
    assert!(row("p3").contains("wasi:http@0.3"), "{table}");
    assert!(row("hello").contains("wasi:http@0.2"), "{table}");

    let listed = admin_get(&server, "/.fnhost/functions", "t").await.json();
    let world = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["world"].clone())
    };
    assert_eq!(world("p3"), Some("wasi:http@0.3".into()), "{listed}");
    assert_eq!(world("hello"), Some("wasi:http@0.2".into()), "{listed}");

    let metrics = admin_get(&server, "/.fnhost/metrics", "t").await.text();
    assert!(
        metrics.contains("fnhost_function_info{function=\"p3\",world=\"wasi:http@0.3\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn routes_methods_redirects_cors_and_body_limits_apply_to_a_0_3_function() {
    let server = Server::with(&[])
        .function_as("p3", "guest-p3")
        .config(
            "[cors]\nallowed_origins = [\"https://app.example\"]\n\
             [functions.p3]\npath = [\"/api/v3/*\"]\nmethod = [\"GET\", \"POST\"]\n",
        )
        .file("_redirects", b"/old/*  /api/v3/:splat  200\n")
        .start();
    let reply = get(&server.url("/api/v3/items")).await;
    assert_eq!(reply.text(), "hello from wasi:http@0.3 GET /api/v3/items");
    // A rewrite keeps the client's URL; the guest sees the rewritten path.
    let reply = get(&server.url("/old/thing")).await;
    assert_eq!(reply.text(), "hello from wasi:http@0.3 GET /api/v3/thing");
    assert_eq!(
        send("DELETE", &server.url("/api/v3/items"), &[], "")
            .await
            .status,
        405
    );
    let preflight = send(
        "OPTIONS",
        &server.url("/api/v3/items"),
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let big = vec![b'x'; 7 * 1024 * 1024];
    assert_eq!(
        send("POST", &server.url("/api/v3/echo"), &[], big)
            .await
            .status,
        413
    );
}

#[tokio::test]
async fn a_megabyte_echoes_back_and_a_response_starts_before_its_body_ends() {
    let server = server("");
    let body: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let reply = send(
        "POST",
        &p3(&server, "echo"),
        &[("content-type", "application/octet-stream")],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(
        reply.body == body,
        "the echo differs ({} bytes)",
        reply.body.len()
    );

    // Four lines 400 ms apart: the first arrives long before the last.
    let (first, whole, text) =
        timed_get(&server, "/.netlify/functions/p3/stream?n=4&ms=400", "").await;
    assert!(
        text.contains("line 0\n") && text.contains("line 3\n"),
        "{text}"
    );
    assert!(
        first < Duration::from_millis(350),
        "first line after {first:?}"
    );
    assert!(
        whole >= Duration::from_millis(1200),
        "whole body after {whole:?}"
    );
}

#[tokio::test]
async fn trailers_reach_a_client_that_accepts_them() {
    let server = server("");
    let (_, _, raw) = timed_get(
        &server,
        "/.netlify/functions/p3/trailers",
        "TE: trailers\r\n",
    )
    .await;
    assert!(raw.contains("body before trailers"), "{raw}");
    let tail = raw.rsplit("\r\n0\r\n").next().unwrap_or_default();
    assert!(
        tail.to_ascii_lowercase().contains("x-checksum: abc123"),
        "{raw}"
    );
}

#[tokio::test]
async fn spinning_sleeping_and_pending_0_3_guests_get_504_at_their_budget_while_others_are_served()
{
    let server = server("[functions.p3]\ntimeout = \"1s\"\n");
    for (route, says) in [
        ("spin", "spinning"),
        ("sleep", "sleeping"),
        ("pending", "pending"),
    ] {
        let url = p3(&server, route);
        let started = Instant::now();
        let stuck = tokio::spawn(async move { (get(&url).await, started.elapsed()) });
        server
            .wait_for_log(&[says, "function=\"p3\""], Duration::from_millis(900))
            .await;
        let t = Instant::now();
        let hello = get(&server.url("/.netlify/functions/hello")).await;
        let hello_latency = t.elapsed();
        let (reply, elapsed) = stuck.await.unwrap();
        assert_eq!(reply.status, 504, "{route}: {}", reply.text());
        assert!(
            elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1100),
            "{route} stopped after {elapsed:?}, not at its 1 s budget (± 100 ms)"
        );
        assert_eq!(hello.status, 200);
        assert!(
            hello_latency < Duration::from_millis(500),
            "hello waited {hello_latency:?} behind {route}"
        );
    }
}

#[tokio::test]
async fn the_memory_cap_traps_a_0_3_guest_and_fuel_stops_one() {
    let server = Server::with(&["hello"])
        .function_as("p3", "guest-p3")
        .function_as("metered", "guest-p3")
        .config("[functions.p3]\nmemory = \"64MB\"\n[functions.metered]\nfuel = 1_000_000\n")
        .start();
    let reply = get(&p3(&server, "hog")).await;
    assert_eq!(reply.status, 500);
    let id = reply.header("fnhost-invocation-id").unwrap().to_string();
    server
        .wait_for_log(&[&id, "trapped"], Duration::from_secs(5))
        .await;
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );

    let started = Instant::now();
    let reply = get(&server.url("/.netlify/functions/metered/spin")).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn traps_and_error_codes_are_500_naming_only_the_invocation() {
    let server = server("");
    for route in ["trap", "error"] {
        let reply = get(&p3(&server, route)).await;
        assert_eq!(reply.status, 500, "{route}");
        let id = reply.header("fnhost-invocation-id").unwrap();
        assert_eq!(reply.text(), format!("function failed (invocation {id})\n"));
    }
}

#[tokio::test]
async fn outbound_from_a_0_3_guest_keeps_the_allow_list_and_runs_concurrently() {
    let up = upstream().await;
    let server = Server::with(&[])
        .function_as("allowed", "guest-p3")
        .function_as("denied", "guest-p3")
        .config(&format!(
            "[functions.allowed]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\nmax_outbound = 2\n",
            up.port()
        ))
        .start();
    let target = format!("http://127.0.0.1:{}/ping?token=secret", up.port());
    let reply = get(&server.url(&format!("/.netlify/functions/allowed/fetch?url={target}"))).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "pong"));

    let reply = get(&server.url(&format!("/.netlify/functions/denied/fetch?url={target}"))).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );
    let line = server
        .wait_for_log(&["outbound request", "denied"], Duration::from_secs(2))
        .await;
    assert!(!line.contains("secret"), "the query was logged: {line}");

    // Two at once are allowed (max_outbound = 2); a third at the same time is refused.
    let two = format!("url={target}&url={target}");
    let reply = get(&server.url(&format!("/.netlify/functions/allowed/fetch?{two}"))).await;
    assert_eq!(
        reply.text().matches(" 200 4\n").count(),
        2,
        "{}",
        reply.text()
    );
    let three = format!("{two}&url={target}");
    let reply = get(&server.url(&format!("/.netlify/functions/allowed/fetch?{three}"))).await;
    assert!(
        reply.text().contains("ConnectionLimitReached"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn a_0_3_guests_output_is_logged_tagged_and_bounded() {
    let server = server("[functions.p3]\nmax_log = \"4KB\"\n");
    let reply = get(&p3(&server, "print")).await;
    assert_eq!(reply.status, 200);
    for line in ["p3 stdout line", "std stdout line", "std stderr line"] {
        server
            .wait_for_log(&[line, "function=\"p3\"", "id=\""], Duration::from_secs(5))
            .await;
    }
    assert_eq!(get(&p3(&server, "chatty?kb=64")).await.status, 200);
    server
        .wait_for_log(&["truncated", "function=\"p3\""], Duration::from_secs(5))
        .await;
    assert!(
        server.count_log(&["xxxxxxxx", "function=\"p3\""]) <= 4,
        "more than max_log was logged"
    );
}

#[tokio::test]
async fn a_0_3_handler_answers_then_finishes_its_work_within_the_budget() {
    let server = server("");
    let started = Instant::now();
    let reply = get(&p3(&server, "later?ms=600")).await;
    assert_eq!(reply.text(), "answered; finishing later");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    server
        .wait_for_log(
            &["later done after 600 ms", "function=\"p3\""],
            Duration::from_secs(3),
        )
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "the work after the answer ran early"
    );
}

#[tokio::test]
async fn work_after_the_answer_is_stopped_at_the_budget() {
    let server = Server::with(&[])
        .function_as("short", "guest-p3")
        .config("[functions.short]\ntimeout = \"1s\"\n")
        .start();
    let reply = get(&server.url("/.netlify/functions/short/later?ms=3000")).await;
    assert_eq!(reply.status, 200);
    server
        .wait_for_log(
            &["budget exceeded", "function=\"short\""],
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(server.count_log(&["later done"]), 0);
}

#[tokio::test]
async fn a_background_0_3_function_is_acknowledged_retried_and_reports_to_its_destinations() {
    let dest = crate::background::Destination::start().await;
    let server = Server::with(&[])
        .function_as("p3-background", "guest-p3")
        .config(&format!(
            "{FAST}[functions.p3-background]\non_success = \"{}\"\non_failure = \"{}\"\n",
            dest.url("/ok"),
            dest.url("/failed")
        ))
        .start();
    let ok = accepted_id(
        &post(
            &server,
            "/.netlify/functions/p3-background/later?ms=300",
            &[],
            "x",
        )
        .await,
    );
    let done = wait_state(&server, &ok, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(done["attempts"], 1, "{done}");
    // The attempt lasted until the work after the answer was done.
    server
        .wait_for_log(&["later done after 300 ms", &ok], Duration::from_secs(1))
        .await;
    let record = dest.wait_for(&ok, Duration::from_secs(5)).await;
    assert_eq!(record["requestContext"]["condition"], "Success", "{record}");
    assert_eq!(record["responseContext"]["statusCode"], 200, "{record}");

    let failing =
        accepted_id(&post(&server, "/.netlify/functions/p3-background/trap", &[], "x").await);
    let dead = wait_state(&server, &failing, &["dead"], Duration::from_secs(15)).await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(
        dead["last_error"].as_str().unwrap().contains("trapped"),
        "{dead}"
    );
    let record = dest.wait_for(&failing, Duration::from_secs(5)).await;
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
}

#[tokio::test]
async fn an_acknowledged_0_3_invocation_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Server::with(&[])
            .function_as("p3-background", "guest-p3")
            .data_dir(dir.path())
            .config(FAST)
            .start()
    };
    let mut first = start();
    let id = accepted_id(
        &post(
            &first,
            "/.netlify/functions/p3-background/later?ms=2000",
            &[],
            "x",
        )
        .await,
    );
    wait_state(&first, &id, &["running"], Duration::from_secs(5)).await;
    first.kill9();
    let second = start();
    wait_state(&second, &id, &["succeeded"], Duration::from_secs(20)).await;
    second
        .wait_for_log(&["later done after 2000 ms", &id], Duration::from_secs(1))
        .await;
}

/// GETs `path` over a raw connection; returns when the first body byte and the whole response
/// arrived, and the raw response text.
async fn timed_get(server: &Server, path: &str, extra: &str) -> (Duration, Duration, String) {
    let addr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (mut raw, mut first) = (Vec::new(), None);
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the response stalled")
            .unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first.is_none() && String::from_utf8_lossy(&raw).contains("line 0") {
            first = Some(started.elapsed());
        }
    }
    let whole = started.elapsed();
    (
        first.unwrap_or(whole),
        whole,
        String::from_utf8_lossy(&raw).into_owned(),
    )
}

#[tokio::test]
async fn reuse_keeps_an_instance_for_n_requests_each_its_own_invocation() {
    let server = Server::with(&[])
        .function_as("warm", "guest-p3")
        .function_as("fresh", "guest-p3")
        .config("[functions.warm]\nreuse = 3\n")
        .start();
    let mut counts = Vec::new();
    for _ in 0..4 {
        counts.push(
            get(&server.url("/.netlify/functions/warm/count"))
                .await
                .text(),
        );
    }
    // Module state survives between the requests one instance serves: 3, then a new one.
    assert_eq!(counts, ["count 1", "count 2", "count 3", "count 1"]);
    for _ in 0..2 {
        assert_eq!(
            get(&server.url("/.netlify/functions/fresh/count"))
                .await
                .text(),
            "count 1",
            "without reuse every request gets a fresh instance"
        );
    }
    // Each request is its own invocation: its output carries its own id.
    let id_of = |n: u32| {
        let line = server
            .logs()
            .lines()
            .find(|l| l.contains(&format!("count {n} ")) && l.contains("function=\"warm\""))
            .unwrap_or_else(|| panic!("no `count {n}` line"))
            .to_string();
        line.split("id=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let ids: std::collections::HashSet<String> = (1..=3).map(id_of).collect();
    assert_eq!(ids.len(), 3, "one id per request: {ids:?}");
}

#[tokio::test]
async fn a_reused_instance_is_retired_after_a_trap_or_a_budget_stop() {
    let server = Server::with(&[])
        .function_as("warm", "guest-p3")
        .config("[functions.warm]\nreuse = 100\ntimeout = \"1s\"\n")
        .start();
    let count = async || {
        get(&server.url("/.netlify/functions/warm/count"))
            .await
            .text()
    };
    assert_eq!(count().await, "count 1");
    assert_eq!(count().await, "count 2");
    assert_eq!(
        get(&server.url("/.netlify/functions/warm/trap"))
            .await
            .status,
        500
    );
    assert_eq!(count().await, "count 1", "a trapped instance served again");
    assert_eq!(count().await, "count 2");
    let started = Instant::now();
    assert_eq!(
        get(&server.url("/.netlify/functions/warm/spin"))
            .await
            .status,
        504
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "the budget is per request: stopped after {took:?}"
    );
    assert_eq!(count().await, "count 1", "a stopped instance served again");
}

#[tokio::test]
async fn reuse_is_refused_for_a_0_2_or_background_function_and_named() {
    let server = Server::with(&["hello"])
        .function_as("p3-background", "guest-p3")
        .config("[functions.hello]\nreuse = 5\n[functions.p3-background]\nreuse = 5\n")
        .start();
    let table = server.stdout.lock().unwrap().join("\n");
    for (name, why) in [
        ("hello", "this one is sync and speaks wasi:http@0.2"),
        (
            "p3-background",
            "this one is background and speaks wasi:http@0.3",
        ),
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with("FAILED") && l.contains(&format!("functions.{name}.reuse = 5")))
            .unwrap_or_else(|| panic!("{name} not refused:\n{table}"));
        assert!(line.contains(why), "{line}");
    }
}

/// The reference host: `wasmtime serve` of the wasmtime release fnhost pins, where `.ci/run`
/// (and `bench/run.py`) install it.
fn wasmtime_cli() -> std::path::PathBuf {
    let path = crate::support::repo_root().join("target/bench/tools/bin/wasmtime");
    if !path.is_file() {
        crate::support::missing_tool(
            "wasmtime (wasmtime-cli 48)",
            &format!("no {}", path.display()),
        );
    }
    path
}

/// `wasmtime serve` on a free loopback port, killed when dropped.
struct Reference {
    child: std::process::Child,
    base: String,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn reference(component: &std::path::Path) -> Reference {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(wasmtime_cli())
        .args(["serve", "-S", "cli=y", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(component)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start wasmtime serve");
    let base = format!("http://127.0.0.1:{port}");
    crate::support::wait_until(
        "wasmtime serve to listen",
        Duration::from_secs(60),
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    Reference { child, base }
}

#[tokio::test]
#[ignore = "needs wasmtime-cli 48 (installed by .ci/run); run with --ignored"]
async fn the_same_0_3_component_answers_alike_under_fnhost_and_wasmtime_serve() {
    let up = upstream().await;
    let component = crate::support::component("guest-p3");
    let wasmtime = reference(&component).await;
    let server = Server::with(&[])
        .function_file("p3", &component)
        .config(&format!(
            "[functions.p3]\npath = \"/*\"\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            up.port()
        ))
        .start();
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    let target = format!("http://127.0.0.1:{}/ping", up.port());
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", "/hi".into(), Vec::new()),
        ("POST", "/echo".into(), b"a small body".to_vec()),
        ("POST", "/echo".into(), big),
        ("GET", "/stream?n=3&ms=50".into(), Vec::new()),
        ("GET", "/missing".into(), Vec::new()),
        (
            "GET",
            format!("/fetch?url={target}&url={target}&url={target}"),
            Vec::new(),
        ),
    ];
    for (method, path, body) in cases {
        let headers = [("content-type", "application/octet-stream")];
        let ours = send(method, &server.url(&path), &headers, body.clone()).await;
        let theirs = send(method, &format!("{}{path}", wasmtime.base), &headers, body).await;
        assert_eq!(ours.status, theirs.status, "{method} {path}");
        assert_eq!(
            ours.header("content-type"),
            theirs.header("content-type"),
            "{method} {path}"
        );
        assert!(
            ours.body == theirs.body,
            "{method} {path}: bodies differ ({} and {} bytes):\n{}\n---\n{}",
            ours.body.len(),
            theirs.body.len(),
            String::from_utf8_lossy(&ours.body[..ours.body.len().min(300)]),
            String::from_utf8_lossy(&theirs.body[..theirs.body.len().min(300)])
        );
    }
}

/// A loopback upstream that holds every request until two are in flight at once (answering
/// `together`), or for at most 3 s (answering `alone`): proof that a guest's downloads overlap.
async fn rendezvous() -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let arrived = Arc::new(AtomicUsize::new(0));
    let met = Arc::new(tokio::sync::Notify::new());
    crate::support::serve_http(Arc::new(move |_req| {
        let (arrived, met) = (arrived.clone(), met.clone());
        Box::pin(async move {
            let both = met.notified();
            let text = if arrived.fetch_add(1, Ordering::SeqCst) + 1 >= 2 {
                met.notify_waiters();
                "together"
            } else if tokio::time::timeout(Duration::from_secs(3), both)
                .await
                .is_ok()
            {
                "together"
            } else {
                "alone"
            };
            let body = http_body_util::Full::new(bytes::Bytes::from(text))
                .map_err(|never| match never {})
                .boxed();
            http::Response::new(body)
        })
    }))
    .await
}

#[tokio::test]
async fn the_rust_hello_p3_example_on_the_sdk_reads_bodies_downloads_at_once_and_works_after() {
    let up = rendezvous().await;
    let server = Server::with(&["hello-p3"])
        .config(&format!(
            "[functions.hello-p3]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            up.port()
        ))
        .start();
    let url = |q: &str| server.url(&format!("/.netlify/functions/hello-p3{q}"));
    let reply = get(&url("?name=Ada")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "Hello, Ada from WASI 0.3!\n");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // The spawned task ran after the answer, under the invocation's id (the SDK's
    // `invocation_id` and the log's tag agree).
    let line = server
        .wait_for_log(
            &["answered ", "function=\"hello-p3\""],
            Duration::from_secs(3),
        )
        .await;
    let id = line
        .split("answered ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(
        id.len() == 32 && line.contains(&format!("id=\"{id}\"")),
        "{line}"
    );
    let reply = send("POST", &url(""), &[], "Grace").await;
    assert_eq!(reply.text(), "Hello, Grace from WASI 0.3!\n");

    // Two downloads overlap (the upstream answers `together` only then); one the allow-list
    // refuses is an error line, not a failed invocation.
    let a = format!("http://127.0.0.1:{}/a", up.port());
    let b = format!("http://127.0.0.1:{}/b", up.port());
    let reply = get(&url(&format!("?url={a}&url={b}&url=http://example.com/"))).await;
    assert_eq!(
        reply.text(),
        format!(
            "{a} 200 8\n{b} 200 8\nhttp://example.com/ error outbound request failed: \
             HttpRequestDenied\n"
        )
    );
}

#[tokio::test]
async fn the_concurrency_cap_a_schedule_and_an_unread_body_apply_to_a_0_3_function() {
    let server = Server::with(&[])
        .function_as("p3", "guest-p3")
        .function_as("tick", "guest-p3")
        .config(
            "[server]\nadmin_token = \"t0ken\"\nmax_concurrency = 1\n\
             [functions.p3]\ntimeout = \"2s\"\n[functions.tick]\nschedule = \"* * * * * *\"\n",
        )
        .start();
    // A guest that never reads its request body still answers (the body is dropped).
    let reply = send("POST", &p3(&server, "hi"), &[], vec![b'x'; 1024 * 1024]).await;
    assert_eq!(
        reply.text(),
        "hello from wasi:http@0.3 POST /.netlify/functions/p3/hi"
    );

    // Every tick is a background invocation of the 0.3 function, run to success.
    crate::parity::succeeded_runs(&server, "tick", 2, Duration::from_secs(8)).await;

    // The one synchronous slot is taken by a sleeping 0.3 guest: the next request gets 503.
    let url = p3(&server, "sleep");
    let busy = tokio::spawn(async move { get(&url).await });
    server
        .wait_for_log(&["sleeping", "function=\"p3\""], Duration::from_secs(2))
        .await;
    let reply = get(&p3(&server, "hi")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(busy.await.unwrap().status, 504);
    assert_eq!(get(&p3(&server, "hi")).await.status, 200);
}
