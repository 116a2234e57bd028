//! Synchronous functions: answers, routing, isolation, budgets, limits.

use std::time::{Duration, Instant};

use crate::support::{Server, get, send, wait_until};

#[tokio::test]
async fn hello_answers_its_greeting() {
    let server = Server::with(&["hello"]).start();
    let reply = get(&server.url("/.netlify/functions/hello")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "Hello from fnhost!\n");
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn echo_sees_the_whole_request_and_sets_status_and_headers() {
    let server = Server::with(&["echo"]).start();
    let reply = send(
        "POST",
        &server.url("/.netlify/functions/echo?x=1&y=two"),
        &[
            ("x-echo-status", "201"),
            ("x-custom", "abc"),
            ("fnhost-attempt", "7"),
        ],
        "payload",
    )
    .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("x-echo"), Some("fnhost"));
    let json = reply.json();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/.netlify/functions/echo");
    assert_eq!(json["query"], "x=1&y=two");
    assert_eq!(json["body"], "payload");
    assert_eq!(json["headers"]["x-custom"], "abc");
    // A client cannot forge the headers fnhost sets for the guest.
    assert!(json["headers"].get("fnhost-attempt").is_none(), "{json}");
    assert_eq!(
        json["headers"]["fnhost-invocation-id"]
            .as_str()
            .unwrap()
            .len(),
        32
    );
}

#[tokio::test]
async fn declared_paths_params_methods_and_unknown_routes() {
    let server = Server::with(&["items", "echo"])
        .config("[functions.echo]\npath = \"/files/*\"\n")
        .start();
    let reply = get(&server.url("/api/items/42")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], "42");

    let reply = send("POST", &server.url("/api/items/42"), &[], "").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));

    // A declared path replaces the default route.
    assert_eq!(
        get(&server.url("/.netlify/functions/items")).await.status,
        404
    );
    assert_eq!(get(&server.url("/nothing/here")).await.status, 404);

    // fnhost.toml paths work too, and the `*` splat reaches the guest.
    let reply = get(&server.url("/files/a/b.txt")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["params"]["*"], "a/b.txt");

    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table.contains("items") && table.contains("/api/items/:id [GET]"),
        "{table}"
    );
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let server = Server::with(&[])
        .function_as("counter", "guest-counter")
        .start();
    for _ in 0..3 {
        let reply = get(&server.url("/.netlify/functions/counter")).await;
        assert_eq!((reply.status, reply.text().trim()), (200, "1"));
    }
}

#[tokio::test]
async fn spinning_and_sleeping_guests_get_504_at_their_budget_while_others_are_served() {
    let server = Server::with(&["hello"])
        .function_as("spin", "guest-spin")
        .function_as("sleep", "guest-sleep")
        .config("[functions.spin]\ntimeout = \"1s\"\n[functions.sleep]\ntimeout = \"1s\"\n")
        .start();
    for (name, running) in [("spin", "spinning"), ("sleep", "sleeping")] {
        let url = server.url(&format!("/.netlify/functions/{name}"));
        let started = Instant::now();
        let stuck = tokio::spawn(async move { (get(&url).await, started.elapsed()) });
        // The stuck guest is running (it says so first) before hello is asked.
        let function = format!("function=\"{name}\"");
        server
            .wait_for_log(&[running, &function], Duration::from_millis(900))
            .await;
        let t = Instant::now();
        let hello = get(&server.url("/.netlify/functions/hello")).await;
        let hello_latency = t.elapsed();
        let (reply, elapsed) = stuck.await.unwrap();
        assert_eq!(reply.status, 504, "{name}: {}", reply.text());
        assert!(
            reply
                .text()
                .contains(reply.header("fnhost-invocation-id").unwrap()),
            "{}",
            reply.text()
        );
        assert!(
            elapsed >= Duration::from_secs(1),
            "{name} stopped early: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(1800),
            "{name} stopped late: {elapsed:?}"
        );
        assert_eq!(hello.status, 200);
        assert!(
            hello_latency < Duration::from_millis(500),
            "hello waited {hello_latency:?} behind {name}"
        );
    }
}

#[tokio::test]
async fn memory_hog_gets_500_and_the_host_keeps_serving() {
    let server = Server::with(&["hello"])
        .function_as("memhog", "guest-memhog")
        .config("[functions.memhog]\nmemory = \"64MB\"\n")
        .start();
    let reply = get(&server.url("/.netlify/functions/memhog")).await;
    assert_eq!(reply.status, 500);
    let id = reply.header("fnhost-invocation-id").unwrap().to_string();
    assert!(reply.text().contains(&id));
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );
    server
        .wait_for_log(&[&id, "trapped"], Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn traps_and_missing_responses_are_500_naming_only_the_invocation() {
    let server = Server::with(&[])
        .function_as("trap", "guest-trap")
        .function_as("noresponse", "guest-noresponse")
        .start();
    for name in ["trap", "noresponse"] {
        let reply = get(&server.url(&format!("/.netlify/functions/{name}"))).await;
        assert_eq!(reply.status, 500, "{name}");
        let id = reply.header("fnhost-invocation-id").unwrap();
        assert_eq!(reply.text(), format!("function failed (invocation {id})\n"));
    }
}

#[tokio::test]
async fn bodies_over_6mb_get_413() {
    let server = Server::with(&["echo"]).start();
    let big = vec![b'x'; 7 * 1024 * 1024];
    let reply = send("POST", &server.url("/.netlify/functions/echo"), &[], big).await;
    assert_eq!(reply.status, 413);
    let ok = vec![b'x'; 1024 * 1024];
    assert_eq!(
        send("POST", &server.url("/.netlify/functions/echo"), &[], ok)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn over_the_concurrency_cap_requests_get_503_with_retry_after() {
    let server = Server::with(&["hello"])
        .function_as("sleep", "guest-sleep")
        .config("[server]\nmax_concurrency = 2\n[functions.sleep]\ntimeout = \"2s\"\n")
        .start();
    let url = server.url("/.netlify/functions/sleep");
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    // Both slots are taken: both guests are running (each says so first).
    wait_until(
        "both sleep guests to be running",
        Duration::from_millis(1500),
        async || server.count_log(&["sleeping", "function=\"sleep\""]) == 2,
    )
    .await;
    let reply = get(&server.url("/.netlify/functions/hello")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    for b in busy {
        assert_eq!(b.await.unwrap().status, 504);
    }
    // Slots come back once the budget frees them.
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );
}

#[tokio::test]
async fn a_corrupt_component_is_named_at_startup_and_the_rest_serve() {
    let server = Server::with(&["hello"])
        .file("broken.wasm", b"\0asm this is not a component")
        .start();
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table.contains("FAILED") && table.contains("broken.wasm"),
        "{table}"
    );
    assert!(server.logs().contains("broken.wasm"));
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );
    assert_eq!(
        get(&server.url("/.netlify/functions/broken")).await.status,
        404
    );
}

#[tokio::test]
async fn fuel_metering_caps_cpu_and_logs_fuel_used() {
    let server = Server::with(&[])
        .function_as("cpu", "guest-cpu")
        .function_as("capped", "guest-cpu")
        .config("[functions.cpu]\nfuel = 100_000_000_000\n[functions.capped]\nfuel = 1_000_000\n")
        .start();
    let reply = get(&server.url("/.netlify/functions/cpu?n=1")).await;
    assert_eq!(reply.status, 200);
    let id = reply.header("fnhost-invocation-id");
    assert!(id.is_none(), "sync responses pass through untouched");
    let line = server
        .wait_for_log(
            &["invocation completed", "function=\"cpu\"", "fuel="],
            Duration::from_secs(5),
        )
        .await;
    let fuel: u64 = line
        .split("fuel=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // FNV-1a over 1 MiB: a few instructions per byte.
    assert!(fuel > 1 << 20, "{line}");
    // One million units run out long before the buffer is hashed.
    assert_eq!(
        get(&server.url("/.netlify/functions/capped?n=1"))
            .await
            .status,
        504
    );
}
