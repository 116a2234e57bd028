//! Deploys in the queue database: components stored content-addressed (sha256) in chunks, each
//! deploy's manifest and its functions, and the one published deploy — a single row, so
//! publishing (or rolling back) is one committed change, announced to other nodes by `NOTIFY`
//! on PostgreSQL in the same transaction.

use std::collections::HashSet;
use std::path::Path;

use sqlx::Row;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Backend, Queue, QueueError, Result, now_ms};

/// The PostgreSQL channel on which a publish is announced.
pub const DEPLOY_CHANNEL: &str = "fnhost_deploys";

/// A component is stored in chunks of this size: no statement carries a whole component,
/// and neither side holds one in memory.
pub const CHUNK: usize = 1 << 20;

/// A deploy as stored.
#[derive(Debug, Clone)]
pub struct DeployRecord {
    /// Short id (what `fnhost publish ID` takes).
    pub id: String,
    /// sha256 of the manifest: two deploys of the same content have the same hash.
    pub hash: String,
    /// When it was stored, ms since the epoch.
    pub created_at: i64,
    /// Who deployed (the CLI sends the user and host name).
    pub author: String,
    /// The deploy message.
    pub message: String,
    /// Bytes of its components.
    pub size: u64,
    /// What it holds (JSON: settings, rules, the component of each function), read by
    /// `deploys`.
    pub manifest: String,
    /// Its functions and their components' sha256, by name.
    pub functions: Vec<(String, String)>,
}

/// The published deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its id.
    pub deploy: String,
    /// Bumped by every publish (also of the same deploy again).
    pub generation: i64,
    /// When, ms since the epoch.
    pub published_at: i64,
}

/// Why a deploy was not stored.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A component it names was never uploaded (or was purged since).
    #[error("component {0} of this deploy has not been uploaded")]
    MissingBlob(String),
    /// The database failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Queue {
    /// Which of `shas` are not stored yet (each once, in order).
    pub async fn missing_blobs(&self, shas: &[String]) -> Result<Vec<String>> {
        let stored = stored_among(&self.pool, shas).await?;
        let mut missing: Vec<String> = Vec::new();
        for sha in shas {
            if !stored.contains(sha) && !missing.contains(sha) {
                missing.push(sha.clone());
            }
        }
        Ok(missing)
    }

    /// Stores the component in `file` (already checked to hash to `sha`) in one transaction,
    /// a chunk at a time; nothing when it is stored already.
    pub async fn store_blob(&self, sha: &str, file: &Path) -> Result<()> {
        let io = |e: std::io::Error| QueueError::Corrupt(format!("{}: {e}", file.display()));
        let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
        let mut tx = self.pool.begin().await?;
        let mut seq = 0i64;
        let mut size = 0u64;
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            (&mut reader)
                .take(CHUNK as u64)
                .read_to_end(&mut chunk)
                .await
                .map_err(io)?;
            if chunk.is_empty() && seq > 0 {
                break;
            }
            size += chunk.len() as u64;
            sqlx::query(
                "INSERT INTO deploy_blob_chunks (sha256, seq, data) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(sha.to_string())
            .bind(seq)
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
            seq += 1;
        }
        let insert = self.sql(
            "INSERT INTO deploy_blobs (sha256, size, created_at) VALUES ($1, $2, $now) \
             ON CONFLICT DO NOTHING",
        );
        let query = sqlx::query(&insert)
            .bind(sha.to_string())
            .bind(i64::try_from(size).unwrap_or(i64::MAX));
        self.now(query, now_ms()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes the stored component `sha` to `dest` (through a temporary file beside it,
    /// renamed when whole). `false` when it is not stored.
    pub async fn fetch_blob(&self, sha: &str, dest: &Path) -> Result<bool> {
        let io = |e: std::io::Error| QueueError::Corrupt(format!("{}: {e}", dest.display()));
        let row = sqlx::query("SELECT COUNT(*) FROM deploy_blob_chunks WHERE sha256 = $1")
            .bind(sha.to_string())
            .fetch_one(&self.pool)
            .await?;
        let chunks: i64 = row.try_get(0)?;
        if chunks == 0 {
            return Ok(false);
        }
        let partial = dest.with_extension(format!("part-{}", &crate::ids::new_id()[..8]));
        let mut out = tokio::fs::File::create(&partial).await.map_err(io)?;
        for seq in 0..chunks {
            let row =
                sqlx::query("SELECT data FROM deploy_blob_chunks WHERE sha256 = $1 AND seq = $2")
                    .bind(sha.to_string())
                    .bind(seq)
                    .fetch_one(&self.pool)
                    .await?;
            let data: Vec<u8> = row.try_get(0)?;
            out.write_all(&data).await.map_err(io)?;
        }
        out.sync_all().await.map_err(io)?;
        drop(out);
        tokio::fs::rename(&partial, dest).await.map_err(io)?;
        Ok(true)
    }

    /// Stores `deploy` (every component it names must be stored), and publishes it with
    /// `publish`, in one transaction; the publish's generation.
    pub async fn create_deploy(
        &self,
        deploy: &DeployRecord,
        publish: bool,
    ) -> std::result::Result<Option<Published>, CreateError> {
        let mut tx = self.pool.begin().await.map_err(QueueError::from)?;
        let shas: Vec<String> = deploy.functions.iter().map(|(_, s)| s.clone()).collect();
        let stored = stored_among(&mut *tx, &shas).await?;
        if let Some(sha) = shas.iter().find(|s| !stored.contains(*s)) {
            return Err(CreateError::MissingBlob(sha.clone()));
        }
        sqlx::query(
            "INSERT INTO deploys (id, hash, created_at, author, message, size, manifest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(deploy.id.clone())
        .bind(deploy.hash.clone())
        .bind(deploy.created_at)
        .bind(deploy.author.clone())
        .bind(deploy.message.clone())
        .bind(i64::try_from(deploy.size).unwrap_or(i64::MAX))
        .bind(deploy.manifest.clone())
        .execute(&mut *tx)
        .await
        .map_err(QueueError::from)?;
        for (name, sha) in &deploy.functions {
            sqlx::query("INSERT INTO deploy_functions (deploy, name, sha256) VALUES ($1, $2, $3)")
                .bind(deploy.id.clone())
                .bind(name.clone())
                .bind(sha.clone())
                .execute(&mut *tx)
                .await
                .map_err(QueueError::from)?;
        }
        let published = if publish {
            self.publish_in(&mut tx, &deploy.id).await?
        } else {
            None
        };
        tx.commit().await.map_err(QueueError::from)?;
        if published.is_some() {
            self.published_changed.notify_waiters();
        }
        Ok(published)
    }

    /// Publishes deploy `id` (a rollback when it is an older one): one committed change every
    /// node follows. `None` when there is no such deploy.
    pub async fn publish(&self, id: &str) -> Result<Option<Published>> {
        let mut tx = self.pool.begin().await?;
        let published = self.publish_in(&mut tx, id).await?;
        tx.commit().await?;
        if published.is_some() {
            self.published_changed.notify_waiters();
        }
        Ok(published)
    }

    async fn publish_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &str,
    ) -> Result<Option<Published>> {
        let sql = self.sql(
            "INSERT INTO deploy_published (id, deploy, generation, published_at) \
             SELECT 1, id, 1, $now FROM deploys WHERE id = $1 \
             ON CONFLICT (id) DO UPDATE SET deploy = excluded.deploy, \
             generation = deploy_published.generation + 1, published_at = excluded.published_at \
             RETURNING deploy, generation, published_at",
        );
        let query = sqlx::query(&sql).bind(id.to_string());
        let row = self.now(query, now_ms()).fetch_optional(&mut **tx).await?;
        let Some(row) = row else { return Ok(None) };
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(DEPLOY_CHANNEL)
                .bind(id.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(Some(published_from(&row)?))
    }

    /// The published deploy, if any.
    pub async fn published(&self) -> Result<Option<Published>> {
        let row = sqlx::query(
            "SELECT deploy, generation, published_at FROM deploy_published WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(published_from).transpose()
    }

    /// Resolves at the next publish seen by this node (its own, or another node's `NOTIFY`).
    /// Call `enable` on the pinned future before reading [`Queue::published`].
    pub fn publish_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.published_changed.notified()
    }

    /// Deploys, newest first (at most `limit`).
    pub async fn deploys(&self, limit: u32) -> Result<Vec<DeployRecord>> {
        let rows = sqlx::query(
            "SELECT id, hash, created_at, author, message, size, manifest FROM deploys \
             ORDER BY created_at DESC, id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.with_functions(deploy_from(row)?).await?);
        }
        Ok(out)
    }

    /// Deploy `id`, if stored.
    pub async fn deploy(&self, id: &str) -> Result<Option<DeployRecord>> {
        let row = sqlx::query(
            "SELECT id, hash, created_at, author, message, size, manifest FROM deploys WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(self.with_functions(deploy_from(&row)?).await?)),
            None => Ok(None),
        }
    }

    async fn with_functions(&self, mut deploy: DeployRecord) -> Result<DeployRecord> {
        let rows = sqlx::query(
            "SELECT name, sha256 FROM deploy_functions WHERE deploy = $1 ORDER BY name",
        )
        .bind(deploy.id.clone())
        .fetch_all(&self.pool)
        .await?;
        deploy.functions = rows
            .iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("sha256")?)))
            .collect::<std::result::Result<_, sqlx::Error>>()?;
        Ok(deploy)
    }

    /// The sha256 of every component a stored deploy names.
    pub async fn deployed_blobs(&self) -> Result<HashSet<String>> {
        let rows = sqlx::query("SELECT DISTINCT sha256 FROM deploy_functions")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Deletes the deploys past the newest `keep` that are neither published nor named by an
    /// unfinished invocation, then the components no deploy names (uploaded more than an
    /// hour ago: one uploaded for a deploy being created is kept). How many deploys went.
    pub async fn purge_deploys(&self, keep: u32) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let doomed = "SELECT id FROM deploys WHERE id NOT IN \
             (SELECT id FROM deploys ORDER BY created_at DESC, id LIMIT $1) \
             AND id NOT IN (SELECT deploy FROM deploy_published) \
             AND id NOT IN (SELECT deploy FROM invocations WHERE deploy IS NOT NULL \
                            AND state IN ('queued', 'running', 'retrying', 'sleeping', 'waiting'))";
        sqlx::query(&format!(
            "DELETE FROM deploy_functions WHERE deploy IN ({doomed})"
        ))
        .bind(i64::from(keep))
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query(&format!("DELETE FROM deploys WHERE id IN ({doomed})"))
            .bind(i64::from(keep))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let unused = self.sql(
            "SELECT sha256 FROM deploy_blobs WHERE created_at < $now - 3600000 \
             AND sha256 NOT IN (SELECT sha256 FROM deploy_functions)",
        );
        for table in ["deploy_blob_chunks", "deploy_blobs"] {
            let sql = format!("DELETE FROM {table} WHERE sha256 IN ({unused})");
            let query = sqlx::query(&sql);
            self.now(query, now_ms()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }
}

/// Which of `shas` are stored, in one statement.
async fn stored_among<'c, E>(executor: E, shas: &[String]) -> Result<HashSet<String>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    if shas.is_empty() {
        return Ok(HashSet::new());
    }
    let marks: Vec<String> = (1..=shas.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT sha256 FROM deploy_blobs WHERE sha256 IN ({})",
        marks.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for sha in shas {
        query = query.bind(sha.clone());
    }
    let rows = query.fetch_all(executor).await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>(0)?))
        .collect()
}

fn published_from(row: &sqlx::any::AnyRow) -> Result<Published> {
    Ok(Published {
        deploy: row.try_get("deploy")?,
        generation: row.try_get("generation")?,
        published_at: row.try_get("published_at")?,
    })
}

fn deploy_from(row: &sqlx::any::AnyRow) -> Result<DeployRecord> {
    Ok(DeployRecord {
        id: row.try_get("id")?,
        hash: row.try_get("hash")?,
        created_at: row.try_get("created_at")?,
        author: row.try_get("author")?,
        message: row.try_get("message")?,
        size: u64::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0),
        manifest: row.try_get("manifest")?,
        functions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Dedup, NewInvocation};

    async fn queue() -> (Queue, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("queue.db").display());
        (Queue::open(&url).await.unwrap(), dir)
    }

    fn record(id: &str, functions: &[(&str, &str)]) -> DeployRecord {
        DeployRecord {
            id: id.into(),
            hash: format!("hash-{id}"),
            created_at: now_ms(),
            author: "me@here".into(),
            message: format!("deploy {id}"),
            size: 3,
            manifest: "{}".into(),
            functions: functions
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
        }
    }

    /// A component larger than one chunk comes back byte for byte, from chunks.
    #[tokio::test]
    async fn a_component_is_stored_in_chunks_and_read_back_whole() {
        let (q, dir) = queue().await;
        let bytes: Vec<u8> = (0..CHUNK * 2 + 123).map(|i| (i % 251) as u8).collect();
        let file = dir.path().join("c.wasm");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(q.missing_blobs(&["abc".into()]).await.unwrap(), ["abc"]);
        q.store_blob("abc", &file).await.unwrap();
        q.store_blob("abc", &file).await.unwrap();
        assert!(q.missing_blobs(&["abc".into()]).await.unwrap().is_empty());
        let back = dir.path().join("back.wasm");
        assert!(q.fetch_blob("abc", &back).await.unwrap());
        assert_eq!(std::fs::read(&back).unwrap(), bytes);
        assert!(!q.fetch_blob("nope", &dir.path().join("x")).await.unwrap());
    }

    /// A deploy naming a component never uploaded stores nothing; publishing is one row that an
    /// older id rolls back; the published deploy survives purging.
    #[tokio::test]
    async fn deploys_are_stored_whole_published_one_at_a_time_and_purged_when_unused() {
        let (q, dir) = queue().await;
        let file = dir.path().join("c.wasm");
        std::fs::write(&file, b"abc").unwrap();
        q.store_blob("s1", &file).await.unwrap();
        let missing = q.create_deploy(&record("bad", &[("f", "zz")]), true).await;
        assert!(matches!(missing, Err(CreateError::MissingBlob(s)) if s == "zz"));
        assert!(q.deploy("bad").await.unwrap().is_none(), "nothing stored");
        assert!(q.published().await.unwrap().is_none());

        let p1 = q
            .create_deploy(&record("d1", &[("f", "s1")]), true)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(p1.map(|p| (p.deploy, p.generation)), Some(("d1".into(), 1)));
        q.create_deploy(&record("d2", &[("f", "s1")]), false)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(
            q.published().await.unwrap().unwrap().deploy,
            "d1",
            "not published"
        );
        let p2 = q.publish("d2").await.unwrap().unwrap();
        assert_eq!((p2.deploy.as_str(), p2.generation), ("d2", 2));
        let back = q.publish("d1").await.unwrap().unwrap();
        assert_eq!(
            (back.deploy.as_str(), back.generation),
            ("d1", 3),
            "a rollback"
        );
        assert!(q.publish("none").await.unwrap().is_none());
        let listed: Vec<String> = q
            .deploys(10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            q.deploy("d1").await.unwrap().unwrap().functions,
            [("f".to_string(), "s1".to_string())]
        );

        // Keep 1: d2 is the newest, d1 is published: both stay. Publish d2: d1 goes.
        q.create_deploy(&record("d3", &[("f", "s1")]), false)
            .await
            .unwrap();
        assert_eq!(
            q.purge_deploys(1).await.unwrap(),
            1,
            "d2: neither newest nor published"
        );
        assert!(q.deploy("d1").await.unwrap().is_some());
        assert!(q.deploy("d3").await.unwrap().is_some());
    }

    /// An invocation accepted under a deploy keeps it on every claim; that deploy is not
    /// purged while the invocation is unfinished.
    #[tokio::test]
    async fn an_invocation_keeps_its_deploy_and_its_deploy_is_kept_for_it() {
        let (q, dir) = queue().await;
        let file = dir.path().join("c.wasm");
        std::fs::write(&file, b"abc").unwrap();
        q.store_blob("s1", &file).await.unwrap();
        for id in ["old", "mid", "new"] {
            q.create_deploy(&record(id, &[("f", "s1")]), true)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        q.enqueue(NewInvocation {
            id: "i1".into(),
            function: "f".into(),
            dedup: Some(Dedup::Key("k".into())),
            method: "POST".into(),
            uri: "/".into(),
            headers: vec![],
            body: vec![],
            max_attempts: 2,
            deploy: Some("old".into()),
            priority: 0,
        })
        .await
        .unwrap();
        assert_eq!(
            q.status("i1").await.unwrap().unwrap().deploy.as_deref(),
            Some("old")
        );
        assert_eq!(
            q.purge_deploys(1).await.unwrap(),
            1,
            "mid goes; old is still needed"
        );
        assert!(q.deploy("old").await.unwrap().is_some());
        let claim = q
            .claim("w", 1, Duration::from_secs(30), &[])
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(claim.deploy.as_deref(), Some("old"));
    }

    use std::time::Duration;
}
