//! Rate-limit counts shared by the nodes of one PostgreSQL queue: each node publishes its
//! count of each key in each window and reads the others' back, a few times a second, in one
//! transaction per limit (a function's or a rule's, see `functions::rate`). A request never waits
//! on this.

use sqlx::Row;

use super::{Queue, Result, now_ms};

/// A count of one key in one window: this node's (published) or the other nodes' together
/// (read back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCount {
    /// The key (`ip|domain`).
    pub key: String,
    /// When the window began (ms since the epoch, a multiple of its size).
    pub window_start: i64,
    /// Requests counted.
    pub count: i64,
}

/// Rows one statement publishes at most.
const CHUNK: usize = 500;

/// Rows older than this are deleted (twice the longest window).
const KEEP_MS: i64 = 2 * 3600 * 1000;

impl Queue {
    /// Publishes `node`'s counts `mine` for `function`, and returns the other nodes' counts
    /// (summed per key and window) of windows that began at or after `since`.
    pub async fn share_rates(
        &self,
        node: &str,
        function: &str,
        mine: &[RateCount],
        since: i64,
    ) -> Result<Vec<RateCount>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for chunk in mine.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = i * 3;
                    format!("($1, $2, $3, ${}, ${}, ${})", b + 4, b + 5, b + 6)
                })
                .collect();
            let sql = format!(
                "INSERT INTO rate_counts (function, node, updated_at, key, window_start, count) \
                 VALUES {} ON CONFLICT (function, key, node, window_start) \
                 DO UPDATE SET count = excluded.count, updated_at = excluded.updated_at",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql)
                .bind(function.to_string())
                .bind(node.to_string())
                .bind(now);
            for c in chunk {
                query = query.bind(c.key.clone()).bind(c.window_start).bind(c.count);
            }
            query.execute(&mut *tx).await?;
        }
        let rows = sqlx::query(
            "SELECT key, window_start, CAST(SUM(count) AS BIGINT) AS n FROM rate_counts \
             WHERE function = $1 AND node <> $2 AND window_start >= $3 \
             GROUP BY key, window_start",
        )
        .bind(function.to_string())
        .bind(node.to_string())
        .bind(since)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM rate_counts WHERE function = $1 AND window_start < $2")
            .bind(function.to_string())
            .bind(now - KEEP_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(RateCount {
                    key: r.try_get("key")?,
                    window_start: r.try_get("window_start")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }
}
