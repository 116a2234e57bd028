//! The durable queue on this disk (run: `cargo bench -p fnhost --bench queue`).
//!
//! 1. Raw SQLite through sqlx (WAL, synchronous=FULL): one row per transaction, and batches of
//!    64 rows per transaction — what the disk allows, the reference.
//! 2. `Queue::enqueue` (group commit) from 1 and from 64 concurrent tasks: enqueues/s and the
//!    latency each caller waits for its commit (p50/p99).
//!
//! Files go under target/bench (the same disk as the project). Counts are bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fnhost::queue::{NewInvocation, Queue};
use sqlx::Connection;

fn dir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/bench/queue");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

async fn raw(path: &std::path::Path, rows: usize, per_tx: usize) -> f64 {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for p in [
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "CREATE TABLE t (id TEXT PRIMARY KEY, body BLOB)",
    ] {
        sqlx::query(p).execute(&mut c).await.unwrap();
    }
    let body = vec![7u8; 256];
    let t = Instant::now();
    for batch in 0..rows / per_tx {
        let mut tx = c.begin().await.unwrap();
        for i in 0..per_tx {
            sqlx::query("INSERT INTO t VALUES ($1, $2)")
                .bind(format!("{batch}-{i}"))
                .bind(body.clone())
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    rows as f64 / t.elapsed().as_secs_f64()
}

async fn enqueue(queue: Arc<Queue>, clients: usize, total: usize) -> (f64, f64, f64) {
    let t = Instant::now();
    let per = total / clients;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let q = queue.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let inv = NewInvocation {
                        id: format!("{c}-{i}-{}", fnhost::ids::new_id()),
                        function: "bench-background".into(),
                        dedup: None,
                        method: "POST".into(),
                        uri: "/.netlify/functions/bench-background".into(),
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: vec![b'x'; 256],
                        max_attempts: 3,
                        deploy: None,
                        priority: 0,
                    };
                    let s = Instant::now();
                    q.enqueue(inv).await.unwrap();
                    lat.push(s.elapsed().as_secs_f64() * 1e3);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let rate = (per * clients) as f64 / t.elapsed().as_secs_f64();
    (rate, pct(lat.clone(), 0.5), pct(lat, 0.99))
}

#[tokio::main]
async fn main() {
    let d = dir();
    println!("## raw SQLite inserts, WAL + synchronous=FULL (rows/s)");
    let one = raw(&d.join("raw1.db"), 500, 1).await;
    let batched = raw(&d.join("raw64.db"), 12_800, 64).await;
    println!("1 row per transaction:   {one:>9.0}");
    println!("64 rows per transaction: {batched:>9.0}");

    println!("\n## Queue::enqueue with group commit (256-byte bodies)");
    println!(
        "{:<10} {:>12} {:>10} {:>10}",
        "clients", "enqueues/s", "p50 ms", "p99 ms"
    );
    for clients in [1, 64] {
        let queue = Arc::new(
            Queue::open(&format!(
                "sqlite://{}",
                d.join(format!("q{clients}.db")).display()
            ))
            .await
            .unwrap(),
        );
        let total = if clients == 1 { 500 } else { 12_800 };
        let (rate, p50, p99) =
            tokio::time::timeout(Duration::from_secs(120), enqueue(queue, clients, total))
                .await
                .unwrap();
        println!("{clients:<10} {rate:>12.0} {p50:>10.2} {p99:>10.2}");
        if clients == 1 {
            println!("           ratio to 1-row transactions: {:.2}", rate / one);
        } else {
            println!(
                "           ratio to 64-row batches:     {:.2}",
                rate / batched
            );
        }
    }
}
