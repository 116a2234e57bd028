//! Schema, versioned migrations, and the few statements whose text must differ by dialect.

use sqlx::{AnyPool, Row};

use super::{Backend, Result};

/// Migrations in order; each entry is `(version, sqlite, postgres)`. Append, never edit.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
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
)];

/// Applies the migrations not yet applied, each in its own transaction.
pub(super) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS fnhost_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .execute(pool)
        .await?;
    let current: Option<i64> = sqlx::query("SELECT MAX(version) FROM fnhost_schema")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    for (version, sqlite, postgres) in MIGRATIONS {
        if current.is_some_and(|c| c >= *version) {
            continue;
        }
        let sql = match backend {
            Backend::Sqlite => sqlite.to_string(),
            // Same text unless a dialect version is given; BLOB is BYTEA there.
            Backend::Postgres if postgres.is_empty() => sqlite.replace("BLOB", "BYTEA"),
            Backend::Postgres => postgres.to_string(),
        };
        let mut tx = pool.begin().await?;
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO fnhost_schema (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(super::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Insert one invocation; a repeated idempotency key inserts nothing.
/// Binds: id, function, key, method, uri, headers, body, max_attempts, now.
pub(super) fn insert_sql(_backend: Backend) -> &'static str {
    "INSERT INTO invocations (id, function, idempotency_key, state, method, uri, headers, body, max_attempts, created_at, run_at) \
     VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $9) ON CONFLICT DO NOTHING"
}

/// Claim due invocations. Binds: owner, lease expiry, now, limit.
pub(super) fn claim_sql(backend: Backend) -> String {
    // SQLite has one writer at a time, so the sub-select cannot race; PostgreSQL skips rows
    // another node is claiming.
    let lock = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
    };
    format!(
        "UPDATE invocations SET state = 'running', attempts = attempts + 1, lease_token = lease_token + 1, \
         lease_owner = $1, lease_expires_at = $2, started_at = $3 \
         WHERE id IN (SELECT id FROM invocations WHERE state IN ('queued', 'retrying') AND run_at <= $3 \
                      ORDER BY run_at LIMIT $4 {lock}) \
         RETURNING id, function, attempts, max_attempts, lease_token, method, uri, headers, body"
    )
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
