//! A function's rate limit: a sliding-window counter per key (client address, domain, or
//! both), in memory, and — on a PostgreSQL queue — the other nodes' counts of the same keys,
//! refreshed in the background (see `background::rates`). Pure but for its lock: time (ms
//! since the epoch) is passed in.
//!
//! Windows are aligned to the clock (`[k × size, (k + 1) × size)`), so every node counts the
//! same windows. A key keeps the count of its current window and of the one before; a request
//! passes while `⌈previous × (1 − elapsed/size)⌉ + current < window_limit` (the previous
//! window's requests assumed evenly spread — the estimate Cloudflare's and nginx's limiters
//! use; rounded up, so a full window just ended does not let one more through at once). Within
//! one window no more than `window_limit` pass; across a boundary a burst at the very end of
//! one window and another at the start of the next can let up to `2 × window_limit` through in
//! one `window_size` span. Across nodes, each adds the others' last known counts: it may admit
//! what the others admitted since the last refresh (the bound the README states, measured).
//!
//! Keys are bounded ([`MAX_KEYS`]): a full table first forgets keys idle for two windows; if
//! it is still full, new keys share one overflow counter (so a flood of fresh addresses is
//! limited as one client, and memory stays put).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::rate::{Aggregate, RateAction, RateLimitConfig};

/// Keys one function's limiter remembers at most (about 100 bytes each).
pub const MAX_KEYS: usize = 100_000;

/// What a request is counted by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(Option<IpAddr>, Option<Box<str>>),
    Overflow,
}

impl Key {
    /// The key as the nodes share it: `ip|domain` (`-` for a part not counted by).
    fn shared(&self) -> String {
        match self {
            Key::Client(ip, domain) => format!(
                "{}|{}",
                ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                domain.as_deref().unwrap_or("-")
            ),
            Key::Overflow => "*overflow*".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the current window began (ms, a multiple of the size).
    start: u64,
    previous: u64,
    current: u64,
    /// `current` as last published to the other nodes.
    published: u64,
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

/// Rate limiters whose counts the nodes of one PostgreSQL queue share, each under a name that
/// is the same on every node serving the same site: a function's name, `rule:INDEX:FROM` for a
/// `_redirects`/`[[redirects]]` rule (function names have no `:`).
pub trait SharedLimits: Send + Sync {
    /// Each limiter, with its name.
    fn limiters(&self) -> Vec<(String, &RateLimiter)>;
}

impl SharedLimits for super::FunctionTable {
    fn limiters(&self) -> Vec<(String, &RateLimiter)> {
        (self.functions.iter())
            .filter_map(|f| f.rate.as_ref().map(|rate| (f.name.clone(), rate)))
            .collect()
    }
}

/// One function's (or rule's) limiter.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u64,
    /// The window in ms.
    size: u64,
    by_ip: bool,
    by_domain: bool,
    action: RateAction,
    max_keys: usize,
    table: Mutex<Table>,
}

/// The keys' windows, when idle ones were last forgotten, and the other nodes' counts.
#[derive(Debug, Default)]
struct Table {
    windows: HashMap<Key, Window>,
    swept: Option<u64>,
    /// Other nodes' counts by shared key: `(window start, count)`.
    others: HashMap<String, Vec<(u64, u64)>>,
}

impl Table {
    /// The other nodes' counts of `key` in the window starting at `start` and the one before.
    fn others(&self, key: &Key, start: u64, size: u64) -> (u64, u64) {
        if self.others.is_empty() {
            return (0, 0);
        }
        let Some(counts) = self.others.get(&key.shared()) else {
            return (0, 0);
        };
        let at = |s: u64| counts.iter().filter(|c| c.0 == s).map(|c| c.1).sum::<u64>();
        (at(start.saturating_sub(size)), at(start))
    }
}

impl RateLimiter {
    /// A limiter for `config` (already checked).
    pub fn new(config: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            limit: config.window_limit,
            size: u64::try_from(config.window().as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            by_ip: config.aggregate_by.contains(&Aggregate::Ip),
            by_domain: config.aggregate_by.contains(&Aggregate::Domain),
            action: config.action.clone(),
            max_keys: MAX_KEYS,
            table: Mutex::new(Table::default()),
        }
    }

    /// The window, in ms.
    pub fn window_ms(&self) -> u64 {
        self.size
    }

    /// Counts a request from `client` naming `host` (its `Host` header) at `now` (ms).
    pub fn check(&self, client: IpAddr, host: Option<&str>, now: u64) -> Verdict {
        let key = self.key(client, host);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.admit(&mut table, key, now);
        let start = now - now % self.size;
        let (others_previous, others_current) = table.others(&key, start, self.size);
        let w = table.windows.entry(key).or_insert(Window {
            start,
            previous: 0,
            current: 0,
            published: 0,
        });
        roll(w, self.size, start);
        let fraction = (now - start) as f64 / self.size as f64;
        let previous = w.previous + others_previous;
        let current = w.current + others_current;
        let estimate = (previous as f64 * (1.0 - fraction)).ceil() as u64 + current;
        if estimate < self.limit {
            w.current += 1;
            return Verdict::Pass;
        }
        match &self.action {
            RateAction::Rewrite(to) => Verdict::Rewrite(to.clone()),
            RateAction::RateLimit => Verdict::Limited {
                retry_after: self
                    .wait(previous, current, fraction)
                    .as_secs_f64()
                    .ceil()
                    .max(1.0) as u64,
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
    fn admit(&self, table: &mut Table, key: Key, now: u64) -> Key {
        if table.windows.len() < self.max_keys || table.windows.contains_key(&key) {
            return key;
        }
        if table
            .swept
            .is_none_or(|at| now.saturating_sub(at) >= self.size)
        {
            let idle = self.size * 2;
            (table.windows).retain(|_, w| now.saturating_sub(w.start) < idle);
            table.swept = Some(now);
        }
        if table.windows.len() < self.max_keys {
            key
        } else {
            Key::Overflow
        }
    }

    /// How long until the estimate drops below the limit.
    fn wait(&self, previous: u64, current: u64, fraction: f64) -> Duration {
        let window = self.size as f64 / 1000.0;
        let until_end = (1.0 - fraction) * window;
        if current + 1 >= self.limit || previous == 0 {
            return Duration::from_secs_f64(until_end);
        }
        // ⌈previous × (1 − f)⌉ + current < limit  ⇔  f ≥ 1 − (limit − current − 1) / previous
        let needed = 1.0 - (self.limit - current - 1) as f64 / previous as f64;
        Duration::from_secs_f64(((needed - fraction) * window).clamp(0.0, until_end))
    }

    /// This node's counts that changed since the last call, to publish: `(key, window start,
    /// count)`.
    pub fn changed(&self) -> Vec<(String, u64, u64)> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        (table.windows.iter_mut())
            .filter(|(_, w)| w.current != w.published)
            .map(|(key, w)| {
                w.published = w.current;
                (key.shared(), w.start, w.current)
            })
            .collect()
    }

    /// Takes in the other nodes' counts (`(key, window start, count)`), replacing the last.
    pub fn absorb(&self, others: Vec<(String, u64, u64)>) {
        let mut by_key: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        for (key, start, count) in others {
            by_key.entry(key).or_default().push((start, count));
        }
        self.table.lock().unwrap_or_else(|p| p.into_inner()).others = by_key;
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.table.lock().map_or(0, |t| t.windows.len())
    }
}

/// Moves `w` forward to the window starting at `start`.
fn roll(w: &mut Window, size: u64, start: u64) {
    if start <= w.start {
        return;
    }
    w.previous = if start - w.start == size {
        w.current
    } else {
        0
    };
    w.current = 0;
    w.published = 0;
    w.start = start;
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
        let t0: u64 = 1_800_000_000_000; // a window boundary
        let passed = (0..100)
            .filter(|i| l.check(ip("192.0.2.1"), None, t0 + *i) == Verdict::Pass)
            .count();
        assert_eq!(passed, 10);
        // Another client has its own window.
        assert_eq!(l.check(ip("192.0.2.2"), None, t0), Verdict::Pass);
        // The first is told when to come back: about a minute.
        assert_eq!(
            l.check(ip("192.0.2.1"), None, t0 + 1000),
            Verdict::Limited { retry_after: 59 }
        );
    }

    #[test]
    fn the_previous_window_counts_less_and_less() {
        let l = limiter(10, 10, &[Aggregate::Ip], RateAction::RateLimit);
        let t0: u64 = 1_800_000_000_000; // a window boundary
        let c = ip("192.0.2.1");
        for _ in 0..10 {
            assert_eq!(l.check(c, None, t0), Verdict::Pass);
        }
        // Half into the next window the previous ten weigh five: five more pass.
        let half = t0 + 15_000;
        let passed = (0..10)
            .filter(|_| l.check(c, None, half) == Verdict::Pass)
            .count();
        assert_eq!(passed, 5);
        // Two windows later everything is forgotten.
        let later = t0 + 30_000;
        let passed = (0..20)
            .filter(|_| l.check(c, None, later) == Verdict::Pass)
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn a_window_just_full_lets_nothing_more_through_at_the_boundary() {
        let l = limiter(10, 60, &[Aggregate::Ip], RateAction::RateLimit);
        let t0: u64 = 1_800_000_000_000;
        let c = ip("192.0.2.1");
        let end = t0 + 59_900;
        assert_eq!(
            (0..10)
                .filter(|_| l.check(c, None, end) == Verdict::Pass)
                .count(),
            10
        );
        // 200 ms later, in the next window: the previous ten still weigh ⌈9.97⌉ = 10.
        assert!(matches!(
            l.check(c, None, t0 + 60_100),
            Verdict::Limited { .. }
        ));
        // A tenth into it they weigh 9: one passes.
        assert_eq!(l.check(c, None, t0 + 66_000), Verdict::Pass);
        assert!(matches!(
            l.check(c, None, t0 + 66_000),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn nodes_add_each_other_s_counts() {
        let (a, b) = (
            limiter(10, 60, &[Aggregate::Ip], RateAction::RateLimit),
            limiter(10, 60, &[Aggregate::Ip], RateAction::RateLimit),
        );
        let t0: u64 = 1_800_000_000_000;
        let c = ip("192.0.2.1");
        assert_eq!(
            (0..6)
                .filter(|_| a.check(c, None, t0) == Verdict::Pass)
                .count(),
            6
        );
        let published = a.changed();
        assert_eq!(published, vec![("192.0.2.1|-".to_string(), t0, 6)]);
        assert!(a.changed().is_empty(), "published once");
        b.absorb(published);
        assert_eq!(
            (0..10)
                .filter(|_| b.check(c, None, t0 + 10) == Verdict::Pass)
                .count(),
            4
        );
        // The next window: the others' count is the previous one's, weighted.
        b.absorb(vec![("192.0.2.1|-".to_string(), t0, 6)]);
        let half = t0 + 90_000;
        // ⌈(4 + 6) × 0.5⌉ = 5 weigh: five more pass.
        assert_eq!(
            (0..10)
                .filter(|_| b.check(c, None, half) == Verdict::Pass)
                .count(),
            5
        );
    }

    #[test]
    fn domains_ipv6_prefixes_and_rewrites() {
        let l = limiter(
            1,
            60,
            &[Aggregate::Domain],
            RateAction::Rewrite("/slow".into()),
        );
        let t0: u64 = 1_800_000_000_000; // a window boundary
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
        let t0: u64 = 1_800_000_000_000; // a window boundary
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
        let later = t0 + 21_000;
        assert_eq!(l.check(ip("198.51.100.3"), None, later), Verdict::Pass);
        assert_eq!(l.keys(), 1);
    }
}
