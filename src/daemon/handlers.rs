//! One handler per request. Handlers take the registry lock only to read or change the map,
//! never across an await; the instance actors do the waiting.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::coordinator::{Coordinator, Scale, Slots};
use super::dump::{self, Dump, DumpedApp};
use super::registry::App;
use super::Daemon;
use crate::protocol::{
    signal_number, AppInfo, AppSpec, DaemonInfo, ErrorKind, ErrorReply, ExitReason, Instances, OnExisting,
    Request, Response, ResurrectReport, Status, Step, StepAction, Target,
};
use crate::supervisor::sockets::{Listener, Sockets};
use crate::supervisor::{InstanceHandle, InstanceId};

pub(crate) async fn handle(d: &Arc<Daemon>, req: Request) -> Response {
    // What a command changed is on disk before the user hears it is done, so a daemon that
    // dies right after cannot undo it (a stopped app restarted by recovery, say).
    let durable = matches!(
        req,
        Request::Start { .. }
            | Request::StartExisting { .. }
            | Request::Stop { .. }
            | Request::Restart { .. }
            | Request::Reset { .. }
            | Request::Reload { .. }
            | Request::Scale { .. }
            | Request::Apply { .. }
            | Request::Resurrect
    );
    let result = match req {
        Request::Ping => Ok(Response::Pong(ping(d))),
        // Served by the connection itself, as a stream.
        Request::Events => Err(bad("`Events` is a stream: send it on a connection of its own")),
        Request::Start { specs, existing } => start(d, specs, existing).await,
        Request::StartExisting { targets } => start_existing(d, &targets).await,
        Request::Stop { targets } => {
            on_apps(d, &targets, |c, slots| async move { c.stop(slots).await }).await
        }
        Request::Restart { targets, env, specs } => restart(d, &targets, env, specs).await,
        Request::Delete { targets } => delete(d, &targets).await,
        Request::Signal { signal, targets } => send_signal(d, &signal, &targets).await,
        Request::Reset { targets } => {
            on_apps(d, &targets, |c, slots| async move { c.reset(slots).await }).await
        }
        Request::Reload { targets, env, specs } => reload(d, &targets, env, specs).await,
        Request::Scale { target, count } => scale(d, &target, &count).await,
        Request::Apply { specs, source, prune, dry_run } => apply(d, specs, &source, prune, dry_run).await,
        // The table has no use for every app's whole environment; `show` has it.
        Request::List => {
            Ok(Response::List { apps: list(d, None, false), warnings: super::home::warnings(d) })
        }
        Request::ListBrief => {
            let ids: Vec<u32> = d.registry().apps.keys().copied().collect();
            Ok(Response::List { apps: brief(d, &ids), warnings: super::home::warnings(d) })
        }
        Request::ListFull => Ok(Response::List { apps: list(d, None, true), warnings: Vec::new() }),
        Request::Show { target } => show(d, &target),
        Request::Select { targets } => {
            let ids = d.registry().resolve(&targets);
            ids.map(|ids| Response::List { apps: list(d, Some(&ids), false), warnings: Vec::new() })
        }
        Request::Metrics { listen, off } => metrics(d, listen.as_deref(), off).await,
        Request::Web { listen, off } => web(d, listen.as_deref(), off).await,
        Request::Kill => {
            let apps = stop_everything(d).await;
            Ok(Response::Done { apps, instances: Vec::new() })
        }
        Request::Flush { targets } => super::logs::flush(d, targets).await,
        Request::ReloadLogs => super::logs::reload(d).await,
        Request::ReloadCerts { targets } => reload_certs(d, &targets),
        // Served by the connection, which hands itself over to a follower.
        Request::Logs { .. } => Err(bad("`Logs` is answered by the connection")),
        Request::Save { force } => save(d, force).await,
        Request::Resurrect => resurrect(d).await.map(Response::Resurrected),
        // Served by the connection, whose descriptor goes to the new image.
        Request::Update => Err(bad("`Update` is answered by the connection")),
    };
    // A request that failed half-way (a reload stopped at a replacement that was not ready)
    // may have changed apps too.
    if durable && (result.is_ok() || matches!(result, Err(ErrorReply { kind: ErrorKind::Internal, .. }))) {
        d.persist().await;
    }
    result.unwrap_or_else(Response::Error)
}

fn bad(message: impl Into<String>) -> ErrorReply {
    ErrorReply { kind: ErrorKind::BadRequest, message: message.into() }
}

fn ping(d: &Daemon) -> DaemonInfo {
    // Before the literal: the registry's guard below lives to the end of the statement.
    let home_warnings = super::home::warnings(d);
    DaemonInfo {
        pid: std::process::id(),
        version: crate::protocol::PROGRAM_VERSION.to_string(),
        home: d.ctx.paths.home.clone(),
        uptime_ms: d.started.elapsed().as_millis() as u64,
        apps: d.registry().apps.len(),
        cgroup_root: d.ctx.cgroups.as_ref().map(|c| c.path.clone()),
        cgroup_note: d.cgroup_note.clone(),
        home_warnings,
        subreaper: d.subreaper,
        followers: d.followers.load(std::sync::atomic::Ordering::Relaxed),
        event_followers: d.event_followers.load(std::sync::atomic::Ordering::Relaxed),
        build_id: d.image.build_id.clone(),
        exec_generation: d.image.generation,
        image_started_ms: d.image_started_ms,
        exe: d.image.exe.clone(),
        limits: d.ctx.limits.describe(),
        limits_note: d.ctx.limits.note.clone(),
        sample_interval_ms: super::sample_interval().as_millis() as u64,
    }
}

/// Snapshots of `ids` (every app when `None`), with their environments when `env` is set.
/// The apps `ids` as the table shows them (the answer to commands that change apps, which the
/// CLI prints as a table).
fn brief(d: &Daemon, ids: &[u32]) -> Vec<AppInfo> {
    let reg = d.registry();
    ids.iter().filter_map(|id| reg.apps.get(id)).map(|a| a.brief_info()).collect()
}

fn list(d: &Daemon, ids: Option<&[u32]>, env: bool) -> Vec<AppInfo> {
    let reg = d.registry();
    let paths = &d.ctx.paths;
    // With its balancer's state, for `monit`.
    let info = |a: &App| {
        let mut info = a.info(paths, env);
        info.balancer = a.front.get().map(|b| b.view());
        info
    };
    match ids {
        None => reg.apps.values().map(info).collect(),
        Some(ids) => ids.iter().filter_map(|id| reg.apps.get(id)).map(info).collect(),
    }
}

/// What a request's targets name: the apps' ids in order, the instances named by their ids
/// (for the answer), and what there is to do, app by app.
struct Targeted<T> {
    ids: Vec<u32>,
    instances: Vec<Instances>,
    todo: Vec<T>,
}

/// The apps `targets` name, each with its coordinator and the slots named (`None`: the whole
/// app).
fn targeted(d: &Daemon, targets: &[Target]) -> Result<Targeted<(u32, Coordinator, Slots)>, ErrorReply> {
    let reg = d.registry();
    let picked = reg.resolve_slots(targets)?;
    let ids = picked.iter().map(|(id, _)| *id).collect();
    let instances = instances_named(&reg, &picked);
    let todo = picked
        .into_iter()
        .filter_map(|(id, slots)| Some((id, reg.coordinators.get(&id)?.clone(), slots)))
        .collect();
    Ok(Targeted { ids, instances, todo })
}

/// The instances picked by their ids, app by app, for the answer to say what was done.
fn instances_named(reg: &super::registry::Registry, picked: &super::registry::Picked) -> Vec<Instances> {
    let slots = picked.iter().filter_map(|(id, slots)| Some((reg.apps.get(id)?, slots.as_ref()?)));
    slots
        .map(|(app, slots)| {
            let mut indexes: Vec<u32> = slots.iter().map(|s| *s as u32).collect();
            indexes.sort_unstable();
            Instances { app: app.spec().name.clone(), indexes }
        })
        .collect()
}

/// Run `f` on the coordinator of every app `targets` name (with the slots they name), all at
/// once; answers with the apps as the table shows them.
async fn on_apps<F, Fut>(d: &Arc<Daemon>, targets: &[Target], f: F) -> Result<Response, ErrorReply>
where
    F: Fn(Coordinator, Slots) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Targeted { ids, instances, todo } = targeted(d, targets)?;
    let mut set = JoinSet::new();
    for (_, c, slots) in todo {
        set.spawn(f(c, slots));
    }
    while set.join_next().await.is_some() {}
    Ok(Response::Done { apps: brief(d, &ids), instances })
}

fn check_specs(specs: &[AppSpec]) -> Result<(), ErrorReply> {
    if specs.is_empty() {
        return Err(bad("no app to start"));
    }
    let mut seen = std::collections::HashSet::new();
    for s in specs {
        if s.name.trim().is_empty() {
            return Err(bad("an app has an empty name"));
        }
        if s.name == "all" {
            return Err(bad("`all` cannot be an app name: it targets every app"));
        }
        if !seen.insert(s.name.as_str()) {
            return Err(bad(format!("the app name `{}` is given twice", s.name)));
        }
        if s.instances == 0 {
            return Err(bad(format!("app `{}`: `instances` must be at least 1", s.name)));
        }
        if let Err(e) = crate::users::switch_for(s.user.as_deref(), s.group.as_deref()) {
            return Err(bad(format!("app `{}`: {e}; nothing was started", s.name)));
        }
    }
    Ok(())
}

/// Add new apps and start them; what happens to apps that exist by name is `existing`'s
/// choice (see [`OnExisting`]).
pub(crate) async fn start(
    d: &Arc<Daemon>,
    specs: Vec<AppSpec>,
    existing: OnExisting,
) -> Result<Response, ErrorReply> {
    check_specs(&specs)?;
    let specs = specs.into_iter().map(|s| (s.autostart, s)).collect();
    let done = start_apps(d, specs, existing).await?;
    let ids = |restarted: bool| -> Vec<u32> {
        done.iter().filter(|(_, r)| *r == restarted).map(|(id, _)| *id).collect()
    };
    Ok(Response::Started { started: brief(d, &ids(false)), restarted: brief(d, &ids(true)) })
}

/// Why `spec` may not take the place of `app` under [`OnExisting::Refuse`], if it may not.
fn refusal(app: &App, spec: &AppSpec) -> Option<String> {
    let old = app.spec();
    let same_command = old.program == spec.program && old.args == spec.args && old.cwd == spec.cwd;
    let running = app.instances.iter().any(|h| h.info().status.is_running());
    let name = &spec.name;
    if !same_command {
        return Some(format!(
            "an app named `{name}` already exists (id {}), running `{}`; nothing was started\n\
             hint: give this one another name with `--name`, or replace `{name}` with `-f`",
            app.id, old.script
        ));
    }
    running.then(|| {
        format!(
            "`{name}` (id {}) already runs `{}`: script already launched; nothing was started\n\
             hint: `herder restart {name}` restarts it; `-f` starts it again with these flags",
            app.id, old.script
        )
    })
}

/// Add each app, started when its flag is set (else registered `stopped`); an app that exists
/// by name is handled as `existing` says, every refusal checked before anything changes.
/// Returns each app's id and whether it ran and was restarted, in the order of `specs`.
async fn start_apps(
    d: &Arc<Daemon>,
    specs: Vec<(bool, AppSpec)>,
    existing: OnExisting,
) -> Result<Vec<(u32, bool)>, ErrorReply> {
    let mut set = JoinSet::new();
    {
        let mut reg = d.registry();
        if existing == OnExisting::Refuse {
            for (_, spec) in &specs {
                if let Some(why) = reg.by_name(&spec.name).and_then(|app| refusal(app, spec)) {
                    return Err(bad(why));
                }
            }
        }
        // Every app's listening sockets first: a port that is taken changes nothing.
        let mut bound = Vec::with_capacity(specs.len());
        let mut fronts = Vec::with_capacity(specs.len());
        for (_, spec) in &specs {
            let now = reg.by_name(&spec.name).map(|a| a.sockets.clone()).unwrap_or_default();
            bound.push(now.prepare(&spec.name, &spec.sockets, spec.instances as usize).map_err(bad)?);
            let front = reg.by_name(&spec.name).map(|a| a.front.clone()).unwrap_or_default();
            front.stage(&spec.name, spec.balancer.as_ref()).map_err(bad)?;
            fronts.push(front);
        }
        for (order, (((run, mut spec), sockets), front)) in
            specs.into_iter().zip(bound).zip(fronts).enumerate()
        {
            super::registry::share_env(&mut spec.env);
            let spec = Arc::new(spec);
            let known = reg.by_name(&spec.name).map(|a| a.id);
            match known.and_then(|id| Some((id, reg.coordinators.get(&id)?.clone()))) {
                Some((id, c)) => {
                    set.spawn(async move { (order, id, c.apply(spec, sockets).await) });
                }
                None => {
                    let id = reg.next_id();
                    let ids: Vec<u32> =
                        std::iter::once(id).chain((1..spec.instances).map(|_| reg.next_id())).collect();
                    let sockets = Sockets::new(sockets);
                    sockets.steer(&spec.name, spec.instances as usize);
                    let instances: Vec<InstanceHandle> = (0..spec.instances)
                        .map(|i| {
                            let id = InstanceId::new(id, i, 0);
                            InstanceHandle::spawn(d.ctx.clone(), id, spec.clone(), sockets.clone())
                        })
                        .collect();
                    let c = Coordinator::spawn(
                        d,
                        id,
                        spec.clone(),
                        instances.clone(),
                        sockets.clone(),
                        ids.clone(),
                    );
                    let mut app = App::new(id, spec, instances, sockets, ids);
                    app.front = front;
                    reg.insert(app, c.clone());
                    set.spawn(async move {
                        if run {
                            c.start(None).await;
                        }
                        (order, id, false)
                    });
                }
            }
        }
    }
    d.ctx.changed.notify_one();
    d.apps_added.notify_one();
    let mut done = Vec::new();
    while let Some(Ok(one)) = set.join_next().await {
        done.push(one);
    }
    done.sort_unstable_by_key(|(order, ..)| *order);
    Ok(done.into_iter().map(|(_, id, ran)| (id, ran)).collect())
}

/// `herder save`: every app, whole (environment included), into `dump.json`.
async fn save(d: &Arc<Daemon>, force: bool) -> Result<Response, ErrorReply> {
    let apps: Vec<DumpedApp> = d
        .registry()
        .apps
        .values()
        .map(|a| DumpedApp {
            spec: (**a.spec()).clone(),
            running: a.instances.iter().any(|h| h.info().status != Status::Stopped),
        })
        .collect();
    let path = d.ctx.paths.dump();
    if apps.is_empty() && !force {
        let saved = match dump::read(&path) {
            Ok(old) => format!(" (it holds {} app(s))", old.apps.len()),
            Err(_) => String::new(),
        };
        return Err(bad(format!(
            "no app to save: this would replace {}{saved} with an empty list\nhint: `herder save --force` saves the empty list",
            path.display()
        )));
    }
    let names = apps.iter().map(|a| a.spec.name.clone()).collect();
    let dump = Dump::new(apps);
    let target = path.clone();
    let saved = tokio::task::spawn_blocking(move || dump::save(&target, &dump))
        .await
        .map_err(|e| internal(format!("the save failed: {e}")))?
        .map_err(|e| internal(format!("cannot write {}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "saved the apps");
    Ok(Response::Saved { path, apps: names, backup: saved.backup })
}

/// `herder resurrect` and `herder daemon --resurrect`: start the saved apps that do not run.
/// An app of the same name that runs is left alone; one that is stopped or errored gets the
/// saved spec and is started if it ran when saved. Apps saved `stopped` come back stopped.
pub(crate) async fn resurrect(d: &Arc<Daemon>) -> Result<ResurrectReport, ErrorReply> {
    let path = d.ctx.paths.dump();
    if !path.exists() && !dump::backup_of(&path).exists() {
        return Err(ErrorReply {
            kind: ErrorKind::NotFound,
            message: format!(
                "no saved apps: {} does not exist\nhint: `herder save` records the apps that run now",
                path.display()
            ),
        });
    }
    let loaded = tokio::task::spawn_blocking(move || dump::load(&path))
        .await
        .map_err(|e| internal(format!("cannot read the dump: {e}")))?
        .map_err(|e| ErrorReply { kind: ErrorKind::NotFound, message: format!("cannot resurrect: {e}") })?;
    if let Some(why) = &loaded.fallback {
        tracing::warn!(error = %why, source = %loaded.source.display(), "resurrecting from the previous save");
    }
    let mut todo = Vec::new();
    let mut skipped = Vec::new();
    {
        let reg = d.registry();
        for app in loaded.dump.apps {
            let idle = |a: &App| {
                a.instances.iter().all(|h| matches!(h.info().status, Status::Stopped | Status::Errored))
            };
            match reg.by_name(&app.spec.name) {
                Some(existing) if !idle(existing) || !app.running => skipped.push(app.spec.name),
                _ => todo.push((app.running, app.spec)),
            }
        }
    }
    let specs: Vec<AppSpec> = todo.iter().map(|(_, s)| s.clone()).collect();
    if !specs.is_empty() {
        check_specs(&specs)?;
    }
    let ids: Vec<u32> =
        start_apps(d, todo, OnExisting::Restart).await?.into_iter().map(|(id, _)| id).collect();
    tracing::info!(source = %loaded.source.display(), apps = ids.len(), skipped = skipped.len(), "resurrected");
    Ok(ResurrectReport {
        source: loaded.source,
        fallback: loaded.fallback.map(|e| e.to_string()),
        apps: list(d, Some(&ids), false),
        skipped,
    })
}

fn internal(message: String) -> ErrorReply {
    ErrorReply { kind: ErrorKind::Internal, message }
}

/// `herder start <name|id|namespace>`: start what is stopped, restart what runs.
async fn start_existing(d: &Arc<Daemon>, targets: &[Target]) -> Result<Response, ErrorReply> {
    let Targeted { ids, todo, .. } = targeted(d, targets)?;
    let mut set = JoinSet::new();
    for (id, c, slots) in todo {
        set.spawn(async move { (id, c.start(slots).await) });
    }
    let mut restarted = Vec::new();
    while let Some(Ok((id, ran))) = set.join_next().await {
        if ran {
            restarted.push(id);
        }
    }
    let started: Vec<u32> = ids.iter().copied().filter(|id| !restarted.contains(id)).collect();
    restarted.sort_unstable();
    Ok(Response::Started { started: brief(d, &started), restarted: brief(d, &restarted) })
}

/// What a restart or reload does to one app.
struct Renewal {
    c: Coordinator,
    /// The slots named by instance id; `None`: the whole app.
    slots: Slots,
    /// Its new spec (from its config file, or with a new environment), with its sockets
    /// bound; none: unchanged. Only for a whole app: an instance alone keeps the app's spec.
    spec: Option<(Arc<AppSpec>, Vec<Listener>)>,
    /// It has listening sockets (cluster mode): a reload replaces its instances one by one.
    rolling: bool,
}

/// The new spec of each app `targets` name, for a restart or reload: its config file's (in
/// `specs`), or its own with `env` as its whole environment (`--update-env`, the apps sharing
/// it), or none; the sockets of a new spec bound before anything changes.
fn renewals(
    d: &Daemon,
    targets: &[Target],
    env: Option<BTreeMap<String, String>>,
    specs: &[AppSpec],
) -> Result<Targeted<Renewal>, ErrorReply> {
    let shared_env = env.map(Arc::new);
    let reg = d.registry();
    let picked = reg.resolve_slots(targets)?;
    let ids = picked.iter().map(|(id, _)| *id).collect();
    let instances = instances_named(&reg, &picked);
    let mut out = Vec::new();
    for (id, slots) in picked {
        let (Some(app), Some(c)) = (reg.apps.get(&id), reg.coordinators.get(&id)) else { continue };
        let spec = match (specs.iter().find(|s| s.name == app.spec().name), &shared_env, &slots) {
            (_, _, Some(_)) => None,
            (Some(spec), _, None) => {
                let mut spec = spec.clone();
                super::registry::share_env(&mut spec.env);
                Some(Arc::new(spec))
            }
            (None, Some(env), None) => {
                let mut spec = (**app.spec()).clone();
                spec.env = env.clone();
                Some(Arc::new(spec))
            }
            (None, None, None) => None,
        };
        let now = spec.as_ref().unwrap_or(app.spec());
        let rolling = now.is_cluster() || now.balancer.is_some();
        let spec = match spec {
            Some(spec) => {
                let slots = app.instances.len().max(spec.instances as usize);
                let sockets = app.sockets.prepare(&spec.name, &spec.sockets, slots).map_err(bad)?;
                app.front.stage(&spec.name, spec.balancer.as_ref()).map_err(bad)?;
                Some((spec, sockets))
            }
            None => None,
        };
        out.push(Renewal { c: c.clone(), slots, spec, rolling });
    }
    Ok(Targeted { ids, instances, todo: out })
}

async fn restart(
    d: &Arc<Daemon>,
    targets: &[Target],
    env: Option<BTreeMap<String, String>>,
    specs: Vec<AppSpec>,
) -> Result<Response, ErrorReply> {
    let Targeted { ids, instances, todo } = renewals(d, targets, env, &specs)?;
    let mut set = JoinSet::new();
    for r in todo {
        set.spawn(restart_all(r));
    }
    while set.join_next().await.is_some() {}
    Ok(Response::Done { apps: brief(d, &ids), instances })
}

/// Restart every instance of a renewal's app at once: with its new spec (which may bring a new
/// count too), or as it is.
async fn restart_all(r: Renewal) {
    match r.spec {
        Some((spec, sockets)) => {
            r.c.apply(spec, sockets).await;
        }
        None => r.c.restart(None, r.slots).await,
    }
}

/// Reload apps: those in cluster mode instance by instance, each replaced by a new process that
/// is ready before the old one stops; the others restarted.
async fn reload(
    d: &Arc<Daemon>,
    targets: &[Target],
    env: Option<BTreeMap<String, String>>,
    specs: Vec<AppSpec>,
) -> Result<Response, ErrorReply> {
    let Targeted { ids, instances, todo } = renewals(d, targets, env, &specs)?;
    let mut set = JoinSet::new();
    for r in todo {
        set.spawn(async move {
            if r.rolling {
                return r.c.replace(r.spec, r.slots).await;
            }
            restart_all(r).await;
            Ok(())
        });
    }
    let mut failures = Vec::new();
    while let Some(Ok(result)) = set.join_next().await {
        if let Err(e) = result {
            failures.push(e);
        }
    }
    if !failures.is_empty() {
        return Err(ErrorReply { kind: ErrorKind::Internal, message: failures.join("\n") });
    }
    Ok(Response::Done { apps: brief(d, &ids), instances })
}

/// `herder scale <app> <n|+n|-n>`.
async fn scale(d: &Arc<Daemon>, target: &Target, count: &str) -> Result<Response, ErrorReply> {
    let how = match count.trim() {
        c if c.starts_with('+') || c.starts_with('-') => c.parse::<i64>().ok().map(Scale::By),
        c => c.parse::<u32>().ok().filter(|n| *n > 0).map(Scale::To),
    }
    .ok_or_else(|| {
        bad(format!("`{count}` is not a count\nhint: a number of instances (`4`), or a change (`+2`, `-1`)"))
    })?;
    let (id, c) = {
        let reg = d.registry();
        let ids = reg.resolve(std::slice::from_ref(target))?;
        let [id] = ids[..] else {
            return Err(bad(format!("the target matches {} apps; scale one app at a time", ids.len())));
        };
        (id, reg.coordinators.get(&id).cloned().ok_or_else(|| bad("the app is gone"))?)
    };
    let (before, after) = c.scale(how).await.ok_or_else(|| bad("the app is gone"))?;
    Ok(Response::Scaled { apps: brief(d, &[id]), before, after })
}

/// Variables of the shell that differ from one command to the next without meaning anything
/// to an app: `apply` does not count them as a change.
const SHELL_NOISE: &[&str] = &["_", "OLDPWD", "SHLVL"];

/// The fields of `new` that differ from `old`, the instance count aside.
fn changes(old: &AppSpec, new: &AppSpec) -> Vec<String> {
    let plain = |s: &AppSpec| {
        let mut s = s.clone();
        s.instances = 0;
        s.env = Arc::new(
            s.env
                .iter()
                .filter(|(k, _)| !SHELL_NOISE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        serde_json::to_value(s).unwrap_or_default()
    };
    let (a, b) = (plain(old), plain(new));
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return vec!["spec".into()] };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// The balancer settings that changed, when nothing else did and none of them is seen by the
/// instances: the running balancer can take them with the instances left as they are. `None`
/// when the instances must be replaced: any other field changed, or the balancer came or went,
/// or its mode (Node instances get the hop's preload in http mode), `unix_hop` or the
/// instances' ports (`backend_port`) changed.
fn retuned(old: &AppSpec, new: &AppSpec, changed: &[String]) -> Option<Vec<String>> {
    if changed != ["balancer"] {
        return None;
    }
    let (Some(a), Some(b)) = (&old.balancer, &new.balancer) else { return None };
    if a.mode != b.mode || a.unix_hop != b.unix_hop || a.backend_port != b.backend_port {
        return None;
    }
    let (a, b) = (serde_json::to_value(a).ok()?, serde_json::to_value(b).ok()?);
    let (a, b) = (a.as_object()?, b.as_object()?);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    // As the config names them (`fail_timeout`, not the spec's `fail_timeout_ms`).
    let named = keys.into_iter().filter(|k| a.get(*k) != b.get(*k));
    Some(named.map(|k| k.strip_suffix("_ms").unwrap_or(k).to_string()).collect())
}

/// Balancers with a socket staged by an apply: closed when the apply ends, unless a balancer
/// took it (served once its spec is applied).
struct Staged(Vec<Arc<crate::balancer::Front>>);

impl Drop for Staged {
    fn drop(&mut self) {
        for front in &self.0 {
            front.unstage();
        }
    }
}

/// Bind the socket of a balancer's new spec (checked only, on a dry run): `Err` in the user's
/// words, and then nothing changed.
fn stage(
    front: &Arc<crate::balancer::Front>,
    app: &str,
    spec: Option<&crate::protocol::spec::BalancerSpec>,
    dry_run: bool,
    staged: &mut Staged,
) -> Result<(), ErrorReply> {
    if dry_run {
        return front.check(app, spec).map_err(bad);
    }
    front.stage(app, spec).map_err(bad)?;
    staged.0.push(front.clone());
    Ok(())
}

/// `herder apply <config>`: converge on the file's apps.
async fn apply(
    d: &Arc<Daemon>,
    specs: Vec<AppSpec>,
    source: &std::path::Path,
    prune: bool,
    dry_run: bool,
) -> Result<Response, ErrorReply> {
    check_specs(&specs)?;
    // Released if this apply ends before they are served (an error on the way).
    let mut staged = Staged(Vec::new());
    let mut plan = Vec::new();
    let mut new = Vec::new();
    let mut renew = Vec::new();
    let mut retune = Vec::new();
    let mut rescale = Vec::new();
    let mut gone = Vec::new();
    {
        let reg = d.registry();
        for spec in &specs {
            let step = |action, detail| Step { app: spec.name.clone(), action, detail };
            let Some(app) = reg.by_name(&spec.name) else {
                plan.push(step(StepAction::Start, None));
                new.push(spec.clone());
                continue;
            };
            let Some(c) = reg.coordinators.get(&app.id) else { continue };
            let changed = changes(app.spec(), spec);
            let count = app.instances.len() as u32;
            if let Some(tuned) = retuned(app.spec(), spec, &changed) {
                let detail = format!("{}; the instances untouched", tuned.join(", "));
                plan.push(step(StepAction::Retune, Some(detail)));
                // The running spec with the new balancer: nothing else of the file's is taken.
                let mut running = (**app.spec()).clone();
                running.balancer = spec.balancer.clone();
                stage(&app.front, &spec.name, running.balancer.as_ref(), dry_run, &mut staged)?;
                retune.push((c.clone(), Arc::new(running)));
            } else if !changed.is_empty() {
                plan.push(step(StepAction::Reload, Some(format!("changed: {}", changed.join(", ")))));
                let mut spec = spec.clone();
                spec.instances = count;
                super::registry::share_env(&mut spec.env);
                let sockets = app.sockets.prepare(&spec.name, &spec.sockets, count as usize).map_err(bad)?;
                stage(&app.front, &spec.name, spec.balancer.as_ref(), dry_run, &mut staged)?;
                renew.push((c.clone(), Arc::new(spec), sockets));
            }
            if spec.instances != count {
                plan.push(step(StepAction::Scale, Some(format!("{count} → {} instances", spec.instances))));
                rescale.push((c.clone(), spec.instances));
            }
            if changed.is_empty() && spec.instances == count {
                plan.push(step(StepAction::Unchanged, None));
            }
        }
        if prune {
            for app in reg.apps.values() {
                let from_file = app.spec().source.as_deref() == Some(source);
                if from_file && !specs.iter().any(|s| s.name == app.spec().name) {
                    plan.push(Step {
                        app: app.spec().name.clone(),
                        action: StepAction::Delete,
                        detail: None,
                    });
                    gone.push(Target::Name(app.spec().name.clone()));
                }
            }
        }
    }
    let names: Vec<Target> = specs.iter().map(|s| Target::Name(s.name.clone())).collect();
    if dry_run {
        let ids = d.registry().resolve(&names).unwrap_or_default();
        return Ok(Response::Applied { plan, apps: brief(d, &ids) });
    }
    if !new.is_empty() {
        start_apps(d, new.into_iter().map(|s| (s.autostart, s)).collect(), OnExisting::Refuse).await?;
    }
    let mut failures = Vec::new();
    let mut set = JoinSet::new();
    for (c, spec, sockets) in renew {
        set.spawn(async move {
            if !spec.is_cluster() && spec.balancer.is_none() {
                c.apply(spec, sockets).await;
                Ok(())
            } else {
                c.replace(Some((spec, sockets)), None).await
            }
        });
    }
    while let Some(Ok(result)) = set.join_next().await {
        if let Err(e) = result {
            failures.push(e);
        }
    }
    for (c, spec) in retune {
        c.retune(spec).await;
    }
    for (c, n) in rescale {
        c.scale(Scale::To(n)).await;
    }
    if !gone.is_empty() {
        delete(d, &gone).await?;
    }
    if !failures.is_empty() {
        return Err(ErrorReply { kind: ErrorKind::Internal, message: failures.join("\n") });
    }
    let ids = d.registry().resolve(&names).unwrap_or_default();
    Ok(Response::Applied { plan, apps: brief(d, &ids) })
}

async fn delete(d: &Arc<Daemon>, targets: &[Target]) -> Result<Response, ErrorReply> {
    let removed: Vec<(App, Coordinator)> = {
        let mut reg = d.registry();
        for (id, slots) in reg.resolve_slots(targets)? {
            if let (Some(_), Some(app)) = (slots, reg.apps.get(&id)) {
                let name = &app.spec().name;
                return Err(bad(format!(
                    "that id is one instance of `{name}`, which has {}; an app is deleted whole\nhint: `herder scale {name} -1` removes an instance, `herder delete {name}` the app",
                    app.instances.len()
                )));
            }
        }
        let ids = reg.resolve(targets)?;
        ids.iter().filter_map(|id| reg.remove(*id)).collect()
    };
    let infos: Vec<AppInfo> = removed.iter().map(|(a, _)| a.info(&d.ctx.paths, true)).collect();
    let mut set = JoinSet::new();
    for (_, c) in removed {
        set.spawn(async move { c.delete().await });
    }
    while set.join_next().await.is_some() {}
    d.persist().await;
    Ok(Response::Done { apps: infos, instances: Vec::new() })
}

async fn send_signal(d: &Arc<Daemon>, signal: &str, targets: &[Target]) -> Result<Response, ErrorReply> {
    let sig = signal_number(signal).ok_or_else(|| {
        bad(format!("`{signal}` is not a signal\nhint: use a name such as `SIGUSR2` or a number"))
    })?;
    let Targeted { ids, instances, todo } = targeted(d, targets)?;
    let mut failures = Vec::new();
    let mut delivered = 0;
    for (_, c, slots) in todo {
        let (n, why) = c.signal(sig, slots).await;
        delivered += n;
        failures.extend(why);
    }
    if delivered == 0 {
        return Err(bad(format!("no signal sent: {}", failures.join("; "))));
    }
    Ok(Response::Done { apps: brief(d, &ids), instances })
}

async fn metrics(d: &Arc<Daemon>, listen: Option<&str>, off: bool) -> Result<Response, ErrorReply> {
    if off {
        d.metrics.stop();
        d.persist().await;
    } else if let Some(text) = listen {
        let addr = super::metrics::parse_listen(text).map_err(bad)?;
        super::metrics::listen(d, addr).await.map_err(bad)?;
        d.persist().await;
    }
    Ok(Response::Metrics { text: super::metrics::render(d), listen: d.metrics.address() })
}

/// `herder web`: start (`listen`), stop (`off`) or describe the dashboard.
async fn web(d: &Arc<Daemon>, listen: Option<&str>, off: bool) -> Result<Response, ErrorReply> {
    let mut warning = None;
    if off {
        d.web.stop();
        d.persist().await;
    } else if let Some(text) = listen {
        warning = web_listen(d, text).await?;
        d.persist().await;
    }
    let token = match d.web.address() {
        Some(_) => {
            Some(crate::web::token(&d.ctx.paths).map_err(|e| bad(format!("cannot read the token: {e}")))?)
        }
        None => None,
    };
    Ok(Response::Web { listen: d.web.address(), token, warning })
}

/// Serve the dashboard at `text`; returns the warning of an address beyond loopback (also
/// in daemon.log).
pub(crate) async fn web_listen(d: &Arc<Daemon>, text: &str) -> Result<Option<String>, ErrorReply> {
    let (addr, warning) = crate::web::parse_listen(text).map_err(bad)?;
    crate::web::listen(d, addr).await.map_err(bad)?;
    Ok(warning)
}

fn show(d: &Daemon, target: &Target) -> Result<Response, ErrorReply> {
    let reg = d.registry();
    let ids = reg.resolve(std::slice::from_ref(target))?;
    if ids.len() != 1 {
        let names: Vec<String> = reg.handles(&ids).iter().map(|a| format!("`{}`", a.spec().name)).collect();
        return Err(bad(format!("the target matches {} apps ({}); name one", ids.len(), names.join(", "))));
    }
    let app = reg.apps.get(&ids[0]).map(|a| (a.info(&d.ctx.paths, true), a.front.get()));
    drop(reg);
    let (mut app, balancer) = app.ok_or_else(|| bad("the app is gone"))?;
    app.balancer = balancer.map(|b| b.view());
    app.log_errors = super::logs::write_errors(d, &app);
    Ok(Response::Show { app: Box::new(app) })
}

/// Remove every app and stop it; used by `kill` and on SIGTERM/SIGINT.
pub(crate) async fn stop_everything(d: &Arc<Daemon>) -> Vec<AppInfo> {
    let removed: Vec<(App, Coordinator)> = {
        let mut reg = d.registry();
        // Ids start again from 0 after `kill`, as in PM2.
        reg.next_id = 0;
        let ids: Vec<u32> = reg.apps.keys().copied().collect();
        ids.into_iter().filter_map(|id| reg.remove(id)).collect()
    };
    let infos = removed.iter().map(|(a, _)| a.info(&d.ctx.paths, true)).collect();
    // What runs now, to tell afterwards which instances outlived their `kill_timeout`.
    let running: Vec<(String, i32, InstanceHandle)> = removed
        .iter()
        .flat_map(|(a, _)| {
            let sig = signal_number(&a.spec().kill_signal).unwrap_or(libc::SIGTERM);
            a.instances
                .iter()
                .filter(|h| h.info().status.is_running())
                .map(move |h| (a.spec().name.clone(), sig, h.clone()))
        })
        .collect();
    let mut set = JoinSet::new();
    for (_, c) in removed {
        set.spawn(async move { c.delete().await });
    }
    while set.join_next().await.is_some() {}
    // A stop that ran out of time ends with SIGKILL (unless SIGKILL was the stop signal).
    let killed: Vec<String> = running
        .iter()
        .filter_map(|(name, sig, h)| {
            let info = h.info();
            let reason = info.last_exit.map(|e| e.reason);
            (*sig != libc::SIGKILL && reason == Some(ExitReason::Signal(libc::SIGKILL)))
                .then(|| format!("{name}:{}", info.index))
        })
        .collect();
    if !killed.is_empty() {
        tracing::warn!(instances = ?killed, "killed after their kill_timeout");
    }
    *d.killed_at_stop.lock().unwrap_or_else(|e| e.into_inner()) = killed;
    d.persist().await;
    infos
}

/// `herder reload-certs` (and SIGHUP): each balancer with `tls` reads its files again.
pub(crate) fn reload_certs(d: &Daemon, targets: &[Target]) -> Result<Response, ErrorReply> {
    let fronts: Vec<_> = {
        let reg = d.registry();
        let ids: Vec<u32> =
            if targets.is_empty() { reg.apps.keys().copied().collect() } else { reg.resolve(targets)? };
        ids.iter().filter_map(|id| reg.apps.get(id)).map(|a| a.front.clone()).collect()
    };
    let (mut loaded, mut failed) = (Vec::new(), Vec::new());
    for front in fronts {
        match front.reload_certs() {
            Ok(Some(line)) => loaded.push(line),
            Ok(None) => {}
            Err(e) => failed.push(e),
        }
    }
    for line in &loaded {
        tracing::info!("reloaded {line}");
    }
    for line in &failed {
        tracing::error!("{line}");
    }
    Ok(Response::Certs { loaded, failed })
}
