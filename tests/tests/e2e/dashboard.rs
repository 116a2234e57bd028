//! The dashboard at `/.fnhost/ui/`: who may reach the page and its API, the page itself in a
//! real headless Chromium driven over the DevTools protocol (functions, live invocations, a
//! failing one's attempts, replay / run-now / cancel, logs, a phone's screen), and its pure view
//! logic under `node --test`. Screenshots of every view go to `target/e2e/dashboard/`; with
//! `FNHOST_DOCS_SCREENSHOT=1` the detail view is also written to `docs/dashboard.png`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::background::wait_state;
use crate::cdp::{Browser, Picture};
use crate::support::{Arrivals, Server, chromium, get, repo_root, require_tool, send, wait_until};

/// An admin token, short retries (a failing function is dead within a second), a destination
/// for the flaky function's success, and a function whose retry waits an hour (for run-now and
/// cancel).
fn config(destination: &str) -> String {
    format!(
        "[server]\nadmin_token = \"t0ken\"\n[defaults]\nretry_delays = [\"200ms\"]\n\
         [functions.flaky-background]\non_success = \"{destination}\"\n\
         [functions.later-background]\nretry_delays = [\"1h\"]\n"
    )
}

/// Most any wait in the browser takes.
const WAIT: Duration = Duration::from_secs(20);

const ADMIN: (&str, &str) = ("authorization", "Bearer t0ken");

#[tokio::test]
async fn the_page_is_public_the_admin_api_is_not_and_without_a_token_both_are_off() {
    let server = Server::with(&["hello-background"])
        .config("[server]\nadmin_token = \"t0ken\"\n")
        .start();
    for (path, kind) in [
        ("/.fnhost/ui/", "text/html"),
        ("/.fnhost/ui/app.js", "javascript"),
        ("/.fnhost/ui/app.css", "text/css"),
    ] {
        let page = get(&server.url(path)).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text());
        let content_type = page.header("content-type").unwrap_or_default();
        assert!(content_type.contains(kind), "{path}: {content_type}");
        assert!(!page.body.is_empty());
    }
    // Everything the page needs comes from fnhost itself.
    for path in ["/.fnhost/ui/", "/.fnhost/ui/app.js", "/.fnhost/ui/app.css"] {
        let text = get(&server.url(path)).await.text();
        for external in ["http://", "https://", "@import"] {
            assert!(!text.contains(external), "{path} names {external}");
        }
    }

    let accepted = send(
        "POST",
        &server.url("/.netlify/functions/hello-background"),
        &[],
        "",
    )
    .await;
    let id = accepted.header("fnhost-invocation-id").unwrap().to_string();
    let admin_paths = [
        ("GET", "/.fnhost/functions".to_string()),
        ("GET", "/.fnhost/invocations".to_string()),
        ("GET", format!("/.fnhost/invocations/{id}/detail")),
        ("GET", "/.fnhost/logs".to_string()),
        ("POST", format!("/.fnhost/invocations/{id}/replay")),
        ("POST", format!("/.fnhost/invocations/{id}/cancel")),
        ("POST", format!("/.fnhost/invocations/{id}/run-now")),
    ];
    for (method, path) in &admin_paths {
        for headers in [
            vec![],
            vec![("authorization", "Bearer wrong")],
            vec![("authorization", "t0ken")],
        ] {
            let refused = send(method, &server.url(path), &headers, "").await;
            assert_eq!(refused.status, 401, "{method} {path} {headers:?}");
        }
    }
    crate::support::admin_detail(&server, &id).await;
    wait_state(&server, &id, &["succeeded"], WAIT).await;

    // No admin token configured: no dashboard, no admin API.
    let off = Server::with(&["hello-background"]).start();
    assert_eq!(get(&off.url("/.fnhost/ui/")).await.status, 404);
    assert_eq!(get(&off.url("/.fnhost/ui/app.js")).await.status, 404);
    let api = send("GET", &off.url("/.fnhost/functions"), &[ADMIN], "").await;
    assert_eq!(api.status, 404);
}

/// Where this test's screenshots go.
fn out_dir() -> PathBuf {
    let dir = repo_root().join("target").join("e2e").join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Screenshots the page to `target/e2e/dashboard/NAME.png` and checks it is not blank.
async fn shoot(browser: &Browser, name: &str) -> Vec<u8> {
    let png = browser.screenshot().await;
    let path = out_dir().join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap();
    let picture = Picture::of(&png);
    assert!(
        !picture.is_blank(),
        "{} looks blank: {picture:?}",
        path.display()
    );
    eprintln!("screenshot {} ({picture:?})", path.display());
    png
}

/// Waits until `expression` evaluates to something truthy in the page, and returns it.
async fn until(browser: &Browser, what: &str, expression: &str) -> Value {
    wait_until(what, WAIT, async || match browser.eval(expression).await {
        Ok(Value::Null | Value::Bool(false)) => Err(format!("{expression} → falsy")),
        Ok(Value::String(s)) if s.is_empty() => Err(format!("{expression} → \"\"")),
        Ok(Value::Number(n)) if n.as_f64() == Some(0.0) => Err(format!("{expression} → 0")),
        Ok(value) => Ok(value),
        Err(error) => Err(error),
    })
    .await
}

/// Text of every element matching `selector`, as a JS expression.
fn texts(selector: &str) -> String {
    format!("[...document.querySelectorAll({selector:?})].map(e => e.textContent.trim())")
}

async fn start_background(server: &Server, path: &str, headers: &[(&str, &str)]) -> String {
    let accepted = send(
        "POST",
        &server.url(path),
        headers,
        "{\"from\":\"dashboard test\"}",
    )
    .await;
    assert_eq!(accepted.status, 202, "{path}: {}", accepted.text());
    accepted.header("fnhost-invocation-id").unwrap().to_string()
}

#[tokio::test]
#[ignore = "needs chromium (installed by .ci/run); run with --ignored"]
async fn a_real_browser_shows_functions_invocations_attempts_and_logs_and_acts_on_them() {
    let binary = chromium();
    let destination = Arrivals::start().await;
    let server = Server::with(&["hello-background", "hello"])
        .function_as("x-background", "guest-fail")
        .function_as("flaky-background", "guest-flaky")
        .function_as("later-background", "guest-flaky")
        .function_as("chatty", "guest-chatty")
        .config(&config(&format!("http://{}/ok", destination.addr)))
        .start();
    // The page is on localhost, so sessionStorage and fetch see one origin.
    let ui = format!("http://localhost:{}/.fnhost/ui/", server.addr.port());
    let browser = Browser::launch(&binary, 1280, 860).await;
    browser.viewport(1280, 860, false).await;

    // --- without a token: the login form, and the API refuses the page's own fetch.
    browser.navigate(&ui).await;
    until(&browser, "the login form", "!document.querySelector('#login').hidden && document.querySelector('#main').children.length === 0").await;
    let status = browser
        .value("fetch('/.fnhost/functions').then(r => r.status)")
        .await;
    assert_eq!(status, 401, "the admin API without a token");
    browser
        .value("document.querySelector('#token').value = 'wrong'; document.querySelector('#login').requestSubmit(); true")
        .await;
    let message = until(
        &browser,
        "the refused token's message",
        "!document.querySelector('#login-message').hidden && document.querySelector('#login-message').textContent",
    )
    .await;
    assert!(message.as_str().unwrap().contains("refused"), "{message}");
    shoot(&browser, "login").await;

    // --- the token in the fragment: kept in sessionStorage, gone from the URL; functions listed.
    browser.navigate("about:blank").await;
    browser.navigate(&format!("{ui}#token=t0ken")).await;
    let names = until(
        &browser,
        "the function cards",
        &format!(
            "document.querySelectorAll('#functions [data-function]').length === 6 && {}",
            texts("#functions [data-function] h2")
        ),
    )
    .await;
    assert_eq!(
        names,
        serde_json::json!([
            "chatty",
            "flaky-background",
            "hello",
            "hello-background",
            "later-background",
            "x-background"
        ])
    );
    let href = browser.value("location.href").await;
    assert_eq!(href, format!("{ui}#/functions"), "the token left the URL");
    assert_eq!(
        browser
            .value("sessionStorage.getItem('fnhost.adminToken')")
            .await,
        "t0ken"
    );
    let modes = browser
        .value(&texts("#functions [data-function] .mode"))
        .await;
    assert_eq!(
        modes,
        serde_json::json!([
            "sync",
            "background",
            "sync",
            "background",
            "background",
            "background"
        ])
    );
    let flaky_card = browser
        .value("document.querySelector('[data-function=\"flaky-background\"]').textContent")
        .await;
    let flaky_card = flaky_card.as_str().unwrap();
    assert!(flaky_card.contains("after 200 ms"), "{flaky_card}");
    assert!(
        flaky_card.contains(&format!("http://{}/ok", destination.addr)),
        "{flaky_card}"
    );
    shoot(&browser, "functions").await;

    // --- invocations: live, without a reload.
    browser
        .value("window.__sameDocument = 'yes'; location.hash = '#/invocations'; true")
        .await;
    let empty = until(
        &browser,
        "the empty list",
        "document.querySelector('#invocations .empty')?.textContent",
    )
    .await;
    assert!(empty.as_str().unwrap().contains("POST to"), "{empty}");
    let ok_id = start_background(&server, "/.netlify/functions/hello-background", &[]).await;
    until(
        &browser,
        "the new invocation to appear and succeed",
        &format!("document.querySelector('tr[data-id=\"{ok_id}\"] .state')?.dataset.state === 'succeeded'"),
    )
    .await;
    let row = browser
        .value(&format!(
            "document.querySelector('tr[data-id=\"{ok_id}\"]').textContent"
        ))
        .await;
    assert!(row.as_str().unwrap().contains(&ok_id), "{row}");
    let hover = browser
        .value(&format!(
            "document.querySelector('tr[data-id=\"{ok_id}\"] time').title"
        ))
        .await;
    assert!(hover.as_str().unwrap().ends_with(" UTC"), "{hover}");
    assert_eq!(
        browser.value("window.__sameDocument").await,
        "yes",
        "the page reloaded"
    );

    // A failing one and a flaky one (fails once, then succeeds and is delivered).
    let dead_id = start_background(
        &server,
        "/.netlify/functions/x-background",
        &[
            ("authorization", "Bearer s3cret-bearer"),
            ("cookie", "session=s3cret-cookie"),
        ],
    )
    .await;
    let flaky_id = start_background(
        &server,
        "/.netlify/functions/flaky-background?succeed_on=2",
        &[],
    )
    .await;
    until(
        &browser,
        "the failing invocation to be dead and the flaky one to succeed",
        &format!(
            "document.querySelector('tr[data-id=\"{dead_id}\"] .state')?.dataset.state === 'dead' && \
             document.querySelector('tr[data-id=\"{flaky_id}\"] .state')?.dataset.state === 'succeeded'"
        ),
    )
    .await;
    // Filters: the state filter narrows the list to the dead one.
    browser
        .value("const s = document.querySelector('#filter-state'); s.value = 'dead'; s.dispatchEvent(new Event('change')); true")
        .await;
    let ids = until(
        &browser,
        "the list filtered to dead invocations",
        "location.hash === '#/invocations?state=dead' && document.querySelectorAll('#invocations tr[data-id]').length === 1 && [...document.querySelectorAll('#invocations tr[data-id]')].map(r => r.dataset.id)",
    )
    .await;
    assert_eq!(ids, serde_json::json!([dead_id]));
    browser.value("location.hash = '#/invocations'; true").await;
    until(
        &browser,
        "the whole list",
        "document.querySelectorAll('#invocations tr[data-id]').length === 3",
    )
    .await;
    shoot(&browser, "invocations").await;

    // --- the failing one's detail: attempts, errors, timeline, redacted request.
    browser
        .value(&format!(
            "document.querySelector('tr[data-id=\"{dead_id}\"] a').click(); true"
        ))
        .await;
    let errors = until(
        &browser,
        "two failed attempts in the detail view",
        &format!(
            "location.hash === '#/invocations/{dead_id}' && document.querySelectorAll('#attempts tr[data-attempt]').length === 2 && {}",
            texts("#attempts tr[data-attempt] .error")
        ),
    )
    .await;
    let errors: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "each attempt shows its error: {errors:?}");
    assert!(errors.iter().all(|e| !e.is_empty()), "{errors:?}");
    let outcomes = browser
        .value(&texts("#attempts tr[data-attempt] .state"))
        .await;
    assert_eq!(outcomes, serde_json::json!(["failed", "failed"]));
    let timeline = browser
        .value("[...document.querySelectorAll('#timeline li')].map(li => li.dataset.state)")
        .await;
    assert_eq!(
        timeline,
        serde_json::json!(["queued", "running", "retrying", "running", "dead"])
    );
    let page = browser
        .value("document.querySelector('#detail').textContent")
        .await;
    let page = page.as_str().unwrap();
    assert!(
        page.contains("POST ") && page.contains("/.netlify/functions/x-background"),
        "{page}"
    );
    assert!(page.contains("[redacted]"), "{page}");
    assert!(
        !page.contains("s3cret"),
        "a secret reached the page: {page}"
    );
    assert_eq!(
        browser.value(&texts("#actions button")).await,
        serde_json::json!(["Replay"])
    );
    let detail_png = shoot(&browser, "detail").await;
    if std::env::var_os("FNHOST_DOCS_SCREENSHOT").is_some() {
        let docs = repo_root().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("dashboard.png"), &detail_png).unwrap();
    }

    // --- replay from the page, after a confirmation: a new attempt.
    browser
        .value("window.__asked = []; window.confirm = (m) => { window.__asked.push(m); return true; }; document.querySelector('#actions button[data-action=\"replay\"]').click(); true")
        .await;
    // The replay starts the attempt count again: two more attempts, then dead again.
    until(
        &browser,
        "the replay's attempts in the timeline",
        "[...document.querySelectorAll('#timeline li')].map(li => li.dataset.state).join(' ') === \
         'queued running retrying running dead queued running retrying running dead'",
    )
    .await;
    assert_eq!(
        browser
            .value(&texts("#attempts tr[data-attempt] td:first-child"))
            .await,
        serde_json::json!(["1", "2", "1", "2"])
    );
    let asked = browser.value("window.__asked").await;
    assert_eq!(asked.as_array().unwrap().len(), 1, "{asked}");
    assert!(asked[0].as_str().unwrap().starts_with("Replay"), "{asked}");
    let detail = send(
        "GET",
        &server.url(&format!("/.fnhost/invocations/{dead_id}/detail")),
        &[ADMIN],
        "",
    )
    .await
    .json();
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 4, "{detail}");
    assert_eq!(detail["status"]["state"], "dead", "{detail}");

    // --- the flaky one: retried, then succeeded; its logs, result and delivery.
    browser
        .value(&format!("location.hash = '#/invocations/{flaky_id}'; true"))
        .await;
    until(
        &browser,
        "the flaky invocation's delivery",
        &format!(
            "location.hash === '#/invocations/{flaky_id}' && document.querySelector('#deliveries [data-state=\"delivered\"]') !== null"
        ),
    )
    .await;
    let timeline = browser
        .value("[...document.querySelectorAll('#timeline li')].map(li => li.dataset.state)")
        .await;
    assert_eq!(
        timeline,
        serde_json::json!(["queued", "running", "retrying", "running", "succeeded"])
    );
    let logs = browser
        .value("document.querySelector('#invocation-logs').textContent")
        .await;
    let logs = logs.as_str().unwrap();
    assert!(
        logs.contains("flaky attempt 1") && logs.contains("flaky attempt 2"),
        "{logs}"
    );
    let body = browser
        .value("document.querySelector('#result-body').textContent")
        .await;
    assert!(body.as_str().unwrap().contains("ok on attempt 2"), "{body}");
    destination.first(WAIT).await;
    shoot(&browser, "detail-flaky").await;

    // --- a retry waiting an hour: run it now; another: cancel it. Declining the confirmation
    // sends nothing.
    let later = "/.netlify/functions/later-background?succeed_on=2";
    let run_id = start_background(&server, later, &[]).await;
    let cancel_id = start_background(&server, later, &[]).await;
    browser
        .value(&format!("location.hash = '#/invocations/{run_id}'; true"))
        .await;
    until(
        &browser,
        "a waiting retry's buttons",
        &format!(
            "location.hash === '#/invocations/{run_id}' && {}.join() === 'Run retry now,Cancel'",
            texts("#actions button")
        ),
    )
    .await;
    browser
        .value(
            "window.__posts = []; const fetch0 = window.fetch; \
             window.fetch = (url, opts) => { if (opts && opts.method === 'POST') window.__posts.push(url); return fetch0(url, opts); }; \
             window.__asked = []; window.confirm = (m) => { window.__asked.push(m); return false; }; \
             document.querySelector('#actions button[data-action=\"run-now\"]').click(); true",
        )
        .await;
    // confirm() is asked before anything is sent, within the click.
    assert_eq!(browser.value("window.__asked.length").await, 1);
    assert_eq!(browser.value("window.__posts").await, serde_json::json!([]));
    browser
        .value("window.confirm = (m) => { window.__asked.push(m); return true; }; document.querySelector('#actions button[data-action=\"run-now\"]').click(); true")
        .await;
    until(
        &browser,
        "the retry run now to succeed",
        "[...document.querySelectorAll('#timeline li')].map(li => li.dataset.state).join(' ') === 'queued running retrying running succeeded'",
    )
    .await;
    assert_eq!(
        browser.value("window.__posts").await,
        serde_json::json!([format!("/.fnhost/invocations/{run_id}/run-now")])
    );
    browser
        .value(&format!(
            "location.hash = '#/invocations/{cancel_id}'; true"
        ))
        .await;
    until(
        &browser,
        "the other waiting retry",
        &format!(
            "location.hash === '#/invocations/{cancel_id}' && document.querySelector('#actions button[data-action=\"cancel\"]') !== null"
        ),
    )
    .await;
    browser
        .value("document.querySelector('#actions button[data-action=\"cancel\"]').click(); true")
        .await;
    until(
        &browser,
        "the cancelled invocation",
        "[...document.querySelectorAll('#timeline li')].map(li => li.dataset.state).join(' ') === 'queued running retrying cancelled' && document.querySelectorAll('#actions button').length === 0",
    )
    .await;
    let asked = browser.value("window.__asked").await;
    assert_eq!(asked.as_array().unwrap().len(), 3, "{asked}");
    assert!(asked[2].as_str().unwrap().starts_with("Cancel"), "{asked}");
    wait_state(&server, &cancel_id, &["cancelled"], WAIT).await;

    // --- the live tail of one function.
    browser
        .value("location.hash = '#/logs?function=chatty'; true")
        .await;
    until(
        &browser,
        "the logs view",
        "document.querySelector('#tail-function')?.value === 'chatty'",
    )
    .await;
    let chatty = server.url("/.netlify/functions/chatty?lines=3&size=24");
    assert_eq!(get(&chatty).await.status, 200);
    until(
        &browser,
        "three lines in the tail",
        "document.querySelectorAll('#tail .line').length === 3",
    )
    .await;
    assert_eq!(get(&chatty).await.status, 200);
    until(
        &browser,
        "three more lines, live",
        "document.querySelectorAll('#tail .line').length === 6",
    )
    .await;
    let line = browser
        .value("document.querySelector('#tail .line').textContent")
        .await;
    assert!(line.as_str().unwrap().contains(&"x".repeat(24)), "{line}");
    shoot(&browser, "logs").await;

    // --- a phone: one column, nothing wider than the screen.
    browser.viewport(390, 844, true).await;
    for (hash, name) in [
        ("#/functions", "phone-functions"),
        ("#/invocations", "phone-invocations"),
        (&*format!("#/invocations/{dead_id}"), "phone-detail"),
    ] {
        browser
            .value(&format!("location.hash = '{hash}'; true"))
            .await;
        until(
            &browser,
            &format!("{hash} on a phone"),
            "document.querySelector('#main .card, #main tr[data-id], #main #attempts') !== null",
        )
        .await;
        let widths = browser
            .value("[document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        assert!(
            widths[0].as_u64() <= widths[1].as_u64(),
            "{hash} is wider than the phone: {widths}"
        );
        let picture = Picture::of(&shoot(&browser, name).await);
        assert_eq!(picture.size.0, 390, "{name}: the phone's width");
    }

    assert_eq!(
        browser.problems(),
        Vec::<String>::new(),
        "the page's errors"
    );
}

#[test]
#[ignore = "needs node (installed by .ci/run); run with --ignored"]
fn the_view_logic_passes_its_node_unit_tests() {
    let node = require_tool("node");
    let out = Command::new(node)
        .args(["--test", "app.test.js"])
        .current_dir(repo_root().join("host").join("ui"))
        // Local time differs from UTC, so the tests see the two apart.
        .env("TZ", "Asia/Kolkata")
        .output()
        .expect("run node --test");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test host/ui/app.test.js failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("# fail 0"), "{report}");
}

/// A durable workflow's invocation in the detail view: its sleep in the timeline, the steps it
/// recorded, and a cancel that works while it sleeps.
#[tokio::test]
#[ignore = "needs chromium (installed by .ci/run); run with --ignored"]
async fn the_detail_view_shows_a_sleeping_invocation_s_steps_and_cancels_it() {
    let binary = chromium();
    let upstream = Arrivals::start().await;
    let server = Server::with(&[])
        .function_as("steps-background", "guest-steps")
        .config(&crate::workflows::config(upstream.addr))
        .start();
    let path = format!(
        "/.netlify/functions/steps-background?op=sleep&ms=600000&upstream=http://{}",
        upstream.addr
    );
    let id = start_background(&server, &path, &[]).await;
    wait_state(&server, &id, &["sleeping"], WAIT).await;
    let ui = format!("http://localhost:{}/.fnhost/ui/", server.addr.port());
    let browser = Browser::launch(&binary, 1280, 860).await;
    browser.viewport(1280, 860, false).await;
    browser
        .navigate(&format!("{ui}#token=t0ken&view=/invocations/{id}"))
        .await;
    let steps = until(
        &browser,
        "the recorded steps",
        "document.querySelectorAll('#steps [data-step]').length === 2 && [...document.querySelectorAll('#steps [data-step]')].map(r => r.dataset.step)",
    )
    .await;
    assert_eq!(steps, serde_json::json!(["before", "nap"]));
    let timeline = browser
        .value("[...document.querySelectorAll('#timeline li')].map(li => li.dataset.state)")
        .await;
    assert_eq!(
        timeline,
        serde_json::json!(["queued", "running", "sleeping"])
    );
    shoot(&browser, "workflow").await;
    browser
        .value("window.confirm = () => true; document.querySelector('#actions button[data-action=\"cancel\"]').click(); true")
        .await;
    until(
        &browser,
        "the cancelled sleeper",
        "[...document.querySelectorAll('#timeline li')].map(li => li.dataset.state).join(' ') === 'queued running sleeping cancelled'",
    )
    .await;
    wait_state(&server, &id, &["cancelled"], WAIT).await;
}
