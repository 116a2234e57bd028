//! CORS and `_redirects`: preflights answered without invoking anything, CORS headers on the
//! background `202` and the status resource, foreign origins refused before anything is stored,
//! Netlify-style rewrites, redirects and proxies — and the whole cross-origin flow in a real
//! headless Chromium.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use crate::background::wait_state;
use crate::support::{
    HEADLESS, Reply, Server, TestBody, admin_list, chromium, fnhost_bin, get, repo_root, send,
    serve_http, wait_until,
};

const APP: &str = "http://app.test";
const EVIL: &str = "http://evil.test";

/// A site-wide policy for `APP`, an admin token to inspect the queue, and `echo-other` with a
/// policy of its own.
const POLICY: &str = r#"
[server]
admin_token = "t0ken"
[cors]
allowed_origins = ["http://app.test"]
allowed_headers = ["content-type", "idempotency-key"]
exposed_headers = ["x-total"]
max_age = "1h"
[functions.echo-other.cors]
allowed_origins = ["http://other.test"]
"#;

async fn preflight(server: &Server, path: &str, origin: &str, method: &str) -> Reply {
    send(
        "OPTIONS",
        &server.url(path),
        &[
            ("origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", "content-type"),
        ],
        "",
    )
    .await
}

fn cors_headers(reply: &Reply) -> Vec<&str> {
    let mut names: Vec<&str> = reply
        .headers
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("access-control-"))
        .collect();
    names.sort_unstable();
    names
}

#[tokio::test]
async fn preflights_are_answered_without_invoking_anything() {
    let server = Server::with(&["hello-background", "echo"])
        .config(POLICY)
        .start();

    let ok = preflight(&server, "/.netlify/functions/hello-background", APP, "POST").await;
    assert_eq!(ok.status, 204, "{}", ok.text());
    assert!(ok.body.is_empty());
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        ok.header("access-control-allow-methods"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE")
    );
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("content-type, idempotency-key")
    );
    assert_eq!(ok.header("access-control-max-age"), Some("3600"));
    assert!(
        ok.header("vary").unwrap().contains("Origin"),
        "{:?}",
        ok.headers
    );
    assert_eq!(ok.header("access-control-allow-credentials"), None);

    // Disallowed origin, method or header: 204 with Vary and no allow headers.
    let evil = preflight(
        &server,
        "/.netlify/functions/hello-background",
        EVIL,
        "POST",
    )
    .await;
    assert_eq!(evil.status, 204);
    assert!(cors_headers(&evil).is_empty(), "{:?}", evil.headers);
    assert!(evil.header("vary").unwrap().contains("Origin"));
    let method = preflight(&server, "/.netlify/functions/echo", APP, "PURGE").await;
    assert_eq!(method.status, 204);
    assert!(cors_headers(&method).is_empty(), "{:?}", method.headers);
    let header = send(
        "OPTIONS",
        &server.url("/.netlify/functions/echo"),
        &[
            ("origin", APP),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-secret"),
        ],
        "",
    )
    .await;
    assert_eq!(header.status, 204);
    assert!(cors_headers(&header).is_empty(), "{:?}", header.headers);

    // A sync function's preflight is answered by fnhost too; an unknown route is 404.
    let sync = preflight(&server, "/.netlify/functions/echo", APP, "PUT").await;
    assert_eq!(sync.status, 204);
    assert_eq!(sync.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        preflight(&server, "/.netlify/functions/nope", APP, "POST")
            .await
            .status,
        404
    );

    // Nothing ran, nothing was stored. Then one real call shows the log line does appear.
    assert_eq!(admin_list(&server).await, json!([]));
    let real = send(
        "GET",
        &server.url("/.netlify/functions/echo"),
        &[("origin", APP)],
        "",
    )
    .await;
    assert_eq!(real.status, 200);
    server
        .wait_for_log(
            &["invocation completed", "function=\"echo\""],
            Duration::from_secs(5),
        )
        .await;
    // Not a wait for state: a quiet period in which a stray invocation's line would appear
    // (an absence has no state to poll).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.count_log(&["invocation completed"]),
        1,
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn background_202_and_status_carry_cors_headers_and_foreign_origins_get_403() {
    let server = Server::with(&["hello-background"]).config(POLICY).start();
    let path = "/.netlify/functions/hello-background";

    let refused = send(
        "POST",
        &server.url(path),
        &[("origin", EVIL), ("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(cors_headers(&refused).is_empty(), "{:?}", refused.headers);
    assert_eq!(refused.header("fnhost-invocation-id"), None);
    assert_eq!(
        admin_list(&server).await,
        json!([]),
        "a refused request was stored"
    );

    let accepted = send(
        "POST",
        &server.url(path),
        &[("origin", APP), ("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let id = accepted.header("fnhost-invocation-id").unwrap().to_string();
    assert_eq!(accepted.header("access-control-allow-origin"), Some(APP));
    let exposed = accepted.header("access-control-expose-headers").unwrap();
    for name in ["fnhost-invocation-id", "location", "x-total"] {
        assert!(exposed.split(", ").any(|e| e == name), "{exposed}");
    }
    assert!(accepted.header("vary").unwrap().contains("Origin"));

    // The status resource carries them too, for the page that polls it.
    let status = send(
        "GET",
        &server.url(accepted.header("location").unwrap()),
        &[("origin", APP)],
        "",
    )
    .await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("access-control-allow-origin"), Some(APP));
    let foreign = send(
        "GET",
        &server.url(accepted.header("location").unwrap()),
        &[("origin", EVIL)],
        "",
    )
    .await;
    assert_eq!(foreign.status, 200);
    assert!(cors_headers(&foreign).is_empty());
    let list = admin_list(&server).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    wait_state(&server, &id, &["succeeded"], Duration::from_secs(10)).await;
}

#[tokio::test]
async fn sync_functions_get_the_missing_headers_and_function_tables_override() {
    let server = Server::with(&["echo"])
        .function_as("echo-other", "echo")
        .config(POLICY)
        .start();
    let reply = send(
        "GET",
        &server.url("/.netlify/functions/echo"),
        &[("origin", APP)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-echo"),
        Some("fnhost"),
        "the function's headers stay"
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        reply.header("access-control-expose-headers"),
        Some("x-total")
    );

    let refused = send(
        "GET",
        &server.url("/.netlify/functions/echo"),
        &[("origin", EVIL)],
        "",
    )
    .await;
    assert_eq!(refused.status, 403);
    // Same-origin requests (browsers send Origin on same-origin POSTs) and requests without an
    // Origin (curl, servers) are never refused.
    let own = format!("http://{}", server.addr);
    let same = send(
        "POST",
        &server.url("/.netlify/functions/echo"),
        &[("origin", own.as_str())],
        "x",
    )
    .await;
    assert_eq!(same.status, 200);
    assert!(cors_headers(&same).is_empty(), "{:?}", same.headers);
    assert_eq!(
        get(&server.url("/.netlify/functions/echo")).await.status,
        200
    );

    // [functions.echo-other.cors] replaces the site's origins for that function only.
    let other = |origin: &'static str| {
        let url = server.url("/.netlify/functions/echo-other");
        async move { send("GET", &url, &[("origin", origin)], "").await }
    };
    let ok = other("http://other.test").await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://other.test")
    );
    assert_eq!(other(APP).await.status, 403);
    server
        .wait_for_log(
            &["refused: origin not allowed", "function=\"echo-other\""],
            Duration::from_secs(5),
        )
        .await;
    // Not a wait for state: a quiet period in which a refused call's invocation line would
    // appear (an absence has no state to poll).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.count_log(&["invocation completed"]),
        4,
        "the refused calls must not run: {}",
        server.logs()
    );
}

#[tokio::test]
async fn without_a_policy_nothing_is_added_or_refused() {
    let server = Server::with(&["hello-background", "echo"])
        .config("[server]\nadmin_token = \"t0ken\"\n")
        .start();
    // OPTIONS reaches the function, as on Netlify (functions answer their own preflights).
    let pre = preflight(&server, "/.netlify/functions/echo", EVIL, "POST").await;
    assert_eq!(pre.status, 200, "{}", pre.text());
    assert_eq!(pre.json()["method"], "OPTIONS");
    assert!(cors_headers(&pre).is_empty());
    let post = send(
        "POST",
        &server.url("/.netlify/functions/hello-background"),
        &[("origin", EVIL)],
        "{}",
    )
    .await;
    assert_eq!(post.status, 202);
    assert!(cors_headers(&post).is_empty(), "{:?}", post.headers);
    assert_eq!(post.header("vary"), None);
    let sync = send(
        "GET",
        &server.url("/.netlify/functions/echo"),
        &[("origin", EVIL)],
        "",
    )
    .await;
    assert_eq!(sync.status, 200);
    assert!(cors_headers(&sync).is_empty());
    assert_eq!(admin_list(&server).await.as_array().unwrap().len(), 1);
}

fn serve_fails_with(files: &[(&str, &str)], toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions");
    std::fs::create_dir(&functions).unwrap();
    for (name, text) in files {
        std::fs::write(functions.join(name), text).unwrap();
    }
    let config = dir.path().join("fnhost.toml");
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(fnhost_bin())
        .arg("serve")
        .arg(&functions)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "started anyway");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_policies_and_bad_redirect_lines_refuse_to_start() {
    let stderr = serve_fails_with(
        &[],
        "[cors]\nallowed_origins = \"*\"\nallow_credentials = true\n",
    );
    assert!(
        stderr.contains("fnhost.toml:3:21: cors.allow_credentials: "),
        "{stderr}"
    );
    let stderr = serve_fails_with(
        &[],
        "[functions.x.cors]\nallowed_origns = [\"http://a.test\"]\n",
    );
    assert!(
        stderr.contains("fnhost.toml:2:1: unknown field `allowed_origns`"),
        "{stderr}"
    );
    let stderr = serve_fails_with(
        &[(
            "_redirects",
            "# ok\n/a/*  /.netlify/functions/:splat  200!\n/b  /c  2OO\n",
        )],
        "",
    );
    assert!(stderr.contains("functions/_redirects:3: "), "{stderr}");
    assert!(stderr.contains("\"2OO\" is not a status"), "{stderr}");
}

/// The forum's rule and friends.
const REDIRECTS: &str = "\
# Netlify syntax: FROM TO [STATUS][!]
/api/background/*           /.netlify/functions/:splat    200!
/api/items/:id              /.netlify/functions/echo?item=:id   200
/e/*                        /.netlify/functions/:splat    200
/.netlify/functions/hello   /.netlify/functions/echo      200
/.netlify/functions/echo2   /.netlify/functions/echo?forced=1   200!
/old/*                      /new/:splat                   301
/moved                      /.netlify/functions/hello     302
";

#[tokio::test]
async fn rewrites_follow_placeholders_splats_and_shadowing() {
    let server = Server::with(&["hello", "echo", "hello-background"])
        .function_as("echo2", "echo")
        .file("_redirects", REDIRECTS.as_bytes())
        .config("[[redirects]]\nfrom = \"/toml/:name\"\nto = \"/.netlify/functions/:name\"\nstatus = 200\n")
        .start();

    // The forum rule: a background function behind /api/background/.
    let bg = send(
        "POST",
        &server.url("/api/background/hello-background?name=rule"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(bg.status, 202, "{}", bg.text());
    let id = bg.header("fnhost-invocation-id").unwrap();
    let done = wait_state(&server, id, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(done["function"], "hello-background");

    // Placeholders, and the request's query passed on after the rule's own.
    let item = get(&server.url("/api/items/42?x=1")).await.json();
    assert_eq!(item["path"], "/.netlify/functions/echo");
    assert_eq!(item["query"], "item=42&x=1");
    let splat = get(&server.url("/e/echo?y=2")).await.json();
    assert_eq!(splat["path"], "/.netlify/functions/echo");
    assert_eq!(splat["query"], "y=2");
    let toml = get(&server.url("/toml/echo")).await.json();
    assert_eq!(toml["path"], "/.netlify/functions/echo");

    // Shadowing: an unforced rule does not apply where a function route answers...
    let hello = get(&server.url("/.netlify/functions/hello")).await;
    assert_eq!(hello.text(), "Hello from fnhost!\n");
    // ...a forced one does.
    let forced = get(&server.url("/.netlify/functions/echo2")).await.json();
    assert_eq!(forced["headers"]["fnhost-function"], "echo");
    assert_eq!(forced["query"], "forced=1");
    // A rewrite to nothing is the usual 404.
    assert_eq!(get(&server.url("/e/nope")).await.status, 404);
}

#[tokio::test]
async fn redirect_rules_answer_with_location() {
    let server = Server::with(&["hello"])
        .file("_redirects", REDIRECTS.as_bytes())
        .start();
    let moved = get(&server.url("/old/a/b?q=1")).await;
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("/new/a/b?q=1"));
    let found = get(&server.url("/moved")).await;
    assert_eq!(found.status, 302);
    assert_eq!(found.header("location"), Some("/.netlify/functions/hello"));
}

// --- small HTTP servers the tests start -------------------------------------------------------

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> http::Response<TestBody> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

/// A body fed by a channel: the upstream can answer in pieces.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// An upstream for proxy rules: `/stream` answers in two pieces a second apart; anything else
/// with `201` and a JSON description of the request it got.
async fn upstream() -> SocketAddr {
    serve_http(Arc::new(|req: http::Request<Incoming>| {
        Box::pin(async move {
            if req.uri().path() == "/stream" {
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                tokio::spawn(async move {
                    let _ = tx.send(Bytes::from_static(b"first\n")).await;
                    // The scenario, not a wait: an upstream that takes a second between pieces.
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    let _ = tx.send(Bytes::from_static(b"second\n")).await;
                });
                return http::Response::new(ChannelBody(rx).boxed());
            }
            let (parts, body) = req.into_parts();
            let header = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let body = body.collect().await.unwrap().to_bytes();
            let described = json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "host": header("host"),
                "forwarded_host": header("x-forwarded-host"),
                "body": String::from_utf8_lossy(&body),
            });
            let mut resp = full(201, "application/json", described.to_string());
            resp.headers_mut()
                .insert("x-upstream", http::HeaderValue::from_static("yes"));
            resp
        })
    }))
    .await
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn proxy_rules_stream_to_the_upstream_and_502_when_it_is_down() {
    let up = upstream().await;
    let rules = format!(
        "/up/*  http://{up}/:splat  200\n/down/*  http://127.0.0.1:{}/:splat  200\n/tls/*  https://{up}/:splat  200\n",
        dead_port()
    );
    let server = Server::with(&["hello"])
        .file("_redirects", rules.as_bytes())
        .start();

    let reply = send(
        "POST",
        &server.url("/up/some/where?x=1"),
        &[("content-type", "text/plain")],
        "payload",
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.header("x-upstream"), Some("yes"));
    let seen = reply.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/some/where");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["body"], "payload");
    assert_eq!(seen["host"], up.to_string());
    assert_eq!(seen["forwarded_host"], server.addr.to_string());

    // Streaming: the head and the first piece arrive before the upstream has finished.
    let started = Instant::now();
    let (head_after, body) = timed_get(&server.url("/up/stream")).await;
    assert!(
        head_after < Duration::from_millis(800),
        "head after {head_after:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(body, "first\nsecond\n");

    let down = get(&server.url("/down/x")).await;
    assert_eq!(down.status, 502, "{}", down.text());
    // An https upstream that speaks plain HTTP: the TLS handshake fails, the client sees a
    // 502 that names no address.
    let tls = get(&server.url("/tls/x")).await;
    assert_eq!(tls.status, 502);
    assert_eq!(tls.text(), "bad gateway: the upstream did not answer\n");
}

/// GET: time until the response head, and the whole body.
async fn timed_get(url: &str) -> (Duration, String) {
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().as_str().to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let started = Instant::now();
    let req = http::Request::get(uri.path())
        .header("host", authority)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let head_after = started.elapsed();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (head_after, String::from_utf8_lossy(&body).into_owned())
}

// --- the browser ------------------------------------------------------------------------------

/// Serves `tests/browser/*` and collects what pages POST to `/report`.
struct PageServer {
    addr: SocketAddr,
    reports: Arc<Mutex<Vec<Value>>>,
}

impl PageServer {
    async fn start() -> PageServer {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let dir = repo_root().join("tests").join("browser");
        let addr = serve_http(Arc::new(move |req: http::Request<Incoming>| {
            let sink = sink.clone();
            let dir = dir.clone();
            Box::pin(async move {
                let path = req.uri().path().trim_start_matches('/').to_string();
                if path == "report" {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    sink.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    return full(204, "text/plain", "");
                }
                let safe = !path.is_empty()
                    && path.ends_with(".html")
                    && !path.contains('/')
                    && !path.contains("..");
                match std::fs::read(dir.join(&path)) {
                    Ok(bytes) if safe => full(200, "text/html; charset=utf-8", bytes),
                    _ => full(404, "text/plain", "not found\n"),
                }
            })
        }))
        .await;
        PageServer { addr, reports }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for the report of the page labelled `page`.
    async fn report(&self, page: &str, within: Duration) -> Value {
        wait_until(
            &format!("a report from the page {page:?}"),
            within,
            async || {
                self.reports
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|r| r["page"] == page)
                    .cloned()
            },
        )
        .await
    }
}

/// A headless Chromium showing `url`, in a fresh profile, until dropped (its process group is
/// killed then).
struct Browser {
    child: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(binary: &PathBuf, url: &str) -> Browser {
        use std::os::unix::process::CommandExt as _;
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args(HEADLESS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        Browser {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser, its zygote and renderers share the process group we gave it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// Opens `url` in Chromium and waits for the page's report.
async fn visit(binary: &PathBuf, url: &str, pages: &PageServer, page: &str) -> Value {
    let browser = Browser::open(binary, url);
    let report = pages.report(page, Duration::from_secs(60)).await;
    drop(browser);
    report
}

#[tokio::test]
#[ignore = "needs chromium (installed by .ci/run); run with --ignored"]
async fn a_real_browser_calls_a_background_function_across_origins() {
    let binary = chromium();
    let allowed = PageServer::start().await;
    let foreign = PageServer::start().await;
    let config = format!(
        "[server]\nadmin_token = \"t0ken\"\n[cors]\nallowed_origins = [\"{}\"]\n",
        allowed.origin()
    );
    let server = Server::with(&["hello-background"]).config(&config).start();
    // The page is on http://127.0.0.1:A; fnhost on http://localhost:B: another origin.
    let fnhost = format!("http://localhost:{}", server.addr.port());

    let started = Instant::now();
    let url = format!(
        "{}/cross-origin.html?page=allowed&fnhost={fnhost}",
        allowed.origin()
    );
    let seen = visit(&binary, &url, &allowed, "allowed").await;
    eprintln!("allowed origin page ({:?}): {seen}", started.elapsed());
    assert_eq!(seen["error"], Value::Null, "{seen}");
    assert_eq!(seen["status"], 202, "{seen}");
    let id = seen["id"]
        .as_str()
        .expect("the page could read fnhost-invocation-id");
    assert_eq!(id.len(), 32);
    assert_eq!(seen["location"], format!("/.fnhost/invocations/{id}"));
    assert_eq!(seen["state"], "succeeded", "{seen}");
    assert_eq!(seen["result"]["status"], 200, "{seen}");

    let started = Instant::now();
    let url = format!(
        "{}/cross-origin.html?page=foreign&fnhost={fnhost}",
        foreign.origin()
    );
    let seen = visit(&binary, &url, &foreign, "foreign").await;
    eprintln!("foreign origin page ({:?}): {seen}", started.elapsed());
    assert_eq!(
        seen["errorName"], "TypeError",
        "the fetch must fail with a CORS error: {seen}"
    );
    assert_eq!(seen["status"], Value::Null);
    let list = admin_list(&server).await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only the allowed page's call: {list}"
    );
    assert_eq!(
        server.count_log(&["invocation completed", "function=\"hello-background\""]),
        1,
        "{}",
        server.logs()
    );
}

#[tokio::test]
#[ignore = "needs chromium (installed by .ci/run); run with --ignored"]
async fn a_real_browser_calls_through_a_same_origin_rewrite_without_any_policy() {
    let binary = chromium();
    let pages = PageServer::start().await;
    // fnhost serves functions, not files: the page reaches the browser through fnhost's own
    // proxy rule, so page and functions share fnhost's origin, as on Netlify.
    let rules = format!(
        "/api/background/*  /.netlify/functions/:splat  200!\n/app/*  {}/:splat  200\n",
        pages.origin()
    );
    let server = Server::with(&["hello-background"])
        .file("_redirects", rules.as_bytes())
        .start();
    let started = Instant::now();
    let url = format!(
        "http://localhost:{}/app/same-origin.html",
        server.addr.port()
    );
    let seen = visit(&binary, &url, &pages, "same-origin").await;
    eprintln!("same-origin page ({:?}): {seen}", started.elapsed());
    assert_eq!(seen["error"], Value::Null, "{seen}");
    assert_eq!(seen["status"], 202, "{seen}");
    assert_eq!(
        seen["allowOrigin"],
        Value::Null,
        "no CORS headers without a policy"
    );
    assert_eq!(seen["id"].as_str().map(str::len), Some(32), "{seen}");
    assert_eq!(seen["state"], "succeeded", "{seen}");
    assert_eq!(
        seen["result"]["body"]
            .as_str()
            .map(|b| b.contains("Hello, rewrite")),
        Some(true),
        "{seen}"
    );
}
