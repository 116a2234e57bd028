//! fnhost's own outbound HTTP client (destination deliveries), on wasmtime-wasi-http's
//! default client: HTTP and HTTPS.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

/// POSTs a JSON document to `url` with wasmtime-wasi-http's client (HTTP and HTTPS), for
/// destination deliveries; returns the status. `timeout` bounds connect, first byte and the
/// whole exchange.
pub async fn post_json(
    url: &http::Uri,
    json: String,
    extra: &[(String, String)],
    timeout: Duration,
) -> Result<u16, String> {
    let authority = url
        .authority()
        .ok_or_else(|| format!("{url} has no host"))?
        .to_string();
    let mut request = http::Request::post(url.clone())
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("fnhost/", env!("CARGO_PKG_VERSION")),
        )
        .body(
            http_body_util::Full::new(Bytes::from(json))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| e.to_string())?;
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value.as_str()),
        ) {
            request.headers_mut().insert(name, value);
        }
    }
    let options = wasmtime_wasi_http::RequestOptions {
        connect_timeout: Some(timeout),
        first_byte_timeout: Some(timeout),
        between_bytes_timeout: Some(timeout),
    };
    let exchange = async {
        let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let drain = async {
            let _ = response.into_body().collect().await;
        };
        let _ = tokio::join!(drain, io);
        Ok(status)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
