//! `herder web`: start (`--listen`), stop (`--off`) or locate the web dashboard; `--token`
//! prints a login URL.

use anyhow::{bail, Result};

use super::args::WebArgs;
use super::output::{expect_ok, out};
use crate::client;
use crate::paths::Paths;
use crate::protocol::{Request, Response};

pub(super) async fn web(paths: &Paths, a: WebArgs) -> Result<i32> {
    let req = Request::Web { listen: a.listen.clone(), off: a.off };
    let Response::Web { listen, token, warning } = expect_ok(client::call(paths, &req).await?)? else {
        bail!("unexpected answer from the daemon");
    };
    if let Some(w) = &warning {
        eprintln!("warning: {w}");
    }
    let text = match (listen, a.off) {
        (_, true) => "web dashboard stopped\n".to_string(),
        (None, _) => {
            "the web dashboard is off\nhint: `herder web --listen` serves it at http://127.0.0.1:9615/\n"
                .to_string()
        }
        (Some(addr), _) => match (a.token, token) {
            (true, Some(token)) => format!("http://{addr}/login?token={token}\n"),
            _ => format!("web dashboard at http://{addr}/\nhint: `herder web --token` prints a login URL\n"),
        },
    };
    out(&text)?;
    Ok(0)
}
