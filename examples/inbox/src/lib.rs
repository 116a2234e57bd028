//! A destination for the background examples: receives the outcome records fnhost POSTs
//! (AWS Lambda's destination-record shape) and prints them to the log.

use fnhost_sdk::{Request, RequestExt, Response};

fn handle(req: Request) -> Response {
    println!("inbox received: {}", req.text());
    let mut resp = Response::new(Vec::new());
    *resp.status_mut() = fnhost_sdk::http::StatusCode::NO_CONTENT;
    resp
}

fnhost_sdk::function!(handle);
