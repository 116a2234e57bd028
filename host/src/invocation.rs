//! One invocation as both paths use it, synchronous and background: the request as the guest
//! sees it (fnhost's headers set, a client's forged ones dropped), the per-invocation settings
//! the engine needs, and how the invocation is judged when the guest gives no response.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};

use crate::body::Body;
use crate::engine::{CallKind, Engine, InvokeContext, Outcome, Running};
use crate::functions::{Function, Mode};
use crate::ids::headers;
use crate::logs::Capture;
use crate::telemetry::Trace;

/// Why an invocation produced no usable response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The guest answered with a `wasi:http` error code instead of a response.
    ErrorCode(String),
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest ran past its budget (wall clock or fuel).
    Timeout(Duration),
    /// The guest trapped (panic, unreachable, memory cap...): the root cause.
    Trapped(String),
    /// A background attempt slept or waited: not a failure, it runs again later.
    Suspended(crate::workflow::Suspension),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::ErrorCode(code) => write!(f, "function answered with error code {code}"),
            Failure::NoResponse => f.write_str("function returned without setting a response"),
            Failure::Timeout(budget) => write!(f, "budget of {budget:?} exceeded"),
            Failure::Trapped(cause) => write!(f, "trapped: {cause}"),
            Failure::Suspended(s) => s.fmt(f),
        }
    }
}

/// A background attempt, as the guest's run needs it.
pub struct Attempt {
    /// Its number, from 1.
    pub number: u32,
    /// Where its output lines are kept.
    pub capture: Capture,
    /// Its invocation's durable steps.
    pub steps: Arc<dyn crate::workflow::StepStore>,
}

/// Starts `function` on `request` in a fresh instance; the task holds `guard` until the guest
/// is done. `attempt` is the background attempt number (none for a sync invocation), with
/// where its output lines are kept. The run is a span under `parent` (the request's, or the
/// attempt's), and the guest's `traceparent` names it.
pub fn start<G: Send + 'static>(
    engine: &Engine,
    function: &Arc<Function>,
    request: Request<Bytes>,
    (params, id): (&[(String, String)], &str),
    attempt: Option<Attempt>,
    parent: &Trace,
    guard: G,
) -> Running {
    let (number, capture, steps) = match attempt {
        Some(a) => (Some(a.number), Some(a.capture), Some(a.steps)),
        None => (None, None, None),
    };
    let mut request = guest_request(request, &function.name, params, id, number);
    if let Some(deploy) = function
        .deploy
        .as_deref()
        .and_then(|d| HeaderValue::from_str(d).ok())
    {
        request.headers_mut().insert(headers::DEPLOY_ID, deploy);
    }
    // Not recorded (off, or sampled out): no span to name; the context still propagates.
    let run = if parent.is_on() {
        parent.child(format!("run {}", function.name))
    } else {
        parent.clone()
    };
    traced_request(&mut request, &run);
    let mut ctx = context(function, id, capture);
    (ctx.trace, ctx.attempt, ctx.steps) = (run, number, steps);
    engine.invoke(&function.component, request, &ctx, guard)
}

/// The guest's request names `run` as its parent (`traceparent`, `tracestate`), so a guest
/// continues fnhost's trace; untouched when traces are off.
fn traced_request<B>(request: &mut Request<B>, run: &Trace) {
    let w3c = run.headers();
    if w3c.is_empty() {
        return;
    }
    request.headers_mut().remove("tracestate");
    for (name, value) in w3c {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            request.headers_mut().insert(name, value);
        }
    }
}

/// Waits for the guest's response; when none comes, why.
pub async fn answer(running: &mut Running, budget: Duration) -> Result<Response<Body>, Failure> {
    match (&mut running.response).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(code)) => Err(Failure::ErrorCode(code)),
        Err(_never_set) => Err(ended(running, budget)
            .await
            .err()
            .unwrap_or(Failure::NoResponse)),
    }
}

/// Waits for the guest to be done: `Ok` when its handler returned.
pub async fn ended(running: &mut Running, budget: Duration) -> Result<(), Failure> {
    judge((&mut running.outcome).await, budget)
}

/// How an engine outcome counts.
fn judge(
    outcome: Result<Outcome, tokio::task::JoinError>,
    budget: Duration,
) -> Result<(), Failure> {
    match outcome {
        Ok(Outcome::Completed { .. }) => Ok(()),
        Ok(Outcome::Timeout) => Err(Failure::Timeout(budget)),
        Ok(Outcome::Trap { cause, .. }) => Err(Failure::Trapped(cause)),
        Ok(Outcome::Suspended(s)) => Err(Failure::Suspended(s)),
        Err(e) => Err(Failure::Trapped(e.to_string())),
    }
}

/// The per-invocation settings the engine needs.
fn context(function: &Function, id: &str, capture: Option<Capture>) -> InvokeContext {
    InvokeContext {
        id: id.into(),
        function: function.name.as_str().into(),
        kind: match function.settings.mode {
            Mode::Sync => CallKind::Sync,
            Mode::Background => CallKind::Background,
        },
        timeout: function.settings.limits.timeout,
        memory: function.settings.limits.memory,
        fuel: function.settings.limits.fuel,
        env: function.settings.sandbox.env.clone(),
        outbound: function.settings.sandbox.outbound.clone(),
        max_outbound: function.settings.limits.max_outbound,
        max_log: function.settings.limits.max_log,
        capture,
        deploy: function.deploy.clone(),
        warm: function.warm.clone(),
        files: (function.settings.sandbox.files.as_ref()).map(|(dir, _)| dir.clone()),
        trace: Trace::none(),
        attempt: None,
        steps: None,
    }
}

/// A client's request without the `fnhost-*` headers only fnhost may set, and with those the
/// edge knows (`edge`: the client's address, the site, a trusted proxy's geo).
pub fn from_client<B>(req: Request<B>, edge: &[(&'static str, String)]) -> Request<B> {
    let mut req = without_fnhost_headers(req);
    for (name, value) in edge {
        if let Ok(v) = HeaderValue::from_str(value) {
            req.headers_mut().insert(*name, v);
        }
    }
    req
}

/// A client's request without the `fnhost-*` headers only fnhost may set.
pub fn without_fnhost_headers<B>(mut req: Request<B>) -> Request<B> {
    let map = req.headers_mut();
    let spoofed: Vec<HeaderName> = map
        .keys()
        .filter(|k| k.as_str().starts_with(headers::PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        map.remove(name);
    }
    req
}

/// The request as the guest sees it: fnhost's headers set (id, function, attempt, params).
pub fn guest_request(
    mut req: Request<Bytes>,
    function: &str,
    params: &[(String, String)],
    id: &str,
    attempt: Option<u32>,
) -> Request<Bytes> {
    let map = req.headers_mut();
    if !map.contains_key(http::header::HOST) {
        map.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            map.insert(name, v);
        }
    };
    set(headers::INVOCATION_ID, id);
    set(headers::FUNCTION, function);
    if let Some(n) = attempt {
        set(headers::ATTEMPT, &n.to_string());
    }
    if !params.is_empty() {
        set(headers::PARAMS, &encode_form(params));
    }
    req
}

/// `application/x-www-form-urlencoded` encoding of pairs.
fn encode_form(pairs: &[(String, String)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_form_encoded() {
        let p = vec![
            ("id".to_string(), "42".to_string()),
            ("*".to_string(), "a b/c".to_string()),
        ];
        assert_eq!(encode_form(&p), "id=42&%2A=a%20b%2Fc");
    }

    #[test]
    fn client_cannot_spoof_fnhost_headers() {
        let req = Request::builder()
            .header("fnhost-attempt", "99")
            .header("fnhost-invocation-id", "forged")
            .body(Bytes::new())
            .unwrap();
        let req = guest_request(
            from_client(req, &[(headers::CLIENT_IP, "192.0.2.7".into())]),
            "f",
            &[],
            "real",
            None,
        );
        assert_eq!(req.headers()["fnhost-invocation-id"], "real");
        assert_eq!(req.headers()["fnhost-client-ip"], "192.0.2.7");
        assert_eq!(req.headers()["fnhost-function"], "f");
        assert!(req.headers().get("fnhost-attempt").is_none());
        let req = guest_request(req, "f", &[], "real", Some(2));
        assert_eq!(req.headers()["fnhost-attempt"], "2");
    }

    #[test]
    fn outcomes_are_judged_and_worded() {
        let budget = Duration::from_secs(2);
        assert_eq!(
            judge(Ok(Outcome::Completed { fuel_used: None }), budget),
            Ok(())
        );
        let timeout = judge(Ok(Outcome::Timeout), budget).unwrap_err();
        assert_eq!(timeout.to_string(), "budget of 2s exceeded");
        let trap = judge(
            Ok(Outcome::Trap {
                cause: "wasm trap: unreachable".into(),
                detail: "error while executing | wasm trap: unreachable".into(),
            }),
            budget,
        )
        .unwrap_err();
        assert_eq!(trap.to_string(), "trapped: wasm trap: unreachable");
        assert_eq!(
            Failure::NoResponse.to_string(),
            "function returned without setting a response"
        );
    }
}
