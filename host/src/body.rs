//! The HTTP body type every layer passes around (guest responses, fnhost's own answers, proxied
//! upstream bodies), and its error. A leaf: it names no wasmtime, hyper-server or sqlx type.

use bytes::Bytes;
use http_body_util::BodyExt;

/// A response body: streaming out of a guest or an upstream, or complete.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// An error while streaming a body; the text is for logs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
