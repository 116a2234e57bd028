//! Durable steps and events: a step's record read and written under the attempt's claim, and
//! an event waking the invocations waiting for it. A wake is one transaction that moves each
//! matching `waiting` row to `queued` (the row's lock makes that happen once, whichever node
//! sends the event) and records the payload as the row's step.

use serde::Serialize;
use sqlx::Row;

use super::stmt::Val;
use super::views::{EventView, StepView};
use super::{Finish, Queue, Result, now_ms, rows};

/// What recording a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutStep {
    /// Recorded now, or already recorded: the record that stands (the first).
    Stands(Option<Vec<u8>>),
    /// Refused: the invocation holds `max_steps` steps already.
    TooMany(u32),
    /// Nothing written: the attempt's claim no longer holds.
    Fenced,
}

/// An event to store and deliver.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its name (`order.approved`).
    pub name: String,
    /// What waits match on.
    pub key: String,
    /// Handed to each waiter as its step's result.
    pub payload: Vec<u8>,
    /// A sender's `Idempotency-Key`: the same key again stores and wakes nothing.
    pub idempotency_key: Option<String>,
    /// One invocation per function it starts (`events = [...]`), stored with it; each gets
    /// the event's id as its `fnhost-event-id` header.
    pub starts: Vec<super::NewInvocation>,
}

/// What sending an event did.
#[derive(Debug, Clone, Serialize)]
pub struct EventSent {
    /// The stored event (the earlier one, for a repeated idempotency key).
    pub id: String,
    /// Whether this send stored it (false: a repeat of an earlier send).
    pub new: bool,
    /// The invocations it woke.
    pub woke: Vec<String>,
    /// The invocations it started (functions subscribed to it).
    pub started: Vec<String>,
}

impl Queue {
    /// Step `name` of `invocation`: `Some(None)` for a wait that timed out.
    pub async fn step(&self, invocation: &str, name: &str) -> Result<Option<Option<Vec<u8>>>> {
        let row = sqlx::query("SELECT value FROM steps WHERE invocation_id = $1 AND name = $2")
            .bind(invocation.to_string())
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<Option<Vec<u8>>, _>("value")?),
            None => None,
        })
    }

    /// Records step `name` for the attempt holding `claim` (id, fencing token), unless the
    /// invocation already holds `max_steps` steps; committed when it returns.
    pub async fn put_step(
        &self,
        (invocation, token): (&str, i64),
        name: &str,
        value: Option<Vec<u8>>,
        max_steps: u32,
    ) -> Result<PutStep> {
        let size = value.as_ref().map_or(0, |v| v.len() as i64);
        let sql = self.sql(
            "INSERT INTO steps (invocation_id, name, value, size, created_at) \
             SELECT id, $2, $3, $4, $now FROM invocations \
             WHERE id = $1 AND lease_token = $5 AND state = 'running' \
             AND (SELECT COUNT(*) FROM steps WHERE invocation_id = $1) < $6 \
             ON CONFLICT (invocation_id, name) DO NOTHING",
        );
        let query = sqlx::query(&sql)
            .bind(invocation.to_string())
            .bind(name.to_string())
            .bind(value.clone())
            .bind(size)
            .bind(token)
            .bind(i64::from(max_steps));
        let done = self.now(query, now_ms()).execute(&self.pool).await?;
        if done.rows_affected() == 1 {
            return Ok(PutStep::Stands(value));
        }
        self.why_not_put(invocation, token, name, max_steps).await
    }

    /// Why a step was not inserted: it stands already, the claim is gone, or the limit.
    async fn why_not_put(
        &self,
        invocation: &str,
        token: i64,
        name: &str,
        max_steps: u32,
    ) -> Result<PutStep> {
        if let Some(standing) = self.step(invocation, name).await? {
            return Ok(PutStep::Stands(standing));
        }
        let held = sqlx::query(
            "SELECT COUNT(*) AS n FROM invocations WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(invocation.to_string())
        .bind(token)
        .fetch_one(&self.pool)
        .await?;
        if held.try_get::<i64, _>("n")? == 0 {
            return Ok(PutStep::Fenced);
        }
        Ok(PutStep::TooMany(max_steps))
    }

    /// The steps `invocation` recorded, oldest first.
    pub async fn steps(&self, invocation: &str) -> Result<Vec<StepView>> {
        let rows = sqlx::query(
            "SELECT name, size, created_at FROM steps WHERE invocation_id = $1 ORDER BY created_at, name",
        )
        .bind(invocation.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StepView {
                    name: r.try_get("name")?,
                    at: rows::rfc3339(r.try_get("created_at")?),
                    size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Stores `event` and wakes every invocation waiting for its name and key, in one
    /// transaction; a repeated idempotency key stores and wakes nothing.
    pub async fn send_event(&self, event: NewEvent) -> Result<EventSent> {
        let mut tx = self.pool.begin().await?;
        let id = crate::ids::new_id();
        let insert = self.sql(
            "INSERT INTO events (id, name, key, payload, idempotency_key, received_at) \
             VALUES ($1, $2, $3, $4, $5, $now) ON CONFLICT DO NOTHING",
        );
        let query = sqlx::query(&insert)
            .bind(id.clone())
            .bind(event.name.clone())
            .bind(event.key.clone())
            .bind(event.payload.clone())
            .bind(event.idempotency_key.clone());
        let stored = self.now(query, now_ms()).execute(&mut *tx).await?;
        if stored.rows_affected() == 0 {
            tx.rollback().await?;
            return self.earlier_event(&event).await;
        }
        let woke = self
            .wake(&mut tx, (&event.name, &event.key), &event.payload)
            .await?;
        let started = self.start_subscribers(&mut tx, &id, event.starts).await?;
        sqlx::query("UPDATE events SET woke = $1, started = $2 WHERE id = $3")
            .bind(serde_json::to_string(&woke).unwrap_or_default())
            .bind(serde_json::to_string(&started).unwrap_or_default())
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if !woke.is_empty() || !started.is_empty() {
            self.announce().await;
        }
        Ok(EventSent {
            id,
            new: true,
            woke,
            started,
        })
    }

    /// Stores one invocation per subscriber of event `event_id` (unique per function and
    /// event); their ids.
    async fn start_subscribers(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        event_id: &str,
        starts: Vec<super::NewInvocation>,
    ) -> Result<Vec<String>> {
        let sql = self.sql(
            "INSERT INTO invocations (id, function, event_id, state, method, uri, headers, body, \
             max_attempts, deploy, priority, created_at, run_at) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $now, $now) \
             ON CONFLICT DO NOTHING",
        );
        let mut started = Vec::with_capacity(starts.len());
        for mut inv in starts {
            inv.headers
                .push(("fnhost-event-id".to_string(), event_id.to_string()));
            let query = sqlx::query(&sql)
                .bind(inv.id.clone())
                .bind(inv.function)
                .bind(event_id.to_string())
                .bind(inv.method)
                .bind(inv.uri)
                .bind(serde_json::to_string(&inv.headers).unwrap_or_default())
                .bind(inv.body)
                .bind(i64::from(inv.max_attempts))
                .bind(inv.deploy)
                .bind(i64::from(inv.priority));
            if self
                .now(query, now_ms())
                .execute(&mut **tx)
                .await?
                .rows_affected()
                == 1
            {
                started.push(inv.id);
            }
        }
        Ok(started)
    }

    /// Deletes up to `batch` events received more than `older_than` ago (what they woke and
    /// started has its own rows); how many went.
    pub async fn purge_events(&self, older_than: std::time::Duration, batch: u32) -> Result<u64> {
        let sql = self.sql(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < $now - $1 \
             ORDER BY received_at LIMIT $2)",
        );
        let query = sqlx::query(&sql)
            .bind(super::ms(older_than))
            .bind(i64::from(batch));
        Ok(self
            .now(query, now_ms())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// The stored event `id`, if any.
    pub async fn event(&self, id: &str) -> Result<Option<EventView>> {
        let row = sqlx::query(
            "SELECT id, name, key, LENGTH(payload) AS size, received_at, woke, started FROM events WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(EventView {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                key: r.try_get("key")?,
                size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                received_at: rows::rfc3339(r.try_get("received_at")?),
                woke: serde_json::from_str(&r.try_get::<String, _>("woke")?).unwrap_or_default(),
                started: serde_json::from_str(&r.try_get::<String, _>("started")?)
                    .unwrap_or_default(),
            })
        })
        .transpose()
    }

    /// The event an idempotency key stored before, with what it woke then.
    async fn earlier_event(&self, event: &NewEvent) -> Result<EventSent> {
        let row = sqlx::query(
            "SELECT id, woke, started FROM events WHERE name = $1 AND idempotency_key = $2",
        )
        .bind(event.name.clone())
        .bind(event.idempotency_key.clone())
        .fetch_one(&self.pool)
        .await?;
        Ok(EventSent {
            id: row.try_get("id")?,
            new: false,
            woke: serde_json::from_str(&row.try_get::<String, _>("woke")?).unwrap_or_default(),
            started: serde_json::from_str(&row.try_get::<String, _>("started")?)
                .unwrap_or_default(),
        })
    }

    /// Moves the invocations waiting for `(name, key)` to `queued`, due now, and records
    /// `payload` as each one's step; their ids.
    async fn wake(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        (name, key): (&str, &str),
        payload: &[u8],
    ) -> Result<Vec<String>> {
        let sql = self.sql(
            "UPDATE invocations SET state = 'queued', run_at = $now \
             WHERE state = 'waiting' AND wait_event = $1 AND wait_key = $2 \
             RETURNING id, wait_step",
        );
        let query = sqlx::query(&sql)
            .bind(name.to_string())
            .bind(key.to_string());
        let rows = self.now(query, now_ms()).fetch_all(&mut **tx).await?;
        let mut woke = Vec::with_capacity(rows.len());
        for row in &rows {
            let (id, step): (String, String) = (row.try_get("id")?, row.try_get("wait_step")?);
            self.record_event_step(tx, &id, &step, payload).await?;
            woke.push(id);
        }
        Ok(woke)
    }

    async fn record_event_step(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        invocation: &str,
        step: &str,
        payload: &[u8],
    ) -> Result<()> {
        let sql = self.sql(
            "INSERT INTO steps (invocation_id, name, value, size, created_at) \
             VALUES ($1, $2, $3, $4, $now) ON CONFLICT (invocation_id, name) DO NOTHING",
        );
        let query = sqlx::query(&sql)
            .bind(invocation.to_string())
            .bind(step.to_string())
            .bind(payload.to_vec())
            .bind(payload.len() as i64);
        self.now(query, now_ms()).execute(&mut **tx).await?;
        Ok(())
    }

    /// Wakes the waiting invocations whose event came before their wait was stored (sent
    /// while the attempt that began the wait was still running, or on another node
    /// meanwhile): each with the earliest matching event since its wait began; `only` that
    /// invocation. Run after every wait is recorded, and for all by the sweep.
    pub async fn catch_up_waits(&self, only: Option<&str>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let filter = if only.is_some() { "id = $1 AND " } else { "" };
        let sql = self.sql(&format!(
            "UPDATE invocations SET state = 'queued', run_at = $now \
             WHERE {filter}state = 'waiting' AND EXISTS (SELECT 1 FROM events e \
                 WHERE e.name = invocations.wait_event AND e.key = invocations.wait_key \
                 AND e.received_at >= invocations.wait_since) \
             RETURNING id, wait_step, wait_event, wait_key, wait_since"
        ));
        let mut query = sqlx::query(&sql);
        if let Some(id) = only {
            query = query.bind(id.to_string());
        }
        let rows = self.now(query, now_ms()).fetch_all(&mut *tx).await?;
        for row in &rows {
            let id: String = row.try_get("id")?;
            let event = sqlx::query(
                "SELECT payload FROM events WHERE name = $1 AND key = $2 AND received_at >= $3 \
                 ORDER BY received_at LIMIT 1",
            )
            .bind(row.try_get::<String, _>("wait_event")?)
            .bind(row.try_get::<String, _>("wait_key")?)
            .bind(row.try_get::<i64, _>("wait_since")?)
            .fetch_one(&mut *tx)
            .await?;
            let payload: Vec<u8> = event.try_get("payload")?;
            let step: String = row.try_get("wait_step")?;
            self.record_event_step(&mut tx, &id, &step, &payload)
                .await?;
        }
        tx.commit().await?;
        if !rows.is_empty() {
            self.announce().await;
        }
        Ok(rows.len() as u64)
    }
}

/// Columns 9 to 14 of an ended attempt: 1 when it suspended (the attempt is given back and
/// counted as a suspension), and what it waits for (NULLs unless it waits).
pub(super) fn suspension_vals(finish: &Finish) -> Vec<Val> {
    use crate::workflow::Suspension;
    let wait = match finish {
        Finish::Suspended {
            suspension:
                Suspension::Wait {
                    step,
                    event,
                    key,
                    since_ms,
                    until_ms,
                },
            ..
        } => Some((step, event, key, *since_ms, *until_ms)),
        _ => None,
    };
    let suspended = matches!(finish, Finish::Suspended { .. });
    vec![
        Val::Int(i64::from(suspended)),
        Val::OptText(wait.map(|w| w.0.clone())),
        Val::OptText(wait.map(|w| w.1.clone())),
        Val::OptText(wait.map(|w| w.2.clone())),
        Val::OptInt(wait.map(|w| w.3)),
        Val::OptInt(wait.map(|w| w.4)),
    ]
}
