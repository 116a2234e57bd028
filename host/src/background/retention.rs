//! Retention: finished invocations, their results and delivered records, and events, are
//! purged once they are older than `[server] retention`, in small batches so no transaction holds the queue for
//! long. A scheduled function's last tick is kept: catch-up at startup reads it. Deploys past
//! the newest `keep_deploys` go too, unless published or run by an unfinished invocation, and
//! this node's copies of the components no deploy names any more.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Invocations deleted per transaction.
const BATCH: u32 = 500;

/// Purges until `shutdown`, checking every tenth of `retention` (at most once a minute, at
/// least every 100 ms).
pub async fn purge_loop(
    deploys: std::sync::Arc<crate::deploys::Deploys>,
    retention: Duration,
    keep_deploys: u32,
    shutdown: CancellationToken,
) {
    let queue = deploys.queue().clone();
    let every = (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {},
        }
        let mut purged = 0;
        loop {
            match queue.purge_finished(retention, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < u64::from(BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!("purging finished invocations failed: {e}");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!("purged {purged} finished invocation(s) older than {retention:?}");
        }
        match queue.purge_events(retention, BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("purged {n} event(s) older than {retention:?}"),
            Err(e) => tracing::error!("purging old events failed: {e}"),
        }
        match queue.purge_deploys(keep_deploys).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("purged {n} deploy(s) past the newest {keep_deploys}"),
            Err(e) => tracing::error!("purging old deploys failed: {e}"),
        }
        match deploys.prune_local().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} component copies no deploy names any more"),
            Err(e) => tracing::warn!("cannot prune this node's component copies: {e:#}"),
        }
    }
}
