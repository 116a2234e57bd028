//! Moving whole bodies through `wasi:io` streams: read an incoming body until the stream
//! closes, write an outgoing one in the chunks the stream accepts, then finish it.

use std::fmt;

use crate::bindings::wasi::http::types::{ErrorCode, IncomingBody, OutgoingBody, http_error_code};
use crate::bindings::wasi::io::streams::{OutputStream, StreamError};

/// How many bytes one `blocking-read` asks for.
const READ_CHUNK: u64 = 64 * 1024;

/// A failure while reading or writing a body.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The host no longer lets us take the body or its stream (already taken or finished).
    Unavailable,
    /// The stream failed with an HTTP error (e.g. the peer went away).
    Http(ErrorCode),
    /// The stream failed with some other I/O error.
    Io(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Unavailable => f.write_str("body stream unavailable"),
            BodyError::Http(code) => write!(f, "{}", crate::convert::error_code_name(code)),
            BodyError::Io(message) => f.write_str(message),
        }
    }
}

impl From<StreamError> for BodyError {
    fn from(err: StreamError) -> Self {
        match err {
            StreamError::Closed => BodyError::Io("stream closed".into()),
            StreamError::LastOperationFailed(io) => match http_error_code(&io) {
                Some(code) => BodyError::Http(code),
                None => BodyError::Io(io.to_debug_string()),
            },
        }
    }
}

/// Reads `body` until its stream closes, then finishes it (trailers are ignored).
pub(crate) fn read_all(body: IncomingBody) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| BodyError::Unavailable)?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(err) => return Err(err.into()),
            }
        }
        // The stream is a child of the body: it must be dropped before `finish`.
    }
    drop(IncomingBody::finish(body));
    Ok(bytes)
}

/// Writes all of `bytes` to `body`, then finishes it.
pub(crate) fn write_all(body: OutgoingBody, bytes: &[u8]) -> Result<(), BodyError> {
    {
        let stream = body.write().map_err(|()| BodyError::Unavailable)?;
        write_stream(&stream, bytes)?;
        // The stream is a child of the body: it must be dropped before `finish`.
    }
    OutgoingBody::finish(body, None).map_err(BodyError::Http)
}

/// Writes in the chunks the stream grants through `check-write`, waiting when it grants none,
/// then flushes.
fn write_stream(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let permit = stream.check_write()?;
        if permit == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = usize::try_from(permit)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        stream.write(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    stream.blocking_flush()
}
