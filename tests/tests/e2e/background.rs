//! Background functions: durable 202, detached runs, retries, dead letters, destinations,
//! idempotency, status, admin — and nothing acknowledged lost across `kill -9`.
//!
//! The scenarios written against the embedded queue are `pub(crate)`: `postgres` runs them
//! again with a PostgreSQL queue (see `support::QueueScope`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Reply, Server, get, send, wait_until};

/// Short schedule for tests: attempts spaced 1 s then 2 s; 2 s lease.
pub(crate) const FAST: &str = "[server]\nlease = \"2s\"\nshutdown_grace = \"1s\"\n[defaults]\nretry_delays = [\"1s\", \"2s\"]\nbackground_timeout = \"5s\"\n";

/// A loopback destination recording every JSON record POSTed to it.
pub struct Destination {
    pub addr: SocketAddr,
    pub records: Arc<Mutex<Vec<Value>>>,
}

impl Destination {
    pub async fn start() -> Destination {
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let addr = crate::support::serve_http(Arc::new(
            move |req: http::Request<hyper::body::Incoming>| {
                let sink = sink.clone();
                Box::pin(async move {
                    use http_body_util::BodyExt;
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    sink.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    http::Response::new(
                        http_body_util::Empty::new()
                            .map_err(|never| match never {})
                            .boxed(),
                    )
                })
            },
        ))
        .await;
        Destination { addr, records }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Records whose requestContext.requestId is `id`.
    pub fn for_id(&self, id: &str) -> Vec<Value> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["requestContext"]["requestId"] == id)
            .cloned()
            .collect()
    }

    /// Waits for the first record for `id`.
    pub async fn wait_for(&self, id: &str, within: Duration) -> Value {
        wait_until(
            &format!("a destination record for {id}"),
            within,
            async || self.for_id(id).into_iter().next(),
        )
        .await
    }
}

pub(crate) async fn post(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    send("POST", &server.url(path), headers, body.to_string()).await
}

pub(crate) async fn status(server: &Server, id: &str) -> Value {
    let reply = get(&server.url(&format!("/.fnhost/invocations/{id}"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Polls until the invocation is in one of `states`.
pub(crate) async fn wait_state(
    server: &Server,
    id: &str,
    states: &[&str],
    within: Duration,
) -> Value {
    wait_until(&format!("{id} to reach {states:?}"), within, async || {
        let s = status(server, id).await;
        if states.contains(&s["state"].as_str().unwrap()) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await
}

pub(crate) fn accepted_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert!(reply.body.is_empty());
    let id = reply
        .header("fnhost-invocation-id")
        .expect("id header")
        .to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(
        reply.header("location"),
        Some(format!("/.fnhost/invocations/{id}").as_str())
    );
    id
}

#[tokio::test]
pub(crate) async fn accepted_at_once_then_runs_to_success_and_reports_once() {
    let dest = Destination::start().await;
    let config = format!(
        "{FAST}[functions.slow-background]\non_success = \"{}\"\n",
        dest.url("/ok")
    );
    let server = Server::with(&[])
        .function_as("slow-background", "guest-sleep")
        .config(&config)
        .start();
    let started = Instant::now();
    let reply = post(
        &server,
        "/.netlify/functions/slow-background?ms=1500",
        &[],
        "{\"job\":1}",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "202 took {:?}",
        started.elapsed()
    );
    let id = accepted_id(&reply);

    let mut seen: Vec<String> = Vec::new();
    wait_until(
        "the invocation to succeed",
        Duration::from_secs(10),
        async || {
            let state = status(&server, &id).await["state"]
                .as_str()
                .unwrap()
                .to_string();
            if seen.last() != Some(&state) {
                seen.push(state);
            }
            if seen.last().map(String::as_str) == Some("succeeded") {
                Ok(())
            } else {
                Err(format!("states so far: {seen:?}"))
            }
        },
    )
    .await;
    assert!(
        seen == ["queued", "running", "succeeded"] || seen == ["running", "succeeded"],
        "{seen:?}"
    );
    let done = status(&server, &id).await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["result"]["status"], 200);
    assert!(done["finished_at"].is_string() && done["started_at"].is_string());

    let record = dest.wait_for(&id, Duration::from_secs(5)).await;
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(
        record["requestContext"]["functionArn"],
        "fnhost:function:slow-background"
    );
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(record["requestPayload"]["job"], 1);
    assert_eq!(record["responseContext"]["statusCode"], 200);
    // Not a wait for state: a quiet period in which a second delivery would arrive (an absence
    // has no state to poll).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(dest.for_id(&id).len(), 1, "delivered more than once");
}

#[tokio::test]
pub(crate) async fn fails_twice_then_succeeds_with_attempts_spaced_by_the_delays() {
    let server = Server::with(&[])
        .function_as("flaky-background", "guest-flaky")
        .config(FAST)
        .start();
    let id = accepted_id(
        &post(
            &server,
            "/.netlify/functions/flaky-background?succeed_on=3",
            &[],
            "",
        )
        .await,
    );
    let mut changes: Vec<(u64, Instant)> = Vec::new();
    let s = wait_until(
        "the invocation to succeed",
        Duration::from_secs(15),
        async || {
            let s = status(&server, &id).await;
            let attempts = s["attempts"].as_u64().unwrap();
            if changes.last().map(|c| c.0) != Some(attempts) {
                changes.push((attempts, Instant::now()));
            }
            if s["state"] == "succeeded" {
                Ok(s)
            } else {
                Err(s)
            }
        },
    )
    .await;
    assert_eq!(s["result"]["body"], "ok on attempt 3");
    let at = |n: u64| {
        changes
            .iter()
            .find(|c| c.0 == n)
            .unwrap_or_else(|| panic!("attempt {n} not seen: {changes:?}"))
            .1
    };
    assert!(
        at(2) - at(1) >= Duration::from_millis(900),
        "{:?}",
        at(2) - at(1)
    );
    assert!(
        at(3) - at(2) >= Duration::from_millis(1900),
        "{:?}",
        at(3) - at(2)
    );
    for n in 1..=3 {
        server
            .wait_for_log(
                &[&format!("flaky attempt {n}"), &id],
                Duration::from_secs(1),
            )
            .await;
    }
}

#[tokio::test]
pub(crate) async fn always_failing_is_dead_after_three_attempts_with_one_failure_record() {
    let dest = Destination::start().await;
    let config = format!(
        "{FAST}[functions.fail-background]\non_success = \"{}\"\non_failure = \"{}\"\n",
        dest.url("/ok"),
        dest.url("/failed")
    );
    let server = Server::with(&[])
        .function_as("fail-background", "guest-fail")
        .config(&config)
        .start();
    let id = accepted_id(&post(&server, "/.netlify/functions/fail-background", &[], "x").await);
    let dead = wait_state(&server, &id, &["dead"], Duration::from_secs(15)).await;
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"].as_str().unwrap().contains("trapped"),
        "{dead}"
    );
    let record = dest.wait_for(&id, Duration::from_secs(5)).await;
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    // Not a wait for state: a quiet period in which a second record would arrive.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(dest.for_id(&id).len(), 1);
}

#[tokio::test]
async fn a_spinning_background_function_is_stopped_at_its_budget_and_counted_failed() {
    let config = "[server]\nlease = \"2s\"\n[functions.spin-background]\ntimeout = \"1s\"\nretry_delays = [\"1s\"]\n";
    let server = Server::with(&[])
        .function_as("spin-background", "guest-spin")
        .config(config)
        .start();
    let started = Instant::now();
    let id = accepted_id(&post(&server, "/.netlify/functions/spin-background", &[], "").await);
    let dead = wait_state(&server, &id, &["dead"], Duration::from_secs(10)).await;
    assert_eq!(dead["attempts"], 2);
    assert!(
        dead["last_error"].as_str().unwrap().contains("budget"),
        "{dead}"
    );
    // Two 1 s attempts and a 1 s delay.
    assert!(
        started.elapsed() >= Duration::from_secs(3) && started.elapsed() < Duration::from_secs(6)
    );
}

#[tokio::test]
pub(crate) async fn idempotency_key_returns_the_same_id_and_runs_once_even_after_restart() {
    let dest = Destination::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "{FAST}[functions.hello-background]\non_success = \"{}\"\n",
        dest.url("/ok")
    );
    let server = Server::with(&[])
        .function_as("hello-background", "guest-sleep")
        .config(&config)
        .data_dir(data.path())
        .start();
    let key = [("idempotency-key", "order-42")];
    let first = accepted_id(
        &post(
            &server,
            "/.netlify/functions/hello-background?ms=10",
            &key,
            "",
        )
        .await,
    );
    let second = accepted_id(
        &post(
            &server,
            "/.netlify/functions/hello-background?ms=10",
            &key,
            "",
        )
        .await,
    );
    assert_eq!(first, second);
    wait_state(&server, &first, &["succeeded"], Duration::from_secs(5)).await;
    crate::support::wait_until(
        "the first invocation's success record",
        Duration::from_secs(10),
        async || !dest.for_id(&first).is_empty(),
    )
    .await;
    let mut server = server;
    server.terminate(Duration::from_secs(10)).await;

    let server = Server::with(&[])
        .function_as("hello-background", "guest-sleep")
        .config(&config)
        .data_dir(data.path())
        .start();
    let third = accepted_id(
        &post(
            &server,
            "/.netlify/functions/hello-background?ms=10",
            &key,
            "",
        )
        .await,
    );
    assert_eq!(first, third);
    let other = accepted_id(
        &post(
            &server,
            "/.netlify/functions/hello-background?ms=10",
            &[("idempotency-key", "order-43")],
            "",
        )
        .await,
    );
    assert_ne!(first, other);
    wait_state(&server, &other, &["succeeded"], Duration::from_secs(5)).await;
    assert_eq!(status(&server, &first).await["attempts"], 1, "run once");
    assert_eq!(dest.for_id(&first).len(), 1, "reported once");
}

#[tokio::test]
pub(crate) async fn kill_9_during_a_burst_of_enqueues_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let config = FAST;
    let mut server = Server::with(&[])
        .function_as("burst-background", "guest-sleep")
        .config(config)
        .data_dir(data.path())
        .start();
    let url = server.url("/.netlify/functions/burst-background?ms=50");
    let acked = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let url = url.clone();
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let stop = Instant::now() + Duration::from_secs(3);
            while Instant::now() < stop {
                let Ok(Ok(reply)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    crate::support::try_send("POST", &url, &[], "burst".into()),
                )
                .await
                else {
                    break;
                };
                if reply.status == 202 {
                    ids.push(reply.header("fnhost-invocation-id").unwrap().to_string());
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            ids
        }));
    }
    // Kill while the burst is under way: once it has had enqueues acknowledged (the clients
    // keep sending for 3 s).
    wait_until(
        "10 enqueues of the burst acknowledged",
        Duration::from_secs(3),
        async || acked.load(Ordering::Relaxed) >= 10,
    )
    .await;
    server.kill9();
    let mut acknowledged = BTreeSet::new();
    for c in clients {
        acknowledged.extend(c.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 10,
        "only {} acknowledged before the kill",
        acknowledged.len()
    );

    let server = Server::with(&[])
        .function_as("burst-background", "guest-sleep")
        .config(config)
        .data_dir(data.path())
        .start();
    for id in &acknowledged {
        wait_state(&server, id, &["succeeded"], Duration::from_secs(60)).await;
    }
}

#[tokio::test]
pub(crate) async fn kill_9_while_running_and_during_a_retry_delay_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let config = "[server]\nlease = \"2s\"\n[defaults]\nretry_delays = [\"2s\"]\n";
    let start = || {
        Server::with(&[])
            .function_as("slow-background", "guest-sleep")
            .function_as("flaky-background", "guest-flaky")
            .config(config)
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    let mut running = Vec::new();
    for _ in 0..4 {
        running.push(accepted_id(
            &post(
                &server,
                "/.netlify/functions/slow-background?ms=3000",
                &[],
                "",
            )
            .await,
        ));
    }
    let retrying = accepted_id(
        &post(
            &server,
            "/.netlify/functions/flaky-background?succeed_on=2",
            &[],
            "",
        )
        .await,
    );
    for id in &running {
        wait_state(&server, id, &["running"], Duration::from_secs(5)).await;
    }
    wait_state(&server, &retrying, &["retrying"], Duration::from_secs(5)).await;
    server.kill9();

    let server = start();
    for id in &running {
        let s = wait_state(&server, id, &["succeeded"], Duration::from_secs(20)).await;
        // The attempt cut off by the kill is not counted against the function.
        assert_eq!(s["attempts"], 1, "{s}");
    }
    let s = wait_state(&server, &retrying, &["succeeded"], Duration::from_secs(20)).await;
    assert_eq!(s["attempts"], 2, "{s}");
}

#[tokio::test]
pub(crate) async fn over_the_body_limit_is_413_and_nothing_is_enqueued() {
    let server = Server::with(&[])
        .function_as("hello-background", "guest-sleep")
        .config("[server]\nadmin_token = \"t0ken\"\n")
        .start();
    let big = "x".repeat(300 * 1024);
    let reply = post(&server, "/.netlify/functions/hello-background", &[], &big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(
        crate::support::admin_list(&server).await,
        serde_json::json!([])
    );
}

#[tokio::test]
async fn the_embedded_queue_runs_with_wal_and_synchronous_full() {
    let server = Server::with(&["hello"]).start();
    let health = get(&server.url("/.fnhost/health")).await.json();
    assert_eq!(health["queue"]["backend"], "sqlite");
    assert_eq!(health["queue"]["journal_mode"], "wal");
    assert_eq!(health["queue"]["synchronous"], "full");
    // The WAL file exists beside the database: the mode is on disk, not just claimed.
    assert!(server.dir.path().join("data").join("queue.db-wal").exists());
}

#[tokio::test]
pub(crate) async fn admin_lists_cancels_and_replays_behind_the_token() {
    let config = "[server]\nadmin_token = \"s3cret\"\n[defaults]\nretry_delays = [\"60s\"]\n";
    let server = Server::with(&[])
        .function_as("fail-background", "guest-fail")
        .function_as("quick-background", "guest-sleep")
        .config(config)
        .start();
    let auth = [("authorization", "Bearer s3cret")];
    assert_eq!(get(&server.url("/.fnhost/invocations")).await.status, 401);
    assert_eq!(
        send(
            "GET",
            &server.url("/.fnhost/invocations"),
            &[("authorization", "Bearer nope")],
            ""
        )
        .await
        .status,
        401
    );

    // A failed first attempt waits 60 s to retry: cancel it.
    let waiting = accepted_id(&post(&server, "/.netlify/functions/fail-background", &[], "").await);
    wait_state(&server, &waiting, &["retrying"], Duration::from_secs(5)).await;
    let reply = send(
        "POST",
        &server.url(&format!("/.fnhost/invocations/{waiting}/cancel")),
        &auth,
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(status(&server, &waiting).await["state"], "cancelled");
    assert_eq!(
        send(
            "POST",
            &server.url(&format!("/.fnhost/invocations/{waiting}/cancel")),
            &auth,
            ""
        )
        .await
        .status,
        409
    );

    let list = send(
        "GET",
        &server.url("/.fnhost/invocations?function=fail-background&state=cancelled"),
        &auth,
        "",
    )
    .await
    .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], waiting.as_str());

    // Replay only applies to dead invocations.
    assert_eq!(
        send(
            "POST",
            &server.url(&format!("/.fnhost/invocations/{waiting}/replay")),
            &auth,
            ""
        )
        .await
        .status,
        409
    );
    assert_eq!(
        get(&server.url("/.fnhost/invocations/0123456789abcdef0123456789abcdef"))
            .await
            .status,
        404
    );
}

#[tokio::test]
pub(crate) async fn a_dead_invocation_can_be_replayed() {
    let config = "[server]\nadmin_token = \"s3cret\"\n[defaults]\nretry_delays = []\n";
    let server = Server::with(&[])
        .function_as("flaky-background", "guest-flaky")
        .config(config)
        .start();
    let auth = [("authorization", "Bearer s3cret")];
    // Fails on attempt 1 (needs attempt 2), and no retries are configured: dead at once.
    let id = accepted_id(
        &post(
            &server,
            "/.netlify/functions/flaky-background?succeed_on=2",
            &[],
            "",
        )
        .await,
    );
    wait_state(&server, &id, &["dead"], Duration::from_secs(5)).await;
    let reply = send(
        "POST",
        &server.url(&format!("/.fnhost/invocations/{id}/replay")),
        &auth,
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Replay starts again from attempt 1, which fails again: dead once more, after running.
    let s = wait_state(&server, &id, &["dead"], Duration::from_secs(5)).await;
    assert_eq!(s["attempts"], 1);
    server
        .wait_for_log(&["flaky attempt 1", &id], Duration::from_secs(1))
        .await;
    assert_eq!(
        server.count_log(&["flaky attempt 1", &id]),
        2,
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn the_background_examples_report_to_their_destinations() {
    let dest = Destination::start().await;
    let config = format!(
        "[functions.hello-background]\non_success = \"{ok}\"\n[functions.process]\non_success = \"{ok}\"\n",
        ok = dest.url("/inbox")
    );
    let server = Server::with(&["hello-background", "process", "inbox"])
        .config(&config)
        .start();
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("hello-background") && l.contains("background")),
        "{table}"
    );
    // `process` is background and routed at /process by its own config export.
    assert!(
        table.lines().any(|l| l.starts_with("process")
            && l.contains("background")
            && l.contains("/process [POST]")),
        "{table}"
    );

    let hello = accepted_id(
        &post(
            &server,
            "/.netlify/functions/hello-background?name=Ada",
            &[],
            "",
        )
        .await,
    );
    let process = accepted_id(&post(&server, "/process", &[], "three little words").await);
    assert_eq!(get(&server.url("/process")).await.status, 405);

    let record = dest.wait_for(&hello, Duration::from_secs(10)).await;
    assert_eq!(
        record["responsePayload"]["message"],
        "Hello, Ada, from the background!"
    );
    let record = dest.wait_for(&process, Duration::from_secs(10)).await;
    assert_eq!(record["requestPayload"], "three little words");
    assert_eq!(record["responsePayload"]["words"], 3);
    server
        .wait_for_log(
            &["hello-background: working on", &hello],
            Duration::from_secs(1),
        )
        .await;

    // The inbox example is the destination the examples' own fnhost.toml uses.
    let reply = post(
        &server,
        "/.netlify/functions/inbox",
        &[],
        "{\"version\":\"1.0\"}",
    )
    .await;
    assert_eq!(reply.status, 204);
    server
        .wait_for_log(
            &["inbox received: {\"version\":\"1.0\"}"],
            Duration::from_secs(1),
        )
        .await;
}

#[tokio::test]
async fn a_5xx_answer_counts_as_failure_only_when_opted_in() {
    let config =
        "[defaults]\nretry_delays = [\"1s\"]\n[functions.strict-background]\nretry_on_5xx = true\n";
    let server = Server::with(&[])
        .function_as("strict-background", "echo")
        .function_as("lenient-background", "echo")
        .config(config)
        .start();
    let h = [("x-echo-status", "503")];
    let strict = accepted_id(&post(&server, "/.netlify/functions/strict-background", &h, "").await);
    let lenient =
        accepted_id(&post(&server, "/.netlify/functions/lenient-background", &h, "").await);
    let s = wait_state(
        &server,
        &lenient,
        &["succeeded", "dead"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        (s["state"].as_str(), s["attempts"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{s}"
    );
    assert_eq!(s["result"]["status"], 503);
    let s = wait_state(
        &server,
        &strict,
        &["succeeded", "dead"],
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(
        (s["state"].as_str(), s["attempts"].as_u64()),
        (Some("dead"), Some(2)),
        "{s}"
    );
    assert_eq!(s["last_error"], "function answered 503");
}

/// SIGTERM: in-flight sync requests finish, running background attempts get the grace period,
/// and what is cut off is handed back and runs again after restart (not counted as an attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sync_requests_and_hands_back_cut_off_background_work() {
    let data = tempfile::tempdir().unwrap();
    let config = "[server]\nshutdown_grace = \"1s\"\nlease = \"2s\"\n";
    let start = || {
        Server::with(&[])
            .function_as("nap", "guest-sleep")
            .function_as("long-background", "guest-sleep")
            .config(config)
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    let long = accepted_id(
        &post(
            &server,
            "/.netlify/functions/long-background?ms=4000",
            &[],
            "",
        )
        .await,
    );
    wait_state(&server, &long, &["running"], Duration::from_secs(5)).await;
    let url = server.url("/.netlify/functions/nap?ms=1500");
    let in_flight = tokio::spawn(async move { get(&url).await });
    // The sync request is in flight: its guest is running (it says so first).
    server
        .wait_for_log(
            &["sleeping 1500 ms", "function=\"nap\""],
            Duration::from_secs(1),
        )
        .await;

    let stopping = Instant::now();
    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let reply = in_flight.await.unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "slept 1500 ms\n")
    );
    // Grace (1 s) is shorter than the 4 s job: it is handed back, not waited for.
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopping.elapsed()
    );
    assert!(
        server.logs().contains("handed back for a later run"),
        "{}",
        server.logs()
    );

    let server = start();
    let s = wait_state(&server, &long, &["succeeded"], Duration::from_secs(15)).await;
    assert_eq!(s["attempts"], 1, "{s}");
}

/// `concurrency = 1`: a function's attempts run one after another on the node, while another
/// function's run side by side.
#[tokio::test]
async fn a_concurrency_cap_runs_a_functions_attempts_one_at_a_time() {
    let config = format!("{FAST}[functions.one-background]\nconcurrency = 1\n");
    let server = Server::with(&[])
        .function_as("one-background", "guest-sleep")
        .function_as("many-background", "guest-sleep")
        .config(&config)
        .start();
    let mut capped = Vec::new();
    let mut free = Vec::new();
    for _ in 0..3 {
        for (name, ids) in [("one", &mut capped), ("many", &mut free)] {
            let url = server.url(&format!("/.netlify/functions/{name}-background?ms=400"));
            ids.push(accepted_id(&send("POST", &url, &[], "").await));
        }
    }
    let started = async |ids: &[String]| {
        let mut at = Vec::new();
        for id in ids {
            let s = wait_state(&server, id, &["succeeded"], Duration::from_secs(20)).await;
            let t = humantime::parse_rfc3339(s["started_at"].as_str().unwrap()).unwrap();
            at.push(t);
        }
        at.sort();
        at.windows(2)
            .map(|w| w[1].duration_since(w[0]).unwrap())
            .collect::<Vec<_>>()
    };
    let capped_gaps = started(&capped).await;
    assert!(
        capped_gaps
            .iter()
            .all(|gap| *gap >= Duration::from_millis(400)),
        "each attempt of the capped function starts after the last one's 400 ms: {capped_gaps:?}"
    );
    let free_gaps = started(&free).await;
    assert!(
        free_gaps
            .iter()
            .any(|gap| *gap < Duration::from_millis(400)),
        "the uncapped function's attempts overlap: {free_gaps:?}"
    );
}

/// The admin detail view: every attempt with its outcome and error, what the guest printed in
/// each, the request as received with credentials redacted; the live tail; the functions list.
#[tokio::test]
async fn the_detail_view_keeps_attempts_logs_and_the_redacted_request() {
    let config = "[server]\nadmin_token = \"t0ken\"\n[defaults]\nretry_delays = [\"200ms\"]\n";
    let server = Server::with(&[])
        .function_as("flaky-background", "guest-flaky")
        .config(config)
        .start();
    let url = server.url("/.netlify/functions/flaky-background?succeed_on=2");
    let headers = [
        ("authorization", "Bearer secret"),
        ("cookie", "session=secret"),
        ("x-trace", "t-1"),
    ];
    let id = accepted_id(&send("POST", &url, &headers, "payload").await);
    wait_state(&server, &id, &["succeeded"], Duration::from_secs(15)).await;
    let admin = [("authorization", "Bearer t0ken")];
    let detail_url = server.url(&format!("/.fnhost/invocations/{id}/detail"));
    assert_eq!(get(&detail_url).await.status, 401, "admin only");
    let detail = send("GET", &detail_url, &admin, "").await;
    assert_eq!(detail.status, 200, "{}", detail.text());
    let d = detail.json();
    assert_eq!(d["status"]["state"], "succeeded", "{d}");
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{d}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["outcome"], "failed");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("trapped"),
        "{d}"
    );
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert!(attempts[1]["duration_ms"].as_i64().unwrap() >= 0);
    let lines: Vec<(u64, &str)> = d["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["attempt"].as_u64().unwrap(), l["line"].as_str().unwrap()))
        .collect();
    assert!(lines.contains(&(1, "flaky attempt 1")), "{d}");
    assert!(lines.contains(&(2, "flaky attempt 2")), "{d}");
    let request = &d["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["body"], "payload");
    let header = |name: &str| {
        request["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(header("authorization").as_deref(), Some("[redacted]"));
    assert_eq!(header("cookie").as_deref(), Some("[redacted]"));
    assert_eq!(header("x-trace").as_deref(), Some("t-1"));
    assert!(!detail.text().contains("secret"), "{}", detail.text());

    // The live tail: this node's recent lines of the function, resumable after `next`.
    let tail = send(
        "GET",
        &server.url("/.fnhost/logs?function=flaky-background"),
        &admin,
        "",
    )
    .await
    .json();
    let texts: Vec<&str> = tail["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["flaky attempt 1", "flaky attempt 2"], "{tail}");
    assert!(
        tail["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["stream"] == "stderr"
                && l["line"].as_str().unwrap().contains("failing attempt 1")),
        "the panic message of attempt 1: {tail}"
    );
    let next = tail["next"].as_u64().unwrap();
    let again = send(
        "GET",
        &server.url(&format!(
            "/.fnhost/logs?function=flaky-background&after={next}"
        )),
        &admin,
        "",
    )
    .await
    .json();
    assert_eq!(again["lines"].as_array().unwrap().len(), 0, "{again}");

    // The functions list carries the settings and this node's last hour.
    let functions = send("GET", &server.url("/.fnhost/functions"), &admin, "")
        .await
        .json();
    let f = &functions[0];
    assert_eq!(f["name"], "flaky-background");
    assert_eq!(f["mode"], "background");
    assert_eq!(f["retry_delays_ms"], serde_json::json!([200]));
    assert_eq!(f["last_hour"]["invocations"], 2, "{f}");
    assert_eq!(f["last_hour"]["failures"], 1, "{f}");
    assert!(f["last_hour"]["p50_ms"].as_f64().is_some(), "{f}");
}

/// The dashboard's files are served only when an admin token is configured.
#[tokio::test]
async fn the_dashboard_is_served_only_with_an_admin_token() {
    let with = Server::with(&["hello"])
        .config("[server]\nadmin_token = \"t0ken\"\n")
        .start();
    let page = get(&with.url("/.fnhost/ui/")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.header("content-security-policy").is_some());
    assert_eq!(get(&with.url("/.fnhost/ui/app.js")).await.status, 200);
    assert_eq!(get(&with.url("/.fnhost/ui/app.css")).await.status, 200);
    assert_eq!(get(&with.url("/.fnhost/ui/nope.js")).await.status, 404);
    let without = Server::with(&["hello"]).start();
    let off = get(&without.url("/.fnhost/ui/")).await;
    assert_eq!(off.status, 404);
    assert!(
        off.text().contains("set server.admin_token"),
        "{}",
        off.text()
    );
    assert!(
        without
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("no dashboard")),
        "the startup says so"
    );
}
