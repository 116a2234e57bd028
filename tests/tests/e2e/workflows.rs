//! Durable workflows (`fnhost:function/steps`): steps recorded once and answered on every
//! later run, sleeps and waits that end the attempt and hold nothing, events that wake a
//! waiting invocation by key, and all of it across `kill -9`. The guest is
//! `tests/guests/steps`; its steps call a loopback upstream that counts each side effect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::background::{accepted_id, post, status, wait_state};
use crate::support::{Reply, Server, send, serve_http, wait_until};

/// Short budgets, the admin token, loopback outbound allowed.
pub(crate) fn config(upstream: SocketAddr) -> String {
    format!(
        "[server]\nadmin_token = \"t0ken\"\nlease = \"2s\"\nshutdown_grace = \"1s\"\n\
         [defaults]\nretry_delays = [\"1s\", \"2s\"]\nbackground_timeout = \"5s\"\n\
         allowed_outbound_hosts = [\"http://{upstream}\"]\n"
    )
}

const ADMIN: (&str, &str) = ("authorization", "Bearer t0ken");

/// A loopback upstream that counts each path it is asked for, and when.
struct Upstream {
    addr: SocketAddr,
    calls: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let calls: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
        let seen = calls.clone();
        let addr = serve_http(Arc::new(move |req: http::Request<_>| {
            let seen = seen.clone();
            Box::pin(async move {
                let path = req.uri().path().trim_start_matches('/').to_string();
                seen.lock()
                    .unwrap()
                    .entry(path.clone())
                    .or_default()
                    .push(Instant::now());
                http::Response::new(BodyExt::boxed(Full::new(Bytes::from(format!("{path}-ok")))))
            })
        }))
        .await;
        Upstream { addr, calls }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// When `path` was called, in order.
    fn calls(&self, path: &str) -> Vec<Instant> {
        self.calls
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

fn server(upstream: &Upstream) -> Server {
    Server::with(&[])
        .function_as("steps-background", "guest-steps")
        .config(&config(upstream.addr))
        .start()
}

pub(crate) async fn start_run(server: &Server, query: &str) -> String {
    accepted_id(
        &post(
            server,
            &format!("/.netlify/functions/steps-background?{query}"),
            &[],
            "",
        )
        .await,
    )
}

pub(crate) async fn send_event(
    server: &Server,
    name: &str,
    key: &str,
    payload: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut headers = vec![ADMIN];
    headers.extend_from_slice(extra);
    let url = server.url(&format!("/.fnhost/events/{name}?key={key}"));
    send("POST", &url, &headers, payload.to_string()).await
}

/// The names of the steps a status resource lists, oldest first.
fn step_names(status: &Value) -> Vec<String> {
    (status["steps"].as_array().unwrap().iter())
        .map(|st| st["name"].as_str().unwrap().to_string())
        .collect()
}

/// How each run of invocation `id` ended, oldest first (the detail view's timeline).
async fn timeline(server: &Server, id: &str) -> Vec<String> {
    let detail = crate::support::admin_detail(server, id).await;
    (detail["attempts"].as_array().unwrap().iter())
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect()
}

/// The sum of `name`'s samples whose labels contain `label` (the series must exist).
async fn metric(server: &Server, name: &str, label: &str) -> f64 {
    let reply = send("GET", &server.url("/.fnhost/metrics"), &[ADMIN], "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains(name), "no {name} in the metrics:\n{text}");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
pub(crate) async fn steps_recorded_before_a_failure_are_not_done_again_on_the_retry() {
    let upstream = Upstream::start().await;
    let server = server(&upstream);
    let id = start_run(&server, &format!("op=three&upstream={}", upstream.url())).await;
    let s = wait_state(
        &server,
        &id,
        &["succeeded", "dead"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(s["attempts"], 2, "the third step failed once: {s}");
    assert_eq!(
        s["result"]["body"], "one=one-ok,two=two-ok,three=three-ok",
        "{s}"
    );
    // Steps one and two ran on attempt 1 only; attempt 2 read their recorded results.
    assert_eq!(upstream.calls("one").len(), 1);
    assert_eq!(upstream.calls("two").len(), 1);
    assert_eq!(upstream.calls("three").len(), 1);
    assert_eq!(timeline(&server, &id).await, ["failed", "succeeded"]);
}

#[tokio::test]
pub(crate) async fn a_sleep_holds_no_instance_and_reruns_at_its_time_skipping_finished_steps() {
    let upstream = Upstream::start().await;
    let server = server(&upstream);
    let id = start_run(
        &server,
        &format!("op=sleep&ms=2000&upstream={}", upstream.url()),
    )
    .await;
    let s = wait_state(&server, &id, &["sleeping"], Duration::from_secs(10)).await;
    assert!(s["next_attempt_at"].is_string(), "{s}");
    // The steps recorded so far: the first fetch, and the sleep's wake time.
    let steps = step_names(&s);
    assert_eq!(steps, ["before", "nap"], "{s}");
    // Asleep: the attempt ended, nothing runs for it.
    assert_eq!(
        metric(&server, "fnhost_invocations_in_flight", "background").await,
        0.0
    );
    wait_until(
        "the sleep to be counted",
        Duration::from_secs(2),
        async || {
            let n = metric(
                &server,
                "fnhost_background_suspensions_total",
                "kind=\"sleep\"",
            )
            .await;
            if n == 1.0 { Ok(()) } else { Err(n) }
        },
    )
    .await;
    let s = wait_state(&server, &id, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(s["attempts"], 1, "a sleep spends no attempt: {s}");
    let (before, after) = (upstream.calls("before"), upstream.calls("after"));
    assert_eq!((before.len(), after.len()), (1, 1), "each step's call once");
    let slept = after[0] - before[0];
    assert!(
        slept >= Duration::from_millis(1800) && slept <= Duration::from_millis(2600),
        "re-run {slept:?} after the first run (asked: 2 s)"
    );
    assert_eq!(server.count_log(&["steps run", &id]), 2);
    // The timeline: the run that slept, the run that finished.
    assert_eq!(timeline(&server, &id).await, ["sleeping", "succeeded"]);
}

#[tokio::test]
async fn a_thirty_day_sleep_is_stored_shown_and_cancelled() {
    let upstream = Upstream::start().await;
    let server = server(&upstream);
    let id = start_run(
        &server,
        &format!("op=sleep&ms=2592000000&upstream={}", upstream.url()),
    )
    .await;
    let s = wait_state(&server, &id, &["sleeping"], Duration::from_secs(10)).await;
    let next = s["next_attempt_at"].as_str().unwrap().to_string();
    let wake = humantime::parse_rfc3339(&next).unwrap();
    let ahead = wake.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        ahead > Duration::from_secs(29 * 24 * 3600),
        "wakes at {next}"
    );
    let cancel = send(
        "POST",
        &server.url(&format!("/.fnhost/invocations/{id}/cancel")),
        &[ADMIN],
        "",
    )
    .await;
    assert_eq!(cancel.status, 200, "{}", cancel.text());
    assert_eq!(status(&server, &id).await["state"], "cancelled");
}

#[tokio::test]
pub(crate) async fn a_wait_is_woken_by_its_event_with_the_right_key_only() {
    let upstream = Upstream::start().await;
    let server = server(&upstream);
    let id = start_run(
        &server,
        "op=wait&event=order.approved&key=A-17&timeout_ms=60000",
    )
    .await;
    let s = wait_state(&server, &id, &["waiting"], Duration::from_secs(10)).await;
    assert_eq!(s["waiting_for"]["event"], "order.approved", "{s}");
    assert_eq!(s["waiting_for"]["key"], "A-17", "{s}");
    assert_eq!(s["waiting_for"]["step"], "approval", "{s}");
    let other = send_event(&server, "order.approved", "B-2", "no", &[]).await;
    assert_eq!(other.status, 201, "{}", other.text());
    assert_eq!(other.json()["woke"], Value::Array(vec![]));
    assert_eq!(status(&server, &id).await["state"], "waiting");
    let right = send_event(
        &server,
        "order.approved",
        "A-17",
        "yes",
        &[("idempotency-key", "k1")],
    )
    .await;
    assert_eq!(right.status, 201, "{}", right.text());
    assert_eq!(right.json()["woke"], serde_json::json!([id]));
    let s = wait_state(&server, &id, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(s["result"]["body"], format!("steps got yes {id}"), "{s}");
    // The same send again is a repeat: stored once, wakes nothing new.
    let again = send_event(
        &server,
        "order.approved",
        "A-17",
        "yes",
        &[("idempotency-key", "k1")],
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["id"], right.json()["id"]);
    let event = send(
        "GET",
        &server.url(&format!(
            "/.fnhost/events/{}",
            right.json()["id"].as_str().unwrap()
        )),
        &[ADMIN],
        "",
    )
    .await;
    assert_eq!(
        event.json()["woke"],
        serde_json::json!([id]),
        "{}",
        event.text()
    );
    assert_eq!(server.count_log(&["steps run", &id]), 2);
    // Without the token: refused.
    let anonymous = send(
        "POST",
        &server.url("/.fnhost/events/order.approved?key=A-17"),
        &[],
        "x",
    )
    .await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}

#[tokio::test]
async fn a_wait_that_times_out_gets_none() {
    let upstream = Upstream::start().await;
    let server = server(&upstream);
    let id = start_run(&server, "op=wait&event=never&key=k&timeout_ms=1000").await;
    wait_state(&server, &id, &["waiting"], Duration::from_secs(10)).await;
    let s = wait_state(&server, &id, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(s["result"]["body"], format!("steps timed out {id}"), "{s}");
}

#[tokio::test]
pub(crate) async fn sleeping_and_waiting_invocations_survive_kill_9_and_finish_once() {
    let upstream = Upstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let start = || {
        Server::with(&[])
            .function_as("steps-background", "guest-steps")
            .config(&config(upstream.addr))
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    let sleeper = start_run(
        &server,
        &format!("op=sleep&ms=4000&upstream={}", upstream.url()),
    )
    .await;
    let waiter = start_run(&server, "op=wait&event=shipped&key=o1&timeout_ms=60000").await;
    wait_state(&server, &sleeper, &["sleeping"], Duration::from_secs(10)).await;
    wait_state(&server, &waiter, &["waiting"], Duration::from_secs(10)).await;
    server.kill9();

    let server = start();
    // Sent with the CLI: `fnhost send NAME --key KEY --data PAYLOAD`.
    let out = std::process::Command::new(crate::support::fnhost_bin())
        .args(["send", "shipped", "--key", "o1", "--data", "parcel"])
        .args(["--url", &server.url(""), "--token", "t0ken"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("woke 1, started 0"), "{stdout}");
    assert!(stdout.contains(&format!("woke {waiter}")), "{stdout}");
    let s = wait_state(&server, &waiter, &["succeeded"], Duration::from_secs(15)).await;
    assert_eq!(s["result"]["body"], format!("steps got parcel {waiter}"));
    wait_state(&server, &sleeper, &["succeeded"], Duration::from_secs(15)).await;
    assert_eq!(
        (
            upstream.calls("before").len(),
            upstream.calls("after").len()
        ),
        (1, 1)
    );
    wait_until("nothing left to run", Duration::from_secs(2), async || {
        let n = metric(&server, "fnhost_invocations_in_flight", "background").await;
        if n == 0.0 { Ok(()) } else { Err(n) }
    })
    .await;
}

/// One worker slot, a backlog of low-priority work: a high-priority invocation sent after it
/// is the next one claimed.
#[tokio::test]
pub(crate) async fn with_one_slot_a_high_priority_invocation_goes_before_the_backlog() {
    let server = Server::with(&[])
        .function_as("low-background", "guest-sleep")
        .function_as("high-background", "guest-sleep")
        .config(
            "[server]\nbackground_concurrency = 1\n\
             [functions.low-background]\npriority = -10\n\
             [functions.high-background]\npriority = 10\n",
        )
        .start();
    let mut lows = Vec::new();
    for _ in 0..5 {
        lows.push(accepted_id(
            &post(
                &server,
                "/.netlify/functions/low-background?ms=300",
                &[],
                "",
            )
            .await,
        ));
    }
    wait_state(&server, &lows[0], &["running"], Duration::from_secs(10)).await;
    let high = accepted_id(
        &post(
            &server,
            "/.netlify/functions/high-background?ms=10",
            &[],
            "",
        )
        .await,
    );
    let started = |s: &Value| humantime::parse_rfc3339(s["started_at"].as_str().unwrap()).unwrap();
    let high_at =
        started(&wait_state(&server, &high, &["succeeded"], Duration::from_secs(20)).await);
    let mut before = 0;
    for id in &lows {
        let s = wait_state(&server, id, &["succeeded"], Duration::from_secs(20)).await;
        if started(&s) < high_at {
            before += 1;
        }
    }
    assert_eq!(
        before, 1,
        "only the low one already running went before the high one"
    );
}

/// A function subscribed to an event (`events = [...]`) gets one durable invocation per event,
/// the payload as its body and the event in `fnhost-event-*` headers; a repeated send (same
/// `Idempotency-Key`) starts nothing new.
#[tokio::test]
pub(crate) async fn an_event_starts_each_subscribed_function_once() {
    let server = Server::with(&[])
        .function_as("audit-background", "echo")
        .function_as("mail-background", "echo")
        .function_as("other-background", "echo")
        .config(
            "[server]\nadmin_token = \"t0ken\"\n\
             [functions.audit-background]\nevents = [\"order.created\"]\n\
             [functions.mail-background]\nevents = [\"order.created\", \"order.paid\"]\n\
             [functions.other-background]\nevents = [\"order.paid\"]\n",
        )
        .start();
    let headers = [("idempotency-key", "send-1")];
    let sent = send_event(&server, "order.created", "o-7", "{\"order\":7}", &headers).await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let started: Vec<String> = (sent.json()["started"].as_array().unwrap().iter())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(started.len(), 2, "audit and mail: {}", sent.text());
    let mut functions = Vec::new();
    for id in &started {
        let s = wait_state(&server, id, &["succeeded"], Duration::from_secs(15)).await;
        functions.push(s["function"].as_str().unwrap().to_string());
        let echoed: Value = serde_json::from_str(s["result"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(echoed["body"], "{\"order\":7}", "{echoed}");
        assert_eq!(echoed["headers"]["fnhost-event-name"], "order.created");
        assert_eq!(echoed["headers"]["fnhost-event-key"], "o-7");
        assert_eq!(echoed["headers"]["fnhost-event-id"], sent.json()["id"]);
    }
    functions.sort();
    assert_eq!(functions, ["audit-background", "mail-background"]);
    let again = send_event(&server, "order.created", "o-7", "{\"order\":7}", &headers).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["started"], sent.json()["started"]);
    let all = crate::support::admin_list(&server).await;
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "nothing new started: {all}"
    );
}

/// `server.event_tokens`: a token sends its own event and nothing else; `?key_from=` takes the
/// key from the JSON payload.
#[tokio::test]
async fn an_event_token_sends_its_event_only_and_a_key_can_come_from_the_payload() {
    let upstream = Upstream::start().await;
    // `event_tokens` goes in [server], before [defaults].
    let config = config(upstream.addr).replacen(
        "[defaults]",
        "event_tokens = { \"order.approved\" = \"appr0ve\" }\n[defaults]",
        1,
    );
    let server = Server::with(&[])
        .function_as("steps-background", "guest-steps")
        .config(&config)
        .start();
    let id = start_run(
        &server,
        "op=wait&event=order.approved&key=o-3&timeout_ms=60000",
    )
    .await;
    wait_state(&server, &id, &["waiting"], Duration::from_secs(10)).await;
    let token = ("authorization", "Bearer appr0ve");
    let post = |path: &str, body: &str| {
        let url = server.url(path);
        let body = body.to_string();
        async move { send("POST", &url, &[token], body).await }
    };
    // The token opens no other event and no admin endpoint.
    assert_eq!(
        post("/.fnhost/events/order.paid?key=o-3", "x").await.status,
        401
    );
    let list = send("GET", &server.url("/.fnhost/invocations"), &[token], "").await;
    assert_eq!(list.status, 401, "{}", list.text());
    // A key the payload does not hold is refused, naming the pointer.
    let missing = post("/.fnhost/events/order.approved?key_from=/order/id", "{}").await;
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert!(missing.text().contains("/order/id"), "{}", missing.text());
    let sent = post(
        "/.fnhost/events/order.approved?key_from=/order/id",
        "{\"order\": {\"id\": \"o-3\"}}",
    )
    .await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    assert_eq!(sent.json()["woke"], serde_json::json!([id]));
    let s = wait_state(&server, &id, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(
        s["result"]["body"],
        format!("steps got {{\"order\": {{\"id\": \"o-3\"}}}} {id}")
    );
}

/// `kill -9` while a step's work is under way (its call to the upstream unanswered): after the
/// restart the step runs again — its side effect is at-least-once until `put` commits — and
/// its result is recorded once; the invocation completes.
#[tokio::test]
pub(crate) async fn kill_9_mid_step_runs_the_step_again_and_records_it_once() {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = calls.clone();
    let addr = serve_http(Arc::new(move |req: http::Request<_>| {
        let seen = seen.clone();
        Box::pin(async move {
            let path = req.uri().path().trim_start_matches('/').to_string();
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push(path.clone());
                seen.len() == 1
            };
            if first {
                // The first call hangs: the host is killed while it waits.
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            http::Response::new(BodyExt::boxed(Full::new(Bytes::from(format!("{path}-ok")))))
        })
    }))
    .await;
    let data = tempfile::tempdir().unwrap();
    let start = || {
        Server::with(&[])
            .function_as("steps-background", "guest-steps")
            .config(&config(addr))
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    let id = start_run(&server, &format!("op=sleep&ms=1500&upstream=http://{addr}")).await;
    wait_until(
        "the first step's call",
        Duration::from_secs(10),
        async || {
            if calls.lock().unwrap().len() == 1 {
                Ok(())
            } else {
                Err(calls.lock().unwrap().join(", "))
            }
        },
    )
    .await;
    server.kill9();
    let server = start();
    let s = wait_state(&server, &id, &["succeeded"], Duration::from_secs(20)).await;
    assert_eq!(
        s["result"]["body"], "before=before-ok,after=after-ok",
        "{s}"
    );
    assert_eq!(*calls.lock().unwrap(), ["before", "before", "after"]);
    let steps = step_names(&s);
    assert_eq!(steps, ["before", "nap", "after"], "{s}");
}
