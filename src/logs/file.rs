//! One log file: appends whole lines, rotates by renaming at a line boundary (by size and/or
//! age), keeps `retain` rotated files, compresses them in the background, and records write
//! errors instead of failing (the app must never stop because its log cannot be written).

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

/// When a file is rotated and what happens to the old ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the file reaches this many bytes.
    pub max_size: Option<u64>,
    /// Rotate once the file is this old.
    pub interval: Option<Duration>,
    /// Rotated files kept (older ones are deleted).
    pub retain: usize,
    /// Gzip rotated files (in a background thread).
    pub compress: bool,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_size: None, interval: None, retain: 10, compress: false }
    }
}

/// The last write error of a file, for `show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError {
    pub message: String,
    /// Bytes dropped since the error began.
    pub dropped_bytes: u64,
}

/// An open log file.
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    opened: SystemTime,
    rotation: Rotation,
    /// The size or age limit was reached in the middle of a line: rotate at the next line end.
    rotate_pending: bool,
    /// The last write ended without a newline (raw mode): not a place to rotate.
    ends_mid_line: bool,
    /// A failed write left a partial line that could not be cut off: the next write starts
    /// with a newline.
    broken_line: bool,
    error: Option<WriteError>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

impl LogFile {
    /// Open (creating) `path` for appending.
    pub fn open(path: PathBuf, rotation: Rotation) -> io::Result<LogFile> {
        let file = open_append(&path)?;
        let meta = file.metadata()?;
        let opened = meta.created().or_else(|_| meta.modified()).unwrap_or_else(|_| SystemTime::now());
        Ok(LogFile {
            path,
            size: meta.len(),
            file: Some(file),
            opened,
            rotation,
            rotate_pending: false,
            ends_mid_line: false,
            broken_line: false,
            error: None,
        })
    }

    /// A log at `path` that could not be opened (a read-only or full disk): its lines are
    /// dropped and counted, and each write tries to open it again, so that logging resumes by
    /// itself once the disk takes writes.
    pub fn unopened(path: PathBuf, rotation: Rotation, error: &io::Error) -> LogFile {
        LogFile {
            path,
            size: 0,
            file: None,
            opened: SystemTime::now(),
            rotation,
            rotate_pending: false,
            ends_mid_line: false,
            broken_line: false,
            error: Some(WriteError { message: format!("cannot open it: {error}"), dropped_bytes: 0 }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn error(&self) -> Option<&WriteError> {
        self.error.as_ref()
    }

    fn age_reached(&self) -> bool {
        self.rotation
            .interval
            .is_some_and(|i| SystemTime::now().duration_since(self.opened).is_ok_and(|age| age >= i))
    }

    /// Append `parts` (whole lines, except that the last may be unterminated at the end of a
    /// stream). Files rotate at line boundaries: a write that would pass `max_size` is split
    /// between lines, and only a single line longer than `max_size` makes a file larger.
    pub fn write_lines(&mut self, parts: &[&[u8]]) {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len == 0 {
            return;
        }
        if (self.rotate_pending || self.age_reached()) && self.at_line_boundary() {
            self.rotate();
        }
        match self.rotation.max_size {
            Some(max) if self.size + len > max => {
                let joined = parts.concat();
                let mut rest: &[u8] = &joined;
                while !rest.is_empty() {
                    let room = max.saturating_sub(self.size) as usize;
                    let take = if rest.len() <= room {
                        rest.len()
                    } else if let Some(i) = memchr::memrchr(b'\n', &rest[..room]) {
                        i + 1
                    } else if self.size > 0 && self.at_line_boundary() && self.rotate() {
                        continue;
                    } else {
                        // A line longer than the limit (or a file that cannot rotate): whole.
                        memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1)
                    };
                    self.append(&[&rest[..take]], take as u64);
                    rest = &rest[take..];
                    if !rest.is_empty() && self.at_line_boundary() {
                        self.rotate();
                    }
                }
            }
            _ => self.append(parts, len),
        }
        if self.rotation.max_size.is_some_and(|m| self.size >= m) {
            self.rotate_pending = true;
        }
    }

    fn at_line_boundary(&self) -> bool {
        !self.ends_mid_line
    }

    fn append(&mut self, parts: &[&[u8]], len: u64) {
        if self.file.is_none() {
            if let Err(e) = self.open_again() {
                self.note_error(Some(e), len);
                return;
            }
        }
        let Some(file) = self.file.as_mut() else {
            self.note_error(None, len);
            return;
        };
        // A failed write left part of a line at the end of the file: finish it, so that it
        // is not glued to the next line.
        if self.broken_line {
            if file.write_all(b"\n").is_err() {
                self.note_error(None, len);
                return;
            }
            self.size += 1;
            self.broken_line = false;
        }
        match write_all_vectored(file, parts) {
            Ok(()) => {
                self.size += len;
                self.ends_mid_line = parts.last().and_then(|p| p.last()).is_some_and(|b| *b != b'\n');
                if let Some(e) = self.error.take() {
                    tracing::warn!(file = %self.path.display(), dropped_bytes = e.dropped_bytes, "log writes resumed");
                }
            }
            Err((written, e)) => {
                // Keep the whole lines that made it; cut off a partial one.
                let joined_prefix = |n: usize| -> Option<usize> {
                    let mut seen = 0;
                    let mut last_nl = None;
                    for p in parts {
                        let take = (n - seen).min(p.len());
                        if let Some(i) = memchr::memrchr(b'\n', &p[..take]) {
                            last_nl = Some(seen + i + 1);
                        }
                        seen += take;
                        if seen == n {
                            break;
                        }
                    }
                    last_nl
                };
                let keep = joined_prefix(written).unwrap_or(0) as u64;
                if written as u64 > keep {
                    if file.set_len(self.size + keep).is_ok() {
                        self.ends_mid_line = false;
                    } else {
                        self.broken_line = true;
                    }
                }
                self.size += keep;
                self.note_error(Some(e), len - keep);
            }
        }
    }

    fn note_error(&mut self, e: Option<io::Error>, dropped: u64) {
        let message = e.map(|e| e.to_string()).unwrap_or_else(|| "the file cannot be opened".into());
        match &mut self.error {
            Some(err) => {
                err.dropped_bytes += dropped;
                err.message = message;
            }
            None => {
                tracing::error!(file = %self.path.display(), error = %message, "cannot write to the log; the app keeps running and lines are dropped until writes succeed");
                self.error = Some(WriteError { message, dropped_bytes: dropped });
            }
        }
        // A removed or broken file is opened again at the next write.
        self.file = None;
    }

    /// Open the file again after a failure or a rotation, keeping its age.
    fn open_again(&mut self) -> io::Result<()> {
        let f = open_append(&self.path)?;
        self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(f);
        Ok(())
    }

    /// Open the path again (after an external logrotate moved the file).
    pub fn reopen(&mut self) -> io::Result<()> {
        let f = open_append(&self.path)?;
        self.size = f.metadata()?.len();
        self.opened = SystemTime::now();
        self.file = Some(f);
        Ok(())
    }

    /// Empty the file (`herder flush`).
    pub fn truncate(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.set_len(0)?;
        } else {
            OpenOptions::new().write(true).truncate(true).open(&self.path)?;
        }
        self.size = 0;
        self.opened = SystemTime::now();
        Ok(())
    }

    /// Rename the file aside and start a new one; prune and compress the old ones. Returns
    /// whether the file was rotated.
    fn rotate(&mut self) -> bool {
        self.rotate_pending = false;
        let aside = rotated_name(&self.path, SystemTime::now());
        if let Err(e) = fs::rename(&self.path, &aside) {
            tracing::error!(file = %self.path.display(), error = %e, "cannot rotate the log");
            return false;
        }
        self.file = None;
        let _ = self.open_again();
        self.size = 0;
        self.opened = SystemTime::now();
        if !self.rotation.compress {
            prune(&self.path, self.rotation.retain);
            return true;
        }
        let (path, rotation) = (self.path.clone(), self.rotation.clone());
        // Compression is slow file work: off the writer's thread, pruning after it.
        COMPRESSING.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name("herder-logrotate".into()).spawn(move || {
            if let Err(e) = compress(&aside) {
                tracing::error!(file = %aside.display(), error = %e, "cannot compress a rotated log");
            }
            prune(&path, rotation.retain);
            COMPRESSING.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            COMPRESSING.fetch_sub(1, Ordering::SeqCst);
        }
        true
    }
}

/// Rotated files being compressed right now (`herder update` waits for them: a compression cut
/// short would leave a `.gz.tmp` beside the rotated file).
static COMPRESSING: AtomicUsize = AtomicUsize::new(0);

pub fn compressions_running() -> usize {
    COMPRESSING.load(Ordering::SeqCst)
}

/// Write every part; on failure, how many bytes were written before it.
fn write_all_vectored(file: &mut File, parts: &[&[u8]]) -> Result<(), (usize, io::Error)> {
    let mut slices: Vec<IoSlice<'_>> =
        parts.iter().filter(|p| !p.is_empty()).map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    let mut written = 0;
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "the log file accepts no more bytes");
                return Err((written, e));
            }
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// `web-0.out.log` rotated at a time becomes `web-0.out.log.20261123-120000.123456` (then
/// `-0001`, `-0002`… within one microsecond): names sort by age, which `herder logs` relies on.
pub fn rotated_name(path: &Path, at: SystemTime) -> PathBuf {
    let ts = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let stamp = ts.strftime("%Y%m%d-%H%M%S.%6f").to_string();
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(stamp);
    let taken = |p: &Path| p.exists() || PathBuf::from(format!("{}.gz", p.display())).exists();
    let mut candidate = PathBuf::from(name.clone());
    let mut n = 1;
    while taken(&candidate) {
        let mut again = name.clone();
        // Zero-padded so that names keep sorting by age.
        again.push(format!("-{n:04}"));
        candidate = PathBuf::from(again);
        n += 1;
    }
    candidate
}

/// Rotated files of `path`, oldest first (plain and gzipped).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    // By age, which the name without `.gz` gives (`x.<t>.gz` is older than `x.<t>-0001`).
    files.sort_by_cached_key(|p| {
        let name = p.to_string_lossy();
        name.strip_suffix(".gz").unwrap_or(&name).to_string()
    });
    files
}

fn prune(path: &Path, retain: usize) {
    let files = rotated_files(path);
    if files.len() > retain {
        for old in &files[..files.len() - retain] {
            let _ = fs::remove_file(old);
        }
    }
}

fn compress(path: &Path) -> io::Result<()> {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let tmp = PathBuf::from(format!("{}.gz.tmp", path.display()));
    {
        let mut input = File::open(path)?;
        let out = OpenOptions::new().create(true).truncate(true).write(true).mode(0o640).open(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(io::BufWriter::new(out), flate2::Compression::fast());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.flush()?;
    }
    fs::rename(&tmp, &gz)?;
    fs::remove_file(path)
}
