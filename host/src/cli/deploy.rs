//! `fnhost deploy`, `fnhost deploys [show ID]` and `fnhost publish ID`: ship what `fnhost serve
//! DIR` would serve to a running fnhost as one deploy, list deploys, and publish one (a
//! rollback is publishing an older id). Components the server already has are not sent again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use super::client::{self, Call};
use crate::config::Config;
use crate::deploys::manifest::{ComponentRef, Manifest, hex, without_server};
use crate::ids::API_PREFIX;

const DEFAULT_URL: &str = "http://127.0.0.1:8888";

/// Where to reach fnhost and with which token.
#[derive(clap::Args, Clone)]
pub struct Remote {
    /// The fnhost to talk to
    #[arg(long, default_value = DEFAULT_URL)]
    url: String,
    /// The deploy token or the admin token [default: $FNHOST_DEPLOY_TOKEN, else
    /// $FNHOST_ADMIN_TOKEN]
    #[arg(long, env = "FNHOST_DEPLOY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var("FNHOST_ADMIN_TOKEN").ok())
    }

    fn endpoint(&self, rest: &str) -> String {
        format!(
            "{}{API_PREFIX}/deploys{rest}",
            self.url.trim_end_matches('/')
        )
    }
}

/// `fnhost deploy`.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// Directory of NAME.wasm files (with its _redirects), or of projects `fnhost build`
    /// builds first [default: functions, or server.functions in fnhost.toml]
    dir: Option<PathBuf>,
    /// Site file whose settings go with the deploy ([server] stays behind) [default:
    /// ./fnhost.toml when present]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Why (shown by `fnhost deploys`)
    #[arg(long, short, default_value = "")]
    message: String,
    /// Store the deploy without publishing it (`fnhost publish ID` later)
    #[arg(long)]
    no_publish: bool,
    #[command(flatten)]
    remote: Remote,
}

/// `fnhost deploys [show ID]`.
#[derive(clap::Args)]
pub struct DeploysArgs {
    #[command(subcommand)]
    show: Option<DeploysCommand>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
enum DeploysCommand {
    /// A deploy's functions and their components, against the published deploy
    Show {
        /// Deploy id
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `fnhost publish ID`.
#[derive(clap::Args)]
pub struct PublishArgs {
    /// Deploy id (an older one rolls back)
    id: String,
    #[command(flatten)]
    remote: Remote,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Sends `call`; the JSON answer when its status is 2xx, else an error with the server's words.
async fn ask(call: Call<'_>) -> anyhow::Result<(http::StatusCode, Value)> {
    let url = call.url.to_string();
    let answer = client::send(call).await?;
    if !answer.status.is_success() {
        bail!("{url} answered {}: {}", answer.status, answer.text().trim());
    }
    let value = serde_json::from_slice(&answer.body)
        .with_context(|| format!("{url} answered with something that is not JSON"))?;
    Ok((answer.status, value))
}

fn json_call<'a>(
    method: http::Method,
    url: &'a str,
    token: Option<&'a str>,
    body: &Value,
) -> Call<'a> {
    Call {
        method,
        url,
        headers: vec![(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body: Bytes::from(body.to_string()),
        token,
        timeout: Duration::from_secs(300),
    }
}

/// `fnhost deploy`: what to send, what the server lacks, the uploads, then the deploy.
pub fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let (dir, config_file) = site_of(&args)?;
    let files = components(&dir)?;
    let manifest = manifest_of(&dir, config_file.as_deref(), &files)?;
    let token = args.remote.token();
    let rt = runtime()?;
    rt.block_on(async {
        upload_missing(&args.remote, token.as_deref(), &files).await?;
        let body = json!({
            "functions": manifest.functions,
            "config": manifest.config,
            "redirects": manifest.redirects,
            "message": args.message,
            "author": author(),
            "publish": !args.no_publish,
        });
        let url = args.remote.endpoint("");
        let (_, created) =
            ask(json_call(http::Method::POST, &url, token.as_deref(), &body)).await?;
        let id = created["id"].as_str().unwrap_or("?");
        match created["published"].is_null() {
            false => println!("deploy {id} published"),
            true => {
                println!("deploy {id} stored, not published: `fnhost publish {id}` publishes it")
            }
        }
        for (name, c) in &manifest.functions {
            println!("  {name:<24} {}  {}", &c.sha256[..12], size(c.size));
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// The functions directory and the site file, as `fnhost serve` finds them; a directory of
/// projects is built first (into `.fnhost/deploy-build`).
fn site_of(args: &DeployArgs) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let config_file = args
        .config
        .clone()
        .or_else(|| Some(PathBuf::from("fnhost.toml")).filter(|p| p.is_file()));
    let from_file = match &config_file {
        Some(path) => Config::load(path)?
            .server
            .functions
            .map(|d| path.parent().unwrap_or(Path::new(".")).join(d)),
        None => None,
    };
    let dir = (args.dir.clone())
        .or(from_file)
        .unwrap_or_else(|| PathBuf::from("functions"));
    let has_wasm = !crate::functions::discover(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .is_empty();
    if has_wasm {
        return Ok((dir, config_file));
    }
    let out = PathBuf::from(".fnhost/deploy-build");
    let _ = std::fs::remove_dir_all(&out);
    println!("no .wasm in {}: building its projects first", dir.display());
    crate::builder::build(&dir, &out)?.into_result()?;
    let config_file = config_file.or_else(|| Some(dir.join("fnhost.toml")).filter(|p| p.is_file()));
    Ok((out, config_file))
}

/// Every `NAME.wasm` of `dir` with its sha256 and size (read in pieces).
fn components(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf, ComponentRef)>> {
    use sha2::{Digest, Sha256};
    use std::io::Read as _;
    let mut out = Vec::new();
    for (name, path) in crate::functions::discover(dir)? {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let (mut hasher, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 16]);
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let sha256 = hex(&hasher.finalize());
        out.push((name, path, ComponentRef { sha256, size }));
    }
    if out.is_empty() {
        bail!("nothing to deploy: no NAME.wasm in {}", dir.display());
    }
    Ok(out)
}

/// The manifest: components, the site file less `[server]` (checked here first, so a typo is
/// named before anything is sent), and `_redirects`.
fn manifest_of(
    dir: &Path,
    config_file: Option<&Path>,
    files: &[(String, PathBuf, ComponentRef)],
) -> anyhow::Result<Manifest> {
    let config = match config_file {
        Some(path) => {
            Config::load(path)?;
            let text = std::fs::read_to_string(path)?;
            without_server(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => String::new(),
    };
    let redirects_file = dir.join("_redirects");
    let redirects = if redirects_file.is_file() {
        std::fs::read_to_string(&redirects_file)
            .with_context(|| format!("cannot read {}", redirects_file.display()))?
    } else {
        String::new()
    };
    let functions: BTreeMap<String, ComponentRef> = (files.iter())
        .map(|(n, _, c)| (n.clone(), c.clone()))
        .collect();
    Ok(Manifest {
        functions,
        config,
        redirects,
    })
}

/// Asks which components the server lacks and uploads those, a progress line each.
async fn upload_missing(
    remote: &Remote,
    token: Option<&str>,
    files: &[(String, PathBuf, ComponentRef)],
) -> anyhow::Result<()> {
    let shas: Vec<&str> = files.iter().map(|(_, _, c)| c.sha256.as_str()).collect();
    let url = remote.endpoint("/blobs/missing");
    let body = json!({ "sha256": shas });
    let (_, answer) = ask(json_call(http::Method::POST, &url, token, &body)).await?;
    let missing: Vec<String> =
        serde_json::from_value(answer["missing"].clone()).unwrap_or_default();
    let (mut sent, mut bytes) = (0usize, 0u64);
    let mut uploaded = std::collections::HashSet::new();
    for (name, path, c) in files {
        // Two functions of one component: sent once.
        if !missing.contains(&c.sha256) || !uploaded.insert(c.sha256.clone()) {
            continue;
        }
        upload_one(remote, token, name, path, c).await?;
        sent += 1;
        bytes += c.size;
    }
    println!(
        "{} component(s): {} already stored, {sent} uploaded ({})",
        files.len(),
        files.len() - sent,
        size(bytes)
    );
    Ok(())
}

/// `PUT`s one component, streamed from its file, with a progress line.
async fn upload_one(
    remote: &Remote,
    token: Option<&str>,
    name: &str,
    path: &Path,
    c: &ComponentRef,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    print!("uploading {name}.wasm ({}) ... ", size(c.size));
    std::io::stdout().flush()?;
    let url = remote.endpoint(&format!("/blobs/{}", c.sha256));
    let wasm = http::HeaderValue::from_static("application/wasm");
    let call = Call {
        method: http::Method::PUT,
        url: &url,
        headers: vec![
            (http::header::CONTENT_TYPE, wasm),
            (
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(c.size),
            ),
        ],
        body: Bytes::new(),
        token,
        timeout: Duration::from_secs(600),
    };
    let answer = client::send_file(call, path).await?;
    if !answer.status.is_success() {
        bail!("{url} answered {}: {}", answer.status, answer.text().trim());
    }
    println!("stored");
    Ok(())
}

/// `user@host` of whoever runs the CLI.
fn author() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    match host.trim() {
        "" => user,
        host => format!("{user}@{host}"),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `fnhost deploys` and `fnhost deploys show ID`.
pub fn deploys(args: DeploysArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match args.show {
        Some(DeploysCommand::Show { id, remote }) => rt.block_on(show(&remote, &id)),
        None => rt.block_on(list(&args.remote)),
    }
}

async fn list(remote: &Remote) -> anyhow::Result<ExitCode> {
    let (token, url) = (remote.token(), remote.endpoint(""));
    let (_, list) = ask(Call::get(&url, token.as_deref())).await?;
    println!(
        "{:<12}  {:<24}  {:>9}  {:<9}  FUNCTIONS / MESSAGE",
        "ID", "CREATED", "SIZE", "PUBLISHED"
    );
    for d in list.as_array().into_iter().flatten() {
        let functions: Vec<&str> = (d["functions"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<12}  {:<24}  {:>9}  {:<9}  {}{}",
            d["id"].as_str().unwrap_or("?"),
            d["created_at"].as_str().unwrap_or("?"),
            size(d["size"].as_u64().unwrap_or(0)),
            if d["published"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            },
            functions.join(","),
            match d["message"].as_str() {
                Some(m) if !m.is_empty() => format!("  \"{m}\""),
                _ => String::new(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(remote: &Remote, id: &str) -> anyhow::Result<ExitCode> {
    let token = remote.token();
    let url = remote.endpoint(&format!("/{id}"));
    let (_, deploy) = ask(Call::get(&url, token.as_deref())).await?;
    let published = match deploy["published_deploy"].as_str() {
        Some(p) if p != id => {
            let url = remote.endpoint(&format!("/{p}"));
            Some(ask(Call::get(&url, token.as_deref())).await?.1)
        }
        _ => None,
    };
    println!(
        "deploy {id}{}  created {} by {}  {}",
        if deploy["published"].as_bool() == Some(true) {
            " (published)"
        } else {
            ""
        },
        deploy["created_at"].as_str().unwrap_or("?"),
        deploy["author"].as_str().unwrap_or("?"),
        deploy["message"].as_str().unwrap_or("")
    );
    print!("{}", diff(&deploy, published.as_ref()));
    Ok(ExitCode::SUCCESS)
}

/// Each function with its component, marked against the published deploy: `+` only here, `-`
/// only there, `~` another component, blank the same.
fn diff(deploy: &Value, published: Option<&Value>) -> String {
    let sha = |d: &Value, n: &str| d["components"][n]["sha256"].as_str().map(str::to_string);
    let names = |d: &Value| -> Vec<String> {
        d["components"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut all = names(deploy);
    if let Some(p) = published {
        all.extend(names(p));
    }
    all.sort();
    all.dedup();
    let mut out = String::new();
    if let Some(p) = published {
        out.push_str(&format!(
            "against the published deploy {}:\n",
            p["id"].as_str().unwrap_or("?")
        ));
    }
    for n in all {
        let (here, there) = (sha(deploy, &n), published.and_then(|p| sha(p, &n)));
        let mark = match (&here, &there, published.is_some()) {
            (_, _, false) => ' ',
            (Some(_), None, _) => '+',
            (None, Some(_), _) => '-',
            (Some(a), Some(b), _) if a != b => '~',
            _ => ' ',
        };
        let shown = here.or(there).unwrap_or_default();
        out.push_str(&format!(
            "{mark} {n:<24} {}\n",
            &shown[..shown.len().min(12)]
        ));
    }
    out
}

/// `fnhost publish ID`.
pub fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let token = args.remote.token();
        let url = args.remote.endpoint(&format!("/{}/publish", args.id));
        let call = json_call(http::Method::POST, &url, token.as_deref(), &json!({}));
        let (_, published) = ask(call).await?;
        println!(
            "deploy {} published at {} (publish #{})",
            published["deploy"].as_str().unwrap_or("?"),
            published["published_at"].as_str().unwrap_or("?"),
            published["generation"]
        );
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_marks_what_changed_against_the_published_deploy() {
        let mine = json!({"id": "b", "components": {"a": {"sha256": "1111"}, "n": {"sha256": "2222"}, "c": {"sha256": "3333"}}});
        let theirs = json!({"id": "p", "components": {"a": {"sha256": "1111"}, "c": {"sha256": "9999"}, "gone": {"sha256": "4444"}}});
        let text = diff(&mine, Some(&theirs));
        assert!(text.contains("  a "), "{text}");
        assert!(text.contains("+ n "), "{text}");
        assert!(text.contains("~ c "), "{text}");
        assert!(text.contains("- gone "), "{text}");
    }
}
