//! The group-commit writer — one transaction per batch of waiting writes: enqueues and the
//! outcomes of finished attempts (with their destination records) — and, on PostgreSQL, the
//! `NOTIFY`/`LISTEN` wake-ups between nodes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyPool, Row};
use tokio::sync::{Notify, mpsc};

use super::schema;
use super::{
    Backend, Claimed, Enqueued, Finish, GuestLine, NewDelivery, NewInvocation, Pending, QueueError,
    Result, model, now_ms,
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

/// The group-commit writer: one transaction per batch of waiting writes. Each caller's
/// future resolves once its batch has committed (or failed as a whole).
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
                let written = write_batch(&mut c, backend, &node, ttl, &invs, &done).await;
                // A connection that failed a batch is not reused.
                if written.is_ok() {
                    conn = Some(c);
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
                let msg = e.to_string();
                for (_, reply) in enqueues {
                    let _ = reply.send(Err(QueueError::Durability(msg.clone())));
                }
                for (_, reply) in outcomes {
                    let _ = reply.send(Err(QueueError::Durability(msg.clone())));
                }
            }
        }
    }
}

/// Writes one batch in one transaction: the enqueues (what each became) and the outcomes
/// (`false` for one whose claim was fenced out meanwhile: nothing written for it).
async fn write_batch(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    node: &str,
    ttl: i64,
    invs: &[&NewInvocation],
    outcomes: &[&Outcome],
) -> Result<(Vec<Enqueued>, Vec<Written>)> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let enqueued = write_enqueues(&mut tx, backend, ttl, invs).await?;
    let (held, wake_others) = write_outcomes(&mut tx, backend, outcomes).await?;
    let next = claim_next(&mut tx, backend, outcomes).await?;
    let finished = held.into_iter().zip(next).collect();
    let new_work = enqueued.iter().any(|e| matches!(e, Enqueued::New(_)));
    if backend == Backend::Postgres && (new_work || wake_others) {
        // Delivered to the other nodes' listeners by the commit itself.
        notify(&mut *tx, node).await?;
    }
    tx.commit().await?;
    Ok((enqueued, finished))
}

/// Records how attempts ended, a few statements for the whole batch: one `UPDATE … FROM
/// (VALUES …)` per chunk of outcomes, then their attempt rows, guest output and destination
/// records. Returns, per outcome, whether its claim still held, and whether other nodes have
/// something new to do (a retry later, a delivery now).
async fn write_outcomes(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    outcomes: &[&Outcome],
) -> Result<(Vec<bool>, bool)> {
    if outcomes.is_empty() {
        return Ok((Vec::new(), false));
    }
    let now = now_ms();
    let mut held_ids = std::collections::HashSet::new();
    for chunk in pow2_chunks(outcomes) {
        // The retry time is stored as a delay from `$now` (on SQLite `now` itself, so the
        // stored time is exactly `run_at`; on PostgreSQL the same delay on the server's clock).
        // VALUES columns are `column1`… on both dialects.
        let sql = schema::with_now(
            backend,
            &format!(
                "UPDATE invocations SET state = v.column3, last_error = v.column4, \
                 run_at = COALESCE($now + v.column5, run_at), \
                 finished_at = CASE WHEN v.column3 = 'retrying' THEN NULL ELSE $now END, \
                 result_status = v.column6, result_headers = v.column7, result_body = v.column8, \
                 lease_owner = NULL, lease_expires_at = NULL \
                 FROM (VALUES {}) AS v \
                 WHERE invocations.id = v.column1 AND invocations.lease_token = v.column2 \
                 AND invocations.state = 'running' RETURNING id",
                values_sql(chunk.len(), 8)
            ),
        );
        let mut query = sqlx::query(&sql);
        for outcome in chunk {
            let (error, result, delay) = match &outcome.finish {
                Finish::Succeeded(r) => (None, r, None),
                Finish::Retry {
                    error,
                    result,
                    run_at,
                } => (Some(error.clone()), result, Some(run_at - now)),
                Finish::Dead { error, result } => (Some(error.clone()), result, None),
            };
            query = query
                .bind(outcome.id.clone())
                .bind(outcome.token)
                .bind(outcome.finish.state().as_str())
                .bind(error)
                .bind(delay)
                .bind(result.status.map(i64::from))
                .bind(serde_json::to_string(&result.headers).unwrap_or_default())
                .bind(result.body.clone());
        }
        for row in super::bind_now(backend, query, now)
            .fetch_all(&mut **tx)
            .await?
        {
            held_ids.insert(row.try_get::<String, _>(0)?);
        }
    }
    let held: Vec<bool> = outcomes.iter().map(|o| held_ids.contains(&o.id)).collect();
    let written: Vec<&Outcome> = outcomes
        .iter()
        .zip(&held)
        .filter(|&(_, &h)| h)
        .map(|(o, _)| *o)
        .collect();
    record_attempts(tx, backend, &written, now).await?;
    let deliveries: Vec<(&str, &NewDelivery)> = written
        .iter()
        .filter_map(|o| o.delivery.as_ref().map(|d| (o.id.as_str(), d)))
        .collect();
    insert_deliveries(tx, backend, &deliveries, now).await?;
    let wake_others = written
        .iter()
        .any(|o| matches!(o.finish, Finish::Retry { .. }) || o.delivery.is_some());
    Ok((held, wake_others))
}

/// `($1, $2, …), (…)`: `rows` rows of `width` parameters each, numbered from 1.
fn values_sql(rows: usize, width: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|k| format!("${}", r * width + k)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    rows.join(", ")
}

/// Splits `items` into chunks of 256, 128, …, 1 rows, so a multi-row statement has only nine
/// texts, each of which stays prepared.
fn pow2_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = (1 << rest.len().ilog2()).min(MAX_BATCH);
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// Adds the finished attempts to their invocations' histories, with what the guests printed.
async fn record_attempts(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    outcomes: &[&Outcome],
    now: i64,
) -> Result<()> {
    for chunk in pow2_chunks(outcomes) {
        let sql = schema::with_now(
            backend,
            &format!(
                "INSERT INTO attempts (invocation_id, attempt, started_at, finished_at, outcome, error) \
                 SELECT v.column1, v.column2, i.started_at, $now, v.column3, v.column4 \
                 FROM (VALUES {}) AS v JOIN invocations i ON i.id = v.column1",
                values_sql(chunk.len(), 4)
            ),
        );
        let mut query = sqlx::query(&sql);
        for outcome in chunk {
            let (failed, error) = match &outcome.finish {
                Finish::Succeeded(_) => (false, None),
                Finish::Retry { error, .. } | Finish::Dead { error, .. } => {
                    (true, Some(error.clone()))
                }
            };
            query = query
                .bind(outcome.id.clone())
                .bind(i64::from(outcome.attempt))
                .bind(if failed { "failed" } else { "succeeded" })
                .bind(error);
        }
        super::bind_now(backend, query, now)
            .execute(&mut **tx)
            .await?;
    }
    let lines: Vec<(&Outcome, usize, &GuestLine)> = outcomes
        .iter()
        .flat_map(|o| {
            let result = match &o.finish {
                Finish::Succeeded(r)
                | Finish::Retry { result: r, .. }
                | Finish::Dead { result: r, .. } => r,
            };
            result
                .logs
                .iter()
                .enumerate()
                .map(move |(seq, l)| (*o, seq, l))
        })
        .collect();
    for chunk in pow2_chunks(&lines) {
        let sql = format!(
            "INSERT INTO guest_logs (invocation_id, attempt, seq, at, stream, line) VALUES {}",
            values_sql(chunk.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for (outcome, seq, line) in chunk {
            query = query
                .bind(outcome.id.clone())
                .bind(i64::from(outcome.attempt))
                .bind(i64::try_from(*seq).unwrap_or(i64::MAX))
                .bind(line.at_ms)
                .bind(line.stream.clone())
                .bind(line.line.clone());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Claims the next due invocations for the outcomes that ask for one, in one statement per
/// worker: the oldest due first, as any claim.
async fn claim_next(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    outcomes: &[&Outcome],
) -> Result<Vec<Option<Claimed>>> {
    let mut next: Vec<Option<Claimed>> = outcomes.iter().map(|_| None).collect();
    let mut workers: Vec<&NextClaim> = Vec::new();
    for o in outcomes {
        if let Some(n) = &o.next
            && !workers.contains(&n)
        {
            workers.push(n);
        }
    }
    if workers.is_empty() {
        return Ok(next);
    }
    for worker in workers {
        let askers: Vec<usize> = (0..outcomes.len())
            .filter(|&i| outcomes[i].next.as_ref() == Some(worker))
            .collect();
        let claimed = claim_rows(
            &mut **tx,
            backend,
            &worker.owner,
            worker.lease_ms,
            askers.len(),
            &worker.skip,
        )
        .await?;
        for (i, claim) in askers.into_iter().zip(claimed) {
            next[i] = Some(claim);
        }
    }
    Ok(next)
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

/// Adds pending destination deliveries, `(invocation, delivery)` each.
pub(super) async fn insert_deliveries(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    deliveries: &[(&str, &NewDelivery)],
    now: i64,
) -> Result<()> {
    for chunk in pow2_chunks(deliveries) {
        let sql = schema::with_now(
            backend,
            &format!(
                "INSERT INTO deliveries (id, invocation_id, url, payload, state, attempts, next_at, created_at) \
                 SELECT v.column1, v.column2, v.column3, v.column4, 'pending', 0, $now, $now FROM (VALUES {}) AS v",
                values_sql(chunk.len(), 4)
            ),
        );
        let mut query = sqlx::query(&sql);
        for (invocation, d) in chunk {
            query = query
                .bind(crate::ids::new_id())
                .bind(invocation.to_string())
                .bind(d.url.clone())
                .bind(d.payload.clone());
        }
        super::bind_now(backend, query, now)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Stores the enqueues of one batch (in the caller's transaction): what each became.
async fn write_enqueues(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    ttl: i64,
    invs: &[&NewInvocation],
) -> Result<Vec<Enqueued>> {
    if invs.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
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
    for &i in &order {
        let inv = invs[i];
        if inv.idempotency_key.is_some() {
            // A key older than the TTL is forgotten: this request starts afresh.
            let query = sqlx::query(&forget)
                .bind(inv.function.clone())
                .bind(inv.idempotency_key.clone())
                .bind(ttl);
            let query = super::bind_now(backend, query, now);
            query.execute(&mut **tx).await?;
        }
    }
    // A few statements for the whole batch (see `pow2_chunks`).
    let hashes: Vec<String> = invs.iter().map(|inv| inv.request_hash()).collect();
    let mut inserted = std::collections::HashSet::new();
    for chunk in pow2_chunks(&order) {
        let insert = schema::insert_many_sql(backend, chunk.len());
        let mut query = sqlx::query(&insert);
        for &i in chunk {
            let inv = invs[i];
            query = query
                .bind(inv.id.clone())
                .bind(inv.function.clone())
                .bind(inv.idempotency_key.clone())
                .bind(inv.method.clone())
                .bind(inv.uri.clone())
                .bind(serde_json::to_string(&inv.headers).unwrap_or_default())
                .bind(inv.body.clone())
                .bind(i64::from(inv.max_attempts))
                .bind(hashes[i].clone());
        }
        let query = super::bind_now(backend, query, now);
        for row in query.fetch_all(&mut **tx).await? {
            inserted.insert(row.try_get::<String, _>(0)?);
        }
    }
    let mut out = vec![None; invs.len()];
    for i in order {
        let inv = invs[i];
        out[i] = Some(if inserted.contains(&inv.id) {
            Enqueued::New(inv.id.clone())
        } else {
            let row = sqlx::query(
                "SELECT id, request_hash FROM invocations WHERE function = $1 AND idempotency_key = $2",
            )
            .bind(inv.function.clone())
            .bind(inv.idempotency_key.clone())
            .fetch_one(&mut **tx)
            .await?;
            let id: String = row.try_get("id")?;
            // Rows stored before the digest existed count as the same request.
            match row.try_get::<Option<String>, _>("request_hash")? {
                Some(stored) if stored != hashes[i] => Enqueued::Conflict(id),
                _ => Enqueued::Existing(id),
            }
        });
    }
    Ok(out.into_iter().flatten().collect())
}
