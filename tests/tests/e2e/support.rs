//! Test support: guests built once per run with `fnhost build`, a real `fnhost` child process
//! per test on `127.0.0.1:0`, and a small HTTP client over loopback.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// The binary under test: `$FNHOST_E2E_BIN` when set (a copy, when another checkout shares
/// this target directory and may rebuild the original meanwhile), else the one cargo built.
pub fn fnhost_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FNHOST_E2E_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fnhost-e2e").to_string())
    })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Where built components and the shared compile cache live for this test run.
fn work_dir() -> PathBuf {
    repo_root().join("target").join("e2e")
}

/// Builds `examples/` and `tests/guests/` with `fnhost build` once per test run; returns the
/// directory holding every `NAME.wasm`. Every project is attempted: one whose language tool is
/// missing is absent, and a test asking for it fails (see [`component`]).
pub fn components() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = work_dir().join("components");
        // Start empty: a component left by an earlier run must not stand in for one that did
        // not build in this one.
        let _ = std::fs::remove_dir_all(&out);
        for dir in ["examples", "tests/guests"] {
            let status = Command::new(fnhost_bin())
                .args([
                    "build",
                    repo_root().join(dir).to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ])
                .env("PATH", tool_path())
                // A target dir of its own: the outer `cargo test` may hold the lock on target/.
                .env(
                    "CARGO_TARGET_DIR",
                    repo_root().join("target").join("guests"),
                )
                .status()
                .expect("run fnhost build");
            if !status.success() {
                eprintln!("fnhost build {dir}: some functions did not build (see above)");
            }
        }
        out
    })
}

/// `$PATH` with the tools `.ci/run` installs for non-Rust guests in front
/// (`target/tools/python/bin`: the virtualenv holding componentize-py).
pub fn tool_path() -> std::ffi::OsString {
    let venv = repo_root().join("target/tools/python/bin");
    let mut dirs = vec![venv];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// The compile cache servers share in this run (big guests compile once).
pub fn shared_cache() -> PathBuf {
    work_dir().join("cache")
}

// --- tools from outside Rust -----------------------------------------------------------------
//
// The one rule: a test that needs a tool from outside Rust (PostgreSQL, Chromium, node/npm,
// componentize-py, cargo-component) is marked
// `#[ignore = "needs TOOL (installed by .ci/run); run with --ignored"]`, so a plain
// `cargo test` lists it as ignored with that reason. When it does run (`--ignored`,
// `--include-ignored`, as `.ci/run` does), a missing tool fails it through [`missing_tool`] —
// in CI or not. No test passes by skipping itself.

/// Fails the running test: it needs `tool`, which is missing (`detail` says how that was found
/// out).
#[track_caller]
pub fn missing_tool(tool: &str, detail: &str) -> ! {
    panic!(
        "this test needs {tool}, which is missing: {detail}\n\
         `bash .ci/run` installs every tool the tests need and runs them all (README, Quick start)"
    )
}

/// The path of `tool` on [`tool_path`], or a failed test naming it.
#[track_caller]
pub fn require_tool(tool: &str) -> PathBuf {
    let found = std::env::split_paths(&tool_path())
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file());
    match found {
        Some(path) => path,
        None => missing_tool(tool, &format!("no `{tool}` on PATH")),
    }
}

/// Components whose build needs a tool from outside Rust, and that tool.
const BUILT_BY_TOOL: &[(&str, &str)] = &[
    ("js-hello", "node and npm (jco)"),
    ("python-hello", "componentize-py"),
    ("python-background", "componentize-py"),
    ("python-p3", "componentize-py"),
];

/// Path of one built component; a failed test when it did not build, naming the language tool
/// it needs when that is not Rust.
#[track_caller]
pub fn component(name: &str) -> PathBuf {
    let path = components().join(format!("{name}.wasm"));
    if !path.is_file() {
        if let Some((_, tool)) = BUILT_BY_TOOL.iter().find(|(n, _)| *n == name) {
            missing_tool(
                tool,
                &format!(
                    "{name} did not build: see `fnhost build` above and examples/{name}/README.md"
                ),
            );
        }
        panic!(
            "{} was not built (see `fnhost build` above)",
            path.display()
        );
    }
    path
}

// --- waiting ----------------------------------------------------------------------------------

/// What a [`wait_until`] probe reports: ready with a value, or not yet, with what it saw (for
/// the message at the deadline; empty when there is nothing to say).
pub trait Check {
    /// What [`wait_until`] returns once ready.
    type Value;
    /// `Ok` when ready, else what was seen.
    fn ready(self) -> Result<Self::Value, String>;
}

impl Check for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: std::fmt::Display> Check for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// How often [`wait_until`] probes.
const POLL: Duration = Duration::from_millis(20);

/// Probes observable state every 20 ms (without blocking the test's runtime) until `probe`
/// reports ready, and returns its value; panics naming `what`, with the last thing seen, once
/// `within` has passed. Every wait for state in these tests goes through here.
pub async fn wait_until<C: Check>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> C,
) -> C::Value {
    let deadline = Instant::now() + within;
    loop {
        let seen = match probe().await.ready() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            if seen.is_empty() {
                panic!("timed out after {within:?} waiting for {what}");
            }
            panic!("timed out after {within:?} waiting for {what}; last seen:\n{seen}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A running `fnhost serve`, killed on drop.
pub struct Server {
    child: Child,
    /// Bound address.
    pub addr: SocketAddr,
    /// Lines the server printed on stdout (the function table).
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Lines it logged on stderr.
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Its temp dir (functions/, fnhost.toml, data).
    pub dir: tempfile::TempDir,
}

/// What to start a server with.
pub struct ServerBuilder {
    functions: Vec<(String, PathBuf)>,
    extra_files: Vec<(String, Vec<u8>)>,
    config: String,
    data_dir: Option<PathBuf>,
    queue: Option<String>,
    cache_dir: Option<PathBuf>,
    watch: bool,
    deployed: bool,
    envs: Vec<(String, String)>,
}

thread_local! {
    /// Queue URL servers started on this thread use unless told otherwise (see
    /// [`QueueScope`]); none: the embedded SQLite queue in the data dir.
    static DEFAULT_QUEUE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// While alive, servers started on this thread (by a `#[tokio::test]` body, which runs on the
/// calling thread) use `url` as their queue: runs a scenario written for the embedded queue
/// against another backend.
pub struct QueueScope(Option<String>);

impl QueueScope {
    /// Makes `url` the default queue of this thread until dropped.
    pub fn enter(url: &str) -> QueueScope {
        QueueScope(DEFAULT_QUEUE.with(|q| q.replace(Some(url.to_string()))))
    }
}

impl Drop for QueueScope {
    fn drop(&mut self) {
        DEFAULT_QUEUE.with(|q| *q.borrow_mut() = self.0.take());
    }
}

impl Server {
    /// A server serving the named components (names of built components).
    pub fn with(functions: &[&str]) -> ServerBuilder {
        ServerBuilder {
            functions: functions
                .iter()
                .map(|n| (n.to_string(), component(n)))
                .collect(),
            extra_files: Vec::new(),
            config: String::new(),
            data_dir: None,
            queue: DEFAULT_QUEUE.with(|q| q.borrow().clone()),
            cache_dir: None,
            watch: false,
            deployed: false,
            envs: Vec::new(),
        }
    }

    /// The directory of the served `NAME.wasm` files.
    pub fn functions_dir(&self) -> PathBuf {
        self.dir.path().join("functions")
    }

    /// The site file the server reads.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("fnhost.toml")
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; panics after `within`.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let (child, stderr) = (&mut self.child, &self.stderr);
        wait_until("the server to exit after SIGTERM", within, async || {
            child
                .try_wait()
                .unwrap()
                .ok_or_else(|| stderr.lock().unwrap().join("\n"))
        })
        .await
    }

    /// How many stderr lines contain every needle.
    pub fn count_log(&self, needles: &[&str]) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// All stderr so far, joined.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until stderr has a line containing every needle, or panics after `within`.
    pub async fn wait_for_log(&self, needles: &[&str], within: Duration) -> String {
        wait_until(
            &format!("a log line with {needles:?}"),
            within,
            async || {
                let lines = self.stderr.lock().unwrap();
                lines
                    .iter()
                    .find(|l| needles.iter().all(|n| l.contains(n)))
                    .cloned()
                    .ok_or_else(|| lines.join("\n"))
            },
        )
        .await
    }
}

impl ServerBuilder {
    /// The fnhost.toml text.
    /// Serves with `--watch`.
    pub fn watch(mut self) -> Self {
        self.watch = true;
        self
    }

    /// Serves the queue's published deploy (`--deployed`) instead of a directory.
    pub fn deployed(mut self) -> Self {
        self.deployed = true;
        self
    }

    /// An environment variable of the server process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.to_string(), value.to_string()));
        self
    }

    /// The site file's text.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_string();
        self
    }

    /// Serves `component` under another name.
    pub fn function_as(mut self, name: &str, component_name: &str) -> Self {
        self.functions
            .push((name.to_string(), component(component_name)));
        self
    }

    /// Serves the component file at `path` as `name`.
    pub fn function_file(mut self, name: &str, path: &Path) -> Self {
        self.functions.push((name.to_string(), path.to_owned()));
        self
    }

    /// Caches compiled components in `dir` instead of the run's shared cache.
    pub fn cache_dir(mut self, dir: &Path) -> Self {
        self.cache_dir = Some(dir.to_owned());
        self
    }

    /// Keeps the queue in `dir` (to restart a server on the same data).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Uses the queue at `url` (`--queue`), e.g. a PostgreSQL database shared by several
    /// servers.
    pub fn queue(mut self, url: &str) -> Self {
        self.queue = Some(url.to_string());
        self
    }

    /// Drops a raw file into the functions directory (`NAME` may have directories).
    pub fn file(mut self, name: &str, bytes: &[u8]) -> Self {
        self.extra_files.push((name.to_string(), bytes.to_vec()));
        self
    }

    /// Starts the server and waits for its `listening on` line.
    pub fn start(self) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let functions = dir.path().join("functions");
        std::fs::create_dir_all(&functions).unwrap();
        for (name, path) in &self.functions {
            std::fs::copy(path, functions.join(format!("{name}.wasm"))).unwrap();
        }
        for (name, bytes) in &self.extra_files {
            let path = functions.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let config = dir.path().join("fnhost.toml");
        std::fs::write(&config, &self.config).unwrap();
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut command = Command::new(fnhost_bin());
        command.arg("serve");
        if let Some(url) = &self.queue {
            command.arg("--queue").arg(url);
        }
        if self.watch {
            command.arg("--watch");
        }
        if self.deployed {
            command.arg("--deployed");
        } else {
            command.arg(&functions);
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--cache-dir")
            .arg(self.cache_dir.clone().unwrap_or_else(shared_cache))
            .arg("--data-dir")
            .arg(&data_dir)
            .current_dir(dir.path())
            .env("FNHOST_LOG", "info,fnhost::engine=debug")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fnhost");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = stdout.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        // Big components compile on first start; later starts hit the cache.
        let addr = match rx.recv_timeout(Duration::from_secs(240)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "fnhost did not start:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            addr,
            stdout,
            stderr,
            dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, lower-case names; repeated headers joined with `, `.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// One header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends one request over a fresh connection.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    try_send(method, url, headers, body.into())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Like [`send`], but a connection failure is an error, not a panic.
pub async fn try_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Reply, String> {
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str())
        .header("host", authority.as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut map: HashMap<String, String> = HashMap::new();
    for (k, v) in resp.headers() {
        let v = v.to_str().unwrap_or_default().to_string();
        map.entry(k.as_str().to_string())
            .and_modify(|e| *e = format!("{e}, {v}"))
            .or_insert(v);
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        headers: map,
        body,
    })
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    send("GET", url, &[], Bytes::new()).await
}

/// Body of a loopback test server's responses.
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
/// A loopback test server's request handler.
pub type Handler = Arc<
    dyn Fn(
            http::Request<hyper::body::Incoming>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// Serves `handler` on `127.0.0.1:0` until the test's runtime ends.
pub async fn serve_http(handler: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A loopback server that notes when each request arrives and answers `ok`.
pub struct Arrivals {
    /// Where it listens.
    pub addr: SocketAddr,
    times: Arc<Mutex<Vec<Instant>>>,
}

impl Arrivals {
    /// Starts one on `127.0.0.1:0`.
    pub async fn start() -> Arrivals {
        let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let seen = times.clone();
        let addr = serve_http(Arc::new(move |_req| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock().unwrap().push(Instant::now());
                http::Response::new(BodyExt::boxed(Full::new(Bytes::from_static(b"ok"))))
            })
        }))
        .await;
        Arrivals { addr, times }
    }

    /// Whether no request has arrived yet.
    pub fn none_yet(&self) -> bool {
        self.times.lock().unwrap().is_empty()
    }

    /// When the first request arrived, waiting up to `within` for it.
    pub async fn first(&self, within: Duration) -> Instant {
        wait_until("a request to arrive", within, async || {
            match self.times.lock().unwrap().first() {
                Some(at) => Ok(*at),
                None => Err(String::new()),
            }
        })
        .await
    }
}

/// The admin listing of every invocation, with the token the tests configure (`t0ken`).
pub async fn admin_list(server: &Server) -> serde_json::Value {
    let list = send(
        "GET",
        &server.url("/.fnhost/invocations"),
        &[("authorization", "Bearer t0ken")],
        "",
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text());
    list.json()
}

/// `GET path` with `Authorization: Bearer token`.
pub async fn admin_get(server: &Server, path: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    send("GET", &server.url(path), &[("authorization", &auth)], "").await
}

/// The admin detail of invocation `id` (status, request, attempts, deliveries, logs), with
/// the token the tests configure (`t0ken`).
pub async fn admin_detail(server: &Server, id: &str) -> serde_json::Value {
    let detail = send(
        "GET",
        &server.url(&format!("/.fnhost/invocations/{id}/detail")),
        &[("authorization", "Bearer t0ken")],
        "",
    )
    .await;
    assert_eq!(detail.status, 200, "{}", detail.text());
    detail.json()
}

/// The Chromium binary: `$FNHOST_CHROMIUM`, else `chromium` on `PATH`; a failed test when
/// missing.
pub fn chromium() -> PathBuf {
    match std::env::var_os("FNHOST_CHROMIUM").map(PathBuf::from) {
        Some(path) if path.is_file() => path,
        Some(path) => missing_tool(
            "chromium",
            &format!("FNHOST_CHROMIUM={} is not a file", path.display()),
        ),
        None => require_tool("chromium"),
    }
}

/// Chromium's flags for a headless run in a test: no sandbox (containers), nothing fetched
/// from the network on its own.
pub const HEADLESS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// A TLS acceptor whose certificate (for `localhost`) a CA made here signed, offering the
/// protocol `alpn`; and that CA's PEM.
pub fn tls_for_localhost(alpn: &'static [u8]) -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        ca.pem(),
    )
}
