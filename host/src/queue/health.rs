//! Whether the queue can take writes: each failure classed (disk full, database unreachable,
//! no connection, …) as health and metrics name it, when writes began failing, and a probe
//! write that notices recovery when no other write comes; and the check that a SQLite queue
//! file is a database at all, before a pool would retry it for its whole timeout.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Queue, QueueError, Result, now_ms};

/// Bytes the health probe writes: a request body of a good size (a quarter of the 256 KB
/// background limit), so the probe succeeds only when a real enqueue would.
pub const PROBE_BYTES: usize = 64 * 1024;

/// Why the queue could not take a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueFault {
    /// The disk (or PostgreSQL's) is full.
    DiskFull,
    /// The database cannot be reached: refused, reset, shut down.
    Unreachable,
    /// No connection came within [`super::ACQUIRE_TIMEOUT`]: the database is down, or every
    /// connection is taken.
    NoConnection,
    /// The database takes no writes (read-only file or server).
    ReadOnly,
    /// Another writer held the database past the wait.
    Busy,
    /// The file or its pages are not what SQLite wrote.
    Corrupt,
    /// An I/O error inside the database.
    Io,
    /// Anything else the database refused.
    Other,
}

impl QueueFault {
    /// The class's name in health and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueFault::DiskFull => "disk_full",
            QueueFault::Unreachable => "unreachable",
            QueueFault::NoConnection => "no_connection",
            QueueFault::ReadOnly => "read_only",
            QueueFault::Busy => "busy",
            QueueFault::Corrupt => "corrupt",
            QueueFault::Io => "io",
            QueueFault::Other => "other",
        }
    }
}

impl std::fmt::Display for QueueFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a database error. SQLite reports a numeric (extended) result code, PostgreSQL
/// a five-character SQLSTATE.
pub(super) fn fault_of(e: &sqlx::Error) -> QueueFault {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => QueueFault::NoConnection,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
            QueueFault::Unreachable
        }
        sqlx::Error::WorkerCrashed => QueueFault::Unreachable,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if code.len() == 5 => sqlstate(&code),
            Some(code) => code
                .parse::<i32>()
                .map_or(QueueFault::Other, |c| sqlite_code(c & 0xff)),
            None => QueueFault::Other,
        },
        _ => QueueFault::Other,
    }
}

/// A SQLite primary result code's class.
fn sqlite_code(primary: i32) -> QueueFault {
    match primary {
        13 => QueueFault::DiskFull,     // SQLITE_FULL
        10 => QueueFault::Io,           // SQLITE_IOERR
        8 => QueueFault::ReadOnly,      // SQLITE_READONLY
        5 | 6 => QueueFault::Busy,      // SQLITE_BUSY, SQLITE_LOCKED
        11 | 26 => QueueFault::Corrupt, // SQLITE_CORRUPT, SQLITE_NOTADB
        14 => QueueFault::Unreachable,  // SQLITE_CANTOPEN
        _ => QueueFault::Other,
    }
}

/// A PostgreSQL SQLSTATE's class.
fn sqlstate(code: &str) -> QueueFault {
    match code {
        "53100" => QueueFault::DiskFull,
        "25006" => QueueFault::ReadOnly,
        "40001" | "40P01" | "55P03" => QueueFault::Busy,
        "XX001" | "XX002" => QueueFault::Corrupt,
        "58030" => QueueFault::Io,
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => {
            QueueFault::Unreachable
        }
        _ => QueueFault::Other,
    }
}

/// The queue's write health as `/.fnhost/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueHealth {
    /// `ok` or `failing`.
    pub state: &'static str,
    /// The last failure's class, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<QueueFault>,
    /// When writes began failing (RFC 3339), while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Writes refused since then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
}

/// Writes failing since `since_ms`, the last one for `fault`.
#[derive(Debug, Clone, Copy)]
struct Failing {
    fault: QueueFault,
    since_ms: i64,
    failures: u64,
}

/// Follows the outcome of every write.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    failing: Mutex<Option<Failing>>,
    /// When the last probe write was tried (one a second at most).
    probed: Mutex<Option<Instant>>,
}

impl Tracker {
    /// Notes how a write went: a success ends a failing spell, a database failure starts or
    /// extends one.
    pub fn record<T>(&self, written: &Result<T>) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match written {
            Ok(_) => {
                if let Some(f) = failing.take() {
                    tracing::info!(
                        "queue writes succeed again after {} refused ({})",
                        f.failures,
                        f.fault
                    );
                }
            }
            Err(QueueError::Db { fault, .. }) => {
                let f = failing.get_or_insert(Failing {
                    fault: *fault,
                    since_ms: now_ms(),
                    failures: 0,
                });
                f.fault = *fault;
                f.failures += 1;
            }
            Err(_) => {}
        }
    }

    fn view(&self) -> QueueHealth {
        let failing = *self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match failing {
            None => QueueHealth {
                state: "ok",
                error: None,
                since: None,
                failures: None,
            },
            Some(f) => QueueHealth {
                state: "failing",
                error: Some(f.fault),
                since: Some(crate::ids::rfc3339_ms(f.since_ms)),
                failures: Some(f.failures),
            },
        }
    }

    /// Whether a probe is due: failing, and none tried in the last second.
    fn probe_due(&self) -> bool {
        if self.view().state == "ok" {
            return false;
        }
        let mut probed = self.probed.lock().unwrap_or_else(|e| e.into_inner());
        let due = probed.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if due {
            *probed = Some(Instant::now());
        }
        due
    }
}

impl Queue {
    /// Whether writes succeed now. While they fail, asking tries a write the size of a
    /// typical stored request ([`PROBE_BYTES`] into one row of `fnhost_probe`, at most once a
    /// second), so health turns `ok` again once the disk has room or the database is back,
    /// whether or not a client has written since — and not while only tiny writes still fit.
    pub async fn health(&self) -> QueueHealth {
        if self.health.probe_due() {
            let sql = self.sql(
                "INSERT INTO fnhost_probe (id, at, payload) VALUES (1, $now, $1) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at, payload = excluded.payload",
            );
            let query = sqlx::query(&sql).bind(vec![0x5au8; PROBE_BYTES]);
            let probe = self
                .now(query, now_ms())
                .execute(&self.pool)
                .await
                .map_err(QueueError::from);
            self.health.record(&probe);
        }
        self.health.view()
    }

    /// `result`, noted as the outcome of a write (admin actions).
    pub(super) fn noted<T>(&self, result: Result<T>) -> Result<T> {
        self.health.record(&result);
        result
    }
}

/// Opens one connection to the SQLite file at `url` and reads its schema: a file that is no
/// database (text, random bytes) or whose first pages are corrupt fails here, at once, with
/// the path and SQLite's reason.
pub(super) async fn check_sqlite_file(url: &str) -> Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|e| opening(url, e.into()))?;
    let checked = async {
        sqlx::query("PRAGMA journal_mode=WAL")
            .execute(&mut conn)
            .await?;
        sqlx::query("SELECT COUNT(*) FROM sqlite_master")
            .fetch_one(&mut conn)
            .await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let _ = conn.close().await;
    checked.map_err(|e| opening(url, e.into()))
}

/// `e`, met while opening the queue at `url`, as the error naming the file (or the URL
/// without its password).
pub(super) fn opening(url: &str, e: QueueError) -> QueueError {
    let reason = match e {
        QueueError::Db { detail, .. } => detail,
        other => other.to_string(),
    };
    QueueError::Open {
        target: target(url),
        reason,
    }
}

/// The file of a `sqlite:` URL; a `postgres:` URL with its password hidden.
fn target(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        return path.split('?').next().unwrap_or(path).to_string();
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or(user);
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_the_file_and_hide_passwords() {
        assert_eq!(
            target("sqlite:///var/q/queue.db?mode=rwc"),
            "/var/q/queue.db"
        );
        assert_eq!(target("sqlite://rel/queue.db"), "rel/queue.db");
        assert_eq!(
            target("postgres://fn:s3cret@db:5432/fnhost"),
            "postgres://fn:***@db:5432/fnhost"
        );
        assert_eq!(target("postgres://db/fnhost"), "postgres://db/fnhost");
    }

    #[test]
    fn database_codes_are_classed() {
        assert_eq!(sqlite_code(13), QueueFault::DiskFull);
        assert_eq!(sqlite_code(778 & 0xff), QueueFault::Io);
        assert_eq!(sqlite_code(26), QueueFault::Corrupt);
        assert_eq!(sqlstate("53100"), QueueFault::DiskFull);
        assert_eq!(sqlstate("57P01"), QueueFault::Unreachable);
        assert_eq!(sqlstate("08006"), QueueFault::Unreachable);
        assert_eq!(sqlstate("23505"), QueueFault::Other);
    }

    #[test]
    fn a_failing_spell_starts_counts_and_ends() {
        let t = Tracker::default();
        assert_eq!(t.view().state, "ok");
        let full = || -> Result<()> {
            Err(QueueError::Db {
                fault: QueueFault::DiskFull,
                detail: "database or disk is full".into(),
            })
        };
        t.record(&full());
        t.record(&full());
        let v = t.view();
        assert_eq!(
            (v.state, v.error, v.failures),
            ("failing", Some(QueueFault::DiskFull), Some(2))
        );
        assert!(t.probe_due());
        assert!(!t.probe_due(), "one probe a second");
        t.record(&Ok(()));
        assert_eq!(t.view().state, "ok");
    }
}
