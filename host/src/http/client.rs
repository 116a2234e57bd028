//! Who is asking: the client address of a request, from the peer of its connection and, when
//! that peer is a trusted proxy, the hops it (and the proxies before it) recorded in
//! `Forwarded` (RFC 7239) or `X-Forwarded-For`. Pure: no sockets.
//!
//! The walk goes from the nearest hop outwards (right to left) and stops at the first address
//! that is not a trusted proxy: that is the client. Entries left of it were written by whoever
//! that client is, so they are never believed — a client cannot spoof its address by sending
//! its own `X-Forwarded-For`, unless it connects from a trusted address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::ids::headers::{GEO_CITY, GEO_COUNTRY, GEO_REGION};

/// `[server] trusted_proxies`: networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Trusts `nets` (none: only the peer address counts).
    pub fn new(nets: Vec<ipnet::IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    /// Where a trusted proxy says the client is: `(fnhost header, value)` for the country
    /// (`x-country`, else Cloudflare's `cf-ipcountry`), region (`x-region`) and city (`x-city`,
    /// else `cf-ipcity`) — none unless `peer` is trusted (anyone can write these headers).
    pub fn geo(&self, peer: IpAddr, headers: &HeaderMap) -> Vec<(&'static str, String)> {
        if !self.trusts(peer) {
            return Vec::new();
        }
        let first = |names: &[&str]| {
            names.iter().find_map(|n| {
                let v = headers.get(*n)?.to_str().ok()?.trim();
                (!v.is_empty()).then(|| v.to_string())
            })
        };
        [
            (GEO_COUNTRY, first(&["x-country", "cf-ipcountry"])),
            (GEO_REGION, first(&["x-region"])),
            (GEO_CITY, first(&["x-city", "cf-ipcity"])),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some((name, v?)))
        .collect()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in hops(headers).into_iter().rev() {
            // An entry a trusted proxy wrote that names no address (`unknown`, an obfuscated
            // node): the walk ends at the last address known.
            let Some(ip) = hop else { break };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// `::ffff:10.0.0.1` is `10.0.0.1` (a dual-stack listener reports IPv4 peers so).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The recorded hops, nearest last: `Forwarded`'s `for=` when the request has one, else
/// `X-Forwarded-For`. Several header lines are one list, in order.
fn hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let lines = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    if headers.contains_key(http::header::FORWARDED) {
        lines(http::header::FORWARDED.as_str())
            .map(|element| {
                let node = element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for").then_some(v)
                });
                node.and_then(address)
            })
            .collect()
    } else {
        lines("x-forwarded-for").map(address).collect()
    }
}

/// An address as proxies write one: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`, any of them in quotes; `None` for anything else (`unknown`, `_hidden`).
fn address(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            let inner = node.strip_prefix('[')?.split(']').next()?;
            inner.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(t.client(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client forged 6.6.6.6; the proxy appended the address it saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Two header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("198.51.100.7"));
        // All hops trusted: the farthest one.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(t.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_wins_and_its_forms_parse() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            (
                "forwarded",
                "for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.5:80",
            ),
        ]);
        assert_eq!(t.client(ip("10.0.0.1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]);
        assert_eq!(t.client(ip("10.0.0.1"), &h), ip("192.0.2.60"));
        // An unknown node ends the walk at the last known address.
        let h = headers(&[("forwarded", "for=192.0.2.60, for=unknown")]);
        assert_eq!(t.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn geo_comes_only_from_a_trusted_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-country", "FR"),
            ("cf-ipcity", "Lyon"),
            ("x-region", " "),
        ]);
        assert_eq!(
            t.geo(ip("10.0.0.1"), &h),
            vec![
                (GEO_COUNTRY, "FR".to_string()),
                (GEO_CITY, "Lyon".to_string())
            ]
        );
        assert!(t.geo(ip("203.0.113.1"), &h).is_empty());
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let t = trusted(&["127.0.0.1/32"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(t.client(ip("::ffff:127.0.0.1"), &h), ip("198.51.100.7"));
        assert_eq!(
            TrustedProxies::default().client(ip("::ffff:192.0.2.1"), &h),
            ip("192.0.2.1")
        );
    }
}
