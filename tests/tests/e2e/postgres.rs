//! The PostgreSQL queue, against a real server: several fnhost nodes on one database share
//! the work, each invocation runs to one result, a killed node's work is taken over after its
//! lease, a stalled node is fenced out, idle nodes wake on LISTEN/NOTIFY — and the background
//! suite's scenarios pass on PostgreSQL too.
//!
//! One throwaway server per test binary (`tests/pg/tmp-postgres.sh`: `initdb` in a temp dir,
//! unix socket there plus a free loopback port; a watchdog stops it when this process ends),
//! one fresh database per test. They need PostgreSQL's binaries, so they are ignored by a plain
//! `cargo test`; run with `--ignored` (as `.ci/run` does), they fail when it is not installed.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::background::{self, Destination, accepted_id, post, wait_state};
use crate::support::{QueueScope, Server, get, missing_tool, repo_root, send, wait_until};

/// The shared throwaway server.
struct Pg {
    dir: PathBuf,
    port: u16,
    url: String,
}

fn script() -> PathBuf {
    repo_root().join("tests").join("pg").join("tmp-postgres.sh")
}

/// Starts the server once per test binary; `Err` (what is missing) when PostgreSQL is not
/// installed.
fn server() -> Result<&'static Pg, &'static str> {
    static PG: OnceLock<Result<Pg, String>> = OnceLock::new();
    PG.get_or_init(|| start_server("shared"))
        .as_ref()
        .map_err(String::as_str)
}

/// Starts a throwaway server in a directory named after `tag` on a free port, stopped when
/// this process ends; `Err` (what is missing) when PostgreSQL is not installed.
fn start_server(tag: &str) -> Result<Pg, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("fnhost-pg-{}-{tag}", std::process::id()));
    let out = pg_script(&[
        "start",
        dir.to_str().unwrap(),
        &port.to_string(),
        &std::process::id().to_string(),
    ]);
    match out.status.code() {
        Some(0) => Ok(Pg {
            dir,
            port,
            url: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }),
        Some(3) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        _ => panic!(
            "cannot start PostgreSQL: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs `tests/pg/tmp-postgres.sh` with `args`.
fn pg_script(args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg(script())
        .args(args)
        .output()
        .expect("run tests/pg/tmp-postgres.sh")
}

/// A fresh database named after `test`; a failed test when PostgreSQL is not installed.
pub(crate) fn database(test: &str) -> Db {
    let pg = server().unwrap_or_else(|why| missing_tool("PostgreSQL", why));
    database_on(pg, test)
}

/// A fresh database named after `test` on `pg`.
fn database_on(pg: &'static Pg, test: &str) -> Db {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut name = format!("t{}_{test}", N.fetch_add(1, Ordering::Relaxed));
    name.truncate(63);
    let out = Command::new("sh")
        .arg(script())
        .arg("createdb")
        .arg(&pg.dir)
        .arg(pg.port.to_string())
        .arg(&name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "createdb {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Db {
        url: format!("{}/{name}", pg.url),
        name,
        pg,
    }
}

/// One test's database.
pub(crate) struct Db {
    pub(crate) url: String,
    name: String,
    pg: &'static Pg,
}

impl Db {
    /// Rows of `sql`, columns split on `|`.
    pub(crate) fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let out = Command::new("sh")
            .arg(script())
            .arg("psql")
            .arg(&self.pg.dir)
            .arg(self.pg.port.to_string())
            .arg(&self.name)
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect()
    }

    /// The single value of `sql`.
    fn value(&self, sql: &str) -> String {
        let rows = self.query(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].clone()
    }

    pub(crate) fn int(&self, sql: &str) -> i64 {
        self.value(sql).parse().unwrap()
    }
}

/// Sends SIGSTOP or SIGCONT.
fn signal(server: &Server, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(server.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts the builders at once (each on its own thread), as nodes booting together would.
fn start_all(builders: Vec<crate::support::ServerBuilder>) -> Vec<Server> {
    std::thread::scope(|s| {
        let handles: Vec<_> = builders
            .into_iter()
            .map(|b| s.spawn(move || b.start()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn node(db: &Db, config: &str) -> crate::support::ServerBuilder {
    Server::with(&[])
        .function_as("work-background", "guest-sleep")
        .config(config)
        .queue(&db.url)
}

#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn nodes_starting_together_migrate_once_and_report_synchronous_commit() {
    let db = database("migrate");
    let nodes = start_all((0..3).map(|_| node(&db, "")).collect());
    // Each migration applied once, whichever node got there first.
    assert_eq!(
        db.query("SELECT version FROM fnhost_schema ORDER BY version"),
        [
            ["1"],
            ["2"],
            ["3"],
            ["4"],
            ["5"],
            ["6"],
            ["7"],
            ["8"],
            ["9"],
            ["10"],
            ["11"],
            ["12"]
        ]
    );
    for (table, column) in [("invocations", "body"), ("deploy_blob_chunks", "data")] {
        let sql = format!(
            "SELECT data_type FROM information_schema.columns WHERE table_name = '{table}' AND column_name = '{column}'"
        );
        assert_eq!(db.value(&sql), "bytea", "{table}.{column}");
    }
    for n in &nodes {
        let health = get(&n.url("/.fnhost/health")).await.json();
        assert_eq!(health["queue"]["backend"], "postgres", "{health}");
        assert_eq!(health["queue"]["synchronous_commit"], "on", "{health}");
        assert_eq!(health["queue"]["fsync"], "on", "{health}");
    }
    // A restart finds the schema current and applies nothing.
    drop(nodes);
    let _again = node(&db, "").start();
    assert_eq!(db.int("SELECT COUNT(*) FROM fnhost_schema"), 12);
}

#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn two_nodes_share_a_few_hundred_invocations_and_run_each_exactly_once() {
    const N: usize = 300;
    let db = database("share");
    let dest = Destination::start().await;
    let config = format!(
        "[server]\nlease = \"5s\"\n[functions.work-background]\non_success = \"{}\"\n",
        dest.url("/ok")
    );
    let nodes = start_all(vec![node(&db, &config), node(&db, &config)]);
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.url("/.netlify/functions/work-background?ms=20"))
        .collect();
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..16 {
        let urls = urls.clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (c..N).step_by(16) {
                let reply = send("POST", &urls[i % 2], &[], format!("{{\"n\":{i}}}")).await;
                ids.push(accepted_id(&reply));
            }
            ids
        }));
    }
    let mut ids = BTreeSet::new();
    for c in clients {
        ids.extend(c.await.unwrap());
    }
    assert_eq!(ids.len(), N);
    let accepted = started.elapsed();
    wait_until(
        "every invocation to succeed",
        Duration::from_secs(60),
        async || db.int("SELECT COUNT(*) FROM invocations WHERE state = 'succeeded'") == N as i64,
    )
    .await;
    let ran = started.elapsed();
    // Claimed once each (the fencing token moves on every claim), one attempt each.
    assert_eq!(
        db.query("SELECT COUNT(*), MIN(attempts), MAX(attempts), MIN(lease_token), MAX(lease_token) FROM invocations"),
        [[N.to_string(), "1".into(), "1".into(), "1".into(), "1".into()]]
    );
    // One guest run per id across both nodes, and both nodes ran some.
    let mut runs: HashMap<String, usize> = HashMap::new();
    let mut per_node = Vec::new();
    for n in &nodes {
        let logs = n.logs();
        let mine: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("invocation completed") && l.contains("work-background"))
            .collect();
        for id in &ids {
            let hits = mine.iter().filter(|l| l.contains(id.as_str())).count();
            *runs.entry(id.clone()).or_default() += hits;
        }
        per_node.push(mine.len());
    }
    assert!(
        runs.values().all(|&r| r == 1),
        "some ran twice or never: {runs:?}"
    );
    assert_eq!(per_node.iter().sum::<usize>(), N, "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "one node ran nothing: {per_node:?}"
    );
    // One success record per id, from whichever node ran it.
    wait_until(
        "every destination record",
        Duration::from_secs(30),
        async || dest.records.lock().unwrap().len() >= N,
    )
    .await;
    // Not a wait for state: a quiet period in which a second record for an id would arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &ids {
        let records = dest.for_id(id);
        assert_eq!(records.len(), 1, "{id}: {records:?}");
        assert_eq!(records[0]["requestContext"]["approximateInvokeCount"], 1);
    }
    eprintln!(
        "two nodes: {N} accepted in {accepted:?}, all succeeded after {ran:?}; runs per node {per_node:?}"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn an_idempotency_key_sent_to_both_nodes_at_once_is_stored_once() {
    let db = database("idem_nodes");
    let nodes = start_all(vec![node(&db, ""), node(&db, "")]);
    // 24 keys, each sent once by each of 16 clients, half of them taking the keys in reverse
    // order, alternating nodes: batches on both nodes carry the same keys at once.
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.url("/.netlify/functions/work-background?ms=1"))
        .collect();
    let mut clients = Vec::new();
    for c in 0..16usize {
        let urls = urls.clone();
        clients.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for k in 0..24usize {
                let key = format!("key-{}", if c % 2 == 0 { k } else { 23 - k });
                let url = &urls[(c + k) % 2];
                let reply = send("POST", url, &[("idempotency-key", &key)], "").await;
                got.push((key, accepted_id(&reply)));
            }
            got
        }));
    }
    let mut ids: HashMap<String, BTreeSet<String>> = HashMap::new();
    for c in clients {
        for (key, id) in c.await.unwrap() {
            ids.entry(key).or_default().insert(id);
        }
    }
    assert_eq!(ids.len(), 24);
    assert!(ids.values().all(|v| v.len() == 1), "{ids:?}");
    assert_eq!(db.int("SELECT COUNT(*) FROM invocations"), 24);
    wait_until("all 24 to succeed", Duration::from_secs(20), async || {
        db.int("SELECT COUNT(*) FROM invocations WHERE state = 'succeeded' AND attempts = 1") == 24
    })
    .await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn a_killed_node_s_running_work_is_taken_over_after_its_lease_and_succeeds() {
    let db = database("kill9");
    let lease = "[server]\nlease = \"2s\"\n";
    // The survivor runs two at a time, so the victim holds most of the six.
    let mut nodes = start_all(vec![
        node(&db, lease),
        node(&db, &format!("{lease}background_concurrency = 2\n")),
    ]);
    let (victim_pid, survivor_pid) = (nodes[0].pid(), nodes[1].pid());
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(accepted_id(
            &post(
                &nodes[0],
                "/.netlify/functions/work-background?ms=4000",
                &[],
                "",
            )
            .await,
        ));
    }
    wait_until("all six running", Duration::from_secs(10), async || {
        db.int("SELECT COUNT(*) FROM invocations WHERE state = 'running'") == 6
    })
    .await;
    let owned = |pid: u32| {
        db.query(&format!(
            "SELECT id FROM invocations WHERE state = 'running' AND lease_owner LIKE '{pid}-%' ORDER BY id"
        ))
        .into_iter()
        .map(|r| r[0].clone())
        .collect::<Vec<_>>()
    };
    assert!(owned(survivor_pid).len() <= 2);
    let victims = owned(victim_pid);
    assert!(victims.len() >= 4, "victim holds {victims:?}");
    nodes[0].kill9();
    let killed = Instant::now();
    // The lease each victim row had when its holder died (nothing renews it any more).
    let expiry: HashMap<String, i64> = db
        .query(&format!(
            "SELECT id, lease_expires_at FROM invocations WHERE lease_owner LIKE '{victim_pid}-%'"
        ))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(expiry.len(), victims.len());
    let survivor = &nodes[1];
    for id in &ids {
        let s = wait_state(survivor, id, &["succeeded"], Duration::from_secs(30)).await;
        // The attempt cut off by the kill is not counted.
        assert_eq!(s["attempts"], 1, "{s}");
    }
    for id in &victims {
        let row = &db.query(&format!(
            "SELECT started_at, lease_token, lease_owner IS NULL FROM invocations WHERE id = '{id}'"
        ))[0];
        let started: i64 = row[0].parse().unwrap();
        assert!(
            started >= expiry[id],
            "{id} was taken over {} ms before its lease expired",
            expiry[id] - started
        );
        assert_eq!(
            row[1], "2",
            "claimed twice: by the victim, then by the survivor"
        );
    }
    survivor
        .wait_for_log(&["lease expired"], Duration::from_secs(1))
        .await;
    eprintln!(
        "kill -9: {} held by the killed node, all succeeded {:?} after the kill",
        victims.len(),
        killed.elapsed()
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn a_stalled_node_is_fenced_out_and_one_result_stands() {
    let db = database("fence");
    let dest = Destination::start().await;
    let config = format!(
        "[server]\nlease = \"2s\"\n[functions.work-background]\non_success = \"{}\"\n",
        dest.url("/ok")
    );
    // The first node claims the invocation before the second exists.
    let stalled = node(&db, &config).start();
    let id = accepted_id(
        &post(
            &stalled,
            "/.netlify/functions/work-background?ms=4000",
            &[],
            "{\"once\":true}",
        )
        .await,
    );
    wait_state(&stalled, &id, &["running"], Duration::from_secs(5)).await;
    let other = node(&db, &config).start();
    let owner = |pid: u32| {
        db.int(&format!(
            "SELECT COUNT(*) FROM invocations WHERE id = '{id}' AND state = 'running' AND lease_owner LIKE '{pid}-%'"
        )) == 1
    };
    assert!(owner(stalled.pid()), "the first node does not hold {id}");
    signal(&stalled, "STOP");
    let stopped = Instant::now();
    wait_until(
        "the other node to take it over",
        Duration::from_secs(10),
        async || owner(other.pid()),
    )
    .await;
    let took_over = stopped.elapsed();
    signal(&stalled, "CONT");
    // Its heartbeat (or, if the guest finished first, its completion) matches nothing.
    wait_until(
        "the stalled node to be fenced out",
        Duration::from_secs(5),
        async || {
            let fenced = stalled.count_log(&["lease lost", &id])
                + stalled.count_log(&["result discarded", &id]);
            if fenced > 0 {
                Ok(())
            } else {
                Err(stalled.logs())
            }
        },
    )
    .await;
    let done = wait_state(&other, &id, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(
        db.int(&format!(
            "SELECT lease_token FROM invocations WHERE id = '{id}'"
        )),
        2
    );
    dest.wait_for(&id, Duration::from_secs(5)).await;
    // Not a wait for state: a quiet period in which a record from the fenced node would arrive.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let records = dest.for_id(&id);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(other.count_log(&["invocation completed", &id]), 1);
    assert!(took_over >= Duration::from_millis(1300), "{took_over:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn an_idle_node_wakes_at_once_on_work_enqueued_on_another() {
    let db = database("notify");
    // The node taking the requests has one slot, kept busy, so the other must run them; idle,
    // it polls only once a second, so a prompt start is the notification's doing.
    let busy = node(&db, "[server]\nbackground_concurrency = 1\n").start();
    let long = accepted_id(
        &post(
            &busy,
            "/.netlify/functions/work-background?ms=60000",
            &[],
            "",
        )
        .await,
    );
    wait_state(&busy, &long, &["running"], Duration::from_secs(5)).await;
    let idle = node(&db, "").start();
    // Both nodes LISTEN on the work channel (the idle one's listener is what is tested).
    wait_until(
        "both nodes to LISTEN for work",
        Duration::from_secs(5),
        async || {
            db.int(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            ) == 2
        },
    )
    .await;
    let mut delays = Vec::new();
    for i in 0..8 {
        // Pacing, not a wait for state: land anywhere in the idle node's 1 s poll cycle.
        tokio::time::sleep(Duration::from_millis(150 + 130 * i)).await;
        let id =
            accepted_id(&post(&busy, "/.netlify/functions/work-background?ms=10", &[], "").await);
        wait_state(&idle, &id, &["succeeded"], Duration::from_secs(5)).await;
        delays.push(db.int(&format!(
            "SELECT started_at - created_at FROM invocations WHERE id = '{id}'"
        )));
    }
    eprintln!("claim delays on the idle node (ms): {delays:?}");
    // Polling alone starts each within 0..1000 ms, under 300 ms with odds 0.3: six of eight
    // that quick by chance has odds near 1 %. Woken by NOTIFY, they start within a few ms (a
    // loaded machine may delay one or two).
    let quick = delays.iter().filter(|&&d| d < 300).count();
    assert!(quick >= 6, "claim delays (ms) {delays:?}");
}

/// Runs a background-suite scenario (written for the embedded queue) on a fresh PostgreSQL
/// database: every server it starts uses that database.
fn on_postgres(name: &str, scenario: fn()) {
    let db = database(name);
    let _scope = QueueScope::enter(&db.url);
    scenario();
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_success_and_its_destination_record() {
    on_postgres(
        "success",
        background::accepted_at_once_then_runs_to_success_and_reports_once,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_retries_then_succeeds() {
    on_postgres(
        "retries",
        background::fails_twice_then_succeeds_with_attempts_spaced_by_the_delays,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_dead_after_three_with_one_failure_record() {
    on_postgres(
        "dead",
        background::always_failing_is_dead_after_three_attempts_with_one_failure_record,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_idempotency_across_restarts() {
    on_postgres(
        "idempotency",
        background::idempotency_key_returns_the_same_id_and_runs_once_even_after_restart,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_kill_9_while_running_and_retrying() {
    on_postgres(
        "kill9_running",
        background::kill_9_while_running_and_during_a_retry_delay_loses_nothing,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_kill_9_during_a_burst_of_enqueues() {
    on_postgres(
        "kill9_burst",
        background::kill_9_during_a_burst_of_enqueues_loses_nothing_acknowledged,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_admin_list_cancel() {
    on_postgres(
        "admin",
        background::admin_lists_cancels_and_replays_behind_the_token,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_replay() {
    on_postgres("replay", background::a_dead_invocation_can_be_replayed);
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn background_body_limit() {
    on_postgres(
        "body_limit",
        background::over_the_body_limit_is_413_and_nothing_is_enqueued,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn workflow_steps_once_across_a_retry() {
    on_postgres(
        "steps_retry",
        crate::workflows::steps_recorded_before_a_failure_are_not_done_again_on_the_retry,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn workflow_sleep() {
    on_postgres(
        "steps_sleep",
        crate::workflows::a_sleep_holds_no_instance_and_reruns_at_its_time_skipping_finished_steps,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn workflow_wait_by_key() {
    on_postgres(
        "steps_wait",
        crate::workflows::a_wait_is_woken_by_its_event_with_the_right_key_only,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn workflow_kill_9() {
    on_postgres(
        "steps_kill9",
        crate::workflows::sleeping_and_waiting_invocations_survive_kill_9_and_finish_once,
    );
}

#[test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
fn workflow_priority() {
    on_postgres(
        "priority",
        crate::workflows::with_one_slot_a_high_priority_invocation_goes_before_the_backlog,
    );
}

/// Two nodes on one PostgreSQL: 200 invocations waiting on 200 keys, each event sent to one
/// node and then again to the other: every invocation woken exactly once, by the first.
#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn two_nodes_wake_each_of_200_waits_exactly_once() {
    const N: usize = 200;
    let db = database("events");
    let config = crate::workflows::config("127.0.0.1:9".parse().unwrap());
    let config = format!("{config}[functions.audit-background]\nevents = [\"paid\"]\n");
    let node = || {
        Server::with(&[])
            .function_as("steps-background", "guest-steps")
            .function_as("audit-background", "echo")
            .config(&config)
            .queue(&db.url)
    };
    let nodes = start_all(vec![node(), node()]);
    let mut ids = Vec::new();
    for i in 0..N {
        let query = format!("op=wait&event=paid&key=k{i}&timeout_ms=600000");
        ids.push(crate::workflows::start_run(&nodes[i % 2], &query).await);
    }
    wait_until("all 200 to wait", Duration::from_secs(60), async || {
        let n = db.int("SELECT COUNT(*) FROM invocations WHERE state = 'waiting'");
        if n == N as i64 { Ok(()) } else { Err(n) }
    })
    .await;
    let nodes = std::sync::Arc::new(nodes);
    let mut sends = Vec::new();
    for c in 0..8 {
        let nodes = nodes.clone();
        sends.push(tokio::spawn(async move {
            let mut woke = Vec::new();
            for i in (c..N).step_by(8) {
                for n in [i % 2, (i + 1) % 2] {
                    let key = format!("k{i}");
                    let reply = crate::workflows::send_event(
                        &nodes[n],
                        "paid",
                        &key,
                        &format!("p{i}"),
                        &[],
                    )
                    .await;
                    assert_eq!(reply.status, 201, "{}", reply.text());
                    for id in reply.json()["woke"].as_array().unwrap() {
                        woke.push((i, id.as_str().unwrap().to_string()));
                    }
                }
            }
            woke
        }));
    }
    let mut woke: Vec<(usize, String)> = Vec::new();
    for s in sends {
        woke.extend(s.await.unwrap());
    }
    woke.sort();
    let expected: Vec<(usize, String)> = ids.iter().cloned().enumerate().collect();
    assert_eq!(
        woke, expected,
        "each invocation woken once, by its own key's first event"
    );
    for (i, id) in ids.iter().enumerate() {
        let s = wait_state(&nodes[i % 2], id, &["succeeded"], Duration::from_secs(60)).await;
        assert_eq!(s["result"]["body"], format!("steps got p{i} {id}"));
        let runs: usize = nodes.iter().map(|n| n.count_log(&["steps run", id])).sum();
        assert_eq!(runs, 2, "{id}: the waiting run and the woken one");
    }
    // Every send was a new event: each started the subscriber once.
    let audits = "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM invocations WHERE function = 'audit-background'";
    assert_eq!(
        db.query(audits),
        [[(2 * N).to_string(), (2 * N).to_string()]]
    );
}

/// Two nodes on one PostgreSQL, a schedule every second: each tick is one invocation (unique
/// by function and tick), none twice and none missing while both run.
#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn two_nodes_run_each_scheduled_tick_exactly_once() {
    let db = database("schedule");
    // Each run sleeps long: every tick runs beside the last (`overlap = "allow"`).
    let config = "[functions.work-background]\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n";
    let nodes = start_all((0..2).map(|_| node(&db, config)).collect());
    // Part of the scenario, not a wait for state: both nodes schedule for ten seconds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(nodes);
    let keys: Vec<String> = db
        .query("SELECT tick FROM invocations WHERE function = 'work-background' ORDER BY tick")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert!(keys.len() >= 8, "{keys:?}");
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(unique, keys, "a tick enqueued twice");
    // Consecutive seconds: no tick missing between the first and the last.
    let secs: Vec<i64> = keys
        .iter()
        .map(|k| {
            let hms = k.split('T').nth(1).unwrap().trim_end_matches('Z');
            let p: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
            p[0] * 3600 + p[1] * 60 + p[2]
        })
        .collect();
    for pair in secs.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1,
            "a tick missing between {pair:?}: {keys:?}"
        );
    }
}

/// Security item 6 on PostgreSQL: the database stopped (immediate mode, as a crash) under a
/// load of background POSTs. While it is down, POSTs get `503` with `Retry-After` — never a
/// `500` — and health says the queue is failing; once it is back, the same node accepts again
/// with no restart, and every `202` it gave runs to success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn a_stopped_database_answers_503_and_the_node_recovers_alone() {
    use std::sync::{Arc, Mutex};
    // A server of its own: stopping the shared one would fail the other tests meanwhile.
    let pg: &'static Pg = Box::leak(Box::new(
        start_server("stopped").unwrap_or_else(|why| missing_tool("PostgreSQL", &why)),
    ));
    let db = database_on(pg, "stopped");
    let server = node(&db, "[server]\nlease = \"2s\"\n").start();
    let url = server.url("/.netlify/functions/work-background?ms=1");
    // (status, id) of every POST; four clients, bounded in count and time.
    // (status, id) of every POST.
    type Seen = Arc<Mutex<Vec<(u16, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, seen, stop) = (url.clone(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(120);
                for _ in 0..1500 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > until {
                        break;
                    }
                    let reply = send("POST", &url, &[], "{}").await;
                    if reply.status == 503 {
                        assert_eq!(reply.header("retry-after"), Some("5"), "{}", reply.text());
                    }
                    let id = reply.header("fnhost-invocation-id").map(str::to_string);
                    seen.lock().unwrap().push((reply.status, id));
                }
            })
        })
        .collect();
    let count = |status: u16| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == status)
            .count()
    };
    wait_until(
        "20 accepted before the stop",
        Duration::from_secs(30),
        async || (count(202) >= 20).then_some(()).ok_or(String::new()),
    )
    .await;
    assert!(
        pg_script(&["halt", pg.dir.to_str().unwrap()])
            .status
            .success()
    );
    wait_until(
        "a 503 while the database is down",
        Duration::from_secs(30),
        async || (count(503) >= 1).then_some(()).ok_or(String::new()),
    )
    .await;
    let health = get(&server.url("/.fnhost/health")).await;
    assert_eq!(health.status, 503, "{}", health.text());
    let h = health.json();
    assert_eq!(h["queue"]["state"], "failing", "{h}");
    assert!(
        matches!(
            h["queue"]["error"].as_str(),
            Some("unreachable" | "no_connection")
        ),
        "{h}"
    );
    let restarted = pg_script(&["start", pg.dir.to_str().unwrap(), &pg.port.to_string()]);
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let before = count(202);
    wait_until(
        "202 again once the database is back",
        Duration::from_secs(60),
        async || {
            (count(202) > before + 10)
                .then_some(())
                .ok_or(String::new())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let others: Vec<_> = seen
        .iter()
        .filter(|(s, _)| ![202, 503].contains(s))
        .collect();
    assert!(
        others.is_empty(),
        "answers other than 202 and 503: {others:?}"
    );
    let accepted: Vec<String> = seen
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, id)| id.clone().unwrap())
        .collect();
    for id in &accepted {
        wait_state(&server, id, &["succeeded"], Duration::from_secs(120)).await;
    }
    let health = get(&server.url("/.fnhost/health")).await;
    assert_eq!(health.status, 200, "{}", health.text());
    eprintln!(
        "database stopped under load: {} accepted (all succeeded), {} refused with 503",
        accepted.len(),
        seen.len() - accepted.len()
    );
}

/// Two nodes on one PostgreSQL share a rate limit: 80 requests from one client, alternating
/// nodes 50 ms apart, against `window_limit = 20`. Alone each node would serve 20 (40 in all);
/// sharing counts every 250 ms, the cluster serves 20 plus at most what the nodes admit in one
/// exchange interval (here 2 × 3: each node sees one request per 100 ms).
#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn two_nodes_share_a_rate_limit_within_the_documented_bound() {
    let config = "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[functions.echo]\n\
        rate_limit = { window_limit = 20, window_size = \"60s\", aggregate_by = [\"ip\"] }\n";
    let (total, nodes) = served_by_two_nodes("ratelimit", config, "/.netlify/functions/echo").await;
    // Another client is not limited by this one's use.
    let other = send(
        "GET",
        &nodes[0].url("/.netlify/functions/echo"),
        &[("x-forwarded-for", "198.51.100.10")],
        "",
    )
    .await;
    assert_eq!(other.status, 200);
    assert!((20..=26).contains(&total), "served {total}");
}

/// The same for a rule's limit (`[[redirects]] … rate_limit`): the nodes share it too.
#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn two_nodes_share_a_rule_s_rate_limit() {
    let config = "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[[redirects]]\nfrom = \"/api/*\"\n\
        to = \"/.netlify/functions/echo/:splat\"\nstatus = 200\nforce = true\n\
        rate_limit = { window_limit = 20, window_size = \"60s\", aggregate_by = [\"ip\"] }\n";
    let (total, _nodes) = served_by_two_nodes("rulelimit", config, "/api/items").await;
    assert!((20..=26).contains(&total), "served {total}");
}

/// Two nodes on database `name` with `config` serving echo; 80 requests to `path` from one
/// client, alternating nodes 50 ms apart: how many were served (the others got 429).
async fn served_by_two_nodes(name: &str, config: &str, path: &str) -> (usize, Vec<Server>) {
    let db = database(name);
    let builder = || Server::with(&["echo"]).config(config).queue(&db.url);
    let nodes = start_all(vec![builder(), builder()]);
    let mut served = [0usize; 2];
    for i in 0..80 {
        let url = nodes[i % 2].url(path);
        let reply = send("GET", &url, &[("x-forwarded-for", "198.51.100.9")], "").await;
        match reply.status {
            200 => served[i % 2] += 1,
            429 => {}
            other => panic!("unexpected {other}: {}", reply.text()),
        }
        // The load's pace (part of the scenario): one request every 50 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = served[0] + served[1];
    println!("{path}: rate limit 20 across two nodes: served {total} ({served:?})");
    (total, nodes)
}

#[tokio::test]
#[ignore = "needs PostgreSQL (installed by .ci/run); run with --ignored"]
async fn an_attempt_another_node_runs_is_in_the_accepting_trace() {
    use crate::otlp::Receiver;
    let db = database("traces");
    let receiver = Receiver::http().await;
    let config = format!(
        "[server]\nlease = \"2s\"\nshutdown_grace = \"1s\"\n[defaults]\nretry_delays = [\"2s\"]\n\
         [telemetry]\nendpoint = \"{}\"\n",
        receiver.endpoint()
    );
    let node = |name: &str| {
        Server::with(&[])
            .function_as("flaky-background", "guest-flaky")
            .config(&config)
            .queue(&db.url)
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                &format!("service.instance.id={name}"),
            )
            .start()
    };
    let mut a = node("node-a");
    let reply = post(
        &a,
        "/.netlify/functions/flaky-background?succeed_on=2",
        &[],
        "",
    )
    .await;
    let id = accepted_id(&reply);
    let attempts = |spans: &[crate::otlp::Span], n: usize| {
        let found: Vec<crate::otlp::Span> = spans
            .iter()
            .filter(|s| s.name == "attempt flaky-background")
            .cloned()
            .collect();
        if found.len() == n {
            Ok(found)
        } else {
            Err(format!("{} attempt span(s)", found.len()))
        }
    };
    let first = receiver
        .wait_for("attempt 1 on node a", Duration::from_secs(20), |s| {
            attempts(s, 1)
        })
        .await;
    // Node a stops before the retry is due; node b takes the work.
    a.terminate(Duration::from_secs(10)).await;
    let _b = node("node-b");
    let both = receiver
        .wait_for("attempt 2 on node b", Duration::from_secs(30), |s| {
            attempts(s, 2)
        })
        .await;
    let accept = (receiver.spans().into_iter())
        .find(|s| s.name == "POST flaky-background")
        .expect("the accepting span");
    let second = both
        .iter()
        .find(|s| s.attr("fnhost.attempt") == Some("2"))
        .unwrap();
    assert_eq!(
        (first[0].instance.as_str(), second.instance.as_str()),
        ("node-a", "node-b")
    );
    assert_eq!(
        (accept.instance.as_str(), accept.attr("faas.invocation_id")),
        ("node-a", Some(id.as_str()))
    );
    for attempt in [&first[0], second] {
        assert_eq!(attempt.trace_id, accept.trace_id);
        assert_eq!(
            attempt.links,
            vec![(accept.trace_id.clone(), accept.span_id.clone())]
        );
    }
    assert_eq!(second.attr("fnhost.outcome"), Some("succeeded"));
}
