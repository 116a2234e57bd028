//! Test guest: parks in a host call (`sleep`) before answering, to exercise wall-clock
//! budgets of guests that are not running wasm code. Sleeps for query `ms` milliseconds
//! (default: an hour), then answers `200 slept <ms> ms`. Prints `sleeping <ms> ms` on stdout
//! first, so tests can see it is running.

use std::time::Duration;

use fnhost_sdk::{Request, RequestExt};

fn handle(req: Request) -> String {
    let ms: u64 = req
        .query("ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(3_600_000);
    println!("sleeping {ms} ms");
    std::thread::sleep(Duration::from_millis(ms));
    format!("slept {ms} ms\n")
}

fnhost_sdk::function!(handle);
