//! Functions written in JavaScript (jco / componentize-js) and Python (componentize-py), built
//! from `examples/js-hello`, `examples/js-workflow`, `examples/python-hello`,
//! `examples/python-background` and `examples/python-workflow` by the same `fnhost build` as
//! the Rust ones, and served unchanged.

use std::time::{Duration, Instant};

use crate::background::{Destination, accepted_id, post};
use crate::support::{Server, component, get, send};

/// The JavaScript example, built by jco (node and npm).
const JS: (&str, &str) = ("js-hello", "JavaScript");
/// The Python example, built by componentize-py.
const PYTHON: (&str, &str) = ("python-hello", "Python");

/// Serves the named components (each must have built: see `support::component`).
fn serve(names: &[&str], config: &str) -> Server {
    let mut builder = Server::with(&[]).config(config);
    for name in names {
        builder = builder.function_file(name, &component(name));
    }
    builder.start()
}

/// The hello example `name`, written in `language`, sees the query and body and sets its status
/// and headers.
async fn hello_sees_the_request_and_sets_status_and_headers((name, language): (&str, &str)) {
    let server = serve(&[name], "");
    let path = format!("/.netlify/functions/{name}");
    let reply = get(&server.url(&format!("{path}?name=Ada"))).await;
    assert_eq!(reply.status, 200, "{name}: {}", reply.text());
    assert_eq!(reply.text(), format!("Hello, Ada from {language}!\n"));
    assert_eq!(
        reply.header("x-language"),
        Some(language.to_lowercase().as_str())
    );
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        get(&server.url(&path)).await.text(),
        format!("Hello, world from {language}!\n"),
        "{name}: no name in the query"
    );

    let body = "grüße, fnhost";
    let reply = send("POST", &server.url(&format!("{path}?name=Bo")), &[], body).await;
    assert_eq!(reply.status, 200, "{name}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json = reply.json();
    assert_eq!(json["language"], language.to_lowercase(), "{json}");
    assert_eq!(json["name"], "Bo", "{json}");
    assert_eq!(json["length"], body.len(), "{json}: length in bytes");
    assert_eq!(json["body"], body, "{json}");
}

/// The hello example `name` reads Netlify's `context` from fnhost's headers (`?context`).
async fn hello_reads_the_netlify_context((name, _): (&str, &str)) {
    let config = "[server]\nsite = \"shop\"\ntrusted_proxies = [\"127.0.0.1\"]\n";
    let server = serve(&[name], config);
    let headers = [
        ("x-forwarded-for", "198.51.100.7"),
        ("x-country", "FR"),
        ("cookie", "theme=dark; session=\"abc\""),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    let url = server.url(&format!("/.netlify/functions/{name}/a/b?context"));
    let reply = send("GET", &url, &headers, "").await;
    assert_eq!(reply.status, 200, "{name}: {}", reply.text());
    let ctx = reply.json();
    assert_eq!(ctx["ip"], "198.51.100.7", "{ctx}");
    assert_eq!(ctx["requestId"].as_str().map(str::len), Some(32), "{ctx}");
    assert_eq!(ctx["params"]["*"], "a/b", "{ctx}");
    assert_eq!(ctx["cookies"]["session"], "abc", "{ctx}");
    assert_eq!(ctx["site"]["name"], "shop", "{ctx}");
    assert_eq!(ctx["geo"]["country"]["code"], "FR", "{ctx}");
    assert!(ctx["deploy"]["id"].is_null(), "{ctx}");
    // Traces are off here: the client's traceparent reaches the guest untouched.
    assert_eq!(ctx["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736", "{ctx}");
}

#[tokio::test]
#[ignore = "needs node and npm (installed by .ci/run); run with --ignored"]
async fn a_javascript_function_reads_the_netlify_context() {
    hello_reads_the_netlify_context(JS).await;
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_python_function_reads_the_netlify_context() {
    hello_reads_the_netlify_context(PYTHON).await;
}

#[tokio::test]
#[ignore = "needs node and npm (installed by .ci/run); run with --ignored"]
async fn a_javascript_function_sees_the_query_and_body_and_sets_status_and_headers() {
    hello_sees_the_request_and_sets_status_and_headers(JS).await;
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_python_function_sees_the_query_and_body_and_sets_status_and_headers() {
    hello_sees_the_request_and_sets_status_and_headers(PYTHON).await;
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_python_function_declares_its_methods_through_the_config_export() {
    let server = serve(&["python-hello"], "");
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("python-hello") && l.contains("[GET,POST]")),
        "{table}"
    );
    let reply = send(
        "PUT",
        &server.url("/.netlify/functions/python-hello"),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, POST"));
}

/// The hello example `name`, written in `language`, spinning on `?spin=1`, gets 504 at its
/// 1 s budget; the next request gets a fresh instance and answers normally.
async fn a_spinning_handler_gets_504_at_its_budget((name, language): (&str, &str)) {
    let server = serve(&[name], &format!("[functions.{name}]\ntimeout = \"1s\"\n"));
    let path = format!("/.netlify/functions/{name}");
    let started = Instant::now();
    let reply = get(&server.url(&format!("{path}?spin=1"))).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{name}: {}", reply.text());
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{name} stopped after {took:?}"
    );
    // The next request gets a fresh instance and answers normally.
    assert_eq!(
        get(&server.url(&path)).await.text(),
        format!("Hello, world from {language}!\n")
    );
}

#[tokio::test]
#[ignore = "needs node and npm (installed by .ci/run); run with --ignored"]
async fn a_spinning_javascript_handler_gets_504_at_its_budget() {
    a_spinning_handler_gets_504_at_its_budget(JS).await;
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_spinning_python_handler_gets_504_at_its_budget() {
    a_spinning_handler_gets_504_at_its_budget(PYTHON).await;
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_python_background_function_is_acknowledged_then_reports_to_its_destination() {
    let dest = Destination::start().await;
    let config = format!(
        "[functions.python-background]\non_success = \"{}\"\n",
        dest.url("/done")
    );
    let server = serve(&["python-background"], &config);
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("python-background") && l.contains("background")),
        "the -background suffix selects the mode: {table}"
    );

    let body = r#"{"text": "three little words"}"#;
    let reply = post(&server, "/.netlify/functions/python-background", &[], body).await;
    let id = accepted_id(&reply);
    let record = dest.wait_for(&id, Duration::from_secs(30)).await;
    assert_eq!(record["requestContext"]["condition"], "Success", "{record}");
    // A JSON request body is passed on as JSON (AWS's requestPayload).
    assert_eq!(
        record["requestPayload"]["text"], "three little words",
        "{record}"
    );
    let payload = &record["responsePayload"];
    assert_eq!(payload["words"], 3, "{record}");
    assert_eq!(payload["attempt"], 1, "{record}");
    assert_eq!(payload["invocation"], id.as_str(), "{record}");
}

/// A workflow example (`name`) imports `fnhost:function/steps` through its language's
/// bindings: it waits for its event, sleeps, and charges and asks for a review once each
/// across its three runs.
async fn a_workflow_waits_sleeps_and_does_each_step_once(name: &str, config: &str) {
    let server = serve(
        &[name],
        &format!("[server]\nadmin_token = \"t0ken\"\n{config}"),
    );
    let path = format!("/.netlify/functions/{name}?order=o-1&settle_ms=500");
    let id = accepted_id(&post(&server, &path, &[], "").await);
    let s =
        crate::background::wait_state(&server, &id, &["waiting"], Duration::from_secs(30)).await;
    assert_eq!(s["waiting_for"]["event"], "order.shipped", "{s}");
    let sent = crate::workflows::send_event(&server, "order.shipped", "o-1", "TRK-9", &[]).await;
    assert_eq!(
        sent.json()["woke"],
        serde_json::json!([id]),
        "{}",
        sent.text()
    );
    let s =
        crate::background::wait_state(&server, &id, &["succeeded"], Duration::from_secs(30)).await;
    let body: serde_json::Value =
        serde_json::from_str(s["result"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"order": "o-1", "receipt": "receipt-o-1", "tracking": "TRK-9", "review": "sent"})
    );
    assert_eq!(
        server.count_log(&["workflow run o-1", &id]),
        3,
        "waited, slept, finished"
    );
    assert_eq!(server.count_log(&["charged o-1", &id]), 1);
    assert_eq!(
        server.count_log(&["review requested for o-1 (TRK-9)", &id]),
        1
    );
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_python_workflow_waits_sleeps_and_does_each_step_once() {
    // Background by its config export.
    a_workflow_waits_sleeps_and_does_each_step_once("python-workflow", "").await;
}

#[tokio::test]
#[ignore = "needs node and npm (installed by .ci/run); run with --ignored"]
async fn a_javascript_workflow_waits_sleeps_and_does_each_step_once() {
    let config = "[functions.js-workflow]\nbackground = true\n";
    a_workflow_waits_sleeps_and_does_each_step_once("js-workflow", config).await;
}

#[tokio::test]
#[ignore = "needs node, npm and componentize-py (installed by .ci/run); run with --ignored"]
async fn big_components_start_from_the_compile_cache_the_second_time() {
    let names = [JS.0, PYTHON.0];
    // The run's shared cache: the first start may compile (or another test already did).
    drop(serve(&names, ""));
    let second = serve(&names, "");
    second
        .wait_for_log(
            &[
                &format!("loaded {} function(s)", names.len()),
                &format!("{} from cache, 0 compiled", names.len()),
            ],
            Duration::from_secs(1),
        )
        .await;
}

/// JavaScript's `event.waitUntil(promise)` is fnhost's waitUntil: the client has its answer
/// before the work the promise does (a POST 300 ms later) reaches the upstream.
#[tokio::test]
#[ignore = "needs node and npm (installed by .ci/run); run with --ignored"]
async fn a_javascript_function_answers_first_then_finishes_through_wait_until() {
    let upstream = crate::support::Arrivals::start().await;
    let server = serve(
        &[JS.0],
        &format!(
            "[functions.js-hello]\nallowed_outbound_hosts = [\"http://{}\"]\n",
            upstream.addr
        ),
    );
    let reply = get(&server.url(&format!(
        "/.netlify/functions/js-hello?name=Ada&later=http://{}/report",
        upstream.addr
    )))
    .await;
    let answered = Instant::now();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "Hello, Ada from JavaScript!\n");
    assert!(upstream.none_yet(), "the work ran before the answer");
    let posted = upstream.first(Duration::from_secs(10)).await;
    assert!(posted >= answered);
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_python_wasi_0_3_function_declares_its_routes_echoes_and_fetches_concurrently() {
    let up = crate::sandbox::upstream().await;
    let server = serve(
        &["python-p3"],
        &format!(
            "[functions.python-p3]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            up.port()
        ),
    );
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table.contains("wasi:http@0.3") && table.contains("/py3/*"),
        "its config export declares its routes: {table}"
    );
    let reply = get(&server.url("/py3?name=Ada")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "Hello, Ada from Python on WASI 0.3!\n");

    let body: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let reply = send(
        "POST",
        &server.url("/py3/echo"),
        &[("content-type", "application/octet-stream")],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body == body,
        "the echo differs ({} bytes)",
        reply.body.len()
    );

    let url = format!("http://127.0.0.1:{}/ping", up.port());
    let reply = get(&server.url(&format!("/py3/fetch?url={url}&url={url}"))).await;
    assert_eq!(
        reply.text(),
        format!("{url} 200 4\n{url} 200 4\n"),
        "both downloads, one line each"
    );
    let reply = get(&server.url("/py3/fetch?url=http://192.0.2.1/x")).await;
    assert_eq!(reply.text(), "http://192.0.2.1/x error HttpRequestDenied\n");
}
