//! `IntoResponse`: the few types a handler may return, each turned into a [`Response`] in
//! this one place.

use std::fmt::Display;

use http::{HeaderValue, StatusCode, header::CONTENT_TYPE};

use crate::Response;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Something a handler can return.
///
/// Implemented for [`Response`], `String`, `&'static str`, `(StatusCode, String)`,
/// `(StatusCode, &'static str)` and `Result<T: IntoResponse, E: Display>` (an `Err` becomes a
/// `500` whose body is the error's text). Text bodies get `content-type: text/plain`.
pub trait IntoResponse {
    /// Converts `self` into a response.
    fn into_response(self) -> Response;

    /// The response, and work to run once it has been sent ([`WaitUntil`]). Not meant to be
    /// overridden elsewhere.
    #[doc(hidden)]
    fn into_response_then(self) -> (Response, Option<Box<dyn FnOnce()>>)
    where
        Self: Sized,
    {
        (self.into_response(), None)
    }
}

/// A response, and work to do after it has been sent: fnhost's `waitUntil` (as in Netlify's
/// `context.waitUntil`, Vercel's and Cloudflare's `waitUntil`). Made with [`wait_until`].
///
/// The client gets the whole response first; then `work` runs in the same instance, within the
/// same budget (`timeout`), and is stopped at the budget like any other work.
pub struct WaitUntil<R> {
    response: R,
    work: Box<dyn FnOnce()>,
}

/// Answers with `response` first, then runs `work` — a Slack command acknowledged within its
/// 3 s, a webhook answered before the slow call it triggers:
///
/// ```no_run
/// use fnhost_sdk::{Request, WaitUntil, fetch, wait_until};
///
/// fn handle(req: Request) -> WaitUntil<&'static str> {
///     let payload = req.into_body();
///     wait_until("accepted\n", move || {
///         let report = fnhost_sdk::http::Request::post("https://hooks.example.com/report")
///             .body(payload)
///             .expect("a valid request");
///         let _ = fetch(report);
///     })
/// }
/// fnhost_sdk::function!(handle);
/// ```
pub fn wait_until<R: IntoResponse>(response: R, work: impl FnOnce() + 'static) -> WaitUntil<R> {
    WaitUntil {
        response,
        work: Box::new(work),
    }
}

impl<R: IntoResponse> IntoResponse for WaitUntil<R> {
    /// The response alone; `work` is dropped unrun (only the host side runs it, after sending).
    fn into_response(self) -> Response {
        self.response.into_response()
    }

    fn into_response_then(self) -> (Response, Option<Box<dyn FnOnce()>>) {
        (self.response.into_response(), Some(self.work))
    }
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        (StatusCode::OK, self).into_response()
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        (StatusCode::OK, self).into_response()
    }
}

impl IntoResponse for (StatusCode, String) {
    fn into_response(self) -> Response {
        text(self.0, self.1.into_bytes())
    }
}

impl IntoResponse for (StatusCode, &'static str) {
    fn into_response(self) -> Response {
        text(self.0, self.1.as_bytes().to_vec())
    }
}

impl<T: IntoResponse, E: Display> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(ok) => ok.into_response(),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        }
    }
}

fn text(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_200_text() {
        let response = "hi".into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], TEXT_PLAIN);
        assert_eq!(response.body(), b"hi");
        assert_eq!(String::from("yo").into_response().body(), b"yo");
    }

    #[test]
    fn status_tuples_keep_their_status() {
        let response = (StatusCode::NOT_FOUND, "nope").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.body(), b"nope");
    }

    #[test]
    fn errors_become_500_with_their_text() {
        let result: Result<&'static str, String> = Err("database is down".into());
        let response = result.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.body(), b"database is down");
    }

    #[test]
    fn responses_pass_through() {
        let response = Response::new(b"raw".to_vec()).into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().is_empty());
    }

    #[test]
    fn wait_until_hands_over_the_response_and_the_work() {
        let ran = std::rc::Rc::new(std::cell::Cell::new(false));
        let flag = ran.clone();
        let (response, work) =
            crate::wait_until("done", move || flag.set(true)).into_response_then();
        assert_eq!(response.body(), b"done");
        assert!(!ran.get(), "nothing runs before the response is sent");
        work.expect("work to run after")();
        assert!(ran.get());
        let (_, none) = "plain".into_response_then();
        assert!(none.is_none());
    }
}
