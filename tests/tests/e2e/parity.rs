//! Netlify parity: function subpaths, and rules rewriting to them.

use crate::support::{Server, get, send};

/// Regression: `GET /.netlify/functions/api/users/7` answered 404; on Netlify everything under
/// a function's URL reaches it with the full path (Express-style apps in one function).
#[tokio::test]
async fn everything_under_a_functions_url_reaches_it_with_the_full_path_and_query() {
    let server = Server::with(&["echo"]).start();
    for (path, query) in [
        ("/.netlify/functions/echo", ""),
        ("/.netlify/functions/echo/", ""),
        ("/.netlify/functions/echo/a/b", "x=1&y=two"),
    ] {
        let url = if query.is_empty() {
            server.url(path)
        } else {
            server.url(&format!("{path}?{query}"))
        };
        let reply = get(&url).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["path"], path);
        assert_eq!(seen["query"], query);
    }
    // A sibling name is not a subpath.
    assert_eq!(
        get(&server.url("/.netlify/functions/echo2")).await.status,
        404
    );
}

/// The usual rule for an API in one function: `/api/*  /.netlify/functions/NAME/:splat  200`.
#[tokio::test]
async fn a_rule_rewriting_to_a_subpath_reaches_the_function() {
    let server = Server::with(&["echo"])
        .file(
            "_redirects",
            b"/api/*  /.netlify/functions/echo/:splat  200\n",
        )
        .start();
    let reply = get(&server.url("/api/users/7?active=1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["path"], "/.netlify/functions/echo/users/7");
    assert_eq!(seen["query"], "active=1");
}

/// A function that declares its own `path` is served there only, as on Netlify.
#[tokio::test]
async fn a_function_with_its_own_path_keeps_only_that_route() {
    let server = Server::with(&["echo"])
        .config("[functions.echo]\npath = \"/hi\"\n")
        .start();
    assert_eq!(get(&server.url("/hi")).await.status, 200);
    for gone in ["/.netlify/functions/echo", "/.netlify/functions/echo/a/b"] {
        assert_eq!(get(&server.url(gone)).await.status, 404, "{gone}");
    }
}

/// fnhost's `waitUntil`: a synchronous function answers, finishes its body, and keeps working
/// in the same instance — the client has its answer at once, the later work still happens.
#[tokio::test]
async fn a_function_answers_first_then_finishes_its_work() {
    use std::time::{Duration, Instant};

    let upstream = crate::support::Arrivals::start().await;
    let upstream_addr = upstream.addr;
    let server = Server::with(&[])
        .function_as("later", "guest-later")
        .config(&format!(
            "[functions.later]\nallowed_outbound_hosts = [\"http://{upstream_addr}\"]\n"
        ))
        .start();
    let asked = Instant::now();
    let reply = get(&server.url(&format!(
        "/.netlify/functions/later?ms=800&url=http://{upstream_addr}/report"
    )))
    .await;
    let answered = Instant::now();
    assert_eq!((reply.status, reply.text().as_str()), (200, "answered\n"));
    assert!(
        answered - asked < Duration::from_millis(700),
        "the answer waited for the work: {:?}",
        answered - asked
    );
    assert!(upstream.none_yet(), "the work ran before the answer");
    let posted = upstream.first(Duration::from_secs(10)).await;
    assert!(posted >= answered);
}

/// Work after the answer runs within the same budget and is stopped at it.
#[tokio::test]
async fn work_after_the_answer_is_stopped_at_the_budget() {
    let server = Server::with(&[])
        .function_as("later", "guest-later")
        .config("[functions.later]\ntimeout = \"1s\"\n")
        .start();
    let reply = get(&server.url("/.netlify/functions/later?spin=1")).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "answered\n"));
    server
        .wait_for_log(
            &["invocation stopped: budget exceeded", "function=\"later\""],
            std::time::Duration::from_secs(10),
        )
        .await;
    // The next request gets a fresh instance.
    let again = get(&server.url("/.netlify/functions/later")).await;
    assert_eq!(again.text(), "answered\n");
}

/// Stored results of `function`'s invocations (admin list with bodies), oldest first.
async fn runs(server: &Server, function: &str) -> Vec<serde_json::Value> {
    let list = crate::support::send(
        "GET",
        &server.url(&format!(
            "/.fnhost/invocations?function={function}&result=1"
        )),
        &[("authorization", "Bearer t0ken")],
        "",
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let mut all: Vec<serde_json::Value> = list.json().as_array().unwrap().clone();
    all.reverse();
    all
}

/// Waits until `function` has at least `n` succeeded runs; returns them, oldest first.
pub(crate) async fn succeeded_runs(
    server: &Server,
    function: &str,
    n: usize,
    within: std::time::Duration,
) -> Vec<serde_json::Value> {
    let what = format!("{n} succeeded runs of {function}");
    crate::support::wait_until(&what, within, async || {
        let done: Vec<_> = runs(server, function)
            .await
            .into_iter()
            .filter(|r| r["state"] == "succeeded")
            .collect();
        if done.len() >= n {
            Ok(done)
        } else {
            Err(format!("{done:?}"))
        }
    })
    .await
}

/// What the echo guest saw on a scheduled run: (tick time, echoed request).
fn tick_of(run: &serde_json::Value) -> Option<(chrono_like::Secs, serde_json::Value)> {
    let body = run["result"]["body"].as_str()?;
    let seen: serde_json::Value = serde_json::from_str(body).ok()?;
    let payload: serde_json::Value = serde_json::from_str(seen["body"].as_str()?).ok()?;
    let next = chrono_like::parse(payload["next_run"].as_str()?)?;
    Some((next - 2, seen))
}

/// RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` to seconds since the epoch, without a date crate.
mod chrono_like {
    pub type Secs = i64;
    pub fn parse(t: &str) -> Option<Secs> {
        let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
        let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let mut h = time.split(':').map(|p| p.parse::<i64>().ok());
        let secs = h.next()?? * 3600 + h.next()?? * 60 + h.next()??;
        // Days from civil (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some((era * 146_097 + doe - 719_468) * 86_400 + secs)
    }
    pub fn now() -> Secs {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn parses_to_epoch_seconds() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2026-12-01T01:02:03Z"), Some(1_796_086_923));
        assert_eq!(parse("2028-02-29T00:00:00Z"), Some(1_835_395_200));
    }
}

const EVERY_2S: &str =
    "[server]\nadmin_token = \"t0ken\"\n[functions.echo]\nschedule = \"*/2 * * * * *\"\n";

/// A function scheduled every 2 s (seconds form) runs through the queue, each run a `POST` with
/// `{"next_run": ...}` and the schedule event headers; the startup table shows the schedule.
#[tokio::test]
async fn a_scheduled_function_runs_every_tick_with_the_event_headers_and_next_run() {
    use std::time::Duration;
    let server = Server::with(&["echo"]).config(EVERY_2S).start();
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(table.contains("schedule */2 * * * * * (next "), "{table}");
    let done = succeeded_runs(&server, "echo", 2, Duration::from_secs(7)).await;
    let mut ticks = Vec::new();
    for run in &done {
        let (tick, seen) = tick_of(run).unwrap_or_else(|| panic!("not a scheduled run: {run}"));
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["path"], "/.netlify/functions/echo");
        assert_eq!(seen["headers"]["fnhost-event"], "schedule");
        assert_eq!(seen["headers"]["x-nf-event"], "schedule");
        assert_eq!(tick % 2, 0, "ticks fall on even seconds");
        ticks.push(tick);
    }
    ticks.dedup();
    assert_eq!(ticks.len(), done.len(), "one run per tick: {ticks:?}");
}

/// Ticks missed while no node ran: the latest runs once at startup, the others never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_missed_tick_runs_once_at_startup() {
    use std::time::Duration;
    let data = tempfile::tempdir().unwrap();
    let start = || {
        Server::with(&["echo"])
            .config(EVERY_2S)
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    crate::support::wait_until(
        "a first scheduled run",
        Duration::from_secs(7),
        async || {
            let n = runs(&server, "echo").await.len();
            if n >= 1 { Ok(()) } else { Err(String::new()) }
        },
    )
    .await;
    server.terminate(Duration::from_secs(10)).await;
    let stopped = chrono_like::now();
    // Part of the scenario: no node runs across at least two ticks.
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let server = start();
    let line = server
        .wait_for_log(&["caught up the run missed at"], Duration::from_secs(5))
        .await;
    let missed = line
        .split("missed at ")
        .nth(1)
        .and_then(|rest| chrono_like::parse(rest.split_whitespace().next()?))
        .unwrap_or_else(|| panic!("no tick in {line}"));
    assert!(missed > stopped, "{line}");
    let caught =
        crate::support::wait_until("the caught-up run", Duration::from_secs(5), async || {
            let all = runs(&server, "echo").await;
            let ticks: Vec<_> = all.iter().filter_map(tick_of).map(|(t, _)| t).collect();
            if ticks.contains(&missed) {
                Ok(ticks)
            } else {
                Err(format!("{ticks:?}"))
            }
        })
        .await;
    let during_downtime: Vec<_> = caught
        .iter()
        .filter(|t| **t > stopped && **t <= missed)
        .collect();
    assert_eq!(
        during_downtime,
        [&missed],
        "only the latest missed tick ran"
    );
    assert_eq!(server.count_log(&["caught up the run missed at"]), 1);
}

/// A bad schedule is refused at startup, naming the file, the place and the value.
#[tokio::test]
async fn a_bad_schedule_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("functions")).unwrap();
    std::fs::write(
        dir.path().join("fnhost.toml"),
        "[functions.report]\nschedule = \"every day\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::fnhost_bin())
        .current_dir(dir.path())
        .args([
            "serve",
            "functions",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "fnhost.toml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fnhost.toml:2:") && stderr.contains("invalid schedule \"every day\""),
        "{stderr}"
    );
}

/// The `report-scheduled` example, on a 2-second schedule instead of its daily one.
#[tokio::test]
async fn the_report_scheduled_example_reports_on_its_schedule() {
    use std::time::Duration;
    let server = Server::with(&[])
        .function_as("report-scheduled", "report-scheduled")
        .config(
            "[server]\nadmin_token = \"t0ken\"\n[functions.report-scheduled]\nschedule = \"*/2 * * * * *\"\n",
        )
        .start();
    let run =
        crate::support::wait_until("a scheduled report", Duration::from_secs(7), async || {
            let all = runs(&server, "report-scheduled").await;
            match all.into_iter().find(|r| r["state"] == "succeeded") {
                Some(run) => Ok(run),
                None => Err(String::new()),
            }
        })
        .await;
    let body = run["result"]["body"].as_str().unwrap();
    assert!(
        body.starts_with("report done (schedule); next run at 20") && body.ends_with("Z\n"),
        "{body}"
    );
}

/// `report-scheduled` declares `@daily` through its `config` export (world 0.2): without any
/// fnhost.toml entry it is scheduled daily.
#[tokio::test]
async fn a_schedule_declared_by_the_component_is_used() {
    let server = Server::with(&[])
        .function_as("report-scheduled", "report-scheduled")
        .start();
    let table = server.stdout.lock().unwrap().join("\n");
    let line = table
        .lines()
        .find(|l| l.contains("report-scheduled"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("schedule @daily (next 20"), "{line}");
    assert!(
        line.contains("T00:00:00Z)"),
        "next run at midnight UTC: {line}"
    );
}

/// A component built against `fnhost:function@0.1.0` (before `schedule` was added to its
/// `settings` record) still loads: its declared route and method apply.
#[tokio::test]
async fn a_component_built_against_world_0_1_keeps_working() {
    let server = Server::with(&[])
        .function_as("old", "guest-world-0-1")
        .start();
    let reply = get(&server.url("/old/ada?x=1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "world 0.1 /old/ada?x=1\n");
    let reply = send("POST", &server.url("/old/ada"), &[], "").await;
    assert_eq!(reply.status, 405);
    assert_eq!(
        get(&server.url("/.netlify/functions/old")).await.status,
        404,
        "the declared path replaces the default route"
    );
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(table.contains("/old/:name [GET]"), "{table}");
}
