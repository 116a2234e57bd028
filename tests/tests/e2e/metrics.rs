//! `GET /.fnhost/metrics`: the exposition passes `promtool check metrics`, sits behind the admin
//! token when one is set, and its counters move by exactly the requests a test made.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::background::{accepted_id, wait_state};
use crate::support::{Server, get, require_tool, send, wait_until};

/// The value of the series `name` whose labels include `labels` (0 when there is none).
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

async fn scrape(server: &Server) -> String {
    let reply = send(
        "GET",
        &server.url("/.fnhost/metrics"),
        &[("authorization", "Bearer t0ken")],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    reply.text()
}

#[tokio::test]
#[ignore = "needs promtool (Debian's prometheus package, installed by .ci/run); run with --ignored"]
async fn metrics_pass_promtool_and_count_exactly_what_ran() {
    let promtool = require_tool("promtool");
    let config = "[server]\nadmin_token = \"t0ken\"\n\
        [defaults]\nretry_delays = [\"200ms\"]\n\
        [functions.hello]\nmax_body = \"1KB\"\n\
        [functions.memhog]\nmemory = \"64MB\"\n\
        [functions.nap]\ntimeout = \"300ms\"\n";
    let server = Server::with(&["hello"])
        .function_as("boom", "guest-trap")
        .function_as("memhog", "guest-memhog")
        .function_as("nap", "guest-sleep")
        .function_as("flaky-background", "guest-flaky")
        .config(config)
        .start();

    // Nothing ran yet: every invocation counter is zero.
    let before = scrape(&server).await;
    assert_eq!(
        sample(&before, "fnhost_invocations_total", &[]),
        0.0,
        "{before}"
    );

    for _ in 0..3 {
        assert_eq!(
            get(&server.url("/.netlify/functions/hello")).await.status,
            200
        );
    }
    assert_eq!(
        get(&server.url("/.netlify/functions/boom")).await.status,
        500
    );
    assert_eq!(
        get(&server.url("/.netlify/functions/memhog")).await.status,
        500
    );
    assert_eq!(
        get(&server.url("/.netlify/functions/nap?ms=5000"))
            .await
            .status,
        504
    );
    let big = "x".repeat(2048);
    let url = server.url("/.netlify/functions/hello");
    assert_eq!(send("POST", &url, &[], big).await.status, 413);
    // Fails once (a retry 200 ms later), then succeeds.
    let url = server.url("/.netlify/functions/flaky-background?succeed_on=2");
    let id = accepted_id(&send("POST", &url, &[], "").await);
    wait_state(&server, &id, &["succeeded"], Duration::from_secs(15)).await;

    // The background attempt's counters are written as it ends; wait for the gauge to settle.
    let text = wait_until(
        "the last attempt counted",
        Duration::from_secs(5),
        async || {
            let text = scrape(&server).await;
            let in_flight = sample(&text, "fnhost_invocations_in_flight", &[]);
            let attempts = sample(
                &text,
                "fnhost_invocations_total",
                &[("function", "flaky-background")],
            );
            if in_flight == 0.0 && attempts == 2.0 {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    let count = |labels: &[(&str, &str)]| sample(&text, "fnhost_invocations_total", labels);
    let hello = [("function", "hello"), ("mode", "sync")];
    assert_eq!(
        count(&[hello[0], hello[1], ("outcome", "completed")]),
        3.0,
        "{text}"
    );
    assert_eq!(
        count(&[("function", "boom"), ("outcome", "trapped")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(&[("function", "memhog"), ("outcome", "memory_cap")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(&[("function", "nap"), ("outcome", "timeout")]),
        1.0,
        "{text}"
    );
    let flaky = ("function", "flaky-background");
    let bg = ("mode", "background");
    assert_eq!(count(&[flaky, bg, ("outcome", "trapped")]), 1.0, "{text}");
    assert_eq!(count(&[flaky, bg, ("outcome", "completed")]), 1.0, "{text}");
    assert_eq!(count(&[]), 8.0, "nothing else was invoked: {text}");

    let stops = |labels: &[(&str, &str)]| sample(&text, "fnhost_limit_stops_total", labels);
    assert_eq!(stops(&[("function", "memhog"), ("limit", "memory")]), 1.0);
    assert_eq!(stops(&[("function", "nap"), ("limit", "time")]), 1.0);
    assert_eq!(stops(&[]), 2.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "fnhost_rejections_total",
            &[("reason", "body_too_large")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "fnhost_retries_total", &[flaky]),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "fnhost_background_dead_total", &[]),
        0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "fnhost_queue_invocations", &[("state", "succeeded")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "fnhost_invocation_duration_seconds_count", &hello),
        3.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "fnhost_instantiation_duration_seconds_count",
            &[("function", "hello")]
        ) == 3.0,
        "{text}"
    );

    // Behind the admin token when one is set.
    let anonymous = get(&server.url("/.fnhost/metrics")).await;
    assert_eq!(anonymous.status, 401);

    // Prometheus' own linter accepts the exposition.
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without an admin token the metrics are open, like `/.fnhost/health`.
#[tokio::test]
async fn without_an_admin_token_metrics_are_open() {
    let server = Server::with(&["hello"]).start();
    get(&server.url("/.netlify/functions/hello")).await;
    let reply = get(&server.url("/.fnhost/metrics")).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert_eq!(
        sample(&text, "fnhost_invocations_total", &[("function", "hello")]),
        1.0,
        "{text}"
    );
}
