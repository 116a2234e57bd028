//! Identifiers and names shared by every layer: invocation ids, the headers fnhost sets, and
//! where its own endpoints live. A leaf: no runtime types.

/// 128 random bits, hex: unguessable, so a status URL is its own capability.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Milliseconds since the Unix epoch, on this host's clock.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `ms` since the epoch as RFC 3339 with milliseconds, UTC: how every time fnhost shows reads.
pub fn rfc3339_ms(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Where fnhost's own endpoints live.
pub const API_PREFIX: &str = "/.fnhost";

/// The part of `path` after [`API_PREFIX`] when `path` is one of fnhost's own: exactly
/// `/.fnhost` or a path under `/.fnhost/`. `/.fnhostmetrics` is not (it goes through the rules
/// and routes like any other path, so a proxy rule blocking `/.fnhost/` cannot be bypassed).
pub fn own_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(API_PREFIX)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The status resource of an invocation.
pub fn status_path(id: &str) -> String {
    format!("{API_PREFIX}/invocations/{id}")
}

/// Header names fnhost writes: on the responses it answers itself, and on the requests a guest
/// sees (the same names from a client are removed before the guest sees them).
pub mod headers {
    /// The invocation id (responses fnhost writes, and the guest's request).
    pub const INVOCATION_ID: &str = "fnhost-invocation-id";
    /// Route parameters, `application/x-www-form-urlencoded`.
    pub const PARAMS: &str = "fnhost-params";
    /// Attempt number of a background invocation, from 1.
    pub const ATTEMPT: &str = "fnhost-attempt";
    /// The function's name.
    pub const FUNCTION: &str = "fnhost-function";
    /// The deploy the function's code belongs to (when served from a deploy).
    pub const DEPLOY_ID: &str = "fnhost-deploy-id";
    /// The client's address, as `[server] trusted_proxies` decide it.
    pub const CLIENT_IP: &str = "fnhost-client-ip";
    /// `[server] site`.
    pub const SITE: &str = "fnhost-site";
    /// Country, region and city of the client, as a trusted proxy said.
    pub const GEO_COUNTRY: &str = "fnhost-geo-country";
    /// See [`GEO_COUNTRY`].
    pub const GEO_REGION: &str = "fnhost-geo-region";
    /// See [`GEO_COUNTRY`].
    pub const GEO_CITY: &str = "fnhost-geo-city";
    /// The headers the edge sets from what it knows of the client (a stored background request
    /// keeps them for its attempts).
    pub const EDGE: [&str; 5] = [CLIENT_IP, SITE, GEO_COUNTRY, GEO_REGION, GEO_CITY];
    /// Prefix of every header fnhost sets for a guest; a client's are dropped.
    pub const PREFIX: &str = "fnhost-";
}

#[cfg(test)]
mod tests {
    /// Regression (security item 3): `/.fnhost` was matched as a bare prefix, so
    /// `/.fnhostmetrics` reached the metrics and skipped `_redirects`.
    #[test]
    fn own_paths_are_exactly_fnhost_and_below() {
        assert_eq!(super::own_path("/.fnhost"), Some(""));
        assert_eq!(super::own_path("/.fnhost/"), Some("/"));
        assert_eq!(super::own_path("/.fnhost/metrics"), Some("/metrics"));
        for path in [
            "/.fnhostmetrics",
            "/.fnhosthealth",
            "/.fnhostui/",
            "/.fnhost.",
            "/x/.fnhost/",
        ] {
            assert_eq!(super::own_path(path), None, "{path}");
        }
    }

    #[test]
    fn ids_are_128_bit_hex_and_distinct() {
        let (a, b) = (super::new_id(), super::new_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
