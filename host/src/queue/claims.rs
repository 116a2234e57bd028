//! Claims and leases: claim due invocations with a fenced lease, renew it, record how the
//! attempt ended (with its destination delivery, in one transaction), hand it back, and
//! re-queue leases that expired.

use std::time::Duration;

use sqlx::Row;

use super::{
    Claimed, Finish, Interrupted, NewDelivery, Queue, QueueError, Result, batch, model, ms, now_ms,
    writer,
};
use super::{rows, schema};

impl Queue {
    /// Claims up to `limit` due invocations for `owner`, leasing each for `lease`, oldest due
    /// first, skipping the functions named in `skip` (those at their concurrency cap).
    pub async fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
        skip: &[String],
    ) -> Result<Vec<Claimed>> {
        writer::claim_rows(&self.pool, self.backend, owner, ms(lease), limit, skip).await
    }

    /// Extends a lease; `false` when the lease is no longer ours (fenced out).
    pub async fn heartbeat(&self, id: &str, token: i64, lease: Duration) -> Result<bool> {
        let sql = self.sql(
            "UPDATE invocations SET lease_expires_at = $now + $1 WHERE id = $2 AND lease_token = $3 AND state = 'running'",
        );
        let query = sqlx::query(&sql)
            .bind(ms(lease))
            .bind(id.to_string())
            .bind(token);
        let done = self.now(query, now_ms()).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records how an attempt ended, plus any destination delivery, in the writer's next
    /// group commit; resolves once that commits. `false` (and nothing written) when the claim
    /// was fenced out meanwhile.
    pub async fn finish(
        &self,
        claim: &Claimed,
        finish: Finish,
        delivery: Option<NewDelivery>,
    ) -> Result<bool> {
        Ok(self.write_outcome(claim, finish, delivery, None).await?.0)
    }

    /// [`Queue::finish`], and in the same transaction claims the next due invocation (if any)
    /// for `owner`, leased for `lease`, not of a function in `skip`: a worker's slot goes from one attempt to the next
    /// without a transaction of its own.
    pub async fn finish_and_claim(
        &self,
        claim: &Claimed,
        finish: Finish,
        delivery: Option<NewDelivery>,
        owner: &str,
        lease: Duration,
        skip: Vec<String>,
    ) -> Result<(bool, Option<Claimed>)> {
        let next = model::NextClaim {
            owner: owner.to_string(),
            lease_ms: ms(lease),
            skip,
        };
        self.write_outcome(claim, finish, delivery, Some(next))
            .await
    }

    async fn write_outcome(
        &self,
        claim: &Claimed,
        finish: Finish,
        delivery: Option<NewDelivery>,
        next: Option<model::NextClaim>,
    ) -> Result<model::Written> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let outcome = model::EndedAttempt {
            id: claim.id.clone(),
            token: claim.token,
            attempt: claim.attempt,
            finish,
            delivery,
            next,
        };
        self.writer
            .send(super::Pending::Finish(outcome, tx))
            .await
            .map_err(|_| QueueError::WriterGone)?;
        rx.await.map_err(|_| QueueError::WriterGone)?
    }

    /// Gives a claim back without counting its attempt (shutdown cut it off).
    pub async fn release(&self, claim: &Claimed) -> Result<bool> {
        let sql = self.sql(
            "UPDATE invocations SET state = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'queued' END, \
             attempts = attempts - 1, lease_owner = NULL, lease_expires_at = NULL, run_at = $now \
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        );
        let query = sqlx::query(&sql).bind(claim.id.clone()).bind(claim.token);
        let done = self.now(query, now_ms()).execute(&self.pool).await?;
        if done.rows_affected() == 1 {
            self.announce().await;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Re-queues running invocations whose lease expired (their node died or stalled); with
    /// `all`, every running invocation (an embedded queue at startup: the previous process
    /// is gone; never on a shared queue, where other nodes own them). The interrupted attempt
    /// is not counted as an attempt but as an interruption; the one interrupted for the
    /// `max_interruptions`-th time is dead instead (its attempts keep killing hosts or losing
    /// leases), and returned so its failure can be reported.
    pub async fn requeue_expired(&self, all: bool, max_interruptions: u32) -> Result<Interrupted> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let bury = self.sql(&format!(
            "UPDATE invocations SET state = 'dead', interruptions = interruptions + 1, \
             finished_at = $now, last_error = $3, lease_owner = NULL, lease_expires_at = NULL \
             WHERE state = 'running' AND ($1 = 1 OR lease_expires_at < $now) \
             AND interruptions + 1 >= $2 \
             RETURNING {}",
            schema::CLAIMED_COLUMNS
        ));
        let error = format!(
            "interrupted {max_interruptions} times (the host stopped or lost its lease during \
             the attempt); not run again (max_interruptions)"
        );
        let query = sqlx::query(&bury)
            .bind(i64::from(all))
            .bind(i64::from(max_interruptions))
            .bind(error);
        let rows = self.now(query, now).fetch_all(&mut *tx).await?;
        let dead = rows
            .iter()
            .map(rows::claimed_from_row)
            .collect::<Result<Vec<_>>>()?;
        let requeue = self.sql(
            "UPDATE invocations SET state = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'queued' END, \
             attempts = attempts - 1, interruptions = interruptions + 1, lease_owner = NULL, \
             lease_expires_at = NULL, run_at = $now \
             WHERE state = 'running' AND ($1 = 1 OR lease_expires_at < $now)",
        );
        let query = sqlx::query(&requeue).bind(i64::from(all));
        let requeued = self
            .now(query, now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        if requeued > 0 {
            self.announce().await;
        }
        Ok(Interrupted { requeued, dead })
    }

    /// Adds a destination delivery for an invocation already finished (one that died of
    /// interruptions).
    pub async fn add_delivery(&self, invocation: &str, delivery: NewDelivery) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        batch::insert_deliveries(&mut tx, self.backend, &[(invocation, &delivery)]).await?;
        tx.commit().await?;
        self.work.notify_waiters();
        Ok(())
    }

    /// When the earliest queued or retrying invocation not of a function in `skip` is due (ms,
    /// on this host's clock), if any.
    pub async fn next_due(&self, skip: &[String]) -> Result<Option<i64>> {
        let now = now_ms();
        let names: Vec<String> = (1..=skip.len()).map(|i| format!("${i}")).collect();
        let filter = if skip.is_empty() {
            String::new()
        } else {
            format!(" AND function NOT IN ({})", names.join(", "))
        };
        let sql = self.sql(&format!(
            "SELECT MIN(run_at) - $now FROM invocations WHERE state IN {}{filter}",
            schema::DUE_STATES,
        ));
        let mut query = sqlx::query(&sql);
        for name in skip {
            query = query.bind(name.clone());
        }
        let row = self.now(query, now).fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.map(|wait| now + wait))
    }
}
