//! Keeping a background attempt's lease: a heartbeat renews it every third of its length and
//! gives it up — stopping the guest — one lease after the last *confirmed* renewal began, so
//! another node never takes an attempt over while this one still runs it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::queue::{Claimed, Queue};

/// Aborts a task when dropped (a no-op once it has finished).
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the lease every third of it; cancels `lost` when the lease is no longer ours: the
/// renewal matched nothing (another node took the invocation over: its token moved on), or
/// one lease has passed since the last *confirmed* renewal *began* (`confirmed`, at first the
/// claim's start) — the database may let another node take it over from then on, so the guest
/// is stopped then, never later, however long a renewal hangs.
pub(super) async fn heartbeat(
    queue: Queue,
    claim: Claimed,
    lease: Duration,
    claim_began: tokio::time::Instant,
    lost: CancellationToken,
) {
    let renew = || queue.heartbeat(&claim.id, claim.token, lease);
    keep_lease(renew, &claim.id, lease, claim_began, lost).await;
}

/// [`heartbeat`]'s loop over any renewal (`Ok(false)`: fenced out).
async fn keep_lease<F, E>(
    mut renew: impl FnMut() -> F,
    id: &str,
    lease: Duration,
    claim_began: tokio::time::Instant,
    lost: CancellationToken,
) where
    F: Future<Output = Result<bool, E>>,
    E: std::fmt::Display,
{
    let every = lease / 3;
    let mut confirmed = claim_began;
    loop {
        let renewal = async {
            tokio::time::sleep(every).await;
            let began = tokio::time::Instant::now();
            (began, renew().await)
        };
        tokio::select! {
            () = tokio::time::sleep_until(confirmed + lease) => {
                tracing::warn!(id, "no lease renewal confirmed for {lease:?}");
                lost.cancel();
                return;
            }
            (began, renewed) = renewal => match renewed {
                Ok(true) => confirmed = began,
                Ok(false) => {
                    lost.cancel();
                    return;
                }
                // A failed renewal is not a lost lease yet; try again next tick.
                Err(e) => tracing::warn!(id, "heartbeat failed: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the last renewal was dated when its UPDATE returned and a hung renewal was
    /// judged only after two more ticks, so another node could take over while this one still
    /// ran the guest for up to ~10 s.
    #[tokio::test(start_paused = true)]
    async fn a_lease_is_given_up_one_lease_after_the_last_confirmed_renewal_began() {
        let lease = Duration::from_secs(30);
        let start = tokio::time::Instant::now();
        let lost = CancellationToken::new();
        // The first renewal (at 10 s) takes 15 s to confirm; the next one hangs for ever.
        let calls = std::cell::Cell::new(0);
        let renew = || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n == 1 {
                    tokio::time::sleep(Duration::from_secs(15)).await;
                    Ok::<_, String>(true)
                } else {
                    std::future::pending().await
                }
            }
        };
        keep_lease(renew, "id", lease, start, lost.clone()).await;
        assert!(lost.is_cancelled());
        // Confirmed renewal began at 10 s: the lease is held until 40 s, not 25 s + 30 s.
        assert_eq!(start.elapsed(), Duration::from_secs(40));

        let fenced = CancellationToken::new();
        let start = tokio::time::Instant::now();
        keep_lease(
            || async { Ok::<_, String>(false) },
            "id",
            lease,
            start,
            fenced.clone(),
        )
        .await;
        assert!(fenced.is_cancelled());
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(10),
            "fenced out at the first tick"
        );
    }
}
