//! The group-commit writer — one transaction per batch of waiting writes: enqueues and the
//! outcomes of finished attempts (with their destination records) — and, on PostgreSQL, the
//! `NOTIFY`/`LISTEN` wake-ups between nodes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyPool};
use tokio::sync::{Notify, mpsc};

use super::model::EndedAttempt;
use super::rows;
use super::schema;
use super::{
    Backend, Claimed, MAX_BATCH, NewInvocation, Pending, QueueError, Result, model, now_ms,
};

/// Turns other nodes' notifications into wake-ups: of this node's idle workers (new work),
/// or of its deploy follower (a publish, its own included). After the connection drops
/// (notifications sent meanwhile are lost) it wakes both anyway, and the listener reconnects
/// on the next receive; workers poll at least once a second, the follower too.
pub(super) async fn listen(
    mut listener: sqlx::postgres::PgListener,
    node: Arc<str>,
    work: Arc<Notify>,
    published: Arc<Notify>,
) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) if n.channel() == super::deploys::DEPLOY_CHANNEL => {
                published.notify_waiters()
            }
            Ok(Some(n)) if n.payload() == &*node => {}
            Ok(Some(_)) => work.notify_waiters(),
            Ok(None) => {
                tracing::warn!("queue listener lost its connection; reconnecting");
                work.notify_waiters();
                published.notify_waiters();
            }
            Err(e) => {
                tracing::warn!("queue listener failed: {e}; retrying in 1 s");
                work.notify_waiters();
                published.notify_waiters();
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
    let mut writer = Writer {
        pool,
        backend,
        node,
        ttl: super::ms(idempotency_ttl),
        conn: None,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
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
        let done: Vec<&EndedAttempt> = outcomes.iter().map(|(o, _)| o).collect();
        let written = writer.write(&invs, &done).await;
        health.record(&written);
        if written.is_ok() {
            work.notify_waiters();
        }
        reply(enqueues, outcomes, written);
    }
}

/// The writer's state between batches.
struct Writer {
    pool: AnyPool,
    backend: Backend,
    node: Arc<str>,
    /// How long an idempotency key is remembered, in ms.
    ttl: i64,
    /// The connection kept between batches (its prepared statements stay cached).
    conn: Option<sqlx::pool::PoolConnection<Any>>,
}

impl Writer {
    /// Writes one batch in one transaction.
    async fn write(
        &mut self,
        invs: &[&NewInvocation],
        done: &[&EndedAttempt],
    ) -> Result<(Vec<super::Enqueued>, Vec<model::Written>)> {
        let began = std::time::Instant::now();
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.pool.acquire().await?,
        };
        let written =
            super::batch::write(&mut conn, self.backend, &self.node, self.ttl, invs, done).await;
        if written.is_ok() {
            self.conn = Some(conn);
        } else {
            // Closed, not reused: its transaction may still be open (closing rolls it back).
            conn.close_on_drop();
        }
        tracing::debug!(
            enqueues = invs.len(),
            outcomes = done.len(),
            "write batch committed in {:?}",
            began.elapsed()
        );
        written
    }
}

type Replies<T, R> = Vec<(T, tokio::sync::oneshot::Sender<Result<R>>)>;

/// Answers every caller of a batch: its own result, or the batch's failure (the same class).
fn reply(
    enqueues: Replies<NewInvocation, super::Enqueued>,
    outcomes: Replies<EndedAttempt, model::Written>,
    written: Result<(Vec<super::Enqueued>, Vec<model::Written>)>,
) {
    let (enqueued, finished) = match written {
        Ok(results) => results,
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
            return;
        }
    };
    for ((_, reply), result) in enqueues.into_iter().zip(enqueued) {
        let _ = reply.send(Ok(result));
    }
    for ((_, reply), result) in outcomes.into_iter().zip(finished) {
        let _ = reply.send(Ok(result));
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
    rows.iter().map(rows::claimed_from_row).collect()
}
