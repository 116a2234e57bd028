//! Test guest for fnhost's `waitUntil`: answers `answered` at once, then keeps working in the
//! same instance — waits query `ms` milliseconds and POSTs `done` to query `url`, or with
//! `spin=1` spins in wasm code until the budget stops it.

use std::time::Duration;

use fnhost_sdk::{Request, RequestExt, WaitUntil, fetch, wait_until};

fn handle(req: Request) -> WaitUntil<&'static str> {
    let ms: u64 = req.query("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    let url = req.query("url");
    let spin = req.query("spin").is_some();
    wait_until("answered\n", move || {
        if spin {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        std::thread::sleep(Duration::from_millis(ms));
        if let Some(url) = url
            && let Ok(post) = fnhost_sdk::http::Request::post(url.as_str()).body(b"done".to_vec())
        {
            let _ = fetch(post);
        }
    })
}

fnhost_sdk::function!(handle);
