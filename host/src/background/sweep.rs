//! Attempts cut off by a dead host or a lost lease: re-queued (every few seconds, expired
//! leases; at startup of an embedded queue, every `running` one), and those interrupted once
//! too often reported dead to their `on_failure` destination.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Worker, destinations};
use crate::queue::{Finish, StoredResult};

impl Worker {
    /// Re-queues expired leases every few seconds (another node's, or a stalled one's).
    pub(super) async fn reap(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        let every = (self.opts.lease / 2).max(Duration::from_millis(200));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {},
            }
            self.sweep(false).await;
        }
    }

    /// Re-queues every `running` invocation: for an embedded queue at startup, whose previous
    /// owner is gone (never for a shared queue, where other nodes own them).
    pub async fn recover(&self) {
        self.sweep(true).await;
    }

    /// Re-queues interrupted attempts (`all`: every running one; else expired leases) and
    /// reports those interrupted once too often to their `on_failure` destination.
    async fn sweep(&self, all: bool) {
        // A wait recorded after its event came, whose own check did not run (the node died
        // between the two commits): woken now.
        if let Err(e) = self.queue.catch_up_waits(None).await {
            tracing::warn!("checking waits for events already sent failed: {e}");
        }
        let swept = match self
            .queue
            .requeue_expired(all, self.opts.max_interruptions)
            .await
        {
            Ok(swept) => swept,
            Err(e) => {
                tracing::error!("re-queueing interrupted attempts failed: {e}");
                return;
            }
        };
        if swept.requeued > 0 {
            let why = if all {
                "interrupted by the last shutdown"
            } else {
                "whose lease expired"
            };
            tracing::warn!("re-queued {} invocation(s) {why}", swept.requeued);
        }
        for claim in swept.dead {
            let error = format!(
                "interrupted {} times; not run again (max_interruptions)",
                self.opts.max_interruptions
            );
            tracing::error!(id = claim.id, function = claim.function, "dead: {error}");
            crate::metrics::dead(&claim.function);
            let finish = Finish::Dead {
                error,
                result: StoredResult::default(),
            };
            // The attempt that never ended, ended here: a span in the invocation's trace.
            let trace = super::attempt_trace(&claim);
            super::outcome::traced(&trace, &finish, claim.attempt);
            let delivery = (self.table.current().get(&claim.function))
                .and_then(|f| destinations::record_for(f, &claim, &finish, &trace));
            if let Some(d) = delivery
                && let Err(e) = self.queue.add_delivery(&claim.id, d).await
            {
                tracing::error!(id = claim.id, "cannot record the failure delivery: {e}");
            }
        }
    }
}
