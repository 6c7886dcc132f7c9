//! Creating an instance's process: `clone3(CLONE_INTO_CGROUP)` places the child in its cgroup
//! as it is created. Moving a process afterwards (writing to `cgroup.procs`) takes a global
//! lock with an RCU grace period, which costs tens of milliseconds on every restart.
//!
//! Everything the child needs (paths, argv, envp, file descriptors) is prepared before the
//! clone, so that between clone and exec the child makes only async-signal-safe system calls
//! and never allocates. When the kernel has no `clone3` (before 5.3) or no `CLONE_INTO_CGROUP`
//! (before 5.7), a plain fork is used and the child joins its cgroup by writing to
//! `cgroup.procs` before exec.
//!
//! The child inherits a list of descriptors at 3, 4, 5 … (the listening sockets of socket
//! activation, then a Node app's IPC channel), and with [`Plan::listen_pid`] its environment
//! holds `LISTEN_PID` set to its own pid: the digits are written by the child into a buffer
//! prepared for them, since it cannot allocate.
//!
//! An app with `user`/`group` gets its account's ids and supplementary groups in the plan
//! (looked up by the daemon before the clone); the child drops to them after joining its
//! cgroups (which needs the daemon's rights) and before entering its working directory (so
//! that the app's own rights apply there, as they do to everything it does later).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Variables by which a service manager (systemd) talks to the process it started. An app
/// captured with them (`herder start` run from a unit, `herder run` under systemd) must not
/// send its `READY=1` to herder's own manager: it gets herder's notify socket or none.
pub const SERVICE_MANAGER_VARS: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// What to execute, ready for the child.
pub struct Plan {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    credentials: Option<Credentials>,
    /// Add `LISTEN_PID=<the child's pid>` to the environment.
    listen_pid: bool,
}

/// `LISTEN_PID=` and the longest pid, and its NUL.
const LISTEN_PID_LEN: usize = "LISTEN_PID=".len() + 20 + 1;

/// The account the child switches to before exec: supplementary groups, group, user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

impl Credentials {
    pub fn of(account: &crate::users::Account) -> Credentials {
        Credentials { uid: account.uid, gid: account.gid, groups: account.groups.clone() }
    }
}

impl Plan {
    /// `program` is looked up in the `PATH` of `env` unless it contains a `/`.
    pub fn new<'a>(
        program: &str,
        args: impl IntoIterator<Item = &'a str>,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        cwd: &Path,
    ) -> io::Result<Plan> {
        let envp: Vec<CString> =
            env.into_iter().map(|(k, v)| cstring(format!("{k}={v}"))).collect::<Result<_, _>>()?;
        let path_var = envp
            .iter()
            .find_map(|kv| kv.to_bytes().strip_prefix(b"PATH=").map(|p| p.to_vec()))
            .unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec());
        let resolved = resolve_program(program, &path_var, cwd)?;
        let mut argv = vec![cstring(program)?];
        for a in args {
            argv.push(cstring(a)?);
        }
        Ok(Plan {
            program: cstring(resolved.as_os_str())?,
            argv,
            envp,
            cwd: cstring(cwd.as_os_str())?,
            credentials: None,
            listen_pid: false,
        })
    }

    /// Give the child `LISTEN_PID` with its own pid (socket activation), in place of any
    /// `LISTEN_PID` of the environment.
    pub fn listen_pid(mut self) -> Plan {
        self.envp.retain(|kv| !kv.to_bytes().starts_with(b"LISTEN_PID="));
        self.listen_pid = true;
        self
    }

    /// Run as this account instead of the daemon's.
    pub fn run_as(mut self, credentials: Option<Credentials>) -> Plan {
        self.credentials = credentials;
        self
    }
}

fn cstring(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a program, argument or variable")
    })
}

/// The executable `execve` will run: `program` itself when it has a `/` (relative to `cwd`),
/// else the first executable file of that name in `path_var`.
fn resolve_program(program: &str, path_var: &[u8], cwd: &Path) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(cwd.join(program));
    }
    for dir in path_var.split(|b| *b == b':') {
        let dir = if dir.is_empty() { cwd.to_path_buf() } else { cwd.join(OsStr::from_bytes(dir)) };
        let candidate = dir.join(program);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("`{program}` is not in the app's PATH")))
}

fn is_executable_file(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else { return false };
    // SAFETY: access(2) with a valid C string.
    p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// A started child with the read ends of its stdout and stderr.
pub struct Child {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A cloned child that has not reached `exec` yet.
pub struct Pending {
    pub pid: i32,
    stdout: OwnedFd,
    stderr: OwnedFd,
    status: OwnedFd,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Where the child goes.
pub struct CgroupTarget<'a> {
    /// The cgroup directory, for `CLONE_INTO_CGROUP`.
    pub dir: &'a OwnedFd,
    /// Its `cgroup.procs`, for the fallback.
    pub procs: &'a OwnedFd,
}

/// Clone the child (into `cgroup` when given) to exec `plan` in a new session with stdin on
/// /dev/null and stdout/stderr on new pipes, and `inherit` at 3, 4, 5 … in that order. The
/// caller registers the pid with the reaper (holding its lock around this call), then calls
/// [`Pending::wait_exec`].
///
/// `join` are `cgroup.procs` files of further (v1) groups the child moves itself into before
/// exec, where its memory and CPU limits are set.
pub fn clone_child(
    plan: &Plan,
    cgroup: Option<CgroupTarget<'_>>,
    inherit: &[RawFd],
    join: &[RawFd],
) -> io::Result<Pending> {
    let devnull = std::fs::File::open("/dev/null")?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;

    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // The child writes its pid into this copy of the buffer (its own, after the clone).
    let mut listen_pid = [0u8; LISTEN_PID_LEN];
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    if plan.listen_pid {
        envp.push(listen_pid.as_ptr().cast());
    }
    envp.push(std::ptr::null());
    // Where the child parks each inherited descriptor before it moves them into place.
    let mut parked = vec![-1; inherit.len()];
    let fds = ChildFds {
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        inherit,
        status: status_w.as_raw_fd(),
    };
    let nofile = super::nofile::for_children();

    let mut join_procs: Option<RawFd> = None;
    let pid = match &cgroup {
        Some(cg) => {
            let mut args = CloneArgs {
                flags: CLONE_INTO_CGROUP,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: cg.dir.as_raw_fd() as u64,
                ..Default::default()
            };
            // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork: the child
            // gets a copy of this address space and returns here with 0.
            let r = unsafe {
                libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>())
            };
            if r == -1 && clone3_unsupported(io::Error::last_os_error()) {
                join_procs = Some(cg.procs.as_raw_fd());
                // SAFETY: fork(2); the child only runs `exec_child`.
                unsafe { libc::fork() as libc::c_long }
            } else {
                r
            }
        }
        // SAFETY: as above.
        None => unsafe { libc::fork() as libc::c_long },
    };
    if pid == 0 {
        // SAFETY: in the child; every pointer refers to memory prepared above.
        unsafe {
            let scratch =
                Scratch { listen_pid: plan.listen_pid.then_some(&mut listen_pid), parked: &mut parked };
            exec_child(plan, &argv, &envp, &fds, scratch, nofile.as_ref(), join_procs, join)
        }
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    drop((out_w, err_w, status_w, devnull));
    Ok(Pending { pid: pid as i32, stdout: out_r, stderr: err_r, status: status_r })
}

impl Pending {
    /// Wait until the child has called `exec` (success) or failed before it (its errno).
    pub fn wait_exec(self) -> io::Result<Child> {
        let status_r = self.status;
        // The status pipe closes on exec (it is close-on-exec); before that, a failing child
        // writes its errno and the step that failed into it.
        let mut report = [0u8; 8];
        let mut got = 0;
        while got < report.len() {
            // SAFETY: read(2) into a local buffer.
            let n = unsafe {
                libc::read(status_r.as_raw_fd(), report[got..].as_mut_ptr().cast(), report.len() - got)
            };
            if n == 0 {
                break;
            }
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            got += n as usize;
        }
        if got == report.len() {
            let errno = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
            let step = u32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
            return Err(step_error(step, errno));
        }
        Ok(Child { pid: self.pid, stdout: self.stdout, stderr: self.stderr })
    }
}

/// Steps of the child between clone and exec, as reported through the status pipe.
const STEP_EXEC: u32 = 0;
const STEP_CGROUP: u32 = 1;
const STEP_SESSION: u32 = 2;
const STEP_STDIO: u32 = 3;
const STEP_GROUPS: u32 = 4;
const STEP_GID: u32 = 5;
const STEP_UID: u32 = 6;
const STEP_CWD: u32 = 7;
const STEP_FDS: u32 = 8;

/// The error of a child that failed at `step` with `errno`. A failed exec keeps the plain OS
/// error (callers word "not found" and "permission denied" themselves); the other steps say
/// what failed.
fn step_error(step: u32, errno: i32) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    let what = match step {
        STEP_EXEC => return os,
        STEP_CGROUP => "cannot join its cgroup",
        STEP_SESSION => "cannot start its session",
        STEP_STDIO => "cannot set up its stdin, stdout and stderr",
        STEP_GROUPS => "cannot set the supplementary groups of its `user`",
        STEP_GID => "cannot switch to its `group`",
        STEP_UID => "cannot switch to its `user`",
        STEP_CWD => "cannot enter its working directory",
        STEP_FDS => "cannot pass it its descriptors (3 and on)",
        _ => "failed before exec",
    };
    io::Error::new(os.kind(), format!("{what}: {}", os_text(&os)))
}

/// "Permission denied (os error 13)" → "permission denied".
fn os_text(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

fn clone3_unsupported(e: io::Error) -> bool {
    // ENOSYS: no clone3; EINVAL/E2BIG: no CLONE_INTO_CGROUP or a smaller struct.
    matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::E2BIG))
}

/// Whether this kernel has `clone3` with `CLONE_INTO_CGROUP` (for `herder doctor`): `Ok`, or
/// the error a real clone would get (`ENOSYS`: no clone3; `EINVAL`/`E2BIG`: no such flag). It
/// asks with a descriptor that cannot be open, which the kernel refuses (`EBADF`) only once it
/// knows the flag, before any process is created.
pub fn probe_clone_into_cgroup() -> Result<(), io::Error> {
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: i32::MAX as u64,
        ..Default::default()
    };
    // SAFETY: with a descriptor that is not open the call fails before any process exists.
    let r = unsafe {
        libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>())
    };
    match r {
        // Cannot happen (the descriptor is not open); if it did, this is the child.
        // SAFETY: _exit(2) in a child that must not run the parent's code.
        0 => unsafe { libc::_exit(0) },
        r if r > 0 => {
            // SAFETY: reap the child the probe unexpectedly created.
            unsafe { libc::waitpid(r as i32, std::ptr::null_mut(), 0) };
            Ok(())
        }
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
            e => Err(e),
        },
    }
}

struct ChildFds<'a> {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// Handed to the program as 3, 4, 5 … (listening sockets, Node's IPC channel).
    inherit: &'a [RawFd],
    status: RawFd,
}

/// Memory the parent set aside for the child to write into.
struct Scratch<'a> {
    /// The `LISTEN_PID=` entry of its environment, when it gets one.
    listen_pid: Option<&'a mut [u8; LISTEN_PID_LEN]>,
    /// One slot per inherited descriptor.
    parked: &'a mut [RawFd],
}

/// Write `LISTEN_PID=<pid>` and a NUL into `buf`, without allocating.
fn write_listen_pid(buf: &mut [u8; LISTEN_PID_LEN], pid: libc::pid_t) {
    const KEY: &[u8] = b"LISTEN_PID=";
    buf[..KEY.len()].copy_from_slice(KEY);
    let mut digits = [0u8; 20];
    let mut n = pid.unsigned_abs() as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[KEY.len() + i] = digits[len - 1 - i];
    }
    buf[KEY.len() + len] = 0;
}

/// The child between clone and exec: async-signal-safe calls only, no allocation.
#[allow(clippy::too_many_arguments)]
unsafe fn exec_child(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: &ChildFds<'_>,
    scratch: Scratch<'_>,
    nofile: Option<&libc::rlimit>,
    join_procs: Option<RawFd>,
    join: &[RawFd],
) -> ! {
    // SAFETY (whole body): plain system calls on descriptors, C strings and arrays prepared by
    // the parent.
    unsafe {
        let mut status = fds.status;
        let fail = |status: RawFd, step: u32| -> ! {
            let e = *libc::__errno_location();
            let mut report = [0u8; 8];
            report[..4].copy_from_slice(&e.to_ne_bytes());
            report[4..].copy_from_slice(&step.to_ne_bytes());
            libc::write(status, report.as_ptr().cast(), report.len());
            libc::_exit(127)
        };
        if let Some(procs) = join_procs {
            // Failure leaves the child in the daemon's group; stop still works through the
            // process group and the process tree.
            libc::write(procs, b"0".as_ptr().cast(), 1);
        }
        for &procs in join {
            // A limit that cannot be joined must not be silently skipped: fail the start.
            if libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                fail(status, STEP_CGROUP);
            }
        }
        if libc::setsid() < 0 {
            fail(status, STEP_SESSION);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // Rust ignores SIGPIPE; apps expect the default. (Handlers are reset by exec.)
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // The daemon raised its own open file limit; the app gets the one herder was started
        // with (a program using select(2) breaks on descriptors past 1023).
        if let Some(limit) = nofile {
            libc::setrlimit(libc::RLIMIT_NOFILE, limit);
        }
        for (src, dst) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
            if src == dst {
                let flags = libc::fcntl(src, libc::F_GETFD);
                libc::fcntl(src, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(src, dst) < 0 {
                fail(status, STEP_STDIO);
            }
        }
        // Groups first, then the group, then the user: once the uid is no longer 0 nothing
        // else may be changed. Raw system calls, not libc's wrappers: credentials are per
        // thread for the kernel, and glibc's wrappers would try to change them in the threads
        // of the daemon it still believes this process has (it did not see the clone).
        if let Some(c) = &plan.credentials {
            if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) != 0 {
                fail(status, STEP_GROUPS);
            }
            if libc::syscall(libc::SYS_setgid, c.gid) != 0 {
                fail(status, STEP_GID);
            }
            if libc::syscall(libc::SYS_setuid, c.uid) != 0 {
                fail(status, STEP_UID);
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(status, STEP_CWD);
        }
        // The inherited descriptors go to 3, 4, 5 …: first each (and the status pipe) is
        // parked past that range, so that no move overwrites one still to be moved; then
        // dup2 puts it in place without close-on-exec.
        let end = 3 + fds.inherit.len() as RawFd;
        if status < end {
            let moved = libc::fcntl(status, libc::F_DUPFD_CLOEXEC, end);
            if moved < 0 {
                fail(status, STEP_FDS);
            }
            status = moved;
        }
        for (slot, &src) in scratch.parked.iter_mut().zip(fds.inherit) {
            *slot = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, end);
            if *slot < 0 {
                fail(status, STEP_FDS);
            }
        }
        for (i, &parked) in scratch.parked.iter().enumerate() {
            if libc::dup2(parked, 3 + i as RawFd) < 0 {
                fail(status, STEP_FDS);
            }
        }
        if let Some(buf) = scratch.listen_pid {
            write_listen_pid(buf, libc::getpid());
        }
        libc::execve(plan.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(status, STEP_EXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_through_path_relative_to_cwd() {
        let cwd = Path::new("/");
        assert_eq!(
            resolve_program("sh", b"/nonexistent:/bin:/usr/bin", cwd).unwrap().file_name().unwrap(),
            "sh"
        );
        assert_eq!(resolve_program("./x", b"/bin", Path::new("/srv")).unwrap(), PathBuf::from("/srv/./x"));
        let e = resolve_program("no-such-program-here", b"/bin", cwd).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-program-here"));
    }

    #[test]
    fn a_failed_step_says_what_failed() {
        let e = step_error(STEP_CWD, libc::EACCES);
        assert_eq!(e.to_string(), "cannot enter its working directory: permission denied");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            step_error(STEP_UID, libc::EPERM).to_string(),
            "cannot switch to its `user`: operation not permitted"
        );
        // A failed exec stays the OS error, which callers word themselves.
        assert_eq!(step_error(STEP_EXEC, libc::ENOENT).raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert!(Plan::new("sh", ["a\0b"], [], Path::new("/")).is_err());
    }

    #[test]
    fn the_listen_pid_entry_holds_the_digits_of_the_pid() {
        let mut buf = [0xffu8; LISTEN_PID_LEN];
        write_listen_pid(&mut buf, 4_194_303);
        assert_eq!(
            std::ffi::CStr::from_bytes_until_nul(&buf).unwrap().to_str().unwrap(),
            "LISTEN_PID=4194303"
        );
        write_listen_pid(&mut buf, 7);
        assert_eq!(std::ffi::CStr::from_bytes_until_nul(&buf).unwrap().to_str().unwrap(), "LISTEN_PID=7");
    }

    /// Socket activation beside Node's IPC channel: three descriptors at 3, 4, 5, `LISTEN_PID`
    /// the child's own pid (a stale one in the environment replaced), and the channel at 6
    /// still carrying `process.send('ready')`.
    #[test]
    fn a_child_inherits_descriptors_at_3_4_5_with_its_own_listen_pid_beside_node_ipc() {
        use std::io::{BufRead, BufReader, Write};
        let mut fds = Vec::new();
        for word in ["three", "four", "five"] {
            let (r, w) = pipe().unwrap();
            std::fs::File::from(w).write_all(word.as_bytes()).unwrap();
            fds.push(r);
        }
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let script = "const fs = require('fs');\
            const fds = [3, 4, 5].map(fd => fs.readFileSync(fd, 'utf8'));\
            process.send({ fds, own: process.env.LISTEN_PID === String(process.pid), n: process.env.LISTEN_FDS });\
            process.send('ready');\
            process.disconnect();";
        let path = std::env::var("PATH").unwrap_or_default();
        let env = [
            ("PATH", path.as_str()),
            ("LISTEN_FDS", "3"),
            ("LISTEN_PID", "1"),
            ("NODE_CHANNEL_FD", "6"),
            ("NODE_CHANNEL_SERIALIZATION_MODE", "json"),
        ];
        let plan = Plan::new("node", ["-e", script], env, Path::new("/")).unwrap().listen_pid();
        let mut inherit: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        inherit.push(theirs.as_raw_fd());
        let child = clone_child(&plan, None, &inherit, &[])
            .unwrap()
            .wait_exec()
            .expect("node runs (.ci/run installs it)");
        drop((fds, theirs));
        ours.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let lines: Vec<String> = BufReader::new(&ours).lines().map_while(Result::ok).take(2).collect();
        let mut status = 0;
        // SAFETY: waitpid(2) on the child this test cloned.
        unsafe { libc::waitpid(child.pid, &mut status, 0) };
        let report: serde_json::Value = serde_json::from_str(lines.first().expect("a report")).unwrap();
        assert_eq!(report["fds"], serde_json::json!(["three", "four", "five"]), "{report}");
        assert_eq!(report["own"], true, "LISTEN_PID is the child's pid: {report}");
        assert_eq!(report["n"], "3");
        assert_eq!(lines.get(1).map(String::as_str), Some("\"ready\""));
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{status}");
    }
}
