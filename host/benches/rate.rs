//! What a `rate_limit` costs a request (run: `cargo bench -p fnhost --bench rate`).
//!
//! `RateLimiter::check` — one lock, one hash lookup, a few float operations — against the
//! least any per-client counter costs: a `Mutex<HashMap<IpAddr, u64>>` increment, in the same
//! run. Three cases: one hot client, 10,000 clients in turn, and a client over its limit (the
//! `429` path). Counts are bounded; figures are ns per call and the ratio to the reference.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fnhost::config::Humantime;
use fnhost::config::rate::{Aggregate, RateAction, RateLimitConfig};
use fnhost::functions::rate::RateLimiter;

const CALLS: u64 = 2_000_000;

fn limiter(limit: u64) -> RateLimiter {
    RateLimiter::new(&RateLimitConfig {
        window_limit: limit,
        window_size: Humantime(Duration::from_secs(60)),
        aggregate_by: vec![Aggregate::Ip, Aggregate::Domain],
        action: RateAction::RateLimit,
    })
}

fn clients(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()))
        .collect()
}

/// ns per call of `f` over [`CALLS`] calls, `i` the call's number.
fn per_call(mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..CALLS {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / CALLS as f64
}

fn reference(clients: &[IpAddr]) -> f64 {
    let map: Mutex<HashMap<IpAddr, u64>> = Mutex::new(HashMap::new());
    per_call(|i| {
        let ip = clients[(i % clients.len() as u64) as usize];
        *map.lock().unwrap().entry(black_box(ip)).or_default() += 1;
    })
}

fn checked(limit: u64, clients: &[IpAddr]) -> f64 {
    let l = limiter(limit);
    let now = 1_800_000_000_000u64;
    per_call(|i| {
        let ip = clients[(i % clients.len() as u64) as usize];
        black_box(l.check(black_box(ip), Some("example.com"), now + i / 1000));
    })
}

fn main() {
    println!(
        "rate limit cost per request, ns per call ({CALLS} calls each; ratio to a bare Mutex<HashMap> counter)"
    );
    for (name, n, limit) in [
        ("one client, under its limit", 1, u64::MAX / 2),
        ("10,000 clients in turn", 10_000, u64::MAX / 2),
        ("one client over its limit (429)", 1, 10),
    ] {
        let c = clients(n);
        let (r, l) = (reference(&c), checked(limit, &c));
        println!(
            "{name:34} reference {r:6.1} ns   check {l:6.1} ns   ratio {:.2}",
            l / r
        );
    }
}
