//! A function's rate limit on one node: a sliding-window counter per key (client address,
//! domain, or both), in memory. Pure but for its lock: time is passed in.
//!
//! Each key counts the requests of its current window (which starts at the key's first request)
//! and remembers the count of the window before; a request passes while
//! `previous × (1 − elapsed/window) + current < window_limit` — the estimate Cloudflare's and
//! nginx's limiters use. Within one window no more than `window_limit` pass; across a window
//! boundary the estimate assumes the previous window's requests were spread evenly, so a burst
//! at the very end of one window followed by a burst at the start of the next lets at most
//! `2 × window_limit` through in one `window_size` span (the bound the README states).
//!
//! Keys are bounded ([`MAX_KEYS`]): a full table first forgets keys idle for two windows; if
//! it is still full, new keys share one overflow counter (so a flood of fresh addresses is
//! limited as one client, and memory stays put).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::rate::{Aggregate, RateAction, RateLimitConfig};

/// Keys one function's limiter remembers at most (about 100 bytes each).
pub const MAX_KEYS: usize = 100_000;

/// What a request is counted by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(Option<IpAddr>, Option<Box<str>>),
    Overflow,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    previous: u64,
    current: u64,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit: counted, go on.
    Pass,
    /// Over it: answer `429` with `Retry-After: retry_after` (whole seconds, at least 1).
    Limited {
        /// Seconds until a request of this key would pass again.
        retry_after: u64,
    },
    /// Over it: serve this path instead.
    Rewrite(String),
}

/// One function's limiter.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u64,
    window: Duration,
    by_ip: bool,
    by_domain: bool,
    action: RateAction,
    max_keys: usize,
    table: Mutex<Table>,
}

/// The keys' windows, and when idle ones were last forgotten.
#[derive(Debug, Default)]
struct Table {
    windows: HashMap<Key, Window>,
    swept: Option<Instant>,
}

impl RateLimiter {
    /// A limiter for `config` (already checked).
    pub fn new(config: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            limit: config.window_limit,
            window: config.window(),
            by_ip: config.aggregate_by.contains(&Aggregate::Ip),
            by_domain: config.aggregate_by.contains(&Aggregate::Domain),
            action: config.action.clone(),
            max_keys: MAX_KEYS,
            table: Mutex::new(Table::default()),
        }
    }

    /// Counts a request from `client` naming `host` (its `Host` header) at `now`.
    pub fn check(&self, client: IpAddr, host: Option<&str>, now: Instant) -> Verdict {
        let key = self.key(client, host);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.admit(&mut table, key, now);
        let w = table.windows.entry(key).or_insert(Window {
            start: now,
            previous: 0,
            current: 0,
        });
        roll(w, self.window, now);
        let elapsed = now.saturating_duration_since(w.start).as_secs_f64();
        let fraction = (elapsed / self.window.as_secs_f64()).min(1.0);
        let estimate = w.previous as f64 * (1.0 - fraction) + w.current as f64;
        if estimate < self.limit as f64 {
            w.current += 1;
            return Verdict::Pass;
        }
        match &self.action {
            RateAction::Rewrite(to) => Verdict::Rewrite(to.clone()),
            RateAction::RateLimit => Verdict::Limited {
                retry_after: self.wait(w, fraction).as_secs_f64().ceil().max(1.0) as u64,
            },
        }
    }

    fn key(&self, client: IpAddr, host: Option<&str>) -> Key {
        let ip = self.by_ip.then(|| per_host(client));
        let domain = (self.by_domain).then(|| {
            let host = host.unwrap_or("");
            let name = host.rsplit_once(':').map_or(host, |(name, port)| {
                // `[::1]:80` and `example.com:80` lose the port; `::1` has none to lose.
                if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') {
                    name
                } else {
                    host
                }
            });
            name.to_ascii_lowercase().into_boxed_str()
        });
        Key::Client(ip, domain)
    }

    /// `key`, or the overflow key when the table is full of live keys. Idle keys are swept at
    /// most once a window, so a full table costs no scan per request.
    fn admit(&self, table: &mut Table, key: Key, now: Instant) -> Key {
        if table.windows.len() < self.max_keys || table.windows.contains_key(&key) {
            return key;
        }
        if table
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= self.window)
        {
            let idle = self.window * 2;
            (table.windows).retain(|_, w| now.saturating_duration_since(w.start) < idle);
            table.swept = Some(now);
        }
        if table.windows.len() < self.max_keys {
            key
        } else {
            Key::Overflow
        }
    }

    /// How long until the estimate of `w` drops below the limit.
    fn wait(&self, w: &Window, fraction: f64) -> Duration {
        let window = self.window.as_secs_f64();
        let until_end = (1.0 - fraction) * window;
        if w.current >= self.limit || w.previous == 0 {
            return Duration::from_secs_f64(until_end);
        }
        // previous × (1 − f) + current < limit  ⇔  f > 1 − (limit − current) / previous
        let needed = 1.0 - (self.limit - w.current) as f64 / w.previous as f64;
        Duration::from_secs_f64(((needed - fraction) * window).clamp(0.0, until_end))
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.table.lock().map_or(0, |t| t.windows.len())
    }
}

/// Moves `w` forward to the window holding `now`.
fn roll(w: &mut Window, window: Duration, now: Instant) {
    let elapsed = now.saturating_duration_since(w.start);
    if elapsed < window {
        return;
    }
    let windows = (elapsed.as_nanos() / window.as_nanos().max(1)) as u32;
    w.previous = if windows == 1 { w.current } else { 0 };
    w.current = 0;
    w.start += window * windows;
}

/// An IPv6 client is counted by its /64 (one host usually holds a whole /64).
fn per_host(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Humantime;

    fn limiter(limit: u64, secs: u64, by: &[Aggregate], action: RateAction) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            window_limit: limit,
            window_size: Humantime(Duration::from_secs(secs)),
            aggregate_by: by.to_vec(),
            action,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_window_lets_its_limit_through_per_client() {
        let l = limiter(10, 60, &[Aggregate::Ip], RateAction::RateLimit);
        let t0 = Instant::now();
        let passed = (0..100)
            .filter(|i| {
                l.check(ip("192.0.2.1"), None, t0 + Duration::from_millis(*i)) == Verdict::Pass
            })
            .count();
        assert_eq!(passed, 10);
        // Another client has its own window.
        assert_eq!(l.check(ip("192.0.2.2"), None, t0), Verdict::Pass);
        // The first is told when to come back: about a minute.
        assert_eq!(
            l.check(ip("192.0.2.1"), None, t0 + Duration::from_secs(1)),
            Verdict::Limited { retry_after: 59 }
        );
    }

    #[test]
    fn the_previous_window_counts_less_and_less() {
        let l = limiter(10, 10, &[Aggregate::Ip], RateAction::RateLimit);
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        for _ in 0..10 {
            assert_eq!(l.check(c, None, t0), Verdict::Pass);
        }
        // Half into the next window the previous ten weigh five: five more pass.
        let half = t0 + Duration::from_secs(15);
        let passed = (0..10)
            .filter(|_| l.check(c, None, half) == Verdict::Pass)
            .count();
        assert_eq!(passed, 5);
        // Two windows later everything is forgotten.
        let later = t0 + Duration::from_secs(30);
        let passed = (0..20)
            .filter(|_| l.check(c, None, later) == Verdict::Pass)
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn domains_ipv6_prefixes_and_rewrites() {
        let l = limiter(
            1,
            60,
            &[Aggregate::Domain],
            RateAction::Rewrite("/slow".into()),
        );
        let t0 = Instant::now();
        assert_eq!(
            l.check(ip("192.0.2.1"), Some("A.example:8080"), t0),
            Verdict::Pass
        );
        // Same domain, another client, port and case aside: the same key.
        assert_eq!(
            l.check(ip("192.0.2.9"), Some("a.example"), t0),
            Verdict::Rewrite("/slow".into())
        );
        assert_eq!(
            l.check(ip("192.0.2.9"), Some("b.example"), t0),
            Verdict::Pass
        );
        let l = limiter(1, 60, &[Aggregate::Ip], RateAction::RateLimit);
        assert_eq!(l.check(ip("2001:db8:1:2::1"), None, t0), Verdict::Pass);
        assert!(matches!(
            l.check(ip("2001:db8:1:2::ffff"), None, t0),
            Verdict::Limited { .. }
        ));
        assert_eq!(l.check(ip("2001:db8:1:3::1"), None, t0), Verdict::Pass);
    }

    #[test]
    fn a_full_table_forgets_idle_keys_then_shares_an_overflow_counter() {
        let mut l = limiter(2, 10, &[Aggregate::Ip], RateAction::RateLimit);
        l.max_keys = 3;
        let t0 = Instant::now();
        for i in 1..=3 {
            l.check(ip(&format!("192.0.2.{i}")), None, t0);
        }
        // Full of live keys: newcomers share one counter of the same limit.
        let new = |i: u8| l.check(ip(&format!("198.51.100.{i}")), None, t0);
        assert_eq!(new(1), Verdict::Pass);
        assert_eq!(new(2), Verdict::Pass);
        assert!(matches!(new(3), Verdict::Limited { .. }));
        assert_eq!(l.keys(), 4);
        // Two windows on, the idle keys make room.
        let later = t0 + Duration::from_secs(21);
        assert_eq!(l.check(ip("198.51.100.3"), None, later), Verdict::Pass);
        assert_eq!(l.keys(), 1);
    }
}
