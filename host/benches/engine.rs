//! Per-request engine costs, printed as figures (run: `cargo bench -p fnhost --bench engine`).
//!
//! 1. Instantiate + call + drain for `examples/hello`: pooling allocator vs on-demand, same run.
//! 2. CPU-bound guests — Rust (`tests/guests/cpu`: FNV-1a over 1 MiB, `n` times), JavaScript
//!    and Python (`examples/js-hello`, `examples/python-hello` with `?loop=N`: FNV-1a steps) —
//!    with epoch interruption only (fnhost's default) and with fuel metering too: what metering
//!    costs, as ratios per language (the JS and Python rows need their examples built: npm and
//!    componentize-py on PATH, as `.ci/run` installs them; a language whose component is
//!    missing is named and left out).
//! 3. The time from request to stop for a guest spinning in wasm, with a 200 ms budget.
//!
//! Guests are built with `fnhost build` into target/bench. Loops are bounded in count.
//! `cargo bench -p fnhost --bench engine -- hello` runs part 1 only (for a profiler).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

use fnhost::engine::{CallKind, Component, Engine, EngineOptions, InvokeContext, Outcome};

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
        kind: CallKind::Sync,
        timeout,
        memory: 1 << 30,
        fuel,
        env: Arc::from(Vec::new()),
        outbound: Arc::from(Vec::new()),
        max_outbound: 16,
        max_log: 1 << 20,
        capture: None,
        deploy: None,
        warm: None,
        files: None,
        trace: fnhost::telemetry::Trace::none(),
        attempt: None,
        steps: None,
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
    // A compile cache: the JS and Python components take a while to compile.
    let cache = root().join("target").join("bench").join("engine-cache");
    Engine::new(&EngineOptions {
        pooling,
        epoch,
        ..EngineOptions::new(16, 1 << 30, fuel, Some(cache))
    })
    .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let out = root().join("target").join("bench").join("components");
    build("examples", &out);
    build("tests/guests", &out);
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        // wasmtime then captures a backtrace per dropped store: ~30 % on part 1.
        println!(
            "note: RUST_BACKTRACE is set; for the figures fnhost serves with, run with `env -u RUST_BACKTRACE`"
        );
    }
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
    if std::env::args().any(|a| a == "hello") {
        return;
    }

    println!("\n## CPU-bound guests, per call (ms): epoch only (the default) vs epoch + fuel");
    // (language, component, request): each call does roughly 10-100 ms of work.
    let guests = [
        ("Rust", cpu.clone(), "/?n=20"),
        ("JavaScript", out.join("js-hello.wasm"), "/?loop=1000000"),
        ("Python", out.join("python-hello.wasm"), "/?loop=300000"),
    ];
    let modes = [("epoch", false), ("epoch + fuel", true)];
    let mut loaded = Vec::new();
    for (mode, fuel) in modes {
        let e = Arc::new(engine(true, true, fuel));
        for (lang, path, uri) in &guests {
            if !path.exists() {
                if fuel {
                    println!(
                        "{lang}: {} not built (its tool is missing); left out",
                        path.display()
                    );
                }
                continue;
            }
            let c = e.load(path).await.unwrap();
            loaded.push((mode, *lang, e.clone(), c, *uri));
        }
    }
    println!(
        "{:<12} {:<14} {:>8} {:>8} {:>14}",
        "language", "enforcement", "p50", "p99", "fuel used"
    );
    let mut by_mode: Vec<(&str, &str, f64)> = Vec::new();
    for round in 0..3 {
        for (mode, lang, e, c, uri) in &loaded {
            let cx = ctx(Duration::from_secs(60), None);
            let mut samples = Vec::new();
            let mut fuel_used = None;
            let mut answer = Bytes::new();
            for _ in 0..12 {
                let t = Instant::now();
                let (outcome, body) = call(e, c, uri, &cx).await;
                samples.push(t.elapsed().as_secs_f64() * 1e3);
                match outcome {
                    Outcome::Completed { fuel_used: f } => fuel_used = f,
                    other => panic!("{lang} {mode}: {other:?}"),
                }
                answer = body;
            }
            assert!(!answer.is_empty(), "{lang} answered nothing");
            let (p50, p99, _) = stats(samples);
            let fuel = fuel_used.map_or("-".to_string(), |f| f.to_string());
            println!("{lang:<12} {mode:<14} {p50:>8.2} {p99:>8.2} {fuel:>14}   (round {round})");
            by_mode.push((*lang, *mode, p50));
        }
    }
    for (lang, _, _) in &guests {
        let med = |m: &str| {
            let xs: Vec<f64> = by_mode
                .iter()
                .filter(|x| x.0 == *lang && x.1 == m)
                .map(|x| x.2)
                .collect();
            (!xs.is_empty()).then(|| stats(xs).0)
        };
        if let (Some(epoch), Some(fuel)) = (med("epoch"), med("epoch + fuel")) {
            println!(
                "cost of fuel metering, {lang:<10}: {:+.1} % (median of 3 rounds' p50)",
                (fuel / epoch - 1.0) * 100.0
            );
        }
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
