//! Rate limits across nodes (PostgreSQL only): every [`INTERVAL`] each node publishes the
//! counts its rate limiters (functions' and rules') changed and reads the other nodes' back, so
//! a limit holds for the cluster. Off every request's path: a request reads only what the last round
//! brought, so it never waits on the database; the price is the bound the README states (a
//! node may admit what the others admitted since the last round).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::functions::rate::SharedLimits;
use crate::queue::{Queue, RateCount, now_ms};

/// How often the nodes exchange their counts.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Exchanges the counts of the limiters `served` gives (those in force at each round) until
/// `shutdown`.
pub async fn share_loop(
    queue: Queue,
    served: impl Fn() -> Arc<dyn SharedLimits>,
    shutdown: CancellationToken,
) {
    let node = crate::ids::new_id();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {},
        }
        let current = served();
        for (name, rate) in current.limiters() {
            let mine: Vec<RateCount> = (rate.changed().into_iter())
                .map(|(key, start, count)| RateCount {
                    key,
                    window_start: i64::try_from(start).unwrap_or(i64::MAX),
                    count: i64::try_from(count).unwrap_or(i64::MAX),
                })
                .collect();
            let window = i64::try_from(rate.window_ms()).unwrap_or(i64::MAX / 4);
            let since = now_ms() - 2 * window;
            match queue.share_rates(&node, &name, &mine, since).await {
                Ok(others) => {
                    failing = false;
                    rate.absorb(
                        (others.into_iter())
                            .map(|c| {
                                let start = u64::try_from(c.window_start).unwrap_or(0);
                                (c.key, start, u64::try_from(c.count).unwrap_or(0))
                            })
                            .collect(),
                    );
                }
                // Counts are absolute: the next round that publishes this key catches up.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        limit = name,
                        "cannot share rate-limit counts with the other nodes (each node \
                         limits alone meanwhile): {e}"
                    );
                }
                Err(_) => {}
            }
        }
    }
}
