//! Webhook secret and admin token: a configured value always wins; otherwise
//! one is generated on first start and kept in the data directory (mode 0600),
//! so a fresh install is never unauthenticated and restarts keep the same one.

use anyhow::Context;
use rand::RngCore;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const WEBHOOK_SECRET_FILE: &str = "webhook-secret";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Configured,
    Stored,
    Generated,
}

/// Returns the secret and where it came from. Never logs the value.
pub fn resolve(
    configured: Option<String>,
    data_dir: &Path,
    file: &str,
) -> anyhow::Result<(String, Source)> {
    if let Some(v) = configured.filter(|v| !v.is_empty()) {
        return Ok((v, Source::Configured));
    }
    let path = data_dir.join(file);
    if let Some(stored) = read(&path)? {
        return Ok((stored, Source::Stored));
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let value = hex::encode(bytes);
    write_private(&path, &value)?;
    Ok((value, Source::Generated))
}

/// Reads a stored secret, if there is one (the CLI uses this as a fallback).
pub fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        crate::private_fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{value}").with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

pub fn path_in(data_dir: &Path, file: &str) -> PathBuf {
    data_dir.join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (a, s1) = resolve(None, dir.path(), "x").unwrap();
        let (b, s2) = resolve(None, dir.path(), "x").unwrap();
        assert_eq!((s1, s2), (Source::Generated, Source::Stored));
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("x"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (c, s3) = resolve(Some("configured".into()), dir.path(), "x").unwrap();
        assert_eq!((c.as_str(), s3), ("configured", Source::Configured));
    }
}
