//! Retry policy, pure: what happens after a failed background attempt, and when a failed
//! destination delivery is tried again.

use std::time::Duration;

/// What to do after attempt `attempt` (counted from 1) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run again after this delay.
    RetryAfter(Duration),
    /// No attempts left.
    Dead,
}

/// `delays[i]` is the wait before attempt `i + 2`; so `delays.len() + 1` attempts in all.
pub fn after_failure(attempt: u32, delays: &[Duration]) -> Next {
    match usize::try_from(attempt)
        .ok()
        .and_then(|a| a.checked_sub(1))
        .and_then(|i| delays.get(i))
    {
        Some(d) => Next::RetryAfter(*d),
        None => Next::Dead,
    }
}

/// Deliveries are tried this many times before they are given up (and logged).
pub const DELIVERY_ATTEMPTS: u32 = 12;

/// Wait before delivery attempt `attempt + 1`: 1 s doubling, capped at 5 minutes.
pub fn delivery_backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(16)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlify_schedule_is_three_attempts() {
        let delays = [Duration::from_secs(60), Duration::from_secs(120)];
        assert_eq!(
            after_failure(1, &delays),
            Next::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(
            after_failure(2, &delays),
            Next::RetryAfter(Duration::from_secs(120))
        );
        assert_eq!(after_failure(3, &delays), Next::Dead);
        assert_eq!(after_failure(1, &[]), Next::Dead);
    }

    #[test]
    fn delivery_backoff_doubles_then_caps() {
        assert_eq!(delivery_backoff(1), Duration::from_secs(1));
        assert_eq!(delivery_backoff(2), Duration::from_secs(2));
        assert_eq!(delivery_backoff(5), Duration::from_secs(16));
        assert_eq!(delivery_backoff(30), Duration::from_secs(300));
    }
}
