//! `herder export kubernetes|compose|systemd [config]`: the config's apps, resolved as `start`
//! resolves them, as an engine's own files (see [`crate::export`]).

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::args::{ExportArgs, ExportTarget};
use super::context::{resolve_context, DEFAULT_CONFIG_FILES};
use super::output::{config_failed, out, print_warnings};
use crate::config;
use crate::export::{self, Target};

pub(super) fn export(a: &ExportArgs) -> Result<i32> {
    let ctx = resolve_context()?;
    let file = match &a.file {
        Some(f) => f.clone(),
        None => DEFAULT_CONFIG_FILES
            .iter()
            .find(|f| ctx.cwd.join(f).is_file())
            .map(|f| f.to_string())
            .ok_or_else(|| {
                anyhow!("no config file here to export\nhint: give one: herder export kubernetes herder.toml")
            })?,
    };
    // The output runs elsewhere: the apps get what the file declares, not this shell's
    // environment.
    let opts =
        config::LoadOptions { env_name: a.env_name.clone(), only: a.only.clone(), file_env_only: true };
    let loaded = match config::load(Path::new(&file), &opts, &ctx) {
        Ok(l) => l,
        Err(errors) => return config_failed(&errors),
    };
    print_warnings(&loaded.warnings);
    let target = match a.target {
        ExportTarget::Kubernetes => Target::Kubernetes,
        ExportTarget::Compose => Target::Compose,
        ExportTarget::Systemd => Target::Systemd,
    };
    let options = export::Options {
        image: a.image.clone(),
        include_secrets: a.include_secrets,
        cron_jobs: a.cron_jobs,
        cpus: config::cpu_count(),
    };
    let made = export::export(target, &loaded.specs, &options);
    for n in &made.notes {
        eprintln!("warning: {}: {n}", target.name());
    }
    for r in &made.refused {
        eprintln!("error: {}: {r}; nothing is written for it", target.name());
    }
    match &a.output {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for f in &made.files {
                let path = dir.join(&f.name);
                std::fs::write(&path, &f.text).with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        None => {
            let separator = match target {
                Target::Kubernetes | Target::Compose => "---\n",
                Target::Systemd => "\n",
            };
            let mut text = String::new();
            for (i, f) in made.files.iter().enumerate() {
                if i > 0 {
                    text.push_str(separator);
                }
                if target == Target::Systemd {
                    text.push_str(&format!("# {}\n", f.name));
                }
                text.push_str(&f.text);
            }
            out(&text)?;
        }
    }
    Ok(if made.refused.is_empty() { 0 } else { 1 })
}
