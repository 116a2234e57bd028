//! The sandbox: environment, outbound HTTP allow-list, guest output in the log.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{Server, get};

/// A loopback HTTP server answering `pong` to everything; returns its address.
pub async fn upstream() -> SocketAddr {
    use http_body_util::BodyExt;
    crate::support::serve_http(std::sync::Arc::new(|_req| {
        Box::pin(async {
            let body = http_body_util::Full::new(bytes::Bytes::from("pong"))
                .map_err(|never| match never {})
                .boxed();
            http::Response::new(body)
        })
    }))
    .await
}

#[tokio::test]
async fn a_guest_sees_only_its_own_environment() {
    let server = Server::with(&[])
        .function_as("env", "guest-env")
        .function_as("other", "guest-env")
        .config("[defaults]\nenv = { SITE = \"all\" }\n[functions.env]\nenv = { GREETING = \"hi\" }\n[functions.other]\nenv = { SECRET = \"other-only\" }\n")
        .start();
    let reply = get(&server.url("/.netlify/functions/env")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text().trim(), "GREETING=hi\nSITE=all");
}

#[tokio::test]
async fn outbound_http_is_denied_unless_allowed() {
    let up = upstream().await;
    let config = format!(
        "[functions.allowed]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n\
         [functions.wildcard]\nallowed_outbound_hosts = [\"http://*:*\"]\n",
        port = up.port()
    );
    let server = Server::with(&[])
        .function_as("denied", "guest-outbound")
        .function_as("allowed", "guest-outbound")
        .function_as("wildcard", "guest-outbound")
        .config(&config)
        .start();
    let target = format!("?url=http://127.0.0.1:{}/ping", up.port());

    let reply = get(&server.url(&format!("/.netlify/functions/allowed{target}"))).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "upstream 200: pong")
    );

    // Not in the list: the guest gets an error value, not a trap.
    let reply = get(&server.url(&format!("/.netlify/functions/denied{target}"))).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );

    // A wildcard does not open loopback: private addresses need an explicit entry.
    let reply = get(&server.url(&format!("/.netlify/functions/wildcard{target}"))).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );
    // A name that resolves to loopback is refused the same way.
    let reply = get(&server.url(&format!(
        "/.netlify/functions/wildcard?url=http://localhost:{}/",
        up.port()
    )))
    .await;
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );
    server
        .wait_for_log(&["outbound request", "denied"], Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn guest_output_is_logged_with_function_and_invocation_id() {
    let server = Server::with(&[])
        .function_as("counter", "guest-counter")
        .start();
    let reply = get(&server.url("/.netlify/functions/counter")).await;
    assert_eq!((reply.status, reply.text().trim()), (200, "1"));
    // A sync function's answer passes through untouched: the client gets no invocation id;
    // the log is where the id is.
    assert_eq!(reply.header("fnhost-invocation-id"), None);
    // The counter guest prints `counter is N` on stdout.
    let line = server
        .wait_for_log(
            &["counter is 1", "function=\"counter\""],
            Duration::from_secs(5),
        )
        .await;
    let id = line
        .split("id=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no id=\"...\" in {line}"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "not an invocation id: {id:?} in {line}"
    );
    // The id is this invocation's: the host's own line for it names the same one.
    server
        .wait_for_log(
            &[
                "invocation completed",
                "function=\"counter\"",
                &format!("id=\"{id}\""),
            ],
            Duration::from_secs(5),
        )
        .await;
}
