//! Other supervisors among the processes: PM2 God daemons, supervisord and herder daemons of
//! other homes, their apps (their children), and which of herder's apps they also run, by name
//! or by script.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::found::{in_home, Clash, HerderDaemon, Own, PeerApp, Peers, Pm2Daemon, Supervisord, Wanted};
use super::procfs::{same_path, Proc};

/// A PM2 daemon's title: `PM2 v7.0.4: God Daemon (/root/.pm2)` gives the version and the
/// `PM2_HOME`. A daemon that has not set its title yet runs `node …/pm2/lib/Daemon.js`.
pub fn pm2_daemon(argv: &[String]) -> Option<(Option<String>, Option<PathBuf>)> {
    let title = argv.join(" ");
    let title = title.trim();
    if let Some(rest) = title.strip_prefix("PM2 v") {
        let (version, rest) = rest.split_once(':')?;
        let rest = rest.trim();
        if !rest.starts_with("God Daemon") {
            return None;
        }
        let home = rest
            .strip_prefix("God Daemon")
            .map(str::trim)
            .and_then(|h| h.strip_prefix('('))
            .and_then(|h| h.strip_suffix(')'))
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        return Some((Some(version.to_string()), home));
    }
    let node = argv.first().is_some_and(|a| base(a).starts_with("node"));
    (node && argv.iter().any(|a| a.ends_with("/pm2/lib/Daemon.js"))).then_some((None, None))
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// supervisord, run directly or by a Python interpreter; its config file (`-c`) if given.
pub fn supervisord(argv: &[String]) -> Option<Option<String>> {
    let at = argv.iter().take(2).position(|a| base(a) == "supervisord")?;
    if at == 1 && !base(&argv[0]).starts_with("python") {
        return None;
    }
    let args = &argv[at + 1..];
    let config = args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "-c" | "--configuration" => args.get(i + 1).cloned(),
        _ => a
            .strip_prefix("--configuration=")
            .or_else(|| a.strip_prefix("-c"))
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    });
    Some(config)
}

/// A herder daemon: `herder daemon`, or `herder run` (the daemon in the foreground).
pub fn herder_daemon(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| base(a) == "herder")
        && matches!(argv.get(1).map(String::as_str), Some("daemon" | "run"))
}

impl Wanted {
    /// Whether `app` runs this script: its recorded script or any of its arguments is the file
    /// (or, for a command string, the command PM2 passed to `bash -c`).
    fn same_script(&self, app: &PeerApp, argv: &[String]) -> bool {
        let file = self.script_path.as_deref();
        let canonical = |s: &str| {
            std::fs::canonicalize(s).map(|p| p.display().to_string()).unwrap_or_else(|_| s.to_string())
        };
        match file {
            Some(f) => {
                app.script.as_deref().is_some_and(|s| s == f || canonical(s) == f)
                    || argv
                        .iter()
                        .any(|a| a == f || (a.starts_with('/') && a.ends_with(base(f)) && canonical(a) == f))
            }
            // A command string: the whole command line, or what PM2 passed to `bash -c`.
            None => argv.join(" ") == self.script || argv.iter().skip(1).any(|a| *a == self.script),
        }
    }
}

/// The supervisors among `procs`, with `env` to read environments, and what they share with
/// `apps`; no port lookup.
pub fn find(
    procs: &[Proc],
    env: &dyn Fn(u32) -> Option<BTreeMap<String, String>>,
    own: &Own,
    apps: &[Wanted],
) -> Peers {
    let mut peers = Peers::default();
    let children = |pid: u32| procs.iter().filter(move |p| p.ppid == pid);
    for p in procs {
        if let Some((version, title_home)) = pm2_daemon(&p.argv) {
            let home = title_home.or_else(|| {
                let e = env(p.pid)?;
                e.get("PM2_HOME")
                    .map(PathBuf::from)
                    .or_else(|| e.get("HOME").map(|h| Path::new(h).join(".pm2")))
            });
            let mut daemon = Pm2Daemon { pid: p.pid, version, home, apps: Vec::new() };
            for c in children(p.pid) {
                let readable = env(c.pid);
                let e = readable.clone().unwrap_or_default();
                // Fork mode exports the process record's fields; cluster mode passes it as JSON.
                let record = e.get("pm2_env").and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok());
                let field = |k: &str| {
                    e.get(k).cloned().or_else(|| record.as_ref()?.get(k)?.as_str().map(str::to_string))
                };
                // The daemon's own helpers (`df` for its disk check, `ps` for its usage figures)
                // carry no process record: not apps. A child whose environment cannot be read
                // counts as one.
                if readable.is_some() && field("pm_exec_path").is_none() {
                    continue;
                }
                let app = PeerApp {
                    pid: c.pid,
                    name: field("name"),
                    script: field("pm_exec_path"),
                    command: c.command(),
                };
                let who =
                    format!("the PM2 daemon pid {}{}", p.pid, in_home("PM2_HOME", daemon.home.as_deref()));
                let hint = app.name.as_ref().map(|n| match daemon.home.as_deref() {
                    Some(h) if !is_default_pm2_home(h, &e) => {
                        format!("PM2_HOME={} pm2 delete {n}", h.display())
                    }
                    _ => format!("pm2 delete {n}"),
                });
                clashes(&mut peers.clashes, apps, &app, &c.argv, &who, true, hint);
                daemon.apps.push(app);
            }
            peers.pm2.push(daemon);
        } else if let Some(config) = supervisord(&p.argv) {
            let mut daemon = Supervisord { pid: p.pid, config, apps: Vec::new() };
            for c in children(p.pid) {
                let e = env(c.pid).unwrap_or_default();
                let name = e.get("SUPERVISOR_PROCESS_NAME").cloned();
                let app = PeerApp { pid: c.pid, name: name.clone(), script: None, command: c.command() };
                let hint = name.map(|n| format!("supervisorctl stop {n}"));
                clashes(
                    &mut peers.clashes,
                    apps,
                    &app,
                    &c.argv,
                    &format!("supervisord pid {}", p.pid),
                    true,
                    hint,
                );
                daemon.apps.push(app);
            }
            peers.supervisord.push(daemon);
        } else if herder_daemon(&p.argv) && Some(p.pid) != own.daemon_pid {
            let home = herder_home(p.pid, env);
            if home.as_deref().is_some_and(|h| same_path(h, &own.home)) {
                continue;
            }
            let mut daemon = HerderDaemon { pid: p.pid, home, apps: Vec::new() };
            for c in children(p.pid) {
                let e = env(c.pid).unwrap_or_default();
                let app = PeerApp {
                    pid: c.pid,
                    name: e.get("HERDER_APP").cloned(),
                    script: None,
                    command: c.command(),
                };
                let who = format!(
                    "the herder daemon pid {}{}",
                    p.pid,
                    in_home("HERDER_HOME", daemon.home.as_deref())
                );
                let hint = app.name.as_ref().map(|n| match daemon.home.as_deref() {
                    Some(h) => format!("HERDER_HOME={} herder delete {n}", h.display()),
                    None => format!("herder delete {n}"),
                });
                // Other homes may well run an app of the same name (staging beside production):
                // only the same script is worth a warning.
                clashes(&mut peers.clashes, apps, &app, &c.argv, &who, false, hint);
                daemon.apps.push(app);
            }
            peers.herder.push(daemon);
        }
    }
    if peers.pm2.len() >= 2 {
        let list: Vec<String> = peers
            .pm2
            .iter()
            .map(|d| match &d.home {
                Some(h) => format!("pid {} for {}", d.pid, h.display()),
                None => format!("pid {}", d.pid),
            })
            .collect();
        let both = if peers.pm2.len() == 2 { "both" } else { "they" };
        peers.warnings.push(format!(
            "{} PM2 daemons run ({}): {both} may manage the same apps; keep one (`PM2_HOME=<home> pm2 kill` stops a daemon and its apps)",
            count_word(peers.pm2.len()),
            list.join(", ")
        ));
    }
    peers
}

/// Whether `home` is what `pm2` finds without `PM2_HOME` (`~/.pm2` of the app's user).
fn is_default_pm2_home(home: &Path, env: &BTreeMap<String, String>) -> bool {
    env.get("HOME").is_some_and(|h| Path::new(h).join(".pm2") == home)
}

fn count_word(n: usize) -> String {
    const WORDS: [&str; 10] = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    WORDS.get(n).map_or_else(|| n.to_string(), |w| w.to_string())
}

/// Records where `app` (of `supervisor`) is one of `apps`: by name (when `by_name`) or by
/// script. The instances of one app make one clash; an app that another supervisor runs
/// under its own name is not also reported for that supervisor's other apps of the same script.
fn clashes(
    out: &mut Vec<Clash>,
    apps: &[Wanted],
    app: &PeerApp,
    argv: &[String],
    supervisor: &str,
    by_name: bool,
    hint: Option<String>,
) {
    for w in apps {
        let name = by_name && app.name.as_deref() == Some(w.name.as_str());
        let script = w.same_script(app, argv);
        let by = match (name, script) {
            (true, true) => "name and script",
            (true, false) => "name",
            (false, true) => "script",
            (false, false) => continue,
        };
        let same = |c: &Clash| c.app == w.name && c.supervisor == supervisor;
        if let Some(c) = out.iter_mut().find(|c| same(c) && c.name == app.name && c.by == by) {
            c.pids.push(app.pid);
            continue;
        }
        if name {
            // The app under its own name says it all.
            out.retain(|c| !(same(c) && c.by == "script"));
        } else if out.iter().any(|c| same(c) && c.by != "script") {
            continue;
        }
        out.push(Clash {
            app: w.name.clone(),
            supervisor: supervisor.to_string(),
            name: app.name.clone(),
            pids: vec![app.pid],
            command: app.command.clone(),
            by,
            hint: hint.clone(),
        });
    }
}

/// A herder daemon's home: `HERDER_HOME` in its environment (the client sets it when it
/// spawns one), else the `daemon.lock` it holds open.
fn herder_home(pid: u32, env: &dyn Fn(u32) -> Option<BTreeMap<String, String>>) -> Option<PathBuf> {
    if let Some(h) = env(pid).and_then(|e| e.get("HERDER_HOME").cloned()).filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    fds.flatten().find_map(|fd| {
        let target = std::fs::read_link(fd.path()).ok()?;
        (target.file_name()? == "daemon.lock").then(|| target.parent().map(Path::to_path_buf)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn pm2_daemon_titles() {
        let title = |s: &str| vec![s.to_string()];
        assert_eq!(
            pm2_daemon(&title("PM2 v7.0.4: God Daemon (/root/.pm2)")),
            Some((Some("7.0.4".into()), Some(PathBuf::from("/root/.pm2"))))
        );
        assert_eq!(
            pm2_daemon(&title("PM2 v5.3.0: God Daemon (/home/my user/.pm2)")),
            Some((Some("5.3.0".into()), Some(PathBuf::from("/home/my user/.pm2"))))
        );
        assert_eq!(pm2_daemon(&argv("node /usr/lib/node_modules/pm2/lib/Daemon.js")), Some((None, None)));
        assert_eq!(pm2_daemon(&title("PM2 v7.0.4: some app")), None);
        assert_eq!(pm2_daemon(&argv("node /srv/app.js")), None);
        assert_eq!(pm2_daemon(&[]), None);
    }

    #[test]
    fn supervisord_and_herder_command_lines() {
        assert_eq!(
            supervisord(&argv("/usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf")),
            Some(Some("/etc/supervisor/supervisord.conf".into()))
        );
        assert_eq!(
            supervisord(&argv("/usr/bin/python3 /usr/bin/supervisord --configuration=/x.conf")),
            Some(Some("/x.conf".into()))
        );
        assert_eq!(supervisord(&argv("supervisord")), Some(None));
        assert_eq!(supervisord(&argv("/usr/bin/vim supervisord")), None);
        assert_eq!(supervisord(&argv("/usr/bin/supervisorctl status")), None);
        assert!(herder_daemon(&argv("/usr/local/bin/herder daemon")));
        assert!(herder_daemon(&argv("herder run herder.toml")));
        assert!(!herder_daemon(&argv("herder doctor")));
        assert!(!herder_daemon(&argv("/usr/bin/herdern daemon")));
    }

    fn proc(pid: u32, ppid: u32, cmd: &str) -> Proc {
        Proc {
            pid,
            ppid,
            comm: String::new(),
            argv: if cmd.starts_with("PM2 ") { vec![cmd.into()] } else { argv(cmd) },
        }
    }

    #[test]
    fn pm2_daemons_their_apps_and_what_they_share_with_herder() {
        let procs = vec![
            proc(1, 0, "/sbin/init"),
            proc(100, 1, "PM2 v7.0.4: God Daemon (/root/.pm2)"),
            proc(101, 100, "node /srv/shop/server.js"),
            proc(102, 100, "/usr/bin/python3 /srv/shop/worker.py one"),
            proc(103, 100, "node /srv/shop/server.js"),
            proc(104, 100, "node /srv/shop/server.js"),
            proc(105, 100, "df -kP /root/.pm2"),
            proc(200, 1, "PM2 v6.0.14: God Daemon (/tmp/other)"),
            proc(300, 1, "/usr/bin/python3 /usr/bin/supervisord -n"),
            proc(301, 300, "/srv/jobs/run --fast"),
            proc(400, 1, "/usr/local/bin/herder daemon"),
            proc(401, 400, "node /srv/shop/server.js"),
            proc(500, 1, "/usr/local/bin/herder daemon"),
        ];
        let env = |pid: u32| -> Option<BTreeMap<String, String>> {
            let pairs: &[(&str, &str)] = match pid {
                101 | 103 => &[
                    ("pm2_env", r#"{"name":"web","pm_exec_path":"/srv/shop/server.js"}"#),
                    ("HOME", "/root"),
                ],
                104 => &[("name", "api"), ("pm_exec_path", "/srv/shop/server.js")],
                // PM2's own disk check: its environment is the daemon's, with no process record.
                105 => &[("PM2_HOME", "/root/.pm2"), ("HOME", "/root")],
                102 => &[("name", "worker"), ("pm_exec_path", "/srv/shop/worker.py"), ("HOME", "/root")],
                301 => &[("SUPERVISOR_PROCESS_NAME", "jobs")],
                400 => &[("HERDER_HOME", "/srv/other-herder")],
                401 => &[("HERDER_APP", "site")],
                500 => &[("HERDER_HOME", "/home/me/.herder")],
                _ => return None,
            };
            Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        let own = Own { home: "/home/me/.herder".into(), daemon_pid: None };
        let wanted = [
            Wanted {
                name: "web".into(),
                script: "x".into(),
                script_path: Some("/srv/elsewhere/web.js".into()),
                ports: vec![],
            },
            Wanted {
                name: "api".into(),
                script: "x".into(),
                script_path: Some("/srv/shop/server.js".into()),
                ports: vec![],
            },
            Wanted {
                name: "jobs".into(),
                script: "/srv/jobs/run --fast".into(),
                script_path: None,
                ports: vec![],
            },
        ];
        let peers = find(&procs, &env, &own, &wanted);

        assert_eq!(peers.pm2.len(), 2);
        let first = &peers.pm2[0];
        assert_eq!(
            (first.pid, first.version.as_deref(), first.home.as_deref()),
            (100, Some("7.0.4"), Some(Path::new("/root/.pm2")))
        );
        assert_eq!(first.apps.len(), 4, "the daemon's `df` is not an app: {:?}", first.apps);
        assert_eq!(
            first.apps[..2],
            [
                PeerApp {
                    pid: 101,
                    name: Some("web".into()),
                    script: Some("/srv/shop/server.js".into()),
                    command: "node /srv/shop/server.js".into()
                },
                PeerApp {
                    pid: 102,
                    name: Some("worker".into()),
                    script: Some("/srv/shop/worker.py".into()),
                    command: "/usr/bin/python3 /srv/shop/worker.py one".into()
                },
            ]
        );
        assert!(peers.pm2[1].apps.is_empty());
        assert_eq!(peers.supervisord[0].apps[0].name.as_deref(), Some("jobs"));
        // The daemon of this home is not another herder.
        assert_eq!(peers.herder.len(), 1);
        assert_eq!(peers.herder[0].home.as_deref(), Some(Path::new("/srv/other-herder")));

        let clashes: Vec<(&str, &[u32], &str)> =
            peers.clashes.iter().map(|c| (c.app.as_str(), c.pids.as_slice(), c.by)).collect();
        assert_eq!(
            clashes,
            [("web", &[101, 103][..], "name"), ("api", &[104], "name and script"), ("jobs", &[301], "name and script"), ("api", &[401], "script")],
            "instances are one clash; PM2's `api` says more than its `web` of the same script; another herder's `site` runs the same script as `api`"
        );
        assert_eq!(
            peers.clashes[0].hint.as_deref(),
            Some("pm2 delete web"),
            "the default PM2_HOME needs no variable"
        );
        assert_eq!(
            peers.clashes[3].hint.as_deref(),
            Some("HERDER_HOME=/srv/other-herder herder delete site")
        );
        assert_eq!(peers.warnings.len(), 1);
        let w = &peers.warnings[0];
        assert!(w.starts_with("two PM2 daemons run (pid 100 for /root/.pm2, pid 200 for /tmp/other): both may manage the same apps"), "{w}");

        let text = peers.text();
        assert!(text.contains("PM2 7.0.4 daemon, pid 100 (PM2_HOME /root/.pm2)"), "{text}");
        assert!(text.contains("pid 101      `web` node /srv/shop/server.js"), "{text}");
        let start = peers.start_warnings();
        assert!(
            start[0].contains(
                "`web` also runs under the PM2 daemon pid 100 (PM2_HOME /root/.pm2) as pids 101, 103"
            ),
            "{start:?}"
        );
        assert!(start[3].contains("`api` also runs under the herder daemon pid 400 (HERDER_HOME /srv/other-herder) as `site`, pid 401"), "{start:?}");
        assert!(
            start[0].contains("hint: once herder runs it, stop the other copy: `pm2 delete web`"),
            "{start:?}"
        );
        assert!(
            peers
                .summary()
                .starts_with("PM2 daemon pid 100 (PM2_HOME /root/.pm2), 4 app processes; PM2 daemon pid 200"),
            "{}",
            peers.summary()
        );
    }

    #[test]
    fn one_pm2_daemon_is_no_warning_and_nothing_is_an_empty_report() {
        let procs = vec![proc(100, 1, "PM2 v7.0.4: God Daemon (/root/.pm2)")];
        let own = Own { home: "/h".into(), daemon_pid: None };
        let peers = find(&procs, &|_| None, &own, &[]);
        assert!(peers.warnings.is_empty() && peers.clashes.is_empty());
        let nothing = find(&[proc(5, 1, "sleep 9")], &|_| None, &own, &[]);
        assert!(nothing.is_empty());
        assert!(nothing.summary().starts_with("none"));
    }
}
