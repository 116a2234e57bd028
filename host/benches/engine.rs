//! Per-request engine costs, printed as figures (run: `cargo bench -p fnhost --bench engine`).
//!
//! 1. Instantiate + call + drain for `examples/hello`: pooling allocator vs on-demand, same run.
//! 2. A CPU-bound guest (`tests/guests/cpu`: FNV-1a over 1 MiB, `n` times) with no enforcement,
//!    epoch interruption only, and fuel on: what each mechanism costs, as ratios.
//! 3. The time from request to stop for a guest spinning in wasm, with a 200 ms budget.
//!
//! Guests are built with `fnhost build` into target/bench. Loops are bounded in count.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

use fnhost::engine::{Component, Engine, EngineOptions, InvokeContext, Outcome};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn build(dir: &str, out: &Path) {
    // A separate target dir: `cargo bench` may hold the lock on target/.
    fnhost::builder::build_into(
        &root().join(dir),
        out,
        Some(&root().join("target").join("guests")),
    )
    .unwrap();
}

fn ctx(timeout: Duration, fuel: Option<u64>) -> InvokeContext {
    InvokeContext {
        id: "bench".into(),
        function: "bench".into(),
        timeout,
        memory: 1 << 30,
        fuel,
        env: Arc::from(Vec::new()),
        outbound: Arc::from(Vec::new()),
    }
}

async fn call(engine: &Engine, c: &Component, uri: &str, ctx: &InvokeContext) -> (Outcome, Bytes) {
    let req = http::Request::get(uri)
        .header("host", "bench")
        .body(Bytes::new())
        .unwrap();
    let running = engine.invoke(c, req, ctx, ());
    let body = match running.response.await {
        Ok(Ok(resp)) => resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
        _ => Bytes::new(),
    };
    (running.outcome.await.unwrap(), body)
}

fn stats(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    (
        pct(0.5),
        pct(0.99),
        samples.iter().sum::<f64>() / samples.len() as f64,
    )
}

fn engine(pooling: bool, epoch: bool, fuel: bool) -> Engine {
    Engine::new(&EngineOptions {
        pooling,
        epoch,
        ..EngineOptions::new(16, 1 << 30, fuel, None)
    })
    .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let out = root().join("target").join("bench").join("components");
    build("examples", &out);
    build("tests/guests", &out);
    let hello = out.join("hello.wasm");
    let cpu = out.join("guest-cpu.wasm");
    let spin = out.join("guest-spin.wasm");

    println!("## hello: instantiate + call + drain, sequential (µs)");
    println!(
        "{:<12} {:>8} {:>8} {:>8}",
        "allocator", "p50", "p99", "mean"
    );
    let mut medians = Vec::new();
    for round in 0..3 {
        for pooling in [true, false] {
            let e = engine(pooling, true, false);
            let c = e.load(&hello).await.unwrap();
            let cx = ctx(Duration::from_secs(10), None);
            for _ in 0..200 {
                call(&e, &c, "/", &cx).await;
            }
            let mut samples = Vec::with_capacity(5000);
            for _ in 0..5000 {
                let t = Instant::now();
                let (outcome, body) = call(&e, &c, "/", &cx).await;
                samples.push(t.elapsed().as_secs_f64() * 1e6);
                assert!(matches!(outcome, Outcome::Completed { .. }) && body.starts_with(b"Hello"));
            }
            let (p50, p99, mean) = stats(samples);
            let name = if pooling { "pooling" } else { "on-demand" };
            println!("{name:<12} {p50:>8.1} {p99:>8.1} {mean:>8.1}   (round {round})");
            medians.push((pooling, p50));
        }
    }
    let med = |p: bool| stats(medians.iter().filter(|m| m.0 == p).map(|m| m.1).collect()).0;
    println!(
        "ratio on-demand / pooling (p50): {:.2}",
        med(false) / med(true)
    );

    println!("\n## cpu guest (FNV-1a over 1 MiB x 20), per call (ms)");
    println!(
        "{:<22} {:>8} {:>8} {:>10}",
        "enforcement", "p50", "p99", "fuel used"
    );
    let mut by_mode: Vec<(&str, f64)> = Vec::new();
    for round in 0..3 {
        for (name, epoch, fuel) in [
            ("none", false, false),
            ("epoch", true, false),
            ("fuel", false, true),
            ("epoch + fuel", true, true),
        ] {
            let e = engine(true, epoch, fuel);
            let c = e.load(&cpu).await.unwrap();
            let cx = ctx(Duration::from_secs(60), None);
            let mut samples = Vec::new();
            let mut fuel_used = None;
            let mut checksum = Bytes::new();
            for _ in 0..15 {
                let t = Instant::now();
                let (outcome, body) = call(&e, &c, "/?n=20", &cx).await;
                samples.push(t.elapsed().as_secs_f64() * 1e3);
                if let Outcome::Completed { fuel_used: f } = outcome {
                    fuel_used = f;
                }
                checksum = body;
            }
            assert_eq!(checksum.len(), 17, "cpu guest answered {checksum:?}");
            let (p50, p99, _) = stats(samples);
            let fuel = fuel_used.map_or("-".to_string(), |f| f.to_string());
            println!("{name:<22} {p50:>8.2} {p99:>8.2} {fuel:>10}   (round {round})");
            by_mode.push((name, p50));
        }
    }
    let med = |n: &str| stats(by_mode.iter().filter(|m| m.0 == n).map(|m| m.1).collect()).0;
    for n in ["epoch", "fuel", "epoch + fuel"] {
        println!(
            "cost of {n:<13} vs none: {:+.1} %",
            (med(n) / med("none") - 1.0) * 100.0
        );
    }

    println!("\n## spinning guest, budget 200 ms: request to stop (ms)");
    let e = engine(true, true, false);
    let c = e.load(&spin).await.unwrap();
    let mut samples = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (outcome, _) = call(&e, &c, "/", &ctx(Duration::from_millis(200), None)).await;
        assert_eq!(outcome, Outcome::Timeout);
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p99, _) = stats(samples);
    println!(
        "stop after {p50:.1} ms (p50), {p99:.1} ms (max of 10); overshoot {:.1} ms",
        p50 - 200.0
    );
}
