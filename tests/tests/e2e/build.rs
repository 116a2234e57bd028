//! `fnhost build`, `fnhost dev` and `cargo component build` produce components fnhost serves.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    Server, component, fnhost_bin, get, repo_root, require_tool, send, shared_cache, tool_path,
    wait_until,
};

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

/// Runs `fnhost dev DIR` on port 0; returns the child, its address and its stderr lines.
fn start_dev(
    dir: &std::path::Path,
    work: &std::path::Path,
) -> (
    std::process::Child,
    Result<String, std::sync::mpsc::RecvTimeoutError>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    start_dev_with(dir, work, &[])
}

/// [`start_dev`] with more arguments; stdout lines are kept with stderr's.
pub(crate) fn start_dev_with(
    dir: &std::path::Path,
    work: &std::path::Path,
    extra: &[&str],
) -> (
    std::process::Child,
    Result<String, std::sync::mpsc::RecvTimeoutError>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut child = Command::new(fnhost_bin())
        .arg("dev")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--out"])
        .arg(work.join("functions"))
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(extra)
        .current_dir(work)
        .env("PATH", tool_path())
        .env(
            "CARGO_TARGET_DIR",
            repo_root().join("target").join("guests"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.to_string());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(300));
    (child, addr, lines)
}

#[tokio::test]
#[ignore = "needs node and npm (installed by .ci/run); run with --ignored"]
async fn fnhost_dev_builds_and_serves_the_examples() {
    // The JavaScript example needs node and npm: fail now, naming them, when they are missing.
    component("js-hello");
    let work = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) = start_dev(&repo_root().join("examples"), work.path());
    let mut replies = Vec::new();
    if let Ok(addr) = &addr {
        replies.push(get(&format!("http://{addr}/.netlify/functions/hello")).await);
        // Built by the same `fnhost build`, with npm.
        replies.push(
            get(&format!(
                "http://{addr}/.netlify/functions/js-hello?name=Ada"
            ))
            .await,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        addr.is_ok(),
        "fnhost dev did not start:\n{}",
        logs.lock().unwrap().join("\n")
    );
    assert_eq!(
        (replies[0].status, replies[0].text().as_str()),
        (200, "Hello from fnhost!\n")
    );
    assert_eq!(
        (replies[1].status, replies[1].text().as_str()),
        (200, "Hello, Ada from JavaScript!\n")
    );
}

#[tokio::test]
async fn fnhost_dev_serves_what_built_and_names_a_missing_tool() {
    let site = tempfile::tempdir().unwrap();
    let project = |name: &str, command: &str| {
        let dir = site.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = format!("[build]\ncommand = \"{command}\"\noutput = \"out.wasm\"\n");
        std::fs::write(dir.join("function.toml"), manifest).unwrap();
    };
    // A "language tool" that is a plain copy of a built component, and one that is missing.
    project(
        "copied",
        &format!("cp {} out.wasm", component("hello").display()),
    );
    project("needs-tool", "componentize-nothing app -o out.wasm");
    let work = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) = start_dev(site.path(), work.path());
    let mut replies = Vec::new();
    if let Ok(addr) = &addr {
        for name in ["copied", "needs-tool"] {
            replies.push(
                get(&format!("http://{addr}/.netlify/functions/{name}"))
                    .await
                    .status,
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let logs = logs.lock().unwrap().join("\n");
    assert!(addr.is_ok(), "fnhost dev did not start:\n{logs}");
    assert_eq!(replies, [200, 404], "{logs}");
    assert!(
        logs.contains("skipping needs-tool")
            && logs.contains("not installed")
            && logs.contains("needs-tool/function.toml"),
        "{logs}"
    );
}

#[tokio::test]
#[ignore = "needs cargo-component (installed by .ci/run); run with --ignored"]
async fn cargo_component_build_output_is_served() {
    require_tool("cargo-component");
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
    first
        .wait_for_log(
            &["loaded 2 function(s)", "0 from cache, 2 compiled"],
            Duration::from_secs(1),
        )
        .await;
    drop(first);
    let second = start();
    second
        .wait_for_log(
            &["loaded 2 function(s)", "2 from cache, 0 compiled"],
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(
        get(&second.url("/.netlify/functions/hello")).await.status,
        200
    );
}

/// `fnhost dev --retry-scale 0.01`: the default 1m and 2m delays take 0.6 s and 1.2 s, and
/// `POST …/run-now` (or `fnhost retry`) runs a waiting retry at once.
#[tokio::test]
async fn fnhost_dev_scales_retry_delays_and_runs_a_waiting_retry_now() {
    let site = tempfile::tempdir().unwrap();
    for name in ["flaky-background", "patient-background"] {
        let dir = site.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let command = format!("cp {} out.wasm", component("guest-flaky").display());
        let manifest = format!("[build]\ncommand = \"{command}\"\noutput = \"out.wasm\"\n");
        std::fs::write(dir.join("function.toml"), manifest).unwrap();
    }
    std::fs::write(
        site.path().join("fnhost.toml"),
        "[server]\nadmin_token = \"t0ken\"\n[functions.patient-background]\nretry_delays = [\"1h\"]\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (mut child, addr, logs) =
        start_dev_with(site.path(), work.path(), &["--retry-scale", "0.01"]);
    let Ok(addr) = addr else {
        let _ = child.kill();
        panic!(
            "fnhost dev did not start:\n{}",
            logs.lock().unwrap().join("\n")
        );
    };
    let base = format!("http://{addr}");
    let status = async |id: &str| {
        get(&format!("{base}/.fnhost/invocations/{id}"))
            .await
            .json()
    };
    let reached = async |id: &str, state: &str| {
        let s = status(id).await;
        if s["state"] == state { Ok(s) } else { Err(s) }
    };
    let post = async |path: &str, token: bool| {
        let auth: &[(&str, &str)] = if token {
            &[("authorization", "Bearer t0ken")]
        } else {
            &[]
        };
        send("POST", &format!("{base}{path}"), auth, "").await
    };

    // Fails twice, then succeeds: attempts 0.6 s and 1.2 s apart instead of 1 and 2 minutes.
    let reply = post("/.netlify/functions/flaky-background?succeed_on=3", false).await;
    let id = reply.header("fnhost-invocation-id").unwrap().to_string();
    let done = wait_until("three attempts", Duration::from_secs(20), async || {
        reached(&id, "succeeded").await
    })
    .await;
    assert_eq!(done["attempts"], 3, "{done}");

    // A 1h delay (36 s scaled) is cut short by run-now.
    let reply = post("/.netlify/functions/patient-background?succeed_on=2", false).await;
    let id = reply.header("fnhost-invocation-id").unwrap().to_string();
    wait_until("a waiting retry", Duration::from_secs(10), async || {
        reached(&id, "retrying").await
    })
    .await;
    let run_now = format!("/.fnhost/invocations/{id}/run-now");
    assert_eq!(post(&run_now, false).await.status, 401, "admin only");
    // `fnhost retry ID` is the command line's run-now.
    let retried = Command::new(fnhost_bin())
        .args(["retry", &id, "--url", &base, "--token", "t0ken"])
        .output()
        .unwrap();
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    assert!(String::from_utf8_lossy(&retried.stdout).contains(&id));
    let done = wait_until("the retry run now", Duration::from_secs(10), async || {
        reached(&id, "succeeded").await
    })
    .await;
    assert_eq!(done["attempts"], 2, "{done}");
    let again = post(&run_now, true).await;
    assert_eq!(again.status, 409, "not waiting any more: {}", again.text());
    let unknown = post("/.fnhost/invocations/nope/run-now", true).await;
    assert_eq!(unknown.status, 404);

    let _ = child.kill();
    let _ = child.wait();
    let logs = logs.lock().unwrap().join("\n");
    assert!(logs.contains("retry delays scaled by 0.01"), "{logs}");
}
