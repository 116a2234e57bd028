//! CORS for what fnhost answers itself: what a resolved [`Policy`] (see
//! [`crate::config::cors`]) does to a request and a response. Pure: `http` header types only,
//! no hyper, no wasmtime.
//!
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//!   without invoking the function: `204`, with the allow headers only when the origin, the
//!   method and every requested header are allowed ([`Policy::preflight`]);
//! - a request whose `Origin` is neither allowed nor the request's own origin is refused
//!   ([`Policy::allowed`], [`same_origin`]);
//! - the `Access-Control-*` headers a response lacks are added ([`Policy::decorate`]): a
//!   header the function set itself wins.

use http::{HeaderMap, HeaderValue, Method, header};

use crate::config::cors::{Origins, Policy};

impl Policy {
    /// Whether `origin` (the `Origin` request header) is allowed.
    pub fn allowed(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }

    fn method_allowed(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|list| list.iter().any(|m| m == method))
    }

    /// The headers of the `204` answering a preflight from `origin` asking for `method` and
    /// `request_headers` (the raw `Access-Control-Request-Headers`). `Vary` always; the allow
    /// headers only when all three are allowed.
    pub fn preflight(
        &self,
        origin: &str,
        method: &str,
        request_headers: Option<&str>,
    ) -> HeaderMap {
        let mut out = refused_preflight();
        let requested: Vec<String> = request_headers
            .unwrap_or("")
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let headers_ok = match &self.headers {
            None => true,
            Some(list) => requested.iter().all(|h| list.contains(h)),
        };
        if !self.allowed(origin) || !self.method_allowed(method) || !headers_ok {
            return out;
        }
        self.allow_origin(&mut out, origin);
        let methods = match &self.methods {
            Some(list) => list.join(", "),
            None => method.to_string(),
        };
        insert(&mut out, header::ACCESS_CONTROL_ALLOW_METHODS, &methods);
        let allow_headers = match &self.headers {
            Some(list) => list.join(", "),
            None => requested.join(", "),
        };
        if !allow_headers.is_empty() {
            insert(
                &mut out,
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                &allow_headers,
            );
        }
        insert(
            &mut out,
            header::ACCESS_CONTROL_MAX_AGE,
            &self.max_age.as_secs().to_string(),
        );
        out
    }

    /// Adds the CORS headers of an actual (non-preflight) response to a request from `origin`,
    /// exposing `expose` besides the configured `exposed_headers`. A header already present
    /// (set by the function) is left as it is. Nothing is added for a disallowed origin.
    pub fn decorate(&self, headers: &mut HeaderMap, origin: &str, expose: &[&str]) {
        add_vary_origin(headers);
        if !self.allowed(origin) {
            return;
        }
        if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            self.allow_origin(headers, origin);
        } else if self.credentials
            && !headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
            && headers[header::ACCESS_CONTROL_ALLOW_ORIGIN] != "*"
        {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !headers.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS) {
            let mut list: Vec<&str> = self.exposed.iter().map(String::as_str).collect();
            for e in expose {
                if !list.iter().any(|x| x.eq_ignore_ascii_case(e)) {
                    list.push(e);
                }
            }
            if !list.is_empty() {
                insert(
                    headers,
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    &list.join(", "),
                );
            }
        }
    }

    /// `Access-Control-Allow-Origin` (and `-Credentials`).
    fn allow_origin(&self, headers: &mut HeaderMap, origin: &str) {
        if self.origins == Origins::Any && !self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            insert(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The headers of a refused preflight: `Vary` only, so the browser fails the request.
pub fn refused_preflight() -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    out
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Appends `Origin` to `Vary` unless it is there (or `Vary: *`).
fn add_vary_origin(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The `Origin` request header, when present and readable.
pub fn request_origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// The method a preflight asks for: `Some` when the request is `OPTIONS` with an `Origin`
/// and an `Access-Control-Request-Method`.
pub fn preflight_method<'a>(method: &Method, headers: &'a HeaderMap) -> Option<&'a str> {
    if method != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|m| !m.is_empty())
}

/// Whether `origin` is the origin the request was sent to (its `Host`): a same-origin request
/// (browsers send `Origin` on same-origin POSTs) is never refused.
pub fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cors::tests::policies;

    fn policy(toml: &str) -> Policy {
        policies(toml).unwrap().site().unwrap().clone()
    }

    const APP: &str = "https://app.example.com";

    #[test]
    fn preflight_for_allowed_origin_has_every_header() {
        let p = policy(
            "[cors]\nallowed_origins = [\"https://app.example.com\"]\nallowed_headers = [\"Content-Type\", \"x-token\"]\nmax_age = \"1h\"\n",
        );
        let h = p.preflight(APP, "POST", Some("content-type"));
        assert_eq!(h["access-control-allow-origin"], APP);
        assert_eq!(
            h["access-control-allow-methods"],
            "GET, HEAD, POST, PUT, PATCH, DELETE"
        );
        assert_eq!(h["access-control-allow-headers"], "content-type, x-token");
        assert_eq!(h["access-control-max-age"], "3600");
        assert!(h["vary"].to_str().unwrap().contains("Origin"));
        assert!(h.get("access-control-allow-credentials").is_none());
    }

    #[test]
    fn preflight_refusals_carry_only_vary() {
        let p = policy(
            "[cors]\nallowed_origins = [\"https://app.example.com\"]\nallowed_methods = [\"post\"]\nallowed_headers = [\"content-type\"]\n",
        );
        for (origin, method, headers) in [
            ("https://evil.example", "POST", None),
            (APP, "DELETE", None),
            (APP, "POST", Some("content-type, x-secret")),
        ] {
            let h = p.preflight(origin, method, headers);
            assert_eq!(h.len(), 1, "{origin} {method} {headers:?}: {h:?}");
            assert!(h.contains_key("vary"));
        }
        assert_eq!(
            p.preflight(APP, "POST", None)["access-control-allow-methods"],
            "POST"
        );
    }

    #[test]
    fn wildcard_and_reflection() {
        let p = policy("[cors]\nallowed_origins = \"*\"\nallowed_methods = \"*\"\n");
        assert!(p.allowed("http://anything:1234"));
        let h = p.preflight("http://a.test", "PURGE", Some("X-One, x-two"));
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-allow-methods"], "PURGE");
        assert_eq!(h["access-control-allow-headers"], "x-one, x-two");
        assert_eq!(h["access-control-max-age"], "600");
    }

    #[test]
    fn decorate_fills_in_and_the_function_wins() {
        let p = policy(
            "[cors]\nallowed_origins = [\"https://app.example.com\"]\nexposed_headers = [\"x-total\"]\nallow_credentials = true\n",
        );
        let mut h = HeaderMap::new();
        p.decorate(&mut h, APP, &["fnhost-invocation-id", "location"]);
        assert_eq!(h["access-control-allow-origin"], APP);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(
            h["access-control-expose-headers"],
            "x-total, fnhost-invocation-id, location"
        );
        assert_eq!(h["vary"], "Origin");

        let mut own = HeaderMap::new();
        own.insert(
            "access-control-allow-origin",
            HeaderValue::from_static("https://other.test"),
        );
        own.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("x-mine"),
        );
        own.insert("vary", HeaderValue::from_static("Accept-Encoding"));
        p.decorate(&mut own, APP, &[]);
        assert_eq!(own["access-control-allow-origin"], "https://other.test");
        assert_eq!(own["access-control-expose-headers"], "x-mine");
        assert_eq!(own["access-control-allow-credentials"], "true");
        let vary: Vec<_> = own.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);

        let mut refused = HeaderMap::new();
        p.decorate(&mut refused, "https://evil.example", &[]);
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn request_classification() {
        let mut h = HeaderMap::new();
        h.insert("origin", HeaderValue::from_static(APP));
        assert_eq!(preflight_method(&Method::OPTIONS, &h), None);
        h.insert(
            "access-control-request-method",
            HeaderValue::from_static("POST"),
        );
        assert_eq!(preflight_method(&Method::OPTIONS, &h), Some("POST"));
        assert_eq!(preflight_method(&Method::POST, &h), None);
        assert_eq!(request_origin(&h), Some(APP));
        assert!(same_origin("http://localhost:8888", Some("localhost:8888")));
        assert!(!same_origin(
            "http://localhost:8888",
            Some("localhost:9999")
        ));
        assert!(!same_origin("null", Some("localhost")));
        assert!(!same_origin(APP, None));
    }
}
