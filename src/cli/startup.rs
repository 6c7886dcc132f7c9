//! `herder startup` and `herder unstartup`: a systemd unit that runs the daemon at boot, in the
//! foreground (`herder daemon --resurrect`, `Type=notify`: the daemon sends `READY=1` once it
//! serves its socket with the saved apps started).
//!
//! A system unit (`/etc/systemd/system`) needs root; a `--user` unit
//! (`~/.config/systemd/user`) does not. Whatever herder lacks the rights (or the `systemctl`)
//! for, it prints as the exact commands to run instead.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use super::args::{StartupArgs, UnstartupArgs};
use super::output::out;
use crate::paths::Paths;

/// The unit's file name.
const UNIT_NAME: &str = "herder.service";
/// The first line of every unit herder writes; `unstartup` removes only such files.
const MARKER: &str = "# Written by `herder startup`; `herder unstartup` removes it.";

/// System or user unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

/// What the unit says.
#[derive(Debug, Clone)]
pub struct Unit {
    pub scope: Scope,
    /// The herder binary.
    pub exe: PathBuf,
    /// `HERDER_HOME` of the daemon.
    pub home: PathBuf,
    /// `User=` of a system unit.
    pub run_as: Option<String>,
    /// `PATH` for the daemon (the apps' own environments are saved with them).
    pub path_env: Option<String>,
}

/// The unit file's text.
pub fn render(u: &Unit) -> String {
    let mut s = String::new();
    s.push_str(MARKER);
    s.push('\n');
    s.push_str("# It runs the herder daemon in the foreground and starts the apps `herder save` recorded.\n");
    s.push_str("[Unit]\n");
    s.push_str(&format!("Description=herder process manager ({})\n", specifiers(&u.home.to_string_lossy())));
    if u.scope == Scope::System {
        // The user manager cannot order itself after system targets.
        s.push_str("Wants=network-online.target\nAfter=network-online.target\n");
    }
    s.push_str("\n[Service]\n");
    // READY=1 comes from the daemon itself (not a child), once it serves its socket.
    s.push_str("Type=notify\nNotifyAccess=main\n");
    if let Some(user) = &u.run_as {
        s.push_str(&format!("User={}\n", specifiers(user)));
    }
    s.push_str(&format!("Environment={}\n", quote(&format!("HERDER_HOME={}", u.home.to_string_lossy()))));
    if let Some(path) = &u.path_env {
        s.push_str(&format!("Environment={}\n", quote(&format!("PATH={path}"))));
    }
    s.push_str(&format!("ExecStart={} daemon --resurrect\n", exec_arg(&u.exe.to_string_lossy())));
    s.push_str("Restart=on-failure\nRestartSec=2\n");
    // Every instance holds descriptors of the daemon, which raises its soft limit to this hard
    // one; the apps get the soft 1024 (a program using select(2) breaks past it).
    s.push_str("LimitNOFILE=1024:65536\n");
    // SIGTERM to the daemon only: it stops every app within its own kill_timeout. Whatever
    // is left when systemd's timeout runs out is killed.
    s.push_str("KillMode=mixed\n");
    // The daemon makes a cgroup per instance under its own.
    s.push_str("Delegate=yes\n");
    s.push_str("\n[Install]\n");
    s.push_str(match u.scope {
        Scope::System => "WantedBy=multi-user.target\n",
        Scope::User => "WantedBy=default.target\n",
    });
    s
}

/// `%` starts a specifier in unit files.
fn specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// A double-quoted value for `Environment=`: specifiers escaped, `\` and `"` backslashed.
fn quote(s: &str) -> String {
    format!("\"{}\"", specifiers(s).replace('\\', "\\\\").replace('"', "\\\""))
}

/// One word of `ExecStart=`: `$` would expand a variable, `%` a specifier; quoted when it has
/// spaces or quotes.
fn exec_arg(s: &str) -> String {
    let plain = specifiers(s).replace('$', "$$");
    if plain.is_empty() || plain.chars().any(|c| c.is_whitespace() || "\"'\\;".contains(c)) {
        format!("\"{}\"", plain.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        plain
    }
}

fn check_platform(platform: &str) -> Result<()> {
    if platform != "systemd" {
        bail!("herder startup supports `systemd` only (not `{platform}`)\nhint: herder startup systemd [--user]");
    }
    Ok(())
}

/// Where systemd reads units of `scope`.
fn default_unit_dir(scope: Scope) -> Result<PathBuf> {
    Ok(match scope {
        Scope::System => PathBuf::from("/etc/systemd/system"),
        Scope::User => {
            let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
                Some(dir) => PathBuf::from(dir),
                None => {
                    let home =
                        std::env::var_os("HOME").filter(|v| !v.is_empty()).context("`HOME` is not set")?;
                    PathBuf::from(home).join(".config")
                }
            };
            config.join("systemd/user")
        }
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the herder binary")
}

/// A command line for the user to paste, each word quoted for a POSIX shell.
fn shell_line(words: &[String]) -> String {
    words.iter().map(|w| shell_words::quote(w).into_owned()).collect::<Vec<_>>().join(" ")
}

/// The `systemctl` to run (`HERDER_SYSTEMCTL` replaces it, for tests).
fn systemctl_program() -> String {
    std::env::var("HERDER_SYSTEMCTL").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "systemctl".into())
}

/// `systemctl [--user] <args>` as words.
fn systemctl_words(scope: Scope, args: &[&str]) -> Vec<String> {
    let mut w = vec!["systemctl".to_string()];
    if scope == Scope::User {
        w.push("--user".into());
    }
    w.extend(args.iter().map(|a| a.to_string()));
    w
}

/// Run `systemctl [--user] <args>`; the error says what failed.
fn systemctl(scope: Scope, args: &[&str]) -> std::result::Result<(), String> {
    let words = systemctl_words(scope, args);
    let output = Command::new(systemctl_program()).args(&words[1..]).output();
    match output {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{}` failed ({}): {}",
            shell_line(&words),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err("`systemctl` is not installed here".into()),
        Err(e) => Err(format!("cannot run `{}`: {e}", shell_line(&words))),
    }
}

/// The name `systemctl enable` gets: the unit's name in systemd's folder, else its path
/// (which `systemctl enable` links into place).
fn unit_ref(path: &Path, custom_dir: bool) -> String {
    if custom_dir {
        path.to_string_lossy().into_owned()
    } else {
        UNIT_NAME.to_string()
    }
}

/// The user the daemon runs as, and its home folder, for `--run-as`.
fn lookup_user(name: &str) -> Result<nix::unistd::User> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => bail!("no user `{name}` on this machine"),
        Err(e) => bail!("cannot look up the user `{name}`: {e}"),
    }
}

/// `herder startup [systemd] [--user]`.
pub fn startup(a: &StartupArgs) -> Result<i32> {
    check_platform(&a.platform)?;
    let scope = if a.user { Scope::User } else { Scope::System };
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::current()).ok().flatten();
    let run_as = match (&a.run_as, scope) {
        (Some(name), _) => Some(lookup_user(name)?),
        (None, Scope::System) if !is_root() => me.clone(),
        _ => None,
    };
    // The daemon's home: `HERDER_HOME` as given, else that of the user it runs as (this
    // command's own when it runs as this user).
    let other_user = run_as.as_ref().filter(|u| Some(u.uid) != me.as_ref().map(|m| m.uid));
    let home = match (other_user, std::env::var_os("HERDER_HOME").filter(|v| !v.is_empty())) {
        (Some(u), None) => u.dir.join(".herder"),
        _ => Paths::from_env().context("cannot find herder's home")?.home,
    };
    let exe = exe()?;
    let path_env = std::env::var("PATH").ok().filter(|p| !p.is_empty());
    let custom_dir = a.unit_dir.is_some();
    let dir = match &a.unit_dir {
        Some(d) => d.clone(),
        None => default_unit_dir(scope)?,
    };
    let path = dir.join(UNIT_NAME);

    // A system unit needs root (to write it and to enable it): say how to run this as root.
    let sudo_line = |user: &Option<nix::unistd::User>| {
        let mut w: Vec<String> = vec!["sudo".into(), "env".into()];
        if let Some(p) = &path_env {
            w.push(format!("PATH={p}"));
        }
        w.push(format!("HERDER_HOME={}", home.display()));
        w.push(exe.to_string_lossy().into_owned());
        w.extend(["startup".into(), "systemd".into()]);
        if let Some(u) = user {
            w.extend(["--run-as".into(), u.name.clone()]);
        }
        if let Some(d) = &a.unit_dir {
            w.extend(["--unit-dir".into(), d.to_string_lossy().into_owned()]);
        }
        shell_line(&w)
    };
    let needs_root = |why: String| -> Result<i32> {
        eprintln!(
            "error: {why}\nrun this as root to write and enable it:\n  {}\nor make a unit of your own user instead (no root needed):\n  {} startup systemd --user",
            sudo_line(&run_as),
            shell_words::quote(&exe.to_string_lossy())
        );
        Ok(1)
    };
    if scope == Scope::System && !is_root() && !custom_dir {
        return needs_root(format!("writing {} needs root", path.display()));
    }

    let unit = Unit {
        scope,
        exe: exe.clone(),
        home: home.clone(),
        run_as: run_as.as_ref().filter(|u| !u.uid.is_root()).map(|u| u.name.clone()),
        path_env: path_env.clone(),
    };
    let text = render(&unit);
    match std::fs::read_to_string(&path) {
        Ok(old) if !old.starts_with(MARKER) => bail!(
            "{} exists and was not written by herder; it is left as it is\nhint: remove it yourself, or write herder's unit elsewhere with --unit-dir",
            path.display()
        ),
        _ => {}
    }
    if let Err(e) = write_unit(&path, &text) {
        if e.kind() == ErrorKind::PermissionDenied {
            return needs_root(format!("cannot write {}: {e}", path.display()));
        }
        return Err(anyhow::Error::new(e).context(format!("cannot write {}", path.display())));
    }
    let who = match &unit.run_as {
        Some(u) => format!("as `{u}`"),
        None if scope == Scope::User => "as you".into(),
        None => "as root".into(),
    };
    let mut text = format!("wrote {} (the daemon runs {who}, home {})\n", path.display(), home.display());

    let target = unit_ref(&path, custom_dir);
    let commands = [systemctl_words(scope, &["daemon-reload"]), systemctl_words(scope, &["enable", &target])];
    let failure = if a.no_systemctl {
        Some("--no-systemctl: the unit is not enabled yet".to_string())
    } else if scope == Scope::System && !is_root() {
        Some("enabling a system unit needs root".to_string())
    } else {
        systemctl(scope, &["daemon-reload"]).and_then(|()| systemctl(scope, &["enable", &target])).err()
    };
    let sudo = if scope == Scope::System && !is_root() { "sudo " } else { "" };
    let code = match &failure {
        None => {
            text.push_str("enabled: at boot the daemon starts and resurrects the apps of `herder save`\n");
            0
        }
        Some(why) => {
            text.push_str(&format!("{why}; to enable it, run:\n"));
            for c in &commands {
                text.push_str(&format!("  {sudo}{}\n", shell_line(c)));
            }
            i32::from(!a.no_systemctl)
        }
    };
    text.push_str("next: `herder save` records the apps running now, to bring them back at boot\n");
    let start = format!("{sudo}{}", shell_line(&systemctl_words(scope, &["start", UNIT_NAME])));
    text.push_str(&format!(
        "the daemon running now (if any) keeps running; to hand it to systemd now: `herder save && herder kill && {start}`\n"
    ));
    if scope == Scope::User {
        let name = me.map(|u| u.name).unwrap_or_else(|| "$USER".into());
        text.push_str(&format!(
            "note: a user unit starts at boot only if the user lingers: `sudo loginctl enable-linger {name}`\n"
        ));
    } else if unit.run_as.is_none() {
        if let Ok(sudo_user) = std::env::var("SUDO_USER") {
            text.push_str(&format!(
                "note: the daemon runs as root; for the apps of `{sudo_user}`, give `--run-as {sudo_user}`\n"
            ));
        }
    }
    out(&text)?;
    Ok(code)
}

/// Write the unit atomically, 0644 (systemd and `systemctl` read it as any user).
fn write_unit(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{UNIT_NAME}.tmp"));
    let written = (|| {
        let mut f =
            std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o644).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `herder unstartup [systemd] [--user]`.
pub fn unstartup(a: &UnstartupArgs) -> Result<i32> {
    check_platform(&a.platform)?;
    let scope = if a.user { Scope::User } else { Scope::System };
    let dir = match &a.unit_dir {
        Some(d) => d.clone(),
        None => default_unit_dir(scope)?,
    };
    let path = dir.join(UNIT_NAME);
    match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            out(&format!("no herder unit at {}; nothing to remove\n", path.display()))?;
            return Ok(0);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
        Ok(text) if !text.starts_with(MARKER) => bail!(
            "{} was not written by `herder startup`; it is left as it is\nhint: disable and remove it yourself",
            path.display()
        ),
        Ok(_) => {}
    }
    let exe = exe()?;
    if scope == Scope::System && !is_root() {
        let mut w = vec![
            "sudo".to_string(),
            exe.to_string_lossy().into_owned(),
            "unstartup".into(),
            "systemd".into(),
        ];
        if let Some(d) = &a.unit_dir {
            w.extend(["--unit-dir".into(), d.to_string_lossy().into_owned()]);
        }
        eprintln!("error: removing {} needs root; run:\n  {}", path.display(), shell_line(&w));
        return Ok(1);
    }
    // Disable first: `systemctl disable` reads the unit's [Install] section.
    let disabled = if a.no_systemctl {
        Err("--no-systemctl".to_string())
    } else {
        systemctl(scope, &["disable", UNIT_NAME])
    };
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    let mut text = format!("removed {}\n", path.display());
    let reloaded = match &disabled {
        Ok(()) => systemctl(scope, &["daemon-reload"]),
        Err(_) => Err(String::new()),
    };
    let code = match (disabled, reloaded) {
        (Ok(()), Ok(())) => {
            text.push_str(
                "disabled: herder no longer starts at boot (the daemon running now keeps running)\n",
            );
            0
        }
        (disabled, reloaded) => {
            let why = disabled.clone().err().or(reloaded.err()).unwrap_or_default();
            text.push_str(&format!("{why}; to finish, run:\n"));
            // The unit file is gone: systemctl finds the links to remove by the unit's name.
            if disabled.is_err() {
                text.push_str(&format!(
                    "  {}\n",
                    shell_line(&systemctl_words(scope, &["disable", UNIT_NAME]))
                ));
            }
            text.push_str(&format!("  {}\n", shell_line(&systemctl_words(scope, &["daemon-reload"]))));
            i32::from(!a.no_systemctl)
        }
    };
    out(&text)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(scope: Scope) -> Unit {
        Unit {
            scope,
            exe: PathBuf::from("/usr/local/bin/herder"),
            home: PathBuf::from("/srv/my apps/100%"),
            run_as: Some("app".into()),
            path_env: Some("/usr/bin:/bin".into()),
        }
    }

    #[test]
    fn system_and_user_units() {
        let s = render(&unit(Scope::System));
        assert!(s.starts_with(MARKER));
        for line in [
            "Type=notify",
            "NotifyAccess=main",
            "User=app",
            "Environment=\"HERDER_HOME=/srv/my apps/100%%\"",
            "Environment=\"PATH=/usr/bin:/bin\"",
            "ExecStart=/usr/local/bin/herder daemon --resurrect",
            "KillMode=mixed",
            "LimitNOFILE=1024:65536",
            "WantedBy=multi-user.target",
            "After=network-online.target",
        ] {
            assert!(s.lines().any(|l| l == line), "no `{line}` in\n{s}");
        }
        let u = render(&Unit { run_as: None, ..unit(Scope::User) });
        assert!(
            u.contains("WantedBy=default.target") && !u.contains("network-online") && !u.contains("User=")
        );
    }

    #[test]
    fn exec_words_and_values_are_escaped() {
        assert_eq!(exec_arg("/usr/bin/herder"), "/usr/bin/herder");
        assert_eq!(exec_arg("/opt/my bin/herder"), "\"/opt/my bin/herder\"");
        assert_eq!(exec_arg("/opt/50%/h$x"), "/opt/50%%/h$$x");
        assert_eq!(exec_arg("/a\"b"), "\"/a\\\"b\"");
        assert_eq!(quote("K=a\"b\\c%d"), "\"K=a\\\"b\\\\c%%d\"");
    }

    #[test]
    fn only_systemd_for_now() {
        assert!(check_platform("systemd").is_ok());
        assert!(check_platform("launchd").unwrap_err().to_string().contains("systemd"));
    }
}
