//! App configuration: file formats, validation with precise locations, units, and resolution
//! of what the user wrote into a [`AppSpec`] the daemon can run.
//!
//! Public surface used by the CLI (keep it stable; the internals are free to change):
//! - [`load_file`]: a config file (`herder.toml` for now) into resolved specs, or every error
//!   of the file at once.
//! - [`from_command`]: `herder start <script|"command string"> [flags]` into one spec.
//! - [`is_config_file`]: whether a `start` argument names a config file.
//!
//! Inside, each format is parsed into one spanned tree ([`value::Value`]); one validator
//! (`validate`) walks that tree into declarations, and `resolve` turns a declaration (from
//! a file or from flags) into an [`AppSpec`]. Adding a format means adding a parser to the tree.

mod command;
mod format_toml;
mod resolve;
pub mod signal;
pub mod units;
mod validate;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::protocol::AppSpec;
use resolve::{normalize, Base, Origin};
use value::Span;

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
    /// Arguments after `--`.
    pub args: Vec<String>,
}

/// Every problem found in one input.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
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

impl fmt::Display for ConfigError {
    /// `error: herder.toml:4:1: message`, then `  hint: …` on the next line when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("error: ")?;
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

impl std::error::Error for ConfigError {}

impl ConfigErrors {
    /// Errors sorted by position (errors without one last), all tagged with `file` if given.
    fn new(mut errors: Vec<ConfigError>, file: Option<&Path>) -> Self {
        if let Some(file) = file {
            errors = errors.into_iter().map(|e| e.in_file(file)).collect();
        }
        errors.sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
        ConfigErrors { errors }
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

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors { errors: vec![error] }
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
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s) && name.len() > s.len());
        if ends(&[".toml"]) {
            Some(Format::Toml)
        } else if ends(&[".yaml", ".yml"]) {
            Some(Format::Yaml)
        } else if ends(&[".json"]) {
            Some(Format::Json)
        } else if ends(&[".config.js", ".config.cjs", ".config.mjs"]) {
            Some(Format::Ecosystem)
        } else {
            None
        }
    }
}

/// Loads a config file: every app resolved, or every error of the file at once. Relative
/// paths in the file are relative to the file's directory; errors name `path` as given.
pub fn load_file(path: &Path, ctx: &ResolveContext) -> Result<Vec<AppSpec>, ConfigErrors> {
    let fail = |e: ConfigError| ConfigErrors::new(vec![e], Some(path));
    // A name we do not recognise is read as TOML, the primary format.
    match Format::of(path).unwrap_or(Format::Toml) {
        Format::Toml => {}
        Format::Yaml | Format::Json | Format::Ecosystem => {
            return Err(fail(ConfigError::new("config format not supported yet").with_hint(
                "only TOML files (`herder.toml`) can be loaded for now; YAML, JSON and PM2 ecosystem files will follow",
            )));
        }
    }
    let abs = normalize(&ctx.cwd.join(path));
    let text = std::fs::read_to_string(&abs).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => "config file not found".to_string(),
            _ => format!("cannot read the config file: {}", lowercase_first(&e.to_string())),
        };
        fail(ConfigError::new(message))
    })?;
    let root = format_toml::parse(&text).map_err(fail)?;

    let mut errors = Vec::new();
    let decls = validate::apps(&root, &mut errors);
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let base = Base { dir, env: &ctx.env, source: Some(&abs), origin: Origin::File };
    let mut specs = Vec::with_capacity(decls.len());
    // Each app's name and where it is written, for the uniqueness check.
    let mut names: Vec<(String, Span)> = Vec::new();
    for decl in &decls {
        match resolve::resolve(decl, &base) {
            Ok(spec) => {
                names.push((spec.name.clone(), decl.name.as_ref().map_or(decl.span, |n| n.span)));
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
        Ok(specs)
    } else {
        Err(ConfigErrors::new(errors, Some(path)))
    }
}

/// One app from `herder start <script|"command string"> [flags]`: resolved against the
/// CLI's cwd (or `--cwd`), with the shell environment.
pub fn from_command(script: &str, ov: &Overrides, ctx: &ResolveContext) -> Result<AppSpec, ConfigErrors> {
    let mut errors = Vec::new();
    let decl = command::decl(script, ov, &mut errors);
    let base = Base { dir: &ctx.cwd, env: &ctx.env, source: None, origin: Origin::Flags };
    match resolve::resolve(&decl, &base) {
        Ok(spec) if errors.is_empty() => Ok(spec),
        Ok(_) => Err(ConfigErrors::new(errors, None)),
        Err(e) => {
            errors.extend(e);
            Err(ConfigErrors::new(errors, None))
        }
    }
}

/// Whether a `start` argument names a config file (by its name: `.toml`, `.yaml`, `.yml`,
/// `.json`, `.config.js`, `.config.cjs`, `.config.mjs`).
pub fn is_config_file(path: &Path) -> bool {
    Format::of(path).is_some()
}

/// io::Error messages start with a capital ("No such file or directory").
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

#[cfg(test)]
mod tests;
