//! PM2's `ecosystem.config.{js,cjs,mjs}`: evaluated by the local `node`, whose JSON output is
//! read into the spanned [`Value`] tree; positions are then found again in the JS source, so
//! errors still name a line and a column.
//!
//! The loader uses a dynamic `import()` of the file's URL, which loads CommonJS and ES modules
//! alike, also inside a `"type": "module"` package (where PM2's `require` fails). A file that
//! uses `module.exports` inside such a package is evaluated as CommonJS. Both `module.exports`
//! and `export default` (or named exports such as `export const apps`) work.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::format_json;
use super::value::{Kind, LineIndex, Span, Value};
use super::ConfigError;

/// How long a config file may take to evaluate.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Marks the loader's own output line, after whatever the config printed itself.
const MARK: &str = "@@herder-config@@";

/// The loader, run from a temporary `.cjs` file: `node -e` would define `module`, `require` and
/// every built-in module as globals, which an ES module using `module.exports` would silently
/// write to instead of failing.
const LOADER: &str = r#"
const file = process.argv[2];
const MARK = '@@herder-config@@';
const req = require;
const { pathToFileURL } = req('url');
const fs = req('fs');
const path = req('path');
function emit(kind, value) {
  const replacer = (k, v) => (v instanceof RegExp ? v.source : typeof v === 'bigint' ? Number(v) : v);
  process.stdout.write('\n' + MARK + kind + '\n' + JSON.stringify(value, replacer) + '\n');
}
function locate(err) {
  const out = { message: String(err && err.message !== undefined ? err.message : err), name: err && err.name };
  const stack = String((err && err.stack) || '');
  const files = [file, pathToFileURL(file).href];
  if (err && err.name === 'SyntaxError') {
    // The parser's own position: `node --check` prints `file:LINE`, the line, and a caret.
    const r = req('child_process').spawnSync(process.execPath, ['--check', file], { encoding: 'utf8' });
    const m = /^(.*):(\d+)\r?\n(.*)\r?\n( *)\^/m.exec(r.stderr || '') || /^(.*):(\d+)\r?\n(.*)\r?\n( *)\^/m.exec(stack);
    if (m) { out.file = m[1].replace(/^file:\/\//, ''); out.line = +m[2]; out.column = m[4].length + 1; return out; }
  }
  const frames = [...stack.matchAll(/\(?((?:file:\/\/)?\/[^\s():]+):(\d+):(\d+)\)?/g)];
  // Where it was thrown, in the user's code: the first frame outside node's internals and
  // outside node_modules (else the config file's own frame).
  const own = frames.find((f) => !f[1].startsWith('node:') && !f[1].includes('/node_modules/'))
    || frames.find((f) => files.includes(f[1]));
  if (own) { out.file = own[1].replace(/^file:\/\//, ''); out.line = +own[2]; out.column = +own[3]; }
  return out;
}
(async () => {
  let ns;
  try {
    ns = await import(pathToFileURL(file).href);
  } catch (e) {
    if (!/(module|exports|require) is not defined in ES module scope/.test(String(e && e.message))) return emit('error', locate(e));
    // CommonJS syntax inside a "type": "module" package: evaluate it as CommonJS.
    const Module = req('module');
    const m = new Module(file, null);
    m.filename = file;
    m.paths = Module._nodeModulePaths(path.dirname(file));
    try { m._compile(fs.readFileSync(file, 'utf8'), file); } catch (e2) { return emit('error', locate(e2)); }
    ns = { default: m.exports };
  }
  let config = ns.default !== undefined ? ns.default : { ...ns };
  try {
    if (config && typeof config.then === 'function') config = await config;
    if (typeof config === 'function') config = await config();
  } catch (e) { return emit('error', locate(e)); }
  emit('ok', config === undefined ? null : config);
})();
"#;

/// The loader script in the temporary directory, removed on drop.
struct LoaderFile(PathBuf);

impl LoaderFile {
    fn create() -> std::io::Result<LoaderFile> {
        use std::io::Write;
        let dir = std::env::temp_dir();
        let mut attempt = 0u32;
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = dir.join(format!("herder-config-loader-{}-{nanos}-{attempt}.cjs", std::process::id()));
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(LOADER.as_bytes())?;
                    return Ok(LoaderFile(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for LoaderFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(serde::Deserialize)]
struct ThrownError {
    message: String,
    name: Option<String>,
    file: Option<PathBuf>,
    line: Option<usize>,
    column: Option<usize>,
}

/// The `node` that evaluates config files: `HERDER_NODE` if set, else `node` in `PATH`.
fn find_node(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(node) = env.get("HERDER_NODE").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(node));
    }
    let path = env.get("PATH").map_or("/usr/local/bin:/usr/bin:/bin", String::as_str);
    path.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join("node")).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Evaluates `file` (absolute) with `node` in `cwd` with `env`, and reads what it exports.
/// Errors in the config file itself carry no file name (the caller adds it); errors located in
/// another file (a module it requires) name that file.
pub fn load(
    file: &Path,
    source: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Value, ConfigError> {
    let Some(node) = find_node(env) else {
        return Err(ConfigError::new("cannot evaluate a JavaScript config: `node` was not found in PATH")
            .with_hint(
                "install Node.js, or set HERDER_NODE to its path, or write the config as herder.toml",
            ));
    };
    let loader =
        LoaderFile::create().map_err(|e| ConfigError::new(format!("cannot write the config loader: {e}")))?;
    let mut child = Command::new(&node)
        .arg(&loader.0)
        .arg(file)
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ConfigError::new(format!("cannot run `{}` to evaluate the config: {e}", node.display()))
                .with_hint("install Node.js, or set HERDER_NODE to its path")
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let err_reader = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err);
        err
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ConfigError::new(format!(
                "evaluating the config with node took longer than {}s",
                TIMEOUT.as_secs()
            ))
            .with_hint("a config file must export its apps, not start work that keeps node running"));
        }
    };
    let status = child.wait().ok();
    let err_text = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let out = String::from_utf8_lossy(&out);
    let Some(payload) = out.rfind(&format!("\n{MARK}")).map(|i| &out[i + 1 + MARK.len()..]) else {
        let last = err_text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let code =
            status.and_then(|s| s.code()).map_or_else(|| "a signal".to_string(), |c| format!("code {c}"));
        let mut message = format!("node exited ({code}) before the config was read");
        if !last.is_empty() {
            message.push_str(&format!(": {last}"));
        }
        return Err(ConfigError::new(message).with_hint("does the file call `process.exit()`?"));
    };
    let (kind, json) = payload.split_once('\n').unwrap_or((payload, ""));
    match kind {
        "ok" => {
            let mut value = format_json::parse(json.trim()).map_err(|e| {
                ConfigError::new(format!("cannot read what node printed for the config: {}", e.message))
            })?;
            relocate(&mut value, source);
            Ok(value)
        }
        _ => {
            let thrown: ThrownError = serde_json::from_str(json.trim()).map_err(|_| {
                ConfigError::new("evaluating the config with node failed")
                    .with_hint(err_text.trim().to_string())
            })?;
            let what = thrown.name.filter(|n| !n.is_empty()).unwrap_or_else(|| "Error".to_string());
            let what = if what == "SyntaxError" {
                "syntax error".to_string()
            } else {
                format!("the config threw {what}")
            };
            let mut e = ConfigError::new(format!("{what}: {}", thrown.message.trim()));
            if let (Some(line), Some(column)) = (thrown.line, thrown.column) {
                e = e.at(Span::new(line, column));
            } else if let Some(line) = thrown.line {
                e.line = Some(line);
            }
            if let Some(other) = thrown.file.filter(|f| f != file) {
                e = e.in_file(&other);
            }
            Err(e)
        }
    }
}

/// Gives the nodes of `value` (read from node's JSON) the positions of the same keys in the
/// JS source: each key is searched for after the previous one (JSON keeps the source's order),
/// then anywhere (a key defined in a shared object earlier in the file); values get the
/// position after their key's colon. What cannot be found keeps no position.
pub fn relocate(value: &mut Value, source: &str) {
    let masked = mask_comments(source);
    let index = LineIndex::new(source);
    let mut r = Relocator { text: &masked, index: &index };
    clear(value);
    let mut cursor = 0;
    r.node(value, &mut cursor, None);
    if !value.span.is_known() {
        value.span = Span::new(1, 1);
    }
}

fn clear(value: &mut Value) {
    value.span = Span::UNKNOWN;
    match &mut value.kind {
        Kind::Array(items) => items.iter_mut().for_each(clear),
        Kind::Table(t) => t.entries.iter_mut().for_each(|e| {
            e.key_span = Span::UNKNOWN;
            clear(&mut e.value);
        }),
        _ => {}
    }
}

struct Relocator<'a> {
    text: &'a str,
    index: &'a LineIndex<'a>,
}

impl Relocator<'_> {
    /// `at`: where the value's text starts, if known.
    fn node(&mut self, value: &mut Value, cursor: &mut usize, at: Option<usize>) {
        if let Some(at) = at {
            value.span = self.index.span(at);
        }
        match &mut value.kind {
            Kind::Table(table) => {
                let mut first = None;
                for entry in &mut table.entries {
                    let found = self
                        .find_key(&entry.key, *cursor)
                        .map(|p| (p, true))
                        .or_else(|| self.find_key(&entry.key, 0).map(|p| (p, false)));
                    let Some(((key_at, value_at), in_order)) = found else { continue };
                    entry.key_span = self.index.span(key_at);
                    first.get_or_insert(key_at);
                    let mut inner = value_at;
                    self.node(&mut entry.value, &mut inner, Some(value_at));
                    if in_order {
                        *cursor = inner.max(value_at);
                    }
                }
                if at.is_none() {
                    if let Some(first) = first {
                        value.span = self.index.span(self.open_brace_before(first));
                    }
                }
            }
            Kind::Array(items) => {
                let span = value.span;
                for item in items {
                    self.node(item, cursor, None);
                    if !item.span.is_known() {
                        item.span = span;
                    }
                }
            }
            _ => {}
        }
    }

    /// The `{` that opens the object whose first key is at `key_at` (or the key itself).
    fn open_brace_before(&self, key_at: usize) -> usize {
        let before = self.text[..key_at].trim_end();
        if before.ends_with('{') {
            before.len() - 1
        } else {
            key_at
        }
    }

    /// The key written as `key:`, `"key":`, `'key':` or a shorthand `key,`; returns where the
    /// key and its value start.
    fn find_key(&self, key: &str, from: usize) -> Option<(usize, usize)> {
        if key.is_empty() {
            return None;
        }
        let bytes = self.text.as_bytes();
        let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
        let mut start = from.min(self.text.len());
        while let Some(found) = self.text.get(start..).and_then(|s| s.find(key)) {
            let at = start + found;
            let end = at + key.len();
            start = at + 1;
            while !self.text.is_char_boundary(start) {
                start += 1;
            }
            let quote = at.checked_sub(1).map(|i| bytes[i]).filter(|b| matches!(b, b'"' | b'\'' | b'`'));
            if let Some(q) = quote {
                if bytes.get(end) != Some(&q) {
                    continue;
                }
            } else if at.checked_sub(1).is_some_and(|i| is_ident(bytes[i]) || bytes[i] == b'.')
                || bytes.get(end).is_some_and(|b| is_ident(*b))
            {
                continue;
            }
            let key_at = if quote.is_some() { at - 1 } else { at };
            let after = if quote.is_some() { end + 1 } else { end };
            let rest = &self.text[after..];
            let trimmed = rest.trim_start();
            let gap = rest.len() - trimmed.len();
            if let Some(value) = trimmed.strip_prefix(':') {
                let value_gap = value.len() - value.trim_start().len();
                return Some((key_at, after + gap + 1 + value_gap));
            }
            if quote.is_none() && (trimmed.starts_with(',') || trimmed.starts_with('}')) {
                return Some((key_at, key_at));
            }
        }
        None
    }
}

/// The source with comments blanked out (same length, line breaks kept), so that a key named
/// in a comment is not taken for the real one.
fn mask_comments(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == q || (b == b'\n' && q != b'`') {
                quote = None;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' | b'\'' | b'`' => quote = Some(b),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = source[i + 2..].find("*/").map_or(bytes.len(), |e| i + 2 + e + 2);
                for o in &mut out[i..end] {
                    if *o != b'\n' {
                        *o = b' ';
                    }
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    // Only ASCII bytes were replaced, by ASCII, outside multi-byte characters.
    String::from_utf8(out).unwrap_or_else(|_| source.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::value::Entry;

    fn entry<'a>(v: &'a Value, key: &str) -> &'a Entry {
        let Kind::Table(t) = &v.kind else { panic!("not a table: {v:?}") };
        t.entries.iter().find(|e| e.key == key).expect(key)
    }

    #[test]
    fn relocation_finds_keys_in_order() {
        let source = "// name: nope\nconst common = { NODE_ENV: 'x' };\nmodule.exports = {\n  apps: [\n    { name: 'a', script: \"a.js\", env: common },\n    {\n      'name': 'b',\n      max_restarts: 'ten',\n    },\n  ],\n};\n";
        let mut v = format_json::parse(
            r#"{"apps":[{"name":"a","script":"a.js","env":{"NODE_ENV":"x"}},{"name":"b","max_restarts":"ten"}]}"#,
        )
        .unwrap();
        relocate(&mut v, source);
        let Kind::Array(apps) = &entry(&v, "apps").value.kind else { panic!() };
        assert_eq!(entry(&apps[0], "name").key_span, Span::new(5, 7));
        assert_eq!(apps[0].span, Span::new(5, 5));
        assert_eq!(entry(&apps[0], "script").value.span, Span::new(5, 26));
        // A shared object defined earlier in the file.
        assert_eq!(entry(&entry(&apps[0], "env").value, "NODE_ENV").key_span, Span::new(2, 18));
        assert_eq!(entry(&apps[1], "name").key_span, Span::new(7, 7));
        assert_eq!(entry(&apps[1], "max_restarts").value.span, Span::new(8, 21));
    }

    #[test]
    fn comments_are_masked() {
        let masked = mask_comments("a // b\n/* c\n d */ e 'x // y'");
        assert_eq!(masked, "a     \n    \n      e 'x // y'");
    }
}
