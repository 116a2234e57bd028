//! Test guest: declares through its `config` export (world 0.4) what `[functions.NAME]` could
//! say — a path, an excluded path and a rate limit of 3 requests a minute per client address —
//! and answers `declared PATH`.

use fnhost_sdk::{RateLimit, Request, Settings};

fn settings() -> Settings {
    Settings::new()
        .path("/declared/*")
        .excluded_path("/declared/health")
        .rate_limit(RateLimit::new(3, 60).aggregate_by_ip())
}

fn handle(req: Request) -> String {
    format!("declared {}", req.uri().path())
}

fnhost_sdk::function!(handle, config = settings);
