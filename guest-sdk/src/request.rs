//! `RequestExt`: what a handler reads from a [`Request`] beyond the `http` crate's API —
//! query parameters, route parameters, fnhost's invocation headers — plus the
//! `application/x-www-form-urlencoded` decoding they share. Pure code: no WASI calls.

use crate::Request;

/// Request header in which fnhost passes route parameters (`:id` segments), form-encoded.
pub const PARAMS_HEADER: &str = "fnhost-params";
/// Request header carrying the invocation's unique id.
pub const INVOCATION_ID_HEADER: &str = "fnhost-invocation-id";
/// Request header carrying the attempt number (1 for the first run of a background function).
pub const ATTEMPT_HEADER: &str = "fnhost-attempt";
/// Request header carrying the id of the deploy this code is (absent when fnhost serves a
/// directory rather than a deploy).
pub const DEPLOY_ID_HEADER: &str = "fnhost-deploy-id";

/// Convenience accessors on [`Request`].
///
/// ```
/// use fnhost_sdk::{Request, RequestExt};
///
/// let req: Request = fnhost_sdk::http::Request::builder()
///     .uri("/api/items/42?q=a+b%21")
///     .header("fnhost-params", "id=42")
///     .body(b"hi".to_vec())
///     .unwrap();
/// assert_eq!(req.query("q").as_deref(), Some("a b!"));
/// assert_eq!(req.param("id").as_deref(), Some("42"));
/// assert_eq!(req.text(), "hi");
/// ```
pub trait RequestExt {
    /// The first query parameter named `key`, percent-decoded (`+` read as a space).
    fn query(&self, key: &str) -> Option<String>;
    /// The route parameter named `key` (e.g. `id` for a route `/items/:id`).
    fn param(&self, key: &str) -> Option<String>;
    /// Every route parameter, in route order.
    fn params(&self) -> Vec<(String, String)>;
    /// The invocation's unique id, as assigned by fnhost.
    fn invocation_id(&self) -> Option<&str>;
    /// Which attempt this is (1 for the first); fnhost retries failed background functions.
    fn attempt(&self) -> Option<u32>;
    /// The deploy this code was published in (`fnhost deploy`); `None` when fnhost serves a
    /// local directory.
    fn deploy_id(&self) -> Option<&str>;
    /// The body as text; invalid UTF-8 is replaced with `U+FFFD`.
    fn text(&self) -> String;
    /// Netlify's `context`: client address, request id, attempt, params, cookies, deploy,
    /// site and geo, in one value.
    fn context(&self) -> crate::Context;
}

impl RequestExt for Request {
    fn query(&self, key: &str) -> Option<String> {
        lookup(self.uri().query()?, key)
    }

    fn param(&self, key: &str) -> Option<String> {
        lookup(header_str(self, PARAMS_HEADER)?, key)
    }

    fn params(&self) -> Vec<(String, String)> {
        header_str(self, PARAMS_HEADER)
            .map(parse_form)
            .unwrap_or_default()
    }

    fn invocation_id(&self) -> Option<&str> {
        header_str(self, INVOCATION_ID_HEADER)
    }

    fn attempt(&self) -> Option<u32> {
        header_str(self, ATTEMPT_HEADER)?.trim().parse().ok()
    }

    fn deploy_id(&self) -> Option<&str> {
        header_str(self, DEPLOY_ID_HEADER)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }

    fn context(&self) -> crate::Context {
        crate::Context::of(self)
    }
}

fn header_str<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name)?.to_str().ok()
}

fn lookup(form: &str, key: &str) -> Option<String> {
    parse_form(form)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Splits an `application/x-www-form-urlencoded` string (`a=1&b=x%20y`) into decoded pairs.
/// A pair without `=` has an empty value; empty pairs are skipped.
pub fn parse_form(form: &str) -> Vec<(String, String)> {
    form.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// Percent-decodes one form component, reading `+` as a space. Malformed escapes are kept as
/// written; invalid UTF-8 is replaced with `U+FFFD`.
pub fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i + 1..i + 3) {
            Some(&[hi, lo]) if bytes[i] == b'%' => hex(hi).zip(hex(lo)),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some((hi, lo))) => {
                out.push(hi << 4 | lo);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Vec::new()).unwrap()
    }

    #[test]
    fn decodes_percent_escapes_and_plus() {
        assert_eq!(decode_component("a%20b+c%2Bd"), "a b c+d");
        assert_eq!(decode_component("%C3%A9"), "é");
    }

    #[test]
    fn keeps_malformed_escapes() {
        assert_eq!(decode_component("100%"), "100%");
        assert_eq!(decode_component("%zz%4"), "%zz%4");
        assert_eq!(decode_component("%41"), "A");
    }

    #[test]
    fn parses_pairs_without_values_and_skips_empty_ones() {
        assert_eq!(
            parse_form("a=1&&flag&b=x%3Dy"),
            [
                ("a".into(), "1".into()),
                ("flag".into(), "".into()),
                ("b".into(), "x=y".into())
            ]
        );
    }

    #[test]
    fn query_returns_first_match() {
        let req = request("/p?n=1&n=2&name=a+b", &[]);
        assert_eq!(req.query("n").as_deref(), Some("1"));
        assert_eq!(req.query("name").as_deref(), Some("a b"));
        assert_eq!(req.query("missing"), None);
        assert_eq!(request("/p", &[]).query("n"), None);
    }

    #[test]
    fn params_come_from_the_fnhost_header() {
        let req = request("/items/42", &[(PARAMS_HEADER, "id=42&name=a%20b")]);
        assert_eq!(req.param("id").as_deref(), Some("42"));
        assert_eq!(req.param("name").as_deref(), Some("a b"));
        assert_eq!(req.params().len(), 2);
        assert_eq!(request("/", &[]).param("id"), None);
    }

    #[test]
    fn invocation_headers() {
        let req = request("/", &[(INVOCATION_ID_HEADER, "abc"), (ATTEMPT_HEADER, "3")]);
        assert_eq!(req.invocation_id(), Some("abc"));
        assert_eq!(req.attempt(), Some(3));
        assert_eq!(request("/", &[(ATTEMPT_HEADER, "x")]).attempt(), None);
    }
}
