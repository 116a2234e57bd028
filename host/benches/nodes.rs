//! Background throughput end to end, one node on SQLite vs two nodes on one PostgreSQL, same
//! machine, same run (run: `cargo bench -p fnhost --bench nodes`).
//!
//! For each setup: real `fnhost serve` processes (the binary of this package) serving
//! `tests/guests/sleep` as `work-background`; `N` POSTs (`?ms=MS`) from `C` concurrent clients on
//! keep-alive connections (for two nodes, client i talks to node i mod 2). Printed:
//! - accepted/s: `N` over the time from the first request to the last `202` (each `202` is sent
//!   after its enqueue committed), with the p50/p99 latency of a `202`;
//! - run/s: `N` over the time from the first request until the admin list shows nothing
//!   queued, running or retrying (both nodes share the list on PostgreSQL; the health
//!   endpoint's counts are cached for 5 s, too coarse here).
//!
//! PostgreSQL is a throwaway server (`tests/pg/tmp-postgres.sh`: initdb in a temp dir, default
//! durability: fsync on, synchronous_commit on) stopped at the end; without it installed only
//! SQLite is measured. Knobs: FNHOST_BENCH_N (2000), FNHOST_BENCH_CLIENTS (32), FNHOST_BENCH_MS
//! (0). Every phase is bounded in time (120 s); a bound hit aborts with a message.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

const BOUND: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `fnhost serve` child, killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(work: &Path, name: &str, queue: &str) -> Node {
    let dir = work.join(name);
    let functions = dir.join("functions");
    std::fs::create_dir_all(&functions).unwrap();
    std::fs::copy(
        work.join("components").join("guest-sleep.wasm"),
        functions.join("work-background.wasm"),
    )
    .unwrap();
    let config = dir.join("fnhost.toml");
    std::fs::write(&config, "[server]\nadmin_token = \"bench\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fnhost"))
        .arg("serve")
        .arg(&functions)
        .args(["--listen", "127.0.0.1:0", "--queue", queue, "--config"])
        .arg(&config)
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .env("FNHOST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fnhost");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("fnhost {name} did not start"));
    Node { child, addr }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn request(sender: &mut Sender, addr: SocketAddr, method: &str, path: &str) -> (u16, Bytes) {
    sender.ready().await.unwrap();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// Whether the queue still holds work: anything queued, running or retrying.
async fn busy(addr: SocketAddr) -> bool {
    let mut s = connect(addr).await;
    for state in ["queued", "running", "retrying"] {
        s.ready().await.unwrap();
        let req = http::Request::get(format!("/.fnhost/invocations?state={state}&limit=1"))
            .header("host", addr.to_string())
            .header("authorization", "Bearer bench")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "admin list");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if list.as_array().is_some_and(|a| !a.is_empty()) {
            return true;
        }
    }
    false
}

struct Figures {
    accepted_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    run_per_s: f64,
}

async fn load(nodes: &[Node], n: usize, clients: usize, ms: usize) -> Figures {
    let path = format!("/.netlify/functions/work-background?ms={ms}");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = nodes[c % nodes.len()].addr;
        let path = path.clone();
        let count = n / clients + usize::from(c < n % clients);
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let (status, _) = request(&mut sender, addr, "POST", &path).await;
                assert_eq!(status, 202);
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.extend(
            tokio::time::timeout(BOUND, t)
                .await
                .expect("accepting: over the bound")
                .unwrap(),
        );
    }
    let accepted = started.elapsed();
    let deadline = Instant::now() + BOUND;
    while busy(nodes[0].addr).await {
        assert!(Instant::now() < deadline, "running: over the bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ran = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    Figures {
        accepted_per_s: n as f64 / accepted.as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        run_per_s: n as f64 / ran.as_secs_f64(),
    }
}

fn tmp_postgres(args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg(root().join("tests").join("pg").join("tmp-postgres.sh"))
        .args(args)
        .output()
        .expect("run tests/pg/tmp-postgres.sh")
}

fn main() {
    let n = knob("FNHOST_BENCH_N", 2000);
    let clients = knob("FNHOST_BENCH_CLIENTS", 32);
    let ms = knob("FNHOST_BENCH_MS", 0);
    let work = root().join("target").join("bench").join("nodes");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // A separate target dir: `cargo bench` holds the lock on target/.
    fnhost::builder::build_into(
        &root().join("tests").join("guests").join("sleep"),
        &work.join("components"),
        Some(&root().join("target").join("guests")),
    )
    .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "background throughput: {n} requests, {clients} concurrent keep-alive clients, guest sleeps {ms} ms, \
         {} cores, default background_concurrency (32 per node)",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!(
        "{:<26} {:>12} {:>9} {:>9} {:>10}",
        "setup", "accepted/s", "p50 ms", "p99 ms", "run/s"
    );
    let print = |name: &str, f: &Figures| {
        println!(
            "{name:<26} {:>12.0} {:>9.1} {:>9.1} {:>10.0}",
            f.accepted_per_s, f.p50_ms, f.p99_ms, f.run_per_s
        );
    };

    let sqlite = format!("sqlite://{}", work.join("queue.db").display());
    {
        let nodes = [start_node(&work, "sqlite", &sqlite)];
        print(
            "1 node, SQLite",
            &runtime.block_on(load(&nodes, n, clients, ms)),
        );
    }

    let pg_dir = std::env::temp_dir().join(format!("fnhost-bench-pg-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let pid = std::process::id().to_string();
    let started = tmp_postgres(&["start", pg_dir.to_str().unwrap(), &port, &pid]);
    match started.status.code() {
        Some(0) => {}
        Some(3) => {
            println!("{:<26} not installed: skipped", "2 nodes, PostgreSQL");
            return;
        }
        _ => panic!(
            "cannot start PostgreSQL: {}",
            String::from_utf8_lossy(&started.stderr)
        ),
    }
    let created = tmp_postgres(&["createdb", pg_dir.to_str().unwrap(), &port, "bench"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let url = format!("{}/bench", String::from_utf8_lossy(&started.stdout).trim());
    {
        // Start one first so the second finds the schema in place (startup is not measured).
        let first = start_node(&work, "pg-a", &url);
        let nodes = [first, start_node(&work, "pg-b", &url)];
        print(
            "2 nodes, PostgreSQL",
            &runtime.block_on(load(&nodes, n, clients, ms)),
        );
    }
    let _ = tmp_postgres(&["stop", pg_dir.to_str().unwrap()]);
}
