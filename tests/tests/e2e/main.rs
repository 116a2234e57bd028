//! End-to-end tests: each starts the real `fnhost` binary on `127.0.0.1:0` with a config of
//! short budgets and talks to it over loopback HTTP. Guests are built from source once per run.
//! Tests needing a tool from outside Rust are `#[ignore]`d with the tool's name and fail when
//! run without it (see `support::missing_tool`); waits for state go through
//! `support::wait_until`.
//!
//! - `background`: durable 202, retries, destinations, idempotency, kill -9, admin.
//! - `sync`: synchronous functions — answers, routes, isolation, budgets, limits.
//! - `sandbox`: environment, outbound allow-list, guest logs.
//! - `config`: bad fnhost.toml files.
//! - `hardening`: slow clients, a second host on one data dir, SIGTERM in a burst, hostile paths.
//! - `cors`: CORS policies, `_redirects` rewrites/redirects/proxies, and a headless Chromium.
//! - `build`: `fnhost build`, `fnhost dev` and `cargo component build`.
//! - `devloop`: `fnhost new` projects built and served (Rust, JS, Python); `fnhost invoke`.
//! - `languages`: JavaScript and Python functions built from the examples.
//! - `dashboard`: the page at `/.fnhost/ui/` in a headless Chromium (over `cdp`), its access
//!   rules, and its view logic under `node --test`.
//! - `deploys`: `fnhost deploy`/`publish`, `serve --deployed` on one node and on several
//!   sharing PostgreSQL, rollback, and retries on the deploy an invocation was accepted under.
//! - `metrics`: the Prometheus exposition at `/.fnhost/metrics`, checked by promtool.
//! - `parity`: Netlify parity — function subpaths.
//! - `watch`: `dev --watch` and `serve --watch`: rebuild, swap, keep the old version on errors.
//! - `postgres`: the PostgreSQL queue with several nodes; the background suite on PostgreSQL.
//! - `service`: WASI 0.3 (`wasi:http/service`) functions beside 0.2 ones, every guarantee.
//! - `traces`: OpenTelemetry traces to a real OTLP receiver (`otlp`, HTTP/protobuf and gRPC)
//!   and JSON logs.
//! - `workflows`: durable steps, sleeps and events (`fnhost:function/steps`), across kill -9.
//! - `security`: one regression test per item of the security issue (schedule keys, status
//!   tokens, own paths, setting ranges, queue files, a full disk, `Host` and `Bearer`).

mod background;
mod build;
mod cdp;
mod config;
mod cors;
mod dashboard;
mod deploys;
mod devloop;
mod edge;
mod expiry;
mod hardening;
mod languages;
mod metrics;
mod otlp;
mod parity;
mod postgres;
mod sandbox;
mod schedules;
mod security;
mod service;
mod sharing;
mod support;
mod sync;
mod traces;
mod watch;
mod workflows;
