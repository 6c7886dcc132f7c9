//! `herder events`: supervision events as they happen.

use anyhow::{bail, Result};

use super::output::out;
use super::{render, update};
use crate::client::{self, Client};
use crate::paths::Paths;
use crate::protocol::{Request, Response};

/// `herder events`: print events as they happen, one per line, until interrupted.
pub(super) async fn events(paths: &Paths, json: bool) -> Result<i32> {
    let mut c = Client::connect(paths, true).await?;
    c.send(&Request::Events).await?;
    loop {
        let next = match c.next().await {
            Err(client::ClientError::Closed { .. })
                if update::replaced_in_place(paths, c.daemon_pid).await =>
            {
                bail!("{}", update::STREAM_ENDED_BY_UPDATE)
            }
            next => next?,
        };
        match next {
            Response::Event(e) => {
                let line = if json { serde_json::to_string(&e)? } else { render::event(&e) };
                out(&(line + "\n"))?;
            }
            Response::Error(e) => bail!("{}", e.message),
            _ => {}
        }
    }
}
