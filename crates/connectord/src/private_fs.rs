//! Files only the service's user may read: the data directory holds raw
//! delivery bodies, synced documents and generated secrets, so what
//! connectord creates there is 0700 (directories) and 0600 (files), whatever
//! the umask. SQLite creates `-wal` and `-shm` with the mode of the database
//! file, so creating that file first is enough for all three.

use std::path::Path;

/// `create_dir_all`, with every directory it creates 0700. Existing
/// directories are left as they are (a data directory may be shared on purpose).
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Creates `path` empty with mode 0600 if it does not exist; an existing file
/// that others can read is narrowed to 0600 (it was created by an earlier
/// version, or by hand). Returns whether it had to be narrowed.
pub fn ensure_private_file(path: &Path) -> std::io::Result<bool> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?;
    narrow(path)
}

/// Removes group and other permissions from an existing file.
pub fn narrow(path: &Path) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_private_and_old_files_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);

        let f = dir.join("new.db");
        assert!(!ensure_private_file(&f).unwrap());
        assert_eq!(mode(&f), 0o600);

        let old = dir.join("old.db");
        std::fs::write(&old, b"x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ensure_private_file(&old).unwrap());
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"x", "content kept");
    }
}
