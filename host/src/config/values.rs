//! Values of `fnhost.toml` keys that parse from a string: durations, sizes, routes, methods,
//! URLs, outbound rules, CORS names. Each error quotes the value and says what is accepted.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::pattern::Pattern;

/// A key that takes either one value or a list.
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr<T> {
            One(T),
            Many(Vec<T>),
        }
        // `untagged` hides the inner error; parse as a generic value first to keep it.
        let value = toml::Value::deserialize(d)?;
        let parsed = match value {
            toml::Value::Array(items) => items
                .into_iter()
                .map(T::deserialize)
                .collect::<Result<Vec<T>, _>>()
                .map(Repr::Many),
            other => T::deserialize(other).map(Repr::One),
        };
        match parsed.map_err(serde::de::Error::custom)? {
            Repr::One(v) => Ok(OneOrMany(vec![v])),
            Repr::Many(v) => Ok(OneOrMany(v)),
        }
    }
}

/// Implements `Deserialize` from a string through `FromStr`, keeping its error text.
macro_rules! from_str_deserialize {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The longest duration fnhost.toml accepts (ten years).
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// A duration written `500ms`, `10s`, `1m`, `2h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Humantime(pub Duration);
from_str_deserialize!(Humantime);

impl std::str::FromStr for Humantime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {s:?}: expected a whole number followed by ms, s, m, h or d \
                 (e.g. \"10s\", \"15m\")"
            )
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let secs = |per: u64| n.checked_mul(per).map(Duration::from_secs).ok_or_else(bad);
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => secs(60)?,
            "h" => secs(3600)?,
            "d" => secs(86_400)?,
            _ => return Err(bad()),
        };
        if d > MAX_DURATION {
            return Err(format!(
                "duration {s:?} is too long: at most 3650d (budgets and timers past it overflow)"
            ));
        }
        Ok(Humantime(d))
    }
}

/// A size written `256KB`, `6MB`, `1GB` (binary units: 1 KB = 1024 bytes), or a bare byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::Integer(n) if n >= 0 => Ok(ByteSize(n as u64)),
            toml::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "invalid size {other}: expected a string such as \"128MB\" or a byte count"
            ))),
        }
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid size {s:?}: expected a number followed by B, KB, MB or GB (e.g. \"128MB\")"
            )
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1024,
            "M" | "MB" | "MIB" => 1024 * 1024,
            "G" | "GB" | "GIB" => 1024 * 1024 * 1024,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

/// A route path, parsed once into the [`Pattern`] the router keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath(pub Pattern);
from_str_deserialize!(RoutePath);

impl std::str::FromStr for RoutePath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Pattern::parse(s).map(RoutePath).map_err(|e| e.to_string())
    }
}

/// An HTTP method name, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(pub String);
from_str_deserialize!(Method);

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let up = s.trim().to_ascii_uppercase();
        if up.is_empty() || !up.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!(
                "invalid method {s:?}: expected a name such as \"GET\" or \"POST\""
            ));
        }
        Ok(Method(up))
    }
}

/// An `http://` or `https://` URL (destinations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url(pub http::Uri);
from_str_deserialize!(Url);

impl std::str::FromStr for Url {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(_)) => Ok(Url(uri)),
            _ => Err(format!(
                "invalid URL {s:?}: expected http://host[:port]/path or https://..."
            )),
        }
    }
}

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, where scheme, host and port may
/// each be `*`. An entry naming an IP literal or `localhost` also allows that (non-public)
/// address; names otherwise must resolve to public addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    /// `http`, `https` or `*`.
    pub scheme: String,
    /// Host name or IP literal (lower case), or `*`.
    pub host: String,
    /// Port; `None` = the scheme's default; `Some(0)` = any.
    pub port: Option<u16>,
}
from_str_deserialize!(OutboundRule);

impl std::str::FromStr for OutboundRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid outbound host {s:?}: {why} (expected \"https://api.example.com\", \"http://127.0.0.1:8080\" or \"https://*:*\")"
            )
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "*") {
            return Err(bad("scheme must be http, https or *"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("no path allowed"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            None => None,
            Some("*") => Some(0),
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("bad port"))?,
            ),
        };
        Ok(OutboundRule {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(0) => write!(f, ":*"),
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// An origin as a browser sends it: `scheme://host[:port]`, no path; or `*`, or `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigin(pub String);
from_str_deserialize!(CorsOrigin);

impl std::str::FromStr for CorsOrigin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" || s == "null" {
            return Ok(CorsOrigin(s.to_string()));
        }
        let bad = |why: &str| {
            format!(
                "invalid origin {s:?}: {why} (expected \"https://app.example.com\", \"http://localhost:3000\" or \"*\")"
            )
        };
        let (scheme, authority) = s.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(bad("bad scheme"));
        }
        if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
            return Err(bad("an origin has a host and no path or trailing slash"));
        }
        Ok(CorsOrigin(s.to_string()))
    }
}

/// A method or header name (an HTTP token), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsToken(pub String);
from_str_deserialize!(CorsToken);

impl std::str::FromStr for CorsToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if t.is_empty() || !t.bytes().all(tchar) {
            return Err(format!(
                "invalid name {s:?}: expected a method or header name such as \"POST\" or \"content-type\", or \"*\""
            ));
        }
        Ok(CorsToken(t.to_string()))
    }
}
