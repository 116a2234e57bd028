//! A scheduled function: it declares `@daily` itself (like Netlify's `config.schedule`; a
//! `schedule` in `[functions.report-scheduled]` of fnhost.toml would override it), so fnhost
//! runs it once a day at 00:00 UTC through the background queue, with the body `{"next_run": "<RFC 3339>"}`
//! and the header `x-nf-event: schedule`. It answers a one-line report, kept as the run's
//! result (see `fnhost invocations --function report-scheduled`).

use fnhost_sdk::{Request, RequestExt, Settings};

fn handle(req: Request) -> String {
    let event = req
        .headers()
        .get("x-nf-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    let body = req.text();
    let next_run = body
        .split("\"next_run\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("unknown");
    println!("daily report ({event}); next run at {next_run}");
    format!("report done ({event}); next run at {next_run}\n")
}

fn settings() -> Settings {
    Settings::new().schedule("@daily")
}

fnhost_sdk::function!(handle, config = settings);
