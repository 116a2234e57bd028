//! Test guest for durable steps (`fnhost_sdk::step`), served as a background function. Query
//! `op` picks the behaviour; every run prints `steps run <id>` first (`<id>`: the invocation
//! id), so tests can count runs.
//!
//! - `op=three&upstream=URL`: steps `one` (GET `URL/one?id=<id>`), `two` (GET
//!   `URL/two?id=<id>`) and `three` (GET `URL/three`; panics on attempt 1, before its
//!   request). Each step's value is the body of its response (a non-2xx status fails the step,
//!   recording nothing). Prints `steps three done <id>`, answers `one=A,two=B,three=C`.
//! - `op=sleep&ms=N&upstream=URL`: step `before` (GET `URL/before`), sleeps N ms as step
//!   `nap`, step `after` (GET `URL/after`). Prints `steps slept <id>`, answers
//!   `before=A,after=B`.
//! - `op=wait&event=E&key=K&timeout_ms=N`: waits up to N ms for event E with key K as step
//!   `approval`. Prints and answers `steps got <payload> <id>` or `steps timed out <id>`.
//!
//! Anything else, or a missing parameter, answers 500 with the reason.

use std::time::Duration;

use fnhost_sdk::{Request, RequestExt, fetch, step};

fn handle(req: Request) -> Result<String, String> {
    let id = req.invocation_id().unwrap_or("-").to_owned();
    println!("steps run {id}");
    match req.query("op").as_deref() {
        Some("three") => three(&req, &id),
        Some("sleep") => sleep(&req, &id),
        Some("wait") => wait(&req, &id),
        other => Err(format!("unknown op {other:?}")),
    }
}

/// Three fetching steps, the third of which panics on the first attempt.
fn three(req: &Request, id: &str) -> Result<String, String> {
    let upstream = required(req, "upstream")?;
    let one = get_step("one", &format!("{upstream}/one?id={id}"))?;
    let two = get_step("two", &format!("{upstream}/two?id={id}"))?;
    let attempt = req.attempt().unwrap_or(1);
    let three = step::try_run("three", || {
        if attempt == 1 {
            panic!("third step fails on attempt 1");
        }
        get_text(&format!("{upstream}/three"))
    })
    .map_err(|err| err.to_string())?;
    println!("steps three done {id}");
    Ok(format!("one={one},two={two},three={three}"))
}

/// A fetching step, a durable sleep, another fetching step.
fn sleep(req: &Request, id: &str) -> Result<String, String> {
    let upstream = required(req, "upstream")?;
    let ms = number(req, "ms")?;
    let before = get_step("before", &format!("{upstream}/before"))?;
    step::sleep("nap", Duration::from_millis(ms));
    let after = get_step("after", &format!("{upstream}/after"))?;
    println!("steps slept {id}");
    Ok(format!("before={before},after={after}"))
}

/// Waits for an event.
fn wait(req: &Request, id: &str) -> Result<String, String> {
    let event = required(req, "event")?;
    let key = required(req, "key")?;
    let timeout = Duration::from_millis(number(req, "timeout_ms")?);
    let answer = match step::wait_for_event("approval", &event, &key, timeout) {
        Some(payload) => format!("steps got {} {id}", String::from_utf8_lossy(&payload)),
        None => format!("steps timed out {id}"),
    };
    println!("{answer}");
    Ok(answer)
}

/// Step `name`: the body of a GET of `url`.
fn get_step(name: &str, url: &str) -> Result<String, String> {
    step::try_run(name, || get_text(url)).map_err(|err| err.to_string())
}

/// The body of a GET of `url`, as text; an error for a failed request or a non-2xx status.
fn get_text(url: &str) -> Result<String, String> {
    let request = fnhost_sdk::http::Request::get(url)
        .body(Vec::new())
        .map_err(|err| format!("bad url {url:?}: {err}"))?;
    let response = fetch(request).map_err(|err| format!("GET {url}: {err}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: status {}", response.status()));
    }
    Ok(String::from_utf8_lossy(response.body()).into_owned())
}

fn required(req: &Request, key: &str) -> Result<String, String> {
    req.query(key)
        .ok_or_else(|| format!("missing query parameter `{key}`"))
}

fn number(req: &Request, key: &str) -> Result<u64, String> {
    let value = required(req, key)?;
    value
        .parse()
        .map_err(|err| format!("query parameter `{key}`={value:?}: {err}"))
}

fnhost_sdk::function!(handle);
