//! Chaos: the daemon is SIGKILLed at a random moment of a start, stop, restart, reload, scale,
//! delete or save. The next command brings a new daemon up, and then every app the list shows
//! runs exactly once per instance, nothing of a stopped or deleted app is left (grandchildren
//! in sessions of their own included), the processes, `list --json` and `state.json` agree, the
//! cluster app answers every connection, and each app is as it was before the command or as the
//! command leaves it (as the command leaves it when the command said it succeeded).
//!
//! The rounds come from a seeded generator; the seed is printed, and `HERDER_CHAOS_SEED`
//! replays a run (`HERDER_CHAOS_ROUNDS` sets how many rounds, else as many of 20 as 25 s
//! allow). Half the seeds run the daemons without cgroups. `bench/chaos.py` runs the same for
//! hundreds of rounds. The regression tests of what it found are at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use herder::protocol::{AppInfo, Status};

use crate::harness::*;

/// How long the apps get to settle after a new daemon came up.
const SETTLE: Duration = Duration::from_secs(25);
/// The longest wait between the start of a command and the kill of its daemon.
const KILL_WITHIN_MS: u64 = 500;
/// Rounds, unless the time below runs out first (a loaded machine): the suite's budget.
const ROUNDS: u32 = 20;
const BUDGET: Duration = Duration::from_secs(25);
/// The environment variable that tells the test's processes apart: `<run>/<app>`. Children
/// and grandchildren inherit it.
const MARK: &str = "CHAOS_APP";

/// splitmix64: small, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// An app as the test sees it: absent (deleted), or each instance running or not.
type Shape = Option<Vec<bool>>;

#[derive(Debug, Clone)]
enum Op {
    Start(String),
    /// `start <config> --only <app>`: an app that is not in the list.
    Add(String),
    Stop(String),
    Restart(String),
    Reload(String),
    Delete(String),
    Scale(String, usize),
    Save,
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Start(_) | Op::Add(_) => "start",
            Op::Stop(_) => "stop",
            Op::Restart(_) => "restart",
            Op::Reload(_) => "reload",
            Op::Delete(_) => "delete",
            Op::Scale(..) => "scale",
            Op::Save => "save",
        }
    }

    fn args(&self, config: &Path) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match self {
            Op::Start(a) => s(&["start", a]),
            Op::Add(a) => s(&["start", config.to_str().unwrap(), "--only", a]),
            Op::Stop(a) => s(&["stop", a]),
            Op::Restart(a) => s(&["restart", a]),
            Op::Reload(a) => s(&["reload", a]),
            Op::Delete(a) => s(&["delete", a]),
            Op::Scale(a, n) => s(&["scale", a, &n.to_string()]),
            Op::Save => s(&["save"]),
        }
    }

    /// What the command leaves `app` as, from `before`.
    fn after(&self, app: &str, before: &Shape, configured: usize) -> Shape {
        let targets = |t: &str| t == app || t == "all";
        match (self, before) {
            (Op::Add(t), None) if targets(t) => Some(vec![true; configured]),
            // A restart takes the config file's spec, count included; a reload keeps the
            // count that runs (a fork-mode app is restarted, but it has one instance here).
            (Op::Restart(t), Some(_)) if targets(t) => Some(vec![true; configured]),
            (Op::Start(t) | Op::Reload(t), Some(b)) if targets(t) => Some(vec![true; b.len()]),
            (Op::Stop(t), Some(b)) if targets(t) => Some(vec![false; b.len()]),
            (Op::Delete(t), Some(_)) if targets(t) => None,
            (Op::Scale(t, n), Some(b)) if targets(t) => {
                let on = b.iter().any(|x| *x);
                Some((0..*n).map(|i| b.get(i).copied().unwrap_or(on)).collect())
            }
            _ => before.clone(),
        }
    }
}

/// Whether `seen` is what a command that did not say it succeeded may leave: the app as
/// before, as after, or part way, an instance at a time (a delete stops each instance first).
fn may_be(before: &Shape, after: &Shape, seen: &Shape) -> bool {
    if seen == before || seen == after {
        return true;
    }
    let (Some(b), Some(s)) = (before, seen) else { return false };
    let a = after.clone().unwrap_or_else(|| vec![false; b.len()]);
    let (lo, hi) = (b.len().min(a.len()), b.len().max(a.len()));
    (lo..=hi).contains(&s.len())
        && s.iter().enumerate().all(|(i, on)| b.get(i) == Some(on) || a.get(i) == Some(on))
}

/// The test's apps: plain sleepers, some with a grandchild in a session of its own, and a
/// cluster app on a port.
struct Fleet {
    run: String,
    config: std::path::PathBuf,
    /// name → instances in the config file.
    apps: BTreeMap<String, usize>,
    port: u16,
    /// The daemons run without cgroups (process groups, trees and markers instead).
    no_cgroup: bool,
}

impl Fleet {
    fn new(h: &TestHome, no_cgroup: bool) -> Fleet {
        let run = h.tag("chaos");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut text = String::new();
        let mut apps = BTreeMap::new();
        let mut app = |name: String, body: String, instances: usize| {
            text += &format!(
                "[[apps]]\nname = \"{name}\"\n{body}\n[apps.env]\n{MARK} = \"{run}/{name}\"\n\n",
                run = run
            );
            apps.insert(name, instances);
        };
        for i in 0..9 {
            app(
                format!("s{i}"),
                format!("script = \"{}\"\nargs = [\"{run}\"]\n", fixture("idle.sh").display()),
                1,
            );
        }
        for i in 0..3 {
            // tree.sh ignores SIGTERM: a stop escalates after kill_timeout.
            app(
                format!("t{i}"),
                format!(
                    "script = \"{}\"\nargs = [\"/dev/null\"]\nkill_timeout = 300\n",
                    fixture("tree.sh").display()
                ),
                1,
            );
        }
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster/python/server.py");
        app(
            "cl".to_string(),
            format!(
                "script = \"{}\"\ninstances = 2\nport = {port}\nmin_uptime = \"200ms\"\nkill_timeout = 2000\n",
                server.display()
            ),
            2,
        );
        let config = h.write("herder.toml", &text);
        Fleet { run, config, apps, port, no_cgroup }
    }

    /// A command of the test's home; one that starts a daemon passes it the fleet's mode.
    fn cmd(&self, h: &TestHome, args: &[&str]) -> std::process::Command {
        let mut c = h.cmd(args);
        if self.no_cgroup {
            c.env("HERDER_NO_CGROUP", "1");
        }
        c
    }
}

/// Every live process of this run: pid → (app, parent pid).
fn marked(run: &str) -> BTreeMap<u32, (String, u32)> {
    let prefix = format!("{MARK}={run}/");
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let Some(app) = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace();
        // A zombie is dead for our purposes.
        if fields.next() == Some("Z") {
            continue;
        }
        let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        out.insert(pid, (app, ppid));
    }
    out
}

/// Per app, its processes whose parent is not of the same app: one per running instance, or
/// else a second copy or an orphan.
fn roots(marked: &BTreeMap<u32, (String, u32)>) -> BTreeMap<String, BTreeSet<u32>> {
    let mut out: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for (pid, (app, ppid)) in marked {
        if marked.get(ppid).map(|(a, _)| a) != Some(app) {
            out.entry(app.clone()).or_default().insert(*pid);
        }
    }
    out
}

/// `herder daemon` processes of this home.
fn daemons(home: &Path) -> Vec<u32> {
    let want = format!("HERDER_HOME={}", home.display());
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| pid_alive(p))
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let mut args = cmd.split(|b| *b == 0);
            args.next().is_some_and(|a| a.ends_with(b"herder")) && args.next() == Some(b"daemon")
        })
        .filter(|p| {
            let env = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
            env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
        })
        .collect()
}

fn list(h: &TestHome, fleet: &Fleet) -> Result<Vec<AppInfo>, String> {
    let out = fleet.cmd(h, &["list", "--json"]).output().unwrap();
    if !out.status.success() {
        return Err(format!("list failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("list --json: {e}"))
}

/// The apps as the test sees them, if every instance is online or stopped.
fn shapes(apps: &[AppInfo]) -> Option<BTreeMap<String, Vec<bool>>> {
    let settled = |s: Status| s == Status::Online || s == Status::Stopped;
    apps.iter()
        .map(|a| {
            a.instances.iter().all(|i| settled(i.status)).then(|| {
                let mut slots: Vec<_> = a.instances.iter().collect();
                slots.sort_by_key(|i| i.index);
                (a.spec.name.clone(), slots.iter().map(|i| i.status == Status::Online).collect())
            })
        })
        .collect()
}

/// Why the apps are not (yet) each running exactly once with nothing left over, if they are not.
fn disagreement(h: &TestHome, fleet: &Fleet, apps: &[AppInfo]) -> Option<String> {
    let Some(_) = shapes(apps) else {
        return Some("not every instance is online or stopped".into());
    };
    let found = roots(&marked(&fleet.run));
    let mut why = Vec::new();
    for name in fleet.apps.keys() {
        let listed = apps.iter().find(|a| &a.spec.name == name);
        let reported: BTreeSet<u32> = listed
            .map(|a| {
                a.instances.iter().filter(|i| i.status == Status::Online).filter_map(|i| i.pid).collect()
            })
            .unwrap_or_default();
        let running = found.get(name).cloned().unwrap_or_default();
        if let Some(a) = listed {
            let online = a.instances.iter().filter(|i| i.status == Status::Online).count();
            if reported.len() != online {
                why.push(format!("`{name}`: {online} instances online but pids {reported:?}"));
            }
            if a.instances.len() != a.spec.instances as usize {
                why.push(format!(
                    "`{name}`: {} instances listed, spec says {}",
                    a.instances.len(),
                    a.spec.instances
                ));
            }
        }
        if running != reported {
            why.push(format!(
                "`{name}` ({}): the daemon reports {reported:?}, running without a parent of the app: {running:?}",
                if listed.is_some() { "listed" } else { "not listed" }
            ));
        }
    }
    let ds = daemons(&h.home);
    if ds.len() != 1 || h.daemon_pid() != ds.first().copied() {
        why.push(format!("daemons {ds:?}, daemon.pid says {:?}", h.daemon_pid()));
    }
    (!why.is_empty()).then(|| why.join("\n"))
}

/// Whether `state.json` records the apps and pids `list` shows.
fn state_agrees(h: &TestHome, apps: &[AppInfo]) -> Result<(), String> {
    let text = std::fs::read(h.home.join("state.json")).map_err(|e| format!("state.json: {e}"))?;
    let st: serde_json::Value = serde_json::from_slice(&text).map_err(|e| format!("state.json: {e}"))?;
    let recorded: BTreeMap<String, Vec<(u64, Option<u64>, String)>> = st["apps"]
        .as_array()
        .ok_or("state.json has no apps")?
        .iter()
        .map(|a| {
            let mut inst: Vec<_> = a["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        i["index"].as_u64().unwrap_or(0),
                        i["pid"].as_u64(),
                        i["status"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            inst.sort();
            (a["spec"]["name"].as_str().unwrap_or("").to_string(), inst)
        })
        .collect();
    let listed: BTreeMap<String, Vec<(u64, Option<u64>, String)>> = apps
        .iter()
        .map(|a| {
            let mut inst: Vec<_> = a
                .instances
                .iter()
                .map(|i| (u64::from(i.index), i.pid.map(u64::from), i.status.as_str().to_string()))
                .collect();
            inst.sort();
            (a.spec.name.clone(), inst)
        })
        .collect();
    if recorded == listed {
        Ok(())
    } else {
        Err(format!("state.json: {recorded:?}\nlist: {listed:?}"))
    }
}

/// One `GET /` to the cluster app, answered within 2 s.
fn served(port: u16) -> bool {
    answer(port, Duration::from_secs(2)).is_some()
}

/// The body of one `GET /` to the cluster app, unless it fails or takes longer than `timeout`.
fn answer(port: u16, timeout: Duration) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Kills every process of the run when the test ends, whatever happened.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        for pid in marked(&self.0).keys() {
            // SAFETY: kill(2) on a process that carries this test's own marker.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<Output> {
    poll(timeout, || child.try_wait().ok().flatten())?;
    let mut out = Output { status: child.wait().ok()?, stdout: Vec::new(), stderr: Vec::new() };
    child.stdout.take()?.read_to_end(&mut out.stdout).ok()?;
    child.stderr.take()?.read_to_end(&mut out.stderr).ok()?;
    Some(out)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[test]
fn sigkill_of_the_daemon_at_random_moments_leaves_every_app_once_and_nothing_orphaned() {
    let seed = env_u64("HERDER_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let rounds = env_u64("HERDER_CHAOS_ROUNDS").map(|r| r as u32);
    // Half the seeds run the daemons without cgroups.
    let no_cgroup = Rng(!seed).next() % 2 == 1;
    eprintln!(
        "chaos: seed {seed} (replay with HERDER_CHAOS_SEED={seed}), {} rounds, {}",
        rounds.map_or(format!("up to {ROUNDS}"), |r| r.to_string()),
        if no_cgroup { "without cgroups" } else { "with cgroups where the machine has them" }
    );
    let mut rng = Rng(seed);
    let started = Instant::now();

    let h = TestHome::new();
    let fleet = Fleet::new(&h, no_cgroup);
    let _sweep = Sweep(fleet.run.clone());
    let out = fleet.cmd(&h, &["start", fleet.config.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut model: BTreeMap<String, Shape> = BTreeMap::new();
    let mut apps = wait_for("every app to run once", SETTLE, || {
        let apps = list(&h, &fleet).ok()?;
        disagreement(&h, &fleet, &apps).is_none().then_some(apps)
    });
    for name in fleet.apps.keys() {
        model.insert(name.clone(), shapes(&apps).unwrap().remove(name));
    }

    let names: Vec<String> = fleet.apps.keys().cloned().collect();
    let mut kinds: BTreeMap<&str, u32> = BTreeMap::new();
    let mut done = 0;
    for round in 1..=rounds.unwrap_or(ROUNDS) {
        if rounds.is_none() && started.elapsed() > BUDGET {
            break;
        }
        done = round;
        let listed: Vec<&String> = names.iter().filter(|n| model[*n].is_some()).collect();
        let cluster_up = model["cl"].as_ref().is_some_and(|s| s.iter().all(|on| *on));
        let any = |rng: &mut Rng| (*rng.pick(&listed)).clone();
        let op = match rng.below(14) {
            n if n <= 2 || listed.is_empty() => {
                let name = rng.pick(&names).clone();
                if model[&name].is_some() {
                    Op::Start(name)
                } else {
                    Op::Add(name)
                }
            }
            3..=4 => Op::Stop(if rng.below(6) == 0 { "all".into() } else { any(&mut rng) }),
            5..=6 => Op::Restart(if rng.below(6) == 0 { "all".into() } else { any(&mut rng) }),
            7..=8 => Op::Reload(if cluster_up && rng.below(2) == 0 { "cl".into() } else { any(&mut rng) }),
            9..=10 if cluster_up => {
                let now = model["cl"].as_ref().unwrap().len();
                Op::Scale(
                    "cl".into(),
                    (1..=3).find(|n| *n != now && rng.below(2) == 0).unwrap_or(if now == 1 { 2 } else { 1 }),
                )
            }
            11 => Op::Delete(any(&mut rng)),
            _ => Op::Save,
        };
        *kinds.entry(op.kind()).or_default() += 1;
        let args = op.args(&fleet.config);
        let delay = Duration::from_millis(rng.below(KILL_WITHIN_MS + 1));
        let before = model.clone();
        let daemon = h.daemon_pid().expect("a daemon runs");

        let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = fleet
            .cmd(&h, &args_ref)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The random moment of the kill. A command that ends before it has done all it does:
        // nothing of a stopped app may be left then either (a later crash recovery would
        // sweep it away unseen).
        let t0 = Instant::now();
        let ended_first = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            let Some(left) = delay.checked_sub(t0.elapsed()).filter(|d| !d.is_zero()) else { break false };
            std::thread::sleep(left.min(Duration::from_millis(1)));
        };
        if ended_first {
            let mut last = String::new();
            let agreed = poll(SETTLE, || {
                let apps = list(&h, &fleet).map_err(|e| last = e).ok()?;
                match disagreement(&h, &fleet, &apps) {
                    None => Some(()),
                    Some(why) => {
                        last = why;
                        None
                    }
                }
            });
            assert!(
                agreed.is_some(),
                "seed {seed} round {round}: after `herder {}` ended, before any kill:\n{last}",
                args.join(" ")
            );
        }
        // SAFETY: kill(2) on the test's own daemon.
        unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
        wait_for("the daemon to die", SETTLE, || (!pid_alive(daemon)).then_some(()));
        let out = wait_child(&mut child, SETTLE).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "seed {seed} round {round}: `herder {}` did not end after its daemon was killed",
                args.join(" ")
            )
        });
        let said_ok = out.status.success();

        // The next command starts a new daemon; wait until everything agrees.
        let mut last = String::new();
        let settled = poll(SETTLE, || match list(&h, &fleet) {
            Ok(a) => match disagreement(&h, &fleet, &a) {
                None => Some(a),
                Some(why) => {
                    last = why;
                    None
                }
            },
            Err(e) => {
                last = e;
                None
            }
        });
        let context = || {
            format!(
                "seed {seed} round {round} (replay with HERDER_CHAOS_SEED={seed}): `herder {}` with the daemon \
                 killed after {delay:?}, exit {}\nstdout: {}\nstderr: {}\nbefore: {before:?}\ndaemon.log:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail(&h.home.join("daemon.log"), 40)
            )
        };
        apps = settled.unwrap_or_else(|| panic!("{last}\n{}", context()));
        assert_ne!(h.daemon_pid(), Some(daemon), "{}", context());

        // Each app as it was, as the command leaves it, or part way (only if the command did
        // not say it succeeded).
        let seen = shapes(&apps).unwrap();
        for name in &names {
            let b = &before[name];
            let a = op.after(name, b, fleet.apps[name]);
            let s = seen.get(name).cloned();
            let fine = if said_ok { s == a } else { may_be(b, &a, &s) };
            assert!(fine, "`{name}`: {s:?}, expected {a:?} (before {b:?})\n{}", context());
            model.insert(name.clone(), s);
        }
        if let (Op::Save, true) = (&op, said_ok) {
            let dump: serde_json::Value =
                serde_json::from_slice(&std::fs::read(h.home.join("dump.json")).unwrap()).unwrap();
            let saved: BTreeMap<String, (bool, u64)> = dump["apps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    let name = a["spec"]["name"].as_str().unwrap().to_string();
                    (name, (a["running"].as_bool().unwrap(), a["spec"]["instances"].as_u64().unwrap()))
                })
                .collect();
            let expected: BTreeMap<String, (bool, u64)> = before
                .iter()
                .filter_map(|(n, s)| {
                    Some((n.clone(), (s.as_ref()?.iter().any(|x| *x), s.as_ref()?.len() as u64)))
                })
                .collect();
            assert_eq!(saved, expected, "dump.json after a save that said it succeeded\n{}", context());
        }
        if let Ok(bytes) = std::fs::read(h.home.join("dump.json")) {
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
            assert!(parsed.is_ok(), "dump.json does not parse: {parsed:?}\n{}", context());
        }

        let mut why = String::new();
        let agreed = poll(SETTLE, || match state_agrees(&h, &apps) {
            Ok(()) => Some(()),
            Err(e) => {
                why = e;
                None
            }
        });
        assert!(agreed.is_some(), "state.json and list disagree:\n{why}\n{}", context());
        // Eight connections in a row answered: one that goes to a stopped instance's socket
        // hangs.
        if seen.get("cl").is_some_and(|s| s.iter().any(|on| *on)) {
            assert!(
                poll(SETTLE, || (0..8).all(|_| served(fleet.port)).then_some(())).is_some(),
                "the cluster app does not answer every connection\n{}",
                context()
            );
        }
        eprintln!(
            "chaos: round {round}: `herder {}` killed after {delay:?}, exit {}: ok ({:.1} s)",
            args.join(" "),
            out.status.code().map_or("-".into(), |c| c.to_string()),
            started.elapsed().as_secs_f64()
        );
    }

    h.ok(&["kill"]);
    let left = poll(SETTLE, || marked(&fleet.run).is_empty().then_some(()));
    assert!(left.is_some(), "left after `herder kill`: {:?}", marked(&fleet.run));
    eprintln!("chaos: {done} rounds in {:.1} s: {kinds:?}", started.elapsed().as_secs_f64());
}

/// A cluster app of `instances` sleepers (tests/fixtures/idle.sh, tagged `tag`) on a free port,
/// in a config file.
fn cluster_config(h: &TestHome, tag: &str, instances: u32, min_uptime: &str) -> std::path::PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"cl\"\nscript = \"{}\"\nargs = [\"{tag}\"]\nexec_mode = \"cluster\"\n\
             instances = {instances}\nport = {port}\nmin_uptime = \"{min_uptime}\"\n",
            fixture("idle.sh").display()
        ),
    )
}

fn sigkill(h: &TestHome) {
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the daemon to die", SETTLE, || (!pid_alive(daemon)).then_some(()));
}

/// Regression (found by the chaos test): a reload of a config-file app in cluster mode took the
/// file's spec, instance count included, while the instances a scale had added went on running:
/// the list and state.json said 2 instances of the 3 that ran, and the next daemon after a crash
/// ran 2.
#[test]
fn a_reload_after_a_scale_keeps_the_count_that_runs() {
    let h = TestHome::new();
    let tag = h.tag("cl");
    h.ok(&["start", cluster_config(&h, &tag, 2, "100ms").to_str().unwrap()]);
    h.wait_status("cl", Status::Online, SETTLE);
    h.ok(&["scale", "cl", "3"]);
    h.ok(&["reload", "cl"]);
    let app = h.wait_status("cl", Status::Online, SETTLE);
    assert_eq!((app.instances.len(), app.spec.instances), (3, 3), "{:?}", app.instances);
    sigkill(&h);
    let app = h.wait_status("cl", Status::Online, SETTLE);
    assert_eq!((app.instances.len(), app.spec.instances), (3, 3), "after recovery: {:?}", app.instances);
    let pids: BTreeSet<u32> = app.instances.iter().filter_map(|i| i.pid).collect();
    wait_for("three instances and no other", SETTLE, || {
        (pids_with_arg(&tag).into_iter().collect::<BTreeSet<u32>>() == pids).then_some(())
    });
}

/// Regression (found by the chaos test): the instances a scale adds are in state.json before
/// they start; when the daemon died before it started them, the next one left them stopped.
#[test]
fn instances_a_scale_added_run_after_the_daemon_died_before_starting_them() {
    let h = TestHome::new();
    let tag = h.tag("cl");
    // Each new instance must stay up 20 s before the next starts: the scale is still waiting
    // for the second one when the daemon is killed.
    h.ok(&["start", cluster_config(&h, &tag, 1, "20s").to_str().unwrap()]);
    h.wait_status("cl", Status::Online, SETTLE);
    let mut scale = h.cmd(&["scale", "cl", "3"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for("state.json to record three instances, the second one running", SETTLE, || {
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(h.home.join("state.json")).ok()?).ok()?;
        let inst = st["apps"][0]["instances"].as_array()?;
        (inst.len() == 3 && inst.iter().any(|i| i["index"] == 1 && i["status"] == "online")).then_some(())
    });
    sigkill(&h);
    assert!(!scale.wait().unwrap().success(), "the scale was cut short");
    let app = h.wait_status("cl", Status::Online, SETTLE);
    assert_eq!(app.instances.len(), 3);
    let pids: BTreeSet<u32> = app.instances.iter().filter_map(|i| i.pid).collect();
    wait_for("three instances and no other", SETTLE, || {
        (pids_with_arg(&tag).into_iter().collect::<BTreeSet<u32>>() == pids).then_some(())
    });
}

/// Regression (found by bench/chaos.py): with one instance of a cluster app stopped, the
/// kernel still sent that instance's share of new connections to its socket, where no process
/// accepted them: they hung. After crash recovery too. And `herder start <id>` of an instance
/// other than the first looked for a script of that name.
#[test]
fn a_stopped_instance_of_a_cluster_app_gets_no_connections() {
    let h = TestHome::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster/python/server.py");
    let config = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"cl\"\nscript = \"{}\"\ninstances = 2\nport = {port}\nmin_uptime = \"200ms\"\n",
            server.display()
        ),
    );
    h.ok(&["start", config.to_str().unwrap()]);
    let app = h.wait_status("cl", Status::Online, SETTLE);
    let second = app.instances[1].id.unwrap().to_string();
    wait_for("the app to answer", SETTLE, || answer(port, Duration::from_secs(5)));
    let all_answered = |when: &str| {
        let failed = (0..40).filter(|_| answer(port, Duration::from_secs(2)).is_none()).count();
        assert_eq!(failed, 0, "{when}: {failed} of 40 connections got no answer");
    };
    h.ok(&["stop", &second]);
    all_answered("with instance 1 stopped");
    sigkill(&h);
    wait_for("instance 0 online and instance 1 stopped after recovery", SETTLE, || {
        let statuses: Vec<Status> = h.app("cl").instances.iter().map(|i| i.status).collect();
        (statuses == [Status::Online, Status::Stopped]).then_some(())
    });
    all_answered("after recovery, instance 1 still stopped");
    // Started again by its id (which `start` took for a script to run), it gets its share.
    h.ok(&["start", &second]);
    let pids: BTreeSet<u32> =
        h.wait_status("cl", Status::Online, SETTLE).instances.iter().filter_map(|i| i.pid).collect();
    let mut seen = BTreeSet::new();
    wait_for("both instances to answer", SETTLE, || {
        let body = answer(port, Duration::from_secs(5))?;
        seen.insert(body.split_whitespace().nth(3)?.parse::<u32>().ok()?);
        (seen == pids).then_some(())
    });
}
