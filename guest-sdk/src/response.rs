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
}
