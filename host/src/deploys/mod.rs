//! Deploys: immutable, content-addressed versions of the site's functions and their settings,
//! stored in the queue database so every node sees the same ones (DESIGN §14).
//!
//! - [`manifest`]: what a deploy holds and how its hash is taken.
//! - [`Deploys`]: this node's view — validate and store a new deploy (compile and link every
//!   component, resolve every setting, before anything is stored), publish one, and load any
//!   deploy into a function table (components copied once into a node-local directory by
//!   sha256; the tables of recent deploys kept, so a rollback to one costs no compilation).
//!
//! The follower that swaps the served table at every publish is in `follow` (site level).

pub mod manifest;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::cors::Policies;
use crate::config::redirects::Rules;
use crate::config::{Config, ServerConfig};
use crate::engine::Engine;
use crate::functions::{self, FunctionTable, Sources};
use crate::queue::{CreateError, DeployRecord, Published, Queue, QueueError};
use manifest::{Manifest, NewDeploy};

/// Deploys whose loaded tables a node keeps (the published one, the one before, and a few
/// more to roll back to at once).
const KEEP_LOADED: usize = 8;

/// A deploy loaded on this node: its function table, and the CORS policies and rules it
/// serves with (built once, when it was checked).
pub struct Loaded {
    /// Its functions, routed (`table.deploy` is its id).
    pub table: Arc<FunctionTable>,
    /// Its CORS policies.
    pub cors: Policies,
    /// Its `_redirects` and `[[redirects]]` rules.
    pub rules: Rules,
}

/// The CORS policies and rules of a deploy's settings and `_redirects` text.
fn edge(config: &Config, redirects: &str) -> Result<(Policies, Rules), String> {
    let cors = Policies::from_config(config).map_err(|e| e.to_string())?;
    let more = config.redirects.iter().map(|r| r.0.clone());
    let rules =
        Rules::from_text(redirects, Path::new("_redirects"), more).map_err(|e| e.to_string())?;
    Ok((cors, rules))
}

/// Why a deploy was refused (`422` with this text) or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Something in it is wrong: names the file, key or value.
    #[error("{0}")]
    Invalid(String),
    /// The queue database failed (`503`).
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What a new deploy became.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its id.
    pub id: String,
    /// Its content hash.
    pub hash: String,
    /// Its functions.
    pub functions: Vec<String>,
    /// Set when it was published with it.
    pub published: Option<Published>,
}

/// Limits on what a deploy may bring.
#[derive(Debug, Clone, Copy)]
pub struct DeployLimits {
    /// All its components together.
    pub max_deploy: u64,
    /// One component.
    pub max_component: u64,
}

impl DeployLimits {
    /// From `[server]`.
    pub fn of(server: &ServerConfig) -> DeployLimits {
        use crate::config::defaults;
        DeployLimits {
            max_deploy: server.max_deploy.map_or(defaults::MAX_DEPLOY, |s| s.0),
            max_component: server
                .max_component
                .map_or(defaults::MAX_COMPONENT, |s| s.0),
        }
    }
}

/// This node's side of deploys.
pub struct Deploys {
    engine: Arc<Engine>,
    queue: Queue,
    /// Node-local copies of components, `SHA256.wasm`.
    blobs: PathBuf,
    /// The engine's memory cap.
    max_memory: u64,
    /// Whether the engine meters fuel.
    fuel: bool,
    /// Upload limits.
    pub limits: DeployLimits,
    /// Recently loaded deploys, by id, with when each was last used.
    loaded: Mutex<HashMap<String, (Arc<Loaded>, std::time::Instant)>>,
    /// Serialises loads, so two attempts needing the same deploy load it once.
    loading: tokio::sync::Mutex<()>,
    /// This node serves the published deploy (`--deployed`).
    following: std::sync::atomic::AtomicBool,
}

impl Deploys {
    /// `blobs`: a directory of this node's (created) for copies of components; `(max_memory,
    /// fuel)`: what the engine was built for ([`functions::engine_needs`] of the node's file).
    pub fn new(
        engine: Arc<Engine>,
        queue: Queue,
        blobs: PathBuf,
        (max_memory, fuel): (u64, bool),
        limits: DeployLimits,
    ) -> std::io::Result<Deploys> {
        std::fs::create_dir_all(&blobs)?;
        Ok(Deploys {
            engine,
            queue,
            blobs,
            max_memory,
            fuel,
            limits,
            loaded: Mutex::default(),
            loading: tokio::sync::Mutex::new(()),
            following: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Marks this node as serving the published deploy.
    pub fn set_following(&self) {
        self.following
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this node serves the published deploy (`--deployed`).
    pub fn following(&self) -> bool {
        self.following.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The queue deploys are stored in.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Where this node keeps its copy of component `sha`.
    pub fn blob_path(&self, sha: &str) -> PathBuf {
        self.blobs.join(format!("{sha}.wasm"))
    }

    /// A fresh temporary file name in the blob directory (an upload in progress).
    pub fn upload_path(&self) -> PathBuf {
        self.blobs
            .join(format!("upload-{}.part", crate::ids::new_id()))
    }

    /// Validates `new` (every component compiles and links, every setting resolves, the rules
    /// parse) on this node, then stores it (and publishes it when asked) in one transaction.
    /// Nothing is stored when anything is wrong.
    pub async fn create(&self, new: NewDeploy) -> Result<Created, Refused> {
        let manifest = new.manifest;
        manifest.check().map_err(Refused::Invalid)?;
        if manifest.size() > self.limits.max_deploy {
            return Err(Refused::Invalid(format!(
                "the deploy's components total {} bytes, more than server.max_deploy ({} bytes)",
                manifest.size(),
                self.limits.max_deploy
            )));
        }
        let id = crate::ids::new_id()[..12].to_string();
        let previous = self.newest_loaded();
        let loaded =
            (self.load_manifest(&id, &manifest, previous.as_ref().map(|l| &*l.table))).await?;
        let record = DeployRecord {
            id: id.clone(),
            hash: manifest.hash(),
            created_at: crate::queue::now_ms(),
            author: new.author,
            message: new.message,
            size: manifest.size(),
            manifest: serde_json::to_string(&manifest).unwrap_or_default(),
            functions: (manifest.functions.iter())
                .map(|(n, c)| (n.clone(), c.sha256.clone()))
                .collect(),
        };
        let published = match self.queue.create_deploy(&record, new.publish).await {
            Ok(p) => p,
            Err(CreateError::MissingBlob(sha)) => {
                return Err(Refused::Invalid(format!(
                    "component {sha} is not stored (purged while the deploy was made?): deploy again"
                )));
            }
            Err(CreateError::Queue(e)) => return Err(e.into()),
        };
        self.remember(&id, Arc::new(loaded));
        Ok(Created {
            id,
            hash: record.hash,
            functions: record.functions.into_iter().map(|(n, _)| n).collect(),
            published,
        })
    }

    /// Deploy `id` loaded on this node: from memory when recently used, else from the queue
    /// (components copied here once; compiled, or read from the compiled cache).
    pub async fn load(&self, id: &str) -> anyhow::Result<Arc<Loaded>> {
        if let Some(l) = self.recall(id) {
            return Ok(l);
        }
        let _one_at_a_time = self.loading.lock().await;
        if let Some(l) = self.recall(id) {
            return Ok(l);
        }
        let record = (self.queue.deploy(id).await?)
            .ok_or_else(|| anyhow::anyhow!("deploy {id} is not stored"))?;
        let manifest: Manifest = serde_json::from_str(&record.manifest)
            .map_err(|e| anyhow::anyhow!("deploy {id}: stored manifest unreadable: {e}"))?;
        let previous = self.newest_loaded();
        let loaded = self
            .load_manifest(id, &manifest, previous.as_ref().map(|l| &*l.table))
            .await
            .map_err(|e| anyhow::anyhow!("deploy {id}: {e}"))?;
        let loaded = Arc::new(loaded);
        self.remember(id, loaded.clone());
        Ok(loaded)
    }

    /// Parses the settings, copies the components here, loads them into a table and builds
    /// the edge: anything wrong is [`Refused::Invalid`], naming it.
    async fn load_manifest(
        &self,
        id: &str,
        manifest: &Manifest,
        previous: Option<&FunctionTable>,
    ) -> Result<Loaded, Refused> {
        let config = Config::from_str(&manifest.config, Path::new("fnhost.toml"))
            .map_err(|e| Refused::Invalid(e.to_string()))?;
        self.check_engine(&config).map_err(Refused::Invalid)?;
        let mut files = Vec::with_capacity(manifest.functions.len());
        for (name, component) in &manifest.functions {
            files.push((
                name.clone(),
                self.local_copy(name, &component.sha256).await?,
            ));
        }
        let sources = Sources {
            files: &files,
            deploy: Some(id),
        };
        let table =
            functions::load_files(&self.engine, sources, &config, self.max_memory, previous).await;
        if !table.rejected.is_empty() {
            let reasons: Vec<String> = (table.rejected.iter())
                .map(|r| {
                    let name = (files.iter())
                        .find(|(_, p)| *p == r.file)
                        .map_or("?", |(n, _)| n);
                    let file = r.file.display().to_string();
                    r.reason.replace(&file, &format!("{name}.wasm"))
                })
                .collect();
            return Err(Refused::Invalid(reasons.join("; ")));
        }
        let (cors, rules) = edge(&config, &manifest.redirects).map_err(Refused::Invalid)?;
        Ok(Loaded {
            table: Arc::new(table),
            cors,
            rules,
        })
    }

    /// What the engine was built with (at start, from the node's file) bounds what a deploy may
    /// ask: a larger `memory` or `fuel` with metering off needs the nodes restarted.
    fn check_engine(&self, config: &Config) -> Result<(), String> {
        let (memory, fuel) = functions::engine_needs(config);
        if memory > self.max_memory {
            return Err(format!(
                "fnhost.toml: a `memory` of {memory} bytes is more than this node's engine was \
                 started for ({} bytes): set it in the node's own fnhost.toml [defaults] too \
                 and restart the nodes",
                self.max_memory
            ));
        }
        if fuel && !self.fuel {
            return Err(
                "fnhost.toml: `fuel` needs fuel metering, which this node's engine was \
                        started without: set `fuel` in the node's own fnhost.toml [defaults] \
                        too and restart the nodes"
                    .into(),
            );
        }
        Ok(())
    }

    /// This node's copy of component `sha` (fetched from the queue when it has none yet).
    async fn local_copy(&self, name: &str, sha: &str) -> Result<PathBuf, Refused> {
        let path = self.blob_path(sha);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        if self.queue.fetch_blob(sha, &path).await? {
            Ok(path)
        } else {
            Err(Refused::Invalid(format!(
                "{name}.wasm: component {sha} has not been uploaded"
            )))
        }
    }

    /// Removes this node's copies of components no stored deploy names any more, and uploads
    /// a crash left unfinished; files younger than an hour stay (an upload whose deploy is
    /// being made). How many files went.
    pub async fn prune_local(&self) -> anyhow::Result<usize> {
        const YOUNG: std::time::Duration = std::time::Duration::from_secs(3600);
        let named = self.queue.deployed_blobs().await?;
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.blobs).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let sha = name.strip_suffix(".wasm");
            if sha.is_some_and(|sha| named.contains(sha)) {
                continue;
            }
            let age = (entry.metadata().await?.modified()?.elapsed()).unwrap_or_default();
            if age > YOUNG && tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn recall(&self, id: &str) -> Option<Arc<Loaded>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let entry = loaded.get_mut(id)?;
        entry.1 = std::time::Instant::now();
        Some(entry.0.clone())
    }

    fn newest_loaded(&self) -> Option<Arc<Loaded>> {
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded
            .values()
            .max_by_key(|(_, at)| *at)
            .map(|(l, _)| l.clone())
    }

    /// Keeps `loaded` for later; the least recently used goes past [`KEEP_LOADED`].
    fn remember(&self, id: &str, loaded: Arc<Loaded>) {
        let mut map = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(id.to_string(), (loaded, std::time::Instant::now()));
        while map.len() > KEEP_LOADED {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy no deploy names goes once it is an hour old, and so does an upload a crash left;
    /// a named one stays, and so does anything younger (an upload whose deploy is being made).
    #[tokio::test]
    async fn prune_keeps_named_and_young_copies() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("queue.db").display());
        let queue = Queue::open(&url).await.unwrap();
        let mut options = crate::engine::EngineOptions::new(4, 64 << 20, false, None);
        (options.pooling, options.epoch) = (false, false);
        let engine = Arc::new(Engine::new(&options).unwrap());
        let limits = DeployLimits::of(&ServerConfig::default());
        let blobs = dir.path().join("deploys");
        let deploys = Deploys::new(
            engine,
            queue.clone(),
            blobs.clone(),
            (64 << 20, false),
            limits,
        )
        .unwrap();
        let named = "c".repeat(64);
        std::fs::write(dir.path().join("c"), b"x").unwrap();
        queue
            .store_blob(&named, &dir.path().join("c"))
            .await
            .unwrap();
        let record = DeployRecord {
            id: "d".into(),
            hash: "h".into(),
            created_at: 0,
            author: String::new(),
            message: String::new(),
            size: 1,
            manifest: "{}".into(),
            functions: vec![("f".into(), named.clone())],
        };
        queue.create_deploy(&record, false).await.unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for (file, old) in [
            (format!("{named}.wasm"), true),
            ("a.wasm".into(), true),
            ("b.wasm".into(), false),
            ("upload-x.part".into(), true),
        ] {
            let f = std::fs::File::create(blobs.join(&file)).unwrap();
            if old {
                f.set_modified(two_hours_ago).unwrap();
            }
        }
        assert_eq!(deploys.prune_local().await.unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b.wasm".to_string(), format!("{named}.wasm")]);
    }
}
