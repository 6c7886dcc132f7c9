//! `startup` and `unstartup`: the unit passes `systemd-analyze verify` (system and `--user`),
//! is enabled through `systemctl` (a recording stand-in here), and is removed again. Without
//! the rights or without `systemctl`, the exact commands are printed.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::*;

/// A `systemctl` stand-in that records its arguments, one call a line.
fn fake_systemctl(h: &TestHome) -> (PathBuf, PathBuf) {
    let log = h.dir.path().join("systemctl.log");
    let script = h.write("systemctl", &format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()));
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

fn herder(h: &TestHome, systemctl: &Path, args: &[&str]) -> Output {
    h.cmd(args).env("HERDER_SYSTEMCTL", systemctl).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `systemd-analyze [--user] verify <unit>` succeeds and says nothing about the unit.
fn verify(h: &TestHome, unit: &Path, user: bool) {
    let mut c = Command::new("systemd-analyze");
    if user {
        // The user manager's analyzer needs a runtime folder, as a login session has.
        let runtime = h.dir.path().join("xdg-runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        c.arg("--user").env("XDG_RUNTIME_DIR", runtime);
    }
    let out = c.arg("verify").arg(unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}\nunit:\n{text}");
    assert!(
        !stderr.contains("herder.service"),
        "systemd-analyze warns about the unit:\n{stderr}\nunit:\n{text}"
    );
}

#[test]
fn the_system_unit_verifies_is_enabled_and_unstartup_removes_it() {
    if let Err(reason) = analyzer_or_reason() {
        eprintln!("skipped (HERDER_TEST_NO_SYSTEMD_ANALYZE): {reason}");
        return;
    }
    let h = TestHome::new();
    let (systemctl, log) = fake_systemctl(&h);
    let dir = h.dir.path().join("system");
    let d = dir.to_str().unwrap();
    let out = ok(&herder(&h, &systemctl, &["startup", "systemd", "--unit-dir", d]));
    let unit = dir.join("herder.service");
    assert!(out.contains(&format!("wrote {}", unit.display())) && out.contains("enabled"), "{out}");
    verify(&h, &unit, false);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=notify") && text.contains(" daemon --resurrect"), "{text}");
    assert!(text.contains(&format!("HERDER_HOME={}", h.home.display())), "{text}");
    assert!(text.contains("WantedBy=multi-user.target"));
    assert_eq!(std::fs::metadata(&unit).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(calls(&log), vec!["daemon-reload".to_string(), format!("enable {}", unit.display())]);

    // Written again, the same unit replaces itself.
    ok(&herder(&h, &systemctl, &["startup", "--unit-dir", d]));
    std::fs::remove_file(&log).unwrap();
    let out = ok(&herder(&h, &systemctl, &["unstartup", "systemd", "--unit-dir", d]));
    assert!(out.contains(&format!("removed {}", unit.display())), "{out}");
    assert!(!unit.exists());
    assert_eq!(calls(&log), vec!["disable herder.service", "daemon-reload"]);
    let out = ok(&herder(&h, &systemctl, &["unstartup", "--unit-dir", d]));
    assert!(out.contains("nothing to remove"), "{out}");
}

#[test]
fn the_user_unit_verifies_and_goes_to_the_users_config() {
    if let Err(reason) = analyzer_or_reason() {
        eprintln!("skipped (HERDER_TEST_NO_SYSTEMD_ANALYZE): {reason}");
        return;
    }
    let h = TestHome::new();
    let (systemctl, log) = fake_systemctl(&h);
    // The default place: $HOME/.config/systemd/user.
    let user_home = h.dir.path().join("user home");
    let run = |args: &[&str]| {
        h.cmd(args)
            .env("HERDER_SYSTEMCTL", &systemctl)
            .env("HOME", &user_home)
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .unwrap()
    };
    let out = ok(&run(&["startup", "systemd", "--user"]));
    let unit = user_home.join(".config/systemd/user/herder.service");
    assert!(out.contains(&format!("wrote {}", unit.display())), "{out}");
    assert!(out.contains("loginctl enable-linger"), "{out}");
    verify(&h, &unit, true);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("WantedBy=default.target") && !text.contains("User="), "{text}");
    assert_eq!(calls(&log), vec!["--user daemon-reload", "--user enable herder.service"]);

    std::fs::remove_file(&log).unwrap();
    let out = ok(&run(&["unstartup", "--user"]));
    assert!(out.contains("removed"), "{out}");
    assert!(!unit.exists());
    assert_eq!(calls(&log), vec!["--user disable herder.service", "--user daemon-reload"]);
}

#[test]
fn a_home_with_spaces_and_percent_signs_still_verifies() {
    if let Err(reason) = analyzer_or_reason() {
        eprintln!("skipped (HERDER_TEST_NO_SYSTEMD_ANALYZE): {reason}");
        return;
    }
    let h = TestHome::new();
    let dir = h.dir.path().join("units");
    let home = h.dir.path().join("odd home 100%");
    let out = h
        .cmd(&["startup", "--unit-dir", dir.to_str().unwrap(), "--no-systemctl"])
        .env("HERDER_HOME", &home)
        .output()
        .unwrap();
    // Not enabled: the commands to do it are printed, and that is no failure.
    let text = ok(&out);
    assert!(text.contains("systemctl daemon-reload") && text.contains("systemctl enable"), "{text}");
    let unit = dir.join("herder.service");
    verify(&h, &unit, false);
    assert!(std::fs::read_to_string(&unit).unwrap().contains("odd home 100%%"));
}

#[test]
fn without_systemctl_the_commands_are_printed() {
    let h = TestHome::new();
    let dir = h.dir.path().join("units");
    let missing = h.dir.path().join("no-such-systemctl");
    let out = herder(&h, &missing, &["startup", "--unit-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("`systemctl` is not installed here"), "{text}");
    let enable = format!("  systemctl enable {}", dir.join("herder.service").display());
    assert!(
        text.lines().any(|l| l == "  systemctl daemon-reload") && text.lines().any(|l| l == enable),
        "{text}"
    );
    assert!(dir.join("herder.service").exists(), "the unit is written all the same");
    let out = herder(&h, &missing, &["unstartup", "--unit-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("systemctl disable herder.service"));
    assert!(!dir.join("herder.service").exists());
}

#[test]
fn a_unit_herder_did_not_write_is_left_alone() {
    let h = TestHome::new();
    let (systemctl, log) = fake_systemctl(&h);
    let dir = h.dir.path().join("units");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("herder.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
    for verb in ["startup", "unstartup"] {
        let out = herder(&h, &systemctl, &[verb, "--unit-dir", dir.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not written by"), "{verb}");
    }
    assert!(calls(&log).is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.join("herder.service")).unwrap(),
        "[Service]\nExecStart=/bin/true\n"
    );
    let err = h.fails(&["startup", "launchd"]);
    assert!(err.contains("systemd"), "{err}");
}

#[test]
fn without_root_a_system_unit_prints_the_command_to_run() {
    if unsafe { libc::geteuid() } != 0 {
        // Already not root: the plain command shows it.
        let h = TestHome::new();
        let err = h.fails(&["startup"]);
        assert!(err.contains("sudo env") && err.contains("startup systemd --run-as"), "{err}");
        return;
    }
    let h = TestHome::new();
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = h.cmd(&["startup", "systemd"]);
    // As `nobody`, with a home of its own.
    c.env("HOME", h.dir.path());
    unsafe {
        c.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = format!(
        "  sudo env {} {} {BIN} startup systemd --run-as nobody",
        shell_words::quote(&format!("PATH={}", std::env::var("PATH").unwrap())),
        shell_words::quote(&format!("HERDER_HOME={}", h.home.display())),
    );
    assert!(err.lines().any(|l| l == line), "expected `{line}` in:\n{err}");
    assert!(err.contains("startup systemd --user"), "{err}");
}
