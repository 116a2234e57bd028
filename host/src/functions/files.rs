//! A function's bundled files (`files = "DIR"`), checked once at load: the directory exists,
//! and what it holds stays within `max_files` bytes and [`MAX_ENTRIES`] entries. The guest
//! gets it read-only as `/` (the engine opens it through cap-std's primitives, which refuse
//! `..`, absolute paths and symlinks leading out of it); this walk follows no symlink either.

use std::path::Path;

/// Entries (files, directories, links) one bundle may hold: the walk at load stays short.
pub const MAX_ENTRIES: usize = 100_000;

/// `settings` once their bundle (if any) passed [`check`].
pub fn checked(settings: super::Settings) -> Result<super::Settings, String> {
    if let Some((dir, cap)) = &settings.sandbox.files {
        check(dir, *cap)?;
    }
    Ok(settings)
}

/// Checks `dir` against `cap` bytes; the error names the directory and the limit.
pub fn check(dir: &Path, cap: u64) -> Result<(), String> {
    let shown = dir.display();
    let meta = std::fs::metadata(dir).map_err(|e| format!("files = {shown:?}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("files = {shown:?} is not a directory"));
    }
    let (mut bytes, mut entries) = (0u64, 0usize);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let list =
            std::fs::read_dir(&next).map_err(|e| format!("files: {}: {e}", next.display()))?;
        for entry in list {
            let entry = entry.map_err(|e| format!("files: {}: {e}", next.display()))?;
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(format!(
                    "files = {shown:?} holds more than {MAX_ENTRIES} entries"
                ));
            }
            // `file_type` does not follow symlinks.
            let kind = entry.file_type().map_err(|e| format!("files: {e}"))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                bytes += entry.metadata().map_or(0, |m| m.len());
            }
        }
        if bytes > cap {
            return Err(format!(
                "files = {shown:?} holds more than max_files = {cap} bytes; raise max_files \
                 or bundle less"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_shape_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.json"), vec![b'x'; 600]).unwrap();
        std::fs::write(dir.path().join("b.txt"), vec![b'y'; 600]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        assert_eq!(check(dir.path(), 1200), Ok(()));
        let e = check(dir.path(), 1000).unwrap_err();
        assert!(e.contains("holds more than max_files = 1000 bytes"), "{e}");
        let e = check(&dir.path().join("b.txt"), 1000).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        let e = check(&dir.path().join("none"), 1000).unwrap_err();
        assert!(e.contains("none"), "{e}");
    }
}
