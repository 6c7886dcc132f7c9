//! The apps the daemon knows, by id, and the resolution of targets (`all`, an id, a name, a
//! namespace) to app ids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use super::coordinator::Coordinator;
use crate::balancer::Front;
use crate::protocol::{AppInfo, AppSpec, ErrorKind, ErrorReply, InstanceInfo, Target};
use crate::supervisor::sockets::Sockets;
use crate::supervisor::InstanceHandle;

/// One app: its spec and one handle per instance.
#[derive(Clone)]
pub struct App {
    pub id: u32,
    spec: Arc<AppSpec>,
    /// The spec without its environment, for `list`: made once per spec, not per request.
    listing: Arc<AppSpec>,
    /// What the table of `list` shows of the spec (see [`crate::protocol::Request::ListBrief`]).
    brief: Arc<AppSpec>,
    /// The instance of each slot.
    pub instances: Vec<InstanceHandle>,
    /// Instances in no slot that still run (a replacement coming up, or the one it replaced
    /// going down): recorded in `state.json`, not listed.
    pub others: Vec<InstanceHandle>,
    /// Its listening sockets (cluster mode), which its coordinator binds and closes.
    pub sockets: Arc<Sockets>,
    /// The id of the instance of each slot (PM2's `pm_id`); the first is the app's.
    pub ids: Vec<u32>,
    /// Its balancer (`[apps.balancer]` in `http` or `tcp` mode), serving while the spec has one.
    pub front: Arc<Front>,
}

/// Apps by id, each with the slots targets name by instance id (`None`: the whole app).
pub type Picked = Vec<(u32, Option<Vec<usize>>)>;

#[derive(Default)]
pub struct Registry {
    pub apps: BTreeMap<u32, App>,
    /// The owner of each app, which makes every change to it (see [`Coordinator`]).
    pub(crate) coordinators: std::collections::HashMap<u32, Coordinator>,
    pub next_id: u32,
    /// Where the apps' log files go by default (for the balancers' access logs).
    pub logs_dir: std::path::PathBuf,
}

impl Registry {
    pub fn by_name(&self, name: &str) -> Option<&App> {
        self.apps.values().find(|a| a.spec.name == name)
    }

    /// App ids matched by `targets`, in id order without repeats. Every target must match.
    pub fn resolve(&self, targets: &[Target]) -> Result<Vec<u32>, ErrorReply> {
        let mut ids = Vec::new();
        for t in targets {
            let found = self.resolve_one(t);
            if found.is_empty() {
                let Target::Name(name) = t else { continue };
                return Err(ErrorReply {
                    kind: ErrorKind::NotFound,
                    message: format!(
                        "no app has the name, id or namespace `{name}`\nhint: `herder list` shows the apps"
                    ),
                });
            }
            ids.extend(found);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn resolve_one(&self, t: &Target) -> Vec<u32> {
        match t {
            Target::All => self.apps.keys().copied().collect(),
            Target::Name(s) => {
                if let Ok(id) = s.parse::<u32>() {
                    if let Some(app) = self.apps.values().find(|a| a.id == id || a.ids.contains(&id)) {
                        return vec![app.id];
                    }
                }
                if let Some(app) = self.by_name(s) {
                    return vec![app.id];
                }
                self.apps.values().filter(|a| a.spec.namespace == *s).map(|a| a.id).collect()
            }
        }
    }

    /// The apps `targets` name, each with the slots a target names by instance id (`None`: the
    /// whole app: by name, namespace, `all`, or the id of an app of one instance). Every target
    /// must match.
    pub fn resolve_slots(&self, targets: &[Target]) -> Result<Picked, ErrorReply> {
        let mut out: Picked = Vec::new();
        for t in targets {
            let one = match t {
                Target::Name(s) => s.parse::<u32>().ok().and_then(|id| {
                    let app = self.apps.values().find(|a| a.ids.contains(&id) && a.ids.len() > 1)?;
                    Some((app.id, a_slot(app, id)?))
                }),
                Target::All => None,
            };
            match one {
                Some((app, slot)) => match out.iter_mut().find(|(a, _)| *a == app) {
                    Some((_, Some(slots))) if !slots.contains(&slot) => slots.push(slot),
                    Some(_) => {}
                    None => out.push((app, Some(vec![slot]))),
                },
                None => {
                    for app in self.resolve(std::slice::from_ref(t))? {
                        match out.iter_mut().find(|(a, _)| *a == app) {
                            Some(entry) => entry.1 = None,
                            None => out.push((app, None)),
                        }
                    }
                }
            }
        }
        out.sort_unstable_by_key(|(a, _)| *a);
        Ok(out)
    }

    /// A new id for an app or an instance.
    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Handles of the apps `ids` (those still present).
    pub fn handles(&self, ids: &[u32]) -> Vec<App> {
        ids.iter().filter_map(|id| self.apps.get(id).cloned()).collect()
    }

    /// Add an app and its coordinator.
    pub(crate) fn insert(&mut self, app: App, coordinator: Coordinator) {
        self.coordinators.insert(app.id, coordinator);
        app.sync_front(&self.logs_dir);
        self.apps.insert(app.id, app);
    }

    /// Remove an app; its coordinator is returned to stop it.
    pub(crate) fn remove(&mut self, id: u32) -> Option<(App, Coordinator)> {
        let app = self.apps.remove(&id)?;
        // The public port closes at once; requests under way finish.
        app.front.apply(&app.spec.name, None, Vec::new(), None);
        Some((app, self.coordinators.remove(&id)?))
    }
}

/// The slot of `app` whose instance has id `id`.
fn a_slot(app: &App, id: u32) -> Option<usize> {
    app.ids.iter().position(|i| *i == id)
}

/// Environments in use, to share one map between apps whose environments are equal (apps
/// started from one shell or file carry the same few kilobytes each).
static ENVS: Mutex<Vec<Weak<BTreeMap<String, String>>>> = Mutex::new(Vec::new());

/// Make `env` the shared copy of an equal environment already in use, if there is one.
pub fn share_env(env: &mut Arc<BTreeMap<String, String>>) {
    let mut envs = ENVS.lock().unwrap_or_else(|e| e.into_inner());
    envs.retain(|w| w.strong_count() > 0);
    for w in envs.iter() {
        if let Some(shared) = w.upgrade() {
            if Arc::ptr_eq(&shared, env) {
                return;
            }
            if *shared == **env {
                *env = shared;
                return;
            }
        }
    }
    envs.push(Arc::downgrade(env));
}

impl App {
    pub fn new(
        id: u32,
        spec: Arc<AppSpec>,
        instances: Vec<InstanceHandle>,
        sockets: Arc<Sockets>,
        ids: Vec<u32>,
    ) -> App {
        let listing = Self::listing_of(&spec);
        let brief = Self::brief_of(&spec);
        App { id, spec, listing, brief, instances, others: Vec::new(), sockets, ids, front: Arc::default() }
    }

    /// Have the balancer serve the spec's `[apps.balancer]` (or stop) with the instances of
    /// the slots as its pool.
    pub fn sync_front(&self, logs_dir: &std::path::Path) {
        let members = match self.spec.balancer {
            Some(_) => self
                .instances
                .iter()
                .enumerate()
                .map(|(slot, h)| (slot as u32, h.info().generation, h.watch()))
                .collect(),
            None => Vec::new(),
        };
        let access = self.spec.balancer.as_ref().filter(|b| b.access_log).map(|_| {
            (logs_dir.join(format!("{}-access.log", self.spec.name)), crate::logs::rotation_of(&self.spec))
        });
        self.front.apply(&self.spec.name, self.spec.balancer.as_ref(), members, access);
    }

    /// The state of the instance of slot `slot`, as `f` reads it, with its id.
    fn with_id(&self, slot: usize, mut info: InstanceInfo) -> InstanceInfo {
        info.id = Some(self.ids.get(slot).copied().unwrap_or(self.id));
        info
    }

    /// Every instance's state as last published, with its id (for `state.json`).
    pub fn infos(&self) -> Vec<InstanceInfo> {
        let mut out: Vec<InstanceInfo> =
            self.instances.iter().enumerate().map(|(s, h)| self.with_id(s, h.info())).collect();
        out.extend(self.others.iter().map(|h| h.info()));
        out
    }

    fn brief_of(spec: &AppSpec) -> Arc<AppSpec> {
        let mut brief = AppSpec::new(spec.name.clone(), String::new(), std::path::PathBuf::new());
        brief.script = String::new();
        brief.namespace = spec.namespace.clone();
        brief.instances = spec.instances;
        brief.watch = spec.watch.clone();
        brief.autostart = spec.autostart;
        brief.sockets = spec.sockets.clone();
        brief.cluster = spec.cluster;
        brief.balancer = spec.balancer.clone();
        Arc::new(brief)
    }

    /// The app as the table of `list` shows it.
    pub fn brief_info(&self) -> AppInfo {
        AppInfo {
            id: self.id,
            spec: (*self.brief).clone(),
            instances: self
                .instances
                .iter()
                .enumerate()
                .map(|(s, h)| {
                    let mut i = self.with_id(s, h.snapshot());
                    i.history = Vec::new();
                    i.cgroup = None;
                    i
                })
                .collect(),
            log_files: Vec::new(),
            log_errors: Vec::new(),
            balancer: None,
            spread: None,
        }
    }

    /// How connections to its shared sockets are spread over its instances (cluster mode).
    fn spread(&self) -> Option<String> {
        if self.sockets.get().is_empty() {
            return None;
        }
        self.sockets.spread().map(|s| s.describe().to_string())
    }

    /// The spec as `list --json` shows it: no environment, and the secrets it held hidden
    /// wherever else they appear.
    fn listing_of(spec: &AppSpec) -> Arc<AppSpec> {
        let mut listing = spec.masked();
        listing.env = Default::default();
        Arc::new(listing)
    }

    pub fn spec(&self) -> &Arc<AppSpec> {
        &self.spec
    }

    pub fn set_spec(&mut self, spec: Arc<AppSpec>) {
        self.listing = Self::listing_of(&spec);
        self.brief = Self::brief_of(&spec);
        self.spec = spec;
    }

    /// A snapshot for the client, with the environment and the recent CPU and memory samples
    /// when `full` is set.
    pub fn info(&self, paths: &crate::paths::Paths, full: bool) -> AppInfo {
        let snapshot = if full { InstanceHandle::snapshot_with_history } else { InstanceHandle::snapshot };
        let mut instances: Vec<_> =
            self.instances.iter().enumerate().map(|(s, h)| self.with_id(s, snapshot(h))).collect();
        if !full {
            // Without the environment the client cannot tell what to hide.
            let secrets = crate::protocol::secrets::secret_values(&self.spec.env);
            instances.iter_mut().for_each(|i| crate::protocol::secrets::scrub_instance(i, &secrets));
        }
        AppInfo {
            id: self.id,
            spec: if full { (*self.spec).clone() } else { (*self.listing).clone() },
            instances,
            log_files: (0..self.instances.len() as u32)
                .map(|i| {
                    let (out, err, _) = crate::logs::log_paths(paths, &self.spec, i);
                    let shown = |p: Option<std::path::PathBuf>| p.unwrap_or_else(|| "/dev/null".into());
                    (shown(out), shown(err))
                })
                .collect(),
            log_errors: Vec::new(),
            balancer: None,
            spread: self.spread(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AppSpec;
    use std::path::PathBuf;

    fn app(id: u32, name: &str, ns: &str) -> App {
        let mut spec = AppSpec::new(name, "/bin/true", PathBuf::from("/"));
        spec.namespace = ns.into();
        App::new(id, Arc::new(spec), Vec::new(), Arc::default(), vec![id])
    }

    fn reg() -> Registry {
        let mut r = Registry::default();
        for a in [app(0, "web", "front"), app(1, "worker", "back"), app(2, "3", "back")] {
            r.apps.insert(a.id, a);
        }
        r
    }

    #[test]
    fn equal_environments_are_shared() {
        let env = |v: &str| Arc::new(BTreeMap::from([("A".to_string(), v.to_string())]));
        let (mut a, mut b, mut c) = (env("1"), env("1"), env("2"));
        share_env(&mut a);
        share_env(&mut b);
        share_env(&mut c);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.get("A").map(String::as_str), Some("2"));
    }

    #[test]
    fn targets_resolve_by_id_then_name_then_namespace() {
        let r = reg();
        let t = |s: &str| vec![Target::parse(s)];
        assert_eq!(r.resolve(&t("all")).unwrap(), vec![0, 1, 2]);
        assert_eq!(r.resolve(&t("1")).unwrap(), vec![1]);
        assert_eq!(r.resolve(&t("web")).unwrap(), vec![0]);
        assert_eq!(r.resolve(&t("3")).unwrap(), vec![2], "a name that looks like a missing id");
        assert_eq!(r.resolve(&t("back")).unwrap(), vec![1, 2]);
        assert_eq!(r.resolve(&[Target::parse("web"), Target::parse("0")]).unwrap(), vec![0]);
        let err = r.resolve(&t("nope")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains("`nope`"));
    }
}
