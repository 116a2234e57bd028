//! What a deploy holds, as the CLI sends it and the queue stores it: the component of each
//! function (sha256 and size), the site file without `[server]`, and `_redirects`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One function's component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRef {
    /// Lower-case hex sha256 of the component's bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The content of a deploy (its hash is the deploy's content hash).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Component by function name.
    pub functions: BTreeMap<String, ComponentRef>,
    /// `fnhost.toml` text, less its `[server]` table (per node, never deployed).
    #[serde(default)]
    pub config: String,
    /// `_redirects` text.
    #[serde(default)]
    pub redirects: String,
}

/// `POST /.fnhost/deploys`: a manifest and how to record it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDeploy {
    /// What it holds.
    #[serde(flatten)]
    pub manifest: Manifest,
    /// Why (shown in lists).
    #[serde(default)]
    pub message: String,
    /// Who (the CLI sends `user@host`).
    #[serde(default)]
    pub author: String,
    /// Publish it once stored [default: true].
    #[serde(default = "yes")]
    pub publish: bool,
}

fn yes() -> bool {
    true
}

impl Manifest {
    /// sha256 of the manifest's canonical JSON (keys sorted): the same content, the same hash.
    pub fn hash(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        sha256_hex(text.as_bytes())
    }

    /// Bytes of its components together.
    pub fn size(&self) -> u64 {
        self.functions.values().map(|c| c.size).sum()
    }

    /// The first thing a node must refuse before looking at any component: a bad function
    /// name or hash, or a `[server]` table in the site file.
    pub fn check(&self) -> Result<(), String> {
        for (name, c) in &self.functions {
            if !valid_name(name) {
                return Err(format!(
                    "{name:?} is not a function name: letters, digits, `-` and `_`, 1 to 64 of them"
                ));
            }
            if !is_sha256(&c.sha256) {
                return Err(format!(
                    "{name}: {:?} is not a sha256 (64 lower-case hex digits)",
                    c.sha256
                ));
            }
        }
        let table: toml::Table = toml::from_str(&self.config)
            .map_err(|e| format!("fnhost.toml: {}", e.message().trim()))?;
        if table.contains_key("server") {
            return Err(
                "fnhost.toml: [server] is per node and never part of a deploy \
                        (`fnhost deploy` leaves it out)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `NAME` of a function in a deploy (it becomes a file name and a route segment).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 64 lower-case hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The site file's text without its `[server]` table (what `fnhost deploy` sends): parsed and
/// written again, so comments are lost; the settings are the same.
pub fn without_server(text: &str) -> Result<String, String> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
    table.remove("server");
    toml::to_string(&table).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str) -> Manifest {
        let mut functions = BTreeMap::new();
        functions.insert(
            "hello".to_string(),
            ComponentRef {
                sha256: sha256_hex(b"x"),
                size: 1,
            },
        );
        Manifest {
            functions,
            config: config.into(),
            redirects: String::new(),
        }
    }

    #[test]
    fn the_same_content_has_the_same_hash_and_other_content_another() {
        let a = manifest("[functions.hello]\nbackground = true\n");
        assert_eq!(a.hash(), a.clone().hash());
        assert_ne!(a.hash(), manifest("").hash());
        assert!(is_sha256(&a.hash()));
    }

    #[test]
    fn a_server_table_or_a_bad_name_is_refused() {
        let e = manifest("[server]\nadmin_token = \"x\"\n")
            .check()
            .unwrap_err();
        assert!(e.contains("[server] is per node"), "{e}");
        let mut m = manifest("");
        m.functions
            .insert("../x".into(), m.functions["hello"].clone());
        assert!(m.check().unwrap_err().contains("not a function name"));
        assert!(manifest("").check().is_ok());
    }

    #[test]
    fn the_cli_leaves_the_server_table_out() {
        let text = "[server]\nadmin_token = \"s3cret\"\n[functions.a]\nbackground = true\n";
        let sent = without_server(text).unwrap();
        assert!(!sent.contains("s3cret"), "{sent}");
        assert!(sent.contains("background = true"), "{sent}");
    }
}
