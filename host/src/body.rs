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

/// What [`drain`] reads at most.
const DRAIN_BYTES: usize = 1 << 20;
/// How long [`drain`] reads at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops what a client is still sending — at most 1 MB, for at most a second —
/// before an early answer on a connection that then closes: closing a socket with unread data
/// resets it, and a client still writing its body would lose the answer (and could not tell a
/// `503` it may retry from a cut-off request).
pub async fn drain<B>(body: B)
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let read = async {
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > DRAIN_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}
