//! Test guest: fetches the URL in query `url` with GET. `200 upstream <status>: <body>` on
//! success, `502 fetch failed: <error>` when the request fails or the host denies it.

use fnhost_sdk::http::StatusCode;
use fnhost_sdk::{Request, RequestExt, fetch};

fn handle(req: Request) -> (StatusCode, String) {
    let Some(url) = req.query("url") else {
        return (
            StatusCode::BAD_REQUEST,
            "missing query parameter `url`".into(),
        );
    };
    let upstream = match fnhost_sdk::http::Request::get(url.as_str()).body(Vec::new()) {
        Ok(upstream) => upstream,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("bad url {url:?}: {err}")),
    };
    match fetch(upstream) {
        Ok(response) => (
            StatusCode::OK,
            format!(
                "upstream {}: {}",
                response.status().as_u16(),
                String::from_utf8_lossy(response.body())
            ),
        ),
        Err(err) => (StatusCode::BAD_GATEWAY, format!("fetch failed: {err}")),
    }
}

fnhost_sdk::function!(handle);
