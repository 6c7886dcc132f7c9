//! `herder logs`: the last lines of each selected instance's log files, read backwards across
//! rotated (and gzipped) files, merged in time order where the lines carry timestamps; then
//! every new line, as the daemon sends them. Also `flush` and `reload-logs`.
//!
//! The daemon answers with the files' sizes at the moment it began streaming (writes paused),
//! so the tail stops exactly where the stream starts: no line shown twice, none missed.

use std::collections::{HashMap, HashSet};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use super::args::LogsArgs;
use super::output::{expect_ok, out};
use crate::client::{self, Client, ClientError};
use crate::logs::format::{line_time, Stamp, TimeFormat, DEFAULT_FORMAT};
use crate::logs::tail::tail_lines;
use crate::paths::Paths;
use crate::protocol::{AppInfo, FileMark, LogItem, LogStream, Request, Response, Target};

/// A write to stdout failed; a closed pipe (`herder logs | head`) ends the command quietly.
fn stdout_failed(e: io::Error) -> Result<i32> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(0)
    } else {
        Err(anyhow!("cannot write to stdout: {e}"))
    }
}

pub async fn logs(paths: &Paths, a: LogsArgs) -> Result<i32> {
    let time = match &a.timestamp {
        Some(f) => Some(TimeFormat::parse(f).map_err(|e| anyhow!("--timestamp: {e}"))?),
        None => None,
    };
    let targets: Vec<Target> = if a.targets.is_empty() {
        vec![Target::All]
    } else {
        a.targets.iter().map(|t| Target::parse(t)).collect()
    };
    let follow = !a.nostream;
    let mut c = Client::connect(paths, true).await?;
    let req = Request::Logs { targets, follow, out: a.out, err: a.err };
    let Response::Logs { apps, marks } = expect_ok(c.request(&req).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    let (want_out, want_err) = if a.out || a.err { (a.out, a.err) } else { (true, true) };
    let color = !a.raw && !a.json && io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut p = Printer::new(&apps, Mode { raw: a.raw, json: a.json, color, time });

    let sources = sources(&apps, want_out, want_err);
    if let Err(e) = print_tails(&mut p, &sources, &marks, a.lines) {
        return stdout_failed(e);
    }
    if !follow {
        return Ok(0);
    }
    loop {
        match c.next().await {
            Ok(Response::LogLines(items)) => {
                let res = items.into_iter().try_for_each(|item| p.item(item)).and_then(|()| p.flush());
                if let Err(e) = res {
                    return stdout_failed(e);
                }
            }
            Ok(Response::Error(e)) => bail!("{}", e.message),
            Ok(_) => {}
            Err(ClientError::Closed { .. }) => {
                let _ = p.flush();
                if super::update::replaced_in_place(paths, c.daemon_pid).await {
                    eprintln!("herder logs: {}", super::update::STREAM_ENDED_BY_UPDATE);
                } else {
                    eprintln!("herder logs: the daemon stopped; no more lines");
                }
                return Ok(1);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `herder flush [app…]`: empty the apps' current log files.
pub async fn flush(paths: &Paths, targets: Vec<String>) -> Result<i32> {
    let targets = targets.iter().map(|t| Target::parse(t)).collect();
    let Response::LogFiles { files } = expect_ok(client::call(paths, &Request::Flush { targets }).await?)?
    else {
        bail!("unexpected answer from the daemon");
    };
    let mut text = String::new();
    for f in &files {
        text.push_str(&format!("flushed {}\n", f.display()));
    }
    if files.is_empty() {
        text.push_str("no log file to flush\n");
    }
    out(&text)?;
    Ok(0)
}

/// `herder reload-logs`: the daemon reopens every log file (after an external logrotate).
pub async fn reload(paths: &Paths) -> Result<i32> {
    let Response::LogFiles { files } = expect_ok(client::call(paths, &Request::ReloadLogs).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    out(&format!("reopened {} log file(s)\n", files.len()))?;
    Ok(0)
}

/// One file to tail: an instance's stdout or stderr file, or one file both write to.
#[derive(Debug, Clone)]
struct Source {
    app: String,
    /// `None`: every instance writes to this file (`merge_logs`).
    instance: Option<u32>,
    /// `None`: both streams go to this file.
    stream: Option<LogStream>,
    path: PathBuf,
    /// The app's `log_date_format` (or `time`'s default), to read lines' times back.
    format: Option<TimeFormat>,
}

fn sources(apps: &[AppInfo], out: bool, err: bool) -> Vec<Source> {
    let mut v: Vec<Source> = Vec::new();
    for app in apps {
        let l = &app.spec.logs;
        let format = (l.time || l.date_format.is_some())
            .then(|| TimeFormat::parse(l.date_format.as_deref().unwrap_or(DEFAULT_FORMAT)).ok())
            .flatten();
        for (i, (o, e)) in app.log_files.iter().enumerate() {
            let instance = app.instances.get(i).map(|x| x.index).unwrap_or(i as u32);
            let mut add = |stream, path: &PathBuf| {
                // A dropped stream has nothing to show.
                if path.as_os_str() == "/dev/null" {
                    return;
                }
                match v.iter_mut().find(|s| s.path == *path) {
                    Some(s) if s.app == app.spec.name => {
                        if s.instance != Some(instance) {
                            s.instance = None;
                        }
                        if s.stream != Some(stream) {
                            s.stream = None;
                        }
                    }
                    Some(_) => {}
                    None => v.push(Source {
                        app: app.spec.name.clone(),
                        instance: Some(instance),
                        stream: Some(stream),
                        path: path.clone(),
                        format: format.clone(),
                    }),
                }
            };
            if out {
                add(LogStream::Out, o);
            }
            if err {
                add(LogStream::Err, e);
            }
        }
    }
    v
}

/// A tailed line and the time it carries.
struct Line {
    time: Option<i64>,
    bytes: Vec<u8>,
}

fn print_tails(p: &mut Printer, sources: &[Source], marks: &[FileMark], n: usize) -> io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let mut timed: Vec<(usize, Vec<Line>)> = Vec::new();
    let mut untimed: Vec<(usize, Vec<Line>)> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let mark = marks.iter().find(|m| m.path == s.path);
        let lines = match tail_lines(&s.path, mark, n) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("herder logs: cannot read {}: {e}", s.path.display());
                continue;
            }
        };
        let time_of = |b: &[u8]| s.format.as_ref().and_then(|f| f.read_prefix(b)).or_else(|| line_time(b));
        let mut lines: Vec<Line> = lines.into_iter().map(|b| Line { time: time_of(&b), bytes: b }).collect();
        let has_times =
            lines.first().is_some_and(|l| l.time.is_some()) && lines.last().is_some_and(|l| l.time.is_some());
        if has_times {
            // A line without a time (a stack trace under a stamped line) goes with the one above.
            let mut last = None;
            for l in &mut lines {
                match l.time {
                    Some(t) => last = Some(t),
                    None => l.time = last,
                }
            }
            timed.push((i, lines));
        } else {
            untimed.push((i, lines));
        }
    }
    for (i, lines) in &untimed {
        let s = &sources[*i];
        p.header(&format!("{} last {n} lines:", s.path.display()))?;
        for l in lines {
            p.line(&s.app, s.instance, s.stream, l.time, &l.bytes)?;
            p.end_line()?;
        }
    }
    match timed.len() {
        0 => {}
        1 => p.header(&format!("{} last {n} lines:", sources[timed[0].0].path.display()))?,
        k => {
            let names: Vec<String> = timed
                .iter()
                .map(|(i, _)| sources[*i].path.file_name().unwrap_or_default().to_string_lossy().into_owned())
                .collect();
            p.header(&format!("last {n} lines of {k} files in time order ({}):", names.join(", ")))?;
        }
    }
    // Merge the files: each in its own order, the earliest next line first.
    let mut next = vec![0usize; timed.len()];
    loop {
        let pick = (0..timed.len())
            .filter(|&f| next[f] < timed[f].1.len())
            .min_by_key(|&f| (timed[f].1[next[f]].time, f));
        let Some(f) = pick else { break };
        let l = &timed[f].1[next[f]];
        let s = &sources[timed[f].0];
        p.line(&s.app, s.instance, s.stream, l.time, &l.bytes)?;
        p.end_line()?;
        next[f] += 1;
    }
    p.flush()
}

struct Mode {
    raw: bool,
    json: bool,
    color: bool,
    time: Option<TimeFormat>,
}

/// Colors of app prefixes in a terminal, by app.
const COLORS: &[&str] = &["36", "32", "35", "33", "34", "96", "92", "95", "93", "94"];

/// Writes lines with their `name|` prefixes (or as JSON).
struct Printer {
    out: io::BufWriter<io::Stdout>,
    mode: Mode,
    /// Instances and color of each app, by name.
    apps: HashMap<String, (usize, &'static str)>,
    width: usize,
    /// Streams whose last piece ended in the middle of a line.
    mid_line: HashSet<(String, u32, LogStream)>,
}

impl Printer {
    fn new(apps: &[AppInfo], mode: Mode) -> Printer {
        let mut p = Printer {
            out: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
            mode,
            apps: HashMap::new(),
            width: 0,
            mid_line: HashSet::new(),
        };
        for (i, a) in apps.iter().enumerate() {
            p.apps.insert(a.spec.name.clone(), (a.instances.len(), COLORS[i % COLORS.len()]));
            let w = p.label(&a.spec.name, None).chars().count() + if a.instances.len() > 1 { 2 } else { 0 };
            p.width = p.width.max(w);
        }
        p
    }

    fn label(&self, app: &str, instance: Option<u32>) -> String {
        match (self.apps.get(app), instance) {
            (_, None) => app.to_string(),
            (Some((n, _)), Some(i)) if *n > 1 => format!("{app}:{i}"),
            (Some(_), _) => app.to_string(),
            // An app started after following began.
            (None, Some(i)) if i > 0 => format!("{app}:{i}"),
            (None, _) => app.to_string(),
        }
    }

    fn color_of(&self, app: &str) -> &'static str {
        self.apps.get(app).map(|(_, c)| *c).unwrap_or_else(|| {
            let h = app.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            COLORS[h % COLORS.len()]
        })
    }

    fn header(&mut self, text: &str) -> io::Result<()> {
        if self.mode.raw || self.mode.json {
            return Ok(());
        }
        if self.mode.color {
            writeln!(self.out, "\x1b[2m{text}\x1b[0m")
        } else {
            writeln!(self.out, "{text}")
        }
    }

    /// Write the start of a line (prefix, time) and `bytes` (without a newline; see
    /// [`Printer::end_line`]).
    fn line(
        &mut self,
        app: &str,
        instance: Option<u32>,
        stream: Option<LogStream>,
        time: Option<i64>,
        bytes: &[u8],
    ) -> io::Result<()> {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if self.mode.json {
            return self.json_line(app, instance, stream, time, bytes);
        }
        if !self.mode.raw {
            let label = self.label(app, instance);
            if self.mode.color {
                let sep = if stream == Some(LogStream::Err) { "31" } else { self.color_of(app) };
                let c = self.color_of(app);
                write!(self.out, "\x1b[{c}m{label:<w$}\x1b[0m\x1b[{sep}m|\x1b[0m ", w = self.width)?;
            } else {
                write!(self.out, "{label}| ")?;
            }
        }
        if let (Some(f), Some(t)) = (&self.mode.time, time) {
            let stamp = f.render(&Stamp::from_unix_ms(t));
            write!(self.out, "{stamp} ")?;
        }
        self.out.write_all(bytes)
    }

    fn end_line(&mut self) -> io::Result<()> {
        if self.mode.json {
            return Ok(());
        }
        self.out.write_all(b"\n")
    }

    fn json_line(
        &mut self,
        app: &str,
        instance: Option<u32>,
        stream: Option<LogStream>,
        time: Option<i64>,
        bytes: &[u8],
    ) -> io::Result<()> {
        // `log_type = "json"` lines already are such objects.
        if bytes.first() == Some(&b'{')
            && serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| v.get("message").is_some())
        {
            self.out.write_all(bytes)?;
            return self.out.write_all(b"\n");
        }
        let obj = serde_json::json!({
            "timestamp": time.map(|t| Stamp::from_unix_ms(t).rfc3339()),
            "app": app,
            "instance": instance,
            "stream": stream.map(LogStream::as_str),
            "message": String::from_utf8_lossy(bytes),
        });
        serde_json::to_writer(&mut self.out, &obj).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    /// One item of the follow stream.
    fn item(&mut self, item: LogItem) -> io::Result<()> {
        match item {
            LogItem::Lines { app, instance, stream, at_ms, text } => {
                let key = (app, instance, stream);
                let mut rest = &text.0[..];
                while !rest.is_empty() {
                    let (piece, ends) = match memchr::memchr(b'\n', rest) {
                        Some(i) => (&rest[..i], true),
                        None => (rest, false),
                    };
                    rest = &rest[(piece.len() + usize::from(ends)).min(rest.len())..];
                    if self.mid_line.remove(&key) && !self.mode.json {
                        // The rest of a very long line sent in pieces.
                        self.out.write_all(piece)?;
                    } else {
                        self.line(&key.0, Some(key.1), Some(stream), Some(at_ms as i64), piece)?;
                    }
                    if ends {
                        self.end_line()?;
                    } else {
                        self.mid_line.insert(key.clone());
                    }
                }
                Ok(())
            }
            LogItem::Skipped { app, instance, stream, lines } => {
                let note =
                    format!("… {lines} lines skipped (the follower fell behind; they are in the log files)");
                if self.mode.raw || self.mode.json {
                    self.flush()?;
                    eprintln!(
                        "herder logs: {} {}: {note}",
                        self.label(&app, Some(instance)),
                        stream.as_str()
                    );
                    return Ok(());
                }
                self.line(&app, Some(instance), Some(stream), None, note.as_bytes())?;
                self.end_line()
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_files_are_tailed_once() {
        let mut spec = crate::protocol::AppSpec::new("web", "/bin/true", PathBuf::from("/"));
        spec.instances = 2;
        let info = |i| crate::protocol::InstanceInfo::new(i);
        let app = AppInfo {
            id: 0,
            spec,
            instances: vec![info(0), info(1)],
            log_files: vec![
                ("/l/web.log".into(), "/l/web.log".into()),
                ("/l/web.log".into(), "/l/web.log".into()),
            ],
            log_errors: Vec::new(),
            balancer: None,
            spread: None,
        };
        let s = sources(&[app], true, true);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].instance, s[0].stream), (None, None));
    }
}
