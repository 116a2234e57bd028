//! `/.fnhost/deploys`: make, list, show and publish deploys (the admin token or
//! `server.deploy_token`). Components are uploaded one at a time to `PUT …/blobs/SHA256`,
//! streamed to a file while hashed (never held whole in memory), and stored only when the
//! whole body arrived and hashes to its name: an upload cut off stores nothing.
//!
//! | request | answer |
//! |---|---|
//! | `GET /.fnhost/deploys` | `200` deploys, newest first |
//! | `GET /.fnhost/deploys/ID` | `200` one deploy with its functions' sha256 |
//! | `GET /.fnhost/deploys/published` | `200` the published deploy, `404` none |
//! | `POST /.fnhost/deploys/blobs/missing` `{"sha256": [..]}` | `200 {"missing": [..]}` |
//! | `PUT /.fnhost/deploys/blobs/SHA256` | `201` stored, `200` already stored |
//! | `POST /.fnhost/deploys` (manifest) | `201` stored (and published), `422` refused |
//! | `POST /.fnhost/deploys/ID/publish` | `200` published (a rollback for an older id) |

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use super::App;
use super::dispatch::read_body;
use super::error::queue_error;
use super::error::{ApiError, json};
use crate::body::Body;
use crate::deploys::manifest::{NewDeploy, hex, is_sha256};
use crate::deploys::{Deploys, Refused};
use crate::ids::rfc3339_ms;
use crate::queue::DeployRecord;

/// A request body as the server hands it over (what every handler here streams or reads).
pub trait Incoming:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> Incoming for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// Largest manifest (the site file and `_redirects` travel in it).
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// Most deploys one list returns.
const LIST_LIMIT: u32 = 100;

/// Answers `/.fnhost/deploys{rest}`.
pub async fn handle<B: Incoming>(
    app: &App,
    req: Request<B>,
    rest: &str,
) -> Result<Response<Body>, ApiError> {
    app.auth.deployer(req.headers())?;
    let deploys = app.deploys.as_deref().ok_or(ApiError::AdminOff)?;
    let segments: Vec<String> = (rest.trim_matches('/').split('/'))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let where_ = format!("/deploys{rest}");
    let qe = |e| queue_error(&where_, e);
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, []) => list(deploys).await.map_err(qe),
        (Method::POST, []) => create(app, deploys, req).await,
        (Method::GET, ["published"]) => published(deploys).await.map_err(qe)?,
        (Method::POST, ["blobs", "missing"]) => missing(app, deploys, req).await,
        (Method::PUT, ["blobs", sha]) => upload(app, deploys, sha, req).await,
        (Method::GET, [id]) => show(deploys, id).await.map_err(qe)?,
        (Method::POST, [id, "publish"]) => {
            let answer = publish(deploys, id).await.map_err(qe)?;
            served_here(app, deploys, id).await;
            answer
        }
        (method, _) => Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow: vec![
                if segments.is_empty() {
                    "GET, POST"
                } else {
                    "GET"
                }
                .to_string(),
            ],
        }),
    }
}

/// A deploy as lists show it.
fn summary(d: &DeployRecord, published: Option<&str>) -> serde_json::Value {
    json!({
        "id": d.id,
        "hash": d.hash,
        "created_at": rfc3339_ms(d.created_at),
        "author": d.author,
        "message": d.message,
        "size": d.size,
        "functions": d.functions.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "published": published == Some(d.id.as_str()),
    })
}

async fn list(deploys: &Deploys) -> Result<Response<Body>, crate::queue::QueueError> {
    let queue = deploys.queue();
    let published = queue.published().await?.map(|p| p.deploy);
    let all = queue.deploys(LIST_LIMIT).await?;
    let list: Vec<_> = all
        .iter()
        .map(|d| summary(d, published.as_deref()))
        .collect();
    Ok(json(StatusCode::OK, &list))
}

async fn show(
    deploys: &Deploys,
    id: &str,
) -> Result<Result<Response<Body>, ApiError>, crate::queue::QueueError> {
    let queue = deploys.queue();
    let Some(d) = queue.deploy(id).await? else {
        return Ok(Err(ApiError::NoDeploy(id.to_string())));
    };
    let published = queue.published().await?.map(|p| p.deploy);
    let mut body = summary(&d, published.as_deref());
    let functions: serde_json::Map<String, serde_json::Value> = (d.functions.iter())
        .map(|(n, sha)| (n.clone(), json!({ "sha256": sha })))
        .collect();
    body["components"] = functions.into();
    body["published_deploy"] = json!(published);
    Ok(Ok(json(StatusCode::OK, &body)))
}

async fn published(
    deploys: &Deploys,
) -> Result<Result<Response<Body>, ApiError>, crate::queue::QueueError> {
    Ok(match deploys.queue().published().await? {
        Some(p) => Ok(json(StatusCode::OK, &published_json(&p))),
        None => Err(ApiError::NoDeploy("is published".into())),
    })
}

fn published_json(p: &crate::queue::Published) -> serde_json::Value {
    json!({
        "deploy": p.deploy,
        "generation": p.generation,
        "published_at": rfc3339_ms(p.published_at),
    })
}

async fn publish(
    deploys: &Deploys,
    id: &str,
) -> Result<Result<Response<Body>, ApiError>, crate::queue::QueueError> {
    Ok(match deploys.queue().publish(id).await? {
        Some(p) => {
            tracing::info!("deploy {id} published (publish #{})", p.generation);
            Ok(json(StatusCode::OK, &published_json(&p)))
        }
        None => Err(ApiError::NoDeploy(id.to_string())),
    })
}

/// On a node serving the published deploy, waits (5 s at most) until it serves `id`: when
/// `fnhost deploy` or `fnhost publish` returns, the node it talked to serves what it published.
async fn served_here(app: &App, deploys: &Deploys, id: &str) {
    if !deploys.following() {
        return;
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while app.table.current().deploy.as_deref() != Some(id)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Reads a small JSON body.
async fn read_json<B: Incoming, T>(app: &App, req: Request<B>) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned,
{
    let req = read_body(req, MAX_MANIFEST, app.body_timeout).await?;
    serde_json::from_slice(req.body())
        .map_err(|e| ApiError::BadRequest(format!("the JSON body does not parse: {e}")))
}

async fn missing<B: Incoming>(
    app: &App,
    deploys: &Deploys,
    req: Request<B>,
) -> Result<Response<Body>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Ask {
        sha256: Vec<String>,
    }
    let ask: Ask = read_json(app, req).await?;
    if let Some(bad) = ask.sha256.iter().find(|s| !is_sha256(s)) {
        return Err(ApiError::BadRequest(format!("{bad:?} is not a sha256")));
    }
    let missing = (deploys.queue().missing_blobs(&ask.sha256).await)
        .map_err(|e| queue_error("/deploys/blobs/missing", e))?;
    Ok(json(StatusCode::OK, &json!({ "missing": missing })))
}

async fn create<B: Incoming>(
    app: &App,
    deploys: &Deploys,
    req: Request<B>,
) -> Result<Response<Body>, ApiError> {
    let new: NewDeploy = read_json(app, req).await?;
    match deploys.create(new).await {
        Ok(created) => {
            tracing::info!(
                "deploy {} stored ({} function(s)){}",
                created.id,
                created.functions.len(),
                if created.published.is_some() {
                    " and published"
                } else {
                    ""
                }
            );
            if created.published.is_some() {
                served_here(app, deploys, &created.id).await;
            }
            let body = json!({
                "id": created.id,
                "hash": created.hash,
                "functions": created.functions,
                "published": created.published.as_ref().map(published_json),
            });
            Ok(json(StatusCode::CREATED, &body))
        }
        Err(Refused::Invalid(reason)) => Err(ApiError::DeployRefused(reason)),
        Err(Refused::Queue(e)) => Err(queue_error("/deploys", e)),
    }
}

/// A file removed when dropped unless kept: an upload cut off leaves nothing behind.
struct Partial(Option<std::path::PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `PUT /.fnhost/deploys/blobs/SHA256`: the body streamed to a file while hashed; stored when
/// whole and matching its name.
async fn upload<B: Incoming>(
    app: &App,
    deploys: &Deploys,
    sha: &str,
    req: Request<B>,
) -> Result<Response<Body>, ApiError> {
    if !is_sha256(sha) {
        return Err(ApiError::BadRequest(format!("{sha:?} is not a sha256")));
    }
    let qe = |e| queue_error("/deploys/blobs", e);
    if deploys
        .queue()
        .missing_blobs(&[sha.to_string()])
        .await
        .map_err(qe)?
        .is_empty()
    {
        return Ok(json(
            StatusCode::OK,
            &json!({ "sha256": sha, "stored": "already" }),
        ));
    }
    let limit = deploys.limits.max_component;
    let partial = Partial(Some(deploys.upload_path()));
    let path = partial.0.clone().expect("set above");
    let (digest, size) = receive(req.into_body(), &path, limit, app.body_timeout).await?;
    if digest != sha {
        return Err(ApiError::DeployRefused(format!(
            "the body ({size} bytes) hashes to {digest}, not {sha}: upload it again"
        )));
    }
    deploys.queue().store_blob(sha, &path).await.map_err(qe)?;
    // This node's own copy, so loading the deploy here reads no chunk back.
    let _ = tokio::fs::rename(&path, deploys.blob_path(sha)).await;
    Ok(json(
        StatusCode::CREATED,
        &json!({ "sha256": sha, "size": size }),
    ))
}

/// Writes `body` to `path`, hashing it; refuses more than `limit` bytes (`413`) and a body
/// that stalls for `idle` between two pieces (`408`).
async fn receive<B: Incoming>(
    body: B,
    path: &std::path::Path,
    limit: u64,
    idle: std::time::Duration,
) -> Result<(String, u64), ApiError> {
    use sha2::{Digest, Sha256};
    let io = |e: std::io::Error| {
        tracing::error!("cannot write an upload to {}: {e}", path.display());
        ApiError::QueueUnavailable
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut body = std::pin::pin!(body);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(ApiError::RequestTimeout { after: idle }),
        };
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("cannot read body: {}", e.into())))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        hasher.update(&data);
        file.write_all(&data).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok((hex(&hasher.finalize()), size))
}
