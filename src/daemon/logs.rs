//! Log requests: `logs` (where each file ends now, then a stream of new lines for followers),
//! `flush`, `reload-logs` (also on SIGUSR2) and the write errors `show` reports.
//!
//! A follower never slows an app down: lines reach it through the hub's broadcast channel,
//! which never blocks the writers, and wait in a queue of at most [`QUEUE_BYTES`] per
//! follower. A follower that falls behind loses lines (they stay in the files) and is told
//! how many with a [`LogItem::Skipped`] notice, counted from each stream's line numbers.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::broadcast::{self, error::RecvError};

use super::Daemon;
use crate::logs::{self, count_lines, LogEvent, Stream};
use crate::protocol::{
    self, AppInfo, ErrorKind, ErrorReply, FileMark, LogBytes, LogItem, LogStream, LogWriteError, Response,
    Target,
};

/// Lines waiting for one follower, in bytes; past it, new lines are skipped.
const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Text per `LogLines` frame (JSON escaping may make the frame several times larger, still
/// far below the 16 MiB limit).
const FRAME_TEXT: usize = 512 * 1024;

/// A started `herder logs`: the answer to send, and for `-f` the follower to run after it.
pub(crate) struct Opened {
    pub reply: Response,
    pub follower: Option<Follower>,
}

/// Answer `Logs`: the apps, and where each of their files ends at this moment. With
/// `follow`, the subscription is taken at that same moment (writes paused), so every line is
/// either before a mark or in the stream.
pub(crate) async fn open(
    d: &Arc<Daemon>,
    targets: Vec<Target>,
    follow: bool,
    out: bool,
    err: bool,
) -> Result<Opened, ErrorReply> {
    let targets = if targets.is_empty() { vec![Target::All] } else { targets };
    let apps: Vec<AppInfo> = {
        let reg = d.registry();
        let ids = reg.resolve(&targets)?;
        ids.iter().filter_map(|id| reg.apps.get(id)).map(|a| a.info(&d.ctx.paths, false)).collect()
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for app in &apps {
        for (o, e) in &app.log_files {
            for p in [o, e] {
                if !files.contains(p) {
                    files.push(p.clone());
                }
            }
        }
    }
    let hub = d.ctx.logs.clone();
    let (rx, marks) = tokio::task::spawn_blocking(move || {
        let _paused = hub.pause_writes();
        let rx = follow.then(|| hub.subscribe());
        (rx, files.iter().filter_map(|p| mark(p)).collect::<Vec<_>>())
    })
    .await
    .map_err(|e| internal(format!("cannot read the log files: {e}")))?;
    let follower = rx.map(|rx| {
        let names = apps.iter().map(|a| a.spec.name.clone()).collect();
        let (out, err) = if out || err { (out, err) } else { (true, true) };
        Follower::new(d.clone(), rx, Filter { targets, names, cache: HashMap::new(), out, err })
    });
    Ok(Opened { reply: Response::Logs { apps, marks }, follower })
}

fn mark(path: &Path) -> Option<FileMark> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileMark { path: path.to_path_buf(), inode: meta.ino(), size: meta.len() })
}

fn internal(message: String) -> ErrorReply {
    ErrorReply { kind: ErrorKind::Internal, message }
}

/// Every log file of `apps`' instances as their policy names them (the combined file too).
fn policy_files(d: &Daemon, targets: &[Target]) -> Result<Vec<PathBuf>, ErrorReply> {
    let reg = d.registry();
    let ids = reg.resolve(targets)?;
    let mut files: Vec<PathBuf> = Vec::new();
    for app in ids.iter().filter_map(|id| reg.apps.get(id)) {
        for index in 0..app.instances.len() as u32 {
            let p = logs::policy_of(&d.ctx.paths, app.spec(), index);
            for f in [p.out, p.err, p.combined].into_iter().flatten() {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
    }
    Ok(files)
}

/// `herder flush [app]`: empty the current log files (rotated ones are kept). Files a writer
/// has open are truncated through it, so its idea of the size (for rotation) stays right.
pub(crate) async fn flush(d: &Arc<Daemon>, targets: Vec<Target>) -> Result<Response, ErrorReply> {
    let targets = if targets.is_empty() { vec![Target::All] } else { targets };
    let files = policy_files(d, &targets)?;
    let hub = d.ctx.logs.clone();
    let (done, failed) = tokio::task::spawn_blocking(move || {
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        for path in files {
            let open = hub.open_files(|p| p == path);
            let res = match open.first() {
                Some(f) => f.lock().unwrap_or_else(|e| e.into_inner()).truncate(),
                None => match std::fs::OpenOptions::new().write(true).truncate(true).open(&path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    r => r.map(drop),
                },
            };
            match res {
                Ok(()) => done.push(path),
                Err(e) => failed.push(format!("{}: {e}", path.display())),
            }
        }
        (done, failed)
    })
    .await
    .map_err(|e| internal(format!("flush failed: {e}")))?;
    if !failed.is_empty() {
        return Err(internal(format!("cannot empty {}", failed.join("; "))));
    }
    Ok(Response::LogFiles { files: done })
}

/// `herder reload-logs` and SIGUSR2: open every log file again by its path, for an external
/// logrotate that moved the files away.
pub(crate) async fn reload(d: &Arc<Daemon>) -> Result<Response, ErrorReply> {
    let hub = d.ctx.logs.clone();
    let (mut done, failed) = tokio::task::spawn_blocking(move || {
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        for f in hub.open_files(|_| true) {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            match f.reopen() {
                Ok(()) => done.push(f.path().to_path_buf()),
                Err(e) => failed.push(format!("{}: {e}", f.path().display())),
            }
        }
        (done, failed)
    })
    .await
    .map_err(|e| internal(format!("reload-logs failed: {e}")))?;
    tracing::info!(files = done.len(), failed = failed.len(), "log files reopened");
    if !failed.is_empty() {
        return Err(internal(format!("cannot reopen {}", failed.join("; "))));
    }
    done.sort();
    Ok(Response::LogFiles { files: done })
}

/// The write errors of `app`'s log files, for `show`.
pub(crate) fn write_errors(d: &Daemon, app: &AppInfo) -> Vec<LogWriteError> {
    let Ok(files) = policy_files(d, &[Target::Name(app.id.to_string())]) else { return Vec::new() };
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    d.ctx
        .logs
        .errors(&paths)
        .into_iter()
        .map(|(path, e)| LogWriteError { path, message: e.message, dropped_bytes: e.dropped_bytes })
        .collect()
}

/// Which events a follower wants.
struct Filter {
    targets: Vec<Target>,
    /// Apps matched when following began.
    names: Vec<String>,
    /// Apps seen since, and whether the targets match them (an app started later in a
    /// followed namespace, say).
    cache: HashMap<Arc<str>, bool>,
    out: bool,
    err: bool,
}

impl Filter {
    fn wants(&mut self, d: &Daemon, ev: &LogEvent) -> bool {
        let stream_ok = match ev.stream {
            Stream::Out => self.out,
            Stream::Err => self.err,
        };
        if !stream_ok {
            return false;
        }
        if self.targets.contains(&Target::All) || self.names.iter().any(|n| **n == *ev.app) {
            return true;
        }
        if let Some(known) = self.cache.get(&ev.app) {
            return *known;
        }
        let reg = d.registry();
        let matched = reg
            .resolve(&self.targets)
            .map(|ids| ids.iter().any(|id| reg.apps.get(id).is_some_and(|a| *a.spec().name == *ev.app)))
            .unwrap_or(false);
        self.cache.insert(ev.app.clone(), matched);
        matched
    }
}

type SourceKey = (Arc<str>, u32, LogStream);

/// Line numbers of one stream as this follower knows them.
#[derive(Debug, Clone, Copy)]
struct Source {
    /// Lines up to here were queued (or reported skipped).
    delivered: u64,
    /// Lines up to here were seen (queued or dropped).
    seen: u64,
    /// Skipped lines of an earlier process of the instance, not yet reported.
    carried: u64,
}

enum Entry {
    /// An event, of which `.1` bytes were already sent.
    Lines(LogEvent, usize),
    Skipped(SourceKey, u64),
}

/// The lines waiting for one follower, bounded in bytes, with the accounting of what it
/// missed.
#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    bytes: usize,
    sources: HashMap<SourceKey, Source>,
    /// Lines were dropped since the last report.
    dropped: bool,
}

fn wire_stream(s: Stream) -> LogStream {
    match s {
        Stream::Out => LogStream::Out,
        Stream::Err => LogStream::Err,
    }
}

impl Queue {
    /// Queue `ev`, or count it as skipped when the queue is full.
    fn offer(&mut self, ev: LogEvent) {
        let lines = count_lines(&ev.lines);
        let key: SourceKey = (ev.app.clone(), ev.instance, wire_stream(ev.stream));
        let src =
            self.sources.entry(key.clone()).or_insert(Source { delivered: ev.seq, seen: ev.seq, carried: 0 });
        if ev.seq < src.seen {
            // A new process of the instance: its lines count from 0 again.
            src.carried += src.seen - src.delivered;
            src.delivered = ev.seq;
        }
        src.seen = ev.seq + lines;
        if self.bytes + ev.lines.len() > QUEUE_BYTES && !self.entries.is_empty() {
            self.dropped = true;
            return;
        }
        let missed = ev.seq - src.delivered + src.carried;
        src.delivered = src.seen;
        src.carried = 0;
        if missed > 0 {
            self.entries.push_back(Entry::Skipped(key, missed));
        }
        self.bytes += ev.lines.len();
        self.entries.push_back(Entry::Lines(ev, 0));
    }

    /// With everything sent, report what was skipped since (when the queue was full).
    fn report_skipped(&mut self) {
        if !self.dropped || !self.entries.is_empty() {
            return;
        }
        self.dropped = false;
        for (key, src) in &mut self.sources {
            let missed = src.seen - src.delivered + src.carried;
            if missed > 0 {
                self.entries.push_back(Entry::Skipped(key.clone(), missed));
                src.delivered = src.seen;
                src.carried = 0;
            }
        }
    }

    /// The next frame's items: up to [`FRAME_TEXT`] bytes of text, a larger event in pieces
    /// (cut after a newline when there is one).
    fn next_items(&mut self) -> Vec<LogItem> {
        let mut items = Vec::new();
        let mut room = FRAME_TEXT;
        while let Some(entry) = self.entries.front_mut() {
            match entry {
                Entry::Skipped((app, instance, stream), lines) => {
                    items.push(LogItem::Skipped {
                        app: app.to_string(),
                        instance: *instance,
                        stream: *stream,
                        lines: *lines,
                    });
                    self.entries.pop_front();
                }
                Entry::Lines(ev, sent) => {
                    if room == 0 {
                        break;
                    }
                    let rest = &ev.lines[*sent..];
                    let take = if rest.len() <= room {
                        rest.len()
                    } else {
                        memchr::memrchr(b'\n', &rest[..room]).map(|i| i + 1).unwrap_or(room)
                    };
                    items.push(LogItem::Lines {
                        app: ev.app.to_string(),
                        instance: ev.instance,
                        stream: wire_stream(ev.stream),
                        at_ms: ev.at_ms,
                        text: LogBytes(rest[..take].to_vec()),
                    });
                    room -= take;
                    *sent += take;
                    self.bytes -= take;
                    if *sent == ev.lines.len() {
                        self.entries.pop_front();
                    }
                }
            }
        }
        items
    }
}

/// Counts a follower in `ping` while it lives.
struct Counted(Arc<Daemon>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One `herder logs -f` client.
pub(crate) struct Follower {
    rx: broadcast::Receiver<LogEvent>,
    filter: Filter,
    queue: Queue,
    counted: Counted,
}

impl Follower {
    fn new(d: Arc<Daemon>, rx: broadcast::Receiver<LogEvent>, filter: Filter) -> Follower {
        d.followers.fetch_add(1, Ordering::Relaxed);
        Follower { rx, filter, queue: Queue::default(), counted: Counted(d) }
    }

    /// Send new lines until the client hangs up (noticed at once, lines or not) or the
    /// daemon stops.
    pub(crate) async fn run(mut self, stream: UnixStream) {
        let (mut rd, mut wr) = stream.into_split();
        let mut frame: Vec<u8> = Vec::new();
        let mut sent = 0;
        let mut probe = [0u8; 64];
        loop {
            if sent == frame.len() {
                frame.clear();
                sent = 0;
                self.queue.report_skipped();
                let items = self.queue.next_items();
                if !items.is_empty() {
                    match protocol::encode_frame(&Response::LogLines(items)) {
                        Ok(f) => frame = f,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot encode log lines for a follower");
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                // The client sends nothing more: any read result means it is gone.
                _ = rd.read(&mut probe) => break,
                ev = self.rx.recv() => match ev {
                    Ok(ev) => {
                        if self.filter.wants(&self.counted.0, &ev) {
                            self.queue.offer(ev);
                        }
                    }
                    // The gap shows in the line numbers of the next event of each stream.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                n = wr.write(&frame[sent..]), if sent < frame.len() => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sent += n,
                },
            }
        }
        tracing::debug!("a log follower left");
        drop(self);
        // Its queue may have held megabytes.
        super::trim_memory();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, text: &str) -> LogEvent {
        LogEvent {
            app: "web".into(),
            instance: 0,
            stream: Stream::Out,
            at_ms: 1,
            seq,
            lines: text.as_bytes().into(),
        }
    }

    fn drain(q: &mut Queue) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            q.report_skipped();
            let items = q.next_items();
            if items.is_empty() {
                return got;
            }
            for i in items {
                got.push(match i {
                    LogItem::Lines { text, .. } => String::from_utf8(text.0).unwrap(),
                    LogItem::Skipped { lines, .. } => format!("[{lines} skipped]"),
                });
            }
        }
    }

    #[test]
    fn lines_in_order_and_gaps_reported_as_skipped_lines() {
        let mut q = Queue::default();
        q.offer(ev(10, "a\nb\n"));
        q.offer(ev(12, "c\n"));
        // The broadcast channel lost events holding lines 13..20.
        q.offer(ev(20, "u\n"));
        assert_eq!(drain(&mut q), ["a\nb\n", "c\n", "[7 skipped]", "u\n"]);
    }

    #[test]
    fn a_full_queue_skips_and_reports_once_drained() {
        let mut q = Queue::default();
        let big = "x".repeat(QUEUE_BYTES - 10) + "\n";
        q.offer(ev(0, &big));
        q.offer(ev(1, "dropped 1\ndropped 2\n"));
        q.offer(ev(3, "dropped 3\n"));
        let got = drain(&mut q);
        assert_eq!(got.last().unwrap(), "[3 skipped]");
        assert_eq!(got[..got.len() - 1].concat(), big, "the big event arrives whole, in pieces");
        // Then the stream goes on normally.
        q.offer(ev(4, "next\n"));
        assert_eq!(drain(&mut q), ["next\n"]);
    }

    #[test]
    fn a_restarted_process_counts_from_zero_without_a_false_gap() {
        let mut q = Queue::default();
        q.offer(ev(5, "old\n"));
        q.offer(ev(0, "new\n"));
        q.offer(ev(1, "new 2\n"));
        assert_eq!(drain(&mut q), ["old\n", "new\n", "new 2\n"]);
    }

    #[test]
    fn pieces_of_a_large_event_are_cut_after_newlines() {
        let mut q = Queue::default();
        let line = "y".repeat(1000) + "\n";
        let text = line.repeat(FRAME_TEXT / 1000 + 5);
        q.offer(ev(0, &text));
        let first = q.next_items();
        let LogItem::Lines { text: piece, .. } = &first[0] else { panic!() };
        assert!(piece.0.len() <= FRAME_TEXT && piece.0.ends_with(b"\n"));
        assert_eq!(piece.0.len() % line.len(), 0);
    }
}
