//! The process tree of an instance, read from /proc: descendants, start times, and the
//! environment marker that ties a re-parented orphan to the instance that started it.

use std::fs;
use std::io::Read;
use std::path::Path;

/// Environment variable set in every instance; its value names the home, app and instance.
pub const MARKER_VAR: &str = "HERDER_INSTANCE_ID";

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), which
/// together with the pid identifies a process across pid reuse.
pub fn start_ticks(pid: i32) -> Option<u64> {
    // From field 3 (state) on, starttime (field 22) is index 19.
    with_stat(pid, |rest| rest.split_whitespace().nth(19)?.parse().ok())
}

/// Read a small /proc or cgroup file into `buf` (no allocation); the text read.
pub(crate) fn read_small<'a>(path: &Path, buf: &'a mut [u8]) -> Option<&'a str> {
    let mut f = fs::File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// `f` of the fields of /proc/<pid>/stat from field 3 (state) on: the command name before
/// them may contain spaces and parentheses, so they start after its last ')'.
pub(crate) fn with_stat<T>(pid: i32, f: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    let mut buf = [0u8; 1024];
    let stat = read_small(Path::new(&format!("/proc/{pid}/stat")), &mut buf)?;
    f(stat.get(stat.rfind(')')? + 2..)?)
}

/// Whether `pid` is alive and is still the process that started at `ticks`.
pub fn is_same_process(pid: i32, ticks: u64) -> bool {
    start_ticks(pid) == Some(ticks) && !is_zombie(pid)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    !is_zombie(pid)
}

/// Wait until none of `pids` is alive, up to `timeout`. Returns whether all are gone.
pub fn wait_all_gone(pids: &[i32], timeout: std::time::Duration) -> bool {
    use std::time::Duration;
    let gone = || (!pids.iter().any(|&p| alive(p))).then_some(());
    crate::wait::until(timeout, Duration::from_micros(200), Duration::from_millis(20), gone).is_some()
}

/// A zombie, a process being reaped (`X`), or none at all.
fn is_zombie(pid: i32) -> bool {
    with_stat(pid, |rest| Some(rest.starts_with(['Z', 'X']))).unwrap_or(true)
}

/// Direct children of `pid` (all its threads' children).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.filter_map(Result::ok) {
        if let Ok(s) = fs::read_to_string(task.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Every descendant of `pid`, parents before children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = children(pid);
    while let Some(p) = stack.pop() {
        if out.contains(&p) {
            continue;
        }
        out.push(p);
        stack.extend(children(p));
    }
    out
}

/// The value of [`MARKER_VAR`] in the environment of `pid`, if readable.
pub fn marker_of(pid: i32) -> Option<String> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{MARKER_VAR}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Processes on the machine whose marker equals `marker` or, when `prefix` is true, starts with
/// it. Scans all of /proc: only for stops and recovery without cgroups, never per tick.
pub fn find_marked(marker: &str, prefix: bool) -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|&pid| pid != me)
        .filter(|&pid| match marker_of(pid) {
            Some(m) if prefix => m.starts_with(marker),
            Some(m) => m == marker,
            None => false,
        })
        .collect()
}

/// Resident set size of `pid` in bytes. Reads into a stack buffer: this runs for every
/// instance at every sample.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let mut buf = [0u8; 128];
    let statm = read_small(Path::new(&format!("/proc/{pid}/statm")), &mut buf)?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// Children of the daemon that carry `marker`: descendants of an instance that were
/// re-parented to the daemon (a subreaper) when their parent died.
pub fn find_children_marked(marker: &str) -> Vec<i32> {
    children(std::process::id() as i32)
        .into_iter()
        .filter(|&p| marker_of(p).as_deref() == Some(marker))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_ticks_and_marker() {
        let me = std::process::id() as i32;
        let t = start_ticks(me).expect("own start time");
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
        assert!(rss_bytes(me).unwrap() > 0);
    }

    #[test]
    fn descendants_of_a_shell_tree() {
        let mut child =
            std::process::Command::new("sh").args(["-c", "sleep 30 & sleep 30 & wait"]).spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while descendants(pid).len() < 2 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let d = descendants(pid);
        assert_eq!(d.len(), 2, "{d:?}");
        for p in d {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        child.wait().unwrap();
    }
}
