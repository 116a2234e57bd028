//! The smallest fnhost function: answers every request with a greeting.

use fnhost_sdk::http::{self, StatusCode, header::CONTENT_TYPE};
use fnhost_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    http::Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(b"Hello from fnhost!\n".to_vec())
        .expect("static response is valid")
}

fnhost_sdk::function!(handle);
