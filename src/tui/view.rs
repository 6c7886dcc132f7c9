//! Drawing the dashboard from a [`Model`]: the instance table, CPU and memory sparklines of
//! the selected instance, its app's log lines, and a footer with the keys. Pure: the same
//! model and area give the same frame, which the snapshot tests below rely on.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, RenderDirection, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::model::{History, LogLine, Model, Row as ModelRow};
use crate::human::{bytes, duration};
use crate::protocol::{LogStream, Status};

/// Height of each sparkline box (borders included).
const SPARK_HEIGHT: u16 = 7;

pub fn draw(f: &mut Frame, m: &Model) {
    let area = f.area();
    let table_height = (m.rows.len().max(1) as u16 + 3).min((area.height / 3).max(5));
    let [table, sparks, logs, footer] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Length(SPARK_HEIGHT),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_table(f, m, table);
    draw_sparklines(f, m, sparks);
    draw_logs(f, m, logs);
    draw_footer(f, m, footer);
}

fn status_style(s: Status) -> Style {
    match s {
        Status::Online => Style::new().fg(Color::Green),
        Status::Launching | Status::Stopping | Status::WaitingRestart => Style::new().fg(Color::Yellow),
        Status::Errored => Style::new().fg(Color::Red),
        Status::Stopped => Style::new().fg(Color::DarkGray),
    }
}

pub fn cpu_text(cpu: Option<f64>) -> String {
    cpu.map(|c| format!("{c:.1}%")).unwrap_or_else(|| "-".into())
}

fn uptime(r: &ModelRow, now_ms: u64) -> String {
    match r.started_at_ms {
        Some(t) if r.status.is_running() => duration(now_ms.saturating_sub(t)),
        _ => "-".into(),
    }
}

fn draw_table(f: &mut Frame, m: &Model, area: Rect) {
    let apps = {
        let mut ids: Vec<u32> = m.rows.iter().map(|r| r.app_id).collect();
        ids.dedup();
        ids.len()
    };
    let mut title = format!(" herder monit · {apps} app(s)");
    if let Some(pid) = m.daemon_pid {
        title.push_str(&format!(" · daemon pid {pid}"));
    }
    title.push(' ');
    let block = Block::bordered().title(Span::styled(title, Style::new().add_modifier(Modifier::BOLD)));
    if m.rows.is_empty() {
        let text =
            if m.error.is_some() { "" } else { "no apps; start one with `herder start <script|config>`" };
        f.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    // A column for the balancer's view of each instance, when an app has a balancer.
    let pools = m.rows.iter().any(|r| r.pool.is_some());
    let header = Row::new([
        "id",
        "name",
        "status",
        "pid",
        "cpu",
        "mem",
        "↺",
        "uptime",
        if pools { "balancer" } else { "" },
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = m.rows.iter().map(|r| {
        Row::new([
            Cell::from(r.id.to_string()),
            Cell::from(r.label()),
            Cell::from(Span::styled(r.status.as_str(), status_style(r.status))),
            Cell::from(r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())),
            Cell::from(cpu_text(r.cpu_percent)),
            Cell::from(r.memory_bytes.map(bytes).unwrap_or_else(|| "-".into())),
            Cell::from(r.restarts.to_string()),
            Cell::from(uptime(r, m.now_ms)),
            Cell::from(r.pool.clone().unwrap_or_default()),
        ])
    });
    let name_width = m.rows.iter().map(|r| r.label().chars().count()).max().unwrap_or(0).clamp(8, 40) as u16;
    let widths = [
        Constraint::Length(4),
        Constraint::Length(name_width),
        Constraint::Length(15),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(4),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(m.selected));
    f.render_stateful_widget(table, area, &mut state);
}

/// The newest samples that fit `width`, newest first (drawn right to left).
fn recent(samples: &std::collections::VecDeque<Option<u64>>, width: u16) -> Vec<Option<u64>> {
    samples.iter().rev().take(width as usize).copied().collect()
}

fn draw_sparklines(f: &mut Frame, m: &Model, area: Rect) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let row = m.selected_row();
    let empty = History::default();
    let h = m.selected_history().unwrap_or(&empty);
    let name = row.map(ModelRow::label).unwrap_or_default();

    let cpu_now = row.and_then(|r| r.cpu_percent);
    let cpu_max = h.cpu.iter().flatten().max().copied().unwrap_or(0);
    let cpu_title = match (row, cpu_now) {
        (None, _) => " cpu ".into(),
        (Some(_), Some(c)) => {
            format!(" cpu {name} {} (max {:.1}%) ", cpu_text(Some(c)), cpu_max as f64 / 10.0)
        }
        (Some(_), None) => format!(" cpu {name} - "),
    };
    let inner_width = left.width.saturating_sub(2);
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(cpu_title))
            .data(recent(&h.cpu, inner_width))
            // At least one core's worth of scale, so that idle apps stay low.
            .max(cpu_max.max(1000))
            .direction(RenderDirection::RightToLeft)
            .style(Style::new().fg(Color::Cyan)),
        left,
    );

    let mem_now = row.and_then(|r| r.memory_bytes);
    let mem_max = h.mem.iter().flatten().max().copied().unwrap_or(0);
    let mem_title = match (row, mem_now) {
        (None, _) => " memory ".into(),
        (Some(_), Some(b)) => format!(" memory {name} {} (max {}) ", bytes(b), bytes(mem_max)),
        (Some(_), None) => format!(" memory {name} - "),
    };
    let inner_width = right.width.saturating_sub(2);
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(mem_title))
            .data(recent(&h.mem, inner_width))
            .max(mem_max.max(1))
            .direction(RenderDirection::RightToLeft)
            .style(Style::new().fg(Color::Magenta)),
        right,
    );
}

fn draw_logs(f: &mut Frame, m: &Model, area: Rect) {
    let app = m.logs_app.and_then(|id| m.rows.iter().find(|r| r.app_id == id));
    let title = match app {
        Some(r) => match &r.balancer {
            Some(b) => format!(" logs {} · {b} ", r.name),
            None => format!(" logs {} ", r.name),
        },
        None => " logs ".into(),
    };
    let many = app.is_some_and(|r| r.instances > 1);
    let height = area.height.saturating_sub(2) as usize;
    let skip = m.logs.len().saturating_sub(height);
    let lines: Vec<Line> = m.logs.iter().skip(skip).map(|l| log_line(l, many)).collect();
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), area);
}

fn log_line(l: &LogLine, many: bool) -> Line<'_> {
    let style = match l.stream {
        LogStream::Out => Style::new(),
        LogStream::Err => Style::new().fg(Color::Red),
    };
    let mut spans = Vec::with_capacity(2);
    if many {
        spans.push(Span::styled(format!("{}| ", l.instance), Style::new().fg(Color::DarkGray)));
    }
    spans.push(Span::styled(l.text.as_str(), style));
    Line::from(spans)
}

fn draw_footer(f: &mut Frame, m: &Model, area: Rect) {
    let keys = " ↑↓/jk select · r restart · s stop · l reload · q quit ";
    let mut spans = vec![Span::styled(keys, Style::new().add_modifier(Modifier::REVERSED))];
    if let Some(e) = &m.error {
        spans.push(Span::styled(format!(" {e}"), Style::new().fg(Color::Red)));
    } else if let Some(n) = &m.notice {
        spans.push(Span::raw(format!(" {n}")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::Terminal;

    use super::*;
    use crate::protocol::{LogBytes, LogItem};
    use crate::tui::model::tests::app;

    fn render(m: &Model, width: u16, height: u16) -> Buffer {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| draw(f, m)).unwrap();
        t.backend().buffer().clone()
    }

    fn text(buf: &Buffer) -> String {
        let mut s = String::new();
        for y in 0..buf.area.height {
            let mut line = String::new();
            for x in 0..buf.area.width {
                line.push_str(buf[(x, y)].symbol());
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }

    /// Compare with `src/tui/snapshots/<name>.txt`; `HERDER_UPDATE_SNAPSHOTS=1` rewrites it.
    fn snapshot(name: &str, got: &str) {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/tui/snapshots").join(format!("{name}.txt"));
        if std::env::var_os("HERDER_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e}\nhint: HERDER_UPDATE_SNAPSHOTS=1 cargo test tui", path.display())
        });
        assert!(
            got == want,
            "frame differs from {}\n--- want\n{want}--- got\n{got}hint: HERDER_UPDATE_SNAPSHOTS=1 cargo test tui rewrites it",
            path.display()
        );
    }

    fn item(instance: u32, stream: LogStream, text: &str) -> LogItem {
        LogItem::Lines {
            app: "web".into(),
            instance,
            stream,
            at_ms: 0,
            text: LogBytes(text.as_bytes().to_vec()),
        }
    }

    /// Three apps, `web` with two instances selected after a few refreshes of growing use.
    fn busy_model() -> Model {
        let mut m = Model::default();
        m.daemon_pid = Some(4000);
        let apps = |k: u32| {
            let mut web = app(0, "web", &[(Status::Online, Some(4242), 1), (Status::Online, Some(4243), 0)]);
            web.instances[0].memory_bytes = Some(u64::from(10 + k * 5) * 1024 * 1024);
            web.instances[0].cpu_percent = Some(k as f32 * 4.5);
            vec![
                web,
                app(1, "worker", &[(Status::Errored, None, 16)]),
                app(2, "cron", &[(Status::Stopped, None, 0)]),
            ]
        };
        for k in 0..12u32 {
            m.update(&apps(k), 1_000 + 3_600_000 + u64::from(k) * 1000);
        }
        m.follow_logs(Some(0));
        m.log_items(vec![
            item(0, LogStream::Out, "listening on :3000\n"),
            item(1, LogStream::Out, "listening on :3001\n"),
            item(0, LogStream::Err, "GET /missing 404\n"),
        ]);
        m.notice = Some("restarted `web`".into());
        m
    }

    #[test]
    fn frame_with_apps_sparklines_and_logs() {
        let m = busy_model();
        let buf = render(&m, 100, 30);
        snapshot("busy", &text(&buf));
        // What text cannot show: the selected row is reversed, statuses are colored, stderr
        // lines are red.
        let row = (0..buf.area.height)
            .find(|&y| text(&buf).lines().nth(y as usize).unwrap().contains('▶'))
            .unwrap();
        assert!(buf[(10, row)].modifier.contains(Modifier::REVERSED));
        let find = |needle: &str| {
            let t = text(&buf);
            let (y, line) = t.lines().enumerate().find(|(_, l)| l.contains(needle)).unwrap();
            let x = line[..line.find(needle).unwrap()].chars().count();
            (x as u16, y as u16)
        };
        assert_eq!(buf[find("errored")].fg, Color::Red);
        assert_eq!(buf[find("online")].fg, Color::Green);
        assert_eq!(buf[find("GET /missing")].fg, Color::Red);
    }

    #[test]
    fn an_app_behind_a_balancer_shows_each_instance_s_state_in_it() {
        use crate::protocol::{BalancerView, MemberView};
        let mut web = app(0, "web", &[(Status::Online, Some(4242), 0), (Status::Launching, Some(4243), 0)]);
        web.balancer = Some(BalancerView {
            listen: "8080".into(),
            mode: "http".into(),
            members: vec![
                MemberView { slot: 0, up: true, active: 2, ..MemberView::default() },
                MemberView { slot: 1, ..MemberView::default() },
            ],
            ..BalancerView::default()
        });
        let mut m = Model::default();
        m.update(&[web, app(1, "worker", &[(Status::Online, Some(4300), 0)])], 2_000);
        let t = text(&render(&m, 100, 24));
        let line =
            |needle: &str| t.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}:\n{t}"));
        assert!(line("uptime").contains("balancer"), "{t}");
        assert!(line("web:0").contains("in · 2 under way"), "{t}");
        assert!(line("web:1").contains("out: not ready"), "{t}");
        assert!(!line("worker").contains("out") && !line("worker").contains("in ·"), "{t}");
    }

    #[test]
    fn frame_with_no_apps() {
        let mut m = Model::default();
        m.daemon_pid = Some(4000);
        m.update(&[], 0);
        snapshot("empty", &text(&render(&m, 80, 20)));
    }

    #[test]
    fn frame_when_the_daemon_is_gone() {
        let mut m = busy_model();
        m.error = Some("cannot reach the daemon: connection closed; retrying every second".into());
        snapshot("daemon_gone", &text(&render(&m, 100, 30)));
    }

    #[test]
    fn tiny_terminals_do_not_break_drawing() {
        let m = busy_model();
        for (w, h) in [(1, 1), (10, 4), (30, 8), (200, 3)] {
            let t = text(&render(&m, w, h));
            assert_eq!(t.lines().count(), h as usize);
        }
    }

    #[test]
    fn uptime_is_measured_against_the_model_clock() {
        let mut m = busy_model();
        let row = |m: &Model| {
            let t = text(&render(m, 100, 30));
            t.lines().find(|l| l.contains("web:0")).unwrap().to_string()
        };
        // Started at 1 s (Unix ms 1000).
        m.now_ms = 1_000 + 59_000;
        assert!(row(&m).contains(" 59s "), "{}", row(&m));
        m.now_ms = 1_000 + 61_000;
        assert!(row(&m).contains(" 1m "), "{}", row(&m));
    }
}
