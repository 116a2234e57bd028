//! Outbound-HTTP policy: which destinations a guest may reach. Pure; the engine's
//! `send_request` hook asks it twice — once for the URL, once for each resolved address.

use std::net::IpAddr;

use crate::config::OutboundRule;

/// The rule that lets a request to `scheme://host:port` out, if any.
pub fn find_rule<'a>(
    rules: &'a [OutboundRule],
    scheme: &str,
    host: &str,
    port: u16,
) -> Option<&'a OutboundRule> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    rules.iter().find(|r| {
        (r.scheme == "*" || r.scheme == scheme)
            && (r.host == "*" || r.host == host)
            && match r.port {
                Some(0) => true,
                Some(p) => p == port,
                None => port == default_port(if r.scheme == "*" { scheme } else { &r.scheme }),
            }
    })
}

/// Whether `rule` lets the request reach `ip`. Public addresses always pass; loopback, private,
/// link-local and other special addresses pass only when the rule names an IP literal or
/// `localhost` explicitly (a wildcard or a DNS name does not open the private network).
pub fn address_allowed(rule: &OutboundRule, ip: IpAddr) -> bool {
    if is_public(ip) {
        return true;
    }
    match rule.host.parse::<IpAddr>() {
        Ok(literal) => literal == ip,
        Err(_) => rule.host == "localhost" && ip.is_loopback(),
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// Globally routable unicast.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 carrier-grade NAT
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            // IPv4-compatible `::a.b.c.d` (deprecated, still routed by some stacks).
            if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return embedded(s[6], s[7]);
            }
            // NAT64 `64:ff9b::/96` and 6to4 `2002::/16` reach the IPv4 address they embed.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return embedded(s[6], s[7]);
            }
            if s[0] == 0x2002 {
                return embedded(s[1], s[2]);
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation 2001:db8::/32
                || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32 (embeds an obfuscated v4)
                || s[..4] == [0x100, 0, 0, 0]) // discard-only 100::/64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<OutboundRule> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn scheme_host_and_port_must_match() {
        let r = rules(&["https://api.example.com", "http://127.0.0.1:8080"]);
        assert!(find_rule(&r, "https", "api.example.com", 443).is_some());
        assert!(find_rule(&r, "https", "API.example.com", 443).is_some());
        assert!(find_rule(&r, "http", "api.example.com", 80).is_none());
        assert!(find_rule(&r, "https", "api.example.com", 8443).is_none());
        assert!(find_rule(&r, "http", "127.0.0.1", 8080).is_some());
        assert!(find_rule(&r, "http", "127.0.0.1", 8081).is_none());
        assert!(find_rule(&r, "https", "evil.example.com", 443).is_none());
        assert!(find_rule(&[], "https", "api.example.com", 443).is_none());
    }

    #[test]
    fn wildcards() {
        let r = rules(&["*://*:*"]);
        assert!(find_rule(&r, "http", "anything", 1234).is_some());
        let r = rules(&["https://*"]);
        assert!(find_rule(&r, "https", "x.y", 443).is_some());
        assert!(find_rule(&r, "https", "x.y", 444).is_none());
    }

    #[test]
    fn private_addresses_need_an_explicit_rule() {
        let wildcard: OutboundRule = "https://*:*".parse().unwrap();
        let named: OutboundRule = "http://internal.example:80".parse().unwrap();
        let literal: OutboundRule = "http://127.0.0.1:9000".parse().unwrap();
        let localhost: OutboundRule = "http://localhost:9000".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!address_allowed(&wildcard, ip), "{private}");
            assert!(!address_allowed(&named, ip), "{private}");
        }
        assert!(address_allowed(&literal, lo));
        assert!(!address_allowed(&literal, "10.0.0.1".parse().unwrap()));
        assert!(address_allowed(&localhost, lo));
        assert!(address_allowed(&wildcard, "93.184.216.34".parse().unwrap()));
    }

    /// Regression: the check missed NAT64, 6to4, IPv4-compatible and site-local IPv6 and a
    /// few special IPv4 ranges, so a name resolving there reached the private network.
    #[test]
    fn special_ranges_are_not_public() {
        let table = [
            ("0.1.2.3", false),
            ("10.0.0.1", false),
            ("100.64.0.1", false),
            ("100.127.255.254", false),
            ("100.128.0.1", true),
            ("127.0.0.1", false),
            ("169.254.169.254", false),
            ("172.16.0.1", false),
            ("192.0.2.1", false),
            ("192.168.0.1", false),
            ("198.18.0.1", false),
            ("198.19.255.255", false),
            ("198.20.0.1", true),
            ("224.0.0.1", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("93.184.216.34", true),
            ("8.8.8.8", true),
            ("::", false),
            ("::1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("::10.0.0.1", false),
            ("::169.254.169.254", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("64:ff9b::808:808", true),
            ("64:ff9b:1::1", false),
            ("2002:a9fe:a9fe::1", false),
            ("2002:0a00:0001::", false),
            ("2002:0808:0808::1", true),
            ("fc00::1", false),
            ("fd12:3456::1", false),
            ("fe80::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("2001:0:4136:e378::1", false),
            ("100::1", false),
            ("2606:4700:4700::1111", true),
        ];
        for (ip, public) in table {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }
}
