//! `herder list` and `herder show`: the app table and one app's detail, as text or JSON.

use anyhow::{anyhow, bail, Result};

use super::args::{ListArgs, ShowArgs};
use super::output::{expect_ok, out};
use super::render;
use crate::client;
use crate::paths::Paths;
use crate::protocol::{Request, Response, Target};

pub(super) async fn list(paths: &Paths, f: ListArgs) -> Result<i32> {
    let sort = f.sort.as_deref().map(render::SortKey::parse).transpose().map_err(|e| anyhow!(e))?;
    let req = if f.json { Request::List } else { Request::ListBrief };
    let Response::List { mut apps, warnings } = expect_ok(client::call(paths, &req).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    if let Some(key) = sort {
        key.sort(&mut apps);
    }

    if f.json {
        out(&(serde_json::to_string_pretty(&apps)? + "\n"))?;
        // The JSON stays the array of apps that scripts read; the warning goes beside it.
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    } else {
        let mut text = render::table(&apps);
        for w in &warnings {
            text.push_str(&format!("warning: {w}\n"));
        }
        out(&text)?;
    }
    Ok(0)
}

pub(super) async fn show(paths: &Paths, a: ShowArgs) -> Result<i32> {
    let Response::Show { mut app } =
        expect_ok(client::call(paths, &Request::Show { target: Target::parse(&a.target) }).await?)?
    else {
        bail!("unexpected answer from the daemon");
    };
    if !a.show_secrets {
        *app = app.masked();
    }
    if a.json {
        out(&(serde_json::to_string_pretty(&app)? + "\n"))?;
    } else {
        out(&render::show(&app))?;
    }
    Ok(0)
}
