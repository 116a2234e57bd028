//! The group-commit writer — one transaction per batch of waiting writes: enqueues and the
//! outcomes of finished attempts (with their destination records) — and, on PostgreSQL, the
//! `NOTIFY`/`LISTEN` wake-ups between nodes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyPool};
use tokio::sync::{Notify, mpsc};

use super::schema;
use super::{
    Backend, Claimed, Finish, NewDelivery, NewInvocation, Pending, QueueError, Result, model,
    now_ms,
};

/// How one attempt ended, waiting for its batch: the claim it answers (id, fencing token),
/// and whether its worker wants the next due invocation claimed in the same transaction.
pub(super) struct Outcome {
    pub id: String,
    pub token: i64,
    pub attempt: u32,
    pub finish: Finish,
    pub delivery: Option<NewDelivery>,
    pub next: Option<NextClaim>,
}

/// A claim to make for a worker after its outcome is written.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct NextClaim {
    pub owner: String,
    pub lease_ms: i64,
    /// Functions not to claim (at their concurrency cap on the worker's node).
    pub skip: Vec<String>,
}

/// What a written outcome reports: whether its claim still held, and the next claim made.
pub(super) type Written = (bool, Option<Claimed>);

/// The PostgreSQL channel on which nodes announce new runnable work.
pub const NOTIFY_CHANNEL: &str = "fnhost_work";

/// Most writes one group commit takes.
pub(super) const MAX_BATCH: usize = 256;

/// `NOTIFY`s the work channel (delivered to listeners when the surrounding transaction, if
/// any, commits). The payload names the sender, which ignores its own notifications.
pub(super) async fn notify<'c, E>(executor: E, node: &str) -> Result<(), sqlx::Error>
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
pub(super) async fn listen(
    mut listener: sqlx::postgres::PgListener,
    node: Arc<str>,
    work: Arc<Notify>,
) {
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

/// The group-commit writer: one transaction per batch of waiting writes. Each caller's
/// future resolves once its batch has committed (or failed as a whole).
pub(super) async fn run(
    pool: AnyPool,
    backend: Backend,
    node: Arc<str>,
    idempotency_ttl: Duration,
    mut rx: mpsc::Receiver<Pending>,
    work: Arc<Notify>,
    health: Arc<super::health::Tracker>,
) {
    let ttl = super::ms(idempotency_ttl);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The writer keeps one connection (its prepared statements stay cached) while it works.
    let mut conn: Option<sqlx::pool::PoolConnection<Any>> = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut enqueues = Vec::new();
        let mut outcomes = Vec::new();
        for pending in batch.drain(..) {
            match pending {
                Pending::Enqueue(inv, reply) => enqueues.push((inv, reply)),
                Pending::Finish(outcome, reply) => outcomes.push((outcome, reply)),
            }
        }
        let invs: Vec<&NewInvocation> = enqueues.iter().map(|(inv, _)| inv).collect();
        let done: Vec<&Outcome> = outcomes.iter().map(|(o, _)| o).collect();
        let began = std::time::Instant::now();
        let written = match conn.take() {
            Some(c) => Ok(c),
            None => pool.acquire().await.map_err(QueueError::from),
        };
        let written = match written {
            Ok(mut c) => {
                let written = super::batch::write(&mut c, backend, &node, ttl, &invs, &done).await;
                if written.is_ok() {
                    conn = Some(c);
                } else {
                    // Closed, not reused: its transaction may still be open (closing rolls
                    // it back).
                    c.close_on_drop();
                }
                written
            }
            Err(e) => Err(e),
        };
        tracing::debug!(
            enqueues = invs.len(),
            outcomes = done.len(),
            "write batch committed in {:?}",
            began.elapsed()
        );
        health.record(&written);
        match written {
            Ok((enqueued, finished)) => {
                for ((_, reply), result) in enqueues.into_iter().zip(enqueued) {
                    let _ = reply.send(Ok(result));
                }
                for ((_, reply), result) in outcomes.into_iter().zip(finished) {
                    let _ = reply.send(Ok(result));
                }
                work.notify_waiters();
            }
            Err(e) => {
                tracing::error!(
                    "write batch of {} enqueue(s) and {} outcome(s) failed: {e}",
                    enqueues.len(),
                    outcomes.len()
                );
                let fault = match &e {
                    QueueError::Db { fault, .. } => *fault,
                    _ => super::QueueFault::Other,
                };
                let failed = || QueueError::Db {
                    fault,
                    detail: e.to_string(),
                };
                for (_, reply) in enqueues {
                    let _ = reply.send(Err(failed()));
                }
                for (_, reply) in outcomes {
                    let _ = reply.send(Err(failed()));
                }
            }
        }
    }
}

/// Claims up to `limit` due invocations for `owner`, leased for `lease_ms`, oldest due first,
/// none of the functions in `skip`.
pub(super) async fn claim_rows<'c, E>(
    executor: E,
    backend: Backend,
    owner: &str,
    lease_ms: i64,
    limit: usize,
    skip: &[String],
) -> Result<Vec<Claimed>>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let sql = schema::claim_sql(backend, skip.len());
    let mut query = sqlx::query(&sql)
        .bind(owner.to_string())
        .bind(lease_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    for name in skip {
        query = query.bind(name.clone());
    }
    let rows = super::bind_now(backend, query, now_ms())
        .fetch_all(executor)
        .await?;
    rows.iter().map(model::claimed_from_row).collect()
}
