//! Functions written in JavaScript (jco / componentize-js) and Python (componentize-py), built
//! from `examples/js-hello`, `examples/python-hello` and `examples/python-background` by the
//! same `fnhost build` as the Rust ones, and served unchanged.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::background::{Destination, accepted_id, post};
use crate::support::{Server, get, optional_component, send};

/// `(function name, component, how it greets)` for each language whose tools are present.
fn hellos() -> Vec<(&'static str, PathBuf, &'static str)> {
    [
        ("js-hello", "JavaScript", "javascript"),
        ("python-hello", "Python", "python"),
    ]
    .into_iter()
    .filter_map(|(name, language, _)| optional_component(name).map(|path| (name, path, language)))
    .collect()
}

fn serve(functions: &[(&str, PathBuf, &str)], config: &str) -> Server {
    let mut builder = Server::with(&[]).config(config);
    for (name, path, _) in functions {
        builder = builder.function_file(name, path);
    }
    builder.start()
}

#[tokio::test]
async fn javascript_and_python_functions_see_the_query_and_body_and_set_status_and_headers() {
    let hellos = hellos();
    let server = serve(&hellos, "");
    for (name, _, language) in &hellos {
        let path = format!("/.netlify/functions/{name}");
        let reply = get(&server.url(&format!("{path}?name=Ada"))).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.text(), format!("Hello, Ada from {language}!\n"));
        assert_eq!(
            reply.header("x-language"),
            Some(language.to_lowercase().as_str())
        );
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            get(&server.url(&path)).await.text(),
            format!("Hello, world from {language}!\n"),
            "{name}: no name in the query"
        );

        let body = "grüße, fnhost";
        let reply = send("POST", &server.url(&format!("{path}?name=Bo")), &[], body).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let json = reply.json();
        assert_eq!(json["language"], language.to_lowercase(), "{json}");
        assert_eq!(json["name"], "Bo", "{json}");
        assert_eq!(json["length"], body.len(), "{json}: length in bytes");
        assert_eq!(json["body"], body, "{json}");
    }
}

#[tokio::test]
async fn a_python_function_declares_its_methods_through_the_config_export() {
    let Some(path) = optional_component("python-hello") else {
        return;
    };
    let server = serve(&[("python-hello", path, "")], "");
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("python-hello") && l.contains("[GET,POST]")),
        "{table}"
    );
    let reply = send(
        "PUT",
        &server.url("/.netlify/functions/python-hello"),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, POST"));
}

#[tokio::test]
async fn spinning_javascript_and_python_handlers_get_504_at_their_budget() {
    let hellos = hellos();
    let config: String = hellos
        .iter()
        .map(|(name, _, _)| format!("[functions.{name}]\ntimeout = \"1s\"\n"))
        .collect();
    let server = serve(&hellos, &config);
    for (name, _, language) in &hellos {
        let path = format!("/.netlify/functions/{name}");
        let started = Instant::now();
        let reply = get(&server.url(&format!("{path}?spin=1"))).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 504, "{name}: {}", reply.text());
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "{name} stopped after {took:?}"
        );
        // The next request gets a fresh instance and answers normally.
        assert_eq!(
            get(&server.url(&path)).await.text(),
            format!("Hello, world from {language}!\n")
        );
    }
}

#[tokio::test]
async fn a_python_background_function_is_acknowledged_then_reports_to_its_destination() {
    let Some(path) = optional_component("python-background") else {
        return;
    };
    let dest = Destination::start().await;
    let config = format!(
        "[functions.python-background]\non_success = \"{}\"\n",
        dest.url("/done")
    );
    let server = serve(&[("python-background", path, "")], &config);
    let table = server.stdout.lock().unwrap().join("\n");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("python-background") && l.contains("background")),
        "the -background suffix selects the mode: {table}"
    );

    let body = r#"{"text": "three little words"}"#;
    let reply = post(&server, "/.netlify/functions/python-background", &[], body).await;
    let id = accepted_id(&reply);
    let record = dest.wait_for(&id, Duration::from_secs(30)).await;
    assert_eq!(record["requestContext"]["condition"], "Success", "{record}");
    // A JSON request body is passed on as JSON (AWS's requestPayload).
    assert_eq!(
        record["requestPayload"]["text"], "three little words",
        "{record}"
    );
    let payload = &record["responsePayload"];
    assert_eq!(payload["words"], 3, "{record}");
    assert_eq!(payload["attempt"], 1, "{record}");
    assert_eq!(payload["invocation"], id.as_str(), "{record}");
}

#[tokio::test]
async fn big_components_start_from_the_compile_cache_the_second_time() {
    let hellos = hellos();
    if hellos.is_empty() {
        return;
    }
    // The run's shared cache: the first start may compile (or another test already did).
    drop(serve(&hellos, ""));
    let second = serve(&hellos, "");
    second
        .wait_for_log(
            &[
                &format!("loaded {} function(s)", hellos.len()),
                &format!("{} from cache, 0 compiled", hellos.len()),
            ],
            Duration::from_secs(1),
        )
        .await;
}
