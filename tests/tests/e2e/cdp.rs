//! A small Chrome DevTools Protocol client for tests that look at a page: starts a headless
//! Chromium with `--remote-debugging-port=0`, reads the websocket address it prints on stderr,
//! opens one page (a flattened target session) and drives it — navigate, evaluate JavaScript,
//! set the viewport, take a PNG screenshot — and keeps the page's uncaught exceptions and
//! console errors.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::HEADLESS;

/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A headless Chromium with one page open, killed (with its whole process group) on drop.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    sink: tokio::sync::Mutex<Sink>,
    pending: Pending,
    next_id: AtomicU64,
    session: String,
    /// Uncaught exceptions and `console.error` calls of the page, as text.
    problems: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Starts `binary` headless with a `width`×`height` window and opens a blank page.
    pub async fn launch(binary: &Path, width: u32, height: u32) -> Browser {
        use std::os::unix::process::CommandExt as _;
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args(HEADLESS)
            .args([
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // The browser, its zygote and renderers share this process group: one kill ends all.
            .process_group(0)
            .spawn()
            .expect("start chromium");
        // Read stderr to its end (a full pipe would stall the browser); the first
        // `DevTools listening on ws://...` line is the address to connect to.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let ws_url =
            match tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
                .await
                .unwrap()
            {
                Ok(url) => url,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "chromium printed no DevTools address:\n{}",
                        stderr.lock().unwrap().join("\n")
                    );
                }
            };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to {ws_url}: {e}"));
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let problems = Arc::new(Mutex::new(Vec::new()));
        let (answers, seen) = (pending.clone(), problems.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(id) = value["id"].as_u64() {
                    if let Some(tx) = answers.lock().unwrap().remove(&id) {
                        let _ = tx.send(match value.get("error") {
                            Some(error) => Err(error.to_string()),
                            None => Ok(value["result"].clone()),
                        });
                    }
                } else if let Some(problem) = problem(&value) {
                    seen.lock().unwrap().push(problem);
                }
            }
        });
        let mut browser = Browser {
            child,
            _profile: profile,
            sink: tokio::sync::Mutex::new(sink),
            pending,
            next_id: AtomicU64::new(1),
            session: String::new(),
            problems,
            stderr,
        };
        let target = browser
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.command("Page.enable", json!({})).await;
        browser.command("Runtime.enable", json!({})).await;
        browser
    }

    /// Sends one command (to the page's session when `session` is set) and waits for its answer.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("send {method}: {e}"));
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(error))) => panic!("{method} failed: {error}"),
            Ok(Err(_)) => panic!(
                "{method}: the browser went away:\n{}",
                self.stderr.lock().unwrap().join("\n")
            ),
            Err(_) => panic!("{method}: no answer within {COMMAND_TIMEOUT:?}"),
        }
    }

    /// A command to the page.
    pub async fn command(&self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params).await
    }

    /// Loads `url` in the page (a full navigation unless only the fragment changes).
    pub async fn navigate(&self, url: &str) {
        let done = self.command("Page.navigate", json!({ "url": url })).await;
        assert!(done.get("errorText").is_none(), "navigate to {url}: {done}");
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON;
    /// `Err` with the exception's text when it throws.
    pub async fn eval(&self, expression: &str) -> Result<Value, String> {
        let out = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(details) = out.get("exceptionDetails") {
            return Err(format!(
                "{expression}: {}",
                details["exception"]["description"]
                    .as_str()
                    .unwrap_or(&details.to_string())
            ));
        }
        Ok(out["result"]["value"].clone())
    }

    /// Like [`Browser::eval`], panicking when the expression throws.
    pub async fn value(&self, expression: &str) -> Value {
        self.eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Emulates a `width`×`height` screen (`mobile`: a phone's viewport and touch).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.command(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let shot = self
            .command("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot")
    }

    /// The page's uncaught exceptions and console errors so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }
}

/// An uncaught exception or a `console.error` call, from a protocol event.
fn problem(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.exceptionThrown" => Some(format!(
            "uncaught: {}",
            params["exceptionDetails"]["exception"]["description"]
                .as_str()
                .unwrap_or(&params["exceptionDetails"]["text"].to_string())
        )),
        "Runtime.consoleAPICalled" if params["type"] == "error" => Some(format!(
            "console.error: {}",
            params["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a["value"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| a["description"].to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        _ => None,
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// What a screenshot shows, enough to tell a rendered page from a blank one.
#[derive(Debug)]
pub struct Picture {
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// How many distinct colours it has (counted up to 4096).
    pub colours: usize,
    /// The share of pixels whose colour differs from the most common one.
    pub inked: f64,
}

impl Picture {
    /// Decodes a PNG.
    pub fn of(png_bytes: &[u8]) -> Picture {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("a PNG size")];
        let info = reader.next_frame(&mut buf).expect("a PNG frame");
        let channels = info.color_type.samples();
        assert_eq!(info.bit_depth, png::BitDepth::Eight, "8-bit PNG");
        let mut counts: HashMap<[u8; 3], usize> = HashMap::new();
        let pixels = &buf[..info.buffer_size()];
        for px in pixels.chunks_exact(channels) {
            let rgb = match channels {
                1 | 2 => [px[0]; 3],
                _ => [px[0], px[1], px[2]],
            };
            if counts.len() < 4096 || counts.contains_key(&rgb) {
                *counts.entry(rgb).or_default() += 1;
            }
        }
        let total = (info.width * info.height) as usize;
        let most = counts.values().copied().max().unwrap_or(0);
        Picture {
            size: (info.width, info.height),
            colours: counts.len(),
            inked: (total - most) as f64 / total as f64,
        }
    }

    /// Whether it shows something: more than a few colours over more than a sliver of it.
    pub fn is_blank(&self) -> bool {
        self.colours < 16 || self.inked < 0.01
    }
}
