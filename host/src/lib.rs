//! fnhost: serverless functions compiled to WebAssembly components (WASI HTTP), served per
//! request with enforced budgets — the Netlify Functions model on your own machine.
//!
//! # Layout
//!
//! Dependencies point down this list; only `engine` names wasmtime types.
//!
//! - [`cli`]: the `fnhost` command line; validates arguments, starts the runtime.
//! - [`builder`]: `fnhost build`: Rust crates and `function.toml` projects → `NAME.wasm`.
//! - [`server`]: the HTTP/1.1 accept loop, graceful shutdown.
//! - [`worker`]: background attempts: claim, run, classify, retry or finish.
//! - [`destinations`]: outcome records (AWS Lambda's shape) and their delivery.
//! - [`app`]: one request: route, check limits, invoke or enqueue, answer.
//! - [`api`]: fnhost's own endpoints: status resources, health, admin.
//! - [`cors`]: pure CORS policy: preflights, allowed origins, response headers.
//! - [`redirects`]: `_redirects` rules (pure matching) and the HTTP proxy they may call.
//! - [`client`]: the CLI's HTTP client.
//! - [`error`]: errors fnhost answers itself, turned into responses in one place.
//! - [`functions`]: discovers and loads functions, resolves their settings.
//! - [`queue`]: the durable queue (SQLite or PostgreSQL through sqlx).
//! - [`retry`]: pure retry and delivery-backoff policy.
//! - [`router`]: pure path/method routing.
//! - [`egress`]: pure outbound-HTTP policy.
//! - [`engine`]: wasmtime: compile, cache, pre-instantiate, invoke with budgets.
//! - [`config`]: `fnhost.toml` parsing and validation.

pub mod api;
pub mod app;
pub mod builder;
pub mod cli;
pub mod client;
pub mod config;
pub mod cors;
pub mod destinations;
pub mod egress;
pub mod engine;
pub mod error;
pub mod functions;
pub mod queue;
pub mod redirects;
pub mod retry;
pub mod router;
pub mod server;
pub mod worker;
