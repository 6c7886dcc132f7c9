//! Kernel limits for instances: `memory_limit` and `cpu_limit` through cgroups, and the count
//! of kernel OOM kills that tells an `oom-killed` exit from any other SIGKILL.
//!
//! Cgroup v2 is used when the daemon's group there offers the `memory` and `cpu` controllers
//! and they can be passed down to herder's group (see [`super::delegate`], which may move the
//! daemon into a leaf of its group for that); otherwise the v1 `memory` and `cpu` hierarchies get a parallel group per instance
//! (`herder-<token>/app-<id>-<index>` under the daemon's own group), which the child joins
//! before exec. Without either, limits are not applied and the daemon says why.

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::cgroup::{Cgroup, CgroupRoot};
use super::delegate::{delegate, Delegation};
use crate::protocol::AppSpec;

/// The CFS period used for `cpu_limit` (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Where limits can be set on this machine.
#[derive(Debug, Clone, Default)]
pub struct LimitRoots {
    /// herder's v2 group has these controllers for its instances.
    v2_memory: bool,
    v2_cpu: bool,
    /// herder's groups in the v1 hierarchies.
    v1_memory: Option<PathBuf>,
    v1_cpu: Option<PathBuf>,
    /// What cannot be limited, and why.
    pub note: Option<String>,
}

/// One instance's limits, ready for its spawn.
#[derive(Debug, Default)]
pub struct Applied {
    /// `cgroup.procs` of v1 groups the child joins before exec.
    pub join: Vec<OwnedFd>,
    /// Where the kernel counts this instance's OOM kills, and the count before the start.
    pub oom: Option<(PathBuf, u64)>,
}

/// The mount point of the v1 hierarchy holding `controller`, from mountinfo.
pub(crate) fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    super::cgroup::find_mount(mountinfo, |fstype, options| {
        fstype == "cgroup" && options.split(',').any(|o| o == controller)
    })
}

/// The daemon's group in the v1 hierarchy holding `controller`, from /proc/self/cgroup.
pub(crate) fn own_v1_group(cgroup: &str, controller: &str) -> Option<String> {
    cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        ctrls.split(',').any(|c| c == controller).then(|| path.to_string())
    })
}

fn v1_root(mountinfo: &str, own: &str, controller: &str, token: &str) -> Result<PathBuf, String> {
    let mount =
        v1_mount(mountinfo, controller).ok_or_else(|| format!("no cgroup v1 `{controller}` hierarchy"))?;
    let rel = own_v1_group(own, controller).unwrap_or_else(|| "/".into());
    let path = mount.join(rel.trim_start_matches('/')).join(format!("herder-{token}"));
    match fs::create_dir(&path) {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(path),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

impl LimitRoots {
    /// What this machine allows, with herder's v2 root if there is one.
    pub fn detect(token: &str, v2: Option<&CgroupRoot>) -> LimitRoots {
        let mut roots = LimitRoots::default();
        if std::env::var_os("HERDER_NO_CGROUP").is_some() {
            roots.note = Some("cgroups are disabled by `HERDER_NO_CGROUP`".into());
            return roots;
        }
        // What could be passed down from the daemon's v2 group, moving the daemon if need be.
        let v2 = v2
            .map(|root| {
                let d = delegate(&root.group, &root.path, &root.leaf, std::process::id(), &["memory", "cpu"]);
                if let Some(why) = &d.note {
                    tracing::info!(reason = %why, "cgroup v2 controllers not passed down to the instances");
                }
                d
            })
            .unwrap_or_default();
        roots.v2_memory = v2.enabled.iter().any(|c| c == "memory");
        roots.v2_cpu = v2.enabled.iter().any(|c| c == "cpu");
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut missing = Vec::new();
        if !roots.v2_memory {
            match v1_root(&mountinfo, &own, "memory", token) {
                Ok(p) => roots.v1_memory = Some(p),
                Err(e) => missing.push(Missing { limit: "memory_limit", controller: "memory", v1: e }),
            }
        }
        if !roots.v2_cpu {
            match v1_root(&mountinfo, &own, "cpu", token) {
                Ok(p) => roots.v1_cpu = Some(p),
                Err(e) => missing.push(Missing { limit: "cpu_limit", controller: "cpu", v1: e }),
            }
        }
        roots.note = missing_note(&missing, &v2);
        roots
    }

    /// How memory and CPU limits are applied, in words (for `ping` and `doctor`).
    pub fn describe(&self) -> String {
        let how = |v2: bool, v1: &Option<PathBuf>| {
            if v2 {
                "cgroup v2".to_string()
            } else if v1.is_some() {
                "cgroup v1".to_string()
            } else {
                "unavailable".to_string()
            }
        };
        format!("memory: {}, cpu: {}", how(self.v2_memory, &self.v1_memory), how(self.v2_cpu, &self.v1_cpu))
    }

    /// Set `spec`'s limits for the instance `name`, whose v2 group (already prepared) is `v2`.
    /// Errors say which limit could not be set.
    pub fn apply(&self, v2: Option<&Cgroup>, name: &str, spec: &AppSpec) -> Result<Applied, String> {
        let mut applied = Applied::default();
        // Memory: always watched for OOM kills where a memory group exists; limited if asked.
        if let (true, Some(group)) = (self.v2_memory, v2) {
            let max = spec.memory_limit.map_or("max".to_string(), |b| b.to_string());
            write(&group.path.join("memory.max"), &max)?;
            if spec.memory_limit.is_some() {
                // Without swap the limit is the limit.
                let _ = write(&group.path.join("memory.swap.max"), "0");
            }
            let events = group.path.join("memory.events");
            applied.oom = Some((events.clone(), oom_count(&events)));
        } else if let (Some(limit), Some(root)) = (spec.memory_limit, &self.v1_memory) {
            let group = fresh_v1_group(root, name)?;
            write(&group.join("memory.limit_in_bytes"), &limit.to_string())?;
            let _ = write(&group.join("memory.memsw.limit_in_bytes"), &limit.to_string());
            let oom = group.join("memory.oom_control");
            applied.oom = Some((oom.clone(), oom_count(&oom)));
            applied.join.push(open_procs(&group)?);
        } else if spec.memory_limit.is_some() {
            return Err(self.note.clone().unwrap_or_else(|| "no cgroup memory controller".into()));
        }
        let quota = spec.cpu_limit_millis.map(|m| (m as u64 * CPU_PERIOD_US / 1000).max(1000));
        if let (true, Some(group)) = (self.v2_cpu, v2) {
            let value = quota.map_or(format!("max {CPU_PERIOD_US}"), |q| format!("{q} {CPU_PERIOD_US}"));
            write(&group.path.join("cpu.max"), &value)?;
        } else if let (Some(q), Some(root)) = (quota, &self.v1_cpu) {
            // Where memory and cpu share one v1 hierarchy, the group made for the memory
            // limit above is the same one: set the quota there, join it once.
            let shared =
                spec.memory_limit.is_some() && !self.v2_memory && self.v1_memory.as_ref() == Some(root);
            let group = if shared { root.join(name) } else { fresh_v1_group(root, name)? };
            write(&group.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(&group.join("cpu.cfs_quota_us"), &q.to_string())?;
            if !shared {
                applied.join.push(open_procs(&group)?);
            }
        } else if quota.is_some() {
            return Err(self.note.clone().unwrap_or_else(|| "no cgroup cpu controller".into()));
        }
        Ok(applied)
    }

    /// Remove the v1 groups of an instance that is gone.
    pub fn remove(&self, name: &str) {
        for root in [&self.v1_memory, &self.v1_cpu].into_iter().flatten() {
            let _ = fs::remove_dir(root.join(name));
        }
    }

    /// Remove herder's own v1 groups (at daemon exit; only succeeds once they are empty).
    pub fn remove_roots(&self) {
        for root in [&self.v1_memory, &self.v1_cpu].into_iter().flatten() {
            if let Ok(rd) = fs::read_dir(root) {
                for e in rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                    let _ = fs::remove_dir(e.path());
                }
            }
            let _ = fs::remove_dir(root);
        }
    }
}

/// A limit that neither cgroup version can apply, with why v1 cannot.
struct Missing {
    limit: &'static str,
    controller: &'static str,
    v1: String,
}

/// What cannot be limited and why, from v1's reasons and what v2 delegation found.
fn missing_note(missing: &[Missing], v2: &Delegation) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    // Offered by the daemon's group but not passed down: one reason for all of them.
    let (blocked, absent): (Vec<&Missing>, Vec<&Missing>) =
        missing.iter().partition(|m| v2.note.is_some() && v2.offered.iter().any(|c| c == m.controller));
    let mut parts: Vec<String> = absent
        .iter()
        .map(|m| {
            format!("`{}` cannot be applied: no cgroup v2 {} controller and {}", m.limit, m.controller, m.v1)
        })
        .collect();
    if let (Some(why), false) = (&v2.note, blocked.is_empty()) {
        let limits: Vec<String> = blocked.iter().map(|m| format!("`{}`", m.limit)).collect();
        let v1: Vec<&str> = blocked.iter().map(|m| m.v1.as_str()).collect();
        let hint = if v2.shared {
            "; run the daemon under `herder startup` or in its own cgroup to apply `memory_limit`/`cpu_limit`"
        } else {
            ""
        };
        parts.push(format!(
            "{} cannot be applied: {why} (and {}){hint}",
            limits.join(" and "),
            v1.join(", ")
        ));
    }
    Some(parts.join("; "))
}

/// A v1 group for one run: emptied of an earlier run's settings by being recreated when empty.
fn fresh_v1_group(root: &Path, name: &str) -> Result<PathBuf, String> {
    let group = root.join(name);
    let _ = fs::remove_dir(&group);
    match fs::create_dir(&group) {
        Ok(()) => Ok(group),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(group),
        Err(e) => Err(format!("cannot create {}: {e}", group.display())),
    }
}

fn open_procs(group: &Path) -> Result<OwnedFd, String> {
    fs::OpenOptions::new()
        .write(true)
        .open(group.join("cgroup.procs"))
        .map(Into::into)
        .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", group.display()))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| format!("cannot write `{value}` to {}: {e}", path.display()))
}

/// The `oom_kill` count of a v2 `memory.events` or v1 `memory.oom_control` file.
pub fn oom_count(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_hierarchies_and_own_groups() {
        let mi = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(v1_mount(mi, "memory"), Some(PathBuf::from("/sys/fs/cgroup/memory")));
        assert_eq!(v1_mount(mi, "cpu"), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(v1_mount(mi, "pids"), None);
        let own = "4:memory:/process_api/x\n3:cpu,cpuacct:/\n0::/\n";
        assert_eq!(own_v1_group(own, "memory").as_deref(), Some("/process_api/x"));
        assert_eq!(own_v1_group(own, "cpu").as_deref(), Some("/"));
    }

    #[test]
    fn reads_oom_kill_counts_of_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("memory.events");
        fs::write(&v2, "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n").unwrap();
        assert_eq!(oom_count(&v2), 2);
        let v1 = dir.path().join("memory.oom_control");
        fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        assert_eq!(oom_count(&v1), 1);
        assert_eq!(oom_count(&dir.path().join("missing")), 0);
    }

    #[test]
    fn the_note_says_why_each_limit_cannot_be_applied() {
        let v1 = |c: &str| format!("no cgroup v1 `{c}` hierarchy");
        let both = [
            Missing { limit: "memory_limit", controller: "memory", v1: v1("memory") },
            Missing { limit: "cpu_limit", controller: "cpu", v1: v1("cpu") },
        ];
        assert_eq!(missing_note(&[], &Delegation::default()), None);
        // Not offered at all (v2 without the controllers, or no v2 group).
        assert_eq!(
            missing_note(&both[..1], &Delegation::default()).unwrap(),
            "`memory_limit` cannot be applied: no cgroup v2 memory controller and no cgroup v1 `memory` hierarchy"
        );
        // Offered, but the daemon shares its group: one reason, and what to do.
        let shared = Delegation {
            offered: vec!["memory".into(), "cpu".into()],
            shared: true,
            note: Some(
                "the daemon shares its cgroup (/sys/fs/cgroup/user.slice) with other processes (pid 7)"
                    .into(),
            ),
            ..Delegation::default()
        };
        assert_eq!(
            missing_note(&both, &shared).unwrap(),
            "`memory_limit` and `cpu_limit` cannot be applied: the daemon shares its cgroup \
             (/sys/fs/cgroup/user.slice) with other processes (pid 7) (and no cgroup v1 `memory` hierarchy, \
             no cgroup v1 `cpu` hierarchy); run the daemon under `herder startup` or in its own cgroup to \
             apply `memory_limit`/`cpu_limit`"
        );
        // Only memory offered (and failing): cpu is simply absent.
        let failed = Delegation {
            offered: vec!["memory".into()],
            moved: true,
            note: Some(
                "the daemon moved into L but `memory` cannot be enabled in G: Permission denied".into(),
            ),
            ..Delegation::default()
        };
        let note = missing_note(&both, &failed).unwrap();
        assert!(note.starts_with("`cpu_limit` cannot be applied: no cgroup v2 cpu controller"), "{note}");
        assert!(note.ends_with("`memory_limit` cannot be applied: the daemon moved into L but `memory` cannot be enabled in G: Permission denied (and no cgroup v1 `memory` hierarchy)"), "{note}");
    }
}
