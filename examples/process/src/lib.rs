//! A background function that declares itself in code, as in the Netlify docs:
//! `background = true` and `path = "/process"` from its `config` export. It counts the words of
//! the posted text; the count goes to the `on_success` destination in fnhost.toml.

use fnhost_sdk::{Request, RequestExt, Response, Settings};

fn handle(req: Request) -> Response {
    let text = req.text();
    let words = text.split_whitespace().count();
    let body = format!(r#"{{"words":{words},"bytes":{}}}"#, text.len());
    fnhost_sdk::http::Response::builder()
        .header("content-type", "application/json")
        .body(body.into_bytes())
        .expect("valid response")
}

fn settings() -> Settings {
    Settings::new()
        .background(true)
        .path("/process")
        .method("POST")
}

fnhost_sdk::function!(handle, config = settings);
