//! `state.json`: every app's spec and every instance's pid, start time and cgroup, so that the
//! next daemon can end what is left of this one's instances and start each app again exactly
//! once. Written atomically (temp file, fsync, rename, fsync of the directory), mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::protocol::{AppSpec, InstanceInfo};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedState {
    pub version: u32,
    pub next_id: u32,
    pub apps: Vec<PersistedApp>,
    /// Where the metrics endpoint listens (`herder metrics --listen`), to listen there again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where the web dashboard listens (`herder web --listen`), to listen there again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_listen: Option<std::net::SocketAddr>,
    /// The kernel's boot id when this was written: after a reboot, the pids and start times
    /// recorded here may belong to unrelated processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), if the kernel tells it.
pub fn boot_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .clone()
}

/// Whether the state written during boot `recorded` is of the boot `current`. Unknown on either
/// side (a state file of an older herder, a kernel that does not tell) counts as the same
/// boot: the recorded start times still tell a reused pid.
pub fn same_boot(recorded: Option<&str>, current: Option<&str>) -> bool {
    match (recorded, current) {
        (Some(r), Some(c)) => r == c,
        _ => true,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedApp {
    pub id: u32,
    /// Shared with the registry: persisting a thousand apps copies no spec.
    pub spec: std::sync::Arc<AppSpec>,
    pub instances: Vec<InstanceInfo>,
}

/// Write `bytes` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Write what `fill` writes to `path` atomically with mode 0600, streamed through a buffer
/// (a large state is never held whole in memory).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    let written = (|| {
        let f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
        let mut w = io::BufWriter::with_capacity(64 * 1024, f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A full disk fails the write half way: no truncated temporary file stays behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Read the state file; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<PersistedState>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    parse(&bytes, path).map(Some)
}

/// A state file's bytes (read from `path`, which the errors name).
pub fn parse(bytes: &[u8], path: &Path) -> Result<PersistedState, String> {
    let state: PersistedState =
        serde_json::from_slice(bytes).map_err(|e| format!("{} is corrupt: {e}", path.display()))?;
    if state.version != STATE_VERSION {
        return Err(format!(
            "{} has version {}, this daemon reads {STATE_VERSION}",
            path.display(),
            state.version
        ));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let st = PersistedState {
            version: STATE_VERSION,
            next_id: 3,
            metrics_listen: Some("127.0.0.1:9209".parse().unwrap()),
            web_listen: Some("127.0.0.1:9615".parse().unwrap()),
            boot_id: boot_id(),
            apps: vec![PersistedApp {
                id: 2,
                spec: AppSpec::new("web", "/bin/sleep", dir.path().to_path_buf()).into(),
                instances: vec![InstanceInfo::new(0)],
            }],
        };
        write_atomic(&path, &serde_json::to_vec(&st).unwrap()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.apps[0].spec, st.apps[0].spec);
        assert_eq!(back.next_id, 3);
        assert_eq!(back.boot_id, boot_id());
    }

    #[test]
    fn another_boot_is_told_by_its_id_and_unknown_counts_as_this_one() {
        let cases = [
            (Some("a"), Some("a"), true),
            (Some("a"), Some("b"), false),
            (None, Some("b"), true),
            (Some("a"), None, true),
            (None, None, true),
        ];
        for (recorded, current, same) in cases {
            assert_eq!(same_boot(recorded, current), same, "{recorded:?} {current:?}");
        }
        assert!(boot_id().is_some_and(|id| id.len() == 36), "{:?}", boot_id());
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_state_file_without_a_boot_id_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, br#"{"version":1,"next_id":0,"apps":[]}"#).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().boot_id, None);
    }

    #[test]
    fn corrupt_state_is_an_error_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_none());
        fs::write(&path, b"{\"version\":1,").unwrap();
        assert!(load(&path).unwrap_err().contains("corrupt"));
    }
}
