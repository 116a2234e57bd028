//! A function that declares its own route: `GET /api/items/:id` answers `{"id":"<id>"}`.

use fnhost_sdk::http::{self, header::CONTENT_TYPE};
use fnhost_sdk::{Request, RequestExt, Response, Settings};

fn handle(req: Request) -> Response {
    let id = req.param("id").unwrap_or_default();
    let body = serde_json::json!({ "id": id }).to_string();
    http::Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .body(body.into_bytes())
        .expect("static response is valid")
}

fn settings() -> Settings {
    Settings::new().path("/api/items/:id").method("GET")
}

fnhost_sdk::function!(handle, config = settings);
