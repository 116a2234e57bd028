//! A WASI 0.3 test guest (`wasi:http/service@0.3.0`, on the `wasip3` crate). The last path
//! segment picks the behaviour:
//!
//! - `echo`: the request body (and trailers) streamed straight back as the response body;
//! - `stream?n=N&ms=M`: N lines, M ms apart (the response starts before its body ends);
//! - `trailers`: a body, then a trailer `x-checksum` (announced in `Trailer`);
//! - `spin`: loops in wasm forever; `sleep`: waits an hour in a host call; `pending`: awaits
//!   a stream nothing ever writes (each prints `spinning`, `sleeping`, `pending` first);
//! - `hog`: allocates until the memory cap stops it; `trap`: panics; `error`: answers with
//!   a `wasi:http` error code; `fail`: `500`; `missing`: `404`;
//! - `fetch?url=U` (repeatable): sends GETs to every U at once, answers each status and body
//!   length, one line each (the upstream body itself for a single URL);
//! - `later?ms=M`: answers at once, then prints `later done` after M ms;
//! - `print`: lines on stdout (0.3 `wasi:cli/stdout` and Rust's std) and stderr;
//! - `chatty?kb=K`: K KiB of output (what `max_log` cuts);
//! - `count`: how many requests this instance has served, this one included (and prints it);
//! - `overlap?ms=M[&url=U]`: waits M ms (then GETs U), prints `overlap ID` (ID: its
//!   `fnhost-invocation-id`) and answers `id ID max K`, K the most requests this instance has
//!   had in `overlap` at once;
//! - anything else: `hello from wasi:http@0.3 METHOD PATH`.

use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Guest);

/// Requests this instance has served (`count`): 1 every time in a fresh instance.
static SERVED: AtomicU64 = AtomicU64::new(0);
/// Requests in `overlap` now, and the most at once.
static OVERLAPPING: AtomicU64 = AtomicU64::new(0);
static MOST_OVERLAPPING: AtomicU64 = AtomicU64::new(0);

struct Guest;

impl wasip3::exports::http::handler::Guest for Guest {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query = query.to_string();
        match path.rsplit('/').next().unwrap_or_default() {
            "echo" => Ok(echo(request)),
            "stream" => Ok(stream(&query)),
            "trailers" => Ok(with_trailers()),
            "spin" => {
                println!("spinning");
                spin()
            }
            "sleep" => {
                println!("sleeping");
                wait_ms(3_600_000).await;
                Ok(text(200, "woke up"))
            }
            "pending" => {
                println!("pending");
                let (_never_written, rx) = wit_stream::new::<u8>();
                let _ = rx.collect().await;
                Ok(text(200, "the stream ended"))
            }
            "hog" => Ok(hog()),
            "trap" => panic!("trapped on purpose"),
            "error" => Err(ErrorCode::InternalError(Some("the guest says no".into()))),
            "fail" => Ok(text(500, "failing on purpose")),
            "missing" => Ok(text(404, "no such thing")),
            "fetch" => Ok(fetch(&query).await),
            "later" => Ok(later(&query)),
            "print" => Ok(print().await),
            "chatty" => Ok(chatty(&query).await),
            "overlap" => Ok(overlap(&request, &query).await),
            "count" => {
                let n = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                println!("count {n}");
                Ok(text(200, &format!("count {n}")))
            }
            _ => {
                let method = method_name(&request.get_method());
                Ok(text(
                    200,
                    &format!("hello from wasi:http@0.3 {method} {path}"),
                ))
            }
        }
    }
}

/// A response with `body` and no trailers.
fn text(status: u16, body: &str) -> Response {
    let (mut tx, rx) = wit_stream::new();
    let (_, trailers) = wit_future::new(|| Ok(None));
    let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
        .expect("valid header");
    let (response, _sent) = Response::new(headers, Some(rx), trailers);
    response.set_status_code(status).expect("valid status");
    let body = body.as_bytes().to_vec();
    wasip3::spawn_local(async move {
        tx.write_all(body).await;
    });
    response
}

fn echo(request: Request) -> Response {
    let headers = request.get_headers().clone();
    let (_, done) = wit_future::new(|| Ok(()));
    let (body, trailers) = Request::consume_body(request, done);
    let copied = Fields::new();
    if let Some(kind) = headers.get("content-type").into_iter().next() {
        let _ = copied.set("content-type", &[kind]);
    }
    let (response, _sent) = Response::new(copied, Some(body), trailers);
    response
}

fn stream(query: &str) -> Response {
    let n: u32 = param(query, "n").and_then(|v| v.parse().ok()).unwrap_or(5);
    let ms: u64 = param(query, "ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (mut tx, rx) = wit_stream::new();
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(rx), trailers);
    wasip3::spawn_local(async move {
        for i in 0..n {
            if !tx
                .write_all(format!("line {i}\n").into_bytes())
                .await
                .is_empty()
            {
                return; // the client went away
            }
            wait_ms(ms).await;
        }
    });
    response
}

fn with_trailers() -> Response {
    let (mut tx, rx) = wit_stream::new();
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    // HTTP/1.1 sends only the trailer fields the response announced in `Trailer`.
    let announced =
        Fields::from_list(&[("trailer".into(), b"x-checksum".to_vec())]).expect("valid header");
    let (response, _sent) = Response::new(announced, Some(rx), trailers);
    wasip3::spawn_local(async move {
        tx.write_all(b"body before trailers".to_vec()).await;
        drop(tx);
        let list =
            Fields::from_list(&[("x-checksum".into(), b"abc123".to_vec())]).expect("valid trailer");
        let _ = trailers_tx.write(Ok(Some(list))).await;
    });
    response
}

#[allow(clippy::empty_loop)]
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn hog() -> Response {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&held);
    }
}

async fn fetch(query: &str) -> Response {
    let urls: Vec<String> = params(query, "url");
    if urls.is_empty() {
        return text(400, "fetch needs ?url=");
    }
    if urls.len() == 1 {
        return match get(&urls[0]).await {
            Ok(upstream) => {
                let status = upstream.get_status_code();
                let (_, done) = wit_future::new(|| Ok(()));
                let (body, trailers) = Response::consume_body(upstream, done);
                let (response, _sent) = Response::new(Fields::new(), Some(body), trailers);
                response.set_status_code(status).expect("valid status");
                response
            }
            Err(code) => text(502, &format!("{code:?}")),
        };
    }
    let lines = futures::future::join_all(urls.iter().map(|url| async move {
        match get(url).await {
            Ok(upstream) => {
                let status = upstream.get_status_code();
                let (_, done) = wit_future::new(|| Ok(()));
                let (body, _trailers) = Response::consume_body(upstream, done);
                let bytes = body.collect().await;
                format!("{url} {status} {}\n", bytes.len())
            }
            Err(code) => format!("{url} error {code:?}\n"),
        }
    }))
    .await;
    text(200, &lines.concat())
}

/// A GET of `url` (`http://host[:port]/path?query` or `https://…`).
async fn get(url: &str) -> Result<Response, ErrorCode> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some(("http", rest)) => (Scheme::Http, rest),
        _ => return Err(ErrorCode::HttpRequestUriInvalid),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (request, _sent) = Request::new(Fields::new(), None, trailers, None);
    request.set_method(&Method::Get).expect("GET");
    request.set_scheme(Some(&scheme)).expect("scheme");
    request
        .set_authority(Some(authority))
        .map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    wasip3::http::client::send(request).await
}

async fn overlap(request: &Request, query: &str) -> Response {
    let id = request
        .get_headers()
        .get("fnhost-invocation-id")
        .into_iter()
        .next()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let now = OVERLAPPING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_OVERLAPPING.fetch_max(now, Ordering::SeqCst);
    wait_ms(
        param(query, "ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    )
    .await;
    if let Some(url) = param(query, "url") {
        let _ = get(&url).await;
    }
    let most = MOST_OVERLAPPING.load(Ordering::SeqCst);
    OVERLAPPING.fetch_sub(1, Ordering::SeqCst);
    println!("overlap {id}");
    text(200, &format!("id {id} max {most}"))
}

fn later(query: &str) -> Response {
    let ms: u64 = param(query, "ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    wasip3::spawn_local(async move {
        wait_ms(ms).await;
        println!("later done after {ms} ms");
    });
    text(200, "answered; finishing later")
}

async fn print() -> Response {
    stdout(b"p3 stdout line\n".to_vec()).await;
    println!("std stdout line");
    eprintln!("std stderr line");
    text(200, "printed")
}

async fn chatty(query: &str) -> Response {
    let kb: usize = param(query, "kb")
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let line = format!("{}\n", "x".repeat(1023));
    stdout(line.repeat(kb).into_bytes()).await;
    text(200, &format!("printed {kb} KiB"))
}

/// Writes `bytes` through WASI 0.3's `wasi:cli/stdout`.
async fn stdout(bytes: Vec<u8>) {
    let (mut tx, rx) = wit_stream::new();
    let done = wasip3::cli::stdout::write_via_stream(rx);
    tx.write_all(bytes).await;
    drop(tx);
    let _ = done.await;
}

async fn wait_ms(ms: u64) {
    wasip3::clocks::monotonic_clock::wait_for(ms.saturating_mul(1_000_000)).await;
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

fn param(query: &str, key: &str) -> Option<String> {
    params(query, key).into_iter().next()
}

fn params(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.replace("%3A", ":").replace("%2F", "/"))
        .collect()
}
