//! From what the user wrote ([`AppDecl`], filled by the validator or by `start` flags) to an
//! [`AppSpec`] the daemon can run: working directory, program and arguments (interpreter by
//! extension, direct execution, command strings, `PATH` lookup), name, environment, defaults.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::decl::{AppDecl, FilterEnv, Spanned};
use super::{dotenv, ConfigError};
use crate::protocol::AppSpec;

/// Where the declaration came from: hints name a key or a flag accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    File,
    Flags,
}

impl Origin {
    /// "`interpreter`" or "`--interpreter`" for the key `interpreter`.
    fn option(self, key: &str) -> String {
        match self {
            Origin::File => format!("`{key}`"),
            Origin::Flags => format!("`--{}`", key.replace('_', "-")),
        }
    }
}

/// What an app is resolved against.
pub struct Base<'a> {
    /// Relative `cwd`s are resolved against it, and it is the default `cwd`.
    pub dir: &'a Path,
    /// The shell environment the app inherits.
    pub env: &'a BTreeMap<String, String>,
    /// The config file, if any (absolute).
    pub source: Option<&'a Path>,
    pub origin: Origin,
    /// `--env <name>`: selects each app's `env_<name>`.
    pub env_name: Option<&'a str>,
    /// PM2's `deploy.<name>.env` for the selected `--env`, under each app's `env`.
    pub deploy_env: Option<&'a BTreeMap<String, String>>,
    /// The app's environment holds only what the file declares, none of `env` (see
    /// [`super::LoadOptions::file_env_only`]).
    pub file_env_only: bool,
    /// Whether a command string that needs a shell runs with `sh -c` without `shell = true`
    /// (PM2 files and the command line do; herder.toml asks for `shell = true`).
    pub auto_shell: bool,
}

/// Used when `PATH` is unset, as `execvp` does.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

const NO_SHELL_HINT: &str = "herder runs commands without a shell; to use one, set `shell = true`";

/// Interpreters chosen by file extension.
const INTERPRETERS: &[(&str, &str)] = &[
    ("js", "node"),
    ("mjs", "node"),
    ("cjs", "node"),
    ("py", "python3"),
    ("sh", "bash"),
    ("rb", "ruby"),
    ("php", "php"),
    ("pl", "perl"),
    ("ts", "bun"),
    ("tsx", "bun"),
    ("coffee", "coffee"),
];

/// Shell syntax that word splitting would silently pass to the program as arguments.
const SHELL_OPERATORS: &[&str] =
    &["&&", "||", "|", "|&", ";", "&", ">", ">>", "<", "<<", "2>", "2>>", "2>&1", "&>", "&>>"];

/// The interpreter for a file name, by extension.
pub fn interpreter_for(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    INTERPRETERS.iter().find(|(e, _)| *e == ext).map(|(_, i)| *i)
}

/// The name an app gets when none is given, from the script text alone: the file name
/// without extension, or for a command string the program's file name.
pub fn lexical_default_name(script: &str) -> Option<String> {
    if script.trim().contains(char::is_whitespace) {
        let first = shell_words::split(script).ok()?.into_iter().next()?;
        return file_name(&first, false);
    }
    file_name(script.trim(), true)
}

fn file_name(path: &str, strip_extension: bool) -> Option<String> {
    let path = Path::new(path);
    let name = if strip_extension { path.file_stem() } else { path.file_name() };
    name.and_then(|n| n.to_str()).filter(|n| !n.is_empty()).map(str::to_string)
}

/// Removes `.` and resolves `..` without touching the file system (symlinks are kept).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Checks an app name or a namespace: `what` is "app name" or "namespace".
pub fn check_name(what: &str, name: &str) -> Result<(), (String, String)> {
    let problem = if name.trim().is_empty() {
        Some((format!("{what} is empty"), "choose a non-empty name".to_string()))
    } else if name == "all" {
        Some((
            format!("{what} `all` is reserved"),
            "`all` targets every app; choose another name".to_string(),
        ))
    } else if name.bytes().all(|b| b.is_ascii_digit()) {
        Some((
            format!("{what} `{name}` is a number"),
            "numbers are app ids; put a letter in the name".to_string(),
        ))
    } else if name.contains('/') {
        Some((
            format!("{what} `{name}` contains `/`"),
            "names are used in log file names; use `-` or `_`".to_string(),
        ))
    } else if name.chars().any(char::is_control) {
        Some((
            format!("{what} {name:?} contains a control character"),
            "use printable characters".to_string(),
        ))
    } else {
        None
    };
    problem.map_or(Ok(()), Err)
}

/// The number of CPUs available to this process (cgroup quotas and affinity included).
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// Resolves one declared app. Errors carry spans but no file name.
pub fn resolve(decl: &AppDecl, base: &Base<'_>) -> Result<AppSpec, Vec<ConfigError>> {
    let mut errors = Vec::new();
    // A missing script was reported by whoever built the declaration.
    let Some(script) = &decl.script else {
        return Err(errors);
    };
    let label = &decl.label;

    let cwd = match &decl.cwd {
        Some(c) => normalize(&base.dir.join(&c.value)),
        None => base.dir.to_path_buf(),
    };
    if !cwd.is_dir() {
        let what = if cwd.exists() { "is not a directory" } else { "does not exist" };
        let span = decl.cwd.as_ref().map_or(decl.span, |c| c.span);
        let msg = format!("working directory `{}` of app {label} {what}", cwd.display());
        errors.push(ConfigError::new(msg).at(span));
        return Err(errors);
    }

    let account = match account(decl, base) {
        Ok(account) => account,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let login = account.as_ref().filter(|_| decl.user.is_some()).map(crate::users::login_env);
    let env = match environment(decl, base, login.as_deref().unwrap_or_default()) {
        Ok(env) => env,
        Err(mut e) => {
            errors.append(&mut e);
            return Err(errors);
        }
    };
    // Programs are looked up in the app's PATH, else (when it filtered the shell's) the shell's.
    let path_var = env.get("PATH").or_else(|| base.env.get("PATH")).map_or(DEFAULT_PATH, String::as_str);

    let launch = match launch(&script.value, decl, &cwd, path_var, base) {
        Ok(launch) => launch,
        Err(e) => {
            errors.push(e.at(script.span));
            return Err(errors);
        }
    };

    let mut name = match &decl.name {
        Some(name) => name.clone(),
        None => Spanned { value: launch.default_name.clone(), span: decl.span },
    };
    if let (true, Some(env_name)) = (decl.append_env_to_name, base.env_name) {
        name.value = format!("{}-{env_name}", name.value);
    }
    if let Err((msg, hint)) = check_name("app name", &name.value) {
        let hint =
            if decl.name.is_some() { hint } else { format!("{hint} with {}", base.origin.option("name")) };
        errors.push(ConfigError::new(msg).at(name.span).with_hint(hint));
    }
    if let Some(ns) = &decl.namespace {
        if let Err((msg, hint)) = check_name("namespace", &ns.value) {
            errors.push(ConfigError::new(format!("{msg} (app {label})")).at(ns.span).with_hint(hint));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut spec = AppSpec::new(name.value, launch.program, cwd);
    if let Some(ns) = &decl.namespace {
        spec.namespace = ns.value.clone();
    }
    spec.script = script.value.clone();
    spec.args = launch.args;
    let mut env = env;
    // Python buffers its output when it is not a terminal; PM2 sets this too.
    if launch.interpreter.rsplit('/').next().is_some_and(|i| i.starts_with("python")) {
        env.entry("PYTHONUNBUFFERED".to_string()).or_insert_with(|| "1".to_string());
    }
    spec.interpreter = Some(launch.interpreter);
    spec.env = std::sync::Arc::new(env);
    if let Some(var) = &decl.instance_var {
        spec.instance_var = var.clone();
    }
    spec.increment_var = decl.increment_var.clone();
    spec.instances = decl.instances.map_or(1, |i| i.count(cpu_count()));
    spec.instances_max = matches!(decl.instances, Some(crate::config::decl::Instances::Max));
    spec.image = decl.image.clone();
    let cluster = in_cluster_mode(decl, &spec);
    spec.sockets = if cluster { cluster_sockets(decl, &spec) } else { Vec::new() };
    spec.cluster = cluster && spec.runs_node();
    if let Some(b) = &decl.balancer {
        match balancer(decl, b, &spec) {
            Ok(Balanced::Socket(listen)) => {
                spec.sockets = vec![listen];
                spec.cluster = spec.runs_node();
            }
            Ok(Balanced::Proxy(proxy)) => {
                spec.sockets = Vec::new();
                spec.cluster = false;
                spec.balancer = Some(proxy);
            }
            Err(e) => {
                errors.push(e);
                return Err(errors);
            }
        }
    }
    if let Some(v) = decl.autorestart {
        spec.autorestart = v;
    }
    if let Some(v) = &decl.stop_exit_codes {
        spec.stop_exit_codes = v.clone();
    }
    if let Some(v) = decl.min_uptime_ms {
        spec.min_uptime_ms = v;
    }
    if let Some(v) = decl.max_restarts {
        spec.max_restarts = v;
    }
    if let Some(v) = decl.restart_delay_ms {
        spec.restart_delay_ms = v;
    }
    // A first delay of 0 would never grow: 0 means off.
    spec.exp_backoff_restart_delay_ms = decl.exp_backoff_restart_delay_ms.filter(|ms| *ms > 0);
    if let Some(v) = &decl.kill_signal {
        spec.kill_signal = v.clone();
    }
    if let Some(v) = decl.kill_timeout_ms {
        spec.kill_timeout_ms = v;
    }
    if let Some(v) = decl.autostart {
        spec.autostart = v;
    }
    spec.logs = decl.logs.clone();
    spec.wait_ready = decl.wait_ready.unwrap_or(false);
    spec.watchdog_ms = decl.watchdog_ms;
    spec.health = decl.health.clone();
    spec.cron_restart = decl.cron_restart.clone();
    spec.cron_timezone = decl.cron_timezone.clone();
    spec.hooks = decl.hooks.clone();
    spec.watch = decl.watch.iter().map(|p| normalize(&spec.cwd.join(p))).collect();
    spec.ignore_watch = decl.ignore_watch.clone();
    spec.watch_delay_ms = decl.watch_delay_ms.unwrap_or(0);
    spec.shutdown_with_message = decl.shutdown_with_message.unwrap_or(false);
    spec.max_memory_restart = decl.max_memory_restart;
    spec.memory_limit = decl.memory_limit;
    spec.cpu_limit_millis = decl.cpu_limit_millis;
    if let Some(ms) = decl.listen_timeout_ms {
        spec.listen_timeout_ms = ms;
    }
    for p in
        [&mut spec.logs.out_file, &mut spec.logs.error_file, &mut spec.logs.log_file].into_iter().flatten()
    {
        *p = spec.cwd.join(&*p);
    }
    spec.user = decl.user.as_ref().map(|u| u.value.clone());
    spec.group = decl.group.as_ref().map(|g| g.value.clone());
    spec.pid_file = decl.pid_file.as_ref().map(|p| normalize(&spec.cwd.join(&p.value)));
    spec.source = base.source.map(Path::to_path_buf);
    Ok(spec)
}

/// The account of `user`/`group`, if the app sets either: one that does not exist on this
/// machine is an error where it is written. (Whether the daemon may switch to it is the
/// daemon's check: `herder validate` must pass on a machine where herder does not run as
/// root.)
fn account(decl: &AppDecl, base: &Base<'_>) -> Result<Option<crate::users::Account>, ConfigError> {
    if decl.user.is_none() && decl.group.is_none() {
        return Ok(None);
    }
    let (user, group) = (decl.user.as_ref(), decl.group.as_ref());
    crate::users::account(user.map(|u| u.value.as_str()), group.map(|g| g.value.as_str())).map(Some).map_err(
        |e| {
            let key = e.key();
            let span = if key == "group" { &decl.group } else { &decl.user };
            let span = span.as_ref().map_or(decl.span, |s| s.span);
            let message = match base.origin {
                Origin::File => format!("app {}: {e}", decl.label),
                Origin::Flags => format!("app {}: `--{key} {}`: {}", decl.label, e.value(), e.problem()),
            };
            let (db, file) = if key == "group" { ("group", "/etc/group") } else { ("passwd", "/etc/passwd") };
            let mut hint = format!("`getent {db}` lists the {key}s");
            if crate::users::files_only() {
                hint.push_str(&format!(" (this herder is linked statically and reads only {file})"));
            }
            ConfigError::new(message).at(span).with_hint(hint)
        },
    )
}

/// How to start the app.
struct Launch {
    program: String,
    args: Vec<String>,
    /// The interpreter, or `none` for direct execution.
    interpreter: String,
    default_name: String,
}

/// Where the script's program is.
#[derive(Debug)]
enum Target {
    /// A file relative to (or under) the working directory.
    File(PathBuf),
    /// A command found in `PATH`.
    OnPath(PathBuf),
}

/// The app's environment: the shell's (less what `filter_env` drops) < the `user`'s login
/// variables (`login`: `HOME`, `USER`, `LOGNAME`, `SHELL`) < `env_file` < PM2's
/// `deploy.<env>.env` < `env` (and `port`) < `env_<name>` selected by `--env <name>`.
fn environment(
    decl: &AppDecl,
    base: &Base<'_>,
    login: &[(&str, String)],
) -> Result<BTreeMap<String, String>, Vec<ConfigError>> {
    let mut env: BTreeMap<String, String> = match &decl.filter_env {
        _ if base.file_env_only => BTreeMap::new(),
        FilterEnv::None => base.env.clone(),
        FilterEnv::All => BTreeMap::new(),
        FilterEnv::Containing(parts) => base
            .env
            .iter()
            .filter(|(k, _)| !parts.iter().any(|p| !p.is_empty() && k.contains(p.as_str())))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    // The shell's `HOME` and `USER` are those of whoever ran herder, not of the app's user.
    // An export runs elsewhere, where this machine's accounts mean nothing.
    if !base.file_env_only {
        env.extend(login.iter().map(|(k, v)| (k.to_string(), v.clone())));
    }
    let mut errors = Vec::new();
    for file in &decl.env_file {
        let path = normalize(&base.dir.join(&file.value));
        match std::fs::read_to_string(&path) {
            Ok(text) => match dotenv::parse(&text) {
                Ok(vars) => env.extend(vars),
                Err(e) => {
                    let message = format!("in env_file of app {}: {}", decl.label, e.message);
                    errors.push(ConfigError { message, ..e }.in_file(&path));
                }
            },
            Err(e) => {
                let what = match e.kind() {
                    std::io::ErrorKind::NotFound => "does not exist".to_string(),
                    _ => format!("cannot be read: {}", super::lowercase_first(&e.to_string())),
                };
                let msg = format!("env_file `{}` of app {} {what}", path.display(), decl.label);
                errors.push(ConfigError::new(msg).at(file.span));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Some(deploy) = base.deploy_env {
        env.extend(deploy.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    env.extend(decl.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(port) = decl.port {
        env.insert("PORT".to_string(), port.to_string());
    }
    if let Some(name) = base.env_name {
        if let Some(named) = decl.named_env.iter().find(|n| n.name == name) {
            env.extend(named.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    Ok(env)
}

/// Cluster mode: an app is in it with `exec_mode = "cluster"`, or with more than one instance
/// (as PM2 picks it for `-i`), unless `exec_mode = "fork"`. An `increment_var` of `PORT` gives
/// each instance a port of its own instead.
fn in_cluster_mode(decl: &AppDecl, spec: &AppSpec) -> bool {
    let cluster = match decl.cluster {
        Some(mode) => mode,
        None => decl.instances.is_some() && spec.instances > 1,
    };
    cluster && spec.increment_var.as_deref() != Some("PORT")
}

/// The sockets the daemon binds for an app in cluster mode, which its instances share: its
/// `port`s, else the `PORT` of its environment. (A Node app's `listen` on another port asks
/// the daemon for it at run time.)
fn cluster_sockets(decl: &AppDecl, spec: &AppSpec) -> Vec<crate::protocol::spec::SocketSpec> {
    if !decl.ports.is_empty() {
        return decl.ports.clone();
    }
    spec.env
        .get("PORT")
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|p| *p > 0)
        .map(|port| vec![crate::protocol::spec::SocketSpec { name: port.to_string(), host: None, port }])
        .unwrap_or_default()
}

enum Balanced {
    /// `mode = "socket"`: the instances share the public socket.
    Socket(crate::protocol::spec::SocketSpec),
    Proxy(crate::protocol::spec::BalancerSpec),
}

/// `[apps.balancer]` with the app's `port`: the public address is `listen`, else the app's
/// port; in `http` and `tcp` mode the instances listen on loopback ports of their own, from the
/// app's port up when that is not the public one.
fn balancer(
    decl: &AppDecl,
    b: &crate::config::decl::BalancerDecl,
    spec: &AppSpec,
) -> Result<Balanced, ConfigError> {
    let label = &decl.label;
    let app_port = decl
        .ports
        .first()
        .map(|p| p.port)
        .or_else(|| spec.env.get("PORT").and_then(|p| p.trim().parse::<u16>().ok()).filter(|p| *p > 0));
    let listen = match (&b.listen, app_port) {
        (Some(listen), _) => listen.clone(),
        (None, Some(port)) => decl.ports.first().cloned().unwrap_or(crate::protocol::spec::SocketSpec {
            name: port.to_string(),
            host: None,
            port,
        }),
        (None, None) => {
            let msg = format!("`balancer` of app {label} has no address to listen on");
            return Err(ConfigError::new(msg)
                .at(b.span)
                .with_hint("add `listen = 8080` to the table, or give the app a `port`"));
        }
    };
    if b.socket_mode {
        return Ok(Balanced::Socket(listen));
    }
    if spec.increment_var.as_deref() == Some("PORT") {
        let msg = format!(
            "`increment_var = \"PORT\"` of app {label} and its `balancer` both set each instance's PORT"
        );
        return Err(ConfigError::new(msg)
            .at(b.span)
            .with_hint("remove `increment_var`: the balancer gives each instance a port of its own"));
    }
    let mut proxy = b.spec.clone();
    // Relative certificate paths are the app's, as its log files are.
    if let Some(tls) = &mut proxy.tls {
        tls.cert = normalize(&spec.cwd.join(&tls.cert));
        tls.key = normalize(&spec.cwd.join(&tls.key));
    }
    proxy.backend_port = app_port.filter(|p| *p != listen.port);
    proxy.listen = listen;
    Ok(Balanced::Proxy(proxy))
}

/// The shell syntax in a command string that word splitting cannot honour, if any: operators
/// (`&&`, `|`, `;`, redirections), expansions (`$VAR`, `` ` ``), subshells, line breaks.
pub fn needs_shell(command: &str) -> Option<String> {
    let mut chars = command.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => {
                chars.next();
            }
            (Some('"'), '"') => quote = None,
            (Some('"'), '$' | '`') => return Some(c.to_string()),
            (Some('"'), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '&' | '|' | '>' | '<') => {
                let mut op = c.to_string();
                while let Some(&n) = chars.peek() {
                    if matches!(n, '&' | '|' | '>' | '<') {
                        op.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                return Some(op);
            }
            (None, ';' | '$' | '`' | '(' | ')' | '\n') => return Some(c.to_string()),
            _ => {}
        }
    }
    None
}

fn launch(
    script: &str,
    decl: &AppDecl,
    cwd: &Path,
    path_var: &str,
    base: &Base<'_>,
) -> Result<Launch, ConfigError> {
    let label = &decl.label;
    let is_file = cwd.join(script).is_file();
    let is_command = !is_file && script.trim().contains(char::is_whitespace);
    let shell_syntax = if is_file { None } else { needs_shell(script) };

    // `shell = true`, or a command string that needs a shell where that is allowed: `sh -c`.
    let use_shell = match (decl.shell, &shell_syntax) {
        (Some(shell), _) => shell,
        (None, Some(op)) if !base.auto_shell => {
            let msg = format!("the command of app {label} uses the shell syntax `{}`", op.trim());
            let msg = if SHELL_OPERATORS.contains(&op.as_str()) {
                format!("the command of app {label} uses the shell operator `{op}`")
            } else {
                msg
            };
            return Err(ConfigError::new(msg).with_hint(NO_SHELL_HINT));
        }
        (None, Some(_)) => true,
        (None, None) => false,
    };
    if use_shell {
        let sh =
            locate("sh", Path::new("/"), path_var).map_or_else(|_| "/bin/sh".to_string(), |t| t.display());
        let mut command = script.to_string();
        if !decl.args.is_empty() {
            command.push(' ');
            command.push_str(&shell_words::join(&decl.args));
        }
        let default_name = lexical_default_name(script)
            .or_else(|| script.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "sh".to_string());
        return Ok(Launch {
            program: sh,
            args: vec!["-c".to_string(), command],
            interpreter: "sh".to_string(),
            default_name,
        });
    }

    // A file whose name has spaces is still a file; otherwise spaces make a command string.
    let (word, mut rest) = if is_command {
        let words = shell_words::split(script).map_err(|e| {
            ConfigError::new(format!("cannot split the command of app {label}: {e}"))
                .with_hint("close the quote, or escape it with `\\`")
        })?;
        let mut words = words.into_iter();
        let first = words.next().unwrap_or_default();
        (first, words.collect::<Vec<_>>())
    } else {
        (script.to_string(), Vec::new())
    };
    if word.is_empty() {
        return Err(ConfigError::new(format!("the script of app {label} is empty")));
    }

    let target = locate(&word, cwd, path_var).map_err(|e| e.describe(&word, label))?;
    let default_name = file_name(&word, !is_command).unwrap_or_else(|| word.clone());

    let interpreter_option = base.origin.option("interpreter");
    // The interpreter and its own arguments (from a shebang line), or none to execute directly.
    let interpreter: Option<(String, Vec<String>)> = match (decl.interpreter.as_deref(), &target) {
        (Some("none"), Target::File(path)) if !is_executable(path) => {
            return Err(not_executable(path, label, &interpreter_option));
        }
        (Some("none"), _) | (None, Target::OnPath(_)) => None,
        (Some(interpreter), _) => Some((find_program(interpreter, path_var), Vec::new())),
        (None, Target::File(path)) => match (shebang(path), interpreter_for(path)) {
            // The kernel honours the shebang of an executable file.
            (Some(_), _) if is_executable(path) => None,
            (Some(mut line), _) => Some((line.remove(0), line)),
            (None, Some(by_extension)) => {
                Some((extension_interpreter(by_extension, path, label, path_var)?, Vec::new()))
            }
            (None, None) if is_executable(path) => None,
            (None, None) => {
                let msg = format!(
                    "cannot tell how to run `{}` (app {label}): no known extension, not executable",
                    path.display()
                );
                let hint = format!("set {interpreter_option} (e.g. `node`), or make it executable");
                return Err(ConfigError::new(msg).with_hint(hint));
            }
        },
    };

    let target = target.display();
    let mut args = Vec::new();
    let (program, interpreter) = match interpreter {
        Some((interpreter, shebang_args)) => {
            let shown = std::iter::once(interpreter.as_str())
                .chain(shebang_args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            args.extend(shebang_args);
            args.extend(decl.interpreter_args.iter().cloned());
            args.push(target);
            let shown =
                if decl.interpreter.is_some() || !shown.contains(' ') { interpreter.clone() } else { shown };
            (interpreter, shown)
        }
        None => (target, "none".to_string()),
    };
    args.append(&mut rest);
    args.extend(decl.args.iter().cloned());
    Ok(Launch { program, args, interpreter, default_name })
}

/// A bare program name found in `PATH` becomes its absolute path (so an app that filters its
/// environment still finds its interpreter); anything else stays as written.
fn find_program(name: &str, path_var: &str) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    match locate(name, Path::new("/nonexistent-dir"), path_var) {
        Ok(Target::OnPath(p)) => p.display().to_string(),
        _ => name.to_string(),
    }
}

/// The interpreter for a file by its extension; TypeScript runs with `bun`, else `tsx`.
fn extension_interpreter(
    by_extension: &str,
    path: &Path,
    label: &str,
    path_var: &str,
) -> Result<String, ConfigError> {
    if by_extension != "bun" {
        return Ok(find_program(by_extension, path_var));
    }
    for runner in ["bun", "tsx"] {
        let found = find_program(runner, path_var);
        if found.contains('/') {
            return Ok(found);
        }
    }
    Err(ConfigError::new(format!("no `bun` or `tsx` in PATH to run `{}` (app {label})", path.display()))
        .with_hint("install bun or tsx, or set `interpreter`"))
}

/// The interpreter and its argument from a `#!` line (Linux passes the rest of the line as one
/// argument).
fn shebang(path: &Path) -> Option<Vec<String>> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let head = &head[..n];
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n').unwrap_or(line.len())];
    let line = std::str::from_utf8(line).ok()?.trim();
    let (program, arg) = match line.split_once(char::is_whitespace) {
        Some((p, a)) => (p, Some(a.trim())),
        None => (line, None),
    };
    if program.is_empty() {
        return None;
    }
    let mut out = vec![program.to_string()];
    out.extend(arg.filter(|a| !a.is_empty()).map(str::to_string));
    Some(out)
}

fn not_executable(path: &Path, label: &str, interpreter_option: &str) -> ConfigError {
    ConfigError::new(format!("`{}` (app {label}) is not executable", path.display()))
        .with_hint(format!("run `chmod +x {}`, or set {interpreter_option}", path.display()))
}

enum LocateError {
    NotFound { path: PathBuf, searched_path: bool },
    IsDir(PathBuf),
}

impl LocateError {
    fn describe(self, word: &str, label: &str) -> ConfigError {
        match self {
            LocateError::NotFound { path, searched_path: true } => ConfigError::new(format!(
                "script `{word}` of app {label} not found"
            ))
            .with_hint(format!("there is no file `{}` and no `{word}` command in PATH", path.display())),
            LocateError::NotFound { path, searched_path: false } => {
                ConfigError::new(format!("script `{word}` of app {label} not found"))
                    .with_hint(format!("there is no file `{}`", path.display()))
            }
            LocateError::IsDir(path) => {
                ConfigError::new(format!("script `{word}` of app {label} is a directory"))
                    .with_hint(format!("`{}` is a directory; name the file to run", path.display()))
            }
        }
    }
}

/// A file relative to `cwd`, else (for a bare name) an executable in `PATH`.
fn locate(word: &str, cwd: &Path, path_var: &str) -> Result<Target, LocateError> {
    let path = normalize(&cwd.join(word));
    if path.is_file() {
        return Ok(Target::File(path));
    }
    if path.is_dir() {
        return Err(LocateError::IsDir(path));
    }
    if word.contains('/') {
        return Err(LocateError::NotFound { path, searched_path: false });
    }
    let found = path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| normalize(&cwd.join(dir).join(word)))
        .find(|candidate| candidate.is_file() && is_executable(candidate));
    found.map(Target::OnPath).ok_or(LocateError::NotFound { path, searched_path: true })
}

impl Target {
    fn display(self) -> String {
        match self {
            Target::File(p) | Target::OnPath(p) => p.to_string_lossy().into_owned(),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(lexical_default_name("app.js").as_deref(), Some("app"));
        assert_eq!(lexical_default_name("./src/server.py").as_deref(), Some("server"));
        assert_eq!(lexical_default_name("python3 -m http.server 8000").as_deref(), Some("python3"));
        assert_eq!(lexical_default_name("/usr/bin/python3.12 x").as_deref(), Some("python3.12"));
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/a/b/../../..")), PathBuf::from("/"));
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
        assert_eq!(normalize(Path::new("./")), PathBuf::from("."));
    }

    #[test]
    fn names() {
        assert!(check_name("app name", "web-1").is_ok());
        assert!(check_name("app name", "my app").is_ok());
        for bad in ["", " ", "all", "42", "a/b", "a\nb"] {
            assert!(check_name("app name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interpreters_by_extension() {
        assert_eq!(interpreter_for(Path::new("a.js")), Some("node"));
        assert_eq!(interpreter_for(Path::new("a.MJS")), Some("node"));
        assert_eq!(interpreter_for(Path::new("a.py")), Some("python3"));
        assert_eq!(interpreter_for(Path::new("a.ts")), Some("bun"));
        assert_eq!(interpreter_for(Path::new("a")), None);
        assert_eq!(interpreter_for(Path::new("a.go")), None);
    }
}
