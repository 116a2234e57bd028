//! `instance_concurrency = M`: one WASI 0.3 instance serving several requests at once, each
//! still its own invocation (its id on its output lines, its own budget), on the `guest-p3`
//! test guest's `overlap` route (which reports how many requests its instance held at once).

use std::time::{Duration, Instant};

use crate::support::{Server, get};

/// `n` GETs of `route` on function `name`, all at once: (status, body) of each, in order.
async fn at_once(server: &Server, name: &str, route: &str, n: usize) -> Vec<(u16, String)> {
    let url = server.url(&format!("/.netlify/functions/{name}/{route}"));
    let replies = futures::future::join_all((0..n).map(|_| get(&url))).await;
    replies.into_iter().map(|r| (r.status, r.text())).collect()
}

/// The `max K` of an `overlap` answer.
fn most(body: &str) -> u32 {
    body.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn requests_share_an_instance_at_once_each_its_own_invocation() {
    let server = Server::with(&[])
        .function_as("shared", "guest-p3")
        .function_as("turns", "guest-p3")
        .config(
            "[functions.shared]\nreuse = 100\ninstance_concurrency = 4\n\
             [functions.turns]\nreuse = 100\n",
        )
        .start();
    let replies = at_once(&server, "shared", "overlap?ms=500", 4).await;
    for (status, body) in &replies {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            most(body),
            4,
            "all four in one instance at once: {replies:?}"
        );
    }
    // Each request's output line carries its own invocation id, although the four requests'
    // guest tasks interleave in one store.
    for (_, body) in &replies {
        let id = body.split(' ').nth(1).unwrap();
        assert_eq!(id.len(), 32, "{body}");
        let line = server
            .wait_for_log(&[&format!("overlap {id}")], Duration::from_secs(3))
            .await;
        assert!(line.contains(&format!("id=\"{id}\"")), "{line}");
    }
    // So does each request's outbound request: its denial line names its own invocation.
    let url = |i: usize| {
        shared(
            &server,
            &format!("overlap?ms=300&url=http://denied.invalid/m{i}"),
        )
    };
    let urls: Vec<String> = (0..4).map(url).collect();
    let replies = futures::future::join_all(urls.iter().map(|u| get(u))).await;
    for (i, reply) in replies.iter().enumerate() {
        let body = reply.text();
        assert_eq!(most(&body), 4, "{body}");
        let id = body.split(' ').nth(1).unwrap();
        let line = server
            .wait_for_log(
                &[&format!("denied.invalid:80/m{i} denied")],
                Duration::from_secs(3),
            )
            .await;
        assert!(
            line.contains(&format!("id=\"{id}\"")),
            "request {i} ({id}): {line}"
        );
    }
    // One after another in the same instance too (a guest task's id is reused once it is
    // gone: each request still gets its own tag).
    for _ in 0..3 {
        let body = get(&shared(&server, "overlap?ms=1")).await.text();
        let id = body.split(' ').nth(1).unwrap().to_string();
        let line = server
            .wait_for_log(&[&format!("overlap {id}")], Duration::from_secs(3))
            .await;
        assert!(line.contains(&format!("id=\"{id}\"")), "{line}");
    }
    // Without instance_concurrency, a kept instance serves one request at a time.
    let replies = at_once(&server, "turns", "overlap?ms=300", 3).await;
    assert!(
        replies.iter().all(|(s, b)| *s == 200 && most(b) == 1),
        "{replies:?}"
    );
}

/// The URL of `route` on the `shared` function.
fn shared(server: &Server, route: &str) -> String {
    server.url(&format!("/.netlify/functions/shared/{route}"))
}

/// The next request to `shared` is alone in its instance: the previous one was retired.
async fn served_by_a_new_instance(server: &Server) {
    let next = get(&shared(server, "overlap?ms=10")).await;
    assert_eq!(
        (next.status, most(&next.text())),
        (200, 1),
        "{}",
        next.text()
    );
}

/// `shared` (4 at once, 100 in all) with a 1 s budget.
fn one_second_budget() -> Server {
    Server::with(&[])
        .function_as("shared", "guest-p3")
        .config("[functions.shared]\nreuse = 100\ninstance_concurrency = 4\ntimeout = \"1s\"\n")
        .start()
}

#[tokio::test]
async fn a_request_past_its_budget_gets_504_and_retires_the_instance_the_others_answer() {
    let server = one_second_budget();
    let url = |route: &str| shared(&server, route);
    let started = Instant::now();
    let (sleep, overlap) = (url("sleep"), url("overlap?ms=300"));
    let (parked, a, b) = tokio::join!(get(&sleep), get(&overlap), get(&overlap));
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{} / {}",
        a.text(),
        b.text()
    );
    assert_eq!(parked.status, 504, "{}", parked.text());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // The instance took no more requests: the next one is in a new instance.
    served_by_a_new_instance(&server).await;
}

#[tokio::test]
async fn a_spinning_request_ends_its_instance_at_its_budget_and_the_function_serves_on() {
    let server = one_second_budget();
    let url = |route: &str| shared(&server, route);
    let started = Instant::now();
    let (spin, overlap) = (url("spin"), url("overlap?ms=200"));
    let (spin, other) = tokio::join!(get(&spin), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        get(&overlap).await
    });
    assert_eq!(spin.status, 504, "{}", spin.text());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // Wasm cannot stop one task alone: the request sharing the spinning instance got no
    // answer from it either.
    assert!(other.status >= 500, "{} {}", other.status, other.text());
    served_by_a_new_instance(&server).await;
    server
        .wait_for_log(
            &["invocation stopped: budget exceeded", "function=\"shared\""],
            Duration::from_secs(2),
        )
        .await;
}

#[tokio::test]
async fn instance_concurrency_is_refused_where_it_cannot_hold_and_named() {
    let server = Server::with(&["hello"])
        .function_as("few", "guest-p3")
        .function_as("metered", "guest-p3")
        .config(
            "[functions.hello]\ninstance_concurrency = 4\n\
             [functions.few]\nreuse = 2\ninstance_concurrency = 4\n\
             [functions.metered]\nreuse = 8\ninstance_concurrency = 4\nfuel = 1000000\n",
        )
        .start();
    let table = server.stdout.lock().unwrap().join("\n");
    for (name, why) in [
        (
            "hello",
            "functions.hello.instance_concurrency = 4: only a synchronous WASI 0.3",
        ),
        ("few", "instance_concurrency = 4 is more than reuse = 2"),
        ("metered", "instance_concurrency = 4 with fuel"),
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with("FAILED") && l.contains(&format!("{name}.wasm")))
            .unwrap_or_else(|| panic!("{name} not refused:\n{table}"));
        assert!(line.contains(why), "{line}");
    }
}

#[tokio::test]
#[ignore = "needs componentize-py (installed by .ci/run); run with --ignored"]
async fn a_slow_starting_guest_shared_under_load_answers_every_request() {
    // Python's start-up (~3 ms of instantiation, ticked by the epoch like any wasm) in a new
    // instance every 4 requests, 16 requests at a time.
    let server = Server::with(&[])
        .function_file("py", &crate::support::component("python-p3"))
        .config("[functions.py]\nreuse = 4\ninstance_concurrency = 4\n")
        .start();
    let url = server.url("/py3?name=Ada");
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..12 {
        for reply in futures::future::join_all((0..16).map(|_| get(&url))).await {
            *statuses.entry(reply.status).or_insert(0) += 1;
        }
    }
    assert_eq!(statuses, [(200, 192)].into(), "{}", server.logs());
}
