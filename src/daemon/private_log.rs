//! `daemon.log` kept 0600 like the rest of the home: it names apps, paths and errors that are
//! the user's business. A file left by an older herder (or created looser by hand), its rotated
//! files, and each new file a rotation starts are all made 0600.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::logs::{LogFile, Rotation};

const MODE: u32 = 0o600;

/// A [`LogFile`] whose files stay 0600.
pub(super) struct PrivateLog {
    file: LogFile,
    /// The inode last made private: a new one means a rotation started a new file.
    inode: Option<u64>,
}

impl PrivateLog {
    /// Open (creating) `path` for appending, and make it and its rotated files private.
    pub fn open(path: PathBuf, rotation: Rotation) -> io::Result<PrivateLog> {
        let file = LogFile::open(path, rotation)?;
        for rotated in crate::logs::file::rotated_files(file.path()) {
            make_private(&rotated);
        }
        let inode = make_private(file.path());
        Ok(PrivateLog { file, inode })
    }

    pub fn write_lines(&mut self, parts: &[&[u8]]) {
        self.file.write_lines(parts);
        // The rotated file keeps its mode; the new one is created looser.
        let now = fs::symlink_metadata(self.file.path()).ok().map(|m| m.ino());
        if now.is_some() && now != self.inode {
            self.inode = make_private(self.file.path());
        }
    }
}

/// Make `path` 0600 unless it is; its inode when it is 0600 now.
fn make_private(path: &Path) -> Option<u64> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.mode() & 0o7777 != MODE {
        // A file of another owner cannot be changed: leave it, and try again at the next line.
        fs::set_permissions(path, fs::Permissions::from_mode(MODE)).ok()?;
    }
    Some(meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_log_its_rotated_files_and_the_file_after_a_rotation_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.log");
        let old = dir.path().join("daemon.log.20200101-000000.000000");
        for p in [&path, &old] {
            fs::write(p, "old line\n").unwrap();
            fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let rotation = Rotation { max_size: Some(64), interval: None, retain: 10, compress: false };
        let mut log = PrivateLog::open(path.clone(), rotation).unwrap();
        assert_eq!((mode(&path), mode(&old)), (0o600, 0o600));
        for _ in 0..10 {
            log.write_lines(&[b"a line long enough to rotate the file soon\n"]);
        }
        let rotated = crate::logs::file::rotated_files(&path);
        assert!(rotated.len() > 2, "rotated: {rotated:?}");
        for p in rotated.iter().chain([&path]) {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
    }
}
