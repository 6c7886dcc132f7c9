//! `herder export`: every shipped config and every PM2 ecosystem fixture, exported to each
//! engine, passes that engine's own validator, and the values read back are the mapped ones.
//!
//! The validators come from `HERDER_TEST_VENV` (a Python venv holding pip's
//! `kubernetes-validate` and `check-jsonschema`; `.ci/run` makes one and sets it), else from
//! where `.ci/run` makes it. Without them the tests fail, saying how to get them.

mod compose;
mod kubernetes;
mod systemd;

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::*;

/// Where `.ci/run` makes the venv.
fn cached_venv() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    let venv = cache.join("herder-ci/venv");
    venv.join("bin/python").exists().then_some(venv)
}

/// A validator from the venv: `kubernetes-validate`, `check-jsonschema`.
pub fn tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("HERDER_TEST_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(cached_venv);
    let bin = venv.map(|v| v.join("bin").join(name));
    match bin {
        Some(b) if b.is_file() => b,
        _ => panic!(
            "these tests need `{name}`: set HERDER_TEST_VENV to a venv holding it, or make one where they look:\n  \
             python3 -m venv \"${{XDG_CACHE_HOME:-$HOME/.cache}}/herder-ci/venv\" && \
             \"${{XDG_CACHE_HOME:-$HOME/.cache}}/herder-ci/venv/bin/pip\" install kubernetes-validate check-jsonschema\n\
             (.ci/run does both)"
        ),
    }
}

/// Every config the exports must take: the shipped examples, and the PM2 ecosystem files of
/// the fixtures (the formats herder reads).
pub fn configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = vec![root.join("examples/quickstart.toml")];
    let mut dirs = vec![root.join("examples"), root.join("tests/fixtures/ecosystem")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
            } else if (name.starts_with("ecosystem.") || name == "apps.json" || name.ends_with(".toml"))
                && !found.contains(&path)
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `config` ready to export in `h`: the Go example runs `./server`, which `go build` makes;
/// where it is not built, a copy of the example gets a stand-in (the export does not run it).
pub fn prepare(h: &TestHome, config: &Path) -> PathBuf {
    let dir = config.parent().unwrap();
    if !dir.join("main.go").is_file() || dir.join("server").is_file() {
        return config.to_path_buf();
    }
    let copy = h.dir.path().join("go-example");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    }
    let server = copy.join("server");
    std::fs::write(&server, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&server, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    copy.join(config.file_name().unwrap())
}

/// Run `herder export` from the config's folder (as a user would), with `args`.
pub fn export(h: &TestHome, config: &Path, args: &[&str]) -> Output {
    let mut c = h.cmd(args);
    c.arg(config).current_dir(config.parent().unwrap());
    c.output().unwrap()
}

/// Run a validator on `file`; panics with its output when it fails.
pub fn validate(what: &str, mut cmd: std::process::Command, file: &Path) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} rejects {}:\n{}{}\n--- the file:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// Parse YAML (one or several documents) into JSON values with the venv's Python, which
/// `kubernetes-validate` brings PyYAML to: the test reads the output as an engine would.
pub fn read_yaml(file: &Path) -> Vec<serde_json::Value> {
    let python = tool("python");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
