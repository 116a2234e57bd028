//! A function built against `fnhost:function@0.1.0`, the world the SDK shipped before
//! `schedule` was added to `settings` in 0.2.0. Its `describe` returns the 0.1 record (a route
//! and a method); fnhost must still read it. It answers `world 0.1 PATH`.

wit_bindgen::generate!({
    path: "wit",
    world: "fnhost:function/function",
    generate_all,
});

use exports::fnhost::function::config::{Guest as Config, Settings};
use exports::wasi::http::incoming_handler::Guest as Handler;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Function;

impl Config for Function {
    fn describe() -> Settings {
        Settings {
            background: Some(false),
            paths: vec!["/old/:name".into()],
            methods: vec!["GET".into()],
            timeout_ms: Some(5_000),
            memory_mb: None,
        }
    }
}

impl Handler for Function {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let text = format!(
            "world 0.1 {}\n",
            request.path_with_query().unwrap_or_default()
        );
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream taken once");
        stream
            .blocking_write_and_flush(text.as_bytes())
            .expect("client went away");
        drop(stream);
        OutgoingBody::finish(body, None).expect("body finished once");
    }
}

export!(Function);
