//! App configuration: file formats, validation with precise locations, units, and resolution
//! of what the user wrote into a [`AppSpec`] the daemon can run.
//!
//! Public surface used by the CLI (keep it stable; the internals are free to change):
//! - [`load`] / [`load_file`]: a config file (`herder.toml`, `.yaml`/`.yml`, `.json` including
//!   PM2's JSON5-like `ecosystem.json`, `ecosystem.config.{js,cjs,mjs}` evaluated by `node`,
//!   PM2's process dump `dump.pm2`) into resolved specs and warnings, or every error of the
//!   file at once.
//! - [`convert_file`]: a config file as the equivalent `herder.toml`.
//! - [`from_command`]: `herder start <script|"command string"> [flags]` into one spec.
//! - [`is_config_file`]: whether a `start` argument names a config file.
//! - [`INIT_TEMPLATE`]: the commented `herder.toml` that `herder init` writes.
//!
//! Inside, each format is parsed into one spanned tree ([`value::Value`]); one validator
//! (`validate`) walks that tree into declarations, and `resolve` turns a declaration (from
//! a file or from flags) into an [`AppSpec`]. Adding a format means adding a parser to the tree.

mod command;
mod convert;
mod decl;
mod dotenv;
mod format_dump;
mod format_js;
mod format_json;
mod format_toml;
mod format_yaml;
mod keys;
mod resolve;
pub use resolve::cpu_count;
pub mod units;
mod validate;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::protocol::AppSpec;
use decl::AppDecl;
use resolve::{normalize, Base, Origin};
use validate::Dialect;
use value::{Span, Value};

/// What resolution needs from the caller's world.
#[derive(Debug, Clone)]
pub struct ResolveContext {
    /// The directory relative paths are resolved against (the CLI's cwd).
    pub cwd: PathBuf,
    /// The shell environment of the CLI; apps inherit it unless filtered.
    pub env: BTreeMap<String, String>,
}

/// Flags of `herder start`, as typed (units are parsed by this module).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub interpreter: Option<String>,
    pub cwd: Option<String>,
    pub restart_delay: Option<String>,
    pub exp_backoff_restart_delay: Option<String>,
    pub max_restarts: Option<String>,
    pub min_uptime: Option<String>,
    pub kill_timeout: Option<String>,
    pub kill_signal: Option<String>,
    pub stop_exit_codes: Option<Vec<String>>,
    pub no_autorestart: bool,
    pub instances: Option<String>,
    /// `-o/--output`: the stdout file.
    pub out_file: Option<String>,
    /// `-e/--error`: the stderr file.
    pub error_file: Option<String>,
    /// `-l/--log [path]`: the combined file (`Some("")` for the default place).
    pub log_file: Option<String>,
    pub merge_logs: bool,
    pub time: bool,
    pub log_date_format: Option<String>,
    pub log_type: Option<String>,
    pub disable_logs: bool,
    /// `--wait-ready`: online only after the ready signal.
    pub wait_ready: bool,
    /// `--listen-timeout`: how long to wait for it.
    pub listen_timeout: Option<String>,
    /// `--watch[=paths]`: restart on file changes.
    pub watch: Option<Vec<String>>,
    pub ignore_watch: Vec<String>,
    pub watch_delay: Option<String>,
    pub shutdown_with_message: bool,
    /// `--max-memory-restart 300M`.
    pub max_memory_restart: Option<String>,
    /// `-c/--cron/--cron-restart "0 3 * * *"`.
    pub cron_restart: Option<String>,
    /// `--node-args/--interpreter-args "--max-old-space-size=512"` (split shell-style).
    pub interpreter_args: Option<String>,
    /// `--instance-var INSTANCE_ID`.
    pub instance_var: Option<String>,
    /// `--filter-env [names]`: `Some(empty)` inherits nothing from the shell.
    pub filter_env: Option<Vec<String>>,
    /// `--env KEY=VALUE` (repeatable): variables of the app.
    pub env: Vec<String>,
    /// `--port N`: sets `PORT`.
    pub port: Option<String>,
    /// `--no-autostart`: added as `stopped`.
    pub no_autostart: bool,
    /// The user to run as (`user`: a name or a numeric uid), for a daemon running as root.
    pub user: Option<String>,
    /// The group to run as (`group`: a name or a numeric gid); the user's primary group by
    /// default.
    pub group: Option<String>,
    /// `-p/--pid PATH`: the pid file.
    pub pid_file: Option<String>,
    /// Arguments after `--`.
    pub args: Vec<String>,
}

/// Every problem found in one input.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
    /// Warnings found on the way (printed before the errors).
    pub warnings: Vec<ConfigError>,
}

/// One problem, with where it is.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// A hint such as "did you mean `max_restarts`?".
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError { file: None, line: None, column: None, message: message.into(), hint: None }
    }

    /// Places the error at `span` (no-op for an unknown span).
    pub fn at(mut self, span: Span) -> Self {
        if span.is_known() {
            self.line = Some(span.line);
            self.column = Some(span.column);
        }
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }
}

impl ConfigError {
    /// The error as a warning: `warning: herder.toml:4:1: message` (and its hint).
    pub fn as_warning(&self) -> String {
        let mut out = String::new();
        let _ = self.render(&mut out, "warning");
        out
    }

    fn render(&self, f: &mut impl fmt::Write, prefix: &str) -> fmt::Result {
        write!(f, "{prefix}: ")?;
        match (&self.file, self.line, self.column) {
            (Some(file), Some(line), Some(column)) => write!(f, "{}:{line}:{column}: ", file.display())?,
            (Some(file), Some(line), None) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None, _) => write!(f, "{}: ", file.display())?,
            (None, Some(line), Some(column)) => write!(f, "line {line}, column {column}: ")?,
            (None, Some(line), None) => write!(f, "line {line}: ")?,
            (None, None, _) => {}
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    /// `error: herder.toml:4:1: message`, then `  hint: …` on the next line when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f, "error")
    }
}

impl std::error::Error for ConfigError {}

impl ConfigErrors {
    /// Errors sorted by position (errors without one last), all tagged with `file` if given.
    fn new(errors: Vec<ConfigError>, file: Option<&Path>) -> Self {
        ConfigErrors { errors: tag(errors, file), warnings: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

/// Sorts by position (entries without one last) and names `file` where no other file is named.
fn tag(mut errors: Vec<ConfigError>, file: Option<&Path>) -> Vec<ConfigError> {
    if let Some(file) = file {
        for e in errors.iter_mut().filter(|e| e.file.is_none()) {
            e.file = Some(file.to_path_buf());
        }
    }
    // Errors located in another file (an env_file) come after those of the file itself.
    errors.sort_by_key(|e| (e.file.as_deref() != file, e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
    errors
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors { errors: vec![error], warnings: Vec::new() }
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per entry, each as [`ConfigError`] displays it, separated by newlines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Config file formats, by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Yaml,
    Json,
    Ecosystem,
    /// PM2's process dump (`pm2 save`).
    Pm2Dump,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s) && name.len() > s.len());
        if format_dump::is_dump_name(&name) {
            Some(Format::Pm2Dump)
        } else if ends(&[".toml"]) {
            Some(Format::Toml)
        } else if ends(&[".yaml", ".yml"]) {
            Some(Format::Yaml)
        } else if ends(&[".json", ".json5"]) {
            Some(Format::Json)
        } else if ends(&[".config.js", ".config.cjs", ".config.mjs"]) {
            Some(Format::Ecosystem)
        } else {
            None
        }
    }
}

/// What `start` asks of a config file besides its path.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--env <name>`: apply each app's `env_<name>`.
    pub env_name: Option<String>,
    /// `--only a,b`: load only these apps (by name); empty means all.
    pub only: Vec<String>,
    /// Give each app only the environment the file declares (its `env`, `env_file`, `env_<name>`
    /// …), not the shell's: for `herder export`, whose output runs elsewhere.
    pub file_env_only: bool,
}

/// A loaded config: the apps, and warnings about options herder ignores.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub specs: Vec<AppSpec>,
    pub warnings: Vec<ConfigError>,
}

/// A config file parsed into the one tree.
struct Tree {
    root: Value,
    dialect: Dialect,
    /// What a PM2 dump's records left out of the apps' env (for `convert`).
    dump_left_out: Option<format_dump::LeftOut>,
    /// Errors found while reading it that do not stop validation (a dump's bad records).
    errors: Vec<ConfigError>,
}

/// The file's text and its tree. Errors carry no file name yet (except those in other files).
fn read_tree(path: &Path, abs: &Path, ctx: &ResolveContext) -> Result<Tree, Vec<ConfigError>> {
    let text = std::fs::read_to_string(abs).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => "config file not found".to_string(),
            std::io::ErrorKind::InvalidData => "the config file is not UTF-8 text".to_string(),
            _ => format!("cannot read the config file: {}", lowercase_first(&e.to_string())),
        };
        vec![ConfigError::new(message)]
    })?;
    parse_tree(Format::of(path), &text, abs, ctx)
}

/// A config file's text as its tree, `format` by the file's name (`abs`: where it is, for
/// JS files, which `node` evaluates there).
fn parse_tree(
    format: Option<Format>,
    text: &str,
    abs: &Path,
    ctx: &ResolveContext,
) -> Result<Tree, Vec<ConfigError>> {
    let one = |e: ConfigError| vec![e];
    // A PM2 dump, by its name or (under another name) by its shape.
    let dump = |root: Value| -> Result<Tree, Vec<ConfigError>> {
        let dump = format_dump::to_ecosystem(&root, &ctx.env)?;
        Ok(Tree {
            root: dump.root,
            dialect: Dialect::Pm2,
            dump_left_out: Some(dump.left_out),
            errors: dump.errors,
        })
    };
    let tree =
        |root: Value, dialect: Dialect| Ok(Tree { root, dialect, dump_left_out: None, errors: Vec::new() });
    match format {
        Some(Format::Pm2Dump) => dump(format_json::parse(text).map_err(one)?),
        Some(Format::Json) => {
            let root = format_json::parse(text).map_err(one)?;
            if format_dump::looks_like(&root) {
                dump(root)
            } else {
                tree(root, Dialect::Pm2)
            }
        }
        Some(Format::Yaml) => tree(format_yaml::parse(text).map_err(one)?, Dialect::Pm2),
        Some(Format::Ecosystem) => {
            tree(format_js::load(abs, text, &ctx.cwd, &ctx.env).map_err(one)?, Dialect::Pm2)
        }
        Some(Format::Toml) => tree(format_toml::parse(text).map_err(one)?, Dialect::Herder),
        // A name we do not recognise is read as TOML, the primary format, unless it is a dump.
        None => match format_dump::sniff(text).then(|| format_json::parse(text).ok()).flatten() {
            Some(root) if format_dump::looks_like(&root) => dump(root),
            _ => tree(format_toml::parse(text).map_err(one)?, Dialect::Herder),
        },
    }
}

/// Loads a config file: every app resolved, or every error of the file at once. Relative
/// paths in the file are relative to the file's directory; errors name `path` as given.
pub fn load(path: &Path, opts: &LoadOptions, ctx: &ResolveContext) -> Result<Loaded, ConfigErrors> {
    let abs = normalize(&ctx.cwd.join(path));
    let tree = read_tree(path, &abs, ctx).map_err(|e| ConfigErrors::new(e, Some(path)))?;
    load_tree(tree, path, &abs, opts, ctx)
}

/// [`load`] once the file is read: validation and resolution of its tree.
fn load_tree(
    tree: Tree,
    path: &Path,
    abs: &Path,
    opts: &LoadOptions,
    ctx: &ResolveContext,
) -> Result<Loaded, ConfigErrors> {
    let Tree { root, dialect, errors: read_errors, .. } = tree;
    let mut errors = read_errors;
    let mut warnings = Vec::new();
    let validated = validate::apps(&root, dialect, &mut errors, &mut warnings);
    let fail = |errors: Vec<ConfigError>, warnings: Vec<ConfigError>| ConfigErrors {
        errors: tag(errors, Some(path)),
        warnings: tag(warnings, Some(path)),
    };

    // `--only`: every name must be an app of the file.
    let default_name = |d: &AppDecl| {
        d.name
            .as_ref()
            .map(|n| n.value.clone())
            .or_else(|| d.script.as_ref().and_then(|s| resolve::lexical_default_name(&s.value)))
    };
    let selected: Vec<&AppDecl> = if opts.only.is_empty() {
        validated.apps.iter().collect()
    } else {
        let names: Vec<String> = validated.apps.iter().filter_map(default_name).collect();
        for wanted in &opts.only {
            if !names.contains(wanted) && errors.is_empty() {
                let mut e = ConfigError::new(format!("`--only`: no app named `{wanted}` in the file"));
                e = match keys::did_you_mean(wanted, &names) {
                    Some(s) => e.with_hint(format!("did you mean `{s}`?")),
                    None => e.with_hint(format!("the apps are: {}", names.join(", "))),
                };
                errors.push(e);
            }
        }
        validated.apps.iter().filter(|d| default_name(d).is_some_and(|n| opts.only.contains(&n))).collect()
    };
    let env_name = opts.env_name.as_deref();
    if let Some(name) = env_name {
        // An `--env` that no app defines would start or restart every app without the
        // environment the user meant: an error, with the names that are defined.
        let mut defined: Vec<&str> = validated.deploy_env.keys().map(String::as_str).collect();
        for d in &selected {
            defined.extend(d.named_env.iter().map(|n| n.name.as_str()));
        }
        defined.sort_unstable();
        defined.dedup();
        if !defined.contains(&name) && !selected.is_empty() && errors.is_empty() {
            let e = ConfigError::new(format!(
                "`--env {name}`: no app sets `env_{name}`; nothing was started or changed"
            ));
            let listed = defined.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
            errors.push(match keys::did_you_mean(name, &defined) {
                Some(s) => e.with_hint(format!("did you mean `--env {s}`? (the file defines {listed})")),
                None if defined.is_empty() => e.with_hint("the file defines no `env_<name>` environment"),
                None => e.with_hint(format!("the file defines {listed}")),
            });
        }
    }

    let dir = abs.parent().unwrap_or(Path::new("/"));
    let base = Base {
        dir,
        env: &ctx.env,
        source: Some(abs),
        origin: Origin::File,
        env_name,
        deploy_env: env_name.and_then(|n| validated.deploy_env.get(n)),
        auto_shell: dialect == Dialect::Pm2,
        file_env_only: opts.file_env_only,
    };
    let mut specs = Vec::with_capacity(selected.len());
    // Each app's name and where it is written, for the uniqueness check.
    let mut names: Vec<(String, Span)> = Vec::new();
    for decl in selected {
        match resolve::resolve(decl, &base) {
            Ok(mut spec) => {
                names.push((spec.name.clone(), decl.name.as_ref().map_or(decl.span, |n| n.span)));
                spec.env_name = opts.env_name.clone();
                specs.push(spec);
            }
            Err(e) => {
                errors.extend(e);
                if let Some(name) = &decl.name {
                    names.push((name.value.clone(), name.span));
                }
            }
        }
    }
    for (i, (name, span)) in names.iter().enumerate() {
        if let Some((_, first)) = names[..i].iter().find(|(n, _)| n == name) {
            let hint = if first.is_known() {
                format!(
                    "an app named `{name}` is already declared at line {}; names must be unique",
                    first.line
                )
            } else {
                "app names must be unique".to_string()
            };
            errors.push(ConfigError::new(format!("duplicate app name `{name}`")).at(*span).with_hint(hint));
        }
    }
    if errors.is_empty() {
        Ok(Loaded { specs, warnings: tag(warnings, Some(path)) })
    } else {
        Err(fail(errors, warnings))
    }
}

/// [`load`] with no options, without the warnings.
pub fn load_file(path: &Path, ctx: &ResolveContext) -> Result<Vec<AppSpec>, ConfigErrors> {
    load(path, &LoadOptions::default(), ctx).map(|l| l.specs)
}

/// The `herder.toml` equivalent to a config file (PM2 ecosystem files included), after
/// checking that the file loads. Warnings are returned with the text.
pub fn convert_file(path: &Path, ctx: &ResolveContext) -> Result<(String, Vec<ConfigError>), ConfigErrors> {
    let loaded = load(path, &LoadOptions::default(), ctx)?;
    let abs = normalize(&ctx.cwd.join(path));
    let tree = read_tree(path, &abs, ctx).map_err(|e| ConfigErrors::new(e, Some(path)))?;
    let from =
        path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut text = convert::to_toml(&tree.root, &from);
    // A dump's env lost the shell's variables: say which, in the header.
    if let Some(note) = tree.dump_left_out.map(|l| l.comment()).filter(|n| !n.is_empty()) {
        let header_end = text.find("\n\n").map_or(0, |i| i + 1);
        text.insert_str(header_end, &note);
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok((text, loaded.warnings))
}

/// One app from `herder start <script|"command string"> [flags]`: resolved against the
/// CLI's cwd (or `--cwd`), with the shell environment.
pub fn from_command(script: &str, ov: &Overrides, ctx: &ResolveContext) -> Result<AppSpec, ConfigErrors> {
    let mut errors = Vec::new();
    let decl = command::decl(script, ov, &mut errors);
    let base = Base {
        dir: &ctx.cwd,
        env: &ctx.env,
        source: None,
        origin: Origin::Flags,
        env_name: None,
        deploy_env: None,
        auto_shell: true,
        file_env_only: false,
    };
    match resolve::resolve(&decl, &base) {
        Ok(spec) if errors.is_empty() => Ok(spec),
        Ok(_) => Err(ConfigErrors::new(errors, None)),
        Err(e) => {
            errors.extend(e);
            Err(ConfigErrors::new(errors, None))
        }
    }
}

/// What `herder init` writes: a commented `herder.toml`.
pub const INIT_TEMPLATE: &str = include_str!("init_template.toml");

/// Entry points for the fuzz targets (`fuzz/`); not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use super::value::Kind;
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::OnceLock;

    /// What apps are resolved against: a directory of the few kinds of file `resolve` tells
    /// apart (a script by extension, one with a shebang, an executable, an env file, a
    /// subdirectory), a fixed shell environment, and no node or network anywhere.
    pub fn context() -> &'static ResolveContext {
        static CONTEXT: OnceLock<ResolveContext> = OnceLock::new();
        CONTEXT.get_or_init(|| {
            // One directory for every process of a run (libFuzzer's merge forks), rewritten
            // with the same files by each.
            let dir = std::env::temp_dir().join("herder-fuzz-sandbox");
            let files: [(&str, &str, u32); 5] = [
                ("app.js", "console.log('hi')\n", 0o644),
                ("run.sh", "#!/bin/sh -e\necho hi\n", 0o755),
                ("tool", "\x7fELF", 0o755),
                (".env", "GREETING=hello\nexport QUOTED=\"a b\"\n", 0o644),
                ("sub/worker.py", "print('hi')\n", 0o644),
            ];
            for (name, text, mode) in files {
                let path = dir.join(name);
                let written = std::fs::create_dir_all(path.parent().unwrap_or(&dir))
                    .and_then(|()| std::fs::write(&path, text))
                    .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)));
                if let Err(e) = written {
                    panic!("cannot prepare {}: {e}", path.display());
                }
            }
            let env =
                [("PATH", "/usr/local/bin:/usr/bin:/bin"), ("HOME", "/nonexistent"), ("LANG", "C.UTF-8")];
            ResolveContext {
                cwd: dir,
                env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }
        })
    }

    /// `text` as the config file `name` (JS files excluded: `node` evaluates those) as `herder
    /// start <name>` and `herder convert <name>` read it: parsed, validated and resolved in
    /// [`context`], `--env production` when the text's length is odd. Apps that load must
    /// cross the wire unchanged. Returns the number of apps or errors; must never panic.
    pub fn load_text(name: &str, text: &str) -> usize {
        let format = Format::of(Path::new(name));
        if format == Some(Format::Ecosystem) {
            return 0;
        }
        let ctx = context();
        let abs = ctx.cwd.join(name);
        let Ok(tree) = parse_tree(format, text, &abs, ctx) else { return 0 };
        // `env_file` is read as it is named: one outside the sandbox could be a device.
        if names_file_outside(&tree.root, &ctx.cwd) {
            return 0;
        }
        let _ = convert::to_toml(&tree.root, name);
        if let Some(left_out) = &tree.dump_left_out {
            let _ = left_out.comment();
        }
        let env_name = (text.len() % 2 == 1).then(|| "production".to_string());
        let opts = LoadOptions { env_name, only: Vec::new(), ..Default::default() };
        match load_tree(tree, Path::new(name), &abs, &opts, ctx) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    let _ = w.as_warning();
                }
                assert_crosses_the_wire(&loaded.specs);
                loaded.specs.len()
            }
            Err(errors) => errors.to_string().len(),
        }
    }

    /// Whether an `env_file` anywhere in the tree names a file outside `dir`.
    fn names_file_outside(value: &Value, dir: &Path) -> bool {
        let outside = |v: &Value| match &v.kind {
            Kind::Str(s) => !normalize(&dir.join(s)).starts_with(dir),
            Kind::Array(items) => items.iter().any(|i| match &i.kind {
                Kind::Str(s) => !normalize(&dir.join(s)).starts_with(dir),
                _ => false,
            }),
            _ => false,
        };
        match &value.kind {
            Kind::Array(items) => items.iter().any(|v| names_file_outside(v, dir)),
            Kind::Table(table) => table.entries.iter().any(|e| {
                let env_file = keys::lookup(&e.key).is_some_and(|d| d.name == "env_file");
                (env_file && outside(&e.value)) || names_file_outside(&e.value, dir)
            }),
            _ => false,
        }
    }

    /// The specs as the client sends them and the daemon stores them: JSON, and back the same.
    pub fn assert_crosses_the_wire(specs: &[AppSpec]) {
        let json = serde_json::to_vec(specs).expect("a spec serializes");
        let back: Vec<AppSpec> = match serde_json::from_slice(&json) {
            Ok(back) => back,
            Err(e) => panic!("a spec does not read back: {e}\n{}", String::from_utf8_lossy(&json)),
        };
        assert_eq!(back, specs, "a spec changed on the wire");
    }

    /// Parses a dotenv text; must never panic.
    pub fn parse_dotenv(text: &str) -> usize {
        dotenv::parse(text).map_or(0, |v| v.len())
    }

    /// Maps node's JSON output back onto a JS source; must never panic.
    pub fn relocate(json: &str, source: &str) {
        if let Ok(mut v) = format_json::parse(json) {
            format_js::relocate(&mut v, source);
        }
    }
}

/// Whether a `start` argument names a config file: by its name (`.toml`, `.yaml`, `.yml`,
/// `.json`, `.config.js`, `.config.cjs`, `.config.mjs`, `dump.pm2`, `dump.pm2.bak`), or, for
/// an existing file whose name says nothing, by a PM2 dump's shape.
pub fn is_config_file(path: &Path) -> bool {
    Format::of(path).is_some() || is_dump_file(path)
}

/// Whether the start of an existing file reads like a PM2 dump.
fn is_dump_file(path: &Path) -> bool {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut head = Vec::new();
    // A record's `pm_exec_path` follows its env, a few KiB of it.
    if file.take(256 * 1024).read_to_end(&mut head).is_err() {
        return false;
    }
    format_dump::sniff(&String::from_utf8_lossy(&head))
}

/// io::Error messages start with a capital ("No such file or directory").
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

#[cfg(test)]
mod tests;
