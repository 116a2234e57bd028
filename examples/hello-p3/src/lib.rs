//! A WASI 0.3 function in Rust, on fnhost-sdk's async flavour (cargo feature `p3`):
//!
//! - `GET ?name=Ada` → `Hello, Ada from WASI 0.3!`; `POST` with the name as the body, the same;
//! - `GET ?url=U&url=V` → downloads every URL at once (outbound requests need
//!   `allowed_outbound_hosts`) and answers one line per URL: `U STATUS BYTES` or `U error E`;
//! - after each answer, a spawned task logs `answered ID` (work after the response).
//!
//! `cargo build --release --target wasm32-wasip2` (or `fnhost build`) makes a component that
//! exports `wasi:http/handler@0.3.0`; fnhost serves it beside 0.2 functions.

use fnhost_sdk::http::Method;
use fnhost_sdk::{Request, RequestExt, p3, parse_form};

async fn handle(req: Request) -> String {
    let id = req.invocation_id().unwrap_or_default().to_string();
    p3::spawn(async move { println!("answered {id}") });
    let urls: Vec<String> = parse_form(req.uri().query().unwrap_or_default())
        .into_iter()
        .filter_map(|(key, value)| (key == "url").then_some(value))
        .collect();
    if !urls.is_empty() {
        return futures::future::join_all(urls.iter().map(|url| download(url)))
            .await
            .concat();
    }
    let name = match *req.method() {
        Method::POST => req.text().trim().to_string(),
        _ => req.query("name").unwrap_or_default(),
    };
    let name = if name.is_empty() { "world" } else { &name };
    format!("Hello, {name} from WASI 0.3!\n")
}

/// One line for `url`: its status and body size, or the error.
async fn download(url: &str) -> String {
    let request = fnhost_sdk::http::Request::get(url).body(Vec::new());
    let Ok(request) = request else {
        return format!("{url} error invalid URL\n");
    };
    match p3::fetch(request).await {
        Ok(response) => format!(
            "{url} {} {}\n",
            response.status().as_u16(),
            response.body().len()
        ),
        Err(err) => format!("{url} error {err}\n"),
    }
}

fnhost_sdk::service!(handle);
