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

/// `GET /.netlify/functions/NAME?OP=PATH` on the sandbox guest: status and body.
async fn probe(server: &Server, name: &str, op: &str, path: &str) -> (u16, String) {
    let reply = get(&server.url(&format!("/.netlify/functions/{name}?{op}={path}"))).await;
    (reply.status, reply.text())
}

#[tokio::test]
async fn bundled_files_are_read_only_and_closed() {
    // An absolute directory holding a table, a subdirectory and a link out of it.
    let assets = tempfile::tempdir().unwrap();
    std::fs::write(assets.path().join("table.json"), br#"{"fr":"bonjour"}"#).unwrap();
    std::fs::create_dir(assets.path().join("sub")).unwrap();
    std::fs::write(assets.path().join("sub/note.txt"), b"deep").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", assets.path().join("passwd")).unwrap();
    let config = format!(
        "[functions.bundle]\nfiles = {:?}\n[functions.relative]\nfiles = \"functions/assets\"\n",
        assets.path()
    );
    let server = Server::with(&[])
        .function_as("bundle", "guest-env")
        .function_as("relative", "guest-env")
        .function_as("none", "guest-env")
        .file("assets/hello.txt", b"relative to the site file")
        .config(&config)
        .start();

    assert_eq!(
        probe(&server, "bundle", "read", "/table.json").await,
        (200, r#"{"fr":"bonjour"}"#.to_string())
    );
    assert_eq!(
        probe(&server, "bundle", "read", "sub/note.txt").await,
        (200, "deep".to_string())
    );
    assert_eq!(
        probe(&server, "relative", "read", "/hello.txt").await,
        (200, "relative to the site file".to_string())
    );
    // Nothing outside the bundle: not through `..`, not through a link, not as another
    // function's bundle; and nothing is written.
    for (name, op, path) in [
        ("bundle", "read", "/../../../etc/passwd"),
        ("bundle", "read", "../fnhost.toml"),
        ("bundle", "read", "/passwd"),
        ("bundle", "read", "/etc/hostname"),
        ("bundle", "write", "/new.txt"),
        ("bundle", "write", "/table.json"),
        ("none", "read", "/table.json"),
        ("none", "list", "/"),
    ] {
        let (status, body) = probe(&server, name, op, path).await;
        assert_eq!(status, 403, "{name} {op} {path}: {body}");
        assert!(!body.contains("root:"), "{body}");
    }
    assert_eq!(
        std::fs::read(assets.path().join("table.json")).unwrap(),
        br#"{"fr":"bonjour"}"#
    );
    assert!(!assets.path().join("new.txt").exists());
    assert_eq!(
        probe(&server, "bundle", "list", "/").await,
        (200, "passwd\nsub\ntable.json\n".to_string())
    );
}

#[tokio::test]
async fn a_bundle_over_its_cap_or_missing_refuses_the_function_with_its_path() {
    let config = "[functions.big]\nfiles = \"functions/big\"\nmax_files = \"1KB\"\n\
        [functions.gone]\nfiles = \"no/such/dir\"\n";
    let server = Server::with(&["hello"])
        .function_as("big", "guest-env")
        .function_as("gone", "guest-env")
        .file("big/blob.bin", &[7u8; 2048])
        .config(config)
        .start();
    let logs = server.stdout.lock().unwrap().join("\n") + &server.logs();
    assert!(
        logs.contains("holds more than max_files = 1024 bytes"),
        "{logs}"
    );
    assert!(logs.contains("no/such/dir"), "{logs}");
    assert_eq!(
        get(&server.url("/.netlify/functions/big")).await.status,
        404
    );
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );
}
