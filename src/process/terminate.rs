//! Ending an instance's processes, one sequence for a stop and for crash recovery: the stop
//! signal to the process group the instance leads, a grace period for it and its children to
//! end, then SIGKILL to everything left of it (its cgroup, or its group, its descendants and
//! the processes that carry its marker), and a wait until all of that is gone.

use std::future::Future;
use std::time::Duration;

use super::cgroup::Cgroup;
use super::tree;
use crate::wait;

/// How long SIGKILLed processes have to disappear before a warning.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The processes of one instance.
#[derive(Debug, Clone)]
pub struct Group {
    /// The instance's main process, which leads its process group (it called setsid).
    pub leader: i32,
    /// Its cgroup, when it has one: everything in it is the instance's.
    pub cgroup: Option<Cgroup>,
    /// Its marker value (see [`tree::MARKER_VAR`]), which ties re-parented processes to it.
    pub marker: String,
    /// The leader's descendants when the stop began.
    known: Vec<i32>,
    /// The processes are not the daemon's children (they outlived a daemon that died): an
    /// init reaps them, maybe late, and a pid of `known` may be reused by then, so one is
    /// killed only while it carries the marker.
    orphaned: bool,
}

impl Group {
    /// The processes of the instance led by `leader`, as they are now.
    pub fn of(leader: i32, cgroup: Option<Cgroup>, marker: &str) -> Group {
        Group {
            leader,
            cgroup,
            marker: marker.to_string(),
            known: tree::descendants(leader),
            orphaned: false,
        }
    }

    /// [`Group::of`] for the instance of a daemon that died (crash recovery).
    pub fn orphaned(leader: i32, cgroup: Option<Cgroup>, marker: &str) -> Group {
        Group { orphaned: true, ..Group::of(leader, cgroup, marker) }
    }

    /// Whether a process of the group is left (zombies count as gone).
    fn live(&self) -> bool {
        tree::alive(self.leader)
            || self.known.iter().any(|&p| tree::alive(p))
            || self.cgroup.as_ref().is_some_and(|c| c.path.exists() && c.populated())
    }

    /// Send `sig` to the group (to the leader alone when that fails).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the process group the instance leads, or on its leader.
        if unsafe { libc::kill(-self.leader, sig) } != 0 {
            unsafe { libc::kill(self.leader, sig) };
        }
    }

    /// End the group: `signal` to it (`None`: it was asked to stop another way), up to
    /// `grace` for it to end (`exited` resolves when the leader has, as the reaper tells for a
    /// child of the daemon; not awaited for an orphaned group), then SIGKILL to everything
    /// left, and wait until it is gone.
    pub async fn terminate(self, signal: Option<i32>, grace: Duration, exited: impl Future<Output = ()>) {
        if let Some(sig) = signal {
            self.signal(sig);
        }
        let deadline = tokio::time::Instant::now() + grace;
        // The leader's exit is an event for a child of the daemon; an orphan's is looked for.
        if !self.orphaned {
            let _ = tokio::time::timeout_at(deadline, exited).await;
        }
        // Its children got the signal too: the rest of the grace period is theirs.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        wait::until_async(left, Duration::from_millis(1), Duration::from_millis(50), || {
            (!self.live()).then_some(())
        })
        .await;
        let _ = tokio::task::spawn_blocking(move || self.kill()).await;
    }

    /// SIGKILL everything of the group and wait until it is gone; false when something
    /// outlived the wait.
    pub fn kill(&self) -> bool {
        if let Some(cg) = self.cgroup.as_ref().filter(|c| c.path.exists()) {
            let gone = cg.kill_and_wait(KILL_WAIT);
            if !gone {
                tracing::warn!(cgroup = %cg.path.display(), "processes of the instance outlived SIGKILL for 5 s");
            }
            if !self.orphaned {
                return gone;
            }
        }
        // SAFETY: kill(2) on the instance's process group.
        unsafe { libc::kill(-self.leader, libc::SIGKILL) };
        let mut victims = vec![self.leader];
        victims.extend(tree::descendants(self.leader));
        victims.extend(
            self.known
                .iter()
                .copied()
                .filter(|&p| !self.orphaned || tree::marker_of(p).as_deref() == Some(&self.marker)),
        );
        victims.extend(tree::find_marked(&self.marker, false));
        victims.sort_unstable();
        victims.dedup();
        for &p in &victims {
            // SAFETY: kill(2) on the leader, its descendants, or a process carrying its marker.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // kill(2) only queues the signal: the stop is done when they are gone.
        let gone = tree::wait_all_gone(&victims, KILL_WAIT);
        if !gone {
            tracing::warn!(pids = ?victims, "processes of the instance outlived SIGKILL for 5 s");
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// A process group leader whose shell ignores `TERM`, with a child that does too.
    fn stubborn(tag: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .args(["-c", &format!("trap '' TERM; sleep 1000 & wait # {tag}")])
            .env(tree::MARKER_VAR, tag)
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn a_group_that_ignores_the_signal_is_killed_after_the_grace_period() {
        let mut child = stubborn("herder-terminate-test");
        let leader = child.id() as i32;
        let ms = Duration::from_millis(1);
        wait::until(Duration::from_secs(5), ms, ms * 20, || {
            (!tree::descendants(leader).is_empty()).then_some(())
        })
        .expect("the shell started its child");
        let group = Group::of(leader, None, "herder-terminate-test");
        let known = group.known.clone();
        assert!(!known.is_empty());
        let start = std::time::Instant::now();
        group.terminate(Some(libc::SIGTERM), Duration::from_millis(200), std::future::pending()).await;
        assert!(start.elapsed() >= Duration::from_millis(200), "the grace period was given");
        let _ = child.wait();
        assert!(known.iter().all(|&p| !tree::alive(p)), "the child outlived the stop");
    }
}
