//! The durable queue of background invocations and destination deliveries; the only module
//! that names sqlx.
//!
//! One interface over two backends through `sqlx`'s `Any` driver, picked by URL: SQLite
//! (`sqlite://…`, embedded default; WAL, `synchronous=FULL` verified on every connection) and
//! PostgreSQL (`postgres://…`). The SQL text is shared except where a dialect must differ
//! ([`schema`]). Times are milliseconds since the epoch: on SQLite the host's clock (one
//! process owns the file); on PostgreSQL the database server's clock, read in the statement
//! (`$now`), so nodes whose clocks disagree still agree on when a lease expires or a retry is
//! due.
//!
//! - [`model`]: states (enums) and the records passed in and out.
//! - `writer`: enqueues and attempt outcomes are group-committed — one writer task drains
//!   whatever is waiting into one transaction; each caller's future resolves only after its
//!   batch commits. Also the PostgreSQL `NOTIFY`/`LISTEN` wake-ups.
//! - `batch`: the statements of one such transaction (one multi-row statement per kind of
//!   write; on SQLite the whole transaction is one command to sqlx's worker thread, on
//!   PostgreSQL one statement); `stmt`: those statements as data, and how they are joined.
//! - `claims`: a claim takes a lease with a fencing token (`lease_token`, bumped on every
//!   claim); heartbeat, completion, failure and release all match on it, so a stale holder
//!   changes nothing. Retry times live in the row (`run_at`), never in memory.
//! - `admin`: status resources, lists, replay, cancel, counts, deliveries.
//! - `schema`: migrations and the statements whose text differs by dialect.

mod admin;
mod batch;
mod claims;
mod deploys;
mod health;
pub mod model;
mod rates;
mod rows;
mod schedules;
mod schema;
mod steps;
mod stmt;
#[cfg(test)]
mod tests;
mod views;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::{Any, AnyPool, Row};
use tokio::sync::{Notify, mpsc, oneshot};

pub use deploys::{CHUNK, CreateError, DeployRecord, Published};
pub use health::{QueueFault, QueueHealth};
pub use model::{
    Claimed, Dedup, Delivery, DeliveryAttempt, DeliveryState, Enqueued, Finish, GuestLine,
    Interrupted, InvocationState, NewDelivery, NewInvocation, StoredResult, UnknownState,
};
pub use rates::RateCount;
pub use steps::{EventSent, NewEvent, PutStep};
pub use views::{Detail, EventView, ResultView, Status, StepView, WaitView};

/// The PostgreSQL channel on which nodes announce new runnable work.
pub const NOTIFY_CHANNEL: &str = "fnhost_work";

/// Most writes one group commit takes.
const MAX_BATCH: usize = 256;

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

/// How long an idempotency key is remembered by default (Stripe's 24 h).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Queue behaviour the site configures.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// How long an `Idempotency-Key` is remembered; after that the key starts afresh.
    pub idempotency_ttl: Duration,
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        QueueSettings {
            idempotency_ttl: IDEMPOTENCY_TTL,
        }
    }
}

/// Which database is behind the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded file.
    Sqlite,
    /// Shared server.
    Postgres,
}

/// The pool: a few connections (SQLite has one writer; PostgreSQL is shared by the nodes),
/// waited for at most [`ACQUIRE_TIMEOUT`], each set up and checked for durability when it
/// connects: WAL and `synchronous=FULL` on SQLite, `synchronous_commit = on` on PostgreSQL.
fn pool_options(backend: Backend) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
        .acquire_timeout(ACQUIRE_TIMEOUT);
    let refuse = |what: String| Err(sqlx::Error::Configuration(what.into()));
    match backend {
        Backend::Sqlite => options.after_connect(move |conn, _| {
            Box::pin(async move {
                sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                sqlx::query("PRAGMA synchronous=FULL").execute(&mut *conn).await?;
                sqlx::query("PRAGMA busy_timeout=10000").execute(&mut *conn).await?;
                let (journal, sync) = admin::sqlite_durability(conn).await?;
                if journal != "wal" || sync != 2 {
                    return refuse(format!("sqlite connection came up with journal_mode={journal}, synchronous={sync}; need wal, 2 (FULL)"));
                }
                Ok(())
            })
        }),
        Backend::Postgres => options.after_connect(move |conn, _| {
            Box::pin(async move {
                sqlx::query("SET synchronous_commit = on").execute(&mut *conn).await?;
                let sync: String = sqlx::query("SHOW synchronous_commit")
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?;
                if sync != "on" {
                    return refuse(format!("postgres connection came up with synchronous_commit={sync}; need on"));
                }
                Ok(())
            })
        }),
    }
}

impl Backend {
    /// The backend a queue URL names.
    fn of(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(QueueError::BadUrl(url.to_string()))
        }
    }

    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A queue failure (the database said no, or is gone). The text is for logs, never clients.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The URL names no supported backend.
    #[error("unsupported queue URL {0:?}: expected sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// The queue could not be opened (the file is no SQLite database, is corrupt, …).
    #[error("cannot open the queue {target}: {reason}")]
    Open {
        /// The file (SQLite) or the URL without its password.
        target: String,
        /// What the database said.
        reason: String,
    },
    /// The database refused or failed; nothing of the statement or batch was stored.
    #[error("queue database ({fault}): {detail}")]
    Db {
        /// What kind of failure, as health and metrics name it.
        fault: QueueFault,
        /// The database's own words.
        detail: String,
    },
    /// A connection came up without the durability settings fnhost requires.
    #[error("queue database: {0}")]
    Durability(String),
    /// A row holds what fnhost never writes.
    #[error("queue database holds an unexpected value: {0}")]
    Corrupt(String),
    /// The writer task is gone (shutting down).
    #[error("queue writer stopped")]
    WriterGone,
}

impl From<sqlx::Error> for QueueError {
    fn from(e: sqlx::Error) -> QueueError {
        QueueError::Db {
            fault: health::fault_of(&e),
            detail: e.to_string(),
        }
    }
}

impl QueueError {
    /// Whether the write may succeed if tried again later (the database is down, full, or
    /// busy): a client is told to come back (`503`), not that fnhost failed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            QueueError::Db { .. } | QueueError::Durability(_) | QueueError::WriterGone
        )
    }
}

type Result<T, E = QueueError> = std::result::Result<T, E>;

pub use crate::ids::now_ms;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments<'q>>;

/// Binds `now` as the last parameter where the statement takes it (SQLite; PostgreSQL reads
/// its own clock).
fn bind_now(backend: Backend, query: Query<'_>, now: i64) -> Query<'_> {
    match backend {
        Backend::Sqlite => query.bind(now),
        Backend::Postgres => query,
    }
}

/// Invocation counts by state, and when they were read.
type CachedCounts = (std::time::Instant, Vec<(InvocationState, i64)>);

/// A write waiting for the group commit, and where its result goes once its batch commits.
enum Pending {
    /// Store a new invocation.
    Enqueue(NewInvocation, oneshot::Sender<Result<Enqueued>>),
    /// Record how an attempt ended (`false`: its claim was fenced out), and maybe claim the
    /// next due invocation for the same worker.
    Finish(model::EndedAttempt, oneshot::Sender<Result<model::Written>>),
}

/// The queue handle; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pool: AnyPool,
    backend: Backend,
    /// This process's name in NOTIFY payloads (its own notifications are not news to it).
    node: Arc<str>,
    writer: mpsc::Sender<Pending>,
    /// Signalled after every commit of new work, so idle workers wake at once.
    work: Arc<Notify>,
    /// The latest counts by state and when they were taken: health answers from them, so a
    /// busy health check costs one scan per [`COUNTS_MAX_AGE`], not one per call.
    counts: Arc<tokio::sync::Mutex<Option<CachedCounts>>>,
    /// Whether writes are failing now, since when and why.
    health: Arc<health::Tracker>,
    /// Signalled when a deploy is published (here, or by another node's `NOTIFY`).
    published_changed: Arc<Notify>,
}

/// How long a caller waits for a database connection before the write is refused: a client
/// whose request cannot be stored hears `503` within this, not after sqlx's 30 s default.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How old the counts behind `/.fnhost/health` may be.
pub const COUNTS_MAX_AGE: Duration = Duration::from_secs(5);

impl Queue {
    /// Opens (creating when needed) the queue at `url` with the default settings.
    pub async fn open(url: &str) -> Result<Queue> {
        Queue::open_with(url, QueueSettings::default()).await
    }

    /// Opens (creating when needed) the queue at `url` and starts its writer task: the
    /// backend the URL names, a pool whose every connection is checked for durability, the
    /// migrations, then the writer (and on PostgreSQL the listener).
    pub async fn open_with(url: &str, settings: QueueSettings) -> Result<Queue> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        if backend == Backend::Sqlite {
            // A file that is no database fails each pooled connection's setup, which the pool
            // would retry for its whole timeout: check it once, now, naming it.
            health::check_sqlite_file(&url).await?;
        }
        let pool = pool_options(backend).connect(&url).await?;
        (schema::migrate(&pool, backend).await).map_err(|e| health::opening(&url, e))?;
        let (tx, rx) = mpsc::channel::<Pending>(4096);
        let queue = Queue {
            pool,
            backend,
            node: crate::ids::new_id()[..12].into(),
            writer: tx,
            work: Arc::new(Notify::new()),
            counts: Arc::default(),
            health: Arc::new(health::Tracker::default()),
            published_changed: Arc::new(Notify::new()),
        };
        if backend == Backend::Postgres {
            // Listening before the first claim: work committed by another node from now on
            // wakes this one. Fails startup if the server refuses a listener.
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener
                .listen_all([NOTIFY_CHANNEL, deploys::DEPLOY_CHANNEL])
                .await?;
            tokio::spawn(writer::listen(
                listener,
                queue.node.clone(),
                queue.work.clone(),
                queue.published_changed.clone(),
            ));
        }
        tokio::spawn(writer::run(
            queue.pool.clone(),
            backend,
            queue.node.clone(),
            settings.idempotency_ttl,
            rx,
            queue.work.clone(),
            queue.health.clone(),
        ));
        Ok(queue)
    }

    /// The statement `template` with its `$now` resolved for this backend.
    fn sql(&self, template: &str) -> String {
        schema::with_now(self.backend, template)
    }

    /// Binds `now` as the last parameter where the statement takes it (SQLite).
    fn now<'q>(&self, query: Query<'q>, now: i64) -> Query<'q> {
        bind_now(self.backend, query, now)
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

    /// Resolves at the next commit of runnable work (or a wake-up from another node). Call
    /// `enable` on the pinned future before looking for work, so a commit in between is not
    /// missed.
    pub fn work_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.work.notified()
    }

    /// Stores `inv` durably; resolves once its batch has committed.
    pub async fn enqueue(&self, inv: NewInvocation) -> Result<Enqueued> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Pending::Enqueue(inv, tx))
            .await
            .map_err(|_| QueueError::WriterGone)?;
        rx.await.map_err(|_| QueueError::WriterGone)?
    }
}
