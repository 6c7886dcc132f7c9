//! `herder monit`: a terminal dashboard that is a plain protocol client. Every second it asks
//! the daemon for the list and keeps one CPU and memory sample per instance per refresh
//! (starting from the daemon's last minute, which `show` carries, when an app is selected); it
//! follows the selected app's logs on a connection of their own; restart and stop go out as
//! the same requests `herder restart` and `herder stop` send.
//!
//! Everything runs on the CLI's single-threaded runtime: one task per connection sends
//! [`Msg`]s to the event loop, which owns the [`model::Model`] and redraws after each batch.
//! Keys come from a thread that blocks on the terminal.

pub mod model;
pub mod view;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::client::{Client, ClientError};
use crate::logs::format::line_time;
use crate::paths::Paths;
use crate::protocol::{now_ms, AppInfo, LogItem, LogStream, Request, Response, Target};
use model::{Action, Key, LogLine, Model};

/// How often the list is asked for (and the screen redrawn at the least).
const REFRESH: Duration = Duration::from_secs(1);
/// Lines read back from each log file when an app is selected.
const TAIL_LINES: usize = 200;

/// What the tasks tell the event loop.
enum Msg {
    Key(Key),
    /// The terminal changed size: redraw.
    Redraw,
    Apps {
        apps: Vec<AppInfo>,
        daemon_pid: u32,
    },
    DaemonError(String),
    /// Lines of the app followed by follower `generation`.
    LogTail {
        generation: u64,
        lines: Vec<LogLine>,
    },
    LogItems {
        generation: u64,
        items: Vec<LogItem>,
    },
    LogError {
        generation: u64,
        message: String,
    },
    /// The daemon's recent samples of an app's instances.
    Seed {
        app_id: u32,
        instances: Vec<(u32, Vec<(f32, u64)>)>,
    },
    Notice(String),
}

/// Run the dashboard until `q`; 1 when there is no terminal to draw on.
pub async fn run(paths: &Paths) -> Result<i32> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        let which = if std::io::stdout().is_terminal() { "stdin" } else { "stdout" };
        eprintln!(
            "error: herder monit draws a dashboard and needs a terminal, but {which} is not one\n\
             hint: `herder list` (or `herder list --json`) prints the same figures once; \
             `herder logs` follows the logs"
        );
        return Ok(1);
    }
    // Connect (starting the daemon, as every command does) before taking over the screen, so
    // that errors print as usual.
    let client = Client::connect(paths, true).await?;

    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            // Raw mode may be on already.
            ratatui::restore();
            return Err(anyhow::anyhow!("cannot set up the terminal: {e}"));
        }
    };
    let result = event_loop(&mut terminal, paths, client).await;
    ratatui::restore();
    result.map(|()| 0)
}

async fn event_loop(terminal: &mut ratatui::DefaultTerminal, paths: &Paths, client: Client) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let stop_keys = Arc::new(AtomicBool::new(false));
    let keys = {
        let tx = tx.clone();
        let stop = stop_keys.clone();
        std::thread::spawn(move || read_keys(tx, stop))
    };
    let refresh_now = Arc::new(Notify::new());
    let poller = tokio::spawn(poll_list(paths.clone(), client, tx.clone(), refresh_now.clone()));

    let mut m = Model::default();
    let mut follower: Option<(u64, JoinHandle<()>)> = None;
    let mut generation = 0u64;
    let result = loop {
        let Some(first) = rx.recv().await else { break Ok(()) };
        let mut quit = false;
        let mut refreshed = false;
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for msg in batch {
            match msg {
                Msg::Key(k) => match m.key(k) {
                    Some(Action::Quit) => quit = true,
                    Some(action) => {
                        m.notice = Some(pending_text(&action));
                        tokio::spawn(act(paths.clone(), action, tx.clone(), refresh_now.clone()));
                    }
                    None => {}
                },
                Msg::Redraw => {}
                Msg::Apps { apps, daemon_pid } => {
                    m.daemon_pid = Some(daemon_pid);
                    m.update(&apps, now_ms());
                    refreshed = true;
                }
                Msg::DaemonError(e) => {
                    m.error = Some(e);
                    m.now_ms = now_ms();
                }
                Msg::LogTail { generation: g, lines } if g == generation => m.log_tail(lines),
                Msg::LogItems { generation: g, items } if g == generation => m.log_items(items),
                Msg::LogError { generation: g, message } if g == generation => {
                    m.log_tail(vec![LogLine { instance: 0, stream: LogStream::Err, text: message }]);
                    // Follow again at the next refresh.
                    follower = None;
                }
                Msg::LogTail { .. } | Msg::LogItems { .. } | Msg::LogError { .. } => {}
                Msg::Seed { app_id, instances } => m.seed(app_id, instances),
                Msg::Notice(n) => m.notice = Some(n),
            }
        }
        if quit {
            break Ok(());
        }
        // The daemon keeps the last minute of samples: start the selected app's sparklines
        // from there rather than from nothing.
        if let Some(app_id) = m.selected_row().map(|r| r.app_id) {
            if m.error.is_none() && m.seeded.insert(app_id) {
                tokio::spawn(seed(paths.clone(), app_id, tx.clone()));
            }
        }
        // Follow the selected app's logs; after a failure, again at the next refresh.
        let want = m.selected_row().map(|r| r.app_id);
        let lost = follower.is_none() && want.is_some() && refreshed;
        if want != m.logs_app || lost {
            if let Some((_, task)) = follower.take() {
                task.abort();
            }
            m.follow_logs(want);
            if let Some(app_id) = want {
                generation += 1;
                let task = tokio::spawn(follow_logs(paths.clone(), app_id, generation, tx.clone()));
                follower = Some((generation, task));
            }
        }
        if let Err(e) = terminal.draw(|f| view::draw(f, &m)) {
            break Err(e.into());
        }
    };
    stop_keys.store(true, Ordering::Relaxed);
    poller.abort();
    if let Some((_, task)) = follower {
        task.abort();
    }
    drop(rx);
    let _ = keys.join();
    result
}

/// Turn terminal events into [`Msg`]s until told to stop or the loop is gone.
fn read_keys(tx: mpsc::UnboundedSender<Msg>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let msg = match event::read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                let key = match k.code {
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
                    KeyCode::Up => Key::Up,
                    KeyCode::Down => Key::Down,
                    KeyCode::Home => Key::First,
                    KeyCode::End => Key::Last,
                    KeyCode::Esc => Key::Esc,
                    KeyCode::Char(c) => Key::Char(c),
                    _ => continue,
                };
                Msg::Key(key)
            }
            Ok(Event::Resize(..)) => Msg::Redraw,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Ask for the list every second (and at once after an action), reconnecting when the daemon
/// went away. Never starts a daemon: one that stopped stays stopped until the user says so.
async fn poll_list(paths: Paths, client: Client, tx: mpsc::UnboundedSender<Msg>, now: Arc<Notify>) {
    let mut client = Some(client);
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = now.notified() => tick.reset(),
        }
        if client.is_none() {
            match Client::connect(&paths, false).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    let text = match e {
                        ClientError::NoDaemon { .. } => {
                            "no daemon runs; `herder ping` starts one (retrying every second)".to_string()
                        }
                        e => format!("cannot reach the daemon: {e} (retrying every second)"),
                    };
                    if tx.send(Msg::DaemonError(text)).is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        let msg = match c.request(&Request::List).await {
            Ok(Response::List { apps, .. }) => Msg::Apps { apps, daemon_pid: c.daemon_pid },
            Ok(Response::Error(e)) => Msg::DaemonError(e.message),
            Ok(_) => Msg::DaemonError("unexpected answer from the daemon".into()),
            Err(e) => {
                client = None;
                Msg::DaemonError(format!("lost the daemon: {e} (retrying every second)"))
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

fn pending_text(a: &Action) -> String {
    match a {
        Action::Restart { name, .. } => format!("restarting `{name}`…"),
        Action::Stop { name, .. } => format!("stopping `{name}`…"),
        Action::Reload { name, .. } => format!("reloading `{name}`…"),
        Action::Quit => String::new(),
    }
}

/// Carry out an action on its own connection: a restart waits for the app to stop, and the
/// dashboard keeps refreshing meanwhile.
async fn act(paths: Paths, action: Action, tx: mpsc::UnboundedSender<Msg>, refresh: Arc<Notify>) {
    let (req, done, name) = match action {
        // By name: a number targets one instance of an app of several.
        Action::Restart { name, .. } => (
            Request::Restart { targets: vec![Target::Name(name.clone())], env: None, specs: Vec::new() },
            "restarted",
            name,
        ),
        Action::Reload { name, .. } => (
            Request::Reload { targets: vec![Target::Name(name.clone())], env: None, specs: Vec::new() },
            "reloaded",
            name,
        ),
        Action::Stop { name, .. } => {
            (Request::Stop { targets: vec![Target::Name(name.clone())] }, "stopped", name)
        }
        Action::Quit => return,
    };
    let res = match Client::connect(&paths, false).await {
        Ok(mut c) => c.request(&req).await,
        Err(e) => Err(e),
    };
    let text = match res {
        Ok(Response::Error(e)) => format!("`{name}`: {}", e.message),
        Ok(_) => format!("{done} `{name}`"),
        Err(e) => format!("`{name}`: {e}"),
    };
    let _ = tx.send(Msg::Notice(text));
    refresh.notify_one();
}

/// Ask the daemon for an app's recent samples (`show` carries them).
async fn seed(paths: Paths, app_id: u32, tx: mpsc::UnboundedSender<Msg>) {
    let Ok(mut c) = Client::connect(&paths, false).await else { return };
    let req = Request::Show { target: Target::Name(app_id.to_string()) };
    if let Ok(Response::Show { app }) = c.request(&req).await {
        let instances = app.instances.into_iter().map(|i| (i.index, i.usage_history)).collect();
        let _ = tx.send(Msg::Seed { app_id, instances });
    }
}

/// Follow one app's logs: the last lines of its files, then every new line.
async fn follow_logs(paths: Paths, app_id: u32, generation: u64, tx: mpsc::UnboundedSender<Msg>) {
    let fail = |message: String| {
        let _ = tx.send(Msg::LogError { generation, message });
    };
    let mut c = match Client::connect(&paths, false).await {
        Ok(c) => c,
        Err(e) => return fail(format!("[herder: cannot follow the logs: {e}]")),
    };
    let req = Request::Logs {
        targets: vec![Target::Name(app_id.to_string())],
        follow: true,
        out: false,
        err: false,
    };
    let (apps, marks) = match c.request(&req).await {
        Ok(Response::Logs { apps, marks }) => (apps, marks),
        Ok(Response::Error(e)) => return fail(format!("[herder: {}]", e.message)),
        Ok(_) => return fail("[herder: unexpected answer from the daemon]".into()),
        Err(e) => return fail(format!("[herder: cannot follow the logs: {e}]")),
    };
    let lines = tokio::task::spawn_blocking(move || tail(&apps, &marks)).await.unwrap_or_default();
    if tx.send(Msg::LogTail { generation, lines }).is_err() {
        return;
    }
    loop {
        match c.next().await {
            Ok(Response::LogLines(items)) => {
                if tx.send(Msg::LogItems { generation, items }).is_err() {
                    return;
                }
            }
            Ok(Response::Error(e)) => return fail(format!("[herder: {}]", e.message)),
            Ok(_) => {}
            Err(e) => return fail(format!("[herder: the log stream ended: {e}]")),
        }
    }
}

/// The last lines of an app's files up to the daemon's marks, in time order when every line
/// carries a time, else file by file.
fn tail(apps: &[AppInfo], marks: &[crate::protocol::FileMark]) -> Vec<LogLine> {
    let mut lines: Vec<(Option<i64>, LogLine)> = Vec::new();
    let mut seen = Vec::new();
    for app in apps {
        for (k, (out, err)) in app.log_files.iter().enumerate() {
            let instance = app.instances.get(k).map(|i| i.index).unwrap_or(k as u32);
            for (path, stream) in [(out, LogStream::Out), (err, LogStream::Err)] {
                if path.as_os_str() == "/dev/null" || seen.contains(path) {
                    continue;
                }
                seen.push(path.clone());
                let mark = marks.iter().find(|m| m.path == *path);
                let Ok(got) = crate::logs::tail::tail_lines(path, mark, TAIL_LINES) else { continue };
                lines.extend(
                    got.iter().map(|b| (line_time(b), LogLine { instance, stream, text: model::clean(b) })),
                );
            }
        }
    }
    if lines.iter().all(|(t, _)| t.is_some()) {
        lines.sort_by_key(|(t, _)| *t);
    }
    lines.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::model::tests::app;

    fn texts(lines: &[LogLine]) -> Vec<(LogStream, &str)> {
        lines.iter().map(|l| (l.stream, l.text.as_str())).collect()
    }

    #[test]
    fn tail_merges_timestamped_files_in_time_order_and_others_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("a.out.log"), dir.path().join("a.err.log"));
        let mut a = app(0, "a", &[(crate::protocol::Status::Online, Some(1), 0)]);
        a.log_files = vec![(out.clone(), err.clone())];

        std::fs::write(&out, "2024-01-01 10:00:00 one\n2024-01-01 10:00:02 three\n").unwrap();
        std::fs::write(&err, "2024-01-01 10:00:01 two\n").unwrap();
        let got = tail(std::slice::from_ref(&a), &[]);
        // No marks: the daemon saw no files, so only rotated ones (none) count.
        assert!(got.is_empty());
        let mark = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(p).unwrap();
            crate::protocol::FileMark { path: p.to_path_buf(), inode: m.ino(), size: m.len() }
        };
        let marks = [mark(&out), mark(&err)];
        let got = tail(std::slice::from_ref(&a), &marks);
        assert_eq!(
            texts(&got),
            [
                (LogStream::Out, "2024-01-01 10:00:00 one"),
                (LogStream::Err, "2024-01-01 10:00:01 two"),
                (LogStream::Out, "2024-01-01 10:00:02 three"),
            ]
        );

        std::fs::write(&out, "b\nc\n").unwrap();
        std::fs::write(&err, "a\n").unwrap();
        let marks = [mark(&out), mark(&err)];
        let got = tail(std::slice::from_ref(&a), &marks);
        assert_eq!(texts(&got), [(LogStream::Out, "b"), (LogStream::Out, "c"), (LogStream::Err, "a")]);
    }
}
