//! Bad configuration is refused with the file, the place and the key.

use std::process::Command;

use crate::support::fnhost_bin;

fn serve_with(toml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("functions")).unwrap();
    let config = dir.path().join("fnhost.toml");
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(fnhost_bin())
        .arg("serve")
        .arg(dir.path().join("functions"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_is_refused_naming_file_line_and_key() {
    let (ok, stderr) = serve_with("[functions.hello]\ntimout = \"1s\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("fnhost.toml:2:1: unknown field `timout`"),
        "{stderr}"
    );
    assert!(stderr.contains("expected one of"), "{stderr}");
}

#[test]
fn bad_value_is_refused_quoting_it() {
    let (ok, stderr) = serve_with("[defaults]\nmemory = \"lots\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("fnhost.toml:2:10") && stderr.contains("invalid size \"lots\""),
        "{stderr}"
    );
}

/// The README's fnhost.toml reference is a file fnhost accepts: every key it shows exists and
/// every value is in range (the documentation cannot drift from the parser).
#[test]
fn the_readme_s_fnhost_toml_reference_parses() {
    let readme = std::fs::read_to_string(crate::support::repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## fnhost.toml\n")
        .nth(1)
        .expect("a `## fnhost.toml` section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a toml block in it");
    let config = fnhost::config::Config::from_str(block, std::path::Path::new("README.md"));
    let config = config.unwrap_or_else(|e| panic!("README fnhost.toml: {e}"));
    assert!(config.functions.contains_key("items"), "{block}");
    assert_eq!(config.server.trusted_proxies.len(), 1);
}
