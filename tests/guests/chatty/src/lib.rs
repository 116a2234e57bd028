//! Test guest: prints query `lines` lines of `size` bytes to stdout (default 10 × 80), then
//! answers `printed N bytes`: a guest whose output must be bounded.

use std::io::Write;

use fnhost_sdk::{Request, RequestExt};

fn handle(req: Request) -> String {
    let number = |key: &str, default: usize| {
        req.query(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (lines, size) = (number("lines", 10), number("size", 80));
    let line = format!("{}\n", "x".repeat(size));
    let mut out = std::io::stdout().lock();
    for _ in 0..lines {
        // Output is best effort: a host that drops it must not fail the function.
        let _ = out.write_all(line.as_bytes());
    }
    let _ = out.flush();
    format!("printed {} bytes\n", lines * (size + 1))
}

fnhost_sdk::function!(handle);
