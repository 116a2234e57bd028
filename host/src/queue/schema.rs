//! Schema, versioned migrations, and the few statements whose text must differ by dialect.

use sqlx::{AnyPool, Row};

use super::{Backend, Result};

/// Migrations in order; each entry is `(version, sqlite, postgres)`. Append, never edit.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE invocations (
        id TEXT PRIMARY KEY,
        function TEXT NOT NULL,
        idempotency_key TEXT,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        max_attempts BIGINT NOT NULL,
        lease_token BIGINT NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at BIGINT,
        method TEXT NOT NULL,
        uri TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at BIGINT NOT NULL,
        run_at BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        last_error TEXT,
        result_status BIGINT,
        result_headers TEXT,
        result_body BLOB
    );
    CREATE UNIQUE INDEX invocations_idempotency ON invocations (function, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX invocations_due ON invocations (state, run_at);
    CREATE INDEX invocations_function ON invocations (function, created_at);
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        invocation_id TEXT NOT NULL,
        url TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        last_error TEXT
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_at);
    "#,
        "",
    ),
    // A digest of method, path and body, so a reused idempotency key with another request is
    // told apart from a retry of the same one.
    (
        2,
        "ALTER TABLE invocations ADD COLUMN request_hash TEXT",
        "",
    ),
    // Attempts cut off by a host that died or lost its lease, counted apart from attempts.
    (
        3,
        "ALTER TABLE invocations ADD COLUMN interruptions BIGINT NOT NULL DEFAULT 0",
        "",
    ),
    // Every finished attempt (the dashboard's timeline), and what the guest printed during
    // each, kept with the invocation and purged with it.
    (
        4,
        r#"
    CREATE TABLE attempts (
        invocation_id TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX attempts_by_invocation ON attempts (invocation_id, finished_at);
    CREATE TABLE guest_logs (
        invocation_id TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        stream TEXT NOT NULL,
        line TEXT NOT NULL
    );
    CREATE INDEX guest_logs_by_invocation ON guest_logs (invocation_id, attempt, seq);
    "#,
        "",
    ),
    // Schedule ticks in a column of their own (they were idempotency keys `schedule:<time>`,
    // a namespace any client could write into and so cancel ticks in advance). Only rows the
    // scheduler wrote carry its `fnhost-event` header (clients' `fnhost-*` headers are dropped).
    // And one row health rewrites while writes fail, to see when they succeed again.
    (
        5,
        r#"
    ALTER TABLE invocations ADD COLUMN tick TEXT;
    UPDATE invocations SET tick = substr(idempotency_key, 10), idempotency_key = NULL
        WHERE idempotency_key LIKE 'schedule:%' AND headers LIKE '%"fnhost-event"%';
    CREATE UNIQUE INDEX invocations_tick ON invocations (function, tick) WHERE tick IS NOT NULL;
    CREATE TABLE fnhost_probe (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, payload BLOB NOT NULL);
    "#,
        "",
    ),
    // Deploys: immutable versions of the site (manifest: settings and the component of each
    // function by sha256), components content-addressed in chunks (written whole in one
    // transaction: an upload cut off stores nothing), the one published deploy (a single row:
    // publishing is one committed change), and the deploy each invocation was accepted under.
    (
        6,
        r#"
    ALTER TABLE invocations ADD COLUMN deploy TEXT;
    CREATE TABLE deploys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        author TEXT NOT NULL,
        message TEXT NOT NULL,
        size BIGINT NOT NULL,
        manifest TEXT NOT NULL
    );
    CREATE TABLE deploy_functions (
        deploy TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (deploy, name)
    );
    CREATE INDEX deploy_functions_by_blob ON deploy_functions (sha256);
    CREATE TABLE deploy_blobs (sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, created_at BIGINT NOT NULL);
    CREATE TABLE deploy_blob_chunks (
        sha256 TEXT NOT NULL,
        seq BIGINT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (sha256, seq)
    );
    CREATE TABLE deploy_published (
        id BIGINT PRIMARY KEY,
        deploy TEXT NOT NULL,
        generation BIGINT NOT NULL,
        published_at BIGINT NOT NULL
    );
    CREATE INDEX invocations_deploy ON invocations (deploy) WHERE deploy IS NOT NULL;
    "#,
        "",
    ),
    // Schedule controls: a paused schedule is one row, read by every node's scheduler at each
    // tick (so a pause holds across nodes and restarts). And what `overlap = "skip"` asks at
    // each tick: does the function have a run still waiting or running?
    (
        7,
        r#"
    CREATE TABLE schedule_controls (
        function TEXT PRIMARY KEY,
        paused BIGINT NOT NULL,
        changed_at BIGINT NOT NULL
    );
    CREATE INDEX invocations_unfinished ON invocations (function, state)
        WHERE state IN ('queued', 'running', 'retrying');
    "#,
        "",
    ),
    // Rate limits across nodes: each node's count of each key in each window, published and
    // read back by every node a few times a second (never on a request's path).
    (
        8,
        r#"
    CREATE TABLE rate_counts (
        function TEXT NOT NULL,
        key TEXT NOT NULL,
        node TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        count BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (function, key, node, window_start)
    );
    CREATE INDEX rate_counts_recent ON rate_counts (function, window_start);
    "#,
        "",
    ),
    // Traces: a delivery keeps the W3C traceparent of the attempt that decided it, so its POST
    // is a span of the invocation's trace whenever and wherever it is sent.
    (
        9,
        "ALTER TABLE deliveries ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';",
        "",
    ),
    // Durable steps (`fnhost:function/steps`): each invocation's recorded step results (a
    // NULL value: a wait that timed out), purged with it; what a suspended invocation waits
    // for (`sleeping`/`waiting` states, due at `run_at` like any other); events, kept with
    // the invocations each woke. Unfinished now includes the two suspended states.
    (
        10,
        r#"
    CREATE TABLE steps (
        invocation_id TEXT NOT NULL,
        name TEXT NOT NULL,
        value BLOB,
        size BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (invocation_id, name)
    );
    ALTER TABLE invocations ADD COLUMN suspensions BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE invocations ADD COLUMN wait_step TEXT;
    ALTER TABLE invocations ADD COLUMN wait_event TEXT;
    ALTER TABLE invocations ADD COLUMN wait_key TEXT;
    ALTER TABLE invocations ADD COLUMN wait_since BIGINT;
    ALTER TABLE invocations ADD COLUMN wait_until BIGINT;
    CREATE INDEX invocations_waiting ON invocations (wait_event, wait_key) WHERE state = 'waiting';
    DROP INDEX invocations_unfinished;
    CREATE INDEX invocations_unfinished ON invocations (function, state)
        WHERE state IN ('queued', 'running', 'retrying', 'sleeping', 'waiting');
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        payload BLOB NOT NULL,
        idempotency_key TEXT,
        received_at BIGINT NOT NULL,
        woke TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX events_by_key ON events (name, key, received_at);
    CREATE UNIQUE INDEX events_idempotency ON events (name, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    "#,
        "",
    ),
    // Priorities: claims take due invocations by `run_at - priority * PRIORITY_MS` (a point
    // of priority counts as a minute of waiting), in the order of this index.
    (
        11,
        r#"
    ALTER TABLE invocations ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX invocations_claim_order ON invocations (state, (run_at - priority * 60000));
    "#,
        "",
    ),
    // Functions started by an event (`events = [...]`): one invocation per subscriber and
    // event (unique), and the event keeps the ids it started.
    (
        12,
        r#"
    ALTER TABLE invocations ADD COLUMN event_id TEXT;
    CREATE UNIQUE INDEX invocations_event ON invocations (function, event_id)
        WHERE event_id IS NOT NULL;
    ALTER TABLE events ADD COLUMN started TEXT NOT NULL DEFAULT '[]';
    "#,
        "",
    ),
];

/// What one point of priority is worth in the claim order: a minute of waiting. Among due
/// invocations the one with the smallest `run_at - priority * PRIORITY_MS` goes first, so a
/// higher priority goes ahead of work that became due less than its lead before it, and
/// nothing waits longer than the whole range (100 minutes) behind work that came later.
pub(super) const PRIORITY_MS: i64 = 60_000;

/// Key of the advisory lock that serialises migrations on PostgreSQL ("fnhost" in ASCII).
const MIGRATION_LOCK: i64 = 0x666e_686f_7374;

/// The database clock in epoch milliseconds, on PostgreSQL. Leases are compared between
/// nodes, so every node must read the same clock: the server's, not its own. The statement's
/// start time (stable within a statement, unlike `clock_timestamp()`), so a comparison with
/// it can use an index.
pub(super) const PG_NOW_MS: &str = "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT";

/// Resolves the `$now` marker of a statement. On SQLite it becomes one more bound parameter,
/// numbered after the highest `$N` in the text (bind the host's time last: one process owns
/// the file, so its clock is the only clock); on PostgreSQL it is [`PG_NOW_MS`] and nothing
/// is bound.
pub(super) fn with_now(backend: Backend, template: &str) -> String {
    match backend {
        Backend::Postgres => template.replace("$now", PG_NOW_MS),
        Backend::Sqlite => {
            let bytes = template.as_bytes();
            let highest = template
                .match_indices('$')
                .filter_map(|(i, _)| {
                    let digits: String = bytes[i + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .map(|&b| char::from(b))
                        .collect();
                    digits.parse::<usize>().ok()
                })
                .max()
                .unwrap_or(0);
            template.replace("$now", &format!("${}", highest + 1))
        }
    }
}

/// Applies the migrations not yet applied.
///
/// SQLite: each in its own transaction (one process owns the file). PostgreSQL: all in one
/// transaction under an advisory lock, so nodes starting at once apply each migration once
/// (the second waits, then finds the version already recorded); DDL is transactional there.
pub(super) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<()> {
    migrate_until(pool, backend, i64::MAX).await
}

/// [`migrate`], applying no migration past `last` (tests build older databases with it).
pub(super) async fn migrate_until(pool: &AnyPool, backend: Backend, last: i64) -> Result<()> {
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS fnhost_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
    if backend == Backend::Postgres {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(CREATE).execute(&mut *tx).await?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) FROM fnhost_schema")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        for (version, sqlite, postgres) in MIGRATIONS {
            if current.is_some_and(|c| c >= *version) || *version > last {
                continue;
            }
            // Same text unless a dialect version is given; BLOB is BYTEA there.
            let sql = if postgres.is_empty() {
                sqlite.replace("BLOB", "BYTEA")
            } else {
                postgres.to_string()
            };
            apply(&mut tx, backend, *version, &sql).await?;
        }
        tx.commit().await?;
        return Ok(());
    }
    sqlx::query(CREATE).execute(pool).await?;
    let current: Option<i64> = sqlx::query("SELECT MAX(version) FROM fnhost_schema")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    for (version, sqlite, _) in MIGRATIONS {
        if current.is_some_and(|c| c >= *version) || *version > last {
            continue;
        }
        let mut tx = pool.begin().await?;
        apply(&mut tx, backend, *version, sqlite).await?;
        tx.commit().await?;
    }
    Ok(())
}

async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    version: i64,
    sql: &str,
) -> Result<()> {
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    let insert = with_now(
        backend,
        "INSERT INTO fnhost_schema (version, applied_at) VALUES ($1, $now)",
    );
    let mut q = sqlx::query(&insert).bind(version);
    if backend == Backend::Sqlite {
        q = q.bind(super::now_ms());
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// The states an invocation is claimed from once its `run_at` comes: waiting for a first
/// attempt, a retry, the end of a sleep, or an event (or its timeout).
pub(super) const DUE_STATES: &str = "('queued', 'retrying', 'sleeping', 'waiting')";

/// The columns a claimed row is read from (`rows::claimed_from_row`).
pub(super) const CLAIMED_COLUMNS: &str = "id, function, attempts, max_attempts, lease_token, method, uri, headers, body, deploy, created_at, \
     suspensions, wait_step, wait_since, wait_until";

/// Claim due invocations. Binds: owner, lease length (ms), limit (+ now).
///
/// On PostgreSQL the sub-select locks the rows it picks and skips rows another node's claim
/// holds; the outer UPDATE then only touches rows this transaction has locked, and a row
/// updated by a commit since the statement's snapshot is re-checked against the sub-select's
/// WHERE before it is locked (READ COMMITTED's re-check), so a row is never claimed twice.
/// The LIMIT keeps the sub-select from being flattened into a join: it runs once.
pub(super) fn claim_sql(backend: Backend, skipped: usize) -> String {
    with_now(backend, &claim_template(backend, skipped))
}

/// [`claim_sql`] with its `$now` unresolved (to be resolved with the text it joins).
pub(super) fn claim_template(backend: Backend, skipped: usize) -> String {
    // SQLite has one writer at a time, so the sub-select cannot race.
    let lock = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
    };
    // Functions at their concurrency cap on this node: binds $4.. (one per name).
    let skip = if skipped == 0 {
        String::new()
    } else {
        let names: Vec<String> = (4..4 + skipped).map(|i| format!("${i}")).collect();
        format!("AND function NOT IN ({}) ", names.join(", "))
    };
    format!(
        "UPDATE invocations SET state = 'running', attempts = attempts + 1, lease_token = lease_token + 1, \
         lease_owner = $1, lease_expires_at = $now + $2, started_at = $now \
         WHERE id IN (SELECT id FROM invocations WHERE state IN {DUE_STATES} AND run_at <= $now \
                      {skip}ORDER BY run_at - priority * {PRIORITY_MS} LIMIT $3 {lock}) \
         RETURNING {CLAIMED_COLUMNS}"
    )
}

/// How long a PostgreSQL node keeps the deliveries it took before another node may take them
/// (the delivery loop POSTs at most 16 at 10 s each before recording them).
pub(super) const DELIVERY_CLAIM_MS: i64 = 180_000;

/// Deliveries due now. Binds: limit (+ now). On PostgreSQL several nodes run the delivery
/// loop, so a due record is taken (its `next_at` pushed by [`DELIVERY_CLAIM_MS`]) rather than
/// just read; recording the attempt sets `next_at` again. If the node dies meanwhile, another
/// delivers it after that time: still at least once.
pub(super) fn due_deliveries_sql(backend: Backend) -> String {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT id, invocation_id, url, payload, attempts, traceparent FROM deliveries \
             WHERE state = 'pending' AND next_at <= $now ORDER BY next_at LIMIT $1"
                .to_string()
        }
        Backend::Postgres => format!(
            "UPDATE deliveries SET next_at = $now + {DELIVERY_CLAIM_MS} \
             WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' AND next_at <= $now \
                          ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, invocation_id, url, payload, attempts, traceparent"
        ),
    };
    with_now(backend, &sql)
}

/// Filtered listing. Binds: function or NULL, state or NULL, limit.
pub(super) fn list_sql(backend: Backend, columns: &str) -> String {
    let text = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => "::text",
    };
    format!(
        "SELECT {columns} FROM invocations WHERE ($1{text} IS NULL OR function = $1) AND ($2{text} IS NULL OR state = $2) \
         ORDER BY created_at DESC, id LIMIT $3"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_the_last_parameter_on_sqlite_and_the_server_clock_on_postgres() {
        assert_eq!(
            with_now(
                Backend::Sqlite,
                "UPDATE t SET a = $1 WHERE b < $now AND c = $12 OR d = $now"
            ),
            "UPDATE t SET a = $1 WHERE b < $13 AND c = $12 OR d = $13"
        );
        assert_eq!(with_now(Backend::Sqlite, "SELECT $now"), "SELECT $1");
        let pg = with_now(Backend::Postgres, "SELECT $1 WHERE x < $now");
        assert_eq!(pg, format!("SELECT $1 WHERE x < {PG_NOW_MS}"));
        assert!(!claim_sql(Backend::Postgres, 0).contains("$now"));
        assert!(claim_sql(Backend::Postgres, 0).contains("FOR UPDATE SKIP LOCKED"));
        assert!(claim_sql(Backend::Sqlite, 0).contains("run_at <= $4"));
        let skipping = claim_sql(Backend::Sqlite, 2);
        assert!(skipping.contains("run_at <= $6 AND function NOT IN ($4, $5) ORDER BY"));
    }
}
