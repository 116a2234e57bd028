//! `fnhost send NAME --key KEY --data PAYLOAD`: sends an event to a running fnhost
//! (`POST /.fnhost/events/NAME`, admin endpoint), waking the background invocations waiting
//! for it with that key; prints what it woke.

use std::process::ExitCode;

use anyhow::bail;

use super::client::{self, Call};
use super::invoke::{DEFAULT_URL, Payload, encode};
use crate::ids::API_PREFIX;

/// `fnhost send …`.
#[derive(clap::Args)]
pub struct SendArgs {
    /// Event name (`order.approved`)
    name: String,
    /// The key waits match on (`wait-for-event`'s `match-key`)
    #[arg(long, default_value = "")]
    key: String,
    /// Payload: the text itself, @FILE, or @- for stdin (the waiting step's result)
    #[arg(long, short = 'd', default_value = "")]
    data: String,
    /// Idempotency-Key: the same key again stores and wakes nothing
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The fnhost to ask
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// Admin token [default: $FNHOST_ADMIN_TOKEN]
    #[arg(long, env = "FNHOST_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Sends the event; prints `NAME KEY: event ID, woke N, started M` and the ids.
pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let Some(token) = args.token.as_deref() else {
        bail!("send is an admin action: pass --token or set FNHOST_ADMIN_TOKEN");
    };
    let url = format!(
        "{}{API_PREFIX}/events/{}?key={}",
        args.url.trim_end_matches('/'),
        encode(&args.name),
        encode(&args.key)
    );
    let mut headers = Vec::new();
    if let Some(k) = &args.idempotency_key {
        headers.push((
            http::HeaderName::from_static("idempotency-key"),
            http::HeaderValue::from_str(k)?,
        ));
    }
    let call = Call {
        method: http::Method::POST,
        headers,
        body: Payload::parse(&args.data).read()?,
        ..Call::get(&url, Some(token))
    };
    let Some(answer) = client::send_or_report(call)? else {
        return Ok(ExitCode::FAILURE);
    };
    let sent: serde_json::Value = serde_json::from_slice(&answer.body)?;
    let ids = |field: &str| -> Vec<String> {
        (sent[field].as_array().into_iter().flatten())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let (woke, started) = (ids("woke"), ids("started"));
    let repeat = if sent["new"] == false {
        " (a repeat: nothing new)"
    } else {
        ""
    };
    println!(
        "{} {}: event {}{repeat}, woke {}, started {}",
        args.name,
        args.key,
        sent["id"].as_str().unwrap_or("?"),
        woke.len(),
        started.len()
    );
    for id in woke {
        println!("woke {id}");
    }
    for id in started {
        println!("started {id}");
    }
    Ok(ExitCode::SUCCESS)
}
