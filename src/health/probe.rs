//! Health probes: `http` (GET, 2xx/3xx is healthy), `tcp` (connect), `exec` (exit 0). A probe
//! task runs beside each running instance and reports every result to the instance's actor,
//! which keeps the counts and acts (restart on liveness failures, `online` on readiness).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::process::fork::{self, Credentials, Plan};
use crate::process::reaper::Reaper;
use crate::protocol::spec::{ProbeCheck, ProbeSpec};

/// One result of probe `index`.
#[derive(Debug)]
pub struct ProbeResult {
    pub index: usize,
    /// `Err` says why the probe failed.
    pub outcome: Result<(), String>,
}

/// What a probe targets, for `show`.
pub fn describe(check: &ProbeCheck) -> String {
    match check {
        ProbeCheck::Http(url) => format!("http {url}"),
        ProbeCheck::Tcp(addr) => format!("tcp {addr}"),
        ProbeCheck::Exec(cmd) => format!("exec {}", cmd.join(" ")),
    }
}

/// Where a probe's target names `$PORT`: the port of the instance it checks.
pub const PORT_VAR: &str = "$PORT";

/// `probe` as it checks the instance on `port`: `$PORT` in an `http` or `tcp` target becomes
/// that port. Without one it stays, and each check fails saying why.
pub fn for_instance(probe: &ProbeSpec, port: Option<u16>) -> ProbeSpec {
    let mut probe = probe.clone();
    if let Some(port) = port {
        match &mut probe.check {
            ProbeCheck::Http(target) | ProbeCheck::Tcp(target) => {
                *target = target.replace(PORT_VAR, &port.to_string());
            }
            ProbeCheck::Exec(_) => {}
        }
    }
    probe
}

/// Run every probe of an instance on its schedule until the receiver is dropped. `exec`
/// probes run as `run_as` (the app's `user`) when given.
pub fn start(
    probes: Vec<ProbeSpec>,
    reaper: Reaper,
    cwd: std::path::PathBuf,
    env: BTreeMap<String, String>,
    run_as: Option<Credentials>,
) -> (mpsc::Receiver<ProbeResult>, Vec<tokio::task::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel(16);
    let tasks = probes
        .into_iter()
        .enumerate()
        .map(|(index, p)| {
            let (tx, reaper, cwd, env) = (tx.clone(), reaper.clone(), cwd.clone(), env.clone());
            let run_as = run_as.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(p.initial_delay_ms)).await;
                let mut tick = tokio::time::interval(Duration::from_millis(p.interval_ms));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let timeout = Duration::from_millis(p.timeout_ms);
                    let outcome = match tokio::time::timeout(
                        timeout,
                        check(&p.check, &reaper, &cwd, &env, run_as.as_ref()),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(format!("no answer within {} ms", p.timeout_ms)),
                    };
                    if tx.send(ProbeResult { index, outcome }).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    (rx, tasks)
}

async fn check(
    check: &ProbeCheck,
    reaper: &Reaper,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    run_as: Option<&Credentials>,
) -> Result<(), String> {
    match check {
        ProbeCheck::Http(target) | ProbeCheck::Tcp(target) if target.contains(PORT_VAR) => Err(format!(
            "`{target}` names `{PORT_VAR}`, and this instance has no port of its own (the app has no `port` or balancer)"
        )),
        ProbeCheck::Tcp(addr) => {
            TcpStream::connect(addr).await.map(drop).map_err(|e| format!("connect {addr}: {e}"))
        }
        ProbeCheck::Http(url) => http_get(url).await,
        ProbeCheck::Exec(cmd) => exec(cmd, reaper, cwd, env, run_as).await,
    }
}

async fn http_get(url: &str) -> Result<(), String> {
    let code = super::http::request(url, hyper::Method::GET, None).await?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {url} answered {code}"))
    }
}

/// Run `cmd` (as `run_as`, when given) and wait for it; exit 0 is success.
pub(crate) async fn exec(
    cmd: &[String],
    reaper: &Reaper,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    run_as: Option<&Credentials>,
) -> Result<(), String> {
    let plan = Plan::new(
        &cmd[0],
        cmd[1..].iter().map(String::as_str),
        env.iter()
            .filter(|(k, _)| !crate::process::fork::SERVICE_MANAGER_VARS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str())),
        cwd,
    )
    .map_err(|e| format!("cannot run `{}`: {e}", cmd[0]))?
    .run_as(run_as.cloned());
    // Through the reaper: the daemon reaps every child, so it must know this one.
    let (pending, exit) = reaper
        .spawn_with(|| fork::clone_child(&plan, None, &[], &[]), |p| p.pid)
        .map_err(|e| format!("cannot run `{}`: {e}", cmd[0]))?;
    let pid = pending.pid;
    let child = pending.wait_exec().map_err(|e| format!("cannot run `{}`: {e}", cmd[0]))?;
    // Its output is not kept; drain it so that it cannot block on a full pipe.
    for fd in [child.stdout, child.stderr] {
        if let Ok(rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut rx = rx;
                while matches!(rx.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    }
    // Killed if the probe times out (this future is dropped then).
    let guard = KillOnDrop(pid);
    let result = exit.await;
    std::mem::forget(guard);
    match result {
        Ok(crate::protocol::ExitReason::Code(0)) => Ok(()),
        Ok(other) => Err(format!("`{}` exited with {other}", cmd.join(" "))),
        Err(_) => Err(format!("`{}` vanished", cmd.join(" "))),
    }
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the probe's own child, not yet reaped (its exit was not seen).
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}
