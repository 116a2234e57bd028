//! A WASI 0.3 function in Rust: `GET ?name=Ada` → `Hello, Ada from WASI 0.3!`, the body
//! streamed from a task the handler spawned after returning its response.
//!
//! `cargo build --release --target wasm32-wasip2` (or `fnhost build`) makes a component that
//! exports `wasi:http/handler@0.3.0`; fnhost serves it beside 0.2 functions.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Hello);

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let target = request.get_path_with_query().unwrap_or_default();
        let name = target
            .split_once('?')
            .and_then(|(_, query)| query.split('&').find_map(|p| p.strip_prefix("name=")))
            .unwrap_or("world")
            .to_string();
        let headers =
            Fields::from_list(&[("content-type".into(), b"text/plain; charset=utf-8".to_vec())])
                .expect("a valid header");
        let (mut body, contents) = wit_stream::new();
        let (_, trailers) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(contents), trailers);
        // The response goes out now; its body is written while the client reads it.
        wasip3::spawn_local(async move {
            body.write_all(format!("Hello, {name} from WASI 0.3!\n").into_bytes())
                .await;
        });
        Ok(response)
    }
}
