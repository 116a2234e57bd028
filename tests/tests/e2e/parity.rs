//! Netlify parity: function subpaths, and rules rewriting to them.

use crate::support::{Server, get};

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
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let upstream = crate::support::serve_http(Arc::new(move |_req| {
        let seen = seen.clone();
        Box::pin(async move {
            seen.lock().unwrap().push(Instant::now());
            http::Response::new(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        })
    }))
    .await;
    let server = Server::with(&[])
        .function_as("later", "guest-later")
        .config(&format!(
            "[functions.later]\nallowed_outbound_hosts = [\"http://{upstream}\"]\n"
        ))
        .start();
    let asked = Instant::now();
    let reply = get(&server.url(&format!(
        "/.netlify/functions/later?ms=800&url=http://{upstream}/report"
    )))
    .await;
    let answered = Instant::now();
    assert_eq!((reply.status, reply.text().as_str()), (200, "answered\n"));
    assert!(
        answered - asked < Duration::from_millis(700),
        "the answer waited for the work: {:?}",
        answered - asked
    );
    assert!(
        arrivals.lock().unwrap().is_empty(),
        "the work ran before the answer"
    );
    let posted = crate::support::wait_until(
        "the POST made after answering",
        Duration::from_secs(10),
        async || match arrivals.lock().unwrap().first() {
            Some(at) => Ok(*at),
            None => Err(String::new()),
        },
    )
    .await;
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
