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
