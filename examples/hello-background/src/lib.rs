//! A background function, chosen by its name's `-background` suffix: fnhost answers `202` at
//! once, then runs this detached (retrying on failure). Its answer goes to the `on_success`
//! destination configured in fnhost.toml, not to the caller.

use std::time::Duration;

use fnhost_sdk::{Request, RequestExt, Response};

fn handle(req: Request) -> Response {
    let id = req.invocation_id().unwrap_or("?").to_string();
    let attempt = req.attempt().unwrap_or(1);
    println!("hello-background: working on {id} (attempt {attempt})");
    // Stand-in for slow work: a report, an email, a resize.
    std::thread::sleep(Duration::from_millis(200));
    let name = req.query("name").unwrap_or_else(|| "world".to_string());
    let body =
        format!(r#"{{"message":"Hello, {name}, from the background!","attempt":{attempt}}}"#);
    fnhost_sdk::http::Response::builder()
        .header("content-type", "application/json")
        .body(body.into_bytes())
        .expect("valid response")
}

fnhost_sdk::function!(handle);
