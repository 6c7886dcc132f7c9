//! `dump.json`: the apps `herder save` recorded, for `herder resurrect` and
//! `herder daemon --resurrect` (at boot). Unlike `state.json`, which follows every change for
//! crash recovery, the dump changes only when the user saves.
//!
//! The file is versioned, written atomically (temporary file, fsync, rename, fsync of the
//! directory) with mode 0600 (app environments may hold secrets), and the previous save is
//! kept as `dump.json.bak`. A dump that cannot be read (truncated by a full disk, edited by
//! hand, written by a newer herder) is an error naming the file, and loading falls back to
//! the `.bak`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::write_atomic;
use crate::protocol::AppSpec;

/// The format version this herder writes and reads.
pub const DUMP_VERSION: u32 = 1;

/// The content of `dump.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    /// Format version ([`DUMP_VERSION`]).
    pub version: u32,
    /// The herder that wrote it, for the curious.
    pub herder_version: String,
    /// Unix time of the save, ms.
    pub saved_at_ms: u64,
    /// The apps in id order.
    pub apps: Vec<DumpedApp>,
}

/// One saved app: its whole spec (environment included) and whether it was running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpedApp {
    pub spec: AppSpec,
    /// Some instance was running (or waiting to restart) when saved: `resurrect` starts it.
    /// Otherwise it comes back `stopped`.
    pub running: bool,
}

impl Dump {
    pub fn new(apps: Vec<DumpedApp>) -> Dump {
        let saved_at_ms = crate::protocol::now_ms();
        Dump {
            version: DUMP_VERSION,
            herder_version: crate::protocol::PROGRAM_VERSION.to_string(),
            saved_at_ms,
            apps,
        }
    }
}

/// The backup of `path`: `dump.json.bak`.
pub fn backup_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// Why a dump file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("cannot read {}: {why}", .path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error("{} is corrupt (truncated or not herder's JSON): {why}", .path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("{} has format version {found}; this herder reads version {DUMP_VERSION}\nhint: it was written by a newer herder; save again with this one, or upgrade", .path.display())]
    Version { path: PathBuf, found: u64 },
}

/// Read and check one dump file.
pub fn read(path: &Path) -> Result<Dump, DumpError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DumpError::Missing(path.into())),
        Err(e) => return Err(DumpError::Unreadable { path: path.into(), why: e.to_string() }),
    };
    parse(&bytes, path)
}

/// A dump file's bytes (read from `path`, which the errors name), checked as [`read`] does.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Dump, DumpError> {
    let corrupt = |why: String| DumpError::Corrupt { path: path.into(), why };
    // The version first: a newer format is not corruption, and says so.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(DUMP_VERSION) => {}
        Some(found) => return Err(DumpError::Version { path: path.into(), found }),
        None => return Err(corrupt("it has no `version` field".into())),
    }
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

/// A dump read for `resurrect`.
#[derive(Debug)]
pub struct Loaded {
    pub dump: Dump,
    /// The file it came from.
    pub source: PathBuf,
    /// Why `dump.json` itself was not used, when the `.bak` was.
    pub fallback: Option<DumpError>,
}

/// Read `path`, or its `.bak` when `path` is missing or unusable. The error is about `path`
/// (with the `.bak`'s own failure added when there was one).
pub fn load(path: &Path) -> Result<Loaded, String> {
    let primary = match read(path) {
        Ok(dump) => return Ok(Loaded { dump, source: path.into(), fallback: None }),
        Err(e) => e,
    };
    let bak = backup_of(path);
    match read(&bak) {
        Ok(dump) => Ok(Loaded { dump, source: bak, fallback: Some(primary) }),
        Err(DumpError::Missing(_)) => Err(primary.to_string()),
        Err(e) => Err(format!("{primary}\nthe previous save cannot be used either: {e}")),
    }
}

/// What [`save`] did.
#[derive(Debug)]
pub struct Saved {
    /// The previous save, kept as `.bak` (none when there was no usable one).
    pub backup: Option<PathBuf>,
}

/// Write `dump` to `path`, keeping the previous save as `path.bak`. A previous file that is
/// not a usable dump is not made the backup: the older `.bak` stays.
pub fn save(path: &Path, dump: &Dump) -> std::io::Result<Saved> {
    let bytes = serde_json::to_vec_pretty(dump).map_err(std::io::Error::other)?;
    let bak = backup_of(path);
    let backup = match read(path) {
        Ok(_) => {
            // Copied, not renamed, so that `path` exists at every moment.
            write_atomic(&bak, &std::fs::read(path)?)?;
            Some(bak)
        }
        Err(DumpError::Missing(_)) => bak.exists().then_some(bak),
        Err(e) => {
            tracing::warn!(error = %e, "the previous dump is not kept as a backup");
            bak.exists().then_some(bak)
        }
    };
    write_atomic(path, &bytes)?;
    Ok(Saved { backup })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dump(names: &[&str]) -> Dump {
        let apps = names
            .iter()
            .map(|n| {
                let mut spec = AppSpec::new(*n, "/bin/sleep", PathBuf::from("/"));
                std::sync::Arc::make_mut(&mut spec.env).insert("SECRET_TOKEN".into(), format!("t-{n}"));
                DumpedApp { spec, running: true }
            })
            .collect();
        Dump::new(apps)
    }

    #[test]
    fn saves_privately_and_keeps_the_previous_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        let first = dump(&["a"]);
        assert!(save(&path, &first).unwrap().backup.is_none());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = dump(&["a", "b"]);
        let saved = save(&path, &second).unwrap();
        assert_eq!(saved.backup.as_deref(), Some(dir.path().join("dump.json.bak").as_path()));
        assert_eq!(read(&path).unwrap(), second);
        assert_eq!(read(&backup_of(&path)).unwrap(), first);
        let mode = std::fs::metadata(backup_of(&path)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join(".dump.json.tmp").exists(), "no temporary file is left");
    }

    #[test]
    fn a_truncated_dump_is_named_and_the_backup_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        save(&path, &dump(&["old"])).unwrap();
        save(&path, &dump(&["new"])).unwrap();
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = read(&path).unwrap_err();
        assert!(matches!(err, DumpError::Corrupt { .. }));
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.source, backup_of(&path));
        assert_eq!(loaded.dump.apps[0].spec.name, "old");
        assert!(matches!(loaded.fallback, Some(DumpError::Corrupt { .. })));
    }

    #[test]
    fn a_corrupt_dump_does_not_replace_a_good_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        save(&path, &dump(&["good"])).unwrap();
        save(&path, &dump(&["good", "too"])).unwrap();
        std::fs::write(&path, b"garbage").unwrap();
        save(&path, &dump(&["next"])).unwrap();
        assert_eq!(read(&backup_of(&path)).unwrap().apps[0].spec.name, "good");
    }

    #[test]
    fn versions_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        assert!(matches!(load(&path), Err(e) if e.contains("does not exist")));
        std::fs::write(&path, br#"{"version": 99, "apps": []}"#).unwrap();
        let err = read(&path).unwrap_err();
        assert!(matches!(err, DumpError::Version { found: 99, .. }), "{err}");
        std::fs::write(&path, br#"{"apps": []}"#).unwrap();
        assert!(matches!(read(&path), Err(DumpError::Corrupt { .. })));
        std::fs::write(backup_of(&path), b"{").unwrap();
        let both = load(&path).unwrap_err();
        assert!(both.contains("dump.json is corrupt") && both.contains("dump.json.bak"), "{both}");
    }
}
