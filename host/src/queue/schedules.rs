//! Schedule controls: whether a function's schedule is paused (one row per function, shared by
//! every node on the queue and kept across restarts), and whether a function has a run still
//! waiting or running (what `overlap = "skip"` asks before each tick).

use sqlx::Row;

use super::{Queue, Result, now_ms};

impl Queue {
    /// Whether `function`'s schedule is paused.
    pub async fn schedule_paused(&self, function: &str) -> Result<bool> {
        let row = sqlx::query("SELECT paused FROM schedule_controls WHERE function = $1")
            .bind(function.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let paused = row.map(|r| r.try_get::<i64, _>("paused")).transpose()?;
        Ok(paused.unwrap_or(0) != 0)
    }

    /// Pauses (or resumes) `function`'s schedule for every node.
    pub async fn set_schedule_paused(&self, function: &str, paused: bool) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO schedule_controls (function, paused, changed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (function) DO UPDATE SET paused = excluded.paused, \
             changed_at = excluded.changed_at",
        )
        .bind(function.to_string())
        .bind(i64::from(paused))
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(Into::into);
        self.noted(done).map(|_| ())
    }

    /// The functions whose schedules are paused.
    pub async fn paused_schedules(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT function FROM schedule_controls WHERE paused = 1")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("function").map_err(Into::into))
            .collect()
    }

    /// Whether a schedule tick of `function` is still queued, running or waiting for a retry
    /// (requests clients sent it do not count).
    pub async fn has_unfinished(&self, function: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM invocations WHERE function = $1 \
             AND state IN ('queued', 'running', 'retrying', 'sleeping', 'waiting') AND tick IS NOT NULL LIMIT 1",
        )
        .bind(function.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}
