//! One group commit: the statements of a batch (enqueues, attempt outcomes with their history,
//! output and destination records, the claims the outcomes ask for) and their execution in one
//! transaction.
//!
//! Each kind of write is one multi-row statement for the whole batch (rows padded to a power
//! of two, so only a few texts exist). Nothing in the batch reads its own results before the
//! commit: an outcome's history, output and deliveries are written by statements that join on
//! the claim still holding (`state = 'running'` and the fencing token), before the `UPDATE`
//! that ends it; which enqueues and outcomes took effect comes back in the rows the statements
//! return, told apart by their first column's name. So on SQLite the whole batch — `BEGIN
//! IMMEDIATE` to `COMMIT` — is one multi-statement command to sqlx's worker thread, not a
//! round trip per statement; on PostgreSQL (whose extended protocol takes one statement at a
//! time) the same statements run one after another in a transaction.

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{Any, Column, Row};

use super::writer::{MAX_BATCH, Outcome, Written, notify};
use super::{Backend, Claimed, Enqueued, Finish, NewInvocation, Query, QueueError, Result};
use super::{model, now_ms, schema};

/// One value bound to a statement of a batch.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(Vec<u8>),
    OptBytes(Option<Vec<u8>>),
}

/// One statement of a batch: its text, with parameters numbered from `$1` and `$now`
/// unresolved, its values in order, and what its rows are.
#[derive(Debug, Default)]
struct Stmt {
    sql: String,
    vals: Vec<Val>,
    rows: Rows,
}

/// What a statement of a batch returns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Nothing.
    #[default]
    None,
    /// The ids inserted (`enqueued`).
    Enqueued,
    /// Nothing; forgets expired idempotency keys before the insert (a separate statement).
    Forget,
    /// The stored invocations of the batch's idempotency keys (`keyed`, …), looked up after
    /// the insert, in a statement of its own (to see what other nodes committed meanwhile).
    Keyed,
    /// The ids of the attempts ended (`finished`).
    Finished,
    /// Claimed invocations (`id`, …, `claim_for`).
    Claim,
}

/// `stmts`, each marked as returning `rows`.
fn returning(stmts: Vec<Stmt>, rows: Rows) -> Vec<Stmt> {
    stmts.into_iter().map(|s| Stmt { rows, ..s }).collect()
}

fn bind_vals(mut query: Query<'_>, vals: Vec<Val>) -> Query<'_> {
    for v in vals {
        query = match v {
            Val::Text(s) => query.bind(s),
            Val::OptText(s) => query.bind(s),
            Val::Int(i) => query.bind(i),
            Val::OptInt(i) => query.bind(i),
            Val::Bytes(b) => query.bind(b),
            Val::OptBytes(b) => query.bind(b),
        };
    }
    query
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

/// The rows of a batch's multi-row statements: chunks of at most [`MAX_BATCH`], each with
/// its row count rounded up to a power of two, so a statement has one of only nine texts
/// (each stays prepared on PostgreSQL) and a batch takes one statement per kind. The rows
/// beyond the chunk are padding (see [`pad`]).
fn padded_chunks<T>(items: &[T]) -> impl Iterator<Item = (&[T], usize)> {
    items
        .chunks(MAX_BATCH)
        .map(|chunk| (chunk, chunk.len().next_power_of_two()))
}

/// Appends padding rows to `vals` until it holds `rows` rows of `like`'s width: `''` in the
/// first column (no id, no function name is empty; every padded statement skips it, with
/// `WHERE v.column1 <> ''` or a join on it) and NULLs of the same types as `like`'s elsewhere
/// (PostgreSQL types a VALUES column from its rows).
fn pad(vals: &mut Vec<Val>, rows: usize, like: &[Val]) {
    let width = like.len();
    while vals.len() < rows * width {
        vals.push(Val::Text(String::new()));
        for v in &like[1..] {
            vals.push(match v {
                Val::Text(_) | Val::OptText(_) => Val::OptText(None),
                Val::Int(_) | Val::OptInt(_) => Val::OptInt(None),
                Val::Bytes(_) | Val::OptBytes(_) => Val::OptBytes(None),
            });
        }
    }
}

/// One padded multi-row statement per chunk of `items`: `sql` with `{values}` replaced by the
/// VALUES rows, each item's row from `row`.
fn multi_row<T>(items: &[T], sql: &str, row: impl Fn(&T) -> Vec<Val>) -> Vec<Stmt> {
    padded_chunks(items)
        .map(|(chunk, rows)| {
            let mut vals = Vec::new();
            let mut like = Vec::new();
            for item in chunk {
                like = row(item);
                vals.extend(like.iter().cloned());
            }
            pad(&mut vals, rows, &like);
            Stmt {
                sql: sql.replace("{values}", &values_sql(rows, like.len())),
                vals,
                rows: Rows::None,
            }
        })
        .collect()
}

/// `sql` with anonymous `?` parameters instead of `$k` and `$now`, and its values in the
/// order they now appear (`$now` as `now`, wherever it is). SQLite finds a named parameter
/// by walking a list of all of them, at prepare and at every bind, so a statement with
/// hundreds of `$k` costs quadratic time; anonymous ones are numbered as they come.
fn positional(sql: &str, vals: Vec<Val>, now: i64) -> (String, Vec<Val>) {
    let mut vals: Vec<Option<Val>> = vals.into_iter().map(Some).collect();
    let mut used: Vec<Option<Val>> = vec![None; vals.len()];
    let mut out = String::with_capacity(sql.len());
    let mut order = Vec::with_capacity(vals.len());
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(tail) = rest.strip_prefix("now") {
            out.push('?');
            order.push(Val::Int(now));
            rest = tail;
            continue;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let k: usize = rest[..digits].parse().unwrap_or(0);
        if k == 0 || k > vals.len() {
            out.push('$');
            continue;
        }
        rest = &rest[digits..];
        out.push('?');
        // Each value moves on its first use (bodies are large); a repeat is a copy.
        let v = match vals[k - 1].take() {
            Some(v) => {
                used[k - 1] = Some(v.clone());
                v
            }
            None => used[k - 1].clone().expect("taken above"),
        };
        order.push(v);
    }
    out.push_str(rest);
    (out, order)
}

/// The statements storing `invs`: forgetting expired idempotency keys, the insert, and the
/// lookup of the keyed ones (to tell a repeat from a conflict). Inserted in (function, key)
/// order, the same on every node: two nodes' batches holding idempotency keys the other wants
/// wait for each other in one direction only, never in a cycle (a deadlock would fail both
/// batches). Stable: among repeats of a key in one batch the first request stays the one
/// stored.
fn enqueue_stmts(invs: &[&NewInvocation], hashes: &[String], ttl: i64) -> Vec<Stmt> {
    let mut order: Vec<usize> = (0..invs.len()).collect();
    order.sort_by(|&a, &b| {
        (&invs[a].function, &invs[a].idempotency_key)
            .cmp(&(&invs[b].function, &invs[b].idempotency_key))
    });
    let keyed: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| invs[i].idempotency_key.is_some())
        .collect();
    let mut stmts = Vec::new();
    for &i in &keyed {
        // A key older than the TTL is forgotten: this request starts afresh.
        stmts.push(Stmt {
            sql: "UPDATE invocations SET idempotency_key = NULL \
                  WHERE function = $1 AND idempotency_key = $2 AND created_at < $now - $3"
                .into(),
            vals: vec![
                Val::Text(invs[i].function.clone()),
                Val::OptText(invs[i].idempotency_key.clone()),
                Val::Int(ttl),
            ],
            rows: Rows::Forget,
        });
    }
    // A repeated idempotency key inserts nothing (on PostgreSQL a concurrent insert of the
    // same key by another node waits for that node's commit, then inserts nothing); rows go
    // in in order. SQLite reads `ON CONFLICT` after `INSERT … SELECT` right only when the
    // SELECT has a WHERE, which this one has.
    stmts.extend(returning(multi_row(
        &order,
        "INSERT INTO invocations (id, function, idempotency_key, state, method, uri, headers, body, max_attempts, request_hash, created_at, run_at) \
         SELECT v.column1, v.column2, v.column3, 'queued', v.column4, v.column5, v.column6, v.column7, v.column8, v.column9, $now, $now \
         FROM (VALUES {values}) AS v WHERE v.column1 <> '' ON CONFLICT DO NOTHING RETURNING id AS enqueued",
        |&i| {
            let inv = invs[i];
            vec![
                Val::Text(inv.id.clone()),
                Val::Text(inv.function.clone()),
                Val::OptText(inv.idempotency_key.clone()),
                Val::Text(inv.method.clone()),
                Val::Text(inv.uri.clone()),
                Val::Text(serde_json::to_string(&inv.headers).unwrap_or_default()),
                Val::Bytes(inv.body.clone()),
                Val::Int(i64::from(inv.max_attempts)),
                Val::Text(hashes[i].clone()),
            ]
        },
    ), Rows::Enqueued));
    stmts.extend(returning(
        multi_row(
            &keyed,
            "SELECT i.id AS keyed, i.function AS keyed_function, i.idempotency_key AS keyed_key, \
         i.request_hash AS keyed_hash FROM invocations i \
         JOIN (VALUES {values}) AS v ON i.function = v.column1 AND i.idempotency_key = v.column2",
            |&i| {
                vec![
                    Val::Text(invs[i].function.clone()),
                    Val::OptText(invs[i].idempotency_key.clone()),
                ]
            },
        ),
        Rows::Keyed,
    ));
    stmts
}

/// What the attempt returned, however it ended.
fn result(o: &Outcome) -> &super::StoredResult {
    match &o.finish {
        Finish::Succeeded(r) | Finish::Retry { result: r, .. } | Finish::Dead { result: r, .. } => {
            r
        }
    }
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
fn outcome_stmts(outcomes: &[&Outcome]) -> Vec<Stmt> {
    let error = |o: &Outcome| match &o.finish {
        Finish::Succeeded(_) => None,
        Finish::Retry { error, .. } | Finish::Dead { error, .. } => Some(error.clone()),
    };
    let now = now_ms();
    let mut stmts = multi_row(
        outcomes,
        &format!(
            "INSERT INTO attempts (invocation_id, attempt, started_at, finished_at, outcome, error) \
             SELECT v.column1, v.column2, i.started_at, $now, v.column3, v.column4 \
             FROM (VALUES {{values}}) AS v {}",
            holding("column1", "column5")
        ),
        |o| {
            let outcome = if error(o).is_some() {
                "failed"
            } else {
                "succeeded"
            };
            vec![
                Val::Text(o.id.clone()),
                Val::Int(i64::from(o.attempt)),
                Val::Text(outcome.into()),
                Val::OptText(error(o)),
                Val::Int(o.token),
            ]
        },
    );
    let lines: Vec<(&Outcome, usize, &super::GuestLine)> = outcomes
        .iter()
        .flat_map(|o| {
            result(o)
                .logs
                .iter()
                .enumerate()
                .map(move |(seq, l)| (*o, seq, l))
        })
        .collect();
    stmts.extend(multi_row(
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
    ));
    let delivering: Vec<&&Outcome> = outcomes.iter().filter(|o| o.delivery.is_some()).collect();
    stmts.extend(multi_row(
        &delivering,
        &format!(
            "INSERT INTO deliveries (id, invocation_id, url, payload, state, attempts, next_at, created_at) \
             SELECT v.column1, v.column2, v.column3, v.column4, 'pending', 0, $now, $now \
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
            ]
        },
    ));
    // The retry time is stored as a delay from `$now` (on SQLite `now` itself, so the stored
    // time is exactly `run_at`; on PostgreSQL the same delay on the server's clock).
    stmts.extend(returning(
        multi_row(
            outcomes,
            "UPDATE invocations SET state = v.column3, last_error = v.column4, \
         run_at = COALESCE($now + v.column5, run_at), \
         finished_at = CASE WHEN v.column3 = 'retrying' THEN NULL ELSE $now END, \
         result_status = v.column6, result_headers = v.column7, result_body = v.column8, \
         lease_owner = NULL, lease_expires_at = NULL \
         FROM (VALUES {values}) AS v \
         WHERE invocations.id = v.column1 AND invocations.lease_token = v.column2 \
         AND invocations.state = 'running' RETURNING id AS finished",
            |o| {
                let delay = match &o.finish {
                    Finish::Retry { run_at, .. } => Some(run_at - now),
                    _ => None,
                };
                let r = result(o);
                vec![
                    Val::Text(o.id.clone()),
                    Val::Int(o.token),
                    Val::Text(o.finish.state().as_str().into()),
                    Val::OptText(error(o)),
                    Val::OptInt(delay),
                    Val::OptInt(r.status.map(i64::from)),
                    Val::Text(serde_json::to_string(&r.headers).unwrap_or_default()),
                    Val::Bytes(r.body.clone()),
                ]
            },
        ),
        Rows::Finished,
    ));
    stmts
}

/// The claims the outcomes ask for: one statement per worker (the oldest due first, as any
/// claim), its rows tagged with the worker's number (`claim_for`).
fn claim_stmts(backend: Backend, outcomes: &[&Outcome]) -> (Vec<Stmt>, Vec<Option<usize>>) {
    let mut workers: Vec<&super::writer::NextClaim> = Vec::new();
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
) -> Result<Vec<AnyRow>> {
    let now = now_ms();
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
                notify(&mut *tx, node).await?;
            }
            tx.commit().await?;
            Ok(rows)
        }
    }
}

/// Most parameters one PostgreSQL statement takes (the protocol's limit is 65,535).
const PG_MAX_PARAMS: usize = 30_000;

/// The columns every row of [`pg_single`] has, NULL where a kind of row has none.
const PG_COLUMNS: [(&str, &str); 10] = [
    ("id", "text"),
    ("function", "text"),
    ("attempts", "bigint"),
    ("max_attempts", "bigint"),
    ("lease_token", "bigint"),
    ("method", "text"),
    ("uri", "text"),
    ("headers", "text"),
    ("body", "bytea"),
    ("claim_for", "bigint"),
];

/// PostgreSQL: the statements of a batch as one statement — each a data-modifying `WITH`
/// query (all run, to completion, on one snapshot: an outcome's history joins on its claim
/// as it was when the statement began, the `UPDATE` ending it re-checks), their rows in one
/// `UNION ALL` with a `kind` column (`enqueued`, `finished`, `claim`, `notify`) — and the
/// `NOTIFY` to other nodes, delivered by its commit. One round trip instead of one per
/// statement plus `BEGIN` and `COMMIT`.
fn pg_single(stmts: Vec<Stmt>, notify_node: Option<&str>) -> (String, Vec<Val>) {
    let column = |name: &str, of: &[&str]| {
        let (_, ty) = PG_COLUMNS
            .iter()
            .find(|(c, _)| *c == name)
            .expect("a column");
        if of.contains(&name) {
            name.to_string()
        } else {
            format!("NULL::{ty} AS {name}")
        }
    };
    let branch = |kind: &str, from: &str, id: &str, of: &[&str]| {
        let cols: Vec<String> = PG_COLUMNS
            .iter()
            .map(|(c, _)| {
                if *c == "id" {
                    format!("{id} AS id")
                } else {
                    column(c, of)
                }
            })
            .collect();
        format!(
            "SELECT '{kind}'::text AS kind, {} FROM {from}",
            cols.join(", ")
        )
    };
    let mut ctes = Vec::new();
    let mut branches = Vec::new();
    let mut vals = Vec::new();
    for (i, stmt) in stmts.into_iter().enumerate() {
        ctes.push(format!("s{i} AS ({})", shift_params(&stmt.sql, vals.len())));
        vals.extend(stmt.vals);
        let from = format!("s{i}");
        match stmt.rows {
            Rows::Enqueued => branches.push(branch("enqueued", &from, "enqueued", &[])),
            Rows::Finished => branches.push(branch("finished", &from, "finished", &[])),
            Rows::Claim => branches.push(branch("claim", &from, "id", &PG_COLUMNS.map(|(c, _)| c))),
            Rows::None | Rows::Forget | Rows::Keyed => {}
        }
    }
    if let Some(node) = notify_node {
        let n = vals.len();
        vals.push(Val::Text(super::writer::NOTIFY_CHANNEL.into()));
        vals.push(Val::Text(node.into()));
        branches.push(branch(
            "notify",
            &format!("(SELECT pg_notify(${}, ${})) AS n", n + 1, n + 2),
            "NULL::text",
            &[],
        ));
    }
    if branches.is_empty() {
        branches.push(branch(
            "none",
            "(SELECT 1) AS n WHERE false",
            "NULL::text",
            &[],
        ));
    }
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", ctes.join(", "))
    };
    (format!("{with}{}", branches.join(" UNION ALL ")), vals)
}

/// `sql` with every `$k` (not `$now`) renumbered `$k+by`.
fn shift_params(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + sql.len() / 8);
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            let k: usize = rest[..digits].parse().unwrap_or(0);
            out.push_str(&(k + by).to_string());
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
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
    outcomes: &[&Outcome],
) -> Result<(Vec<Enqueued>, Vec<Written>)> {
    let hashes: Vec<String> = invs.iter().map(|inv| inv.request_hash()).collect();
    let mut stmts = enqueue_stmts(invs, &hashes, ttl);
    stmts.extend(outcome_stmts(outcomes));
    let (claims, asks) = claim_stmts(backend, outcomes);
    stmts.extend(claims);
    // Other nodes hear of new work: new invocations, a retry later, a delivery now. (A
    // fenced-out outcome wakes them for nothing, which is harmless.)
    let news = !invs.is_empty()
        || outcomes
            .iter()
            .any(|o| matches!(o.finish, Finish::Retry { .. }) || o.delivery.is_some());
    let notify_node = (backend == Backend::Postgres && news).then_some(node);
    let rows = execute(conn, backend, stmts, notify_node).await?;

    let mut inserted = HashSet::new();
    let mut keyed: HashMap<(String, String), (String, Option<String>)> = HashMap::new();
    let mut held = HashSet::new();
    let mut claimed: Vec<Vec<Claimed>> = Vec::new();
    for row in &rows {
        // A row of one statement is told by its first column's name, a row of
        // [`pg_single`] by its `kind`.
        let first = row.columns().first().map(Column::name).unwrap_or_default();
        let (kind, id) = if first == "kind" {
            (row.try_get::<String, _>(0)?, 1)
        } else {
            (first.to_string(), 0)
        };
        match kind.as_str() {
            "enqueued" => {
                inserted.insert(row.try_get::<String, _>(id)?);
            }
            "keyed" => {
                keyed.insert(
                    (row.try_get("keyed_function")?, row.try_get("keyed_key")?),
                    (row.try_get("keyed")?, row.try_get("keyed_hash")?),
                );
            }
            "finished" => {
                held.insert(row.try_get::<String, _>(id)?);
            }
            "notify" | "none" => {}
            _ => {
                let w = usize::try_from(row.try_get::<i64, _>("claim_for")?).unwrap_or(0);
                if claimed.len() <= w {
                    claimed.resize_with(w + 1, Vec::new);
                }
                claimed[w].push(model::claimed_from_row(row)?);
            }
        }
    }
    let mut enqueued = Vec::with_capacity(invs.len());
    for (inv, hash) in invs.iter().zip(&hashes) {
        enqueued.push(if inserted.contains(&inv.id) {
            Enqueued::New(inv.id.clone())
        } else {
            let key = (
                inv.function.clone(),
                inv.idempotency_key.clone().unwrap_or_default(),
            );
            let Some((id, stored)) = keyed.get(&key) else {
                return Err(QueueError::Corrupt(format!(
                    "invocation {} was neither stored nor found by its idempotency key",
                    inv.id
                )));
            };
            // Rows stored before the digest existed count as the same request.
            match stored {
                Some(stored) if stored != hash => Enqueued::Conflict(id.clone()),
                _ => Enqueued::Existing(id.clone()),
            }
        });
    }
    let mut finished = Vec::with_capacity(outcomes.len());
    for (o, ask) in outcomes.iter().zip(asks) {
        let next = ask.and_then(|w| claimed.get_mut(w).and_then(Vec::pop));
        finished.push((held.contains(&o.id), next));
    }
    Ok((enqueued, finished))
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
        "INSERT INTO deliveries (id, invocation_id, url, payload, state, attempts, next_at, created_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, 'pending', 0, $now, $now \
         FROM (VALUES {values}) AS v WHERE v.column1 <> ''",
        |(invocation, d)| {
            vec![
                Val::Text(crate::ids::new_id()),
                Val::Text(invocation.to_string()),
                Val::Text(d.url.clone()),
                Val::Text(d.payload.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_into_chunks_padded_to_powers_of_two() {
        let items: Vec<u32> = (0..600).collect();
        let shapes: Vec<(usize, usize)> = padded_chunks(&items)
            .map(|(chunk, rows)| (chunk.len(), rows))
            .collect();
        assert_eq!(shapes, [(256, 256), (256, 256), (88, 128)]);
        let stmts = multi_row(&items[..3], "INSERT {values}", |&i| {
            vec![Val::Text(format!("r{i}")), Val::Int(i.into())]
        });
        assert_eq!(stmts.len(), 1);
        assert_eq!(
            stmts[0].sql,
            "INSERT ($1, $2), ($3, $4), ($5, $6), ($7, $8)"
        );
        assert_eq!(
            stmts[0].vals[4..],
            [
                Val::Text("r2".into()),
                Val::Int(2),
                Val::Text(String::new()),
                Val::OptInt(None)
            ]
        );
    }

    #[test]
    fn a_postgres_batch_is_one_statement_of_with_queries_whose_rows_say_their_kind() {
        let stmt = |sql: &str, vals: Vec<Val>, rows| Stmt {
            sql: sql.into(),
            vals,
            rows,
        };
        let (sql, vals) = pg_single(
            vec![
                stmt(
                    "INSERT a VALUES ($1) RETURNING id AS enqueued",
                    vec![Val::Int(1)],
                    Rows::Enqueued,
                ),
                stmt("INSERT b VALUES ($1, $now)", vec![Val::Int(2)], Rows::None),
                stmt(
                    "UPDATE c SET x = $1 RETURNING id AS finished",
                    vec![Val::Int(3)],
                    Rows::Finished,
                ),
            ],
            Some("node1"),
        );
        assert!(
            sql.starts_with(
                "WITH s0 AS (INSERT a VALUES ($1) RETURNING id AS enqueued), \
                 s1 AS (INSERT b VALUES ($2, $now)), s2 AS (UPDATE c SET x = $3 RETURNING id AS finished) \
                 SELECT 'enqueued'::text AS kind, enqueued AS id, NULL::text AS function,"
            ),
            "{sql}"
        );
        assert!(
            sql.contains(" FROM s0 UNION ALL SELECT 'finished'::text AS kind, finished AS id,"),
            "{sql}"
        );
        assert!(
            sql.ends_with("NULL::bigint AS claim_for FROM (SELECT pg_notify($4, $5)) AS n"),
            "{sql}"
        );
        assert_eq!(vals.len(), 5);
        assert_eq!(vals[4], Val::Text("node1".into()));
    }

    #[test]
    fn statements_joined_into_one_command_bind_their_values_in_textual_order() {
        let (sql, vals) = positional(
            "SELECT $2, $1 WHERE x < $now AND y = $2 AND z = $10",
            vec![Val::Int(1), Val::Text("two".into())],
            99,
        );
        assert_eq!(sql, "SELECT ?, ? WHERE x < ? AND y = ? AND z = $10");
        assert_eq!(
            vals,
            [
                Val::Text("two".into()),
                Val::Int(1),
                Val::Int(99),
                Val::Text("two".into())
            ]
        );
    }
}
