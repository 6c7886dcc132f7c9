//! `herder monit` in a real terminal: tmux on a private socket, read back with `capture-pane`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// A tmux server of this test's own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux must be installed to test `herder monit` (.ci/run installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "monit"]).stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.run(&["send-keys", "-t", "monit", keys]);
        assert!(out.status.success(), "send-keys: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn sh_quote(p: &std::path::Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The screen line of the table row of `name`.
fn row(screen: &str, name: &str) -> Option<String> {
    screen.lines().find(|l| l.split_whitespace().any(|w| w == name)).map(str::to_string)
}

#[test]
fn monit_in_tmux_shows_apps_refreshes_and_restarts_the_selected_app() {
    let h = TestHome::new();
    let tag = h.tag("clock");
    h.ok(&["start", fixture("clock.py").to_str().unwrap(), "--name", "clk", "--", &tag]);
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "idle"]);
    let idle = h.wait_status("idle", herder::protocol::Status::Online, T);
    let idle_pid = idle.instances[0].pid.unwrap();

    let err_file: PathBuf = h.dir.path().join("monit.err");
    let exit_file: PathBuf = h.dir.path().join("monit.exit");
    let command = format!(
        "HERDER_HOME={} {} monit 2>{}; echo $? >{}",
        sh_quote(&h.home),
        sh_quote(std::path::Path::new(BIN)),
        sh_quote(&err_file),
        sh_quote(&exit_file),
    );
    let tmux = Tmux { socket: h.tag("tmux") };
    let out = tmux.run(&["new-session", "-d", "-s", "monit", "-x", "120", "-y", "40", &command]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    let diag = |what: &str, screen: &str| {
        format!(
            "{what}\n--- screen\n{screen}\n--- monit stderr\n{}",
            std::fs::read_to_string(&err_file).unwrap_or_default()
        )
    };

    // The apps, and the selected app's live log lines.
    let first = wait_for("monit to show both apps and clk's log lines", T, || {
        let s = tmux.screen();
        let ok = row(&s, "clk").is_some_and(|r| r.contains("online"))
            && row(&s, "idle").is_some_and(|r| r.contains("online") && r.contains(&idle_pid.to_string()))
            && s.contains(&format!("{tag} "));
        ok.then_some(s)
    });
    assert!(row(&first, "clk").unwrap().contains('▶'), "{}", diag("clk is selected first", &first));

    // The daemon's CPU figure reaches the table.
    wait_for("clk's cpu share", T, || row(&tmux.screen(), "clk")?.contains('%').then_some(()));

    // Refreshed every second: idle's row changes (its uptime advances) while nothing happens
    // to it.
    let before = row(&first, "idle").unwrap();
    wait_for("the idle row to refresh", Duration::from_secs(5), || {
        let now = row(&tmux.screen(), "idle")?;
        (now != before).then_some(())
    });

    // Select `idle` and restart it with `r`.
    tmux.keys("j");
    wait_for("idle to be selected", T, || row(&tmux.screen(), "idle")?.contains('▶').then_some(()));
    tmux.keys("r");
    let restarted = wait_for("idle to be restarted by the `r` key", T, || {
        let app = h.app("idle");
        let i = &app.instances[0];
        (i.restarts == 1 && i.pid.is_some_and(|p| p != idle_pid)).then_some(app)
    });
    let new_pid = restarted.instances[0].pid.unwrap().to_string();
    assert_eq!(h.app("clk").instances[0].restarts, 0, "only the selected app restarts");
    wait_for("monit to show the new pid", T, || {
        let s = tmux.screen();
        row(&s, "idle")?.contains(&new_pid).then_some(())
    });
    let s = tmux.screen();
    assert!(s.contains("restarted `idle`"), "{}", diag("the footer reports the restart", &s));

    // `q` leaves with status 0.
    tmux.keys("q");
    let code = wait_for("monit to exit after `q`", T, || {
        let code = std::fs::read_to_string(&exit_file).ok()?;
        code.ends_with('\n').then(|| code.trim().to_string())
    });
    assert_eq!(code, "0", "{}", diag("monit exits 0", ""));
}

#[test]
fn monit_without_a_terminal_says_so_and_fails() {
    let h = TestHome::new();
    let out = h.cmd(&["monit"]).stdin(std::process::Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal") && err.contains("stdout is not one"), "{err}");
    assert!(err.contains("herder list"), "{err}");
    assert!(out.stdout.is_empty(), "nothing drawn on a pipe");
    assert!(!h.home.join("herder.sock").exists(), "no daemon is started for nothing");
}

#[test]
fn monit_shows_each_instance_s_state_in_its_balancer() {
    let h = TestHome::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    h.write(
        "app.js",
        "require('http').createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT), '127.0.0.1');\n",
    );
    let file = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"web\"\nscript = \"app.js\"\ninstances = 2\n\n[apps.balancer]\nlisten = {port}\n"
        ),
    );
    h.ok(&["start", file.to_str().unwrap()]);
    let command = format!("HERDER_HOME={} {} monit", sh_quote(&h.home), sh_quote(std::path::Path::new(BIN)));
    let tmux = Tmux { socket: h.tag("tmux") };
    let out = tmux.run(&["new-session", "-d", "-s", "monit", "-x", "160", "-y", "40", &command]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));

    // Both instances in the pool, and the summary over the log pane.
    let summary = format!("balancer {port} http · 2/2 in the pool");
    let shown = poll(T, || {
        let s = tmux.screen();
        (s.contains(&summary) && s.matches("in · 0 under way").count() == 2).then_some(())
    });
    assert!(shown.is_some(), "both instances in the balancer: {}", tmux.screen());
    // Each row has its instance's own id, as `list` gives it.
    let s = tmux.screen();
    for i in h.app("web").instances {
        let row = row(&s, &format!("web:{}", i.index)).unwrap();
        let id = row.split_whitespace().find(|w| w.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(id, Some(i.id.unwrap().to_string().as_str()), "{s}");
    }

    // One stopped: out of the pool, and the summary says so.
    let id = h.app("web").instances[1].id.unwrap().to_string();
    h.ok(&["stop", &id]);
    let summary = format!("balancer {port} http · 1/2 in the pool");
    let screen = poll(T, || {
        let s = tmux.screen();
        (s.contains(&summary) && s.contains("out: not ready")).then_some(s)
    });
    let screen = screen.unwrap_or_else(|| panic!("the stopped instance out of the pool: {}", tmux.screen()));
    assert_eq!(screen.matches("in · 0 under way").count(), 1, "{screen}");
}
