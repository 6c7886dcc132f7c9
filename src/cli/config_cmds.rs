//! The commands about config files that need no daemon: `validate`, `init` and `convert`.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};

use super::args::{ConvertArgs, InitArgs, ValidateArgs};
use super::context::resolve_context;
use super::output::{config_failed, out, print_warnings};
use crate::config;

/// `herder validate <file>`: every error of the file, or a summary of its apps.
pub(super) fn validate(a: &ValidateArgs) -> Result<i32> {
    let ctx = resolve_context()?;
    let opts = config::LoadOptions { env_name: a.env_name.clone(), only: Vec::new(), ..Default::default() };
    match config::load(Path::new(&a.file), &opts, &ctx) {
        Ok(loaded) => {
            print_warnings(&loaded.warnings);
            let names: Vec<String> = loaded
                .specs
                .iter()
                .map(|s| {
                    if s.instances == 1 {
                        format!("`{}`", s.name)
                    } else {
                        format!("`{}` ×{}", s.name, s.instances)
                    }
                })
                .collect();
            out(&format!("{}: ok, {} app(s): {}\n", a.file, names.len(), names.join(", ")))?;
            Ok(0)
        }
        Err(errors) => config_failed(&errors),
    }
}

/// `herder init [file]`: a commented herder.toml, never over an existing file.
pub(super) fn init(a: &InitArgs) -> Result<i32> {
    use std::fs::OpenOptions;
    // PM2's `ecosystem simple` asks for its short template: herder has one.
    let file = if a.file == "simple" { "herder.toml" } else { a.file.as_str() };
    let a = &InitArgs { file: file.to_string() };
    let path = Path::new(&a.file);
    let file = OpenOptions::new().write(true).create_new(true).open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; herder init does not overwrite it\nhint: give another path: herder init apps.toml", a.file)
        }
        Err(e) => return Err(anyhow!("cannot create {}: {e}", a.file)),
    };
    file.write_all(config::INIT_TEMPLATE.as_bytes()).with_context(|| format!("cannot write {}", a.file))?;
    out(&format!("wrote {}; edit it, then run `herder start {}`\n", a.file, a.file))?;
    Ok(0)
}

/// `herder convert <file>`: the equivalent herder.toml on stdout.
pub(super) fn convert(a: &ConvertArgs) -> Result<i32> {
    let ctx = resolve_context()?;
    match config::convert_file(Path::new(&a.file), &ctx) {
        Ok((text, warnings)) => {
            print_warnings(&warnings);
            out(&text)?;
            Ok(0)
        }
        Err(errors) => config_failed(&errors),
    }
}
