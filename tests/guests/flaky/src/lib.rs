//! Test guest: fails (traps) until attempt `succeed_on` (query, default 3), read from the
//! `fnhost-attempt` header, then answers `ok on attempt N`. Prints `flaky attempt N` on stdout
//! first, so tests can count runs. Exercises background retries.

use fnhost_sdk::{Request, RequestExt};

fn handle(req: Request) -> String {
    let attempt = req.attempt().unwrap_or(1);
    let succeed_on: u32 = req
        .query("succeed_on")
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    println!("flaky attempt {attempt}");
    if attempt < succeed_on {
        panic!("flaky: failing attempt {attempt} (succeeds on {succeed_on})");
    }
    format!("ok on attempt {attempt}")
}

fnhost_sdk::function!(handle);
