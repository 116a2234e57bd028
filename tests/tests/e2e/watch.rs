//! `fnhost dev --watch` and `fnhost serve --watch`: an edit is rebuilt and swapped in while the
//! host runs; a request under way finishes on the old version; a failed build keeps the old
//! version serving and shows the error; new and removed functions come and go.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::build::start_dev_with;
use crate::support::{Server, component, fnhost_bin, get, wait_until};

/// A `function.toml` project whose "source" is the file `component`, naming the component its
/// build copies: editing that file is editing the function.
fn copy_project(site: &Path, name: &str, from: &Path) {
    let dir = site.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("function.toml"),
        "[build]\ncommand = \"cp \\\"$(cat component)\\\" out.wasm\"\noutput = \"out.wasm\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("component"), from.display().to_string()).unwrap();
}

fn logs_of(lines: &std::sync::Mutex<Vec<String>>) -> String {
    lines.lock().unwrap().join("\n")
}

#[tokio::test]
async fn dev_watch_rebuilds_edits_swaps_them_in_and_keeps_the_old_version_on_errors() {
    let site = tempfile::tempdir().unwrap();
    // A Rust function from the template (built with the run's shared target dir).
    let made = Command::new(fnhost_bin())
        .args(["new", "greet"])
        .current_dir(site.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    copy_project(site.path(), "nap", &component("guest-sleep"));
    let work = tempfile::tempdir().unwrap();
    let (mut child, addr, lines) = start_dev_with(site.path(), work.path(), &["--watch"]);
    let Ok(addr) = addr else {
        let _ = child.kill();
        panic!("fnhost dev did not start:\n{}", logs_of(&lines));
    };
    let url = |path: &str| format!("http://{addr}{path}");
    let answer = async |path: &str| {
        let reply = get(&url(path)).await;
        (reply.status, reply.text())
    };
    assert_eq!(
        answer("/.netlify/functions/greet").await,
        (200, "Hello from greet!\n".into())
    );
    wait_until(
        "the watcher to start",
        Duration::from_secs(10),
        async || logs_of(&lines).contains("watching "),
    )
    .await;

    // A slow request in flight while its function is swapped finishes on the old version.
    let slow_url = url("/.netlify/functions/nap?ms=3000");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    wait_until(
        "the slow request to run",
        Duration::from_secs(10),
        async || logs_of(&lines).contains("sleeping 3000 ms"),
    )
    .await;
    std::fs::write(
        site.path().join("nap/component"),
        component("hello").display().to_string(),
    )
    .unwrap();
    wait_until(
        "nap swapped for hello",
        Duration::from_secs(20),
        async || answer("/.netlify/functions/nap").await == (200, "Hello from fnhost!\n".into()),
    )
    .await;
    let old = slow.await.unwrap();
    assert_eq!((old.status, old.text()), (200, "slept 3000 ms\n".into()));
    assert!(
        logs_of(&lines).contains("reloaded nap in "),
        "{}",
        logs_of(&lines)
    );

    // An edit to the Rust source: the new answer within the rebuild time plus 1 s.
    let lib = site.path().join("greet/src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    assert!(source.contains("Hello from"), "{source}");
    let seen_before = lines.lock().unwrap().len();
    let edited = Instant::now();
    std::fs::write(&lib, source.replace("Hello from", "Howdy from")).unwrap();
    wait_until("the edited answer", Duration::from_secs(240), async || {
        answer("/.netlify/functions/greet").await == (200, "Howdy from greet!\n".into())
    })
    .await;
    let took = edited.elapsed();
    // Every rebuild of greet since the edit (a build's own writes, such as a new Cargo.lock,
    // may bring one more): the answer may wait for all of them, plus 1 s.
    let logs = lines.lock().unwrap()[seen_before..].join("\n");
    let rebuilt_ms: u64 = logs
        .lines()
        .filter_map(|l| l.split("rebuilt greet in ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(rebuilt_ms > 0, "no rebuild line:\n{logs}");
    assert!(
        took <= Duration::from_millis(rebuilt_ms) + Duration::from_secs(1),
        "answer after {took:?}, rebuilds took {rebuilt_ms} ms"
    );
    eprintln!("edit → new answer in {took:?} (rebuild {rebuilt_ms} ms)");

    // A syntax error: the compiler's error is shown, the last good version keeps answering.
    std::fs::write(&lib, "fn broken( {\n").unwrap();
    wait_until("the failed build", Duration::from_secs(240), async || {
        logs_of(&lines).contains("greet did not build")
    })
    .await;
    let logs = logs_of(&lines);
    assert!(
        logs.contains("error"),
        "the compiler's output is shown:\n{logs}"
    );
    assert_eq!(
        answer("/.netlify/functions/greet").await,
        (200, "Howdy from greet!\n".into())
    );

    // A new function directory is picked up; a removed one goes.
    copy_project(site.path(), "fresh", &component("hello"));
    wait_until("the new function", Duration::from_secs(20), async || {
        answer("/.netlify/functions/fresh").await.0 == 200
    })
    .await;
    std::fs::remove_dir_all(site.path().join("nap")).unwrap();
    wait_until("nap gone", Duration::from_secs(20), async || {
        answer("/.netlify/functions/nap").await.0 == 404
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn serve_watch_reloads_components_and_settings_and_says_what_needs_a_restart() {
    let server = Server::with(&["hello"]).function_as("other", "hello");
    let server = server.watch().start();
    let functions = server.functions_dir();
    assert_eq!(
        get(&server.url("/.netlify/functions/hello")).await.status,
        200
    );
    // A component replaced in place.
    std::fs::copy(component("guest-counter"), functions.join("hello.wasm")).unwrap();
    server
        .wait_for_log(&["reloaded hello in "], Duration::from_secs(20))
        .await;
    let reply = get(&server.url("/.netlify/functions/hello")).await;
    assert_ne!(
        reply.text(),
        "Hello from fnhost!\n",
        "the new component answers"
    );
    // Settings: a route from fnhost.toml; and a key that needs a restart is named.
    let config = server.config_file();
    std::fs::write(
        &config,
        "[server]\nmax_connections = 7\n[functions.other]\npath = \"/elsewhere\"\n",
    )
    .unwrap();
    wait_until("the new route", Duration::from_secs(20), async || {
        get(&server.url("/elsewhere")).await.status == 200
    })
    .await;
    server
        .wait_for_log(
            &["[server] changed: restart fnhost to apply it"],
            Duration::from_secs(5),
        )
        .await;
    // A broken site file keeps the settings in force.
    std::fs::write(&config, "[functions.other]\npath = 7\n").unwrap();
    server
        .wait_for_log(
            &["still serving the previous settings"],
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(get(&server.url("/elsewhere")).await.status, 200);
}
