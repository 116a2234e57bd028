//! The durable queue of background invocations and destination deliveries.
//!
//! One interface over two backends through `sqlx`'s `Any` driver, picked by URL: SQLite
//! (`sqlite://…`, embedded default; WAL, `synchronous=FULL` verified on every connection) and
//! PostgreSQL (`postgres://…`). The SQL text is shared except where a dialect must differ
//! ([`schema`]). Times are milliseconds since the epoch: on SQLite the host's clock (one
//! process owns the file); on PostgreSQL the database server's clock, read in the statement
//! (`$now`), so nodes whose clocks disagree still agree on when a lease expires or a retry is
//! due.
//!
//! - Enqueues are group-committed: one writer task drains whatever is waiting into one
//!   transaction; each caller's future resolves only after its batch commits.
//! - A claim takes a lease with a fencing token (`lease_token`, bumped on every claim);
//!   heartbeat, completion, failure and release all match on it, so a stale holder changes
//!   nothing.
//! - Retry times live in the row (`run_at`); nothing about the schedule is kept in memory.
//! - On PostgreSQL every commit that makes work runnable also `NOTIFY`s [`NOTIFY_CHANNEL`],
//!   and each node `LISTEN`s on it, so idle workers on every node wake at once.

mod schema;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row};
use tokio::sync::{Notify, mpsc, oneshot};

/// Which database is behind the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded file.
    Sqlite,
    /// Shared server.
    Postgres,
}

/// A queue failure (the database said no, or is gone).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The URL names no supported backend.
    #[error("unsupported queue URL {0:?}: expected sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// The database refused or failed.
    #[error("queue database: {0}")]
    Db(#[from] sqlx::Error),
    /// A connection came up without the durability settings fnhost requires.
    #[error("queue database: {0}")]
    Durability(String),
    /// The writer task is gone (shutting down).
    #[error("queue writer stopped")]
    WriterGone,
}

type Result<T, E = QueueError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A request to run, as accepted.
#[derive(Debug, Clone)]
pub struct NewInvocation {
    /// Unguessable id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// Client's `Idempotency-Key`, scoped to the function.
    pub idempotency_key: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Attempts allowed in all.
    pub max_attempts: u32,
}

/// Result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored now.
    New(String),
    /// The idempotency key was seen before: the earlier invocation's id; nothing stored.
    Existing(String),
}

impl Enqueued {
    /// The id either way.
    pub fn id(&self) -> &str {
        match self {
            Enqueued::New(id) | Enqueued::Existing(id) => id,
        }
    }
}

/// An invocation claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Invocation id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// Fencing token of this claim.
    pub token: i64,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

/// What one attempt produced, stored with its outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoredResult {
    /// Response status, if the function answered.
    pub status: Option<u16>,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body (capped).
    pub body: Vec<u8>,
}

/// How an attempt ended, as the queue records it.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Done: `succeeded`.
    Succeeded(StoredResult),
    /// Failed; run again at this time: `retrying`.
    Retry {
        /// Why it failed.
        error: String,
        /// What it answered, if anything.
        result: StoredResult,
        /// When to run it again (ms).
        run_at: i64,
    },
    /// Failed for the last time: `dead`.
    Dead {
        /// Why it failed.
        error: String,
        /// What it answered, if anything.
        result: StoredResult,
    },
}

/// A destination record to deliver, written in the same transaction as the outcome.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Where to POST it.
    pub url: String,
    /// The JSON record.
    pub payload: String,
}

/// A delivery due now.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Delivery id.
    pub id: String,
    /// Invocation it reports.
    pub invocation_id: String,
    /// Where to POST.
    pub url: String,
    /// JSON record.
    pub payload: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// The status resource of an invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Invocation id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// `queued`, `running`, `retrying`, `succeeded`, `dead` or `cancelled`.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// RFC 3339 times.
    pub created_at: String,
    /// Start of the latest attempt.
    pub started_at: Option<String>,
    /// When it reached an end state.
    pub finished_at: Option<String>,
    /// When the next attempt is due (queued or retrying).
    pub next_attempt_at: Option<String>,
    /// Why the latest attempt failed.
    pub last_error: Option<String>,
    /// What the function answered on its latest attempt.
    pub result: Option<ResultView>,
}

/// A stored response, for the status resource.
#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body, lossy UTF-8.
    pub body: String,
}

/// The PostgreSQL channel on which nodes announce new runnable work.
pub const NOTIFY_CHANNEL: &str = "fnhost_work";

type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments<'q>>;

/// The queue handle; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pool: AnyPool,
    backend: Backend,
    /// This process's name in NOTIFY payloads (its own notifications are not news to it).
    node: Arc<str>,
    writer: mpsc::Sender<(NewInvocation, oneshot::Sender<Result<Enqueued>>)>,
    /// Signalled after every commit of new work, so idle workers wake at once.
    pub work: Arc<Notify>,
}

/// Most enqueues one group commit takes.
const MAX_BATCH: usize = 256;

impl Queue {
    /// Opens (creating when needed) the queue at `url` and starts its writer task.
    pub async fn open(url: &str) -> Result<Queue> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(QueueError::BadUrl(url.to_string()));
        };
        let options =
            AnyPoolOptions::new().max_connections(if backend == Backend::Sqlite { 4 } else { 8 });
        let options = match backend {
            Backend::Sqlite => options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous=FULL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout=10000").execute(&mut *conn).await?;
                    let (journal, sync) = sqlite_durability(conn).await?;
                    if journal != "wal" || sync != 2 {
                        return Err(sqlx::Error::Configuration(
                            format!("sqlite connection came up with journal_mode={journal}, synchronous={sync}; need wal, 2 (FULL)").into(),
                        ));
                    }
                    Ok(())
                })
            }),
            Backend::Postgres => options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET synchronous_commit = on").execute(&mut *conn).await?;
                    let sync: String = sqlx::query("SHOW synchronous_commit")
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get(0)?;
                    if sync != "on" {
                        return Err(sqlx::Error::Configuration(
                            format!("postgres connection came up with synchronous_commit={sync}; need on").into(),
                        ));
                    }
                    Ok(())
                })
            }),
        };
        let url = if backend == Backend::Sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_string()
        };
        let pool = options.connect(&url).await?;
        schema::migrate(&pool, backend).await?;
        let (tx, rx) = mpsc::channel(4096);
        let work = Arc::new(Notify::new());
        let node: Arc<str> = crate::app::new_invocation_id()[..12].into();
        if backend == Backend::Postgres {
            // Listening before the first claim: work committed by another node from now on
            // wakes this one. Fails startup if the server refuses a listener.
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            tokio::spawn(listen(listener, node.clone(), work.clone()));
        }
        tokio::spawn(writer(
            pool.clone(),
            backend,
            node.clone(),
            rx,
            work.clone(),
        ));
        Ok(Queue {
            pool,
            backend,
            node,
            writer: tx,
            work,
        })
    }

    /// The statement `template` with its `$now` resolved for this backend.
    fn sql(&self, template: &str) -> String {
        schema::with_now(self.backend, template)
    }

    /// Binds `now` as the last parameter where the statement takes it (SQLite).
    fn now<'q>(&self, query: Query<'q>, now: i64) -> Query<'q> {
        match self.backend {
            Backend::Sqlite => query.bind(now),
            Backend::Postgres => query,
        }
    }

    /// Wakes idle workers: this process's at once, other nodes' through NOTIFY.
    async fn announce(&self) {
        self.work.notify_waiters();
        if self.backend == Backend::Postgres
            && let Err(e) = notify(&self.pool, &self.node).await
        {
            tracing::warn!("cannot notify other nodes of new work: {e}");
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

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

    /// Stores `inv` durably; resolves once its batch has committed.
    pub async fn enqueue(&self, inv: NewInvocation) -> Result<Enqueued> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send((inv, tx))
            .await
            .map_err(|_| QueueError::WriterGone)?;
        rx.await.map_err(|_| QueueError::WriterGone)?
    }

    /// Claims up to `limit` due invocations for `owner`, leasing each for `lease`.
    pub async fn claim(&self, owner: &str, limit: usize, lease: Duration) -> Result<Vec<Claimed>> {
        let sql = schema::claim_sql(self.backend);
        let query = sqlx::query(&sql)
            .bind(owner.to_string())
            .bind(ms(lease))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.now(query, now_ms()).fetch_all(&self.pool).await?;
        rows.iter().map(claimed_from_row).collect()
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

    /// Records how an attempt ended, plus any destination delivery, in one transaction.
    /// `false` (and nothing written) when the claim was fenced out meanwhile.
    pub async fn finish(
        &self,
        claim: &Claimed,
        finish: Finish,
        delivery: Option<NewDelivery>,
    ) -> Result<bool> {
        let now = now_ms();
        // The retry time is stored as a delay from `$now` (on SQLite `now` itself, so the
        // stored time is exactly `run_at`; on PostgreSQL the same delay on the server's clock).
        let (state, error, result, delay) = match finish {
            Finish::Succeeded(r) => ("succeeded", None, r, None),
            Finish::Retry {
                error,
                result,
                run_at,
            } => ("retrying", Some(error), result, Some(run_at - now)),
            Finish::Dead { error, result } => ("dead", Some(error), result, None),
        };
        let mut tx = self.pool.begin().await?;
        let sql = self.sql(
            "UPDATE invocations SET state = $1, last_error = $2, run_at = COALESCE($now + $3, run_at), \
             finished_at = CASE WHEN $1 = 'retrying' THEN NULL ELSE $now END, \
             result_status = $4, result_headers = $5, result_body = $6, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $7 AND lease_token = $8 AND state = 'running'",
        );
        let query = sqlx::query(&sql)
            .bind(state)
            .bind(error)
            .bind(delay)
            .bind(result.status.map(i64::from))
            .bind(serde_json::to_string(&result.headers).unwrap_or_default())
            .bind(result.body)
            .bind(claim.id.clone())
            .bind(claim.token);
        let done = self.now(query, now).execute(&mut *tx).await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let retrying = delay.is_some();
        let delivering = delivery.is_some();
        if let Some(d) = delivery {
            self.insert_delivery(&mut tx, &claim.id, d, now).await?;
        }
        if self.backend == Backend::Postgres && (retrying || delivering) {
            // A retry is runnable later and a delivery now, by any node: tell them.
            notify(&mut *tx, &self.node).await?;
        }
        tx.commit().await?;
        self.work.notify_waiters();
        Ok(true)
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
    /// is not counted. Returns how many.
    pub async fn requeue_expired(&self, all: bool) -> Result<u64> {
        let sql = self.sql(
            "UPDATE invocations SET state = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'queued' END, \
             attempts = attempts - 1, lease_owner = NULL, lease_expires_at = NULL, run_at = $now \
             WHERE state = 'running' AND ($1 = 1 OR lease_expires_at < $now)",
        );
        let query = sqlx::query(&sql).bind(i64::from(all));
        let done = self.now(query, now_ms()).execute(&self.pool).await?;
        if done.rows_affected() > 0 {
            self.announce().await;
        }
        Ok(done.rows_affected())
    }

    /// When the earliest queued or retrying invocation is due (ms, on this host's clock), if any.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        let now = now_ms();
        let sql = self.sql(
            "SELECT MIN(run_at) - $now FROM invocations WHERE state IN ('queued', 'retrying')",
        );
        let row = self
            .now(sqlx::query(&sql), now)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.map(|wait| now + wait))
    }

    /// The status resource of one invocation.
    pub async fn status(&self, id: &str) -> Result<Option<Status>> {
        let row = sqlx::query(&format!(
            "SELECT {STATUS_COLUMNS} FROM invocations WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(status_from_row).transpose()
    }

    /// Invocations, newest first, filtered by function and state.
    pub async fn list(
        &self,
        function: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Status>> {
        let rows = sqlx::query(&schema::list_sql(self.backend, STATUS_COLUMNS))
            .bind(function.map(str::to_string))
            .bind(state.map(str::to_string))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(status_from_row).collect()
    }

    /// Runs a dead invocation again from attempt 1. `false` unless it was dead.
    pub async fn replay(&self, id: &str) -> Result<bool> {
        let sql = self.sql(
            "UPDATE invocations SET state = 'queued', attempts = 0, run_at = $now, finished_at = NULL, last_error = NULL \
             WHERE id = $1 AND state = 'dead'",
        );
        let query = sqlx::query(&sql).bind(id.to_string());
        let done = self.now(query, now_ms()).execute(&self.pool).await?;
        if done.rows_affected() == 1 {
            self.announce().await;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Cancels an invocation that is waiting to run. `false` unless it was queued or retrying.
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        let sql = self.sql(
            "UPDATE invocations SET state = 'cancelled', finished_at = $now WHERE id = $1 AND state IN ('queued', 'retrying')",
        );
        let query = sqlx::query(&sql).bind(id.to_string());
        let done = self.now(query, now_ms()).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deliveries due now (on PostgreSQL, taken by this node for a while: see
    /// [`schema::due_deliveries_sql`]).
    pub async fn due_deliveries(&self, limit: u32) -> Result<Vec<Delivery>> {
        let sql = schema::due_deliveries_sql(self.backend);
        let query = sqlx::query(&sql).bind(i64::from(limit));
        let rows = self.now(query, now_ms()).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.try_get("id")?,
                    invocation_id: r.try_get("invocation_id")?,
                    url: r.try_get("url")?,
                    payload: r.try_get("payload")?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Records a delivery attempt: delivered, retry at `next_at` (ms, this host's clock), or
    /// given up (`None`).
    pub async fn delivery_attempted(
        &self,
        id: &str,
        delivered: bool,
        error: Option<String>,
        next_at: Option<i64>,
    ) -> Result<()> {
        let state = if delivered {
            "delivered"
        } else if next_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        let now = now_ms();
        let sql = self.sql(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, last_error = $2, next_at = COALESCE($now + $3, next_at) WHERE id = $4",
        );
        let query = sqlx::query(&sql)
            .bind(state)
            .bind(error)
            .bind(next_at.map(|t| t - now))
            .bind(id.to_string());
        self.now(query, now).execute(&self.pool).await?;
        Ok(())
    }

    /// Counts of invocations by state (for metrics and tests).
    pub async fn counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) FROM invocations GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}

async fn sqlite_durability(conn: &mut sqlx::AnyConnection) -> Result<(String, i64), sqlx::Error> {
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

impl Queue {
    async fn insert_delivery(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        invocation: &str,
        d: NewDelivery,
        now: i64,
    ) -> Result<()> {
        let sql = self.sql(
            "INSERT INTO deliveries (id, invocation_id, url, payload, state, attempts, next_at, created_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $now, $now)",
        );
        let query = sqlx::query(&sql)
            .bind(crate::app::new_invocation_id())
            .bind(invocation.to_string())
            .bind(d.url)
            .bind(d.payload);
        self.now(query, now).execute(&mut **tx).await?;
        Ok(())
    }
}

/// `NOTIFY`s the work channel (delivered to listeners when the surrounding transaction, if
/// any, commits). The payload names the sender, which ignores its own notifications.
async fn notify<'c, E>(executor: E, node: &str) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(node.to_string())
        .execute(executor)
        .await?;
    Ok(())
}

/// Turns other nodes' notifications into wake-ups of this node's idle workers. After the
/// connection drops (notifications sent meanwhile are lost) it wakes them anyway, and the
/// listener reconnects on the next receive; workers also poll at least once a second.
async fn listen(mut listener: sqlx::postgres::PgListener, node: Arc<str>, work: Arc<Notify>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) if n.payload() == &*node => {}
            Ok(Some(_)) => work.notify_waiters(),
            Ok(None) => {
                tracing::warn!("queue listener lost its connection; reconnecting");
                work.notify_waiters();
            }
            Err(e) => {
                tracing::warn!("queue listener failed: {e}; retrying in 1 s");
                work.notify_waiters();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The group-commit writer: one transaction per batch of waiting enqueues.
async fn writer(
    pool: AnyPool,
    backend: Backend,
    node: Arc<str>,
    mut rx: mpsc::Receiver<(NewInvocation, oneshot::Sender<Result<Enqueued>>)>,
    work: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let invs: Vec<&NewInvocation> = batch.iter().map(|(inv, _)| inv).collect();
        match write_batch(&pool, backend, &node, &invs).await {
            Ok(results) => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(Ok(result));
                }
                work.notify_waiters();
            }
            Err(e) => {
                tracing::error!("enqueue batch of {} failed: {e}", batch.len());
                let msg = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(QueueError::Durability(msg.clone())));
                }
            }
        }
    }
}

async fn write_batch(
    pool: &AnyPool,
    backend: Backend,
    node: &str,
    invs: &[&NewInvocation],
) -> Result<Vec<Enqueued>> {
    let now = now_ms();
    let insert = schema::insert_sql(backend);
    // Inserted in (function, key) order, the same on every node: two nodes' batches holding
    // idempotency keys the other wants wait for each other in one direction only, never in a
    // cycle (a deadlock would fail both batches). Stable: among repeats of a key in one batch
    // the first request stays the one stored.
    let mut order: Vec<usize> = (0..invs.len()).collect();
    order.sort_by(|&a, &b| {
        (&invs[a].function, &invs[a].idempotency_key)
            .cmp(&(&invs[b].function, &invs[b].idempotency_key))
    });
    let mut tx = pool.begin().await?;
    let mut out = vec![None; invs.len()];
    for i in order {
        let inv = invs[i];
        let query = sqlx::query(&insert)
            .bind(inv.id.clone())
            .bind(inv.function.clone())
            .bind(inv.idempotency_key.clone())
            .bind(inv.method.clone())
            .bind(inv.uri.clone())
            .bind(serde_json::to_string(&inv.headers).unwrap_or_default())
            .bind(inv.body.clone())
            .bind(i64::from(inv.max_attempts));
        let query = match backend {
            Backend::Sqlite => query.bind(now),
            Backend::Postgres => query,
        };
        let inserted = query.execute(&mut *tx).await?;
        out[i] = Some(if inserted.rows_affected() == 1 {
            Enqueued::New(inv.id.clone())
        } else {
            let row = sqlx::query(
                "SELECT id FROM invocations WHERE function = $1 AND idempotency_key = $2",
            )
            .bind(inv.function.clone())
            .bind(inv.idempotency_key.clone())
            .fetch_one(&mut *tx)
            .await?;
            Enqueued::Existing(row.try_get(0)?)
        });
    }
    let out: Vec<Enqueued> = out.into_iter().flatten().collect();
    if backend == Backend::Postgres && out.iter().any(|e| matches!(e, Enqueued::New(_))) {
        // Delivered to the other nodes' listeners by the commit itself.
        notify(&mut *tx, node).await?;
    }
    tx.commit().await?;
    Ok(out)
}

const STATUS_COLUMNS: &str = "id, function, state, attempts, max_attempts, created_at, started_at, finished_at, run_at, \
     last_error, result_status, result_headers, result_body";

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn status_from_row(r: &AnyRow) -> Result<Status> {
    let state: String = r.try_get("state")?;
    let waiting = state == "queued" || state == "retrying";
    let result = match r.try_get::<Option<i64>, _>("result_status")? {
        Some(status) => Some(ResultView {
            status: u16::try_from(status).unwrap_or(0),
            headers: serde_json::from_str(
                &r.try_get::<Option<String>, _>("result_headers")?
                    .unwrap_or_default(),
            )
            .unwrap_or_default(),
            body: String::from_utf8_lossy(
                &r.try_get::<Option<Vec<u8>>, _>("result_body")?
                    .unwrap_or_default(),
            )
            .into_owned(),
        }),
        None => None,
    };
    Ok(Status {
        id: r.try_get("id")?,
        function: r.try_get("function")?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
        max_attempts: u32::try_from(r.try_get::<i64, _>("max_attempts")?).unwrap_or(0),
        created_at: rfc3339(r.try_get("created_at")?),
        started_at: r.try_get::<Option<i64>, _>("started_at")?.map(rfc3339),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(rfc3339),
        next_attempt_at: if waiting {
            Some(rfc3339(r.try_get("run_at")?))
        } else {
            None
        },
        last_error: r.try_get("last_error")?,
        result,
        state,
    })
}

fn claimed_from_row(r: &AnyRow) -> Result<Claimed> {
    Ok(Claimed {
        id: r.try_get("id")?,
        function: r.try_get("function")?,
        attempt: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(1),
        max_attempts: u32::try_from(r.try_get::<i64, _>("max_attempts")?).unwrap_or(1),
        token: r.try_get("lease_token")?,
        method: r.try_get("method")?,
        uri: r.try_get("uri")?,
        headers: serde_json::from_str(&r.try_get::<String, _>("headers")?).unwrap_or_default(),
        body: r.try_get("body")?,
    })
}
