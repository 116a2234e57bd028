//! A minimal HTTP/1.1 client for the CLI's remote commands (`status`, `invocations`, `invoke`,
//! `retry`), which talk to a running fnhost (plain HTTP; fnhost itself listens without TLS).

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// What the CLI sends.
pub struct Call<'a> {
    /// HTTP method.
    pub method: http::Method,
    /// `http://HOST:PORT/path?query`.
    pub url: &'a str,
    /// Extra request headers.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Request body (empty: none).
    pub body: Bytes,
    /// Bearer token for the admin endpoints.
    pub token: Option<&'a str>,
    /// Longest wait for the whole answer.
    pub timeout: Duration,
}

impl<'a> Call<'a> {
    /// `GET url`, 30 s.
    pub fn get(url: &'a str, token: Option<&'a str>) -> Self {
        Call {
            method: http::Method::GET,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
            token,
            timeout: Duration::from_secs(30),
        }
    }
}

/// An answer, whole.
pub struct Answer {
    /// Status.
    pub status: http::StatusCode,
    /// Headers as sent.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url` with an optional bearer token; returns status and body.
pub async fn get(url: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let answer = send(Call::get(url, token)).await?;
    Ok((answer.status.as_u16(), answer.text()))
}

/// Sends one request over a fresh connection and reads the whole answer.
pub async fn send(call: Call<'_>) -> anyhow::Result<Answer> {
    let body = Full::new(call.body.clone())
        .map_err(|never| match never {})
        .boxed_unsync();
    exchange(call, body).await
}

/// [`send`] on a runtime of its own, for a command that makes one call: the answer when it
/// is a success, else `None` after printing `error: URL answered STATUS: BODY`.
pub fn send_or_report(call: Call<'_>) -> anyhow::Result<Option<Answer>> {
    let url = call.url.to_string();
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(send(call))?;
    if answer.status.is_success() {
        return Ok(Some(answer));
    }
    eprintln!(
        "error: {url} answered {}: {}",
        answer.status,
        answer.text().trim()
    );
    Ok(None)
}

/// [`send`] with the file at `path` as the body, streamed in 64 KB pieces: never held whole.
pub async fn send_file(call: Call<'_>, path: &std::path::Path) -> anyhow::Result<Answer> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let pieces = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(http_body::Frame::data(Bytes::from(buf))), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    exchange(call, http_body_util::StreamBody::new(pieces).boxed_unsync()).await
}

/// Sends `call` with `body` over a fresh connection and reads the whole answer.
async fn exchange<B>(call: Call<'_>, body: B) -> anyhow::Result<Answer>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let url = call.url;
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported here, got {url:?}");
    }
    let authority = uri.authority().context("URL has no host")?.to_string();
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("cannot connect to {authority} (is fnhost running?)"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(call.method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, &authority);
        if let Some(t) = call.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (name, value) in call.headers {
            req = req.header(name, value);
        }
        let resp = sender.send_request(req.body(body)?).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(call.timeout, exchange)
        .await
        .with_context(|| format!("no answer from {url} within {:?}", call.timeout))?
}
