//! `fnhost build`, `fnhost dev` and `cargo component build` produce components fnhost serves.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Server, fnhost_bin, get, repo_root};

/// True when the tool is there; under `CI=true` a missing tool fails the test instead.
fn require(tool: &str, probe: &mut Command) -> bool {
    let ok = probe.output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is not installed (CI must install it: see .ci/run)"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}

#[tokio::test]
async fn fnhost_build_output_is_served() {
    // `support::components` built examples/ with `fnhost build`; serve that output directly.
    let server = Server::with(&["hello", "echo", "items"]).start();
    let table = server.stdout.lock().unwrap().join("\n");
    for name in ["hello", "echo", "items"] {
        assert!(table.contains(name), "{table}");
    }
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.text(),
        "Hello from fnhost!\n"
    );
}

#[tokio::test]
async fn fnhost_dev_builds_and_serves_the_examples() {
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(fnhost_bin())
        .arg("dev")
        .arg(repo_root().join("examples"))
        .args(["--listen", "127.0.0.1:0", "--out"])
        .arg(work.path().join("functions"))
        .current_dir(work.path())
        .env(
            "CARGO_TARGET_DIR",
            repo_root().join("target").join("guests"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(300));
    let reply = match &addr {
        Ok(addr) => Some(get(&format!("http://{addr}/.netlify/functions/hello")).await),
        Err(_) => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    let reply = reply.expect("fnhost dev did not start");
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "Hello from fnhost!\n")
    );
}

#[tokio::test]
async fn cargo_component_build_output_is_served() {
    if !require(
        "cargo-component",
        Command::new("cargo").args(["component", "--version"]),
    ) {
        return;
    }
    let target = repo_root().join("target").join("component");
    let status = Command::new("cargo")
        .args(["component", "build", "--release", "--target-dir"])
        .arg(&target)
        .current_dir(repo_root().join("examples").join("hello"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo component build failed");
    let wasm = target
        .join("wasm32-wasip1")
        .join("release")
        .join("hello.wasm");
    let server = Server::with(&[])
        .file("hello.wasm", &std::fs::read(&wasm).unwrap())
        .start();
    let reply = get(&server.url("/.netlify/functions/hello")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "Hello from fnhost!\n")
    );
}

#[tokio::test]
async fn a_second_start_loads_components_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let start = || {
        Server::with(&["hello", "echo"])
            .cache_dir(cache.path())
            .start()
    };
    let first = start();
    first.wait_for_log(
        &["loaded 2 function(s)", "0 from cache, 2 compiled"],
        Duration::from_secs(1),
    );
    drop(first);
    let second = start();
    second.wait_for_log(
        &["loaded 2 function(s)", "2 from cache, 0 compiled"],
        Duration::from_secs(1),
    );
    assert_eq!(
        get(&second.url("/.netlify/functions/hello")).await.status,
        200
    );
}
