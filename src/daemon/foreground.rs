//! `herder run`: the daemon in the foreground, for containers (PM2's `pm2-runtime`). It is the
//! ordinary daemon of its `HERDER_HOME` (lock, socket, `herder list` from another shell), and
//! besides:
//!
//! - every app's output goes to herder's stdout (stderr lines to stderr), each line prefixed
//!   with the app's name (`web    | GET / 200`), and herder's own messages and the supervision
//!   events to stderr as `herder | …`. Lines reach the terminal through the log hub's
//!   broadcast on a thread of their own, so a slow terminal never blocks an app: it is told
//!   how much it missed (the lines are in the log files);
//! - as PID 1 it reaps every orphan (the daemon's reaper waits for any child, and only hands
//!   the exits of its own instances to their actors);
//! - SIGTERM or SIGINT stop every app gracefully (each within its `kill_timeout`), then herder
//!   exits 0 if every app ended within that time, 1 if one had to be killed;
//! - with `--exit-when-empty`, herder stops once no app is left running (every app stopped,
//!   done or errored), exiting 1 if one is errored.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

use super::Daemon;
use crate::logs::{Hub, LogEvent, Stream};
use crate::protocol::{AppSpec, Event, Status};

/// What `herder run` starts and how it ends.
#[derive(Debug, Clone, Default)]
pub struct Foreground {
    /// The apps of the config file.
    pub specs: Vec<AppSpec>,
    /// Where they came from, for the first message.
    pub source: String,
    /// Stop and exit once no app is left running.
    pub exit_when_empty: bool,
}

/// How long the end of the output may take to reach the terminal after the last app stopped.
const DRAIN: Duration = Duration::from_secs(2);

/// The thread that writes the apps' output and herder's messages.
pub(crate) struct Output {
    say: mpsc::UnboundedSender<String>,
    stop: Option<oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Output {
    /// Subscribe to the apps' output and events now (before any app starts, so nothing is
    /// missed) and start writing them.
    pub fn start(
        hub: &Hub,
        events: broadcast::Receiver<Event>,
        specs: &[AppSpec],
    ) -> std::io::Result<Output> {
        let lines = hub.subscribe();
        let (say, said) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let labels = Labels::new(specs);
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        std::thread::Builder::new().name("herder-output".into()).spawn(move || {
            runtime.block_on(write_all(labels, lines, events, said, stopped));
            let _ = done_tx.send(());
        })?;
        Ok(Output { say, stop: Some(stop), done })
    }

    /// One line of herder's own, on stderr.
    pub fn say(&self, message: impl Into<String>) {
        let _ = self.say.send(message.into());
    }

    /// Let the last lines of the stopped apps through, then stop the writer.
    pub async fn finish(mut self, hub: &Hub) {
        let _ = tokio::time::timeout(DRAIN, hub.pipes_drained()).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = self.done;
        let _ = tokio::task::spawn_blocking(move || done.recv_timeout(DRAIN)).await;
    }
}

/// The prefix of each app's lines, all padded to one width.
struct Labels {
    /// Instances of each app known at the start (more than one: `name:n` labels).
    instances: HashMap<String, u32>,
    width: usize,
}

impl Labels {
    fn new(specs: &[AppSpec]) -> Labels {
        let instances: HashMap<String, u32> = specs.iter().map(|s| (s.name.clone(), s.instances)).collect();
        let mut l = Labels { instances, width: "herder".len() };
        for s in specs {
            let w = l.label(&s.name, s.instances.saturating_sub(1)).chars().count();
            l.width = l.width.max(w);
        }
        l
    }

    fn label(&self, app: &str, instance: u32) -> String {
        let many = self.instances.get(app).map_or(instance > 0, |n| *n > 1);
        if many {
            format!("{app}:{instance}")
        } else {
            app.to_string()
        }
    }

    /// `label | ` padded, as bytes.
    fn prefix(&mut self, label: &str) -> Vec<u8> {
        self.width = self.width.max(label.chars().count());
        format!("{label:<w$} | ", w = self.width).into_bytes()
    }
}

/// Prefix every line of `text` (whole lines, the last possibly unterminated) into `out`.
fn prefixed(out: &mut Vec<u8>, prefix: &[u8], text: &[u8]) {
    for line in text.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(prefix);
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
}

/// One line of herder's own, on stderr.
fn own(labels: &mut Labels, text: &str) {
    let mut out = Vec::new();
    prefixed(&mut out, &labels.prefix("herder"), text.as_bytes());
    write(Stream::Err, &out);
}

/// Write to stdout or stderr; a closed one (EPIPE) is silently given up.
fn write(stream: Stream, bytes: &[u8]) {
    let _ = match stream {
        Stream::Out => std::io::stdout().lock().write_all(bytes),
        Stream::Err => std::io::stderr().lock().write_all(bytes),
    };
}

fn event_text(labels: &Labels, e: &Event) -> Option<String> {
    if e.kind == crate::protocol::EventKind::Lagged {
        return None;
    }
    let mut s = format!("{} {}", labels.label(&e.app, e.instance), e.kind);
    if let Some(exit) = &e.exit {
        s.push_str(&format!(" {exit}"));
    }
    if let Some(pid) = e.pid {
        s.push_str(&format!(" pid {pid}"));
    }
    if let Some(d) = &e.detail {
        s.push_str(&format!(" ({d})"));
    }
    Some(s)
}

async fn write_all(
    mut labels: Labels,
    mut lines: broadcast::Receiver<LogEvent>,
    mut events: broadcast::Receiver<Event>,
    mut said: mpsc::UnboundedReceiver<String>,
    mut stop: oneshot::Receiver<()>,
) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut buf = Vec::new();
    let mut stopping = false;
    loop {
        // Output first: herder's messages about an app come after the app's last lines.
        tokio::select! {
            biased;
            got = lines.recv() => match got {
                Ok(ev) => {
                    buf.clear();
                    let label = labels.label(&ev.app, ev.instance);
                    prefixed(&mut buf, &labels.prefix(&label), &ev.lines);
                    write(ev.stream, &buf);
                }
                Err(RecvError::Lagged(n)) => own(&mut labels, &format!(
                    "{n} pieces of app output skipped: the terminal read too slowly (they are in the log files)"
                )),
                Err(RecvError::Closed) => return,
            },
            got = events.recv() => match got {
                Ok(e) => if let Some(text) = event_text(&labels, &e) { own(&mut labels, &text) },
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {}
            },
            Some(text) = said.recv() => own(&mut labels, &text),
            _ = &mut stop, if !stopping => stopping = true,
            else => return,
        }
        if stopping {
            // Whatever is queued now is the end of the output.
            loop {
                match lines.try_recv() {
                    Ok(ev) => {
                        buf.clear();
                        let label = labels.label(&ev.app, ev.instance);
                        prefixed(&mut buf, &labels.prefix(&label), &ev.lines);
                        write(ev.stream, &buf);
                    }
                    Err(TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            while let Ok(e) = events.try_recv() {
                if let Some(text) = event_text(&labels, &e) {
                    own(&mut labels, &text);
                }
            }
            while let Ok(text) = said.try_recv() {
                own(&mut labels, &text);
            }
            return;
        }
    }
}

/// Return once no instance is running, launching, stopping or waiting to restart (every app
/// stopped, done or errored, or none left). Woken by the instances' state changes.
pub(crate) async fn until_empty(d: &Arc<Daemon>) {
    loop {
        let handles: Vec<_> = d.registry().apps.values().flat_map(|a| a.instances.clone()).collect();
        let mut busy = JoinSet::new();
        for h in handles {
            let mut rx = h.watch();
            let status = rx.borrow_and_update().status;
            if !matches!(status, Status::Stopped | Status::Errored) {
                busy.spawn(async move {
                    let _ = rx.changed().await;
                });
            }
        }
        if busy.is_empty() {
            return;
        }
        busy.join_next().await;
    }
}

/// Names of the errored instances (`web:0`), for `--exit-when-empty`'s exit code.
pub(crate) fn errored(d: &Daemon) -> Vec<String> {
    let reg = d.registry();
    reg.apps
        .values()
        .flat_map(|a| {
            a.instances
                .iter()
                .map(|h| h.info())
                .filter(|i| i.status == Status::Errored)
                .map(|i| format!("{}:{}", a.spec().name, i.index))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn lines_get_padded_prefixes_and_a_final_newline() {
        let mut web = AppSpec::new("web", "/bin/true", PathBuf::from("/"));
        web.instances = 2;
        let worker = AppSpec::new("worker", "/bin/true", PathBuf::from("/"));
        let mut labels = Labels::new(&[web, worker]);
        assert_eq!(labels.label("web", 1), "web:1");
        assert_eq!(labels.label("worker", 0), "worker");
        assert_eq!(labels.label("later", 0), "later");
        assert_eq!(labels.label("later", 2), "later:2");
        let mut out = Vec::new();
        let p = labels.prefix("web:0");
        prefixed(&mut out, &p, b"one\ntwo\nthree");
        assert_eq!(String::from_utf8(out).unwrap(), "web:0  | one\nweb:0  | two\nweb:0  | three\n");
        assert_eq!(labels.prefix("herder"), b"herder | ");
    }
}
