//! `fnhost build`: turns every function project under a directory into `NAME.wasm`.
//!
//! Two kinds of project are recognised:
//!
//! - a **Rust crate**: a `Cargo.toml` with a `[package]` whose `[lib]` is a `cdylib`, built with
//!   `cargo build --release --target wasm32-wasip2`; `NAME` is the package name;
//! - any other language: a directory with a `function.toml` naming the command that builds the
//!   component and the file it writes (`NAME` is `name`, else the directory's name):
//!
//!   ```toml
//!   [build]
//!   command = "componentize-py -d ../../wit -w fnhost:function/function componentize app -o app.wasm"
//!   output = "app.wasm"
//!   ```
//!
//!   The command runs with `sh -c` in that directory, its output shown as it runs. It is skipped
//!   when `output` is newer than every other file of the project (like `make`).
//!
//! Every project is attempted even when one fails; the failures are returned with the reason
//! (a missing tool is named as such), so `fnhost dev` can serve the rest.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context, bail};
use serde::Deserialize;

const TARGET: &str = "wasm32-wasip2";

/// The per-project manifest of a function not written in Rust.
pub const MANIFEST: &str = "function.toml";

/// One function project found under the build directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Project {
    /// The function's name: the component is written to `OUT/NAME.wasm`.
    pub name: String,
    /// The project's directory.
    pub dir: PathBuf,
    /// How it is built.
    pub kind: Kind,
}

/// How a project is built.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `cargo build --target wasm32-wasip2` of this manifest.
    Rust { manifest: PathBuf },
    /// A shell command run in the project's directory, writing `output` (relative to it).
    Command { command: String, output: PathBuf },
}

/// `function.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionManifest {
    name: Option<String>,
    build: BuildSection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildSection {
    command: String,
    output: PathBuf,
}

/// What a build produced.
#[derive(Debug, Default)]
pub struct Report {
    /// Components written to the output directory.
    pub built: Vec<PathBuf>,
    /// Projects that failed, with the reason.
    pub failed: Vec<(Project, anyhow::Error)>,
}

impl Report {
    /// Fails, naming every project that did not build, when any did not.
    pub fn into_result(self) -> anyhow::Result<Vec<PathBuf>> {
        if self.failed.is_empty() {
            return Ok(self.built);
        }
        let names: Vec<&str> = self.failed.iter().map(|(p, _)| p.name.as_str()).collect();
        bail!(
            "{} of {} function(s) failed to build: {}",
            self.failed.len(),
            self.failed.len() + self.built.len(),
            names.join(", ")
        )
    }
}

/// Builds every function project under `dir` into `out`.
pub fn build(dir: &Path, out: &Path) -> anyhow::Result<Report> {
    build_into(dir, out, None)
}

/// [`build`] with cargo's target dir set (else cargo's own choice).
pub fn build_into(dir: &Path, out: &Path, target_dir: Option<&Path>) -> anyhow::Result<Report> {
    let projects = find_projects(dir)?;
    if projects.is_empty() {
        bail!(
            "no functions under {}: a Rust crate with `crate-type = [\"cdylib\"]`, or a directory \
             with a {MANIFEST}",
            dir.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut report = Report::default();
    for project in projects {
        match build_project(&project, out, target_dir) {
            Ok(dest) => report.built.push(dest),
            Err(e) => report.failed.push((project, e)),
        }
    }
    Ok(report)
}

/// Builds one project into `OUT/NAME.wasm` (replacing it only once the build succeeded; a
/// failure is printed with the tool's output and leaves the previous component in place).
pub fn build_project(
    project: &Project,
    out: &Path,
    target_dir: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    eprintln!("building {} ({})", project.name, project.dir.display());
    if matches!(project.kind, Kind::Rust { .. }) {
        ensure_target()?;
    }
    let built = match &project.kind {
        Kind::Rust { manifest } => cargo_build(manifest, target_dir)
            .with_context(|| format!("building {}", manifest.display())),
        Kind::Command { command, output } => run_command(&project.dir, command, output),
    };
    let dest = out.join(format!("{}.wasm", project.name));
    // Written beside, then renamed: a watching fnhost never loads half a file.
    let partial = out.join(format!(".{}.wasm.partial", project.name));
    let copied = built.and_then(|artifact| {
        std::fs::copy(&artifact, &partial)
            .and_then(|_| std::fs::rename(&partial, &dest))
            .with_context(|| format!("cannot copy {} to {}", artifact.display(), dest.display()))
    });
    match copied {
        Ok(_) => Ok(dest),
        Err(e) => {
            eprintln!("error: {} did not build: {e:#}", project.name);
            Err(e)
        }
    }
}

/// Whether a change at `relative` (a path under the source directory) can change a build:
/// not under a skipped directory (`target`, `node_modules`, dot directories...), not a
/// `.wasm` (build outputs).
pub fn is_source(relative: &Path) -> bool {
    let in_skipped = relative
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .any(|c| skipped_dir(Path::new(c.as_os_str())));
    !in_skipped && relative.extension().is_none_or(|e| e != "wasm")
}

/// Every function project under `dir` (three levels deep at most), sorted by name.
pub fn find_projects(dir: &Path) -> anyhow::Result<Vec<Project>> {
    let mut found = Vec::new();
    walk(dir, 0, &mut found)?;
    found.sort();
    for pair in found.windows(2) {
        if pair[0].name == pair[1].name {
            bail!(
                "two functions are named `{}`: {} and {}",
                pair[0].name,
                pair[0].dir.display(),
                pair[1].dir.display()
            );
        }
    }
    Ok(found)
}

fn walk(dir: &Path, depth: usize, found: &mut Vec<Project>) -> anyhow::Result<()> {
    let manifest = dir.join(MANIFEST);
    if manifest.is_file() {
        found.push(read_manifest(dir, &manifest)?);
        return Ok(());
    }
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
            found.push(Project {
                name: name.to_string(),
                dir: dir.to_owned(),
                kind: Kind::Rust { manifest },
            });
        }
    }
    if depth >= 3 {
        return Ok(());
    }
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() && !skipped_dir(&path) {
            walk(&path, depth + 1, found)?;
        }
    }
    Ok(())
}

/// Directories never searched for projects nor watched for changes.
fn skipped_dir(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.starts_with('.') || matches!(n, "target" | "node_modules" | "__pycache__")
    })
}

fn read_manifest(dir: &Path, manifest: &Path) -> anyhow::Result<Project> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let parsed: FunctionManifest =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", manifest.display()))?;
    let name = match parsed.name {
        Some(name) => name,
        None => dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .with_context(|| format!("{}: cannot name the function", manifest.display()))?,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "{}: name `{name}` must be letters, digits, `-` or `_`",
            manifest.display()
        );
    }
    if parsed.build.command.trim().is_empty() {
        bail!("{}: build.command is empty", manifest.display());
    }
    if parsed.build.output.is_absolute() {
        bail!(
            "{}: build.output `{}` must be relative to {}",
            manifest.display(),
            parsed.build.output.display(),
            dir.display()
        );
    }
    Ok(Project {
        name,
        dir: dir.to_owned(),
        kind: Kind::Command {
            command: parsed.build.command,
            output: parsed.build.output,
        },
    })
}

/// Runs a `function.toml` build command unless its output is up to date; returns the output.
fn run_command(dir: &Path, command: &str, output: &Path) -> anyhow::Result<PathBuf> {
    let artifact = dir.join(output);
    if let Ok(built) = std::fs::metadata(&artifact).and_then(|m| m.modified())
        && newest_source(dir, &artifact)?.is_none_or(|newest| newest <= built)
    {
        eprintln!("  {} is up to date", artifact.display());
        return Ok(artifact);
    }
    eprintln!("  $ {command}");
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        // Our stdout lists the components; the tool's chatter goes to stderr.
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .context("cannot run `sh`")?;
    let manifest = dir.join(MANIFEST);
    match status.code() {
        Some(0) => {}
        Some(127) => bail!(
            "a tool the build needs is not installed (`{command}` said: command not found; \
             set in {}); see {}",
            manifest.display(),
            dir.join("README.md").display()
        ),
        _ => bail!(
            "`{command}` failed ({status}; set in {})",
            manifest.display()
        ),
    }
    if !artifact.is_file() {
        bail!(
            "`{command}` succeeded but did not write build.output {} (set in {})",
            artifact.display(),
            manifest.display()
        );
    }
    Ok(artifact)
}

/// The newest modification time among the project's files, except `artifact` itself.
fn newest_source(dir: &Path, artifact: &Path) -> anyhow::Result<Option<SystemTime>> {
    let mut newest: Option<SystemTime> = None;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                if !skipped_dir(&path) {
                    stack.push(path);
                }
            } else if path != artifact && path.extension().is_none_or(|e| e != "wasm") {
                let modified = meta.modified()?;
                newest = Some(newest.map_or(modified, |n| n.max(modified)));
            }
        }
    }
    Ok(newest)
}

/// Installs the wasm32-wasip2 target with rustup when it is missing (asked once a process).
fn ensure_target() -> anyhow::Result<()> {
    static PRESENT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if PRESENT.get().is_none() {
        install_target()?;
        let _ = PRESENT.set(());
    }
    Ok(())
}

fn install_target() -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn project(root: &Path, dir: &str, manifest: &str) -> PathBuf {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST), manifest).unwrap();
        dir
    }

    #[test]
    fn a_function_toml_names_the_function_after_its_directory_unless_told() {
        let root = tempfile::tempdir().unwrap();
        project(
            root.path(),
            "js-hello",
            "[build]\ncommand = \"true\"\noutput = \"a.wasm\"\n",
        );
        project(
            root.path(),
            "py",
            "name = \"python-hello\"\n[build]\ncommand = \"true\"\noutput = \"b.wasm\"\n",
        );
        let names: Vec<String> = find_projects(root.path())
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["js-hello", "python-hello"]);
    }

    #[test]
    fn a_bad_function_toml_is_refused_with_its_path_and_key() {
        let root = tempfile::tempdir().unwrap();
        project(
            root.path(),
            "f",
            "[build]\ncomand = \"x\"\noutput = \"a.wasm\"\n",
        );
        let e = format!("{:#}", find_projects(root.path()).unwrap_err());
        assert!(e.contains("f/function.toml") && e.contains("comand"), "{e}");

        let root = tempfile::tempdir().unwrap();
        project(
            root.path(),
            "f",
            "[build]\ncommand = \"x\"\noutput = \"/abs.wasm\"\n",
        );
        let e = format!("{:#}", find_projects(root.path()).unwrap_err());
        assert!(
            e.contains("build.output `/abs.wasm` must be relative"),
            "{e}"
        );
    }

    #[test]
    fn two_projects_with_one_name_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let manifest = "name = \"same\"\n[build]\ncommand = \"true\"\noutput = \"a.wasm\"\n";
        project(root.path(), "a", manifest);
        project(root.path(), "b", manifest);
        let e = format!("{:#}", find_projects(root.path()).unwrap_err());
        assert!(e.contains("two functions are named `same`"), "{e}");
    }

    #[test]
    fn a_command_runs_once_then_is_skipped_until_a_source_changes() {
        let root = tempfile::tempdir().unwrap();
        let dir = project(
            root.path(),
            "f",
            "[build]\ncommand = \"echo x >> runs.log; cp src.txt out.wasm\"\noutput = \"out.wasm\"\n",
        );
        std::fs::write(dir.join("src.txt"), "v1").unwrap();
        let out = root.path().join("out");
        let runs = || {
            std::fs::read_to_string(dir.join("runs.log"))
                .unwrap()
                .lines()
                .count()
        };
        let build = || build(&dir, &out).unwrap().into_result().unwrap();

        assert_eq!(build(), [out.join("f.wasm")]);
        assert_eq!(std::fs::read_to_string(out.join("f.wasm")).unwrap(), "v1");
        // runs.log itself changed after out.wasm was written: touch the output past it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("out.wasm"), "v1").unwrap();
        build();
        assert_eq!(runs(), 1, "an up-to-date output is not rebuilt");

        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("src.txt"), "v2").unwrap();
        build();
        assert_eq!(runs(), 2);
        assert_eq!(std::fs::read_to_string(out.join("f.wasm")).unwrap(), "v2");
    }

    #[test]
    fn a_missing_tool_is_named_and_the_other_projects_still_build() {
        let root = tempfile::tempdir().unwrap();
        project(
            root.path(),
            "needs-tool",
            "[build]\ncommand = \"no-such-tool-fnhost --build\"\noutput = \"a.wasm\"\n",
        );
        project(
            root.path(),
            "fine",
            "[build]\ncommand = \"printf wasm > a.wasm\"\noutput = \"a.wasm\"\n",
        );
        project(
            root.path(),
            "silent",
            "[build]\ncommand = \"true\"\noutput = \"a.wasm\"\n",
        );
        let out = root.path().join("out");
        let report = build(root.path(), &out).unwrap();
        assert_eq!(report.built, [out.join("fine.wasm")]);
        let reasons: Vec<(String, String)> = report
            .failed
            .iter()
            .map(|(p, e)| (p.name.clone(), format!("{e:#}")))
            .collect();
        assert_eq!(reasons[0].0, "needs-tool");
        assert!(reasons[0].1.contains("not installed"), "{}", reasons[0].1);
        assert!(
            reasons[0].1.contains("needs-tool/function.toml"),
            "{}",
            reasons[0].1
        );
        assert_eq!(reasons[1].0, "silent");
        assert!(
            reasons[1].1.contains("did not write build.output"),
            "{}",
            reasons[1].1
        );
        let e = report.into_result().unwrap_err().to_string();
        assert_eq!(e, "2 of 3 function(s) failed to build: needs-tool, silent");
    }
}
