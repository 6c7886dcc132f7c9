//! Moving from PM2, with a real PM2: `herder doctor` names a PM2 daemon and its apps,
//! `herder start` warns about an app PM2 already runs, and `pm2 save`'s dump converts to the
//! same apps and starts under herder.
//!
//! PM2 comes from `HERDER_TEST_PM2` (a `pm2` binary; `.ci/run` installs one and sets it), else
//! from the place `.ci/run` installs it. Without either the tests fail, saying how to get it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

/// Where `.ci/run` installs PM2.
fn cached_pm2() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    let bin = cache.join("herder-ci/pm2/node_modules/.bin/pm2");
    bin.is_file().then_some(bin)
}

fn pm2_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HERDER_TEST_PM2").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "HERDER_TEST_PM2={} is not a file", bin.display());
        return bin;
    }
    cached_pm2().unwrap_or_else(|| {
        panic!(
            "these tests need PM2: set HERDER_TEST_PM2 to a `pm2` binary, or install it where they look:\n  \
             npm install --prefix \"${{XDG_CACHE_HOME:-$HOME/.cache}}/herder-ci/pm2\" pm2@7\n\
             (.ci/run does both)"
        )
    })
}

/// A PM2 with its own `PM2_HOME` under the test's directory; its daemon and apps are killed
/// on drop, also when the test panics.
struct Pm2 {
    bin: PathBuf,
    home: PathBuf,
    cwd: PathBuf,
}

impl Pm2 {
    fn new(h: &TestHome) -> Pm2 {
        Pm2::with_home(h, "pm2-home")
    }

    fn with_home(h: &TestHome, dir: &str) -> Pm2 {
        let home = h.dir.path().join(dir);
        std::fs::create_dir_all(&home).unwrap();
        Pm2 { bin: pm2_bin(), home, cwd: h.dir.path().to_path_buf() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args).env("PM2_HOME", &self.home).env_remove("HERDER_HOME").current_dir(&self.cwd);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out: Output = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "pm2 {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.home.join("pm2.pid")).ok()?.trim().parse().ok()
    }

    /// `pm2 jlist`: name and pid of each process.
    fn processes(&self) -> Vec<(String, u32)> {
        let list: Value = serde_json::from_str(&self.ok(&["jlist"])).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["pid"].as_u64().unwrap_or(0) as u32))
            .collect()
    }

    /// Wait until PM2 runs `n` processes of `name`, all with a pid; returns the pids.
    fn wait_online(&self, name: &str, n: usize) -> Vec<u32> {
        wait_for(&format!("PM2 to run {n} `{name}`"), T, || {
            let pids: Vec<u32> =
                self.processes().into_iter().filter(|(x, p)| x == name && *p > 0).map(|(_, p)| p).collect();
            (pids.len() == n && pids.iter().all(|p| pid_alive(*p))).then_some(pids)
        })
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let daemon = self.daemon_pid();
        let _ = self.cmd(&["kill"]).output();
        // Whatever `pm2 kill` left: the daemon of this PM2_HOME and its children.
        let Some(daemon) = daemon.filter(|p| pid_alive(*p)) else { return };
        let title = std::fs::read(format!("/proc/{daemon}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&title).contains(&self.home.display().to_string()) {
            return;
        }
        for pid in children(daemon).into_iter().chain([daemon]) {
            // SAFETY: kill(2) on this test's PM2 daemon and its apps.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

/// A node app that stays up, listening on `PORT` when it is set.
const APP: &str = "const port = process.env.PORT;\n\
    if (port) require('http').createServer((q, r) => r.end('pm2')).listen(port);\n\
    setInterval(() => {}, 1000);\n";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn doctor(h: &TestHome) -> Value {
    let out = h.run(&["doctor", "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn doctor_names_a_pm2_daemon_and_its_app_and_start_warns_about_it() {
    let h = TestHome::new();
    let pm2 = Pm2::new(&h);
    let app = h.write("app.js", APP);
    let port = free_port();
    let out = pm2
        .cmd(&["start", app.to_str().unwrap(), "--name", "web"])
        .env("PORT", port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "pm2 start: {}", String::from_utf8_lossy(&out.stderr));
    let app_pid = pm2.wait_online("web", 1)[0];
    wait_for("PM2's app to listen", T, || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    let daemon = pm2.daemon_pid().expect("pm2.pid");

    let r = doctor(&h);
    let found = r["peers"]["pm2"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pid"] == daemon)
        .unwrap_or_else(|| panic!("PM2 daemon {daemon} not named: {r:#}"))
        .clone();
    assert_eq!(found["home"], pm2.home.display().to_string(), "{found:#}");
    let apps = found["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1, "{found:#}");
    assert_eq!(apps[0]["pid"], app_pid);
    assert_eq!(apps[0]["name"], "web");
    assert_eq!(apps[0]["script"], app.display().to_string());
    assert!(apps[0]["command"].as_str().unwrap().contains("app.js"), "{found:#}");
    let check = r["checks"].as_array().unwrap().iter().find(|c| c["id"] == "other-supervisors").unwrap();
    assert_eq!(check["level"], "degraded");
    assert!(check["detail"].as_str().unwrap().contains(&format!("PM2 daemon pid {daemon}")), "{check}");
    let text = h.ok(&["doctor"]);
    assert!(text.contains(&format!("daemon, pid {daemon} (PM2_HOME {})", pm2.home.display())), "{text}");
    assert!(text.contains(&format!("pid {app_pid}")), "{text}");

    // herder starting an app of the same name, wanting PM2's port: warned, started anyway.
    let idle = h.write("idle.js", "setInterval(() => {}, 1000);\n");
    let cfg = h.write(
        "herder.toml",
        &format!("[[apps]]\nname = \"web\"\nscript = \"{}\"\nport = {port}\n", idle.display()),
    );
    let out = h.run(&["start", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning does not block the start: {err}");
    assert!(err.contains(&format!("`web` also runs under the PM2 daemon pid {daemon}")), "{err}");
    assert!(err.contains(&format!("as pid {app_pid}")) && err.contains("pm2 delete web"), "{err}");
    assert!(err.contains(&format!("port {port} that `web` wants is already held by pid {app_pid}")), "{err}");
    h.wait_status("web", herder::protocol::Status::Online, T);

    // doctor now sees the clash and the port from herder's side.
    let r = doctor(&h);
    let clashes = r["peers"]["clashes"].as_array().unwrap();
    assert!(clashes.iter().any(|c| c["app"] == "web" && c["pids"][0] == app_pid), "{r:#}");
    let ports = r["peers"]["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["app"] == "web" && p["port"] == port && p["pid"] == app_pid), "{r:#}");
}

#[test]
fn two_pm2_daemons_are_named_with_a_warning() {
    let h = TestHome::new();
    let first = Pm2::new(&h);
    let second = Pm2::with_home(&h, "pm2-second");
    first.ok(&["ping"]);
    second.ok(&["ping"]);
    let pids = [first.daemon_pid().unwrap(), second.daemon_pid().unwrap()];
    let r = doctor(&h);
    let named: Vec<u64> =
        r["peers"]["pm2"].as_array().unwrap().iter().filter_map(|d| d["pid"].as_u64()).collect();
    for pid in pids {
        assert!(named.contains(&u64::from(pid)), "{pid}: {r:#}");
    }
    let warning = r["peers"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|w| w.contains("PM2 daemons run"))
        .unwrap_or_else(|| panic!("no warning: {r:#}"));
    assert!(warning.contains("may manage the same apps"), "{warning}");
    for pid in pids {
        assert!(warning.contains(&format!("pid {pid} for")), "{warning}");
    }
}

#[test]
fn a_pm2_dump_converts_to_the_same_apps_and_starts_under_herder() {
    let h = TestHome::new();
    let pm2 = Pm2::new(&h);
    let app = h.write("app.js", APP);
    let eco = h.write(
        "ecosystem.config.js",
        &format!(
            "module.exports = {{ apps: [\n\
             {{ name: 'api', script: '{app}', instances: 2, args: ['--mode', 'fast'],\n\
               env: {{ API_KEY: 'k-123', MODE: 'test' }}, max_memory_restart: '300M', kill_timeout: 3000 }},\n\
             {{ name: 'worker', script: '{app}', args: '--queue jobs', env: {{ QUEUE: 'jobs' }},\n\
               autorestart: false, cron_restart: '0 3 * * *' }},\n\
             ] }};\n",
            app = app.display()
        ),
    );
    pm2.ok(&["start", eco.to_str().unwrap()]);
    pm2.wait_online("api", 2);
    pm2.wait_online("worker", 1);
    pm2.ok(&["save"]);
    let dump = pm2.home.join("dump.pm2");
    assert!(dump.is_file());

    let toml_text = h.ok(&["convert", dump.to_str().unwrap()]);
    let doc: toml::Value = toml::from_str(&toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    let apps = doc["apps"].as_array().unwrap();
    let names: Vec<&str> = apps.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "worker"], "{toml_text}");
    let (api, worker) = (&apps[0], &apps[1]);
    for a in apps {
        assert_eq!(a["script"].as_str(), Some(app.to_str().unwrap()), "{toml_text}");
    }
    assert_eq!(api["instances"].as_integer(), Some(2), "{toml_text}");
    assert!(worker.get("instances").is_none(), "{toml_text}");
    let strings = |v: &toml::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
    };
    assert_eq!(strings(&api["args"]), ["--mode", "fast"]);
    assert_eq!(strings(&worker["args"]), ["--queue", "jobs"]);
    // The env the test set, and nothing of PM2's own or of the shell pm2 ran in (the same here).
    let env_keys =
        |a: &toml::Value| -> Vec<String> { a["env"].as_table().unwrap().keys().cloned().collect() };
    assert_eq!(env_keys(api), ["API_KEY", "MODE"], "{toml_text}");
    assert_eq!(api["env"]["API_KEY"].as_str(), Some("k-123"));
    assert_eq!(env_keys(worker), ["QUEUE"], "{toml_text}");
    assert_eq!(api["max_memory_restart"].as_integer(), Some(300 * 1024 * 1024), "{toml_text}");
    assert_eq!(api["kill_timeout"].as_integer(), Some(3000));
    assert_eq!(worker["autorestart"].as_bool(), Some(false));
    assert_eq!(worker["cron_restart"].as_str(), Some("0 3 * * *"));
    assert!(
        toml_text.contains("PM2_HOME") && toml_text.starts_with("# herder.toml converted"),
        "the header names what was left out: {toml_text}"
    );

    // `herder validate` and `herder start` read the dump itself.
    let v = h.ok(&["validate", dump.to_str().unwrap()]);
    assert!(v.contains("ok, 2 app(s): `api` ×2, `worker`"), "{v}");
    let out = h.run(&["start", dump.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("`api` also runs under the PM2 daemon pid") && err.contains("`worker` also runs"),
        "{err}"
    );
    let api = h.wait_status("api", herder::protocol::Status::Online, T);
    assert_eq!(api.instances.len(), 2);
    let shown: Value = serde_json::from_str(&h.ok(&["show", "api", "--json"])).unwrap();
    assert_eq!(shown["spec"]["env"]["MODE"], "test", "{shown:#}");
    h.wait_status("worker", herder::protocol::Status::Online, T);
}
