//! `rate_limit = { … }` of `[functions.NAME]` (Netlify's `config.rateLimit`) and
//! `[server] trusted_proxies`: the values as the file writes them, checked when it is loaded.

use std::time::Duration;

use serde::Deserialize;

use super::Humantime;

/// The bounds of a rate limit, and why.
pub mod bounds {
    use std::time::Duration;

    /// Requests per window: 0 would refuse everything (remove the function instead).
    pub const WINDOW_LIMIT: (u64, u64) = (1, 1_000_000);
    /// The window: a second at least (Retry-After counts whole seconds), an hour at most
    /// (counters of a longer window would have to outlive reloads to mean anything).
    pub const WINDOW_SIZE: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(3600));
}

/// `rate_limit = { window_limit = 100, window_size = "60s", aggregate_by = ["ip", "domain"],
/// action = "rate_limit" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests one key may make per window.
    pub window_limit: u64,
    /// The window.
    pub window_size: Humantime,
    /// What makes a key: the client address, the `Host` the request names, or both
    /// [default: both].
    #[serde(default = "both")]
    pub aggregate_by: Vec<Aggregate>,
    /// What a limited request gets [default: `429` with `Retry-After`].
    #[serde(default)]
    pub action: RateAction,
}

fn both() -> Vec<Aggregate> {
    vec![Aggregate::Ip, Aggregate::Domain]
}

/// One part of a rate-limit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The client address (see `trusted_proxies`); IPv6 clients by their /64.
    Ip,
    /// The request's `Host`, without its port.
    Domain,
}

/// `action = "rate_limit"` or `action = { rewrite = "/limited" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateAction {
    /// `429 Too Many Requests` with `Retry-After`.
    #[default]
    RateLimit,
    /// Serve this path of the site instead (routed like any request; never limited again).
    Rewrite(String),
}

impl RateLimitConfig {
    /// Refuses values that would turn the limit off or make it mean nothing; `key` names the
    /// table (`functions.api.rate_limit`).
    pub fn check(&self, key: &str) -> Result<(), String> {
        let (lo, hi) = bounds::WINDOW_LIMIT;
        if !(lo..=hi).contains(&self.window_limit) {
            return Err(format!(
                "{key}.window_limit = {} is out of range: accepted from {lo} to {hi}",
                self.window_limit
            ));
        }
        let (lo, hi) = bounds::WINDOW_SIZE;
        if !(lo..=hi).contains(&self.window_size.0) {
            return Err(format!(
                "{key}.window_size = {} is out of range: accepted from {} to {}",
                humantime::format_duration(self.window_size.0),
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            ));
        }
        if self.aggregate_by.is_empty() {
            return Err(format!(
                "{key}.aggregate_by is empty: accepted \"ip\", \"domain\" or both"
            ));
        }
        if let RateAction::Rewrite(to) = &self.action
            && (!to.starts_with('/') || to.starts_with("//"))
        {
            return Err(format!(
                "{key}.action = {{ rewrite = {to:?} }}: the rewrite target must be a path of \
                 this site, like \"/limited\""
            ));
        }
        Ok(())
    }

    /// The window as a duration.
    pub fn window(&self) -> Duration {
        self.window_size.0
    }
}

/// One `trusted_proxies` entry: an address (`"127.0.0.1"`, `"::1"`) or a network
/// (`"10.0.0.0/8"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(pub ipnet::IpNet);

impl std::str::FromStr for TrustedProxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(|net| TrustedProxy(net.trunc()))
            .map_err(|_| {
                format!(
                    "invalid trusted proxy {s:?}: expected an address (\"127.0.0.1\") or a \
                     network (\"10.0.0.0/8\", \"fd00::/8\")"
                )
            })
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RateLimitConfig, String> {
        #[derive(Deserialize)]
        struct T {
            rate_limit: RateLimitConfig,
        }
        let t: T = toml::from_str(text).map_err(|e| e.message().to_string())?;
        t.rate_limit.check("rate_limit")?;
        Ok(t.rate_limit)
    }

    #[test]
    fn both_actions_and_the_defaults_parse() {
        let r = parse("rate_limit = { window_limit = 10, window_size = \"60s\" }").unwrap();
        assert_eq!(r.aggregate_by, vec![Aggregate::Ip, Aggregate::Domain]);
        assert_eq!(r.action, RateAction::RateLimit);
        assert_eq!(r.window(), Duration::from_secs(60));
        let r = parse(
            "rate_limit = { window_limit = 1, window_size = \"1s\", aggregate_by = [\"ip\"], \
             action = { rewrite = \"/limited\" } }",
        )
        .unwrap();
        assert_eq!(r.action, RateAction::Rewrite("/limited".into()));
        let r = parse(
            "rate_limit = { window_limit = 1, window_size = \"1s\", action = \"rate_limit\" }",
        )
        .unwrap();
        assert_eq!(r.action, RateAction::RateLimit);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("rate_limit = { window_limit = 0, window_size = \"60s\" }").unwrap_err();
        assert!(
            e.contains("rate_limit.window_limit = 0 is out of range"),
            "{e}"
        );
        let e = parse("rate_limit = { window_limit = 5, window_size = \"2h\" }").unwrap_err();
        assert!(
            e.contains("rate_limit.window_size = 2h is out of range"),
            "{e}"
        );
        let e = parse(
            "rate_limit = { window_limit = 5, window_size = \"1m\", action = { rewrite = \"https://x\" } }",
        )
        .unwrap_err();
        assert!(e.contains("must be a path of this site"), "{e}");
        let e =
            parse("rate_limit = { window_limit = 5, window_size = \"1m\", action = \"block\" }")
                .unwrap_err();
        assert!(e.contains("unknown variant `block`"), "{e}");
        let e = parse(
            "rate_limit = { window_limit = 5, window_size = \"1m\", aggregate_by = [\"user\"] }",
        )
        .unwrap_err();
        assert!(e.contains("unknown variant `user`"), "{e}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let p: TrustedProxy = "127.0.0.1".parse().unwrap();
        assert_eq!(p.0.to_string(), "127.0.0.1/32");
        let p: TrustedProxy = "10.1.2.3/8".parse().unwrap();
        assert_eq!(p.0.to_string(), "10.0.0.0/8");
        let p: TrustedProxy = "fd00::/8".parse().unwrap();
        assert_eq!(p.0.to_string(), "fd00::/8");
        let e = "10.0.0.0/33".parse::<TrustedProxy>().unwrap_err();
        assert!(e.contains("invalid trusted proxy \"10.0.0.0/33\""), "{e}");
    }
}
