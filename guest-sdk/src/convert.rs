//! Conversions between `wasi:http` values and the `http` crate's types: methods, schemes,
//! header fields and request URIs. No I/O beyond reading and building `fields` resources.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::bindings::wasi::http::types::{self as wasi, Fields};

/// `http::Method` from a `wasi:http` method.
pub(crate) fn method_from_wasi(method: &wasi::Method) -> Method {
    match method {
        wasi::Method::Get => Method::GET,
        wasi::Method::Head => Method::HEAD,
        wasi::Method::Post => Method::POST,
        wasi::Method::Put => Method::PUT,
        wasi::Method::Delete => Method::DELETE,
        wasi::Method::Connect => Method::CONNECT,
        wasi::Method::Options => Method::OPTIONS,
        wasi::Method::Trace => Method::TRACE,
        wasi::Method::Patch => Method::PATCH,
        // A method the host accepted is a valid token; fall back to GET only if it is not.
        wasi::Method::Other(other) => Method::from_bytes(other.as_bytes()).unwrap_or_default(),
    }
}

/// `wasi:http` method from an `http::Method`.
pub(crate) fn method_to_wasi(method: &Method) -> wasi::Method {
    match *method {
        Method::GET => wasi::Method::Get,
        Method::HEAD => wasi::Method::Head,
        Method::POST => wasi::Method::Post,
        Method::PUT => wasi::Method::Put,
        Method::DELETE => wasi::Method::Delete,
        Method::CONNECT => wasi::Method::Connect,
        Method::OPTIONS => wasi::Method::Options,
        Method::TRACE => wasi::Method::Trace,
        Method::PATCH => wasi::Method::Patch,
        ref other => wasi::Method::Other(other.as_str().to_owned()),
    }
}

/// `wasi:http` scheme from a URI scheme string.
pub(crate) fn scheme_to_wasi(scheme: &str) -> wasi::Scheme {
    match scheme {
        "http" => wasi::Scheme::Http,
        "https" => wasi::Scheme::Https,
        other => wasi::Scheme::Other(other.to_owned()),
    }
}

pub(crate) fn scheme_from_wasi(scheme: &wasi::Scheme) -> &str {
    match scheme {
        wasi::Scheme::Http => "http",
        wasi::Scheme::Https => "https",
        wasi::Scheme::Other(other) => other,
    }
}

/// The request URI: `scheme://authority/path?query` when the host gave scheme and authority,
/// else the origin form `/path?query` (`/` when the host gave no path).
pub(crate) fn uri_from_parts(
    scheme: Option<&str>,
    authority: Option<&str>,
    path_with_query: Option<&str>,
) -> Uri {
    let path_with_query = path_with_query.filter(|p| !p.is_empty()).unwrap_or("/");
    if let (Some(scheme), Some(authority)) = (scheme, authority.filter(|a| !a.is_empty())) {
        let absolute = format!("{scheme}://{authority}{path_with_query}");
        if let Ok(uri) = absolute.parse() {
            return uri;
        }
    }
    path_with_query
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// Copies a `fields` resource into a `HeaderMap`, skipping entries `http` rejects.
pub(crate) fn headers_from_fields(fields: &Fields) -> HeaderMap {
    headers_from_pairs(fields.entries())
}

/// A `HeaderMap` from `(name, value)` pairs, skipping entries `http` rejects (shared with
/// the WASI 0.3 flavour, whose `fields` resource is another type).
pub(crate) fn headers_from_pairs(entries: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(entries.len());
    for (name, value) in entries {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// A `HeaderMap`'s entries as `(name, value)` pairs, the shape `fields.from-list` takes.
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// Builds a `fields` resource from a `HeaderMap`. Headers the host forbids (hop-by-hop ones
/// such as `connection`) are dropped rather than failing the whole message.
pub(crate) fn fields_from_headers(headers: &HeaderMap) -> Fields {
    let entries = header_pairs(headers);
    Fields::from_list(&entries).unwrap_or_else(|_| {
        let fields = Fields::new();
        for (name, value) in &entries {
            // Forbidden or invalid: skip this one header, keep the rest.
            let _ = fields.append(name, value);
        }
        fields
    })
}

/// The error code as WASI names it, e.g. `HttpRequestDenied` or `DnsError(...)`.
pub(crate) fn error_code_name(code: &wasi::ErrorCode) -> String {
    let debug = format!("{code:?}");
    debug
        .strip_prefix("ErrorCode::")
        .map(str::to_owned)
        .unwrap_or(debug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_when_host_gives_only_the_path() {
        assert_eq!(uri_from_parts(None, None, Some("/a/b?x=1")), "/a/b?x=1");
        assert_eq!(uri_from_parts(None, Some("example.com"), Some("/a")), "/a");
        assert_eq!(uri_from_parts(None, None, None), "/");
    }

    #[test]
    fn absolute_form_when_host_gives_scheme_and_authority() {
        let uri = uri_from_parts(
            Some(scheme_from_wasi(&wasi::Scheme::Http)),
            Some("127.0.0.1:8888"),
            Some("/f?q=1"),
        );
        assert_eq!(uri, "http://127.0.0.1:8888/f?q=1");
        assert_eq!(uri.path(), "/f");
        assert_eq!(uri.query(), Some("q=1"));
    }

    #[test]
    fn unparsable_authority_falls_back_to_the_path() {
        let uri = uri_from_parts(Some("https"), Some("bad host"), Some("/p"));
        assert_eq!(uri, "/p");
    }

    #[test]
    fn methods_round_trip() {
        for method in [
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            assert_eq!(method_from_wasi(&method_to_wasi(&method)), method);
        }
    }
}
