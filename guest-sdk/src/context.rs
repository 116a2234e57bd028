//! [`Context`]: what a Netlify function reads from `context`, from the headers fnhost sets on
//! every request (clients cannot set them: fnhost drops any `fnhost-*` header a client sends).
//! Pure code: no WASI calls.

use std::net::IpAddr;

use crate::Request;
use crate::request::RequestExt;

/// The client's address (`[server] trusted_proxies` decides how far `X-Forwarded-For` is
/// believed).
pub const CLIENT_IP_HEADER: &str = "fnhost-client-ip";
/// `[server] site`: the site's name.
pub const SITE_HEADER: &str = "fnhost-site";
/// Country code a trusted proxy set (`x-country` or `cf-ipcountry`).
pub const GEO_COUNTRY_HEADER: &str = "fnhost-geo-country";
/// Region a trusted proxy set (`x-region`).
pub const GEO_REGION_HEADER: &str = "fnhost-geo-region";
/// City a trusted proxy set (`x-city`).
pub const GEO_CITY_HEADER: &str = "fnhost-geo-city";

/// Where the client is, as a trusted proxy in front of fnhost said (fnhost has no geo database
/// of its own): empty unless such a proxy sets `x-country`, `x-region`, `x-city` (or
/// Cloudflare's `cf-ipcountry`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geo {
    /// ISO 3166 country code, as the proxy wrote it (`"FR"`).
    pub country: Option<String>,
    /// Region or subdivision.
    pub region: Option<String>,
    /// City.
    pub city: Option<String>,
}

/// The context of one invocation: Netlify's `context` members, read from the request.
///
/// ```
/// use fnhost_sdk::{Request, RequestExt};
///
/// let req: Request = fnhost_sdk::http::Request::builder()
///     .header("fnhost-client-ip", "203.0.113.7")
///     .header("fnhost-invocation-id", "6f1c")
///     .header("fnhost-params", "id=42")
///     .header("cookie", "theme=dark; session=\"abc\"")
///     .header("fnhost-geo-country", "FR")
///     .body(Vec::new())
///     .unwrap();
/// let ctx = req.context();
/// assert_eq!(ctx.ip, Some("203.0.113.7".parse().unwrap()));
/// assert_eq!(ctx.request_id.as_deref(), Some("6f1c"));
/// assert_eq!(ctx.param("id"), Some("42"));
/// assert_eq!(ctx.cookie("session"), Some("abc"));
/// assert_eq!(ctx.geo.country.as_deref(), Some("FR"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// `context.ip`: the client's address.
    pub ip: Option<IpAddr>,
    /// `context.requestId`: the invocation id (also in a background function's status URL).
    pub request_id: Option<String>,
    /// Which attempt this is (background functions; 1 for the first).
    pub attempt: Option<u32>,
    /// `context.params`: the route parameters, in route order.
    pub params: Vec<(String, String)>,
    /// `context.cookies`: the request's cookies, in order (values unquoted, not decoded).
    pub cookies: Vec<(String, String)>,
    /// `context.deploy.id`: the deploy this code was published in.
    pub deploy_id: Option<String>,
    /// `context.site.name`: `[server] site`.
    pub site: Option<String>,
    /// `context.geo`, from a trusted proxy's headers.
    pub geo: Geo,
    /// The trace this invocation is part of (32 hex digits), from the W3C `traceparent` the
    /// request carries: put it in log lines to find them from a trace. With fnhost's traces on,
    /// the parent it names is fnhost's `run` span, so a guest's own spans nest under it.
    pub trace_id: Option<String>,
}

impl Context {
    /// The context of `req`.
    pub fn of(req: &Request) -> Context {
        let header = |name: &str| {
            let value = req.headers().get(name)?.to_str().ok()?.trim();
            (!value.is_empty()).then(|| value.to_string())
        };
        Context {
            ip: header(CLIENT_IP_HEADER).and_then(|ip| ip.parse().ok()),
            request_id: req.invocation_id().map(str::to_string),
            attempt: req.attempt(),
            params: req.params(),
            cookies: cookies(req),
            deploy_id: req.deploy_id().map(str::to_string),
            site: header(SITE_HEADER),
            geo: Geo {
                country: header(GEO_COUNTRY_HEADER),
                region: header(GEO_REGION_HEADER),
                city: header(GEO_CITY_HEADER),
            },
            trace_id: header("traceparent").as_deref().and_then(trace_id),
        }
    }

    /// The route parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        find(&self.params, name)
    }

    /// The first cookie named `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        find(&self.cookies, name)
    }
}

/// The trace id of a W3C `traceparent` (`00-TRACE-SPAN-FLAGS`); none when malformed or zero.
fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (version, trace) = (parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex(version, 2) && version != "ff" && hex(trace, 32) && trace.bytes().any(|b| b != b'0'))
        .then(|| trace.to_string())
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    (pairs.iter().find(|(k, _)| k == name)).map(|(_, v)| v.as_str())
}

/// Every `Cookie` header's `name=value` pairs, in order (RFC 6265 §5.4: `; `-separated; a
/// value may be in double quotes).
fn cookies(req: &Request) -> Vec<(String, String)> {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let value = value.trim();
            let value =
                (value.strip_prefix('"').and_then(|v| v.strip_suffix('"'))).unwrap_or(value);
            (!name.trim().is_empty()).then(|| (name.trim().to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_form;

    #[test]
    fn an_empty_request_has_an_empty_context() {
        let req: Request = http::Request::new(Vec::new());
        assert_eq!(Context::of(&req), Context::default());
    }

    #[test]
    fn cookies_from_several_headers_in_order() {
        let req: Request = http::Request::builder()
            .header("cookie", "a=1; b=\"two words\"")
            .header("cookie", "a=3;=nameless; c=")
            .body(Vec::new())
            .unwrap();
        let ctx = Context::of(&req);
        assert_eq!(
            ctx.cookies,
            [
                ("a".to_string(), "1".to_string()),
                ("b".into(), "two words".into()),
                ("a".into(), "3".into()),
                ("c".into(), "".into())
            ]
        );
        assert_eq!(ctx.cookie("a"), Some("1"));
        assert_eq!(ctx.cookie("zz"), None);
    }

    #[test]
    fn the_trace_id_comes_from_a_well_formed_traceparent_only() {
        let with = |tp: &str| {
            let req: Request = http::Request::builder()
                .header("traceparent", tp)
                .body(Vec::new())
                .unwrap();
            Context::of(&req).trace_id
        };
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            with(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        assert_eq!(
            with("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            with("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(with("garbage"), None);
    }

    #[test]
    fn a_bad_address_is_none_and_parse_form_is_shared() {
        let req: Request = http::Request::builder()
            .header(CLIENT_IP_HEADER, "not-an-ip")
            .header("fnhost-params", "x=%2F")
            .header(SITE_HEADER, "shop")
            .body(Vec::new())
            .unwrap();
        let ctx = Context::of(&req);
        assert_eq!(ctx.ip, None);
        assert_eq!(ctx.param("x"), Some("/"));
        assert_eq!(ctx.site.as_deref(), Some("shop"));
        assert_eq!(parse_form("x=%2F"), [("x".to_string(), "/".to_string())]);
    }
}
