//! Test guest: what the sandbox lets it see. By default it lists the environment variables it
//! sees, `KEY=VALUE` per line, sorted. `?read=PATH` answers the file's bytes (or `403` with the
//! error), `?write=PATH` tries to create the file (`200 wrote` or `403` with the error),
//! `?list=DIR` lists a directory's names, sorted; `?context=` answers the SDK's `Context` of
//! the request (`{:?}`).

use fnhost_sdk::http::StatusCode;
use fnhost_sdk::{Request, RequestExt, Response, http};

fn handle(req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let (op, path) = query.split_once('=').unwrap_or(("", ""));
    let path = percent_decode(path);
    let done = match op {
        "read" => std::fs::read(&path),
        "write" => std::fs::write(&path, b"written by a guest").map(|()| b"wrote".to_vec()),
        "list" => std::fs::read_dir(&path).map(|dir| {
            let mut names: Vec<String> = dir
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned() + "\n")
                .collect();
            names.sort();
            names.concat().into_bytes()
        }),
        "context" => Ok(format!("{:?}", req.context()).into_bytes()),
        _ => Ok(env().into_bytes()),
    };
    let (status, body) = match done {
        Ok(bytes) => (StatusCode::OK, bytes),
        Err(e) => (
            StatusCode::FORBIDDEN,
            format!("{op} {path}: {e}\n").into_bytes(),
        ),
    };
    http::Response::builder()
        .status(status)
        .body(body)
        .expect("valid response")
}

fn env() -> String {
    let mut vars: Vec<String> = std::env::vars()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    vars.sort();
    vars.concat()
}

/// `%2F` → `/` and the like; enough for the paths the tests send.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fnhost_sdk::function!(handle);
