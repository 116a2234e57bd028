//! Schedule controls: pause, resume and run now (admin API, CLI), durable across restarts;
//! `overlap = "skip"` keeps a slow scheduled function from running twice at once; the next
//! runs in a time zone.

use std::time::{Duration, SystemTime};

use crate::metrics::sample;
use crate::support::{Server, admin_get, fnhost_bin, send, wait_until};

const TOKEN: &str = "t0ken";

/// Every invocation of `function` (admin list), oldest first.
async fn invocations(server: &Server, function: &str) -> Vec<serde_json::Value> {
    let list = admin_get(
        server,
        &format!("/.fnhost/invocations?function={function}"),
        TOKEN,
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let mut all = list.json().as_array().unwrap().clone();
    all.reverse();
    all
}

/// `POST /.fnhost/functions/NAME/schedule/ACTION` with the admin token.
async fn control(server: &Server, name: &str, action: &str) -> crate::support::Reply {
    let path = format!("/.fnhost/functions/{name}/schedule/{action}");
    let auth = format!("Bearer {TOKEN}");
    send("POST", &server.url(&path), &[("authorization", &auth)], "").await
}

/// `fnhost schedule ARGS… --url … --token …`: exit success and stdout.
fn cli(server: &Server, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(fnhost_bin())
        .arg("schedule")
        .args(args)
        .args(["--url", &server.url(""), "--token", TOKEN])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        text + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn a_paused_schedule_stays_paused_across_restarts_until_resumed_and_runs_on_demand() {
    let data = tempfile::tempdir().unwrap();
    let config =
        "[server]\nadmin_token = \"t0ken\"\n[functions.echo]\nschedule = \"* * * * * *\"\n";
    let start = || {
        Server::with(&["echo"])
            .config(config)
            .data_dir(data.path())
            .start()
    };
    let mut server = start();
    wait_until("a first tick", Duration::from_secs(5), async || {
        !invocations(&server, "echo").await.is_empty()
    })
    .await;

    let reply = control(&server, "echo", "pause").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["paused"], true);
    let at_pause = invocations(&server, "echo").await.len();
    // A quiet period of three ticks: none is stored (one racing the pause at most).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = invocations(&server, "echo").await.len();
    assert!(
        after <= at_pause + 1,
        "ticked while paused: {at_pause} → {after}"
    );
    let metrics = admin_get(&server, "/.fnhost/metrics", TOKEN).await.text();
    let skipped = [("function", "echo"), ("reason", "paused")];
    assert!(
        sample(&metrics, "fnhost_schedule_skipped_total", &skipped) >= 2.0,
        "{metrics}"
    );

    // Durable: a restarted node still sees the pause.
    server.terminate(Duration::from_secs(10)).await;
    let server = start();
    let (ok, out) = cli(&server, &["next", "echo", "-n", "3"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "* * * * * * (UTC), overlap skip, paused", "{out}");
    assert_eq!(lines.len(), 4, "{out}");
    let times: Vec<SystemTime> = lines[1..]
        .iter()
        .map(|t| humantime::parse_rfc3339(t).unwrap())
        .collect();
    assert!(
        times
            .windows(2)
            .all(|w| w[1].duration_since(w[0]).unwrap() == Duration::from_secs(1))
    );

    // Run now, while paused: one run, outside the schedule.
    let (ok, out) = cli(&server, &["run", "echo"]);
    assert!(
        ok && out.contains("echo: run ") && out.contains(" queued"),
        "{out}"
    );
    let id = out.split_whitespace().nth(2).unwrap().to_string();
    let detail =
        crate::background::wait_state(&server, &id, &["succeeded"], Duration::from_secs(5)).await;
    assert_eq!(detail["state"], "succeeded");

    let before = invocations(&server, "echo").await.len();
    let (ok, out) = cli(&server, &["resume", "echo"]);
    assert!(ok && out.contains("echo: schedule running"), "{out}");
    wait_until("ticks after resume", Duration::from_secs(5), async || {
        invocations(&server, "echo").await.len() >= before + 2
    })
    .await;

    // Not a scheduled function, not a function, no token.
    let server2 = Server::with(&["hello"])
        .config("[server]\nadmin_token = \"t0ken\"\n")
        .start();
    assert_eq!(control(&server2, "hello", "pause").await.status, 409);
    assert_eq!(control(&server2, "nope", "pause").await.status, 404);
    let bare = send(
        "POST",
        &server2.url("/.fnhost/functions/hello/schedule/run"),
        &[],
        "",
    )
    .await;
    assert_eq!(bare.status, 401);
}

/// `[start, end)` of a finished run, in ms since the epoch.
fn span(run: &serde_json::Value) -> Option<(u128, u128)> {
    let ms = |k: &str| {
        let t = humantime::parse_rfc3339(run[k].as_str()?).ok()?;
        Some(t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis())
    };
    Some((ms("started_at")?, ms("finished_at")?))
}

/// Whether any two of `spans` overlap.
fn any_overlap(spans: &[(u128, u128)]) -> bool {
    spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1))
}

#[tokio::test]
async fn overlap_skip_never_runs_a_slow_schedule_twice_at_once_and_allow_does() {
    // The sleep guest sleeps an hour unless asked: each scheduled run is stopped at 2.5 s.
    let config = "[server]\nadmin_token = \"t0ken\"\n\
        [functions.slow]\nschedule = \"* * * * * *\"\ntimeout = \"2500ms\"\n\
        [functions.eager]\nschedule = \"* * * * * *\"\ntimeout = \"2500ms\"\noverlap = \"allow\"\n";
    let server = Server::with(&[])
        .function_as("slow", "guest-sleep")
        .function_as("eager", "guest-sleep")
        .config(config)
        .start();
    let finished = async |name: &str, n: usize| {
        wait_until(
            &format!("{n} finished runs of {name}"),
            Duration::from_secs(15),
            async || {
                let spans: Vec<_> = invocations(&server, name)
                    .await
                    .iter()
                    .filter_map(span)
                    .collect();
                (spans.len() >= n).then_some(spans)
            },
        )
        .await
    };
    let slow = finished("slow", 2).await;
    assert!(!any_overlap(&slow), "overlap = skip ran at once: {slow:?}");
    let eager = finished("eager", 3).await;
    assert!(
        any_overlap(&eager),
        "overlap = allow never overlapped: {eager:?}"
    );
    let metrics = admin_get(&server, "/.fnhost/metrics", TOKEN).await.text();
    let skipped = [("function", "slow"), ("reason", "overlap")];
    assert!(
        sample(&metrics, "fnhost_schedule_skipped_total", &skipped) >= 1.0,
        "{metrics}"
    );
    let skipped = [("function", "eager"), ("reason", "overlap")];
    assert_eq!(
        sample(&metrics, "fnhost_schedule_skipped_total", &skipped),
        0.0
    );
}

#[tokio::test]
async fn next_runs_are_read_in_the_schedule_s_zone() {
    let config = "[server]\nadmin_token = \"t0ken\"\n\
        [functions.echo]\nschedule = \"30 9 * * *\"\nschedule_tz = \"Asia/Kolkata\"\n";
    let server = Server::with(&["echo"]).config(config).start();
    let (ok, out) = cli(&server, &["next", "echo", "-n", "2"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "30 9 * * * (Asia/Kolkata), overlap skip", "{out}");
    // 09:30 in Kolkata (UTC+05:30, no DST) is 04:00 UTC.
    for line in &lines[1..] {
        assert!(line.ends_with("T04:00:00Z"), "{out}");
    }
}
