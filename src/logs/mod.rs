//! Capture of app output: each instance's stdout and stderr are pipes read by the daemon and
//! written, as whole lines, to the instance's log files (`logs/<name>-<instance>.out.log` /
//! `.err.log` by default), with optional timestamps, JSON lines, a combined file, rotation
//! ([`file`]) and a rate limit, and handed to `herder logs -f` followers. [`tail`] reads the
//! last lines back for `herder logs` and `monit`.
//!
//! Readers hold no buffer while they wait: a pipe is awaited for readability, then drained
//! through one per-thread buffer. Only the unfinished last line of a read is kept per stream,
//! so that a line is never split between two writes, two writers or two files.

pub mod file;
pub mod format;
pub mod handover;
pub mod tail;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;
use tokio::sync::broadcast;

use crate::paths::Paths;
use crate::protocol::now_ms;
pub use file::{LogFile, Rotation, WriteError};
use format::{Stamp, TimeFormat};

/// Size of the per-thread read buffer. Reads go to its spare capacity, never zeroed, so only
/// the pages some read reached are resident: a thread whose apps write lines holds a page or
/// two of it, one that drained a flood all of it.
const CHUNK: usize = 256 * 1024;
/// A line longer than this is written in pieces rather than held in memory.
const MAX_LINE: usize = 64 * 1024 * 1024;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static OUT_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A name made safe for a file name: anything but `[A-Za-z0-9._-]` becomes `-`.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect()
}

/// The default stdout and stderr log paths of one instance.
pub fn instance_paths(paths: &Paths, name: &str, index: u32) -> (PathBuf, PathBuf) {
    let base = format!("{}-{index}", file_safe(name));
    let dir = paths.logs_dir();
    (dir.join(format!("{base}.out.log")), dir.join(format!("{base}.err.log")))
}

/// The files `spec`'s instance `index` writes: stdout, stderr, combined (`None`: dropped).
pub fn log_paths(
    paths: &Paths,
    spec: &crate::protocol::AppSpec,
    index: u32,
) -> (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) {
    let l = &spec.logs;
    if l.disable {
        return (None, None, None);
    }
    // Instances share their files when merged (or when there is only one), as in PM2;
    // otherwise `-<n>` goes before the extension of a path the user gave.
    let per_instance = spec.instances > 1 && !l.merge_logs;
    let own = |given: &Option<PathBuf>, default: PathBuf| -> Option<PathBuf> {
        match given {
            Some(p) if p.as_os_str() == "/dev/null" || p.file_name().is_some_and(|n| n == "NULL") => None,
            Some(p) if per_instance => Some(with_instance(p, index)),
            Some(p) => Some(p.clone()),
            None => Some(default),
        }
    };
    let (out, err) = if l.merge_logs {
        let base = paths.logs_dir().join(file_safe(&spec.name));
        (base.with_extension("out.log"), base.with_extension("err.log"))
    } else {
        instance_paths(paths, &spec.name, index)
    };
    let combined_default = paths.logs_dir().join(format!("{}.log", file_safe(&spec.name)));
    let combined = match (&l.log_file, l.log_file_default) {
        (Some(_), _) => own(&l.log_file, combined_default),
        (None, true) => {
            own(&None, if per_instance { with_instance(&combined_default, index) } else { combined_default })
        }
        (None, false) => None,
    };
    (own(&l.out_file, out), own(&l.error_file, err), combined)
}

/// How `spec`'s instance `index` logs.
pub fn policy_of(paths: &Paths, spec: &crate::protocol::AppSpec, index: u32) -> LogPolicy {
    let l = &spec.logs;
    let (out, err, combined) = log_paths(paths, spec, index);
    let time = (l.time || l.date_format.is_some()).then(|| {
        TimeFormat::parse(l.date_format.as_deref().unwrap_or(format::DEFAULT_FORMAT))
            .unwrap_or_else(|_| TimeFormat::parse(format::DEFAULT_FORMAT).expect("the default format parses"))
    });
    LogPolicy {
        out,
        err,
        combined,
        time,
        json: l.json,
        rotation: rotation_of(spec),
        rate_limit: l.rate_limit.map(|(lines, per)| RateLimit { lines, per: Duration::from_millis(per) }),
    }
}

/// How the app's log files rotate.
pub fn rotation_of(spec: &crate::protocol::AppSpec) -> Rotation {
    use crate::protocol::spec::{DEFAULT_LOG_MAX_SIZE, DEFAULT_LOG_RETAIN};
    let l = &spec.logs;
    Rotation {
        max_size: match l.max_size {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(DEFAULT_LOG_MAX_SIZE),
        },
        interval: l.rotate_interval_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
        retain: l.retain.unwrap_or(DEFAULT_LOG_RETAIN) as usize,
        compress: l.compress,
    }
}

/// `app.log` for instance 2 becomes `app-2.log` (PM2's naming).
pub(crate) fn with_instance(path: &Path, index: u32) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{index}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{index}"),
    };
    path.with_file_name(name)
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// At most `lines` lines per `per`; the rest are dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub lines: u64,
    pub per: Duration,
}

/// How an instance's output is written.
#[derive(Debug, Clone, Default)]
pub struct LogPolicy {
    /// stdout file; `None` drops stdout (`/dev/null`, `disable_logs`).
    pub out: Option<PathBuf>,
    /// stderr file; `None` drops stderr.
    pub err: Option<PathBuf>,
    /// A file receiving both streams (`log_file`).
    pub combined: Option<PathBuf>,
    /// Prefix each line with the time it was read.
    pub time: Option<TimeFormat>,
    /// One JSON object per line.
    pub json: bool,
    pub rotation: Rotation,
    pub rate_limit: Option<RateLimit>,
}

/// Lines handed to followers (`herder logs -f`): whole lines of one read.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub app: Arc<str>,
    pub instance: u32,
    pub stream: Stream,
    /// Unix time of the read, ms.
    pub at_ms: u64,
    /// Lines this stream of this process sent before this event (counted only while someone
    /// follows): a follower that sees a gap knows how many lines it missed.
    pub seq: u64,
    pub lines: Arc<[u8]>,
}

/// Lines in `bytes`: its newlines, plus an unterminated last line.
pub fn count_lines(bytes: &[u8]) -> u64 {
    let n = memchr::memchr_iter(b'\n', bytes).count() as u64;
    n + u64::from(bytes.last().is_some_and(|b| *b != b'\n'))
}

/// One writer per log path, shared by every stream that writes there (merged instances, the
/// combined file), and the channel to followers.
pub struct Hub {
    files: Mutex<HashMap<PathBuf, Weak<Mutex<LogFile>>>>,
    follow: broadcast::Sender<LogEvent>,
    /// Held shared by every write (files and followers together), exclusively by
    /// [`Hub::pause_writes`].
    gate: RwLock<()>,
    /// Every running capture, to hold them still for `herder update`.
    captures: handover::Captures,
    /// Output pipes being read right now.
    open_pipes: tokio::sync::watch::Sender<usize>,
}

pub type SharedFile = Arc<Mutex<LogFile>>;

impl Default for Hub {
    fn default() -> Self {
        Hub {
            files: Mutex::default(),
            follow: broadcast::channel(4096).0,
            gate: RwLock::default(),
            captures: handover::Captures::default(),
            open_pipes: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Hub {
    /// The writer of `path`, opening it if no stream writes there yet. A file that cannot be
    /// opened (a read-only or full disk) still gets a writer: it counts what it drops, shows
    /// the error, and opens the file once it can (see [`LogFile::unopened`]). An app's output
    /// never stops it from starting.
    pub fn file(&self, path: &Path, rotation: &Rotation) -> SharedFile {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = files.get(path).and_then(Weak::upgrade) {
            return f;
        }
        files.retain(|_, w| w.strong_count() > 0);
        let file = LogFile::open(path.to_path_buf(), rotation.clone()).unwrap_or_else(|e| {
            tracing::error!(file = %path.display(), error = %e, "cannot open the log; the app runs on and its lines are dropped until the file can be opened");
            LogFile::unopened(path.to_path_buf(), rotation.clone(), &e)
        });
        let f = Arc::new(Mutex::new(file));
        files.insert(path.to_path_buf(), Arc::downgrade(&f));
        f
    }

    /// Whether some open log cannot be written right now.
    pub fn any_error(&self) -> bool {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .values()
            .filter_map(Weak::upgrade)
            .any(|f| f.lock().unwrap_or_else(|e| e.into_inner()).error().is_some())
    }

    /// Every open writer whose path satisfies `pick`.
    pub fn open_files(&self, pick: impl Fn(&Path) -> bool) -> Vec<SharedFile> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.iter().filter(|(p, _)| pick(p)).filter_map(|(_, w)| w.upgrade()).collect()
    }

    /// Write errors of the files at `paths`, for `show`.
    pub fn errors(&self, paths: &[&Path]) -> Vec<(PathBuf, WriteError)> {
        self.open_files(|p| paths.contains(&p))
            .iter()
            .filter_map(|f| {
                let f = f.lock().unwrap_or_else(|e| e.into_inner());
                f.error().map(|e| (f.path().to_path_buf(), e.clone()))
            })
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogEvent> {
        self.follow.subscribe()
    }

    /// Stop every log write until the guard is dropped. A follower subscribes and measures
    /// the files under it, so each line is either in the files as measured or in its
    /// stream, never in both nor in neither. Writes may block on a stalled disk: take it off
    /// the async threads.
    pub fn pause_writes(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until every output pipe has been read to its end (the last lines of stopped apps
    /// written and handed to followers).
    pub async fn pipes_drained(&self) {
        let _ = self.open_pipes.subscribe().wait_for(|n| *n == 0).await;
    }
}

/// Where one stream of one instance goes.
pub struct Sink {
    pub app: Arc<str>,
    pub instance: u32,
    pub stream: Stream,
    pub files: Vec<SharedFile>,
    pub time: Option<TimeFormat>,
    pub json: bool,
    pub rate_limit: Option<RateLimit>,
    /// Lines sent to followers (see [`LogEvent::seq`]).
    followed: AtomicU64,
    /// The app (id and spec) whose output this is, for `herder update`.
    pub owner: Option<(u32, Arc<crate::protocol::AppSpec>)>,
}

impl Sink {
    /// Open the files `policy` names for `stream`. One that cannot be opened drops its lines
    /// until it can (see [`Hub::file`]); followers get them all the same.
    pub fn open(hub: &Hub, policy: &LogPolicy, app: &str, instance: u32, stream: Stream) -> Sink {
        let own = match stream {
            Stream::Out => &policy.out,
            Stream::Err => &policy.err,
        };
        let mut files = Vec::new();
        for path in own.iter().chain(policy.combined.iter()) {
            if let Some(dir) = path.parent() {
                // A failure shows as the file's own error at its opening.
                let _ = std::fs::create_dir_all(dir);
            }
            files.push(hub.file(path, &policy.rotation));
        }
        Sink {
            app: app.into(),
            instance,
            stream,
            files,
            time: policy.time.clone(),
            json: policy.json,
            rate_limit: policy.rate_limit,
            followed: AtomicU64::new(0),
            owner: None,
        }
    }

    /// Say which app (id and spec) this output belongs to.
    pub fn owned_by(mut self, app_id: u32, spec: Arc<crate::protocol::AppSpec>) -> Sink {
        self.owner = Some((app_id, spec));
        self
    }
}

/// Per-stream state between reads.
pub(crate) struct StreamState {
    /// The unfinished last line of the previous read.
    partial: Vec<u8>,
    window: Instant,
    in_window: u64,
    suppressed: u64,
}

impl StreamState {
    fn new() -> StreamState {
        StreamState { partial: Vec::new(), window: Instant::now(), in_window: 0, suppressed: 0 }
    }
}

/// Read `pipe_fd` until it closes, writing through `sink`.
pub fn capture(pipe_fd: OwnedFd, sink: Sink, hub: &Arc<Hub>) {
    grow_pipe(&pipe_fd);
    read_pipe(pipe_fd, sink, hub, StreamState::new());
}

/// The reading task of [`capture`], from state `st` (a fresh one, or one handed over by an
/// earlier image of the daemon).
fn read_pipe(pipe_fd: OwnedFd, sink: Sink, hub: &Arc<Hub>, mut st: StreamState) {
    let rx = match pipe::Receiver::from_owned_fd(pipe_fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(app = %sink.app, instance = sink.instance, error = %e, "cannot read the app's output");
            return;
        }
    };
    let hub = hub.clone();
    let (id, mut holds) = hub.captures.register();
    hub.open_pipes.send_modify(|n| *n += 1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                // Between two reads: every byte read so far is written, except the unfinished
                // last line, which goes along with the state.
                Some(hold) = holds.recv() => {
                    handover::hold(hold, &rx, &sink, &st).await;
                    continue;
                }
                readable = rx.readable() => if readable.is_err() {
                    break;
                },
            }
            let done = READ_BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                // Bounded, so one flooding app cannot starve the others on this thread.
                for _ in 0..16 {
                    buf.clear();
                    buf.reserve_exact(CHUNK);
                    match rx.try_read_buf(&mut *buf) {
                        Ok(0) => return true,
                        Ok(n) => process(&sink, &hub, &mut st, &buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return true,
                    }
                }
                false
            });
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
        finish(&sink, &hub, &mut st);
        hub.captures.unregister(id);
        hub.open_pipes.send_modify(|n| *n = n.saturating_sub(1));
    });
}

/// The size asked for each app's output pipes (the kernel's default is 64 KiB).
const PIPE_SIZE: libc::c_int = 1024 * 1024;

/// Give the pipe a 1 MiB buffer (or as much as `/proc/sys/fs/pipe-max-size` allows): a
/// flooding app then fills it in fewer, larger writes and the reader drains it in 256 KiB
/// reads, instead of the two trading 64 KiB with a context switch each time. The pages are
/// only used while output waits in the pipe.
fn grow_pipe(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) on a pipe descriptor we own; failure only leaves the default size.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) } < 0 {
        let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<libc::c_int>().ok())
            .unwrap_or(0);
        if max > 0 && max < PIPE_SIZE {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, max) };
        }
    }
}

/// Handle one read: whole lines go out, the unfinished tail waits for the next read.
fn process(sink: &Sink, hub: &Hub, st: &mut StreamState, chunk: &[u8]) {
    let Some(last_nl) = memchr::memrchr(b'\n', chunk) else {
        st.partial.extend_from_slice(chunk);
        if st.partial.len() >= MAX_LINE {
            let line = std::mem::take(&mut st.partial);
            emit(sink, hub, st, &[&line]);
        }
        return;
    };
    let (lines, tail) = chunk.split_at(last_nl + 1);
    let partial = std::mem::take(&mut st.partial);
    emit(sink, hub, st, &[&partial, lines]);
    st.partial = partial;
    st.partial.clear();
    if st.partial.capacity() > CHUNK {
        st.partial.shrink_to(CHUNK);
    }
    st.partial.extend_from_slice(tail);
}

/// The pipe closed: write what is left, the last line even without a newline.
fn finish(sink: &Sink, hub: &Hub, st: &mut StreamState) {
    if !st.partial.is_empty() {
        let mut line = std::mem::take(&mut st.partial);
        if sink.time.is_some() || sink.json || sink.files.len() > 1 {
            line.push(b'\n');
        }
        emit(sink, hub, st, &[&line]);
    }
    if st.suppressed > 0 {
        let marker = suppressed_marker(st.suppressed);
        st.suppressed = 0;
        write_formatted(sink, hub, &[&marker]);
    }
}

fn suppressed_marker(n: u64) -> Vec<u8> {
    format!("… suppressed {n} lines (log_rate_limit)\n").into_bytes()
}

/// Write `parts` (whole lines, the last possibly unterminated at EOF), applying the rate
/// limit.
fn emit(sink: &Sink, hub: &Hub, st: &mut StreamState, parts: &[&[u8]]) {
    let Some(limit) = sink.rate_limit else {
        write_formatted(sink, hub, parts);
        return;
    };
    // Keep the lines that fit in the window; count the rest.
    let mut kept: Vec<u8> = Vec::new();
    for part in parts {
        let mut start = 0;
        while start < part.len() {
            let end = memchr::memchr(b'\n', &part[start..]).map(|i| start + i + 1).unwrap_or(part.len());
            if st.window.elapsed() >= limit.per {
                if st.suppressed > 0 {
                    kept.extend_from_slice(&suppressed_marker(st.suppressed));
                    st.suppressed = 0;
                }
                st.window = Instant::now();
                st.in_window = 0;
            }
            if st.in_window < limit.lines {
                st.in_window += 1;
                kept.extend_from_slice(&part[start..end]);
            } else {
                st.suppressed += 1;
            }
            start = end;
        }
    }
    write_formatted(sink, hub, &[&kept]);
}

/// Format (timestamps, JSON) and write whole lines to every file of the sink and to followers.
fn write_formatted(sink: &Sink, hub: &Hub, parts: &[&[u8]]) {
    if parts.iter().all(|p| p.is_empty()) {
        return;
    }
    let _writing = hub.gate.read().unwrap_or_else(|e| e.into_inner());
    let at_ms = now_ms();
    if sink.time.is_none() && !sink.json {
        for f in &sink.files {
            f.lock().unwrap_or_else(|e| e.into_inner()).write_lines(parts);
        }
        follow(sink, hub, at_ms, parts);
        return;
    }
    OUT_BUF.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        // One timestamp per read: every line of it reached herder at the same moment.
        let stamp = Stamp::now();
        let prefix: Vec<u8> = match &sink.time {
            Some(t) => [t.render(&stamp).as_bytes(), b" "].concat(),
            None => Vec::new(),
        };
        for part in parts {
            // memchr finds line ends many bytes at a time; a byte-wise split costs about
            // a third of the throughput with timestamps on.
            let mut start = 0;
            while start < part.len() {
                let end = memchr::memchr(b'\n', &part[start..]).map_or(part.len(), |i| start + i + 1);
                let line = &part[start..end];
                start = end;
                if sink.json {
                    format::json_line(&mut out, &stamp, &sink.app, sink.instance, sink.stream, line);
                } else {
                    out.extend_from_slice(&prefix);
                    out.extend_from_slice(line);
                }
            }
        }
        for f in &sink.files {
            f.lock().unwrap_or_else(|e| e.into_inner()).write_lines(&[&out]);
        }
        follow(sink, hub, at_ms, &[&out]);
        if out.capacity() > 4 * CHUNK {
            out.shrink_to(CHUNK);
        }
    });
}

fn follow(sink: &Sink, hub: &Hub, at_ms: u64, parts: &[&[u8]]) {
    if hub.follow.receiver_count() == 0 {
        return;
    }
    let lines: Arc<[u8]> = parts.concat().into();
    let seq = sink.followed.fetch_add(count_lines(&lines), Ordering::Relaxed);
    let _ = hub.follow.send(LogEvent {
        app: sink.app.clone(),
        instance: sink.instance,
        stream: sink.stream,
        at_ms,
        seq,
        lines,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(hub: &Hub, policy: &LogPolicy, stream: Stream) -> Sink {
        Sink::open(hub, policy, "app", 0, stream)
    }

    fn state() -> StreamState {
        StreamState { partial: Vec::new(), window: Instant::now(), in_window: 0, suppressed: 0 }
    }

    /// Everything written to `path` and its rotated files, oldest first.
    fn all_text(path: &Path) -> String {
        let mut files = file::rotated_files(path);
        files.push(path.to_path_buf());
        files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect()
    }

    #[test]
    fn partial_lines_wait_for_their_end_and_the_last_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Hub::default();
        let policy = LogPolicy { out: Some(out.clone()), ..LogPolicy::default() };
        let s = sink(&hub, &policy, Stream::Out);
        let mut st = state();
        process(&s, &hub, &mut st, b"one\ntw");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\n");
        process(&s, &hub, &mut st, b"o\nthree");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntwo\n");
        finish(&s, &hub, &mut st);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntwo\nthree", "bytes kept as they were");
    }

    #[test]
    fn rotation_happens_at_line_boundaries_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Hub::default();
        let rotation = Rotation { max_size: Some(100), retain: usize::MAX, ..Rotation::default() };
        let policy = LogPolicy { out: Some(out.clone()), rotation, ..LogPolicy::default() };
        let s = sink(&hub, &policy, Stream::Out);
        let mut st = state();
        // Enough rotations to happen many times within one clock tick.
        let text: String = (0..3000).map(|i| format!("line {i} {}\n", "x".repeat(i % 37))).collect();
        // Feed it in odd-sized reads so lines straddle reads.
        for chunk in text.as_bytes().chunks(23) {
            process(&s, &hub, &mut st, chunk);
        }
        finish(&s, &hub, &mut st);
        let rotated = file::rotated_files(&out);
        assert!(rotated.len() > 10, "{} rotations", rotated.len());
        for f in &rotated {
            let t = std::fs::read_to_string(f).unwrap();
            assert!(t.ends_with('\n') && t.starts_with("line "), "{f:?} holds whole lines: {t:?}");
        }
        assert_eq!(all_text(&out), text);
    }

    #[test]
    fn one_large_read_is_split_between_lines_at_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Hub::default();
        let rotation = Rotation { max_size: Some(100), retain: usize::MAX, ..Rotation::default() };
        let policy = LogPolicy { out: Some(out.clone()), rotation, ..LogPolicy::default() };
        let s = sink(&hub, &policy, Stream::Out);
        let mut st = state();
        let long = format!("{}\n", "L".repeat(250));
        let text: String = (0..400).map(|i| format!("line {i}\n")).collect::<String>() + &long + "after\n";
        process(&s, &hub, &mut st, text.as_bytes());
        let mut files = file::rotated_files(&out);
        files.push(out.clone());
        for f in &files {
            let t = std::fs::read_to_string(f).unwrap();
            assert!(
                t.len() <= 100 || t == long,
                "{f:?} is {} bytes: only a line longer than the limit may pass it",
                t.len()
            );
        }
        assert!(files.len() > 20);
        assert_eq!(all_text(&out), text);
    }

    #[test]
    fn rotated_files_are_compressed_in_the_background() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Hub::default();
        let rotation = Rotation { max_size: Some(64), compress: true, ..Rotation::default() };
        let policy = LogPolicy { out: Some(out.clone()), rotation, ..LogPolicy::default() };
        let s = sink(&hub, &policy, Stream::Out);
        let mut st = state();
        // The first line fills the file; the next write rotates it first.
        process(&s, &hub, &mut st, format!("{}\n", "a".repeat(63)).as_bytes());
        process(&s, &hub, &mut st, b"second line\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        let gz = loop {
            let gz: Vec<PathBuf> = file::rotated_files(&out)
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "gz"))
                .collect();
            if !gz.is_empty() {
                break gz;
            }
            assert!(Instant::now() < deadline, "no compressed file appeared");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&gz[0]).unwrap()).read_to_string(&mut text).unwrap();
        assert_eq!(text, format!("{}\n", "a".repeat(63)));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "second line\n");
    }

    #[test]
    fn the_rate_limit_keeps_the_limit_and_writes_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Hub::default();
        let rate_limit = Some(RateLimit { lines: 10, per: Duration::from_secs(3600) });
        let policy = LogPolicy { out: Some(out.clone()), rate_limit, ..LogPolicy::default() };
        let s = sink(&hub, &policy, Stream::Out);
        let mut st = state();
        let text: String = (0..25).map(|i| format!("{i}\n")).collect();
        process(&s, &hub, &mut st, text.as_bytes());
        finish(&s, &hub, &mut st);
        let got = std::fs::read_to_string(&out).unwrap();
        let want: String = (0..10).map(|i| format!("{i}\n")).collect::<String>()
            + "… suppressed 15 lines (log_rate_limit)\n";
        assert_eq!(got, want);
    }

    #[test]
    fn each_interval_keeps_the_limit_and_gets_its_own_marker() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Hub::default();
        let per = Duration::from_secs(3600);
        let policy = LogPolicy {
            out: Some(out.clone()),
            rate_limit: Some(RateLimit { lines: 3, per }),
            ..LogPolicy::default()
        };
        let s = sink(&hub, &policy, Stream::Out);
        let mut st = state();
        let flood = |from: u32| -> String { (from..from + 10).map(|i| format!("{i}\n")).collect() };
        process(&s, &hub, &mut st, flood(0).as_bytes());
        // The interval ends (moved back rather than waited for).
        st.window -= per;
        process(&s, &hub, &mut st, flood(100).as_bytes());
        finish(&s, &hub, &mut st);
        let got = std::fs::read_to_string(&out).unwrap();
        let marker = "… suppressed 7 lines (log_rate_limit)\n";
        assert_eq!(got, format!("0\n1\n2\n{marker}100\n101\n102\n{marker}"));
    }

    #[test]
    fn two_streams_sharing_a_file_never_interleave_half_lines() {
        let dir = tempfile::tempdir().unwrap();
        let both = dir.path().join("both.log");
        let hub = Hub::default();
        let policy = LogPolicy { combined: Some(both.clone()), ..LogPolicy::default() };
        let (a, b) = (sink(&hub, &policy, Stream::Out), sink(&hub, &policy, Stream::Err));
        let (mut sa, mut sb) = (state(), state());
        process(&a, &hub, &mut sa, b"out-1 start ");
        process(&b, &hub, &mut sb, b"err-1 whole\nerr-2 start ");
        process(&a, &hub, &mut sa, b"end\n");
        process(&b, &hub, &mut sb, b"end\n");
        assert_eq!(
            std::fs::read_to_string(&both).unwrap(),
            "err-1 whole\nout-1 start end\nerr-2 start end\n"
        );
    }

    #[test]
    fn timestamps_prefix_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let hub = Hub::default();
        let time = Some(TimeFormat::parse("[T]YYYY").unwrap());
        let policy = LogPolicy { out: Some(out.clone()), time, ..LogPolicy::default() };
        let s = sink(&hub, &policy, Stream::Out);
        let mut st = state();
        process(&s, &hub, &mut st, b"a\nb\n");
        let got = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with('T') && lines[0].ends_with(" a"), "{got}");
        assert!(lines[1].ends_with(" b"), "{got}");
    }

    #[test]
    fn names_are_made_file_safe() {
        assert_eq!(file_safe("api/v1 web"), "api-v1-web");
        assert_eq!(file_safe("web.app_1-x"), "web.app_1-x");
    }
}
