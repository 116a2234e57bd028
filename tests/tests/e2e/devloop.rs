//! The development loop from the command line: `fnhost new` projects that `fnhost build`
//! turns into served functions (Rust, JavaScript, Python), and `fnhost invoke` against a
//! running host (payloads, query, headers, `-i`, exit codes, `--scheduled`, `--wait`).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{
    Server, fnhost_bin, get, repo_root, require_tool, send, tool_path, wait_until,
};

/// Runs the fnhost binary with `args` in `dir` (tools on PATH, the run's shared cargo target
/// dir so the SDK's dependencies build once).
fn fnhost(dir: &Path, args: &[&str]) -> Output {
    Command::new(fnhost_bin())
        .args(args)
        .current_dir(dir)
        .env("PATH", tool_path())
        .env(
            "CARGO_TARGET_DIR",
            repo_root().join("target").join("guests"),
        )
        .env_remove("FNHOST_SDK")
        .env_remove("FNHOST_ADMIN_TOKEN")
        .output()
        .expect("run fnhost")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `fnhost new ARGS` in `site`, then `fnhost build site --out site/out`; returns the
/// component of `name`.
fn new_and_build(site: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let mut new = vec!["new", name];
    new.extend_from_slice(args);
    let created = fnhost(site, &new);
    assert!(
        created.status.success(),
        "fnhost new failed:\n{}",
        text(&created.stderr)
    );
    assert!(
        text(&created.stdout).contains(&format!("created {name}")),
        "{}",
        text(&created.stdout)
    );
    let out = site.join("out");
    let built = fnhost(site, &["build", name, "--out", out.to_str().unwrap()]);
    assert!(
        built.status.success(),
        "fnhost build of the new {name} failed:\n{}",
        text(&built.stderr)
    );
    let wasm = out.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{} missing", wasm.display());
    wasm
}

#[tokio::test]
async fn a_new_rust_function_builds_and_answers_hello() {
    let site = tempfile::tempdir().unwrap();
    // Default settings, then a background one with a declared path.
    let greet = new_and_build(site.path(), "greet", &[]);
    let jobs = new_and_build(
        site.path(),
        "jobs",
        &["--background", "--path", "/api/jobs"],
    );
    let server = Server::with(&[])
        .function_file("greet", &greet)
        .function_file("jobs", &jobs)
        .start();
    let reply = get(&server.url("/.netlify/functions/greet")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "Hello from greet!\n")
    );
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("jobs") && l.contains("background") && l.contains("/api/jobs")),
        "{table}"
    );
    let accepted = send("POST", &server.url("/api/jobs"), &[], "").await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    assert_eq!(
        get(&server.url("/.netlify/functions/jobs")).await.status,
        404,
        "a declared path replaces the default route"
    );

    // The project is left as a user would find it, and `new` refuses to write over it.
    let again = fnhost(site.path(), &["new", "greet"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("greet exists and is not empty"),
        "{}",
        text(&again.stderr)
    );
    let bad = fnhost(site.path(), &["new", "Greet!"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("invalid function name \"Greet!\""),
        "{}",
        text(&bad.stderr)
    );
}

#[tokio::test]
async fn a_new_rust_wasi_0_3_function_builds_and_answers_at_its_declared_path() {
    let site = tempfile::tempdir().unwrap();
    let wasm = new_and_build(site.path(), "greet3", &["--wasi", "0.3", "--path", "/hi"]);
    let server = Server::with(&[]).function_file("greet3", &wasm).start();
    let reply = get(&server.url("/hi")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "Hello from greet3 on WASI 0.3!\n")
    );
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("greet3") && l.contains("wasi:http@0.3") && l.contains("/hi")),
        "{table}"
    );
    // JavaScript cannot build a 0.3 component yet: refused, saying so, before anything is written.
    let js = fnhost(
        site.path(),
        &["new", "js3", "--lang", "js", "--wasi", "0.3"],
    );
    assert_eq!(js.status.code(), Some(1));
    assert!(
        text(&js.stderr).contains("JavaScript functions speak WASI 0.2"),
        "{}",
        text(&js.stderr)
    );
    assert!(!site.path().join("js3").exists());
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_new_python_wasi_0_3_function_builds_and_answers() {
    require_tool("componentize-py");
    let site = tempfile::tempdir().unwrap();
    let wasm = new_and_build(
        site.path(),
        "greet-py3",
        &["--lang", "python", "--wasi", "0.3"],
    );
    let server = Server::with(&[]).function_file("greet-py3", &wasm).start();
    let reply = get(&server.url("/.netlify/functions/greet-py3")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "Hello from greet-py3 on WASI 0.3!\n")
    );
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(table.contains("wasi:http@0.3"), "{table}");
}

#[tokio::test]
#[ignore = "needs node and npm (installed by .ci/run); run with --ignored"]
async fn a_new_javascript_function_builds_and_answers_at_its_declared_path() {
    require_tool("node");
    require_tool("npm");
    let site = tempfile::tempdir().unwrap();
    let wasm = new_and_build(
        site.path(),
        "greet-js",
        &["--lang", "js", "--path", "/hello/js"],
    );
    let server = Server::with(&[]).function_file("greet-js", &wasm).start();
    let reply = get(&server.url("/hello/js")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "Hello from greet-js!\n")
    );
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_new_python_background_function_builds_and_its_result_is_stored() {
    require_tool("componentize-py");
    let site = tempfile::tempdir().unwrap();
    let wasm = new_and_build(
        site.path(),
        "greet-py",
        &["--lang", "python", "--background"],
    );
    let server = Server::with(&[]).function_file("greet-py", &wasm).start();
    let out = invoke(&server, &["greet-py", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Hello from greet-py!\n");
}

/// `fnhost invoke ARGS --url <server>`.
fn invoke(server: &Server, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    let url = server.url("");
    all.extend(["--url", url.as_str()]);
    let mut full = vec!["invoke"];
    full.extend(all);
    fnhost(server.dir.path(), &full)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[tokio::test]
async fn invoke_sends_the_payload_query_and_headers_and_prints_the_answer() {
    let server = Server::with(&["echo"]).start();

    let out = invoke(
        &server,
        &[
            "echo",
            "--payload",
            r#"{"a":1}"#,
            "--query",
            "name=Ada Lovelace",
            "-q",
            "x=a&b",
            "--header",
            "x-trace: t-1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = json(&out);
    assert_eq!(
        seen["method"], "POST",
        "POST when a payload is given: {seen}"
    );
    assert_eq!(seen["path"], "/.netlify/functions/echo");
    assert_eq!(seen["query"], "name=Ada%20Lovelace&x=a%26b");
    assert_eq!(seen["headers"]["x-trace"], "t-1");
    assert_eq!(seen["headers"]["content-type"], "application/json");
    assert_eq!(seen["body"], r#"{"a":1}"#);

    // A payload from a file, another method; no payload: GET.
    let file = server.dir.path().join("payload.txt");
    std::fs::write(&file, "from a file\nline 2").unwrap();
    let at_file = format!("@{}", file.display());
    let out = invoke(&server, &["echo", "-X", "put", "-d", &at_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = json(&out);
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["body"], "from a file\nline 2");
    assert_eq!(seen["headers"]["content-type"], "text/plain; charset=utf-8");
    assert_eq!(json(&invoke(&server, &["echo"]))["method"], "GET");

    // -i: the status line and headers, a blank line, then the body.
    let out = invoke(&server, &["echo", "-i"]);
    let printed = text(&out.stdout);
    let (head, body) = printed
        .split_once("\n\n")
        .expect("a blank line after the head");
    assert!(head.starts_with("HTTP/1.1 200 OK\n"), "{printed}");
    assert!(head.lines().any(|l| l == "x-echo: fnhost"), "{printed}");
    assert!(
        head.lines().any(|l| l == "content-type: application/json"),
        "{printed}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap()["method"],
        "GET"
    );
}

#[tokio::test]
async fn invoke_exits_4_on_a_4xx_and_5_on_a_5xx() {
    let server = Server::with(&["echo"])
        .function_as("fail", "guest-fail")
        .start();

    let out = invoke(&server, &["no-such-function"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("answered 404 Not Found"),
        "{}",
        text(&out.stderr)
    );

    // The function's own 500: printed, and exit 5.
    let out = invoke(&server, &["echo", "-H", "x-echo-status: 500"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(json(&out)["method"], "GET");

    // A trap: fnhost's 500.
    let out = invoke(&server, &["fail"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("answered 500"),
        "{}",
        text(&out.stderr)
    );

    // Nothing listening: exit 1, naming the address.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let out = fnhost(
        server.dir.path(),
        &["invoke", "echo", "--url", &format!("http://{addr}")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("cannot connect to {addr}")),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn invoke_finds_a_declared_path_with_the_admin_token_and_sends_a_scheduled_event() {
    let server = Server::with(&["echo"])
        .config("[server]\nadmin_token = \"t0ken\"\n[functions.echo]\npath = \"/api/echo\"\n")
        .start();

    // Without the token, the default route is gone: 404 and a hint.
    let out = invoke(&server, &["echo"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("pass --token"),
        "{}",
        text(&out.stderr)
    );

    let out = invoke(&server, &["echo", "--token", "t0ken", "--scheduled"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = json(&out);
    assert_eq!(seen["path"], "/api/echo");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["headers"]["x-nf-event"], "schedule");
    let event: serde_json::Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    let next_run = event["next_run"].as_str().expect("next_run");
    assert!(
        next_run.len() == 20 && next_run.ends_with('Z') && next_run.as_bytes()[10] == b'T',
        "RFC 3339 in UTC: {next_run}"
    );

    // A path given as NAME is called as is; a wrong token is refused.
    assert_eq!(
        json(&invoke(&server, &["/api/echo/"]))["path"],
        "/api/echo/"
    );
    let out = invoke(&server, &["echo", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refused the admin token"),
        "{}",
        text(&out.stderr)
    );
    let out = invoke(&server, &["nope", "--token", "t0ken"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no function named \"nope\"")
            && text(&out.stderr).contains("it serves: echo"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn invoke_prints_a_background_id_and_with_wait_the_stored_result() {
    let server = Server::with(&["hello-background"])
        .function_as("fail-background", "guest-fail")
        .config("[functions.fail-background]\nretry_delays = [\"200ms\"]\n")
        .start();

    let out = invoke(&server, &["hello-background", "-q", "name=Ada"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        "an invocation id on stdout: {id:?}"
    );
    let status_url = server.url(&format!("/.fnhost/invocations/{id}"));
    wait_until(
        "the invocation to succeed",
        Duration::from_secs(30),
        async || get(&status_url).await.json()["state"] == "succeeded",
    )
    .await;

    let out = invoke(&server, &["hello-background", "-q", "name=Bo", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        r#"{"message":"Hello, Bo, from the background!","attempt":1}"#
    );
    assert!(
        text(&out.stderr).contains("succeeded (attempt 1/3)"),
        "{}",
        text(&out.stderr)
    );

    // Dead after its retries: exit 6, with the reason. (The `retrying` line in between is
    // not asserted: a poll may fall outside the 200 ms retry delay.)
    let out = invoke(&server, &["fail-background", "--wait"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("  dead (attempt 2/2)")
            && stderr.contains("is dead after 2 attempt(s): trapped"),
        "{stderr}"
    );
}
