//! What an instance costs: CPU time and resident memory of its whole process tree.
//!
//! With a cgroup, CPU time is the group's `cpu.stat` (every process it ever held, exited ones
//! included) and memory the sum of the resident sets of the pids in `cgroup.procs`. Without
//! one, the tree is walked from the main pid through `/proc/<pid>/task/*/children`. Either way
//! only the instance's own pids are read: never a scan of all of /proc.

use std::path::Path;
use std::time::Instant;

use super::tree;

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// CPU time used so far (user + system), in microseconds.
    pub cpu_us: u64,
    /// Resident memory of every process, in bytes.
    pub rss: u64,
    /// How many processes.
    pub processes: u32,
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of `pid` (and, with `children`, of its waited-for children) in microseconds.
fn proc_cpu_us(pid: i32, children: bool) -> Option<u64> {
    let ticks = tree::with_stat(pid, |rest| {
        // utime 14, stime 15, cutime 16, cstime 17 → indexes 11..=14 from field 3 on.
        let f: Vec<&str> = rest.split_whitespace().take(15).collect();
        let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        Some(n(11) + n(12) + if children { n(13) + n(14) } else { 0 })
    })?;
    Some(ticks * 1_000_000 / clock_ticks())
}

/// `usage_usec` of a cgroup v2 group's `cpu.stat`, or `cpuacct.usage` (ns) of a v1 group.
fn cgroup_cpu_us(group: &Path) -> Option<u64> {
    let mut buf = [0u8; 512];
    if let Some(text) = tree::read_small(&group.join("cpu.stat"), &mut buf) {
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
            return v.trim().parse().ok();
        }
    }
    None
}

/// Pids listed in a group's `cgroup.procs`.
fn cgroup_pids(group: &Path) -> Option<Vec<i32>> {
    const STACK: usize = 4096;
    let mut buf = [0u8; STACK];
    let text = tree::read_small(&group.join("cgroup.procs"), &mut buf)?;
    if text.len() < STACK {
        return Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect());
    }
    // Too many processes for the stack buffer (several hundred): read the whole list.
    let text = std::fs::read_to_string(group.join("cgroup.procs")).ok()?;
    Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Measure the instance whose main process is `pid`, in `cgroup` if it has one.
pub fn measure(pid: i32, cgroup: Option<&Path>) -> Option<Reading> {
    if let Some(group) = cgroup {
        if let (Some(cpu_us), Some(pids)) = (cgroup_cpu_us(group), cgroup_pids(group)) {
            if !pids.is_empty() {
                let rss = pids.iter().filter_map(|p| tree::rss_bytes(*p)).sum();
                return Some(Reading { cpu_us, rss, processes: pids.len() as u32 });
            }
        }
    }
    let mut pids = vec![pid];
    pids.extend(tree::descendants(pid));
    let rss = pids.iter().filter_map(|p| tree::rss_bytes(*p)).sum::<u64>();
    if rss == 0 {
        return None;
    }
    // The main process's waited-for children count through it; live descendants by themselves.
    let cpu_us = proc_cpu_us(pid, true).unwrap_or(0)
        + pids[1..].iter().filter_map(|p| proc_cpu_us(*p, false)).sum::<u64>();
    Some(Reading { cpu_us, rss, processes: pids.len() as u32 })
}

/// The daemon's own CPU time (without its children: the apps it reaps) and resident memory,
/// from `/proc/self` alone.
pub fn own() -> Option<Reading> {
    let pid = std::process::id() as i32;
    Some(Reading { cpu_us: proc_cpu_us(pid, false)?, rss: tree::rss_bytes(pid)?, processes: 1 })
}

/// Samples kept for `monit`'s sparklines.
pub const HISTORY: usize = 60;

/// The running figures of one instance, updated at every sample.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// The process measured: a new pid starts the CPU figures over.
    pid: Option<i32>,
    last: Option<(Instant, u64)>,
    /// CPU time counted for the current process, µs: the first reading, then what each reading
    /// adds to the one before (never less, so the figure is a counter).
    cpu_total_us: u64,
    /// CPU use over the last interval, percent of one core.
    pub cpu_percent: Option<f32>,
    /// CPU time of the current process tree so far, in seconds.
    pub cpu_seconds: Option<f64>,
    pub rss: Option<u64>,
    pub processes: Option<u32>,
    /// Recent (cpu %, rss) samples, oldest first.
    pub history: std::collections::VecDeque<(f32, u64)>,
    /// The last hour, in buckets of [`HOUR_BUCKET_MS`] (for the web dashboard's charts).
    pub hour: HourRing,
}

/// One bucket of [`HourRing`]: the samples of [`HOUR_BUCKET_MS`] starting at `at_ms` (Unix
/// time), their mean CPU (percent of one core) and their highest resident memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourPoint {
    pub at_ms: u64,
    pub cpu_percent: f32,
    pub memory_bytes: u64,
}

/// Width of a bucket of [`HourRing`].
pub const HOUR_BUCKET_MS: u64 = 30_000;

/// Buckets kept: one hour.
pub const HOUR_POINTS: usize = 120;

/// An instance's CPU and memory over the last hour: at most [`HOUR_POINTS`] buckets of
/// [`HOUR_BUCKET_MS`], whatever the sample interval. The buckets are a ring allocated whole
/// (16 bytes a bucket, 1,920 bytes an instance) when the first one closes: a daemon's memory
/// is as large after a minute as after an hour, and never grows by steps as the hour fills.
#[derive(Debug, Clone, Default)]
pub struct HourRing {
    /// The closed buckets, from `head` on (wrapping), `len` of them; empty before the first.
    ring: Box<[Packed]>,
    head: usize,
    len: usize,
    /// The bucket being filled: its start, CPU sum, samples, highest memory.
    open: Option<(u64, f64, u32, u64)>,
}

/// A closed bucket as the ring keeps it: its start in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Packed {
    at_s: u32,
    cpu_percent: f32,
    memory_bytes: u64,
}

impl HourRing {
    /// Add a sample taken at `at_ms`.
    pub fn add(&mut self, at_ms: u64, cpu_percent: f32, memory_bytes: u64) {
        let start = at_ms - at_ms % HOUR_BUCKET_MS;
        match &mut self.open {
            Some((s, cpu, n, mem)) if *s == start => {
                *cpu += f64::from(cpu_percent);
                *n += 1;
                *mem = (*mem).max(memory_bytes);
                return;
            }
            _ => {}
        }
        if let Some(done) = self.open.take().map(close) {
            if self.ring.is_empty() {
                self.ring = vec![Packed::default(); HOUR_POINTS].into_boxed_slice();
            }
            let packed = Packed {
                at_s: u32::try_from(done.at_ms / 1000).unwrap_or(u32::MAX),
                cpu_percent: done.cpu_percent,
                memory_bytes: done.memory_bytes,
            };
            if self.len == HOUR_POINTS {
                self.ring[self.head] = packed;
                self.head = (self.head + 1) % HOUR_POINTS;
            } else {
                self.ring[(self.head + self.len) % HOUR_POINTS] = packed;
                self.len += 1;
            }
        }
        self.open = Some((start, f64::from(cpu_percent), 1, memory_bytes));
    }

    /// The buckets, oldest first, the one being filled last; none older than an hour before
    /// `now_ms`.
    pub fn points(&self, now_ms: u64) -> Vec<HourPoint> {
        let since = now_ms.saturating_sub(HOUR_POINTS as u64 * HOUR_BUCKET_MS);
        (0..self.len)
            .map(|i| self.ring[(self.head + i) % HOUR_POINTS])
            .map(|p| HourPoint {
                at_ms: u64::from(p.at_s) * 1000,
                cpu_percent: p.cpu_percent,
                memory_bytes: p.memory_bytes,
            })
            .chain(self.open.map(close))
            .filter(|p| p.at_ms >= since)
            .collect()
    }
}

fn close((at_ms, cpu, n, memory_bytes): (u64, f64, u32, u64)) -> HourPoint {
    HourPoint { at_ms, cpu_percent: (cpu / f64::from(n.max(1))) as f32, memory_bytes }
}

impl Usage {
    /// The process the figures are of.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Take a reading of `pid` (none: the instance is not running).
    pub fn update(&mut self, pid: Option<i32>, reading: Option<Reading>, now: Instant) {
        if pid != self.pid {
            *self = Usage {
                history: std::mem::take(&mut self.history),
                hour: std::mem::take(&mut self.hour),
                pid,
                ..Usage::default()
            };
        }
        let Some(r) = reading.filter(|_| pid.is_some()) else {
            self.cpu_percent = None;
            self.rss = None;
            self.processes = None;
            return;
        };
        // Without a cgroup, a descendant that leaves the tree (exits without being waited for,
        // or is re-parented) takes its time with it and the reading goes down: that interval
        // adds nothing, and the count goes on from the lower reading.
        let used = match self.last {
            Some((at, cpu)) => {
                let used = r.cpu_us.saturating_sub(cpu);
                let wall = now.duration_since(at).as_micros() as f64;
                if wall > 0.0 {
                    self.cpu_percent = Some((used as f64 / wall * 100.0) as f32);
                }
                used
            }
            None => r.cpu_us,
        };
        self.cpu_total_us += used;
        self.last = Some((now, r.cpu_us));
        self.cpu_seconds = Some(self.cpu_total_us as f64 / 1e6);
        self.rss = Some(r.rss);
        self.processes = Some(r.processes);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((self.cpu_percent.unwrap_or(0.0), r.rss));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.hour.add(now_ms, self.cpu_percent.unwrap_or(0.0), r.rss);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_hour_ring_keeps_an_hour_of_buckets_with_mean_cpu_and_peak_memory() {
        let mut ring = HourRing::default();
        ring.add(0, 10.0, 100);
        ring.add(1_000, 30.0, 300);
        ring.add(2_000, 20.0, 200);
        assert_eq!(ring.points(2_000), vec![HourPoint { at_ms: 0, cpu_percent: 20.0, memory_bytes: 300 }]);
        // Two hours of samples, one a second: an hour of buckets stays.
        for s in 0..7200u64 {
            ring.add(s * 1000, 1.0, s);
        }
        let points = ring.points(7_199_000);
        assert_eq!(points.len(), HOUR_POINTS);
        assert_eq!(points.last().unwrap().at_ms, 7_170_000);
        assert_eq!(points.last().unwrap().memory_bytes, 7199);
        assert!(points.windows(2).all(|w| w[1].at_ms - w[0].at_ms == HOUR_BUCKET_MS));
    }

    #[test]
    fn percent_is_cpu_time_over_wall_time() {
        let mut u = Usage::default();
        let t0 = Instant::now();
        u.update(Some(7), Some(Reading { cpu_us: 1_000_000, rss: 10, processes: 1 }), t0);
        assert_eq!(u.cpu_percent, None, "one reading has no rate yet");
        u.update(
            Some(7),
            Some(Reading { cpu_us: 1_500_000, rss: 20, processes: 2 }),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(u.cpu_percent, Some(50.0));
        assert_eq!((u.rss, u.processes), (Some(20), Some(2)));
        // A restart (new pid) starts the rate over.
        u.update(Some(8), Some(Reading { cpu_us: 10, rss: 5, processes: 1 }), t0 + Duration::from_secs(2));
        assert_eq!(u.cpu_percent, None);
        assert_eq!(u.history.len(), 3);
        u.update(None, None, t0 + Duration::from_secs(3));
        assert_eq!((u.rss, u.cpu_percent), (None, None));
    }

    #[test]
    fn cpu_seconds_never_go_down_until_the_pid_changes() {
        let mut u = Usage::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let r = |cpu_us: u64| Some(Reading { cpu_us, rss: 10, processes: 2 });
        let mut seen = Vec::new();
        // A descendant with 3 s of CPU leaves the tree between the second and third readings.
        for (s, cpu) in [(0, 5_000_000), (1, 5_500_000), (2, 2_700_000), (3, 3_000_000)] {
            u.update(Some(7), r(cpu), at(s));
            seen.push(u.cpu_seconds.unwrap());
        }
        assert_eq!(seen, vec![5.0, 5.5, 5.5, 5.8]);
        assert_eq!(u.cpu_percent, Some(30.0));
        // A new process starts the count over.
        u.update(Some(8), r(100_000), at(4));
        assert_eq!(u.cpu_seconds, Some(0.1));
    }

    #[test]
    fn own_usage_is_this_process_alone() {
        let r = own().unwrap();
        assert_eq!(r.processes, 1);
        assert!(r.rss > 1024 * 1024);
        // A waited-for child's time would count only with `children`.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        child.wait().unwrap();
        let alone = own().unwrap().cpu_us;
        let with_children = proc_cpu_us(std::process::id() as i32, true).unwrap();
        assert!(with_children > alone, "{with_children} µs with children, {alone} µs alone");
    }

    #[test]
    fn measures_this_process() {
        let r = measure(std::process::id() as i32, None).unwrap();
        assert!(r.rss > 1024 * 1024 && r.processes >= 1);
    }
}
