//! Answers with a JSON description of exactly the request it received, for tests and debugging:
//! `{"method","path","query","params","headers","body"}`. The status comes from the request
//! header `x-echo-status` (default 200); the response always carries `x-echo: fnhost`.

use fnhost_sdk::http::{self, StatusCode, header::CONTENT_TYPE};
use fnhost_sdk::{Request, RequestExt, Response};
use serde_json::{Map, Value, json};

fn handle(req: Request) -> Response {
    let status = req
        .headers()
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);

    let mut headers = Map::new();
    for name in req.headers().keys() {
        let values: Vec<String> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    let params: Map<String, Value> = req
        .params()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();

    let body = json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "params": params,
        "headers": headers,
        "body": req.text(),
    });
    http::Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header("x-echo", "fnhost")
        .body(body.to_string().into_bytes())
        .expect("response parts are valid")
}

fnhost_sdk::function!(handle);
