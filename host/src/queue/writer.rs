//! The group-commit writer (one transaction per batch of waiting enqueues) and, on
//! PostgreSQL, the `NOTIFY`/`LISTEN` wake-ups between nodes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyPool, Row};
use tokio::sync::{Notify, mpsc};

use super::schema;
use super::{Backend, Enqueued, NewInvocation, Pending, QueueError, Result, now_ms};

/// The PostgreSQL channel on which nodes announce new runnable work.
pub const NOTIFY_CHANNEL: &str = "fnhost_work";

/// Most enqueues one group commit takes.
const MAX_BATCH: usize = 256;

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

/// The group-commit writer: one transaction per batch of waiting enqueues.
pub(super) async fn run(
    pool: AnyPool,
    backend: Backend,
    node: Arc<str>,
    idempotency_ttl: Duration,
    mut rx: mpsc::Receiver<Pending>,
    work: Arc<Notify>,
) {
    let ttl = super::ms(idempotency_ttl);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let invs: Vec<&NewInvocation> = batch.iter().map(|(inv, _)| inv).collect();
        match write_batch(&pool, backend, &node, ttl, &invs).await {
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
    ttl: i64,
    invs: &[&NewInvocation],
) -> Result<Vec<Enqueued>> {
    let now = now_ms();
    let insert = schema::insert_sql(backend);
    let forget = schema::with_now(
        backend,
        "UPDATE invocations SET idempotency_key = NULL \
         WHERE function = $1 AND idempotency_key = $2 AND created_at < $now - $3",
    );
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
        let hash = inv.request_hash();
        if inv.idempotency_key.is_some() {
            // A key older than the TTL is forgotten: this request starts afresh.
            let query = sqlx::query(&forget)
                .bind(inv.function.clone())
                .bind(inv.idempotency_key.clone())
                .bind(ttl);
            let query = match backend {
                Backend::Sqlite => query.bind(now),
                Backend::Postgres => query,
            };
            query.execute(&mut *tx).await?;
        }
        let query = sqlx::query(&insert)
            .bind(inv.id.clone())
            .bind(inv.function.clone())
            .bind(inv.idempotency_key.clone())
            .bind(inv.method.clone())
            .bind(inv.uri.clone())
            .bind(serde_json::to_string(&inv.headers).unwrap_or_default())
            .bind(inv.body.clone())
            .bind(i64::from(inv.max_attempts))
            .bind(hash.clone());
        let query = match backend {
            Backend::Sqlite => query.bind(now),
            Backend::Postgres => query,
        };
        let inserted = query.execute(&mut *tx).await?;
        out[i] = Some(if inserted.rows_affected() == 1 {
            Enqueued::New(inv.id.clone())
        } else {
            let row = sqlx::query(
                "SELECT id, request_hash FROM invocations WHERE function = $1 AND idempotency_key = $2",
            )
            .bind(inv.function.clone())
            .bind(inv.idempotency_key.clone())
            .fetch_one(&mut *tx)
            .await?;
            let id: String = row.try_get("id")?;
            // Rows stored before the digest existed count as the same request.
            match row.try_get::<Option<String>, _>("request_hash")? {
                Some(stored) if stored != hash => Enqueued::Conflict(id),
                _ => Enqueued::Existing(id),
            }
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
