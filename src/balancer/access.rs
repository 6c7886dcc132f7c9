//! The access log (`access_log = true`): one JSON line per request, in `<app>-access.log` beside
//! the app's other logs, rotated by the app's log settings (`log_max_size`, `log_retain` …).
//!
//! The request path never waits on the disk: it hands each line to a writer thread through a
//! bounded queue, and a line that finds the queue full is counted as dropped (the next line
//! written says how many were).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::logs::file::{LogFile, Rotation};

/// Lines waiting for the writer, at most.
const QUEUE: usize = 16 * 1024;

/// The sending end, held by the balancer; the writer ends once it is dropped.
pub struct AccessLog {
    pub path: PathBuf,
    pub rotation: Rotation,
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

/// One request as the access log records it.
pub struct Entry<'a> {
    pub client: std::net::IpAddr,
    pub method: &'a str,
    pub target: &'a str,
    pub version: &'a str,
    pub status: u16,
    /// The instance's slot, when one answered.
    pub instance: Option<u32>,
    /// Time to the answer's headers.
    pub took: std::time::Duration,
}

impl AccessLog {
    /// Open `path` and start its writer; `Err` in the user's words.
    pub fn open(app: &str, path: PathBuf, rotation: Rotation) -> Result<AccessLog, String> {
        let file = LogFile::open(path.clone(), rotation.clone())
            .map_err(|e| format!("app `{app}`: cannot open its access log {}: {e}", path.display()))?;
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write(file, rx, counted))
            .map_err(|e| format!("app `{app}`: cannot start its access log: {e}"))?;
        Ok(AccessLog { path, rotation, tx, dropped })
    }

    pub fn record(&self, e: &Entry<'_>) {
        let line = serde_json::json!({
            "time": jiff::Timestamp::now().round(jiff::Unit::Millisecond).map(|t| t.to_string()).unwrap_or_default(),
            "client": e.client.to_string(),
            "method": e.method,
            "target": e.target,
            "version": e.version,
            "status": e.status,
            "instance": e.instance,
            "ms": (e.took.as_secs_f64() * 1e6).round() / 1e3,
        })
        .to_string();
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer: lines in batches, as they come.
fn write(mut file: LogFile, rx: Receiver<String>, dropped: Arc<AtomicU64>) {
    while let Ok(first) = rx.recv() {
        let mut batch = first;
        batch.push('\n');
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push_str(&format!("{{\"dropped\":{lost},\"why\":\"the access log's queue was full\"}}\n"));
        }
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(line) => {
                    batch.push_str(&line);
                    batch.push('\n');
                }
                Err(_) => break,
            }
        }
        file.write_lines(&[batch.as_bytes()]);
    }
}
