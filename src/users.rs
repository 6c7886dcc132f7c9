//! The accounts apps run as (`user`, `group`), and the rule that only a daemon running as
//! root may switch to another account.
//!
//! The config module uses it to report a user or group that does not exist where it is
//! written, and to give the app the account's `HOME`, `USER`, `LOGNAME` and `SHELL`; the
//! daemon looks the account up again before every spawn (the databases may have changed) and
//! hands the ids to the child, which switches to them between fork and exec.
//!
//! Accounts are read from `/etc/passwd` and `/etc/group` first. Only a dynamically linked
//! herder asks the C library (getpwnam_r/getpwuid_r, getgrnam_r/getgrgid_r, getgrouplist)
//! for what those files do not hold: a static glibc loads NSS modules other than `files`
//! and `dns` (`systemd`, `sss`, `ldap`) into a process they were not built for, and
//! `libnss_systemd` crashes it (a segfault on the first name missing from the files).

use std::fmt;
use std::path::PathBuf;

/// An account to run as, with everything the child needs to switch to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user's name (its uid as text when the uid has no passwd entry).
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups: those the user is a member of, and `gid` (getgrouplist).
    pub groups: Vec<u32>,
    /// The passwd entry's home directory and shell, when there is an entry.
    pub home: Option<PathBuf>,
    pub shell: Option<PathBuf>,
}

/// Why an account cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    /// `key` (`user` or `group`) names no account of this machine.
    NotFound { key: &'static str, value: String },
    /// The database could not be read.
    Lookup { key: &'static str, value: String, error: String },
    /// The daemon is not root and `key` names an account other than its own.
    NeedsRoot { key: &'static str, value: String, uid: u32 },
}

impl AccountError {
    /// The key the error is about: `user` or `group`.
    pub fn key(&self) -> &'static str {
        match self {
            AccountError::NotFound { key, .. }
            | AccountError::Lookup { key, .. }
            | AccountError::NeedsRoot { key, .. } => key,
        }
    }
}

impl AccountError {
    /// The value as written.
    pub fn value(&self) -> &str {
        match self {
            AccountError::NotFound { value, .. }
            | AccountError::Lookup { value, .. }
            | AccountError::NeedsRoot { value, .. } => value,
        }
    }

    /// What is wrong, without the key: "no such user on this machine".
    pub fn problem(&self) -> String {
        match self {
            AccountError::NotFound { key: "user", value } if is_id(value) => {
                format!("no user has the uid {value} on this machine")
            }
            AccountError::NotFound { key: "user", .. } => "no such user on this machine".to_string(),
            AccountError::NotFound { value, .. } if is_id(value) => {
                format!("no group has the gid {value} on this machine")
            }
            AccountError::NotFound { .. } => "no such group on this machine".to_string(),
            AccountError::Lookup { error, .. } => format!("cannot look it up: {error}"),
            AccountError::NeedsRoot { uid, .. } => {
                format!("needs a daemon running as root (this one runs as uid {uid})")
            }
        }
    }
}

impl fmt::Display for AccountError {
    /// "`user = \"nobody\"` needs a daemon running as root (this one runs as uid 1000)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, value) = (self.key(), self.value());
        let written =
            if is_id(value) { format!("`{key} = {value}`") } else { format!("`{key} = \"{value}\"`") };
        match self {
            AccountError::NeedsRoot { .. } => write!(f, "{written} {}", self.problem()),
            _ => write!(f, "{written}: {}", self.problem()),
        }
    }
}

impl std::error::Error for AccountError {}

/// Whether `value` is a numeric id rather than a name.
fn is_id(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

/// One passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// One group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// `name:password:uid:gid:gecos:home:shell` lines (NIS `+`/`-` lines and comments skipped).
fn parse_passwd(text: &str) -> Vec<UserEntry> {
    text.lines()
        .filter(|l| !l.starts_with(['#', '+', '-']))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(UserEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
                shell: PathBuf::from(f[6]),
            })
        })
        .collect()
}

/// `name:password:gid:member,member` lines.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with(['#', '+', '-']))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

fn read_db(path: &str, key: &'static str, value: &str) -> Result<String, AccountError> {
    std::fs::read_to_string(path).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(String::new()),
        _ => Err(AccountError::Lookup {
            key,
            value: value.to_string(),
            error: format!("cannot read {path}: {e}"),
        }),
    })
}

/// Whether accounts come from `/etc/passwd` and `/etc/group` only (a static build).
pub fn files_only() -> bool {
    !dynamic()
}

/// Whether this herder is linked dynamically, so that the C library may load NSS modules.
fn dynamic() -> bool {
    // The dynamic loader's base address; a static executable has no loader.
    // SAFETY: getauxval(3) reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_BASE) != 0 }
}

/// The passwd entry of `value`: a numeric uid, else a user name.
pub fn user(value: &str) -> Result<UserEntry, AccountError> {
    let id = value.parse::<u32>().ok().filter(|_| is_id(value));
    let matches = |u: &UserEntry| match id {
        Some(uid) => u.uid == uid,
        None => u.name == value,
    };
    if let Some(u) = parse_passwd(&read_db("/etc/passwd", "user", value)?).into_iter().find(matches) {
        return Ok(u);
    }
    if !dynamic() {
        return Err(AccountError::NotFound { key: "user", value: value.to_string() });
    }
    let found = match id {
        Some(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        None => nix::unistd::User::from_name(value),
    };
    match found {
        Ok(Some(u)) => Ok(UserEntry {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell,
        }),
        Ok(None) => Err(AccountError::NotFound { key: "user", value: value.to_string() }),
        Err(e) => Err(AccountError::Lookup { key: "user", value: value.to_string(), error: e.desc().into() }),
    }
}

/// The group entry of `value`: a numeric gid, else a group name.
pub fn group(value: &str) -> Result<GroupEntry, AccountError> {
    let id = value.parse::<u32>().ok().filter(|_| is_id(value));
    let matches = |g: &GroupEntry| match id {
        Some(gid) => g.gid == gid,
        None => g.name == value,
    };
    if let Some(g) = parse_group(&read_db("/etc/group", "group", value)?).into_iter().find(matches) {
        return Ok(g);
    }
    if !dynamic() {
        return Err(AccountError::NotFound { key: "group", value: value.to_string() });
    }
    let found = match id {
        Some(gid) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
        None => nix::unistd::Group::from_name(value),
    };
    match found {
        Ok(Some(g)) => Ok(GroupEntry { name: g.name, gid: g.gid.as_raw(), members: g.mem }),
        Ok(None) => Err(AccountError::NotFound { key: "group", value: value.to_string() }),
        Err(e) => {
            Err(AccountError::Lookup { key: "group", value: value.to_string(), error: e.desc().into() })
        }
    }
}

/// The supplementary groups of user `name` with primary group `gid`, as getgrouplist(3)
/// gives them: `gid` first, then every group that lists the user as a member.
fn group_list(name: &str, gid: u32) -> Result<Vec<u32>, AccountError> {
    let failed = |error: String| AccountError::Lookup { key: "user", value: name.to_string(), error };
    if dynamic() {
        let cname = std::ffi::CString::new(name).map_err(|_| failed("a NUL byte in the name".into()))?;
        let groups = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid))
            .map_err(|e| failed(format!("cannot list its groups: {}", e.desc())))?;
        return Ok(groups.into_iter().map(nix::unistd::Gid::as_raw).collect());
    }
    let mut groups = vec![gid];
    for g in parse_group(&read_db("/etc/group", "user", name)?) {
        if g.members.iter().any(|m| m == name) && !groups.contains(&g.gid) {
            groups.push(g.gid);
        }
    }
    Ok(groups)
}

/// The account for `user` and `group` as written: `user` by name or uid (this process's own
/// user when absent), `group` by name or gid (the user's primary group when absent).
pub fn account(user_value: Option<&str>, group_value: Option<&str>) -> Result<Account, AccountError> {
    // SAFETY: geteuid(2) and getegid(2) cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let entry = match user_value {
        Some(v) => Some(user(v)?),
        // Only `group`: the daemon's own user, which may have no passwd entry (a container
        // started with an arbitrary uid).
        None => user(&euid.to_string()).ok(),
    };
    let uid = entry.as_ref().map_or(euid, |u| u.uid);
    let gid = match group_value {
        Some(v) => group(v)?.gid,
        None => entry.as_ref().map_or(egid, |u| u.gid),
    };
    let groups = match &entry {
        Some(u) => group_list(&u.name, gid)?,
        None => vec![gid],
    };
    Ok(Account {
        name: entry.as_ref().map_or_else(|| uid.to_string(), |u| u.name.clone()),
        uid,
        gid,
        groups,
        home: entry.as_ref().map(|u| u.home.clone()),
        shell: entry.as_ref().map(|u| u.shell.clone()),
    })
}

/// The account an app with `user`/`group` must switch to, checked against the daemon's own
/// credentials: `None` when there is nothing to switch (neither key set, or a daemon that is
/// not root asked for its own account); an error when a daemon that is not root is asked for
/// another account, which the kernel would refuse.
pub fn switch_for(
    user_value: Option<&str>,
    group_value: Option<&str>,
) -> Result<Option<Account>, AccountError> {
    if user_value.is_none() && group_value.is_none() {
        return Ok(None);
    }
    let account = account(user_value, group_value)?;
    // SAFETY: geteuid(2) and getegid(2) cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid == 0 {
        return Ok(Some(account));
    }
    let refuse =
        |key: &'static str, value: &str| AccountError::NeedsRoot { key, value: value.to_string(), uid: euid };
    match (user_value, group_value) {
        (Some(u), _) if account.uid != euid => Err(refuse("user", u)),
        (_, Some(g)) if account.gid != egid => Err(refuse("group", g)),
        (Some(u), None) if account.gid != egid => Err(refuse("user", u)),
        // Its own account: the daemon's groups are those the app had before.
        _ => Ok(None),
    }
}

/// The variables an app running as `account` gets from its passwd entry: `HOME`, `USER`,
/// `LOGNAME`, `SHELL` (those the entry has).
pub fn login_env(account: &Account) -> Vec<(&'static str, String)> {
    let mut vars = vec![("USER", account.name.clone()), ("LOGNAME", account.name.clone())];
    if let Some(home) = &account.home {
        vars.push(("HOME", home.to_string_lossy().into_owned()));
    }
    if let Some(shell) = &account.shell {
        vars.push(("SHELL", shell.to_string_lossy().into_owned()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_by_uid() {
        let by_name = user("root").unwrap();
        let by_uid = user("0").unwrap();
        assert_eq!(by_name, by_uid);
        assert_eq!(by_name.uid, 0);
        assert_eq!(group("0").unwrap().gid, 0);
        let a = account(Some("root"), None).unwrap();
        assert_eq!((a.uid, a.gid), (0, 0));
        assert!(a.groups.contains(&0), "{:?}", a.groups);
        assert!(login_env(&a).iter().any(|(k, v)| *k == "USER" && v == "root"));
    }

    #[test]
    fn unknown_accounts_name_the_key_and_value() {
        let e = user("no-such-user-herder").unwrap_err();
        assert_eq!(e.key(), "user");
        assert_eq!(e.to_string(), "`user = \"no-such-user-herder\"`: no such user on this machine");
        let e = group("4000000000").unwrap_err();
        assert_eq!(e.to_string(), "`group = 4000000000`: no group has the gid 4000000000 on this machine");
    }

    #[test]
    fn the_files_parse_as_the_c_library_reads_them() {
        let users = parse_passwd("# c\nroot:x:0:0:root:/root:/bin/bash\n+nis\nbad:x:y:0::/:/bin/sh\nweb:x:1000:1000:,,,:/srv/web:/bin/sh\n");
        assert_eq!(
            users.iter().map(|u| (u.name.as_str(), u.uid)).collect::<Vec<_>>(),
            [("root", 0), ("web", 1000)]
        );
        assert_eq!(users[1].home, PathBuf::from("/srv/web"));
        let groups = parse_group("root:x:0:\nadm:x:4:web, syslog\nweb:x:1000:\n");
        assert_eq!(groups[1].members, ["web", "syslog"]);
        assert_eq!(groups.len(), 3);
    }

    #[test]
    fn nothing_to_switch_without_the_keys() {
        assert_eq!(switch_for(None, None), Ok(None));
    }

    #[test]
    fn the_refusal_names_the_key_the_value_and_the_uid() {
        let e = AccountError::NeedsRoot { key: "user", value: "nobody".into(), uid: 1000 };
        assert_eq!(
            e.to_string(),
            "`user = \"nobody\"` needs a daemon running as root (this one runs as uid 1000)"
        );
    }
}
