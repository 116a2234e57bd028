//! Hostile clients and operator mistakes, as a client sees them: slow clients, a second host on
//! the same data dir, SIGTERM in a burst, and paths that try to leave the site.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::background::{FAST, accepted_id, post, wait_state};
use crate::support::{Server, fnhost_bin, get, shared_cache, wait_until};

/// Reads until the server closes the connection (or `within` passes): what it sent.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed
        .ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

/// Regression (slowloris): connections that sent half a request head stayed open forever.
#[tokio::test]
async fn half_sent_request_heads_are_dropped_at_header_timeout_while_others_are_served() {
    let server = Server::with(&["hello"])
        .config("[server]\nheader_timeout = \"1s\"\n")
        .start();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /.netlify/functions/hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let reply = get(&server.url("/.netlify/functions/hello")).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a normal request waited {:?} behind 200 slow ones",
        started.elapsed()
    );
    // Every one is closed within a few header timeouts; one deadline for all of them.
    let since = Instant::now();
    let closing = slow.into_iter().map(|mut s| async move {
        read_until_closed(&mut s, Duration::from_secs(6))
            .await
            .is_some()
    });
    let closed = futures::future::join_all(closing).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open, 0,
        "{open} of 200 half-sent heads still open after 6 s"
    );
    assert!(
        since.elapsed() < Duration::from_secs(5),
        "dropped after {:?}",
        since.elapsed()
    );
}

/// Regression: the sync slot was taken before the body was read, so slow uploaders made every
/// synchronous function answer 503.
#[tokio::test]
async fn a_slow_upload_holds_no_sync_slot_and_gets_408_at_body_timeout() {
    let server = Server::with(&["hello", "echo"])
        .config("[server]\nmax_concurrency = 1\nbody_timeout = \"2s\"\n")
        .start();
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(
            b"POST /.netlify/functions/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
        )
        .await
        .unwrap();
        uploads.push(s);
    }
    // Wait until the server is reading those bodies: their heads were parsed by now when a
    // request sent after them on a fresh connection has been answered.
    for _ in 0..3 {
        let reply = get(&server.url("/.netlify/functions/hello")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let answers = futures::future::join_all(
        uploads
            .iter_mut()
            .map(|s| read_until_closed(s, Duration::from_secs(10))),
    )
    .await;
    for answer in answers {
        let answer = answer.expect("answered and closed after the body timeout");
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a stalled upload got {answer:?}"
        );
    }
}

/// Regression: a second `fnhost serve` on the same data dir re-queued the live one's running
/// invocations (the function ran twice) before failing to bind.
#[tokio::test]
async fn a_second_serve_on_the_same_data_dir_is_refused_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::with(&[])
        .function_as("slow-background", "guest-sleep")
        .config(FAST)
        .data_dir(data.path())
        .start();
    let id = accepted_id(
        &post(
            &server,
            "/.netlify/functions/slow-background?ms=2500",
            &[],
            "",
        )
        .await,
    );
    let running = wait_state(&server, &id, &["running"], Duration::from_secs(10)).await;

    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("functions")).unwrap();
    let second = tokio::process::Command::new(fnhost_bin())
        .arg("serve")
        .arg(other.path().join("functions"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--cache-dir")
        .arg(shared_cache())
        .current_dir(other.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second fnhost exits instead of serving")
        .expect("run a second fnhost");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&data.path().display().to_string())
            && stderr.contains(&format!("pid {}", server.pid()))
            && stderr.contains("in use by another fnhost"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&second.stdout).is_empty(),
        "it listened"
    );

    let done = wait_state(&server, &id, &["succeeded"], Duration::from_secs(15)).await;
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(done["started_at"], running["started_at"], "{done}");
    assert!(
        !server.logs().contains("lease was taken over"),
        "{}",
        server.logs()
    );
}

/// Regression: SIGTERM during a burst of background POSTs closed connections before their
/// `202`: the queue writer stopped before HTTP drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_a_burst_of_background_posts_answers_every_client_and_runs_every_202() {
    let data = tempfile::tempdir().unwrap();
    let start = || {
        Server::with(&[])
            .function_as("burst-background", "guest-sleep")
            // No grace: the worker stops at once, so the HTTP side must not depend on it.
            .config(&FAST.replace("shutdown_grace = \"1s\"", "shutdown_grace = \"0s\""))
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    let url = server.url("/.netlify/functions/burst-background?ms=10");
    // Big bodies make each group commit take a while, so SIGTERM lands during one.
    let payload = "x".repeat(200 * 1024);
    // 60 clients POST back to back, each on a fresh connection, until the server is gone.
    let mut clients = Vec::new();
    for c in 0..60 {
        let (url, payload) = (url.clone(), payload.clone());
        clients.push(tokio::spawn(async move {
            let (mut accepted, mut refused, mut cut_off) = (Vec::new(), 0, Vec::new());
            for i in 0..2_000 {
                let body = format!("client {c} request {i} {payload}");
                match crate::support::try_send("POST", &url, &[], body.into()).await {
                    Ok(reply) if reply.status == 202 => accepted.push(accepted_id(&reply)),
                    Ok(reply) if reply.status == 503 => refused += 1,
                    Ok(reply) => cut_off.push(format!("{} {}", reply.status, reply.text())),
                    // The listener is closed: connecting fails, nothing was sent.
                    Err(e) if e.contains("Connection refused") => break,
                    // Reset in the listen backlog when the listener closed: never accepted,
                    // never read (the kernel answers with RST; a client may retry).
                    Err(e) if e.contains("reset by peer") || e == "connection error" => {
                        refused += 1
                    }
                    // Accepted, then closed without an answer: what must never happen.
                    Err(e) => cut_off.push(e),
                }
            }
            (accepted, refused, cut_off)
        }));
    }
    wait_until("enqueues under way", Duration::from_secs(10), async || {
        let health = get(&server.url("/.fnhost/health")).await.json();
        let stored: i64 = health["invocations"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_i64()).sum());
        if stored >= 50 {
            Ok(())
        } else {
            Err(health.to_string())
        }
    })
    .await;
    let status = server.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let (mut accepted, mut refused, mut cut_off) = (Vec::new(), 0, Vec::new());
    for client in clients {
        let (a, r, c) = client.await.unwrap();
        accepted.extend(a);
        refused += r;
        cut_off.extend(c);
    }
    assert!(
        cut_off.is_empty(),
        "requests answered by no whole answer: {cut_off:?}"
    );
    assert!(accepted.len() >= 50, "{} accepted", accepted.len());
    eprintln!("{} accepted, {refused} refused", accepted.len());

    let server = start();
    for id in &accepted {
        wait_state(&server, id, &["succeeded"], Duration::from_secs(30)).await;
    }
}

/// Regression: `/go/*  /:splat  301` answered `GET /go//evil.com` with `Location: //evil.com`,
/// and `..` segments passed through to rules and proxies.
#[tokio::test]
async fn paths_with_dot_or_empty_segments_are_refused_and_redirects_stay_on_site() {
    let server = Server::with(&["hello"])
        .file(
            "_redirects",
            b"/go/*  /:splat  301\n/api/*  /.netlify/functions/:splat  200\n",
        )
        .start();
    let ok = get(&server.url("/go/somewhere/else")).await;
    assert_eq!(ok.status, 301);
    assert_eq!(ok.header("location"), Some("/somewhere/else"));
    for bad in [
        "/go//evil.com",
        "/api/../.fnhost/invocations",
        "/api/%2e%2e/admin",
        "/.netlify/functions/./hello",
    ] {
        let reply = get(&server.url(bad)).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        assert_eq!(reply.header("location"), None, "{bad}");
    }
    assert_eq!(get(&server.url("/api/hello")).await.status, 200);
}

/// An invocation id no one has: its own message, not a route's.
#[tokio::test]
async fn an_unknown_invocation_is_named_as_such() {
    let server = Server::with(&["hello"]).start();
    let reply = get(&server.url("/.fnhost/invocations/nope")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (404, "no invocation nope\n")
    );
}

/// Regression: an `Idempotency-Key` reused with a different body was answered `202` with the
/// first invocation's id, silently dropping the second payload.
#[tokio::test]
async fn an_idempotency_key_reused_with_another_body_is_a_422_and_stores_nothing() {
    let server = Server::with(&[])
        .function_as("order-background", "guest-sleep")
        .config("[server]\nadmin_token = \"t0ken\"\n")
        .start();
    let key = [("idempotency-key", "order-7")];
    let path = "/.netlify/functions/order-background?ms=10";
    let first = accepted_id(&post(&server, path, &key, "{\"qty\": 1}").await);
    let again = accepted_id(&post(&server, path, &key, "{\"qty\": 1}").await);
    assert_eq!(first, again);
    let other = post(&server, path, &key, "{\"qty\": 2}").await;
    assert_eq!(other.status, 422, "{}", other.text());
    assert!(
        other
            .text()
            .contains("Idempotency-Key already used with a different request"),
        "{}",
        other.text()
    );
    // Security item 2: the 422 says nothing of the first request, least of all its id.
    assert!(!other.text().contains(&first), "{}", other.text());
    assert_eq!(other.header("fnhost-invocation-id"), None);
    let list = crate::support::admin_list(&server).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

/// Regression: an invocation whose attempts kept killing the host was re-queued by every
/// restart with the attempt not counted — a crash loop. Now each cut-off attempt counts as an
/// interruption, and past `max_interruptions` the invocation is dead and reported.
#[tokio::test]
async fn an_invocation_that_keeps_killing_its_host_is_dead_after_max_interruptions() {
    let dest = crate::background::Destination::start().await;
    let data = tempfile::tempdir().unwrap();
    // `max_interruptions` goes in [server], the table FAST opens with.
    let config = format!(
        "{}[functions.doomed-background]\non_failure = \"{}\"\n",
        FAST.replacen("[server]\n", "[server]\nmax_interruptions = 2\n", 1),
        dest.url("/failed")
    );
    let start = || {
        Server::with(&[])
            .function_as("doomed-background", "guest-sleep")
            .config(&config)
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    let id = accepted_id(
        &post(
            &server,
            "/.netlify/functions/doomed-background?ms=600000",
            &[],
            "{}",
        )
        .await,
    );
    let mut started = serde_json::Value::Null;
    for round in 1..=2 {
        // Running again: a fresh start of the same first attempt.
        let running = wait_until(
            &format!("round {round}: {id} running anew"),
            Duration::from_secs(10),
            async || {
                let s = crate::background::status(&server, &id).await;
                if s["state"] == "running" && s["started_at"] != started {
                    Ok(s)
                } else {
                    Err(s)
                }
            },
        )
        .await;
        started = running["started_at"].clone();
        assert_eq!(running["attempts"], 1, "round {round}: {running}");
        // The host dies mid-attempt (as if the guest had brought it down).
        server.kill9();
        server = start();
    }
    let dead = wait_state(&server, &id, &["dead"], Duration::from_secs(10)).await;
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted 2 times"),
        "{dead}"
    );
    let record = dest.wait_for(&id, Duration::from_secs(10)).await;
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert!(
        record["responsePayload"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("max_interruptions"),
        "{record}"
    );
}

/// Regression: finished invocations, their results and records were kept for ever.
#[tokio::test]
async fn finished_invocations_are_purged_after_the_retention() {
    let server = Server::with(&[])
        .function_as("short-background", "guest-sleep")
        .config("[server]\nretention = \"1s\"\n")
        .start();
    let id = accepted_id(
        &post(
            &server,
            "/.netlify/functions/short-background?ms=1",
            &[],
            "",
        )
        .await,
    );
    wait_state(&server, &id, &["succeeded"], Duration::from_secs(10)).await;
    wait_until(
        "the finished invocation to be purged",
        Duration::from_secs(10),
        async || {
            let reply = get(&server.url(&format!("/.fnhost/invocations/{id}"))).await;
            if reply.status == 404 {
                Ok(())
            } else {
                Err(reply.text())
            }
        },
    )
    .await;
    server
        .wait_for_log(&["purged 1 finished invocation(s)"], Duration::from_secs(5))
        .await;
}

/// Regression: guest output was unbounded, and each line a blocking write from a serving
/// thread. A guest printing 100 MB is logged up to `max_log`, then one line says the rest was
/// dropped, and the host keeps serving.
#[tokio::test]
async fn a_guest_printing_100_mb_is_cut_at_max_log_and_the_host_keeps_serving() {
    let server = Server::with(&["hello"])
        .function_as("chatty", "guest-chatty")
        .config("[functions.chatty]\nmax_log = \"64KB\"\n")
        .start();
    let reply = get(&server.url("/.netlify/functions/chatty?lines=10000&size=10000")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "printed 100010000 bytes\n")
    );
    server
        .wait_for_log(
            &["log truncated", "function=\"chatty\""],
            Duration::from_secs(10),
        )
        .await;
    let printed = server.count_log(&["function=\"chatty\"", "xxxxxxxxxx"]);
    // 64 KiB of 10,001-byte lines: 6 fit.
    assert_eq!(printed, 6, "guest lines logged");
    assert_eq!(server.count_log(&["log truncated"]), 1);
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );
    // The next invocation has its own budget.
    let small = get(&server.url("/.netlify/functions/chatty?lines=2&size=10")).await;
    assert_eq!(small.status, 200);
    wait_until(
        "the next invocation's lines",
        Duration::from_secs(5),
        async || {
            let n = server.count_log(&["function=\"chatty\"", "xxxxxxxxxx"]);
            if n == 8 {
                Ok(())
            } else {
                Err(format!("{n} lines"))
            }
        },
    )
    .await;
}

/// Regression: an instance could open any number of outbound requests at once. Past
/// `max_outbound` in flight, a request gets `connection-limit-reached` (an error value the
/// guest handles), and the others go through.
#[tokio::test]
async fn outbound_requests_past_max_outbound_get_an_error_value() {
    let upstream = crate::support::serve_http(std::sync::Arc::new(|_req| {
        Box::pin(async {
            // Slow enough that all of them are in flight together.
            tokio::time::sleep(Duration::from_millis(300)).await;
            http::Response::new(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        })
    }))
    .await;
    let server = Server::with(&[])
        .function_as("fanout", "guest-fanout")
        .config(&format!(
            "[functions.fanout]\nmax_outbound = 4\nallowed_outbound_hosts = [\"http://{upstream}\"]\n"
        ))
        .start();
    let url = format!("http://{upstream}/slow");
    let reply = get(&server.url(&format!("/.netlify/functions/fanout?n=6&url={url}"))).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "ok=4 limited=2 other=0\n")
    );
    // Slots come back when the exchanges end.
    let again = get(&server.url(&format!("/.netlify/functions/fanout?n=4&url={url}"))).await;
    assert_eq!(again.text(), "ok=4 limited=0 other=0\n");
}

/// Sends `GET /nope` on a keep-alive connection and reads its whole answer.
async fn ask(s: &mut TcpStream) {
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).ends_with("no function at /nope\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Regression: idle keep-alive connections were kept for ever (hyper 1 sets no timeout
/// unless told). 5,000 of them are closed at `idle_timeout`, each after a whole answer; one
/// that speaks again in time is served on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_at_idle_timeout() {
    let server = Server::with(&["hello"])
        .config("[server]\nidle_timeout = \"2s\"\nheader_timeout = \"30s\"\n")
        .start();
    let addr = server.addr;
    let mut idle = Vec::new();
    for chunk in 0..10 {
        let opened = (0..500).map(|_| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            ask(&mut s).await;
            s
        });
        idle.extend(futures::future::join_all(opened).await);
        assert_eq!(idle.len(), (chunk + 1) * 500);
    }
    let all_idle = Instant::now();
    // One connection speaks again within the idle time: still served.
    let mut lively = TcpStream::connect(addr).await.unwrap();
    ask(&mut lively).await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // part of the scenario: idle, but not too long
    ask(&mut lively).await;

    let closed = futures::future::join_all(
        idle.iter_mut()
            .map(|s| read_until_closed(s, Duration::from_secs(15))),
    )
    .await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of 5000 idle connections still open");
    assert!(
        closed.iter().all(|c| c.as_deref() == Some("")),
        "an idle connection got bytes before closing"
    );
    let waited = all_idle.elapsed();
    assert!(waited < Duration::from_secs(12), "closed after {waited:?}");
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );
}

/// 10,000 malformed, random and truncated requests, 32 at a time: the host answers or closes
/// each, and then still serves a normal request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_requests_leave_the_host_serving() {
    let server = Server::with(&["hello"])
        .config("[server]\nheader_timeout = \"1s\"\n")
        .start();
    let addr = server.addr;
    const VALID: &[u8] =
        b"POST /.netlify/functions/hello?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    // xorshift: reproducible without a dependency.
    let next = |state: &mut u64| {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut requests = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let r = next(&mut seed);
        let bytes: Vec<u8> = match i % 4 {
            // Random bytes.
            0 => (0..r % 300).map(|_| next(&mut seed) as u8).collect(),
            // A valid request cut anywhere.
            1 => VALID[..(r as usize % VALID.len())].to_vec(),
            // A valid request with one byte flipped.
            2 => {
                let mut v = VALID.to_vec();
                let at = r as usize % v.len();
                v[at] = next(&mut seed) as u8;
                v
            }
            // Oversized or odd heads.
            _ => match r % 3 {
                0 => {
                    format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes()
                }
                1 => b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
                _ => b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: x\r\n\r\nzz\r\n"
                    .to_vec(),
            },
        };
        requests.push(bytes);
    }
    let started = Instant::now();
    let mut answered = 0;
    for batch in requests.chunks(32) {
        let sent = batch.iter().map(|bytes| async move {
            let mut s = TcpStream::connect(addr)
                .await
                .expect("the host still accepts");
            let _ = s.write_all(bytes).await;
            let _ = s.shutdown().await;
            read_until_closed(&mut s, Duration::from_secs(5))
                .await
                .expect("answered or closed within the header timeout")
        });
        for reply in futures::future::join_all(sent).await {
            if reply.starts_with("HTTP/1.1") {
                answered += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(240), "too slow");
    }
    assert!(
        answered > 0,
        "some malformed requests are answered (400, 404, ...)"
    );
    let reply = get(&server.url("/.netlify/functions/hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// A loopback HTTPS server whose certificate (for `localhost` only) is signed by a CA made for
/// the test: its address and the CA's PEM.
async fn tls_upstream() -> (std::net::SocketAddr, String) {
    let (acceptor, ca_pem) = crate::support::tls_for_localhost(b"http/1.1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"secret over tls")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_pem)
}

/// Regression: HTTPS from guests went through wasmtime's client, which resolved the name again
/// after the allow-list had checked it (DNS rebinding). fnhost's own client connects to the
/// checked address and verifies the certificate against the name: a trusted certificate for
/// the name works, the same server under an IP literal its certificate does not name fails, and
/// without the CA nothing is trusted.
#[tokio::test]
async fn outbound_https_connects_to_the_checked_address_and_checks_the_name() {
    let (upstream, ca_pem) = tls_upstream().await;
    let port = upstream.port();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &ca_pem).unwrap();
    let hosts = format!(
        "allowed_outbound_hosts = [\"https://localhost:{port}\", \"https://127.0.0.1:{port}\"]\n"
    );
    let server = Server::with(&[])
        .function_as("outbound", "guest-outbound")
        .config(&format!(
            "[server]\noutbound_ca = {:?}\n[functions.outbound]\n{hosts}",
            ca.path().display().to_string()
        ))
        .start();
    let fetch = |url: String| {
        let page = server.url(&format!("/.netlify/functions/outbound?url={url}"));
        async move { get(&page).await }
    };
    let ok = fetch(format!("https://localhost:{port}/x")).await;
    assert_eq!(
        (ok.status, ok.text().as_str()),
        (200, "upstream 200: secret over tls")
    );
    let wrong_name = fetch(format!("https://127.0.0.1:{port}/x")).await;
    assert_eq!(wrong_name.status, 502, "{}", wrong_name.text());
    assert!(wrong_name.text().contains("Tls"), "{}", wrong_name.text());

    let untrusting = Server::with(&[])
        .function_as("outbound", "guest-outbound")
        .config(&format!("[functions.outbound]\n{hosts}"))
        .start();
    let page = untrusting.url(&format!(
        "/.netlify/functions/outbound?url=https://localhost:{port}/x"
    ));
    let unknown_ca = get(&page).await;
    assert_eq!(unknown_ca.status, 502, "{}", unknown_ca.text());
}

/// `_redirects` proxy rules reach `https://` upstreams (they answered 502 "not supported"),
/// with the same trust as guests' HTTPS.
#[tokio::test]
async fn proxy_rules_reach_https_upstreams() {
    let (upstream, ca_pem) = tls_upstream().await;
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &ca_pem).unwrap();
    let rules = format!(
        "/secure/*  https://localhost:{}/:splat  200\n",
        upstream.port()
    );
    let server = Server::with(&["hello"])
        .config(&format!(
            "[server]\noutbound_ca = {:?}\n",
            ca.path().display().to_string()
        ))
        .file("_redirects", rules.as_bytes())
        .start();
    let reply = get(&server.url("/secure/anything")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "secret over tls")
    );
}

/// At `max_connections` open, a new connection waits in the listen backlog (it is not
/// refused) and is served as soon as one closes.
#[tokio::test]
async fn past_max_connections_a_new_connection_waits_for_one_to_close() {
    let server = Server::with(&["hello"])
        .config("[server]\nmax_connections = 2\n")
        .start();
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    ask(&mut first).await;
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    ask(&mut second).await;
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let waiting = tokio::spawn(async move {
        ask(&mut third).await;
        Instant::now()
    });
    // Part of the scenario, not a wait for state: the third must still be waiting after a
    // while in which it would have been served ten times over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served past max_connections");
    let closed_at = Instant::now();
    drop(first);
    let served_at = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(served_at >= closed_at);
    drop(second);
}

/// Denied outbound requests are logged without their query string (it may carry tokens).
#[tokio::test]
async fn a_denied_outbound_request_is_logged_without_its_query() {
    let server = Server::with(&[])
        .function_as("outbound", "guest-outbound")
        .start();
    let target = "http://example.invalid/path%3Ftoken%3Dsecret-123";
    let reply = get(&server.url(&format!("/.netlify/functions/outbound?url={target}"))).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let line = server
        .wait_for_log(&["outbound request to", "denied"], Duration::from_secs(5))
        .await;
    assert!(line.contains("example.invalid"), "{line}");
    assert!(!line.contains("secret-123"), "{line}");
}
