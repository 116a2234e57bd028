//! One group commit: the statements of a batch (enqueues, attempt outcomes with their history,
//! output and destination records, the claims the outcomes ask for) and their execution in one
//! transaction.
//!
//! Each kind of write is one multi-row statement for the whole batch (rows padded to a power
//! of two, so only a few texts exist). Nothing in the batch reads its own results before the
//! commit: an outcome's history, output and deliveries are written by statements that join on
//! the claim still holding (`state = 'running'` and the fencing token), before the `UPDATE`
//! that ends it; which enqueues and outcomes took effect comes back in the rows the statements
//! return, told apart by their first column's name (or a `kind` column). So on SQLite the whole
//! batch — `BEGIN IMMEDIATE` to `COMMIT` — is one multi-statement command to sqlx's worker
//! thread, not a round trip per statement; on PostgreSQL (whose extended protocol takes one
//! statement at a time) it is one statement of data-modifying `WITH` queries (`stmt.rs`).

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{Any, Column, Row};

use super::model::{EndedAttempt, NextClaim, Written};
use super::rows;
use super::stmt::{
    PG_MAX_PARAMS, Rows, Stmt, Val, bind_vals, multi_row, pg_single, positional, returning,
};
use super::{Backend, Claimed, Dedup, Enqueued, Finish, NewInvocation, QueueError, Result};
use super::{now_ms, schema};

/// The statements storing `invs`: forgetting expired idempotency keys, the insert, and the
/// lookup of the keyed and ticked ones (to tell a repeat from a conflict). Inserted in
/// (function, key) order, the same on every node: two nodes' batches holding keys the other
/// wants wait for each other in one direction only, never in a cycle (a deadlock would fail
/// both batches). Stable: among repeats of a key in one batch the first request stays the one
/// stored.
fn enqueue_stmts(invs: &[&NewInvocation], hashes: &[String], ttl: i64) -> Vec<Stmt> {
    let mut order: Vec<usize> = (0..invs.len()).collect();
    order.sort_by(|&a, &b| {
        (&invs[a].function, &invs[a].dedup).cmp(&(&invs[b].function, &invs[b].dedup))
    });
    let having = |has: fn(&NewInvocation) -> Option<&str>| -> Vec<usize> {
        order
            .iter()
            .copied()
            .filter(|&i| has(invs[i]).is_some())
            .collect()
    };
    let (keyed, ticked) = (having(NewInvocation::key), having(NewInvocation::tick));
    let mut stmts = forget_expired_keys(invs, &keyed, ttl);
    stmts.extend(insert_stmts(invs, &order, hashes));
    stmts.extend(lookup_stmts(
        invs,
        &keyed,
        "keyed",
        "idempotency_key",
        NewInvocation::key,
    ));
    stmts.extend(lookup_stmts(
        invs,
        &ticked,
        "ticked",
        "tick",
        NewInvocation::tick,
    ));
    stmts
}

/// A key older than the TTL is forgotten: this request starts afresh. (A tick never is.)
fn forget_expired_keys(invs: &[&NewInvocation], keyed: &[usize], ttl: i64) -> Vec<Stmt> {
    keyed
        .iter()
        .map(|&i| Stmt {
            sql: "UPDATE invocations SET idempotency_key = NULL \
                  WHERE function = $1 AND idempotency_key = $2 AND created_at < $now - $3"
                .into(),
            vals: vec![
                Val::Text(invs[i].function.clone()),
                Val::OptText(invs[i].key().map(str::to_string)),
                Val::Int(ttl),
            ],
            rows: Rows::Forget,
        })
        .collect()
}

/// The insert of `invs` in `order`. A repeated key or tick inserts nothing (on PostgreSQL a
/// concurrent insert of the same one by another node waits for that node's commit, then
/// inserts nothing). SQLite reads `ON CONFLICT` after `INSERT … SELECT` right only when the
/// SELECT has a WHERE, which this one has.
fn insert_stmts(invs: &[&NewInvocation], order: &[usize], hashes: &[String]) -> Vec<Stmt> {
    returning(
        multi_row(
            order,
            "INSERT INTO invocations (id, function, idempotency_key, tick, state, method, uri, headers, body, max_attempts, request_hash, deploy, priority, created_at, run_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, 'queued', v.column5, v.column6, v.column7, v.column8, v.column9, v.column10, v.column11, v.column12, $now, $now \
         FROM (VALUES {values}) AS v WHERE v.column1 <> '' ON CONFLICT DO NOTHING RETURNING id AS enqueued",
            |&i| {
                let inv = invs[i];
                vec![
                    Val::Text(inv.id.clone()),
                    Val::Text(inv.function.clone()),
                    Val::OptText(inv.key().map(str::to_string)),
                    Val::OptText(inv.tick().map(str::to_string)),
                    Val::Text(inv.method.clone()),
                    Val::Text(inv.uri.clone()),
                    Val::Text(serde_json::to_string(&inv.headers).unwrap_or_default()),
                    Val::Bytes(inv.body.clone()),
                    Val::Int(i64::from(inv.max_attempts)),
                    Val::Text(hashes[i].clone()),
                    Val::OptText(inv.deploy.clone()),
                    Val::Int(i64::from(inv.priority)),
                ]
            },
        ),
        Rows::Enqueued,
    )
}

/// The stored rows of the `rows` invocations' keys (or ticks) in `column`, looked up after the
/// insert: rows named `which` (`keyed` or `ticked`) by their first column.
fn lookup_stmts(
    invs: &[&NewInvocation],
    rows: &[usize],
    which: &str,
    column: &str,
    of: fn(&NewInvocation) -> Option<&str>,
) -> Vec<Stmt> {
    returning(
        multi_row(
            rows,
            &format!(
                "SELECT i.id AS {which}, i.function AS keyed_function, i.{column} AS keyed_key, \
                 i.request_hash AS keyed_hash FROM invocations i \
                 JOIN (VALUES {{values}}) AS v ON i.function = v.column1 AND i.{column} = v.column2"
            ),
            |&i| {
                vec![
                    Val::Text(invs[i].function.clone()),
                    Val::OptText(of(invs[i]).map(str::to_string)),
                ]
            },
        ),
        Rows::Keyed,
    )
}

/// What the attempt returned, however it ended.
fn result(o: &EndedAttempt) -> &super::StoredResult {
    o.finish.result()
}

/// The join that keeps only the outcomes whose claim still holds (columns `id`, `token` of
/// the VALUES rows): nothing is written for an attempt fenced out meanwhile.
fn holding(id: &str, token: &str) -> String {
    format!(
        "JOIN invocations i ON i.id = v.{id} AND i.lease_token = v.{token} AND i.state = 'running'"
    )
}

/// The statements recording `outcomes`: attempt history, guest output and destination
/// records (for the claims that still hold), then the `UPDATE` ending each attempt, which
/// returns the ids it ended.
fn outcome_stmts(outcomes: &[&EndedAttempt], now: i64) -> Vec<Stmt> {
    let mut stmts = attempt_stmts(outcomes);
    stmts.extend(guest_log_stmts(outcomes));
    stmts.extend(delivery_stmts(outcomes));
    stmts.extend(end_stmts(outcomes, now));
    stmts
}

/// The error an attempt failed with, if it failed.
fn error(o: &EndedAttempt) -> Option<String> {
    o.finish.error().map(str::to_string)
}

/// One row of attempt history per outcome whose claim holds.
fn attempt_stmts(outcomes: &[&EndedAttempt]) -> Vec<Stmt> {
    multi_row(
        outcomes,
        &format!(
            "INSERT INTO attempts (invocation_id, attempt, started_at, finished_at, outcome, error) \
             SELECT v.column1, v.column2, i.started_at, $now, v.column3, v.column4 \
             FROM (VALUES {{values}}) AS v {}",
            holding("column1", "column5")
        ),
        |o| {
            let (outcome, error) = match (&o.finish, error(o)) {
                (Finish::Suspended { suspension, .. }, _) => {
                    (o.finish.state().as_str(), Some(suspension.to_string()))
                }
                (_, Some(error)) => ("failed", Some(error)),
                (_, None) => ("succeeded", None),
            };
            vec![
                Val::Text(o.id.clone()),
                Val::Int(i64::from(o.attempt)),
                Val::Text(outcome.into()),
                Val::OptText(error),
                Val::Int(o.token),
            ]
        },
    )
}

/// What each attempt printed, a row a line.
fn guest_log_stmts(outcomes: &[&EndedAttempt]) -> Vec<Stmt> {
    let lines: Vec<(&EndedAttempt, usize, &super::GuestLine)> = outcomes
        .iter()
        .flat_map(|o| {
            result(o)
                .logs
                .iter()
                .enumerate()
                .map(move |(seq, l)| (*o, seq, l))
        })
        .collect();
    multi_row(
        &lines,
        &format!(
            "INSERT INTO guest_logs (invocation_id, attempt, seq, at, stream, line) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6 \
             FROM (VALUES {{values}}) AS v {}",
            holding("column1", "column7")
        ),
        |(o, seq, line)| {
            vec![
                Val::Text(o.id.clone()),
                Val::Int(i64::from(o.attempt)),
                Val::Int(i64::try_from(*seq).unwrap_or(i64::MAX)),
                Val::Int(line.at_ms),
                Val::Text(line.stream.clone()),
                Val::Text(line.line.clone()),
                Val::Int(o.token),
            ]
        },
    )
}

/// The destination records of the outcomes that have one.
fn delivery_stmts(outcomes: &[&EndedAttempt]) -> Vec<Stmt> {
    let delivering: Vec<&&EndedAttempt> =
        outcomes.iter().filter(|o| o.delivery.is_some()).collect();
    multi_row(
        &delivering,
        &format!(
            "INSERT INTO deliveries (id, invocation_id, url, payload, traceparent, state, attempts, next_at, created_at) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column6, 'pending', 0, $now, $now \
             FROM (VALUES {{values}}) AS v {}",
            holding("column2", "column5")
        ),
        |o| {
            let d = o.delivery.as_ref().expect("filtered on a delivery");
            vec![
                Val::Text(crate::ids::new_id()),
                Val::Text(o.id.clone()),
                Val::Text(d.url.clone()),
                Val::Text(d.payload.clone()),
                Val::Int(o.token),
                Val::Text(d.traceparent.clone()),
            ]
        },
    )
}

/// The `UPDATE` ending each attempt whose claim holds; returns the ids it ended. The retry
/// time is stored as a delay from `$now` (on SQLite `now`, the batch's one clock reading that
/// [`execute`] binds too, so the stored time is exactly `run_at`; on PostgreSQL the same delay
/// on the server's clock).
fn end_stmts(outcomes: &[&EndedAttempt], now: i64) -> Vec<Stmt> {
    returning(
        multi_row(
            outcomes,
            "UPDATE invocations SET state = v.column3, last_error = v.column4, \
         run_at = COALESCE($now + v.column5, run_at), \
         finished_at = CASE WHEN v.column3 IN ('retrying', 'sleeping', 'waiting') THEN NULL ELSE $now END, \
         result_status = v.column6, result_headers = v.column7, result_body = v.column8, \
         lease_owner = NULL, lease_expires_at = NULL, \
         attempts = invocations.attempts - v.column9, suspensions = invocations.suspensions + v.column9, \
         wait_step = v.column10, wait_event = v.column11, wait_key = v.column12, \
         wait_since = v.column13, wait_until = v.column14 \
         FROM (VALUES {values}) AS v \
         WHERE invocations.id = v.column1 AND invocations.lease_token = v.column2 \
         AND invocations.state = 'running' RETURNING id AS finished",
            |o| {
                let delay = match &o.finish {
                    Finish::Retry { run_at, .. } => Some(run_at - now),
                    Finish::Suspended { suspension, .. } => Some(suspension.until_ms() - now),
                    _ => None,
                };
                let r = result(o);
                let mut vals = vec![
                    Val::Text(o.id.clone()),
                    Val::Int(o.token),
                    Val::Text(o.finish.state().as_str().into()),
                    Val::OptText(error(o)),
                    Val::OptInt(delay),
                    Val::OptInt(r.status.map(i64::from)),
                    Val::Text(serde_json::to_string(&r.headers).unwrap_or_default()),
                    Val::Bytes(r.body.clone()),
                ];
                vals.extend(super::steps::suspension_vals(&o.finish));
                vals
            },
        ),
        Rows::Finished,
    )
}

/// The claims the outcomes ask for: one statement per worker (the oldest due first, as any
/// claim), its rows tagged with the worker's number (`claim_for`).
fn claim_stmts(backend: Backend, outcomes: &[&EndedAttempt]) -> (Vec<Stmt>, Vec<Option<usize>>) {
    let mut workers: Vec<&NextClaim> = Vec::new();
    let mut asks = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        asks.push(o.next.as_ref().map(|n| {
            workers.iter().position(|w| *w == n).unwrap_or_else(|| {
                workers.push(n);
                workers.len() - 1
            })
        }));
    }
    let stmts = workers
        .iter()
        .enumerate()
        .map(|(w, worker)| {
            let limit = asks.iter().filter(|a| **a == Some(w)).count();
            let mut vals = vec![
                Val::Text(worker.owner.clone()),
                Val::Int(worker.lease_ms),
                Val::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ];
            vals.extend(worker.skip.iter().map(|name| Val::Text(name.clone())));
            Stmt {
                sql: format!(
                    "{}, CAST({w} AS BIGINT) AS claim_for",
                    schema::claim_template(backend, worker.skip.len())
                ),
                vals,
                rows: Rows::Claim,
            }
        })
        .collect();
    (stmts, asks)
}

/// Runs `stmts` in one transaction on `conn` (and, on PostgreSQL with `notify_node`, a
/// `NOTIFY` delivered by the commit); the rows they returned, in order.
async fn execute(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    stmts: Vec<Stmt>,
    notify_node: Option<&str>,
    now: i64,
) -> Result<Vec<AnyRow>> {
    match backend {
        Backend::Sqlite => {
            // One command: sqlx's worker runs the statements one after another, binding each
            // `$k` to the k-th value. A failure leaves the transaction open: the caller drops
            // the connection, which rolls it back.
            let mut sql = String::from("BEGIN IMMEDIATE;\n");
            let mut vals = Vec::new();
            for stmt in stmts {
                let (text, order) = positional(&stmt.sql, stmt.vals, now);
                sql.push_str(&text);
                sql.push_str(";\n");
                vals.extend(order);
            }
            sql.push_str("COMMIT");
            let query = bind_vals(sqlx::query(&sql), vals).persistent(false);
            Ok(query.fetch_all(&mut *conn).await?)
        }
        Backend::Postgres => {
            let single = stmts
                .iter()
                .all(|s| !matches!(s.rows, Rows::Forget | Rows::Keyed))
                && stmts.iter().map(|s| s.vals.len()).sum::<usize>() < PG_MAX_PARAMS;
            if single {
                // One round trip once prepared, committed on its own (a statement is its own
                // transaction). The few shapes a steady load has stay in sqlx's statement cache.
                let (sql, vals) = pg_single(stmts, notify_node);
                let sql = schema::with_now(backend, &sql);
                return Ok(bind_vals(sqlx::query(&sql), vals)
                    .fetch_all(&mut *conn)
                    .await?);
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let mut rows = Vec::new();
            for stmt in stmts {
                let sql = schema::with_now(backend, &stmt.sql);
                let query = bind_vals(sqlx::query(&sql), stmt.vals);
                rows.extend(query.fetch_all(&mut *tx).await?);
            }
            if let Some(node) = notify_node {
                // Delivered to the other nodes' listeners by the commit itself.
                super::notify(&mut *tx, node).await?;
            }
            tx.commit().await?;
            Ok(rows)
        }
    }
}

/// Writes one batch in one transaction: the enqueues (what each became) and the outcomes
/// (`false` for one whose claim was fenced out meanwhile: nothing written for it; and the
/// next claim it asked for).
pub(super) async fn write(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    node: &str,
    ttl: i64,
    invs: &[&NewInvocation],
    outcomes: &[&EndedAttempt],
) -> Result<(Vec<Enqueued>, Vec<Written>)> {
    // One clock reading for the whole batch: the delays its statements hold and the `$now`
    // they are bound with on SQLite (two readings a millisecond apart moved a retry by 1 ms).
    let now = now_ms();
    let hashes: Vec<String> = invs.iter().map(|inv| inv.request_hash()).collect();
    let mut stmts = enqueue_stmts(invs, &hashes, ttl);
    stmts.extend(outcome_stmts(outcomes, now));
    let (claims, asks) = claim_stmts(backend, outcomes);
    stmts.extend(claims);
    // Other nodes hear of new work: new invocations, a retry later, a delivery now. (A
    // fenced-out outcome wakes them for nothing, which is harmless.)
    let news = !invs.is_empty()
        || outcomes
            .iter()
            .any(|o| matches!(o.finish, Finish::Retry { .. }) || o.delivery.is_some());
    let notify_node = (backend == Backend::Postgres && news).then_some(node);
    let rows = execute(conn, backend, stmts, notify_node, now).await?;
    let mut returned = Returned::read(&rows)?;
    let enqueued = returned.enqueued(invs, &hashes)?;
    let finished = returned.finished(outcomes, asks);
    Ok((enqueued, finished))
}

/// What a row of a batch is, told by its first column's name (a row of one statement) or by
/// its `kind` column ([`pg_single`]): the column's name or value is the statement's.
enum RowKind {
    /// `enqueued`: an invocation the insert stored.
    Enqueued,
    /// `keyed` / `ticked`: the stored invocation of a key or tick.
    Found(fn(String) -> Dedup),
    /// `finished`: an attempt the outcome's `UPDATE` ended.
    Finished,
    /// `notify` / `none`: nothing to read.
    Nothing,
    /// Anything else: a claimed invocation (its `claim_for` says for which worker).
    Claim,
}

impl RowKind {
    /// The row's kind and the index of its first own column.
    fn of(row: &AnyRow) -> Result<(RowKind, usize)> {
        let first = row.columns().first().map(Column::name).unwrap_or_default();
        let (name, at) = if first == "kind" {
            (row.try_get::<String, _>(0)?, 1)
        } else {
            (first.to_string(), 0)
        };
        let kind = match name.as_str() {
            "enqueued" => RowKind::Enqueued,
            "keyed" => RowKind::Found(Dedup::Key),
            "ticked" => RowKind::Found(Dedup::Tick),
            "finished" => RowKind::Finished,
            "notify" | "none" => RowKind::Nothing,
            _ => RowKind::Claim,
        };
        Ok((kind, at))
    }
}

/// What a batch's statements returned, sorted by kind.
#[derive(Default)]
struct Returned {
    /// Ids the insert stored.
    inserted: HashSet<String>,
    /// (function, key or tick) → (stored id, its request digest).
    found: HashMap<(String, Dedup), (String, Option<String>)>,
    /// Attempts whose claim held when their outcome was written.
    held: HashSet<String>,
    /// Claimed invocations, by worker.
    claimed: Vec<Vec<Claimed>>,
}

impl Returned {
    fn read(rows: &[AnyRow]) -> Result<Returned> {
        let mut r = Returned::default();
        for row in rows {
            let (kind, at) = RowKind::of(row)?;
            match kind {
                RowKind::Enqueued => {
                    r.inserted.insert(row.try_get::<String, _>(at)?);
                }
                RowKind::Found(dedup) => {
                    let key = (
                        row.try_get("keyed_function")?,
                        dedup(row.try_get("keyed_key")?),
                    );
                    r.found
                        .insert(key, (row.try_get(at)?, row.try_get("keyed_hash")?));
                }
                RowKind::Finished => {
                    r.held.insert(row.try_get::<String, _>(at)?);
                }
                RowKind::Nothing => {}
                RowKind::Claim => {
                    let w = usize::try_from(row.try_get::<i64, _>("claim_for")?).unwrap_or(0);
                    if r.claimed.len() <= w {
                        r.claimed.resize_with(w + 1, Vec::new);
                    }
                    r.claimed[w].push(rows::claimed_from_row(row)?);
                }
            }
        }
        Ok(r)
    }

    /// How each of `invs` was stored: new, a repeat of its key or tick, or a conflict.
    fn enqueued(&self, invs: &[&NewInvocation], hashes: &[String]) -> Result<Vec<Enqueued>> {
        invs.iter()
            .zip(hashes)
            .map(|(inv, hash)| {
                if self.inserted.contains(&inv.id) {
                    return Ok(Enqueued::New(inv.id.clone()));
                }
                let found = inv
                    .dedup
                    .clone()
                    .and_then(|d| self.found.get(&(inv.function.clone(), d)));
                let Some((id, stored)) = found else {
                    return Err(QueueError::Corrupt(format!(
                        "invocation {} was neither stored nor found by its idempotency key or tick",
                        inv.id
                    )));
                };
                // Rows stored before the digest existed count as the same request.
                Ok(match stored {
                    Some(stored) if stored != hash => Enqueued::Conflict(id.clone()),
                    _ => Enqueued::Existing(id.clone()),
                })
            })
            .collect()
    }

    /// Whether each outcome's claim held, and the claim its worker asked for, if made.
    fn finished(&mut self, outcomes: &[&EndedAttempt], asks: Vec<Option<usize>>) -> Vec<Written> {
        outcomes
            .iter()
            .zip(asks)
            .map(|(o, ask)| {
                let next = ask.and_then(|w| self.claimed.get_mut(w).and_then(Vec::pop));
                (self.held.contains(&o.id), next)
            })
            .collect()
    }
}

/// Adds pending destination deliveries, `(invocation, delivery)` each, for invocations
/// already ended (no claim to check), in the caller's transaction.
pub(super) async fn insert_deliveries(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    deliveries: &[(&str, &super::NewDelivery)],
) -> Result<()> {
    let stmts = multi_row(
        deliveries,
        "INSERT INTO deliveries (id, invocation_id, url, payload, traceparent, state, attempts, next_at, created_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, 'pending', 0, $now, $now \
         FROM (VALUES {values}) AS v WHERE v.column1 <> ''",
        |(invocation, d)| {
            vec![
                Val::Text(crate::ids::new_id()),
                Val::Text(invocation.to_string()),
                Val::Text(d.url.clone()),
                Val::Text(d.payload.clone()),
                Val::Text(d.traceparent.clone()),
            ]
        },
    );
    for stmt in stmts {
        let sql = schema::with_now(backend, &stmt.sql);
        let query = bind_vals(sqlx::query(&sql), stmt.vals);
        super::bind_now(backend, query, now_ms())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
