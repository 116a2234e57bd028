//! Deploys: `fnhost deploy` ships a directory's functions and settings as one stored version,
//! `serve --deployed` nodes serve the published one and follow every publish, `fnhost publish`
//! of an older id rolls back, and every background invocation runs the deploy it was accepted
//! under. On one node (SQLite) and on two and three nodes sharing PostgreSQL.
//!
//! The guest is `tests/guests/version`: it answers `VERSION deploy=ID attempt=N`, with
//! `VERSION` set per deploy in the deployed fnhost.toml.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::background::{accepted_id, post, wait_state};
use crate::support::{Server, admin_get, component, fnhost_bin, get, send, wait_until};

const TOKEN: &str = "dep10y-admin-t0ken";

/// A node: the admin token, short leases.
fn node_config(extra: &str) -> String {
    format!("[server]\nadmin_token = \"{TOKEN}\"\nlease = \"2s\"\nshutdown_grace = \"1s\"\n{extra}")
}

/// A `--deployed` node with [`node_config`]`(extra)`.
fn node(extra: &str) -> crate::support::ServerBuilder {
    Server::with(&[]).deployed().config(&node_config(extra))
}

/// A site to deploy: `functions/version.wasm` and its fnhost.toml (with a `[server]` table
/// holding a secret that must stay behind).
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(version: &str, settings: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("functions")).unwrap();
        std::fs::copy(
            component("guest-version"),
            dir.path().join("functions/version.wasm"),
        )
        .unwrap();
        let site = Site { dir };
        site.set(version, settings);
        site
    }

    /// Rewrites the site file: `VERSION = version`, plus `settings` in `[functions.version]`.
    fn set(&self, version: &str, settings: &str) {
        let text = format!(
            "[server]\nadmin_token = \"stays-on-this-machine\"\n\n[functions.version]\nenv = {{ VERSION = \"{version}\" }}\n{settings}"
        );
        std::fs::write(self.dir.path().join("fnhost.toml"), text).unwrap();
    }

    fn functions(&self) -> PathBuf {
        self.dir.path().join("functions")
    }

    /// `fnhost deploy` of this site to `server`, with `args`.
    fn deploy(&self, server: &Server, args: &[&str]) -> Output {
        let functions = self.functions();
        let mut all = vec!["deploy", functions.to_str().unwrap(), "--config"];
        let config = self.dir.path().join("fnhost.toml");
        all.push(config.to_str().unwrap());
        let url = server.url("");
        all.extend(["--url", &url]);
        if !args.contains(&"--token") {
            all.extend(["--token", TOKEN]);
        }
        all.extend(args);
        fnhost(&all)
    }

    /// Deploys and publishes; the new deploy's id.
    fn deploy_ok(&self, server: &Server) -> String {
        let out = self.deploy(server, &[]);
        deploy_id(&out)
    }
}

/// `fnhost deploy FUNCTIONS --config CONFIG --url URL` with the admin token.
fn deploy_dir(functions: &Path, config: &Path, url: &str) -> Output {
    let (functions, config) = (functions.to_str().unwrap(), config.to_str().unwrap());
    fnhost(&[
        "deploy", functions, "--config", config, "--url", url, "--token", TOKEN,
    ])
}

/// Runs the `fnhost` CLI.
fn fnhost(args: &[&str]) -> Output {
    Command::new(fnhost_bin())
        .args(args)
        .env_remove("FNHOST_ADMIN_TOKEN")
        .env_remove("FNHOST_DEPLOY_TOKEN")
        .output()
        .expect("run fnhost")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The id `fnhost deploy` printed (`deploy ID published`); panics unless it succeeded.
fn deploy_id(out: &Output) -> String {
    let all = text(out);
    assert!(out.status.success(), "fnhost deploy failed:\n{all}");
    all.lines()
        .find_map(|l| {
            l.strip_prefix("deploy ")?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no deploy id in:\n{all}"))
}

/// The CLI's output has `needle`.
#[track_caller]
fn assert_says(out: &Output, needle: &str) {
    let all = text(out);
    assert!(all.contains(needle), "no {needle:?} in:\n{all}");
}

/// The node answers `VERSION deploy=ID attempt=1` now.
async fn assert_serves(server: &Server, version: &str, id: &str) {
    let expected = (200, format!("{version} deploy={id} attempt=1"));
    assert_eq!(answer(server).await, expected);
}

/// What the node answers at the function's path now (status, body).
async fn answer(server: &Server) -> (u16, String) {
    let reply = get(&server.url("/.netlify/functions/version")).await;
    (reply.status, reply.text())
}

async fn admin_post(
    server: &Server,
    path: &str,
    body: impl Into<bytes::Bytes>,
) -> crate::support::Reply {
    let auth = format!("Bearer {TOKEN}");
    send("POST", &server.url(path), &[("authorization", &auth)], body).await
}

/// Waits until `server` answers `expected` (a prefix of the body).
async fn wait_answer(server: &Server, expected: &str, within: Duration) {
    wait_until(
        &format!("{} to answer {expected:?}", server.addr),
        within,
        async || {
            let (status, body) = answer(server).await;
            if status == 200 && body.starts_with(expected) {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await
}

/// A node with no deploy serves nothing and says so; a deploy is live on the node that took
/// it when `fnhost deploy` returns; a second deploy of the same component uploads nothing; an
/// older id published again rolls back; a node started later serves the published one; the
/// `[server]` table never leaves the machine.
#[tokio::test]
async fn a_deploy_is_published_whole_and_an_older_one_rolls_back() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::with(&[])
        .deployed()
        .data_dir(data.path())
        .config(&node_config(""))
        .start();
    assert!(
        server
            .stdout
            .lock()
            .unwrap()
            .join("\n")
            .contains("no deploy is published yet")
    );
    assert_eq!(answer(&server).await.0, 404);

    let site = Site::new("v1", "");
    let first = site.deploy(&server, &["--message", "first"]);
    let id1 = deploy_id(&first);
    assert_says(&first, "0 already stored, 1 uploaded");
    assert_serves(&server, "v1", &id1).await;

    site.set("v2", "");
    let second = site.deploy(&server, &["-m", "second"]);
    let id2 = deploy_id(&second);
    assert_says(&second, "1 already stored, 0 uploaded (0 B)");
    assert_serves(&server, "v2", &id2).await;
    let metrics = admin_get(&server, "/.fnhost/metrics", TOKEN).await.text();
    assert!(
        metrics.contains(&format!("fnhost_deploy_info{{deploy=\"{id2}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("fnhost_deploy_info{{deploy=\"{id1}\"}} 0")),
        "{metrics}"
    );

    let list = admin_get(&server, "/.fnhost/deploys", TOKEN).await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["id"].as_str(), list[0]["published"].as_bool()),
        (Some(id2.as_str()), Some(true))
    );
    assert_eq!(
        (list[1]["id"].as_str(), list[1]["published"].as_bool()),
        (Some(id1.as_str()), Some(false))
    );
    assert_eq!(list[1]["message"], "first");
    assert_eq!(list[0]["functions"], serde_json::json!(["version"]));

    let url = server.url("");
    let shown = text(&fnhost(&[
        "deploys", "show", &id1, "--url", &url, "--token", TOKEN,
    ]));
    assert!(
        shown.contains(&format!("against the published deploy {id2}")),
        "{shown}"
    );
    let listed = text(&fnhost(&["deploys", "--url", &url, "--token", TOKEN]));
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert!(
        rows[0].starts_with(&id2) && rows[0].contains("yes"),
        "{listed}"
    );
    assert!(
        rows[1].starts_with(&id1) && rows[1].contains("\"first\""),
        "{listed}"
    );

    let back = fnhost(&["publish", &id1, "--url", &url, "--token", TOKEN]);
    assert!(back.status.success(), "{}", text(&back));
    assert_serves(&server, "v1", &id1).await;

    server.kill9();
    let again = Server::with(&[])
        .deployed()
        .data_dir(data.path())
        .config(&node_config(""))
        .start();
    assert_eq!(
        answer(&again).await,
        (200, format!("v1 deploy={id1} attempt=1")),
        "served from the first request"
    );
    for file in ["queue.db", "queue.db-wal"] {
        let bytes = std::fs::read(data.path().join(file)).unwrap_or_default();
        let leaked = bytes.windows(21).any(|w| w == b"stays-on-this-machine");
        assert!(!leaked, "the site's [server] table was stored in {file}");
    }
}

/// A component that does not load, a setting out of range or a `[server]` table: `422` naming
/// it, nothing stored, the published deploy still served.
#[tokio::test]
async fn a_deploy_that_does_not_load_or_parse_is_refused_and_nothing_changes() {
    let server = node("").start();
    let site = Site::new("v1", "");
    let id1 = site.deploy_ok(&server);

    std::fs::write(
        site.functions().join("broken.wasm"),
        b"\0asm\x0d\0\x01\0 not a component",
    )
    .unwrap();
    let refused = site.deploy(&server, &[]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains("422") && said.contains("broken.wasm"),
        "{said}"
    );
    std::fs::remove_file(site.functions().join("broken.wasm")).unwrap();

    // Past the CLI's own check (another client): the server refuses it itself.
    let sha = sha256_file(&site.functions().join("version.wasm"));
    for (config, names) in [
        ("[functions.version]\ntimeout = \"0s\"\n", "timeout"),
        ("[functions.version]\nmemory = \"1KB\"\n", "memory"),
        ("[server]\nthreads = 1\n", "[server] is per node"),
    ] {
        let body = serde_json::json!({
            "functions": { "version": { "sha256": sha, "size": 1 } },
            "config": config,
        });
        let reply = admin_post(&server, "/.fnhost/deploys", body.to_string()).await;
        assert_eq!(reply.status, 422, "{config}: {}", reply.text());
        assert!(reply.text().contains(names), "{config}: {}", reply.text());
    }
    let list = admin_get(&server, "/.fnhost/deploys", TOKEN).await.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing stored: {list}");
    assert_serves(&server, "v1", &id1).await;
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Without a token, or with another cluster's: `401`. The deploy token deploys but reads no
/// invocation.
#[tokio::test]
async fn deploys_need_the_admin_token_or_the_deploy_token() {
    let server = node("deploy_token = \"d3ploy-only-t0ken\"\n").start();
    let no_token = get(&server.url("/.fnhost/deploys")).await;
    assert_eq!(no_token.status, 401);
    assert_eq!(
        admin_get(&server, "/.fnhost/deploys", "another-cluster-admin")
            .await
            .status,
        401
    );
    assert_eq!(
        admin_get(&server, "/.fnhost/deploys", TOKEN).await.status,
        200
    );
    assert_eq!(
        admin_get(&server, "/.fnhost/deploys", "d3ploy-only-t0ken")
            .await
            .status,
        200
    );
    assert_eq!(
        admin_get(&server, "/.fnhost/invocations", "d3ploy-only-t0ken")
            .await
            .status,
        401
    );
    let site = Site::new("v1", "");
    let refused = site.deploy(&server, &["--token", "another-cluster-admin"]);
    assert!(
        !refused.status.success() && text(&refused).contains("401"),
        "{}",
        text(&refused)
    );
    let id = deploy_id(&site.deploy(&server, &["--token", "d3ploy-only-t0ken"]));
    assert_serves(&server, "v1", &id).await;
}

/// A client killed half way through an upload leaves nothing stored and no partial file; the
/// same deploy then succeeds, and sends the component once.
#[tokio::test]
async fn an_upload_cut_off_stores_nothing_and_the_same_deploy_then_succeeds() {
    use tokio::io::AsyncWriteExt as _;
    let data = tempfile::tempdir().unwrap();
    let server = Server::with(&[])
        .deployed()
        .data_dir(data.path())
        .config(&node_config(""))
        .start();
    let site = Site::new("v1", "");
    let wasm = std::fs::read(site.functions().join("version.wasm")).unwrap();
    let sha = sha256_file(&site.functions().join("version.wasm"));
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT /.fnhost/deploys/blobs/{sha} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n",
        server.addr,
        wasm.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&wasm[..wasm.len() / 2]).await.unwrap();
    let blobs = data.path().join("deploys");
    wait_until("the upload to start", Duration::from_secs(5), async || {
        partials(&blobs) == 1
    })
    .await;
    drop(conn);
    wait_until(
        "the partial upload to be removed",
        Duration::from_secs(5),
        async || partials(&blobs) == 0,
    )
    .await;
    assert_still_missing(&server, &sha).await;

    let out = site.deploy(&server, &[]);
    let id = deploy_id(&out);
    let kb = format!("1 uploaded ({:.1} KB)", wasm.len() as f64 / 1024.0);
    assert_says(&out, &kb);
    assert_serves(&server, "v1", &id).await;
    let again = site.deploy(&server, &[]);
    assert_says(&again, "1 already stored, 0 uploaded (0 B)");
}

/// The node says component `sha` is not stored.
async fn assert_still_missing(server: &Server, sha: &str) {
    let ask = serde_json::json!({ "sha256": [sha] }).to_string();
    let missing = admin_post(server, "/.fnhost/deploys/blobs/missing", ask).await;
    assert_eq!(
        missing.json()["missing"],
        serde_json::json!([sha]),
        "nothing stored"
    );
}

/// Upload files in progress in the node's component directory.
fn partials(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".part"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// Accepted under v1, failed once, v2 published: the retry runs v1, and the status says so;
/// new invocations run v2; a replay may choose the published deploy.
#[tokio::test]
async fn a_retry_runs_the_deploy_its_invocation_was_accepted_under() {
    let server = node("").start();
    let background = "background = true\nretry_delays = [\"2s\"]\n";
    let site = Site::new("v1", background);
    let id1 = site.deploy_ok(&server);
    let inv = accepted_id(&post(&server, "/.netlify/functions/version?fail_first", &[], "").await);
    wait_state(&server, &inv, &["retrying"], Duration::from_secs(10)).await;
    site.set("v2", background);
    let id2 = site.deploy_ok(&server);
    let done = wait_state(&server, &inv, &["succeeded"], Duration::from_secs(15)).await;
    assert_eq!(
        done["result"]["body"],
        format!("v1 deploy={id1} attempt=2"),
        "{done}"
    );
    assert_eq!(done["deploy"], id1.as_str());
    let fresh = accepted_id(&post(&server, "/.netlify/functions/version", &[], "").await);
    let fresh = wait_state(&server, &fresh, &["succeeded"], Duration::from_secs(10)).await;
    assert_eq!(
        fresh["result"]["body"],
        format!("v2 deploy={id2} attempt=1")
    );
    assert_eq!(fresh["deploy"], id2.as_str());

    // Dead under v2 (no retries), replayed on the deploy published since (v3).
    site.set("v2", "background = true\nretry_delays = []\n");
    site.deploy_ok(&server);
    let dead = accepted_id(&post(&server, "/.netlify/functions/version?fail_first", &[], "").await);
    wait_state(&server, &dead, &["dead"], Duration::from_secs(10)).await;
    site.set("v3", "background = true\nretry_delays = []\n");
    let id3 = site.deploy_ok(&server);
    let replay = format!("/.fnhost/invocations/{dead}/replay?deploy=published");
    let replayed = admin_post(&server, &replay, "").await;
    assert_eq!(replayed.status, 200, "{}", replayed.text());
    assert_eq!(replayed.json()["deploy"], id3.as_str());
    let ran = format!("version v3 deploy {id3} attempt 1");
    server
        .wait_for_log(&[&ran, &dead], Duration::from_secs(10))
        .await;
    let again = wait_state(&server, &dead, &["dead"], Duration::from_secs(10)).await;
    assert_eq!(again["deploy"], id3.as_str());
}

// --- several nodes on PostgreSQL ---------------------------------------------------------------

/// One node's answers while it was hammered: (when, version or error).
type Seen = Arc<Mutex<Vec<(Instant, Result<String, String>)>>>;

/// GETs `server` in a loop until `stop` (at most 20,000 requests), recording each answer's
/// version (`v1`, `v2`) or what went wrong.
fn hammer(url: String, stop: Arc<AtomicBool>) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        for _ in 0..20_000 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let got = match crate::support::try_send("GET", &url, &[], bytes::Bytes::new()).await {
                Ok(r) if r.status == 200 => {
                    Ok(r.text().split(' ').next().unwrap_or("").to_string())
                }
                Ok(r) => Err(format!("{} {}", r.status, r.text())),
                Err(e) => Err(e),
            };
            sink.lock().unwrap().push((Instant::now(), got));
        }
    });
    (seen, task)
}

/// When `seen` first had `version`; panics on any error, or an older answer after it.
fn switched_at(seen: &Seen, from: &str, to: &str) -> Instant {
    let seen = seen.lock().unwrap();
    let mut first = None;
    for (at, got) in seen.iter() {
        match (got, first) {
            (Err(e), _) => panic!("an error during the switch: {e}"),
            (Ok(v), None) if v == to => first = Some(*at),
            (Ok(v), None) => assert_eq!(v, from, "only {from} before {to}"),
            (Ok(v), Some(_)) => assert_eq!(v, to, "{from} again after {to}"),
        }
    }
    first.unwrap_or_else(|| panic!("never answered {to} ({} answers)", seen.len()))
}

/// Ms from `from` to `to` (0 when `to` came first).
fn ms_after(to: Instant, from: Instant) -> u128 {
    to.saturating_duration_since(from).as_millis()
}

/// Two nodes on one PostgreSQL: a deploy through one is served by both within a second, a
/// client hammering both sees v1 then v2 and never an error; publishing v1 again rolls both
/// back; a third node started afterwards serves the published deploy.
#[tokio::test]
#[ignore = "needs PostgreSQL (CI runs it)"]
async fn two_nodes_switch_together_within_a_second_and_roll_back() {
    let db = crate::postgres::database("deploys_two_nodes");
    let start = || node("").queue(&db.url).start();
    let (a, b) = (start(), start());
    let site = Site::new("v1", "");
    let id1 = site.deploy_ok(&a);
    wait_answer(&b, "v1 ", Duration::from_secs(2)).await;

    for (from, to, publish) in [("v1", "v2", None), ("v2", "v1", Some(id1.clone()))] {
        let stop = Arc::new(AtomicBool::new(false));
        let (seen_a, task_a) = hammer(a.url("/.netlify/functions/version"), stop.clone());
        let (seen_b, task_b) = hammer(b.url("/.netlify/functions/version"), stop.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = Instant::now();
        let out = match &publish {
            None => {
                site.set(to, "");
                let dir = site.functions();
                let (config, url) = (site.dir.path().join("fnhost.toml"), a.url(""));
                tokio::task::spawn_blocking(move || deploy_dir(&dir, &config, &url))
                    .await
                    .unwrap()
            }
            Some(id) => {
                let (id, url) = (id.clone(), b.url(""));
                tokio::task::spawn_blocking(move || {
                    fnhost(&["publish", &id, "--url", &url, "--token", TOKEN])
                })
                .await
                .unwrap()
            }
        };
        assert!(out.status.success(), "{}", text(&out));
        let answered = Instant::now();
        wait_answer(&a, &format!("{to} "), Duration::from_secs(5)).await;
        wait_answer(&b, &format!("{to} "), Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::join!(task_a, task_b);
        let (at_a, at_b) = (
            switched_at(&seen_a, from, to),
            switched_at(&seen_b, from, to),
        );
        let (ms_a, ms_b) = (ms_after(at_a, answered), ms_after(at_b, answered));
        println!(
            "publish {from} -> {to}: the CLI took {} ms; node a served {to} {ms_a} ms and node b {ms_b} ms after it returned ({} + {} answers, no error)",
            answered.duration_since(before).as_millis(),
            seen_a.lock().unwrap().len(),
            seen_b.lock().unwrap().len()
        );
        assert!(
            ms_a <= 1000 && ms_b <= 1000,
            "both nodes within 1 s: {ms_a} ms, {ms_b} ms"
        );
    }
    let c = start();
    assert_eq!(
        answer(&c).await,
        (200, format!("v1 deploy={id1} attempt=1")),
        "a later node serves the published deploy"
    );
}

/// kill -9 of the node taking publishes while they come: the database holds exactly one
/// published deploy, and every node serves it.
#[tokio::test]
#[ignore = "needs PostgreSQL (CI runs it)"]
async fn kill_9_during_publishes_leaves_exactly_one_published_deploy() {
    let db = crate::postgres::database("deploys_kill9");
    let start = || node("").queue(&db.url).start();
    let (mut a, b) = (start(), start());
    let site = Site::new("v1", "");
    let id1 = site.deploy_ok(&a);
    site.set("v2", "");
    let id2 = deploy_id(&site.deploy(&a, &["--no-publish"]));
    let url = a.url("");
    let (p1, p2) = (id1.clone(), id2.clone());
    let publisher = tokio::task::spawn_blocking(move || {
        let mut answered = 0;
        for i in 0..40 {
            let id = if i % 2 == 0 { &p2 } else { &p1 };
            if fnhost(&["publish", id, "--url", &url, "--token", TOKEN])
                .status
                .success()
            {
                answered += 1;
            }
        }
        answered
    });
    wait_until("a few publishes", Duration::from_secs(20), async || {
        a.count_log(&["published (publish #"]) >= 5
    })
    .await;
    a.kill9();
    let answered = publisher.await.unwrap();
    assert!(answered < 40, "the node was killed while publishes came");
    let rows = db.query("SELECT deploy, generation FROM deploy_published");
    assert_eq!(rows.len(), 1, "exactly one published deploy: {rows:?}");
    let published = rows[0][0].clone();
    assert!(published == id1 || published == id2, "{published}");
    let expected = format!("deploy={published} ");
    wait_until(
        "node b to serve the published deploy",
        Duration::from_secs(3),
        async || {
            let (_, body) = answer(&b).await;
            if body.contains(&expected) {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    let a2 = start();
    assert!(
        answer(&a2).await.1.contains(&expected),
        "a restarted node serves it too"
    );
}

/// Waits until the page's deploy rows (`id:published`, by `rows`) are `expected`.
async fn page_rows(browser: &crate::cdp::Browser, rows: &str, expected: &[String], what: &str) {
    wait_until(what, Duration::from_secs(20), async || {
        let seen = browser.value(rows).await;
        if seen == serde_json::json!(expected) {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await;
}

/// The dashboard's Deploys view in a real Chromium: both deploys, the published one marked,
/// and publishing the older one from the page (after a confirmation) rolls the node back.
#[tokio::test]
#[ignore = "needs chromium (installed by .ci/run); run with --ignored"]
async fn the_dashboard_lists_deploys_and_publishes_an_older_one() {
    use crate::cdp::Browser;
    let binary = crate::support::chromium();
    let server = node("").start();
    let site = Site::new("v1", "");
    let id1 = site.deploy_ok(&server);
    site.set("v2", "");
    let id2 = site.deploy_ok(&server);
    let browser = Browser::launch(&binary, 1280, 800).await;
    let ui = format!(
        "http://localhost:{}/.fnhost/ui/#token={TOKEN}&view=/deploys",
        server.addr.port()
    );
    browser.navigate(&ui).await;
    let rows = "[...document.querySelectorAll('#deploys tr[data-deploy]')].map(r => r.dataset.deploy + ':' + r.dataset.published)";
    let published = [format!("{id2}:true"), format!("{id1}:false")];
    page_rows(&browser, rows, &published, "both deploys in the page").await;
    browser
        .value(&format!(
            "window.__asked = []; window.confirm = (m) => {{ window.__asked.push(m); return true; }}; \
             document.querySelector('button[data-publish=\"{id1}\"]').click(); true"
        ))
        .await;
    wait_answer(&server, &format!("v1 deploy={id1}"), Duration::from_secs(5)).await;
    let rolled_back = [format!("{id2}:false"), format!("{id1}:true")];
    page_rows(
        &browser,
        rows,
        &rolled_back,
        "the page to mark the rollback",
    )
    .await;
    let asked = browser.value("window.__asked").await;
    assert!(
        asked[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("Publish deploy {id1}")),
        "{asked}"
    );
    assert!(browser.problems().is_empty(), "{:?}", browser.problems());
}

/// A component over `server.max_component` is refused with `413` while it streams; a deploy
/// whose components together pass `server.max_deploy` is refused with `422`; nothing stored.
#[tokio::test]
async fn uploads_over_the_limits_are_refused() {
    let server = node("max_component = \"64KB\"\n").start();
    let site = Site::new("v1", "");
    let refused = site.deploy(&server, &[]);
    assert!(
        !refused.status.success() && text(&refused).contains("413"),
        "{}",
        text(&refused)
    );
    let sha = sha256_file(&site.functions().join("version.wasm"));
    assert_still_missing(&server, &sha).await;

    let small = node("max_deploy = \"100KB\"\n").start();
    let body =
        serde_json::json!({ "functions": { "version": { "sha256": sha, "size": 200_000 } } });
    let reply = admin_post(&small, "/.fnhost/deploys", body.to_string()).await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(
        reply.text().contains("server.max_deploy"),
        "{}",
        reply.text()
    );
}

/// `fnhost deploy DIR` of a directory of projects (no `.wasm` in it) builds them first, as
/// `fnhost build` would, then deploys what it built.
#[tokio::test]
async fn a_directory_of_projects_is_built_then_deployed() {
    let server = node("").start();
    let cwd = tempfile::tempdir().unwrap();
    let project = crate::support::repo_root().join("examples").join("hello");
    let out = Command::new(fnhost_bin())
        .args([
            "deploy",
            project.to_str().unwrap(),
            "--url",
            &server.url(""),
            "--token",
            TOKEN,
        ])
        .current_dir(cwd.path())
        .env("PATH", crate::support::tool_path())
        .env(
            "CARGO_TARGET_DIR",
            crate::support::repo_root().join("target").join("guests"),
        )
        .output()
        .unwrap();
    assert_says(&out, "building its projects first");
    deploy_id(&out);
    let reply = get(&server.url("/.netlify/functions/hello")).await;
    assert_eq!(
        (reply.status, reply.text()),
        (200, "Hello from fnhost!\n".to_string())
    );
}

/// On a `--deployed` node a deploy's `concurrency` caps its function (the node started with no
/// functions), and a later deploy with another cap changes it.
#[tokio::test]
async fn a_deploys_concurrency_cap_holds_and_a_later_deploy_changes_it() {
    let server = node("").start();
    let site = tempfile::tempdir().unwrap();
    let functions = site.path().join("functions");
    std::fs::create_dir_all(&functions).unwrap();
    std::fs::copy(
        component("guest-sleep"),
        functions.join("one-background.wasm"),
    )
    .unwrap();
    let config = site.path().join("fnhost.toml");
    let url = server.url("");
    for (cap, overlap) in [(1, false), (3, true)] {
        std::fs::write(
            &config,
            format!("[functions.one-background]\nconcurrency = {cap}\n"),
        )
        .unwrap();
        let out = deploy_dir(&functions, &config, &url);
        deploy_id(&out);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let path = "/.netlify/functions/one-background?ms=400";
            ids.push(accepted_id(&post(&server, path, &[], "").await));
        }
        let mut started = Vec::new();
        for id in &ids {
            let s = wait_state(&server, id, &["succeeded"], Duration::from_secs(20)).await;
            started.push(humantime::parse_rfc3339(s["started_at"].as_str().unwrap()).unwrap());
        }
        started.sort();
        let gaps: Vec<Duration> = started
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).unwrap())
            .collect();
        let overlapped = gaps.iter().any(|g| *g < Duration::from_millis(400));
        assert_eq!(
            overlapped, overlap,
            "concurrency = {cap}: start gaps {gaps:?}"
        );
    }
}
