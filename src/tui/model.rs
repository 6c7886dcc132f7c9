//! What the dashboard shows, apart from any terminal: the instances from the last `list`,
//! their CPU and memory history (kept here, one sample per refresh), the selected app's log
//! lines, and what the keys do. [`super::view`] draws it; tests build one by hand.

use std::collections::{HashMap, VecDeque};

use std::collections::HashSet;

use crate::protocol::{AppInfo, LogItem, LogStream, Status};

/// Samples of history kept per instance (the widest sparkline shows fewer).
pub const HISTORY: usize = 300;
/// Log lines kept for the selected app.
pub const LOG_LINES: usize = 1000;

/// One instance, as a table row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub app_id: u32,
    /// The instance's own id, as `list` shows it (the app's for its first instance).
    pub id: u32,
    pub name: String,
    pub index: u32,
    /// Instances of its app (names get `:index` when over one).
    pub instances: usize,
    pub status: Status,
    pub pid: Option<u32>,
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub restarts: u32,
    pub started_at_ms: Option<u64>,
    /// Its app's balancer in a few words, when it has one.
    pub balancer: Option<String>,
    /// Its state in its app's balancer, when it has one: in the pool and its requests under
    /// way, or why it is out.
    pub pool: Option<String>,
}

impl Row {
    pub fn key(&self) -> (u32, u32) {
        (self.app_id, self.index)
    }

    pub fn label(&self) -> String {
        if self.instances > 1 {
            format!("{}:{}", self.name, self.index)
        } else {
            self.name.clone()
        }
    }
}

/// Samples of one instance, oldest first; `None` where the instance had no process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// CPU in tenths of a percent.
    pub cpu: VecDeque<Option<u64>>,
    pub mem: VecDeque<Option<u64>>,
}

impl History {
    fn push(&mut self, cpu: Option<f64>, mem: Option<u64>) {
        if self.cpu.len() == HISTORY {
            self.cpu.pop_front();
            self.mem.pop_front();
        }
        self.cpu.push_back(cpu.map(|c| (c * 10.0).round().max(0.0) as u64));
        self.mem.push_back(mem);
    }
}

/// An instance's state in its balancer: `in · 3 under way`, `out: failing`, `out: not ready`.
/// During a reload a slot has two members (the old and the new generation): the one in the
/// pool speaks for the slot.
pub fn pool_state(b: &crate::protocol::BalancerView, slot: u32) -> String {
    let mut members: Vec<_> = b.members.iter().filter(|m| m.slot == slot).collect();
    members.sort_by_key(|m| (!m.up, std::cmp::Reverse(m.generation)));
    match members.first() {
        Some(m) if m.up => format!("in · {} under way", m.active),
        Some(m) if m.down => "out: failing".into(),
        Some(_) => "out: not ready".into(),
        None => "out: not in the pool".into(),
    }
}

/// `balancer :8080 http · 2/3 in the pool · 12 connections · 5 under way`.
pub fn balancer_summary(b: &crate::protocol::BalancerView) -> String {
    let up = b.members.iter().filter(|m| m.up).count();
    let active: u32 = b.members.iter().map(|m| m.active).sum();
    format!(
        "balancer {} {} · {up}/{} in the pool · {} connections · {active} under way",
        b.listen,
        b.mode,
        b.members.len(),
        b.connections
    )
}

/// A line of the log pane, made safe to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub instance: u32,
    pub stream: LogStream,
    pub text: String,
}

/// What a key asks the event loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    Restart {
        app_id: u32,
        name: String,
    },
    Stop {
        app_id: u32,
        name: String,
    },
    /// A reload: rolling in cluster mode, a restart otherwise.
    Reload {
        app_id: u32,
        name: String,
    },
}

/// A key, as the model understands it (the event loop maps terminal keys to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    First,
    Last,
    Char(char),
    Esc,
    /// Ctrl-C: raw mode turns it into a key.
    Interrupt,
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub rows: Vec<Row>,
    pub selected: usize,
    pub history: HashMap<(u32, u32), History>,
    /// Apps whose history was asked of the daemon (once each, when first selected).
    pub seeded: HashSet<u32>,
    /// The app whose lines `logs` holds.
    pub logs_app: Option<u32>,
    pub logs: VecDeque<LogLine>,
    /// Ends of lines still being written, per instance and stream.
    partial: HashMap<(u32, LogStream), Vec<u8>>,
    /// The last action's outcome, for the footer.
    pub notice: Option<String>,
    /// Why the daemon cannot be reached, while it cannot.
    pub error: Option<String>,
    pub daemon_pid: Option<u32>,
    /// The clock the view measures uptimes against (Unix ms).
    pub now_ms: u64,
    /// Refreshes so far.
    pub refreshes: u64,
}

impl Model {
    /// Take a fresh `list`: rows, one history sample per instance, the selection kept on the
    /// same instance when it still exists.
    pub fn update(&mut self, apps: &[AppInfo], now_ms: u64) {
        let selected_key = self.selected_row().map(Row::key);
        self.rows = apps
            .iter()
            .flat_map(|app| {
                app.instances.iter().map(move |i| Row {
                    app_id: app.id,
                    id: i.id.unwrap_or(app.id),
                    name: app.spec.name.clone(),
                    index: i.index,
                    instances: app.instances.len(),
                    status: i.status,
                    pid: i.pid,
                    cpu_percent: i.cpu_percent.map(f64::from),
                    memory_bytes: i.memory_bytes,
                    restarts: i.restarts,
                    started_at_ms: i.started_at_ms,
                    balancer: app.balancer.as_ref().map(balancer_summary),
                    pool: app.balancer.as_ref().map(|b| pool_state(b, i.index)),
                })
            })
            .collect();
        for row in &self.rows {
            let running = row.status.is_running() && row.pid.is_some();
            let (cpu, mem) = if running { (row.cpu_percent, row.memory_bytes) } else { (None, None) };
            self.history.entry(row.key()).or_default().push(cpu, mem);
        }
        let keys: Vec<(u32, u32)> = self.rows.iter().map(Row::key).collect();
        self.history.retain(|k, _| keys.contains(k));
        self.selected = selected_key
            .and_then(|k| self.rows.iter().position(|r| r.key() == k))
            .unwrap_or(self.selected)
            .min(self.rows.len().saturating_sub(1));
        self.now_ms = now_ms;
        self.refreshes += 1;
        self.error = None;
    }

    /// The daemon's recent samples of an app's instances (`(index, [(cpu %, bytes)])`, oldest
    /// first): they replace what this dashboard has gathered when they go further back.
    pub fn seed(&mut self, app_id: u32, instances: Vec<(u32, Vec<(f32, u64)>)>) {
        for (index, samples) in instances {
            let Some(h) = self.history.get_mut(&(app_id, index)) else { continue };
            if samples.len() <= h.cpu.len() {
                continue;
            }
            let mut seeded = History::default();
            for (cpu, mem) in samples.into_iter().rev().take(HISTORY).rev() {
                seeded.push(Some(f64::from(cpu)), Some(mem));
            }
            *h = seeded;
        }
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.rows.get(self.selected)
    }

    pub fn selected_history(&self) -> Option<&History> {
        self.selected_row().and_then(|r| self.history.get(&r.key()))
    }

    /// Handle a key; returns what the event loop must do, if anything.
    pub fn key(&mut self, key: Key) -> Option<Action> {
        let last = self.rows.len().saturating_sub(1);
        match key {
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') => self.selected = (self.selected + 1).min(last),
            Key::First | Key::Char('g') => self.selected = 0,
            Key::Last | Key::Char('G') => self.selected = last,
            Key::Char('q') | Key::Esc | Key::Interrupt => return Some(Action::Quit),
            Key::Char(c @ ('r' | 's' | 'l')) => {
                let row = self.selected_row()?;
                let (app_id, name) = (row.app_id, row.name.clone());
                return Some(match c {
                    'r' => Action::Restart { app_id, name },
                    's' => Action::Stop { app_id, name },
                    _ => Action::Reload { app_id, name },
                });
            }
            _ => {}
        }
        None
    }

    /// Start showing the lines of `app_id` (none yet).
    pub fn follow_logs(&mut self, app_id: Option<u32>) {
        self.logs_app = app_id;
        self.logs.clear();
        self.partial.clear();
    }

    /// Lines read back from the files when following began.
    pub fn log_tail(&mut self, lines: Vec<LogLine>) {
        for l in lines {
            self.push_log(l);
        }
    }

    /// Lines from the follow stream. A piece without a newline waits for the rest.
    pub fn log_items(&mut self, items: Vec<LogItem>) {
        for item in items {
            match item {
                LogItem::Lines { instance, stream, text, .. } => {
                    let buf = self.partial.entry((instance, stream)).or_default();
                    buf.extend_from_slice(&text.0);
                    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else { continue };
                    let rest = buf.split_off(end + 1);
                    let done = std::mem::replace(buf, rest);
                    for line in done[..done.len() - 1].split(|b| *b == b'\n') {
                        self.push_log(LogLine { instance, stream, text: clean(line) });
                    }
                }
                LogItem::Skipped { instance, stream, lines, .. } => self.push_log(LogLine {
                    instance,
                    stream,
                    text: format!("[herder: {lines} lines skipped here; they are in the log files]"),
                }),
            }
        }
    }

    fn push_log(&mut self, line: LogLine) {
        if self.logs.len() == LOG_LINES {
            self.logs.pop_front();
        }
        self.logs.push_back(line);
    }
}

/// App output made safe for a terminal cell grid: escape sequences removed (an app's colors
/// would otherwise move the cursor), tabs as spaces, other control bytes shown as `?`.
pub fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI (`ESC [ … final`) and OSC (`ESC ] … BEL|ESC \`); anything else: one char.
                match chars.next() {
                    Some('[') => {
                        for c in chars.by_ref() {
                            if ('\x40'..='\x7e').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']') => {
                        while let Some(c) = chars.next() {
                            if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            '\t' => out.push_str("    "),
            '\r' => {}
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn each_instance_shows_its_state_in_the_balancer() {
        use crate::protocol::{BalancerView, MemberView};
        let member = |slot: u32, generation: u32, up: bool, down: bool, active: u32| MemberView {
            slot,
            generation,
            up,
            down,
            active,
            ..MemberView::default()
        };
        let b = BalancerView {
            members: vec![
                member(0, 0, true, false, 4),
                member(1, 0, false, true, 0),
                member(2, 0, false, false, 0),
                // Slot 3 during a reload: the old generation still in, the new one not ready.
                member(3, 0, true, false, 1),
                member(3, 1, false, false, 0),
            ],
            ..BalancerView::default()
        };
        assert_eq!(super::pool_state(&b, 0), "in · 4 under way");
        assert_eq!(super::pool_state(&b, 1), "out: failing");
        assert_eq!(super::pool_state(&b, 2), "out: not ready");
        assert_eq!(super::pool_state(&b, 3), "in · 1 under way");
        assert_eq!(super::pool_state(&b, 4), "out: not in the pool");
    }

    #[test]
    fn a_balancer_is_summed_up_in_a_line() {
        use crate::protocol::{BalancerView, MemberView};
        let member = |up: bool, active: u32| MemberView { up, active, ..MemberView::default() };
        let b = BalancerView {
            listen: "8080".into(),
            mode: "http".into(),
            connections: 12,
            members: vec![member(true, 2), member(false, 0), member(true, 3)],
            ..BalancerView::default()
        };
        assert_eq!(
            balancer_summary(&b),
            "balancer 8080 http · 2/3 in the pool · 12 connections · 5 under way"
        );
    }

    use super::*;
    use crate::protocol::LogBytes;

    /// An app as `list` reports it: each instance `(status, pid, restarts)`, started at 1 s
    /// (Unix time) with `pid` KiB of memory. Instances are built from JSON so that fields
    /// added to the protocol later (all optional) need no change here.
    pub(crate) fn app(id: u32, name: &str, instances: &[(Status, Option<u32>, u32)]) -> AppInfo {
        AppInfo {
            id,
            spec: crate::protocol::AppSpec::new(name, "x", "/".into()),
            instances: instances
                .iter()
                .enumerate()
                .map(|(k, &(status, pid, restarts))| {
                    serde_json::from_value(serde_json::json!({
                        "index": k,
                        "status": status,
                        "pid": pid,
                        "started_at_ms": pid.map(|_| 1_000),
                        "restarts": restarts,
                        "unstable_restarts": 0,
                        "memory_bytes": pid.map(|p| u64::from(p) * 1024),
                        "history": [],
                    }))
                    .expect("an instance with the required fields")
                })
                .collect(),
            log_files: Vec::new(),
            log_errors: Vec::new(),
            balancer: None,
            spread: None,
        }
    }

    fn lines(text: &str) -> LogItem {
        LogItem::Lines {
            app: "web".into(),
            instance: 0,
            stream: LogStream::Out,
            at_ms: 0,
            text: LogBytes(text.as_bytes().to_vec()),
        }
    }

    #[test]
    fn selection_follows_the_instance_across_refreshes() {
        let mut m = Model::default();
        m.update(
            &[app(0, "a", &[(Status::Online, Some(10), 0)]), app(1, "b", &[(Status::Online, Some(11), 0)])],
            0,
        );
        assert_eq!(m.key(Key::Down), None);
        assert_eq!(m.selected_row().unwrap().name, "b");
        // `a` is deleted: `b` moves up and stays selected.
        m.update(&[app(1, "b", &[(Status::Online, Some(11), 0)])], 0);
        assert_eq!(m.selected, 0);
        assert_eq!(m.selected_row().unwrap().name, "b");
        assert_eq!(m.history.len(), 1, "history of a gone instance is dropped");
        m.update(&[], 0);
        assert_eq!(m.selected_row(), None);
        assert_eq!(m.key(Key::Char('r')), None, "no app, nothing to restart");
    }

    #[test]
    fn keys_move_within_bounds_and_act_on_the_selected_app() {
        let mut m = Model::default();
        m.update(&[app(3, "web", &[(Status::Online, Some(10), 0), (Status::Online, Some(11), 0)])], 0);
        m.key(Key::Up);
        assert_eq!(m.selected, 0);
        m.key(Key::Char('j'));
        m.key(Key::Char('j'));
        assert_eq!(m.selected, 1);
        assert_eq!(m.selected_row().unwrap().label(), "web:1");
        assert_eq!(m.key(Key::Char('r')), Some(Action::Restart { app_id: 3, name: "web".into() }));
        assert_eq!(m.key(Key::Char('s')), Some(Action::Stop { app_id: 3, name: "web".into() }));
        assert_eq!(m.key(Key::Char('l')), Some(Action::Reload { app_id: 3, name: "web".into() }));
        for k in [Key::Char('q'), Key::Esc, Key::Interrupt] {
            assert_eq!(m.key(k), Some(Action::Quit));
        }
        assert_eq!(m.key(Key::Char('x')), None);
    }

    #[test]
    fn history_keeps_one_sample_per_refresh_and_none_without_a_process() {
        let mut m = Model::default();
        for _ in 0..(HISTORY + 5) {
            m.update(&[app(0, "a", &[(Status::Online, Some(2), 0)])], 0);
        }
        m.update(&[app(0, "a", &[(Status::Stopped, None, 0)])], 0);
        let h = m.selected_history().unwrap();
        assert_eq!(h.mem.len(), HISTORY);
        assert_eq!(h.mem.back(), Some(&None));
        assert_eq!(h.mem[0], Some(2048));
    }

    #[test]
    fn the_daemons_history_replaces_a_shorter_one() {
        let mut m = Model::default();
        let mut a = app(0, "a", &[(Status::Online, Some(2), 0)]);
        a.instances[0].cpu_percent = Some(12.5);
        m.update(&[a.clone()], 0);
        m.update(&[a], 0);
        assert_eq!(m.selected_history().unwrap().cpu, [Some(125), Some(125)]);
        m.seed(0, vec![(0, vec![(1.0, 10), (2.0, 20), (3.0, 30)]), (7, vec![(1.0, 1)])]);
        let h = m.selected_history().unwrap();
        assert_eq!(h.cpu, [Some(10), Some(20), Some(30)]);
        assert_eq!(h.mem, [Some(10), Some(20), Some(30)]);
        assert_eq!(m.history.len(), 1, "unknown instances are not added");
        m.seed(0, vec![(0, vec![(9.0, 90)])]);
        assert_eq!(m.selected_history().unwrap().cpu.len(), 3, "a shorter history is ignored");
    }

    #[test]
    fn log_pieces_join_into_lines_and_escapes_are_removed() {
        let mut m = Model::default();
        m.log_items(vec![lines("one\ntw"), lines("o\n"), lines("\x1b[31mred\x1b[0m\tx\r\n")]);
        let got: Vec<&str> = m.logs.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(got, ["one", "two", "red    x"]);
        m.follow_logs(Some(1));
        assert!(m.logs.is_empty());
        assert_eq!(clean(b"a\x07b\x1b]0;title\x07c \xff"), "a?bc \u{fffd}");
    }
}
