//! `fnhost build`: turns every Rust function crate under a directory into `NAME.wasm`.
//!
//! A function crate is a `Cargo.toml` with a `[package]` whose `[lib]` is a `cdylib`. Each is
//! built with `cargo build --release --target wasm32-wasip2` (its output shown as it runs); the
//! artifact cargo reports is copied to `OUT/NAME.wasm`, `NAME` being the package name.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

const TARGET: &str = "wasm32-wasip2";

/// Builds every function crate under `dir` into `out`; returns the written files.
pub fn build(dir: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    build_into(dir, out, None)
}

/// [`build`] with cargo's target dir set (else cargo's own choice).
pub fn build_into(
    dir: &Path,
    out: &Path,
    target_dir: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    let crates = find_crates(dir)?;
    if crates.is_empty() {
        bail!(
            "no function crates under {} (a crate with `crate-type = [\"cdylib\"]`)",
            dir.display()
        );
    }
    ensure_target()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for (name, manifest) in crates {
        eprintln!("building {name} ({})", manifest.display());
        let artifact = cargo_build(&manifest, target_dir)
            .with_context(|| format!("building {}", manifest.display()))?;
        let dest = out.join(format!("{name}.wasm"));
        std::fs::copy(&artifact, &dest)
            .with_context(|| format!("cannot copy {} to {}", artifact.display(), dest.display()))?;
        written.push(dest);
    }
    Ok(written)
}

/// `(package name, manifest)` of every function crate under `dir` (three levels deep at most).
pub fn find_crates(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    walk(dir, 0, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, depth: usize, found: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("cannot read {}", manifest.display()))?;
        let doc: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
        let name = doc
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str());
        let cdylib = doc
            .get("lib")
            .and_then(|l| l.get("crate-type"))
            .and_then(|t| t.as_array())
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
        if let (Some(name), true) = (name, cdylib) {
            found.push((name.to_string(), manifest));
        }
    }
    if depth >= 3 {
        return Ok(());
    }
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let skip = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n == "target" || n == "node_modules");
        if path.is_dir() && !skip {
            walk(&path, depth + 1, found)?;
        }
    }
    Ok(())
}

/// Installs the wasm32-wasip2 target with rustup when it is missing.
fn ensure_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("installing the {TARGET} target: rustup target add {TARGET}");
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()?;
            if !status.success() {
                bail!("`rustup target add {TARGET}` failed");
            }
            Ok(())
        }
        // No rustup (a distro toolchain): let cargo report whether the target exists.
        Err(_) => Ok(()),
    }
}

/// Runs cargo, streaming its human-readable output, and returns the `.wasm` it produced.
fn cargo_build(manifest: &Path, target_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    if let Some(dir) = target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    let output = command
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .output()
        .context("cannot run cargo")?;
    let mut artifact = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["manifest_path"].as_str().map(Path::new) == Some(&manifest.canonicalize()?)
        {
            let files = msg["filenames"].as_array().into_iter().flatten();
            if let Some(wasm) = files
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
            {
                artifact = Some(PathBuf::from(wasm));
            }
        }
    }
    if !output.status.success() {
        bail!("cargo build failed");
    }
    artifact.context("cargo built no .wasm artifact (is the crate a cdylib?)")
}
