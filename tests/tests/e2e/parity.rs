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
