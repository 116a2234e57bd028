//! Test guest: starts query `n` outbound GETs of query `url` at once (raw `wasi:http`, no
//! waiting in between), then waits for all and answers `ok=A limited=B other=C`: how many got
//! a response, how many the host refused with `connection-limit-reached`, how many failed
//! otherwise.

use fnhost_sdk::wasi::http::outgoing_handler;
use fnhost_sdk::wasi::http::types::{ErrorCode, Fields, OutgoingBody, OutgoingRequest, Scheme};
use fnhost_sdk::{Request, RequestExt};

fn handle(req: Request) -> String {
    let n: usize = req.query("n").and_then(|v| v.parse().ok()).unwrap_or(1);
    let Some(url) = req.query("url") else {
        return "missing query parameter `url`\n".into();
    };
    let uri: fnhost_sdk::http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => return format!("bad url: {e}\n"),
    };
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    let mut pending = Vec::new();
    for _ in 0..n {
        let outgoing = OutgoingRequest::new(Fields::new());
        let _ = outgoing.set_scheme(Some(&Scheme::Http));
        let _ = outgoing.set_authority(Some(&authority));
        let _ = outgoing.set_path_with_query(Some(&path));
        let body = outgoing.body().expect("a fresh request has its body");
        match outgoing_handler::handle(outgoing, None) {
            Ok(future) => {
                let _ = OutgoingBody::finish(body, None);
                pending.push(future);
            }
            Err(ErrorCode::ConnectionLimitReached) => limited += 1,
            Err(_) => other += 1,
        }
    }
    for future in pending {
        let outcome = loop {
            match future.get() {
                Some(outcome) => break outcome,
                None => future.subscribe().block(),
            }
        };
        match outcome {
            Ok(Ok(_response)) => ok += 1,
            Ok(Err(ErrorCode::ConnectionLimitReached)) => limited += 1,
            _ => other += 1,
        }
    }
    format!("ok={ok} limited={limited} other={other}\n")
}

fnhost_sdk::function!(handle);
