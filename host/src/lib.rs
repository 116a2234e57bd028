//! fnhost: serverless functions compiled to WebAssembly components (WASI HTTP), served per
//! request with enforced budgets — the Netlify Functions model on your own machine.
//!
//! # Layout
//!
//! Each module uses only modules below it in this list (no import points up); only `engine`
//! names wasmtime types, only `queue` names sqlx and only `telemetry` names opentelemetry.
//!
//! - [`cli`]: the `fnhost` command line: raw arguments + fnhost.toml → validated options;
//!   `status`/`invocations` as a small client.
//! - [`builder`]: `fnhost build`: Rust crates and `function.toml` projects → `NAME.wasm`.
//! - [`site`]: the composition root: load, open the queue, bind, start HTTP and workers, drain.
//! - [`watch`]: `--watch`: file changes → rebuild what changed → reload, swapped in whole.
//! - [`follow`]: `serve --deployed`: every publish → load that deploy → swapped in whole.
//! - [`http`]: the acceptor and lanes, the per-request chain, fnhost's own API, CORS, rules,
//!   proxy, and errors turned into responses in one place.
//! - [`background`]: the worker (claim → run → classify → finish), retry policy, destinations.
//! - [`deploys`]: stored versions of the site: validate, store, publish, load any of them.
//! - [`invocation`]: one invocation as both paths use it: the guest's request, judging the
//!   outcome.
//! - [`functions`]: discovers and loads functions, merges their settings, routes to them.
//! - [`queue`]: the durable queue (SQLite or PostgreSQL): states, group commit, leases, reads.
//! - [`engine`]: wasmtime: compile, cache, pre-instantiate, invoke with budgets, outbound policy.
//! - [`telemetry`]: traces over OTLP (the `Trace` handle every layer above passes along, W3C
//!   propagation, the bounded span queue) and the host log's format (text or JSON).
//! - [`config`]: fnhost.toml parsing and validation (the accepted range of every number), its
//!   values, the one path-pattern type,
//!   CORS policies and `_redirects` rules as read from the site.
//! - [`body`], [`ids`], [`metrics`], [`logs`], [`tls`], [`workflow`]: leaves every layer
//!   shares: the HTTP body, ids, header names, the Prometheus metrics (named and recorded in
//!   one place), the guest output kept for people (live tail, per-attempt capture), the
//!   certificates TLS clients trust, and durable steps' suspensions, bounds and store trait.

pub mod background;
pub mod body;
pub mod builder;
pub mod cli;
pub mod config;
pub mod deploys;
pub mod engine;
pub mod follow;
pub mod functions;
pub mod http;
pub mod ids;
pub mod invocation;
pub mod logs;
pub mod metrics;
pub mod queue;
pub mod site;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod workflow;
