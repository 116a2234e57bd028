//! `fnhost schedule pause|resume|run|next NAME`: a scheduled function's schedule on a running
//! fnhost (admin endpoints: `/.fnhost/functions/NAME/schedule`).

use std::process::ExitCode;

use anyhow::bail;

use super::client::{self, Call};
use crate::ids::API_PREFIX;

/// `fnhost schedule …`.
#[derive(clap::Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    action: Action,
    /// The fnhost to ask
    #[arg(long, global = true, default_value = "http://127.0.0.1:8888")]
    url: String,
    /// Admin token [default: $FNHOST_ADMIN_TOKEN]
    #[arg(
        long,
        global = true,
        env = "FNHOST_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Stop the schedule's ticks on every node until `resume` (runs under way finish)
    Pause { name: String },
    /// Start the schedule's ticks again
    Resume { name: String },
    /// Run the function now, once, outside its schedule
    Run { name: String },
    /// Print the schedule's next runs (UTC), its zone, overlap policy and whether it is paused
    Next {
        name: String,
        /// How many runs
        #[arg(short = 'n', default_value_t = 5)]
        count: usize,
    },
}

/// Runs the subcommand; prints the server's answer.
pub fn run(args: ScheduleArgs) -> anyhow::Result<ExitCode> {
    let Some(token) = args.token.as_deref() else {
        bail!("schedule is an admin action: pass --token or set FNHOST_ADMIN_TOKEN");
    };
    let base = args.url.trim_end_matches('/');
    let (method, url) = match &args.action {
        Action::Pause { name } => (http::Method::POST, format!("{name}/schedule/pause")),
        Action::Resume { name } => (http::Method::POST, format!("{name}/schedule/resume")),
        Action::Run { name } => (http::Method::POST, format!("{name}/schedule/run")),
        Action::Next { name, count } => (http::Method::GET, format!("{name}/schedule?n={count}")),
    };
    let url = format!("{base}{API_PREFIX}/functions/{url}");
    let call = Call {
        method,
        ..Call::get(&url, Some(token))
    };
    let Some(answer) = client::send_or_report(call)? else {
        return Ok(ExitCode::FAILURE);
    };
    match &args.action {
        Action::Run { name } => {
            let id = answer.headers.get("fnhost-invocation-id");
            let id = id.and_then(|v| v.to_str().ok()).unwrap_or("?");
            println!("{name}: run {id} queued");
        }
        Action::Next { .. } => print_next(&answer.text())?,
        Action::Pause { name } | Action::Resume { name } => {
            let view: serde_json::Value = serde_json::from_slice(&answer.body)?;
            let state = if view["paused"] == true {
                "paused"
            } else {
                "running"
            };
            println!("{name}: schedule {state}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `schedule (tz), overlap, paused`, then one run per line.
fn print_next(text: &str) -> anyhow::Result<()> {
    let view: serde_json::Value = serde_json::from_str(text)?;
    let paused = if view["paused"] == true {
        ", paused"
    } else {
        ""
    };
    println!(
        "{} ({}), overlap {}{paused}",
        view["schedule"].as_str().unwrap_or("?"),
        view["tz"].as_str().unwrap_or("UTC"),
        view["overlap"].as_str().unwrap_or("?"),
    );
    for run in view["next"].as_array().into_iter().flatten() {
        println!("{}", run.as_str().unwrap_or("?"));
    }
    Ok(())
}
