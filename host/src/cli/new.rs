//! `fnhost new`: a function project from the templates built into the binary
//! (`host/templates/<lang>/`), which `fnhost build` and `fnhost dev` build and serve unchanged.
//!
//! Raw arguments become a checked [`Plan`] (name, language, settings, where the Rust SDK is);
//! [`render`] turns a plan into files (pure, tested here); [`run`] writes them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::config::pattern::Pattern;

/// `fnhost new` arguments.
#[derive(clap::Args)]
#[command(after_help = "\
The project is created in DIR, or in ./NAME without DIR (like `cargo new` and \
`spin new --output`); DIR must be missing or empty. `fnhost dev DIR` then builds and serves \
it, and `fnhost invoke NAME` calls it.

The Rust template depends on the fnhost-sdk crate by path (it is not on crates.io): \
--sdk DIR, else $FNHOST_SDK, else guest-sdk/ of the fnhost clone this binary was built from.")]
pub struct NewArgs {
    /// The function's name: lower-case letters, digits, `-` and `_`, starting with a letter
    /// (a `-background` suffix alone makes a background function)
    name: String,
    /// Directory of the new project [default: ./NAME]
    dir: Option<PathBuf>,
    /// Language of the template
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Which WASI HTTP world the function speaks: 0.2 (`wasi:http/proxy`) or 0.3
    /// (`wasi:http/service`, an async handler; Rust and Python)
    #[arg(long, value_enum, default_value_t = Wasi::P2)]
    wasi: Wasi,
    /// Make a background function (answered 202, run detached, retried), declared in the
    /// function's config export
    #[arg(long)]
    background: bool,
    /// Serve the function at this route instead of /.netlify/functions/NAME (Netlify's
    /// `config.path`; `:param` segments and a trailing `*` allowed); repeatable
    #[arg(long = "path", value_name = "ROUTE")]
    paths: Vec<String>,
    /// The fnhost-sdk crate (guest-sdk/ of an fnhost clone), for the Rust template
    /// [default: $FNHOST_SDK, else the clone this binary was built from]
    #[arg(long, env = "FNHOST_SDK", value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// Template languages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the fnhost-sdk crate (cargo, wasm32-wasip2)
    Rust,
    /// JavaScript with jco componentize (node and npm)
    Js,
    /// Python with componentize-py
    Python,
}

/// The WASI HTTP world a template speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Wasi {
    /// WASI 0.2: `wasi:http/proxy` (the `fnhost:function/function` world)
    #[value(name = "0.2")]
    P2,
    /// WASI 0.3: `wasi:http/service` (the `fnhost:function/service` world)
    #[value(name = "0.3")]
    P3,
}

/// What to create, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The function's name.
    pub name: String,
    /// The template.
    pub lang: Lang,
    /// The WASI HTTP world.
    pub wasi: Wasi,
    /// Declared background in the config export.
    pub background: bool,
    /// Declared routes (each a valid pattern).
    pub paths: Vec<String>,
    /// Absolute path of the SDK crate (Rust only).
    pub sdk: Option<PathBuf>,
}

/// Why a function name was refused; the message quotes it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid function name {name:?}: {why}")]
pub struct NameError {
    name: String,
    why: &'static str,
}

/// Rust keywords and the built-in crates a package may not be named after.
const RUST_RESERVED: &str = "\
    as async await break const continue crate dyn else enum extern false fn for if impl in let \
    loop match mod move mut pub ref return self static struct super trait true type unsafe use \
    where while abstract become box do final gen macro override priv try typeof unsized virtual \
    yield core std alloc proc_macro test";

/// A function name every template and fnhost accept: the file name `NAME.wasm`, the route
/// `/.netlify/functions/NAME`, a Rust package, an npm package and a WIT package.
pub fn validate_name(name: &str, lang: Lang) -> Result<(), NameError> {
    let refuse = |why| {
        Err(NameError {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > 64 {
        return refuse("longer than 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return refuse("it must start with a lower-case letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return refuse("only lower-case letters, digits, `-` and `_` are allowed");
    }
    if name.ends_with(['-', '_']) || name.contains("--") || name.contains("__") {
        return refuse("`-` and `_` must sit between letters or digits");
    }
    if lang == Lang::Rust
        && RUST_RESERVED
            .split_whitespace()
            .any(|w| w == name.replace('-', "_"))
    {
        return refuse("it is a Rust keyword or a built-in crate's name");
    }
    Ok(())
}

/// Runs `fnhost new`.
pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    validate_name(&args.name, args.lang)?;
    if (args.lang, args.wasi) == (Lang::Js, Wasi::P3) {
        bail!(
            "--lang js --wasi 0.3: jco cannot build a WASI 0.3 HTTP component yet (its \
             componentize-js aborts on wasi:http/service@0.3.0); JavaScript functions speak \
             WASI 0.2 (drop --wasi)"
        );
    }
    for path in &args.paths {
        check_route(path)?;
    }
    let sdk = match args.lang {
        Lang::Rust => Some(find_sdk(args.sdk.as_deref())?),
        Lang::Js | Lang::Python => None,
    };
    let plan = Plan {
        name: args.name,
        lang: args.lang,
        wasi: args.wasi,
        background: args.background,
        paths: args.paths,
        sdk,
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&plan.name));
    ensure_empty(&dir)?;
    for (file, text) in render(&plan) {
        let path = dir.join(&file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let lang = match plan.lang {
        Lang::Rust => "Rust",
        Lang::Js => "JavaScript",
        Lang::Python => "Python",
    };
    let mode = if plan.background || plan.name.ends_with("-background") {
        "background"
    } else {
        "sync"
    };
    let wasi = match plan.wasi {
        Wasi::P2 => "WASI 0.2",
        Wasi::P3 => "WASI 0.3",
    };
    println!(
        "created {} ({lang}, {mode}, {wasi}) in {}",
        plan.name,
        dir.display()
    );
    if plan.lang == Lang::Python {
        println!("  needs componentize-py on PATH: pip install -r requirements.txt");
    }
    println!("next:");
    println!(
        "  fnhost dev {}      # build, serve on http://127.0.0.1:8888",
        dir.display()
    );
    match plan.paths.first() {
        Some(path) if !path.contains([':', '*']) => {
            println!("  fnhost invoke {path}")
        }
        Some(_) => println!("  fnhost invoke /YOUR/PATH"),
        None => println!("  fnhost invoke {}", plan.name),
    }
    Ok(ExitCode::SUCCESS)
}

/// A declared route must parse as fnhost parses routes, and may not shadow fnhost's own.
fn check_route(path: &str) -> anyhow::Result<()> {
    Pattern::parse(path)?;
    if crate::ids::own_path(path).is_some() {
        bail!(
            "invalid path {path:?}: {} belongs to fnhost",
            crate::ids::API_PREFIX
        );
    }
    Ok(())
}

/// Refuses to write into a file or a non-empty directory.
fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty: not overwriting it (pick another NAME or DIR)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() => bail!("{} exists and is not a directory", dir.display()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// `guest-sdk/` of the clone this binary was built from.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

/// The SDK crate for the Rust template: `given` (`--sdk` or `$FNHOST_SDK`), else the clone
/// this binary was built from; an absolute path to a directory whose Cargo.toml is fnhost-sdk.
fn find_sdk(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (dir, source) = match given {
        Some(dir) => (dir.to_owned(), "--sdk / $FNHOST_SDK"),
        None => {
            let built_from = PathBuf::from(BUILT_FROM_SDK);
            if !built_from.join("Cargo.toml").is_file() {
                bail!(
                    "cannot find the fnhost-sdk crate (it is not on crates.io): this binary was \
                     built from a clone that is gone ({}); pass --sdk DIR or set FNHOST_SDK to \
                     guest-sdk/ in a clone of fnhost",
                    built_from.display()
                );
            }
            (built_from, "the clone fnhost was built from")
        }
    };
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "{} (from {source}) is not the fnhost-sdk crate: cannot read {}",
            dir.display(),
            manifest.display()
        )
    })?;
    let is_sdk = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|doc| {
            doc.get("package")?
                .get("name")?
                .as_str()
                .map(|n| n == "fnhost-sdk")
        })
        .unwrap_or(false);
    if !is_sdk {
        bail!(
            "{} (from {source}) is not the fnhost-sdk crate: its Cargo.toml names another \
             package; pass guest-sdk/ of an fnhost clone",
            dir.display()
        );
    }
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// One file of a template: its path in the project and its text with `{{placeholders}}`.
type Template = (&'static str, &'static str);

const RUST: &[Template] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/rust/gitignore.tmpl"),
    ),
];

const JS: &[Template] = &[
    (
        "package.json",
        include_str!("../../templates/js/package.json.tmpl"),
    ),
    ("app.js", include_str!("../../templates/js/app.js.tmpl")),
    (
        "function.toml",
        include_str!("../../templates/js/function.toml.tmpl"),
    ),
    (
        "wit/world.wit",
        include_str!("../../templates/js/wit/world.wit.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/js/gitignore.tmpl"),
    ),
    // Shared with examples/js-hello, so the template builds with the toolchain the example is
    // tested with: the build-time workaround and the WASI 0.2.10 WIT (its README says why).
    (
        "preopen.mjs",
        include_str!("../../../examples/js-hello/preopen.mjs"),
    ),
    (
        "wit/deps/cli.wit",
        include_str!("../../../examples/js-hello/wit/deps/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../examples/js-hello/wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../examples/js-hello/wit/deps/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../examples/js-hello/wit/deps/http.wit"),
    ),
    (
        "wit/deps/io.wit",
        include_str!("../../../examples/js-hello/wit/deps/io.wit"),
    ),
    (
        "wit/deps/random.wit",
        include_str!("../../../examples/js-hello/wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../examples/js-hello/wit/deps/sockets.wit"),
    ),
];

/// The lock file of examples/js-hello: the JS template installs exactly these versions.
const JS_LOCK: &str = include_str!("../../../examples/js-hello/package-lock.json");

const PYTHON: &[Template] = &[
    ("app.py", include_str!("../../templates/python/app.py.tmpl")),
    (
        "function.toml",
        include_str!("../../templates/python/function.toml.tmpl"),
    ),
    (
        "requirements.txt",
        include_str!("../../templates/python/requirements.txt.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/python/gitignore.tmpl"),
    ),
    // The one copy of fnhost's WIT (wit/ at the repository root).
    ("wit/world.wit", FNHOST_WORLD),
    (
        "wit/deps/cli.wit",
        include_str!("../../../wit/deps/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../wit/deps/http.wit"),
    ),
    ("wit/deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "wit/deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
    // WASI 0.3, for the `service` world of the same file.
    (
        "wit/deps/cli-0.3.wit",
        include_str!("../../../wit/deps/cli-0.3.wit"),
    ),
    (
        "wit/deps/clocks-0.3.wit",
        include_str!("../../../wit/deps/clocks-0.3.wit"),
    ),
    (
        "wit/deps/filesystem-0.3.wit",
        include_str!("../../../wit/deps/filesystem-0.3.wit"),
    ),
    (
        "wit/deps/http-0.3.wit",
        include_str!("../../../wit/deps/http-0.3.wit"),
    ),
    (
        "wit/deps/random-0.3.wit",
        include_str!("../../../wit/deps/random-0.3.wit"),
    ),
    (
        "wit/deps/sockets-0.3.wit",
        include_str!("../../../wit/deps/sockets-0.3.wit"),
    ),
];

/// The main file of the Rust and Python templates for WASI 0.3 (`--wasi 0.3`), in place of
/// `src/lib.rs` and `app.py`.
const RUST_P3_LIB: &str = include_str!("../../templates/rust/src/lib-p3.rs.tmpl");
const PYTHON_P3_APP: &str = include_str!("../../templates/python/app-p3.py.tmpl");

/// fnhost's world: package `fnhost:function` with the `config` interface and the world.
const FNHOST_WORLD: &str = include_str!("../../../wit/world.wit");

/// Where the world starts in [`FNHOST_WORLD`]: what comes before it is the package and its
/// `config` interface, which the JS template's 0.2.10 WIT set takes alone.
const WORLD_MARKER: &str = "/// The world an fnhost function targets";

/// The files of the project `plan` describes, paths relative to its directory.
pub fn render(plan: &Plan) -> Vec<(PathBuf, String)> {
    let route = match plan.paths.as_slice() {
        [] => format!("/.netlify/functions/{}", plan.name),
        paths => paths.join(", "),
    };
    let quoted_paths = serde_json::to_string(&plan.paths).expect("strings serialise");
    let mut rust_settings = String::new();
    if plan.background {
        rust_settings.push_str(".background(true)");
    }
    for path in &plan.paths {
        rust_settings.push_str(&format!(".path({path:?})"));
    }
    let sdk = plan
        .sdk
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let values: &[(&str, String)] = &[
        ("name", plan.name.clone()),
        ("route", route),
        ("sdk", sdk.replace('\\', "\\\\").replace('"', "\\\"")),
        ("rust_settings", rust_settings),
        (
            "py_background",
            if plan.background { "True" } else { "None" }.to_string(),
        ),
        ("py_paths", quoted_paths.clone()),
        (
            "js_background",
            if plan.background { "true" } else { "undefined" }.to_string(),
        ),
        ("js_paths", quoted_paths),
        ("fnhost_version", fnhost_version().to_string()),
        (
            "sdk_features",
            match plan.wasi {
                Wasi::P2 => String::new(),
                Wasi::P3 => r#", features = ["p3"]"#.to_string(),
            },
        ),
        (
            "py_world",
            match plan.wasi {
                Wasi::P2 => "function",
                Wasi::P3 => "service",
            }
            .to_string(),
        ),
    ];
    let fill = |text: &str| {
        let mut out = text.to_string();
        for (key, value) in values {
            out = out.replace(&format!("{{{{{key}}}}}"), value);
        }
        out
    };
    let templates = match plan.lang {
        Lang::Rust => RUST,
        Lang::Js => JS,
        Lang::Python => PYTHON,
    };
    let mut files: Vec<(PathBuf, String)> = templates
        .iter()
        .map(|&(path, text)| {
            let text = match (plan.wasi, path) {
                (Wasi::P3, "src/lib.rs") => RUST_P3_LIB,
                (Wasi::P3, "app.py") => PYTHON_P3_APP,
                _ => text,
            };
            (PathBuf::from(path), fill(text))
        })
        .collect();
    if plan.lang == Lang::Js {
        files.push(("package-lock.json".into(), js_lock(&plan.name)));
        files.push(("wit/deps/fnhost.wit".into(), config_interface().to_string()));
    }
    files
}

/// The version of the `fnhost:function` package in wit/world.wit (`package fnhost:function@V;`).
fn fnhost_version() -> &'static str {
    FNHOST_WORLD
        .lines()
        .find_map(|l| l.strip_prefix("package fnhost:function@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("wit/world.wit starts with `package fnhost:function@VERSION;`")
}

/// examples/js-hello's lock file, renamed to `name`: the same locked packages.
fn js_lock(name: &str) -> String {
    let mut lock: serde_json::Value =
        serde_json::from_str(JS_LOCK).expect("examples/js-hello/package-lock.json is JSON");
    lock["name"] = name.into();
    lock["packages"][""]["name"] = name.into();
    let mut text = serde_json::to_string_pretty(&lock).expect("JSON serialises");
    text.push('\n');
    text
}

/// The `fnhost:function` package with only its `config` interface (no world, which would
/// need the WASI 0.2.12 packages).
fn config_interface() -> &'static str {
    let end = FNHOST_WORLD
        .find(WORLD_MARKER)
        .expect("wit/world.wit has the world's doc comment");
    &FNHOST_WORLD[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(lang: Lang, background: bool, paths: &[&str]) -> Plan {
        Plan {
            name: "my-fn".into(),
            lang,
            wasi: Wasi::P2,
            background,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            sdk: Some(PathBuf::from("/opt/fnhost/guest-sdk")),
        }
    }

    fn file(files: &[(PathBuf, String)], path: &str) -> String {
        files
            .iter()
            .find(|(p, _)| p == Path::new(path))
            .unwrap_or_else(|| panic!("no {path}"))
            .1
            .clone()
    }

    #[test]
    fn names_are_checked_and_quoted_in_the_error() {
        for ok in ["hello", "my-fn", "report_2-background", "a1"] {
            assert_eq!(validate_name(ok, Lang::Rust), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Hello", "start with a lower-case letter"),
            ("2fa", "start with a lower-case letter"),
            ("my fn", "only lower-case letters"),
            ("a/b", "only lower-case letters"),
            ("../x", "start with a lower-case letter"),
            ("hello-", "between letters or digits"),
            ("a--b", "between letters or digits"),
            ("fn", "Rust keyword"),
            ("test", "Rust keyword"),
        ] {
            let e = validate_name(bad, Lang::Rust).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("invalid function name {bad:?}: ")) && e.contains(why),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(validate_name("fn", Lang::Python), Ok(()));
        assert!(validate_name(&"a".repeat(65), Lang::Js).is_err());
    }

    #[test]
    fn routes_are_checked_like_fnhost_checks_them() {
        assert!(check_route("/api/items/:id").is_ok());
        assert!(check_route("/files/*").is_ok());
        let e = check_route("api").unwrap_err().to_string();
        assert!(
            e.contains("\"api\"") && e.contains("must start with `/`"),
            "{e}"
        );
        let e = check_route("/.fnhost/x").unwrap_err().to_string();
        assert!(e.contains("belongs to fnhost"), "{e}");
    }

    #[test]
    fn the_rust_template_names_the_package_the_sdk_and_the_settings() {
        let files = render(&plan(Lang::Rust, true, &["/api/\"q\""]));
        let cargo = file(&files, "Cargo.toml");
        let doc: toml::Table = toml::from_str(&cargo).unwrap();
        assert_eq!(doc["package"]["name"].as_str(), Some("my-fn"));
        assert_eq!(
            doc["dependencies"]["fnhost-sdk"]["path"].as_str(),
            Some("/opt/fnhost/guest-sdk")
        );
        assert!(doc.contains_key("workspace"), "its own workspace");
        let lib = file(&files, "src/lib.rs");
        assert!(lib.contains(r#"b"Hello from my-fn!\n""#), "{lib}");
        assert!(
            lib.contains(r#"Settings::new().background(true).path("/api/\"q\"")"#),
            "{lib}"
        );
        assert!(!lib.contains("{{") && !cargo.contains("{{"));
        let plain = file(&render(&plan(Lang::Rust, false, &[])), "src/lib.rs");
        assert!(plain.contains("Settings::new()\n"), "{plain}");
    }

    #[test]
    fn the_wasi_0_3_templates_export_the_service_world() {
        let p3 = |lang| {
            render(&Plan {
                wasi: Wasi::P3,
                ..plan(lang, false, &["/hi"])
            })
        };
        let rust = p3(Lang::Rust);
        let cargo: toml::Table = toml::from_str(&file(&rust, "Cargo.toml")).unwrap();
        let sdk = &cargo["dependencies"]["fnhost-sdk"];
        assert_eq!(sdk["features"].as_array().unwrap()[0].as_str(), Some("p3"));
        let lib = file(&rust, "src/lib.rs");
        assert!(lib.contains("async fn handle(") && lib.contains("fnhost_sdk::service!(handle"));
        assert!(lib.contains(r#"Settings::new().path("/hi")"#), "{lib}");
        let python = p3(Lang::Python);
        assert!(file(&python, "app.py").contains("async def handle(self, request: Request)"));
        assert!(file(&python, "function.toml").contains("-w fnhost:function/service "));
        let plain = render(&plan(Lang::Python, false, &[]));
        assert!(file(&plain, "function.toml").contains("-w fnhost:function/function "));
        assert!(!file(&render(&plan(Lang::Rust, false, &[])), "Cargo.toml").contains("p3"));
        for (path, text) in rust.iter().chain(&python) {
            assert!(!text.contains("{{"), "{} has a placeholder", path.display());
        }
    }

    #[test]
    fn the_js_template_reuses_the_examples_locked_toolchain() {
        let files = render(&plan(Lang::Js, true, &["/x"]));
        let package: serde_json::Value =
            serde_json::from_str(&file(&files, "package.json")).unwrap();
        let example: serde_json::Value =
            serde_json::from_str(include_str!("../../../examples/js-hello/package.json")).unwrap();
        assert_eq!(package["devDependencies"], example["devDependencies"]);
        let lock: serde_json::Value =
            serde_json::from_str(&file(&files, "package-lock.json")).unwrap();
        let example_lock: serde_json::Value = serde_json::from_str(JS_LOCK).unwrap();
        assert_eq!(lock["name"], "my-fn");
        assert_eq!(lock["packages"][""]["name"], "my-fn");
        assert_eq!(
            lock["packages"][""]["devDependencies"],
            package["devDependencies"]
        );
        assert_eq!(
            lock["packages"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.is_empty())
                .collect::<Vec<_>>(),
            example_lock["packages"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.is_empty())
                .collect::<Vec<_>>(),
        );
        let app = file(&files, "app.js");
        assert!(app.contains("background: true,") && app.contains(r#"paths: ["/x"],"#));
        let interface = file(&files, "wit/deps/fnhost.wit");
        assert!(interface.starts_with("package fnhost:function@"));
        assert!(interface.contains("interface config") && !interface.contains("world"));
        for (path, text) in &files {
            assert!(
                !text.contains("{{"),
                "{} has a placeholder left",
                path.display()
            );
        }
    }

    #[test]
    fn the_python_template_declares_its_settings_and_carries_the_wit() {
        let files = render(&plan(Lang::Python, false, &["/a/:id"]));
        let app = file(&files, "app.py");
        assert!(app.contains("background=None,") && app.contains(r#"paths=["/a/:id"],"#));
        let manifest: toml::Table = toml::from_str(&file(&files, "function.toml")).unwrap();
        assert_eq!(manifest["name"].as_str(), Some("my-fn"));
        assert_eq!(
            file(&files, "requirements.txt"),
            include_str!("../../../examples/python-hello/requirements.txt")
        );
        assert!(file(&files, "wit/world.wit").contains("world function"));
        assert!(
            files
                .iter()
                .any(|(p, _)| p == Path::new("wit/deps/http.wit"))
        );
    }

    #[test]
    fn a_non_empty_directory_is_not_overwritten() {
        let root = tempfile::tempdir().unwrap();
        assert!(ensure_empty(&root.path().join("missing")).is_ok());
        assert!(ensure_empty(root.path()).is_ok());
        std::fs::write(root.path().join("x"), "").unwrap();
        let e = ensure_empty(root.path()).unwrap_err().to_string();
        assert!(e.contains("exists and is not empty"), "{e}");
        let e = ensure_empty(&root.path().join("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn the_sdk_must_be_the_fnhost_sdk_crate() {
        let found = find_sdk(None).unwrap();
        assert!(found.is_absolute() && found.ends_with("guest-sdk"));
        let root = tempfile::tempdir().unwrap();
        let e = format!("{:#}", find_sdk(Some(root.path())).unwrap_err());
        assert!(e.contains("is not the fnhost-sdk crate"), "{e}");
        std::fs::write(
            root.path().join("Cargo.toml"),
            "[package]\nname = \"other\"\n",
        )
        .unwrap();
        let e = format!("{:#}", find_sdk(Some(root.path())).unwrap_err());
        assert!(e.contains("names another package"), "{e}");
    }
}
