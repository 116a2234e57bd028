//! The statements of a group commit as data, and how they become one command: multi-row
//! `VALUES` padded to a power of two, anonymous parameters for SQLite, and PostgreSQL's single
//! statement of data-modifying `WITH` queries.

use super::MAX_BATCH;
use super::Query;

/// One value bound to a statement of a batch.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
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
pub(super) struct Stmt {
    pub sql: String,
    pub vals: Vec<Val>,
    pub rows: Rows,
}

/// What a statement of a batch returns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
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
pub(super) fn returning(stmts: Vec<Stmt>, rows: Rows) -> Vec<Stmt> {
    stmts.into_iter().map(|s| Stmt { rows, ..s }).collect()
}

/// `query` with `vals` bound in order.
pub(super) fn bind_vals(mut query: Query<'_>, vals: Vec<Val>) -> Query<'_> {
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
pub(super) fn values_sql(rows: usize, width: usize) -> String {
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
pub(super) fn padded_chunks<T>(items: &[T]) -> impl Iterator<Item = (&[T], usize)> {
    items
        .chunks(MAX_BATCH)
        .map(|chunk| (chunk, chunk.len().next_power_of_two()))
}

/// Appends padding rows to `vals` (at least one row of `width` values) until it holds `rows`
/// rows: `''` in the first column (no id, no function name is empty; every padded statement
/// skips it, with `WHERE v.column1 <> ''` or a join on it) and NULLs of the first row's types
/// elsewhere (PostgreSQL types a VALUES column from its rows).
pub(super) fn pad(vals: &mut Vec<Val>, rows: usize, width: usize) {
    // The first row's kinds of value; a padding row copies none of its data.
    let kinds: Vec<Val> = vals[1..width]
        .iter()
        .map(|v| match v {
            Val::Text(_) | Val::OptText(_) => Val::OptText(None),
            Val::Int(_) | Val::OptInt(_) => Val::OptInt(None),
            Val::Bytes(_) | Val::OptBytes(_) => Val::OptBytes(None),
        })
        .collect();
    while vals.len() < rows * width {
        vals.push(Val::Text(String::new()));
        vals.extend(kinds.iter().cloned());
    }
}

/// One padded multi-row statement per chunk of `items`: `sql` with `{values}` replaced by the
/// VALUES rows, each item's row from `row`.
pub(super) fn multi_row<T>(items: &[T], sql: &str, row: impl Fn(&T) -> Vec<Val>) -> Vec<Stmt> {
    padded_chunks(items)
        .map(|(chunk, rows)| {
            let mut vals = Vec::new();
            let mut width = 0;
            for item in chunk {
                let values = row(item);
                width = values.len();
                vals.extend(values);
            }
            pad(&mut vals, rows, width);
            Stmt {
                sql: sql.replace("{values}", &values_sql(rows, width)),
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
pub(super) fn positional(sql: &str, vals: Vec<Val>, now: i64) -> (String, Vec<Val>) {
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

/// Most parameters one PostgreSQL statement takes (the protocol's limit is 65,535).
pub(super) const PG_MAX_PARAMS: usize = 30_000;

/// The columns every row of [`pg_single`] has, NULL where a kind of row has none: a claim's
/// are [`super::schema::CLAIMED_COLUMNS`], then `claim_for`.
pub(super) const PG_COLUMNS: [(&str, &str); 16] = [
    ("id", "text"),
    ("function", "text"),
    ("attempts", "bigint"),
    ("max_attempts", "bigint"),
    ("lease_token", "bigint"),
    ("method", "text"),
    ("uri", "text"),
    ("headers", "text"),
    ("body", "bytea"),
    ("deploy", "text"),
    ("created_at", "bigint"),
    ("suspensions", "bigint"),
    ("wait_step", "text"),
    ("wait_since", "bigint"),
    ("wait_until", "bigint"),
    ("claim_for", "bigint"),
];

/// PostgreSQL: the statements of a batch as one statement — each a data-modifying `WITH`
/// query (all run, to completion, on one snapshot: an outcome's history joins on its claim
/// as it was when the statement began, the `UPDATE` ending it re-checks), their rows in one
/// `UNION ALL` with a `kind` column (`enqueued`, `finished`, `claim`, `notify`) — and the
/// `NOTIFY` to other nodes, delivered by its commit. One round trip instead of one per
/// statement plus `BEGIN` and `COMMIT`.
pub(super) fn pg_single(stmts: Vec<Stmt>, notify_node: Option<&str>) -> (String, Vec<Val>) {
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
        vals.push(Val::Text(super::NOTIFY_CHANNEL.into()));
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
pub(super) fn shift_params(sql: &str, by: usize) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_row_on_postgres_has_every_column_a_claim_reads() {
        let claimed: Vec<&str> = super::super::schema::CLAIMED_COLUMNS
            .split(',')
            .map(str::trim)
            .collect();
        let single: Vec<&str> = PG_COLUMNS.iter().map(|(c, _)| *c).collect();
        assert_eq!(single[..single.len() - 1], claimed[..]);
        assert_eq!(single.last(), Some(&"claim_for"));
    }

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
