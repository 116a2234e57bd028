//! Test guest: counts requests in a static. Answers `1` every time when the host instantiates
//! a fresh instance per request (no state leaks between invocations). Also prints
//! `counter is N` on stdout, to check that guest output reaches the host's log.

use std::sync::atomic::{AtomicU32, Ordering};

use fnhost_sdk::Request;

static COUNT: AtomicU32 = AtomicU32::new(0);

fn handle(_req: Request) -> String {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    println!("counter is {n}");
    n.to_string()
}

fnhost_sdk::function!(handle);
