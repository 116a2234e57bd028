//! `fnhost invoke` and `fnhost retry`: call a running fnhost like `netlify functions:invoke`.
//!
//! Raw `--query`, `--header` and `--payload` values are parsed here (pure, tested); the call
//! goes through [`client`](super::client). Exit codes say what happened (`--help`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::Deserialize;

use super::client::{self, Answer, Call};
use crate::config::schedule::Schedule;
use crate::ids::{API_PREFIX, headers::INVOCATION_ID, status_path};
use crate::queue::{InvocationState, Status};

/// Exit code when the answer was a 4xx.
pub const EXIT_4XX: u8 = 4;
/// Exit code when the answer was a 5xx.
pub const EXIT_5XX: u8 = 5;
/// Exit code when a waited-for background invocation ended dead or cancelled.
pub const EXIT_FAILED: u8 = 6;

/// The fnhost the CLI talks to unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8888";

/// `fnhost invoke` arguments.
#[derive(clap::Args)]
#[command(after_help = concat!(
    "The function is called at /.netlify/functions/NAME. A function that declares its own \
     path has no such route: give the admin token (--token or $FNHOST_ADMIN_TOKEN) and \
     fnhost looks the route up (GET /.fnhost/functions), or pass the path itself as NAME \
     (`fnhost invoke /api/items/7`).\n\n",
    "Exit codes: 0 answered 1xx-3xx (or a background invocation accepted, or with --wait \
     succeeded); 4 answered 4xx; 5 answered 5xx (with --wait: the stored result's status \
     counts); 6 with --wait, the invocation ended dead or cancelled; 1 any other error \
     (fnhost not reachable, a bad file); 2 bad arguments."
))]
pub struct InvokeArgs {
    /// The function's name, or a path starting with `/` to call as is
    name: String,
    /// The fnhost to call
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// HTTP method [default: POST with --payload or --scheduled, else GET]
    #[arg(long, short = 'X')]
    method: Option<String>,
    /// Request body: JSON or any text, `@FILE` for a file's bytes, `@-` for stdin
    /// (content-type application/json when it parses as JSON, unless --header sets one)
    #[arg(
        long,
        short = 'd',
        value_name = "JSON|@FILE",
        conflicts_with = "scheduled"
    )]
    payload: Option<String>,
    /// Query parameter (repeatable; percent-encoded for you)
    #[arg(long, short = 'q', value_name = "K=V")]
    query: Vec<String>,
    /// Request header (repeatable)
    #[arg(long = "header", short = 'H', value_name = "'K: V'")]
    headers: Vec<String>,
    /// Print the status line and the headers before the body
    #[arg(short = 'i', long = "include")]
    include: bool,
    /// Send what the scheduler sends on a tick: POST {"next_run": "<RFC 3339>"} with
    /// `x-nf-event: schedule` (and `fnhost-event: schedule`, which fnhost drops from clients)
    #[arg(long)]
    scheduled: bool,
    /// For a background function: wait until the invocation ends (succeeded, dead or
    /// cancelled) and print the function's stored answer instead of the invocation id
    #[arg(long)]
    wait: bool,
    /// Admin token, to look up the function's route and (with --wait) to read a result
    /// behind `status = "token"` (the function's invoke_token also reads it)
    /// [default: $FNHOST_ADMIN_TOKEN]
    #[arg(long, env = "FNHOST_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Longest wait for the answer (`30s`, `15m`)
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `fnhost retry` arguments.
#[derive(clap::Args)]
#[command(
    after_help = "Answers 200 with the invocation's status, 404 for an unknown id, \
    409 when it is not waiting for a retry. Exit codes: 0 done; 4 refused (4xx); 5 a 5xx; \
    1 any other error."
)]
pub struct RetryArgs {
    /// Invocation id (from the 202's fnhost-invocation-id header)
    id: String,
    /// The fnhost to ask
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// Admin token [default: $FNHOST_ADMIN_TOKEN]
    #[arg(long, env = "FNHOST_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Where a request body comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    /// The argument itself.
    Inline(String),
    /// `@FILE`.
    File(PathBuf),
    /// `@-`.
    Stdin,
}

impl Payload {
    /// `@FILE`, `@-`, or the text itself.
    pub fn parse(arg: &str) -> Payload {
        match arg.strip_prefix('@') {
            Some("-") => Payload::Stdin,
            Some(path) => Payload::File(PathBuf::from(path)),
            None => Payload::Inline(arg.to_string()),
        }
    }

    pub(super) fn read(&self) -> anyhow::Result<Bytes> {
        Ok(match self {
            Payload::Inline(text) => Bytes::from(text.clone()),
            Payload::File(path) => std::fs::read(path)
                .with_context(|| format!("cannot read the payload file {}", path.display()))?
                .into(),
            Payload::Stdin => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("cannot read the payload from stdin")?;
                buf.into()
            }
        })
    }
}

/// `K=V` → (`K`, `V`); `V` may be empty, `K` may not.
pub fn parse_query_pair(arg: &str) -> anyhow::Result<(String, String)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("invalid --query {arg:?}: expected K=V"),
    }
}

/// `K: V` → a header; the value is trimmed.
pub fn parse_header(arg: &str) -> anyhow::Result<(http::HeaderName, http::HeaderValue)> {
    let Some((name, value)) = arg.split_once(':') else {
        bail!("invalid --header {arg:?}: expected 'K: V'");
    };
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| anyhow::anyhow!("invalid --header {arg:?}: bad header name"))?;
    let value = http::HeaderValue::from_str(value.trim())
        .map_err(|_| anyhow::anyhow!("invalid --header {arg:?}: bad header value"))?;
    Ok((name, value))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path` with the query pairs appended.
pub fn with_query(path: &str, pairs: &[(String, String)]) -> String {
    let mut out = path.to_string();
    for (i, (k, v)) in pairs.iter().enumerate() {
        let sep = if i == 0 && !path.contains('?') {
            '?'
        } else {
            '&'
        };
        out.push(sep);
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// One function as `GET /.fnhost/functions` lists it.
#[derive(Debug, Deserialize)]
struct Listed {
    name: String,
    routes: Vec<String>,
    schedule: Option<String>,
}

/// The path to call for a function listed with `routes`: its first route, without the
/// default route's trailing `/*`; an error when every route needs a value (`:param`, `*`).
fn route_of(name: &str, routes: &[String]) -> anyhow::Result<String> {
    let first = routes
        .iter()
        .map(|r| r.strip_suffix("/*").unwrap_or(r))
        .find(|r| !r.contains([':', '*']));
    match first {
        Some(route) => Ok(route.to_string()),
        None => bail!(
            "{name} is served at {}: call one of them with a value, e.g. \
             `fnhost invoke /YOUR/PATH`",
            routes.join(", ")
        ),
    }
}

/// The exit code for an HTTP status.
fn exit_for(status: u16) -> ExitCode {
    match status {
        400..=499 => ExitCode::from(EXIT_4XX),
        500.. => ExitCode::from(EXIT_5XX),
        _ => ExitCode::SUCCESS,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs `fnhost invoke`: the request from the flags, the function's route, the call, and
/// the answer printed (or, for a background function, its id or its awaited result).
pub fn run(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let query =
        (args.query.iter().map(|q| parse_query_pair(q))).collect::<anyhow::Result<Vec<_>>>()?;
    let mut headers =
        (args.headers.iter().map(|h| parse_header(h))).collect::<anyhow::Result<Vec<_>>>()?;
    check_name(&args.name)?;
    let body = match &args.payload {
        Some(p) => Payload::parse(p).read()?,
        None => Bytes::new(),
    };
    let method = request_method(&args)?;
    let base = args.url.trim_end_matches('/').to_string();
    runtime()?.block_on(async {
        let (path, listed) = resolve_path(&base, &args).await?;
        let body = if args.scheduled {
            scheduled_body(listed.as_ref(), &mut headers)
        } else {
            body
        };
        add_content_type(&body, &mut headers);
        let url = format!("{base}{}", with_query(&path, &query));
        let call = Call {
            method,
            url: &url,
            headers,
            body,
            token: None,
            timeout: args.timeout,
        };
        let answer = client::send(call).await?;
        let id = (answer
            .headers
            .get(INVOCATION_ID)
            .and_then(|v| v.to_str().ok()))
        .map(str::to_string);
        match id {
            Some(id) if answer.status == http::StatusCode::ACCEPTED => {
                accepted(&args, &base, &answer, &id).await
            }
            _ => answered(&args, &url, &answer),
        }
    })
}

/// A function name (letters, digits, `-`, `_`, `.`), or a path starting with `/`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.starts_with('/') || (!name.is_empty() && name.chars().all(fine)) {
        return Ok(());
    }
    bail!("invalid function name {name:?}: letters, digits, `-`, `_` (or a path starting with `/`)")
}

/// `--method`, else POST with a payload or `--scheduled`, else GET.
fn request_method(args: &InvokeArgs) -> anyhow::Result<http::Method> {
    Ok(match &args.method {
        Some(m) => http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| anyhow::anyhow!("invalid --method {m:?}"))?,
        None if args.payload.is_some() || args.scheduled => http::Method::POST,
        None => http::Method::GET,
    })
}

/// The path to call: NAME given as a path, else the function's first plain route from the
/// admin listing (with a token), else `/.netlify/functions/NAME`; and the listing's entry.
async fn resolve_path(base: &str, args: &InvokeArgs) -> anyhow::Result<(String, Option<Listed>)> {
    if args.name.starts_with('/') {
        return Ok((args.name.clone(), None));
    }
    let listed = match &args.token {
        Some(token) => lookup(base, &args.name, token).await?,
        None => None,
    };
    let path = match &listed {
        Some(f) => route_of(&f.name, &f.routes)?,
        None => format!("/.netlify/functions/{}", args.name),
    };
    Ok((path, listed))
}

/// What a schedule tick sends: its event headers and `{"next_run": …}` (the function's next
/// tick when the listing says its schedule, else now).
fn scheduled_body(
    listed: Option<&Listed>,
    headers: &mut Vec<(http::HeaderName, http::HeaderValue)>,
) -> Bytes {
    let now = chrono::Utc::now();
    let next = (listed.and_then(|f| f.schedule.as_deref()))
        .and_then(|s| s.parse::<Schedule>().ok())
        .and_then(|s| s.next_after(now))
        .unwrap_or(now);
    let next_run = next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for name in ["fnhost-event", "x-nf-event"] {
        headers.push((
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static("schedule"),
        ));
    }
    Bytes::from(serde_json::json!({ "next_run": next_run }).to_string())
}

/// A content-type for a payload that has none: JSON, text, or bytes.
fn add_content_type(body: &[u8], headers: &mut Vec<(http::HeaderName, http::HeaderValue)>) {
    if body.is_empty() || headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
        return;
    }
    let kind = if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        "application/json"
    } else if std::str::from_utf8(body).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    headers.push((
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    ));
}

/// A background function's `202`: its id printed, or (`--wait`) its result once it ends.
async fn accepted(
    args: &InvokeArgs,
    base: &str,
    answer: &client::Answer,
    id: &str,
) -> anyhow::Result<ExitCode> {
    if args.include {
        print_head(answer)?;
    }
    if args.wait {
        eprintln!("accepted: background invocation {id}; waiting for it to end");
        return wait(base, id, args.token.as_deref(), args.include).await;
    }
    println!("{id}");
    eprintln!(
        "accepted: background invocation {id} (`fnhost status {id}`, or --wait to wait for its result)"
    );
    Ok(ExitCode::SUCCESS)
}

/// Any other answer: printed, with a hint for a 404 that a function's own path explains.
fn answered(args: &InvokeArgs, url: &str, answer: &client::Answer) -> anyhow::Result<ExitCode> {
    if args.include {
        print_head(answer)?;
    }
    write_body(&answer.body)?;
    if answer.status.as_u16() >= 400 {
        eprintln!("error: {url} answered {}", answer.status);
        if answer.status == http::StatusCode::NOT_FOUND
            && args.token.is_none()
            && !args.name.starts_with('/')
        {
            eprintln!(
                "hint: a function that declares its own path is not at \
                 /.netlify/functions/NAME: pass --token to look it up, or the path"
            );
        }
    }
    Ok(exit_for(answer.status.as_u16()))
}

/// Finds `name` in the admin listing; `None` (the default route is used) when the admin
/// endpoints are off.
async fn lookup(base: &str, name: &str, token: &str) -> anyhow::Result<Option<Listed>> {
    let url = format!("{base}{API_PREFIX}/functions");
    let answer = client::send(Call::get(&url, Some(token))).await?;
    match answer.status.as_u16() {
        200 => {}
        404 => {
            eprintln!("note: {url} answered 404 (admin endpoints off?): using the default route");
            return Ok(None);
        }
        401 | 403 => bail!("{url} refused the admin token ({})", answer.status),
        _ => bail!("{url} answered {}: {}", answer.status, answer.text()),
    }
    let functions: Vec<Listed> = serde_json::from_slice(&answer.body)
        .with_context(|| format!("{url} did not answer a list of functions"))?;
    let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();
    match functions.into_iter().find(|f| f.name == name) {
        Some(f) => Ok(Some(f)),
        None => bail!(
            "no function named {name:?} at {base} (it serves: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ),
    }
}

/// Polls the status resource until an end state; prints the stored answer.
async fn wait(
    base: &str,
    id: &str,
    token: Option<&str>,
    include: bool,
) -> anyhow::Result<ExitCode> {
    let status = poll_until_ended(&format!("{base}{}", status_path(id)), token).await?;
    if let Some(result) = &status.result {
        if include {
            let mut out = std::io::stdout().lock();
            writeln!(out, "HTTP/1.1 {}", status_line(result.status))?;
            for (k, v) in &result.headers {
                writeln!(out, "{k}: {v}")?;
            }
            writeln!(out)?;
        }
        write_body(result.body.as_deref().unwrap_or("").as_bytes())?;
    }
    match status.state {
        InvocationState::Succeeded => Ok(exit_for(status.result.map_or(200, |r| r.status))),
        state => {
            let error = status
                .last_error
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            eprintln!(
                "error: invocation {id} is {state} after {} attempt(s){error}",
                status.attempts
            );
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// Reads the status resource at `url` every 200 ms, telling each new state on stderr, until
/// the invocation has ended (succeeded, dead or cancelled).
async fn poll_until_ended(url: &str, token: Option<&str>) -> anyhow::Result<Status> {
    let mut last_seen = String::new();
    loop {
        let answer = client::send(Call::get(url, token)).await?;
        if answer.status != http::StatusCode::OK {
            bail!("{url} answered {}: {}", answer.status, answer.text());
        }
        let status: Status = serde_json::from_slice(&answer.body)
            .with_context(|| format!("{url} did not answer a status: {}", answer.text()))?;
        let seen = format!("{} {}", status.state, status.attempts);
        if seen != last_seen {
            let mut line = format!(
                "  {} (attempt {}/{})",
                status.state, status.attempts, status.max_attempts
            );
            if status.state == InvocationState::Retrying {
                if let Some(e) = &status.last_error {
                    line.push_str(&format!(": {e}"));
                }
                if let Some(at) = &status.next_attempt_at {
                    line.push_str(&format!("; next attempt at {at}"));
                }
            }
            eprintln!("{line}");
            last_seen = seen;
        }
        if status.state.has_ended() {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `200 OK`, or the bare code when it has no canonical reason.
fn status_line(code: u16) -> String {
    match http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{code} {reason}"),
        None => code.to_string(),
    }
}

fn print_head(answer: &Answer) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "HTTP/1.1 {}", status_line(answer.status.as_u16()))?;
    for (k, v) in &answer.headers {
        writeln!(out, "{k}: {}", String::from_utf8_lossy(v.as_bytes()))?;
    }
    writeln!(out)?;
    Ok(())
}

fn write_body(body: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(body)?;
    out.flush()?;
    Ok(())
}

/// Runs `fnhost retry`: run a retrying invocation now.
pub fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let Some(token) = args.token.as_deref() else {
        bail!("retry is an admin action: pass --token or set FNHOST_ADMIN_TOKEN");
    };
    let url = format!(
        "{}{}/run-now",
        args.url.trim_end_matches('/'),
        status_path(&args.id)
    );
    let answer = runtime()?.block_on(client::send(Call {
        method: http::Method::POST,
        ..Call::get(&url, Some(token))
    }))?;
    write_body(&answer.body)?;
    if !answer.body.ends_with(b"\n") && !answer.body.is_empty() {
        println!();
    }
    let status = answer.status.as_u16();
    if status >= 400 {
        let why = match status {
            404 => " (no such invocation, or admin endpoints off)",
            409 => " (it is not waiting for a retry)",
            401 => " (the admin token was refused)",
            _ => "",
        };
        eprintln!("error: {url} answered {}{why}", answer.status);
    }
    Ok(exit_for(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_query_pair("name=Ada").unwrap(),
            ("name".into(), "Ada".into())
        );
        assert_eq!(
            parse_query_pair("expr=a=b").unwrap(),
            ("expr".into(), "a=b".into())
        );
        assert_eq!(
            parse_query_pair("flag=").unwrap(),
            ("flag".into(), "".into())
        );
        for bad in ["novalue", "=x", ""] {
            let e = parse_query_pair(bad).unwrap_err().to_string();
            assert_eq!(e, format!("invalid --query {bad:?}: expected K=V"));
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        let pairs = vec![
            ("name".to_string(), "Ada Lovelace".to_string()),
            ("q".to_string(), "a&b=c/é".to_string()),
        ];
        assert_eq!(
            with_query("/.netlify/functions/echo", &pairs),
            "/.netlify/functions/echo?name=Ada%20Lovelace&q=a%26b%3Dc%2F%C3%A9"
        );
        assert_eq!(
            with_query("/p?x=1", &pairs[..1]),
            "/p?x=1&name=Ada%20Lovelace"
        );
        assert_eq!(with_query("/p", &[]), "/p");
    }

    #[test]
    fn headers_split_at_the_first_colon_and_are_trimmed() {
        let (name, value) = parse_header("X-Trace:  abc: def ").unwrap();
        assert_eq!(name.as_str(), "x-trace");
        assert_eq!(value, "abc: def");
        let (name, value) = parse_header("x-empty:").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-empty", ""));
        let e = parse_header("no colon").unwrap_err().to_string();
        assert_eq!(e, "invalid --header \"no colon\": expected 'K: V'");
        let e = parse_header("bad name: v").unwrap_err().to_string();
        assert!(e.contains("bad header name"), "{e}");
        let e = parse_header("x: a\nb").unwrap_err().to_string();
        assert!(e.contains("bad header value"), "{e}");
    }

    #[test]
    fn payloads_are_text_a_file_or_stdin() {
        assert_eq!(
            Payload::parse(r#"{"a":1}"#),
            Payload::Inline(r#"{"a":1}"#.into())
        );
        assert_eq!(
            Payload::parse("@body.json"),
            Payload::File("body.json".into())
        );
        assert_eq!(Payload::parse("@-"), Payload::Stdin);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.bin");
        std::fs::write(&file, b"\x00\x01bytes").unwrap();
        let read = Payload::parse(&format!("@{}", file.display()))
            .read()
            .unwrap();
        assert_eq!(&read[..], b"\x00\x01bytes");
        let e = format!("{:#}", Payload::parse("@/no/such/file").read().unwrap_err());
        assert!(
            e.contains("cannot read the payload file /no/such/file"),
            "{e}"
        );
    }

    #[test]
    fn the_route_is_the_first_one_without_a_value_to_fill() {
        let routes = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            route_of("hello", &routes(&["/.netlify/functions/hello/*"])).unwrap(),
            "/.netlify/functions/hello"
        );
        assert_eq!(
            route_of("items", &routes(&["/api/items/:id", "/api/items"])).unwrap(),
            "/api/items"
        );
        let e = route_of("items", &routes(&["/api/items/:id"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("items is served at /api/items/:id"), "{e}");
    }

    #[test]
    fn statuses_map_to_distinct_exit_codes() {
        assert_eq!(exit_for(200), ExitCode::SUCCESS);
        assert_eq!(exit_for(302), ExitCode::SUCCESS);
        assert_eq!(exit_for(404), ExitCode::from(EXIT_4XX));
        assert_eq!(exit_for(503), ExitCode::from(EXIT_5XX));
        assert_eq!(status_line(404), "404 Not Found");
        assert_eq!(status_line(599), "599");
    }
}
