//! What admins and status readers ask of the queue: a status resource, lists, replay and
//! cancel, counts, durability settings; and the destination deliveries' bookkeeping.

use std::time::Duration;

use sqlx::Row;

use super::rows::{self, STATUS_COLUMNS};
use super::{
    Backend, Delivery, DeliveryAttempt, InvocationState, Queue, Result, Status, now_ms, schema,
};

impl Queue {
    /// Durability settings as a fresh pool connection reports them.
    pub async fn durability(&self) -> Result<serde_json::Value> {
        let mut conn = self.pool.acquire().await?;
        Ok(match self.backend {
            Backend::Sqlite => {
                let (journal, sync) = sqlite_durability(&mut conn).await?;
                let sync = match sync {
                    2 => "full".to_string(),
                    n => n.to_string(),
                };
                serde_json::json!({ "backend": "sqlite", "journal_mode": journal, "synchronous": sync })
            }
            Backend::Postgres => {
                let sync: String = sqlx::query("SHOW synchronous_commit")
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?;
                let fsync: String = sqlx::query("SHOW fsync")
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?;
                serde_json::json!({ "backend": "postgres", "synchronous_commit": sync, "fsync": fsync })
            }
        })
    }

    /// The status resource of one invocation.
    pub async fn status(&self, id: &str) -> Result<Option<Status>> {
        let row = sqlx::query(&format!(
            "SELECT {STATUS_COLUMNS} FROM invocations WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut status) = row.as_ref().map(rows::status_from_row).transpose()? else {
            return Ok(None);
        };
        status.steps = self.steps(id).await?;
        Ok(Some(status))
    }

    /// Everything stored about one invocation (status, request, attempts, deliveries, logs).
    pub async fn detail(&self, id: &str) -> Result<Option<super::Detail>> {
        let Some(status) = self.status(id).await? else {
            return Ok(None);
        };
        let request = self
            .rows_for(
                "SELECT method, uri, headers, body FROM invocations WHERE id = $1",
                id,
                rows::request_view,
            )
            .await?
            .pop()
            .ok_or_else(|| super::QueueError::Corrupt(format!("invocation {id} vanished")))?;
        let attempts = self
            .rows_for(
                "SELECT attempt, started_at, finished_at, outcome, error FROM attempts \
                 WHERE invocation_id = $1 ORDER BY finished_at",
                id,
                rows::attempt_view,
            )
            .await?;
        let deliveries = self
            .rows_for(
                "SELECT url, state, attempts, last_error FROM deliveries \
                 WHERE invocation_id = $1 ORDER BY created_at",
                id,
                rows::delivery_view,
            )
            .await?;
        let logs = self
            .rows_for(
                "SELECT attempt, at, stream, line FROM guest_logs \
                 WHERE invocation_id = $1 ORDER BY at, seq",
                id,
                rows::log_view,
            )
            .await?;
        Ok(Some(super::Detail {
            status,
            request,
            attempts,
            deliveries,
            logs,
        }))
    }

    /// The rows of `sql` (which binds the invocation id as `$1`), each read by `read`.
    async fn rows_for<T>(
        &self,
        sql: &str,
        id: &str,
        read: fn(&sqlx::any::AnyRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        let rows = sqlx::query(sql)
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(read).collect()
    }

    /// Invocations, newest first, filtered by function and state.
    pub async fn list(
        &self,
        function: Option<&str>,
        state: Option<InvocationState>,
        limit: u32,
        with_bodies: bool,
    ) -> Result<Vec<Status>> {
        let columns = if with_bodies {
            STATUS_COLUMNS
        } else {
            rows::STATUS_COLUMNS_NO_BODY
        };
        let rows = sqlx::query(&schema::list_sql(self.backend, columns))
            .bind(function.map(str::to_string))
            .bind(state.map(|s| s.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| rows::status_from_row_with(r, with_bodies))
            .collect()
    }

    /// Runs a dead invocation again from attempt 1, on `deploy` when given (else on the deploy
    /// it was accepted under). `false` unless it was dead. (An expired one is not replayed: its
    /// age counts from its acceptance, so it would expire again.)
    pub async fn replay(&self, id: &str, deploy: Option<&str>) -> Result<bool> {
        let sql = self.sql(
            "UPDATE invocations SET state = 'queued', attempts = 0, run_at = $now, finished_at = NULL, last_error = NULL, \
             deploy = COALESCE($2, deploy) WHERE id = $1 AND state = 'dead'",
        );
        let query = sqlx::query(&sql)
            .bind(id.to_string())
            .bind(deploy.map(str::to_string));
        let done = self.noted(
            self.now(query, now_ms())
                .execute(&self.pool)
                .await
                .map_err(Into::into),
        )?;
        if done.rows_affected() == 1 {
            self.announce().await;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Makes a retry that is waiting for its delay due at once. `false` unless it was retrying.
    pub async fn run_now(&self, id: &str) -> Result<bool> {
        let sql =
            self.sql("UPDATE invocations SET run_at = $now WHERE id = $1 AND state = 'retrying'");
        let query = sqlx::query(&sql).bind(id.to_string());
        let done = self.noted(
            self.now(query, now_ms())
                .execute(&self.pool)
                .await
                .map_err(Into::into),
        )?;
        if done.rows_affected() == 1 {
            self.announce().await;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Cancels an invocation that is waiting to run. `false` unless it was queued or retrying.
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        let sql = self.sql(
            "UPDATE invocations SET state = 'cancelled', finished_at = $now WHERE id = $1 AND state IN ('queued', 'retrying', 'sleeping', 'waiting')",
        );
        let query = sqlx::query(&sql).bind(id.to_string());
        let done = self.noted(
            self.now(query, now_ms())
                .execute(&self.pool)
                .await
                .map_err(Into::into),
        )?;
        Ok(done.rows_affected() == 1)
    }

    /// Deliveries due now (on PostgreSQL, taken by this node for a while: see
    /// [`schema::due_deliveries_sql`]).
    pub async fn due_deliveries(&self, limit: u32) -> Result<Vec<Delivery>> {
        let sql = schema::due_deliveries_sql(self.backend);
        let query = sqlx::query(&sql).bind(i64::from(limit));
        let rows = self.now(query, now_ms()).fetch_all(&self.pool).await?;
        rows.iter().map(rows::delivery_from_row).collect()
    }

    /// Makes taken deliveries due again at once (shutdown came before they were sent; on
    /// PostgreSQL another node would otherwise wait out the taking).
    pub async fn hand_back_deliveries(&self, ids: &[String]) -> Result<()> {
        let sql =
            self.sql("UPDATE deliveries SET next_at = $now WHERE id = $1 AND state = 'pending'");
        let now = now_ms();
        for id in ids {
            let query = sqlx::query(&sql).bind(id.clone());
            self.now(query, now).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Records a delivery attempt.
    pub async fn delivery_attempted(&self, id: &str, attempt: DeliveryAttempt) -> Result<()> {
        let now = now_ms();
        let (error, retry_at) = match &attempt {
            DeliveryAttempt::Delivered => (None, None),
            DeliveryAttempt::Failed { error, retry_at } => (Some(error.clone()), *retry_at),
        };
        let sql = self.sql(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, last_error = $2, next_at = COALESCE($now + $3, next_at) WHERE id = $4",
        );
        let query = sqlx::query(&sql)
            .bind(attempt.state().as_str())
            .bind(error)
            .bind(retry_at.map(|t| t - now))
            .bind(id.to_string());
        self.now(query, now).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes up to `batch` invocations that finished (succeeded, dead, cancelled, expired) more than
    /// `older_than` ago and have no delivery still pending, with their deliveries. Returns how
    /// many invocations went. Per function, the latest schedule tick stays (catch-up reads it).
    pub async fn purge_finished(&self, older_than: Duration, batch: u32) -> Result<u64> {
        let now = now_ms();
        let pick = self.sql(
            "SELECT id FROM invocations WHERE state IN ('succeeded', 'dead', 'cancelled', 'expired') \
             AND finished_at < $now - $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
             WHERE d.invocation_id = invocations.id AND d.state = 'pending') \
             AND (tick IS NULL OR tick < (SELECT MAX(k.tick) FROM invocations k \
                      WHERE k.function = invocations.function)) \
             ORDER BY finished_at LIMIT $2",
        );
        let query = sqlx::query(&pick)
            .bind(super::ms(older_than))
            .bind(i64::from(batch));
        let ids: Vec<String> = self
            .now(query, now)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let list = (1..=ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = self.pool.begin().await?;
        for table_where in [
            format!("DELETE FROM deliveries WHERE invocation_id IN ({list})"),
            format!("DELETE FROM attempts WHERE invocation_id IN ({list})"),
            format!("DELETE FROM guest_logs WHERE invocation_id IN ({list})"),
            format!("DELETE FROM steps WHERE invocation_id IN ({list})"),
            format!("DELETE FROM invocations WHERE id IN ({list})"),
        ] {
            let mut query = sqlx::query(&table_where);
            for id in &ids {
                query = query.bind(id.clone());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// The latest schedule tick stored for `function` (RFC 3339), if any.
    pub async fn latest_tick(&self, function: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT MAX(tick) FROM invocations WHERE function = $1")
            .bind(function.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<String>, _>(0)?)
    }

    /// Counts by state no older than [`super::COUNTS_MAX_AGE`]: one caller scans, the others
    /// wait for it and share the result.
    pub async fn recent_counts(&self) -> Result<Vec<(InvocationState, i64)>> {
        let mut cached = self.counts.lock().await;
        if let Some((at, counts)) = &*cached
            && at.elapsed() < super::COUNTS_MAX_AGE
        {
            return Ok(counts.clone());
        }
        let counts = self.counts().await?;
        *cached = Some((std::time::Instant::now(), counts.clone()));
        Ok(counts)
    }

    /// Counts of invocations by state (for health, metrics and tests).
    pub async fn counts(&self) -> Result<Vec<(InvocationState, i64)>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM invocations GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((rows::state_from_row(r, "state")?, r.try_get("n")?)))
            .collect()
    }
}

pub(super) async fn sqlite_durability(
    conn: &mut sqlx::AnyConnection,
) -> Result<(String, i64), sqlx::Error> {
    let journal: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    Ok((journal.to_ascii_lowercase(), sync))
}
