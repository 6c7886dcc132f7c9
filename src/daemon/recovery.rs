//! Crash recovery: when `state.json` says instances were running, the daemon that wrote it died
//! without stopping them. End whatever is left of them (their output pipes are gone with the
//! old daemon), then register every app again and start the ones that were running, so each
//! runs exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::coordinator::Coordinator;
use super::registry::App;
use super::{state, Daemon};
use crate::process::cgroup::Cgroup;
use crate::process::terminate::Group;
use crate::process::tree;
use crate::protocol::{signal_number, InstanceInfo, Status};
use crate::supervisor::sockets::Sockets;
use crate::supervisor::{InstanceHandle, InstanceId};

/// Recover the apps of the daemon that wrote `state.json`; returns how many there were (none
/// after a clean stop, which leaves no app behind, or without a usable state file).
pub(crate) async fn recover(d: &Arc<Daemon>) -> usize {
    let path = d.ctx.paths.state();
    let old = match state::load(&path) {
        Ok(Some(s)) => s,
        Ok(None) => return 0,
        Err(e) => {
            let aside = path.with_extension("json.corrupt");
            let _ = std::fs::rename(&path, &aside);
            tracing::error!(error = %e, kept = %aside.display(), "cannot recover the apps of the previous daemon");
            return 0;
        }
    };
    if let Some(addr) = old.metrics_listen {
        if let Err(e) = super::metrics::listen(d, addr).await {
            tracing::warn!(error = %e, "the metrics endpoint of the previous daemon is not served");
        }
    }
    if let Some(addr) = old.web_listen {
        if let Err(e) = crate::web::listen(d, addr).await {
            tracing::warn!(error = %e, "the web dashboard of the previous daemon is not served");
        }
    }
    let started = Instant::now();
    // After a reboot the old instances are gone, and their pids (start times included) may be
    // those of unrelated processes now: nothing is killed by pid or marker.
    let this_boot = state::same_boot(old.boot_id.as_deref(), state::boot_id().as_deref());
    if !this_boot {
        tracing::info!(
            written_in = old.boot_id.as_deref().unwrap_or("-"),
            "state.json is of an earlier boot: its processes are not looked for"
        );
    }
    let mut ends = JoinSet::new();
    for app in old.apps.iter().filter(|_| this_boot) {
        let sig = signal_number(&app.spec.kill_signal).unwrap_or(libc::SIGTERM);
        let grace = Duration::from_millis(app.spec.kill_timeout_ms);
        for inst in &app.instances {
            let (Some(pid), Some(ticks)) = (inst.pid, inst.start_ticks) else {
                continue;
            };
            let pid = pid as i32;
            let cgroup = inst.cgroup.clone().map(Cgroup::from_path);
            let marker = d.ctx.marker(InstanceId::new(app.id, inst.index, inst.generation));
            ends.spawn(end_old_instance(pid, ticks, sig, grace, cgroup, marker));
        }
    }
    while ends.join_next().await.is_some() {}
    // Anything else an old instance left: groups of instances started after the last write,
    // or marked processes when there are no cgroups.
    if let Some(root) = d.ctx.cgroups.clone() {
        let _ = tokio::task::spawn_blocking(move || {
            for cg in root.leftovers() {
                cg.kill_and_wait(Duration::from_secs(5));
                cg.remove();
            }
        })
        .await;
    } else if this_boot {
        let prefix = format!("{}-", d.ctx.paths.token());
        let _ = tokio::task::spawn_blocking(move || {
            let marked = tree::find_marked(&prefix, true);
            for &pid in &marked {
                // SAFETY: kill(2) on a process carrying this home's instance marker.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            // SIGKILL is only queued: the new instances start once the old ones are gone.
            tree::wait_all_gone(&marked, Duration::from_secs(5));
        })
        .await;
    }

    let mut starts = JoinSet::new();
    {
        let mut reg = d.registry();
        reg.next_id = old.next_id;
        let mut pending = Vec::new();
        for app in old.apps {
            let mut spec = app.spec;
            super::registry::share_env(&mut Arc::make_mut(&mut spec).env);
            // The old daemon's sockets closed with it: bind them again (the instances queue
            // nothing meanwhile, as none runs).
            let sockets = Sockets::default();
            if let Err(e) = sockets.bind(&spec.name, &spec.sockets, spec.instances as usize) {
                tracing::error!(app = %spec.name, error = %e, "the app's sockets are not bound again");
            }
            let sockets = Arc::new(sockets);
            let up = |x: &InstanceInfo| x.status.is_running() || x.status == Status::WaitingRestart;
            // A slot recorded before it ever ran, beside slots that run, was being added by a
            // scale that the old daemon did not finish: it starts too. (An app whose slots
            // never ran, such as one resurrected stopped, stays stopped.)
            let never_ran = |x: &InstanceInfo| {
                x.status == Status::Stopped
                    && x.started_at_ms.is_none()
                    && x.last_exit.is_none()
                    && x.history.is_empty()
            };
            let app_up = app.instances.iter().any(up);
            let instances: Vec<InstanceHandle> = (0..spec.instances)
                .map(|i| {
                    let info = app.instances.iter().find(|x| x.index == i).cloned();
                    let was_up = info.as_ref().map(|x| if never_ran(x) { app_up } else { up(x) });
                    let h = match info {
                        Some(info) => InstanceHandle::spawn_with(
                            d.ctx.clone(),
                            InstanceId::new(app.id, i, 0),
                            spec.clone(),
                            info,
                            sockets.clone(),
                        ),
                        None => InstanceHandle::spawn(
                            d.ctx.clone(),
                            InstanceId::new(app.id, i, 0),
                            spec.clone(),
                            sockets.clone(),
                        ),
                    };
                    if was_up.unwrap_or(spec.autostart) {
                        let h = h.clone();
                        starts.spawn(async move { h.start().await });
                    }
                    h
                })
                .collect();
            reg.next_id = reg.next_id.max(app.id + 1);
            // Each slot keeps its recorded id (the first is the app's); a slot recorded without
            // one (a state file of an older herder) gets a new one below.
            let mut ids = Vec::with_capacity(instances.len());
            for slot in 0..instances.len() as u32 {
                let recorded = app.instances.iter().find(|x| x.index == slot).and_then(|x| x.id);
                ids.push(match (slot, recorded) {
                    (0, _) => app.id,
                    (_, Some(id)) => id,
                    _ => 0,
                });
            }
            reg.next_id = reg.next_id.max(ids.iter().max().map_or(0, |m| m + 1));
            pending.push((app.id, spec, instances, sockets, ids));
        }
        // Ids for the slots recorded without one, once every recorded id is taken.
        for (id, spec, instances, sockets, mut ids) in pending {
            for slot in ids.iter_mut().skip(1).filter(|i| **i == 0) {
                *slot = reg.next_id();
            }
            let coordinator =
                Coordinator::spawn(d, id, spec.clone(), instances.clone(), sockets.clone(), ids.clone());
            reg.insert(App::new(id, spec, instances, sockets, ids), coordinator);
        }
    }
    let restarted = starts.len();
    while starts.join_next().await.is_some() {}
    // The sockets were bound for every slot: slots left stopped get no connection.
    for app in d.registry().apps.values() {
        super::coordinator::steer_running(&app.sockets, &app.spec().name, &app.instances, &[]);
    }
    d.ctx.changed.notify_one();
    d.apps_added.notify_one();
    let apps = d.registry().apps.len();
    tracing::info!(
        apps,
        restarted,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered the apps of the previous daemon"
    );
    apps
}

/// Stop what is left of one instance of the dead daemon: its stop signal to the process
/// group, the grace period, then SIGKILL to everything of it.
async fn end_old_instance(
    pid: i32,
    ticks: u64,
    sig: i32,
    grace: Duration,
    cgroup: Option<Cgroup>,
    marker: String,
) {
    if tree::is_same_process(pid, ticks) {
        // Its exit is seen by the group's wait: it is not the daemon's child to reap.
        Group::orphaned(pid, cgroup, &marker).terminate(Some(sig), grace, std::future::pending()).await;
    } else if let Some(cg) = cgroup {
        if cg.path.exists() {
            let _ = tokio::task::spawn_blocking(move || cg.kill_and_wait(Duration::from_secs(5))).await;
        }
    }
}
