//! Test guest: answers `VERSION deploy=ID attempt=N` — its `VERSION` variable (set per deploy in
//! fnhost.toml), the deploy id fnhost passes (`none` when serving a directory) and the attempt.
//! With `?fail_first`, the first attempt of a background invocation traps (so its retry shows
//! which deploy the retry ran).

use fnhost_sdk::{Request, RequestExt};

fn handle(req: Request) -> String {
    let version = std::env::var("VERSION").unwrap_or_else(|_| "unversioned".into());
    let attempt = req.attempt().unwrap_or(1);
    let deploy = req.deploy_id().unwrap_or("none").to_string();
    println!("version {version} deploy {deploy} attempt {attempt}");
    if req.query("fail_first").is_some() && attempt == 1 {
        panic!("version {version}: failing attempt 1 on purpose");
    }
    format!("{version} deploy={deploy} attempt={attempt}")
}

fnhost_sdk::function!(handle);
