//! Test guest: lists the environment variables it sees, `KEY=VALUE` per line, sorted.

use fnhost_sdk::Request;

fn handle(_req: Request) -> String {
    let mut vars: Vec<String> = std::env::vars()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    vars.sort();
    vars.concat()
}

fnhost_sdk::function!(handle);
