//! Hooks: on events of an app, POST the event as JSON to a webhook or run a command, with a
//! timeout and retries. Deliveries run in tasks of their own, at most [`MAX_DELIVERIES`] at
//! once; a slow or dead receiver never delays supervision (past the limit, events are dropped
//! and logged, never queued without bound).

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use tokio::sync::{broadcast, Semaphore};

use super::{http, probe};
use crate::process::reaper::Reaper;
use crate::protocol::spec::{HookAction, HookSpec};
use crate::protocol::{AppSpec, Event};

/// Deliveries in flight at most.
pub const MAX_DELIVERIES: usize = 64;

/// Deliver every event to the hooks of its app until the channel closes. `spec_of` finds an
/// app's current spec by name.
pub async fn run<F>(mut events: broadcast::Receiver<Event>, spec_of: F, reaper: Reaper)
where
    F: Fn(&str) -> Option<Arc<AppSpec>>,
{
    let slots = Arc::new(Semaphore::new(MAX_DELIVERIES));
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "hooks fell behind; events skipped");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(spec) = spec_of(&event.app) else { continue };
        for hook in spec
            .hooks
            .iter()
            .filter(|h| h.events.is_empty() || h.events.iter().any(|k| k == event.kind.as_str()))
        {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(app = %event.app, kind = %event.kind, "too many hook deliveries in flight; this one is dropped");
                continue;
            };
            let (hook, event, spec, reaper) = (hook.clone(), event.clone(), spec.clone(), reaper.clone());
            tokio::spawn(async move {
                deliver(&hook, &event, &spec, &reaper).await;
                drop(slot);
            });
        }
    }
}

async fn deliver(hook: &HookSpec, event: &Event, spec: &AppSpec, reaper: &Reaper) {
    let json = serde_json::to_vec(event).unwrap_or_default();
    let timeout = Duration::from_millis(hook.timeout_ms);
    let mut pause = Duration::from_millis(200);
    for attempt in 0..=hook.retries {
        let outcome = match &hook.action {
            HookAction::Webhook(url) => {
                match tokio::time::timeout(timeout, http::request(url, Method::POST, Some(&json))).await {
                    Ok(Ok(code)) if (200..300).contains(&code) => Ok(()),
                    Ok(Ok(code)) => Err(format!("POST {url} answered {code}")),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("POST {url}: no answer within {} ms", hook.timeout_ms)),
                }
            }
            HookAction::Command(cmd) => {
                // As the app's `user`, never as the daemon in its place.
                let run_as = match crate::users::switch_for(spec.user.as_deref(), spec.group.as_deref()) {
                    Ok(account) => account.as_ref().map(crate::process::fork::Credentials::of),
                    Err(e) => {
                        tracing::warn!(app = %event.app, kind = %event.kind, error = %e, "hook not run");
                        return;
                    }
                };
                let mut env = (*spec.env).clone();
                env.insert("HERDER_EVENT".into(), String::from_utf8_lossy(&json).into_owned());
                env.insert("HERDER_EVENT_KIND".into(), event.kind.to_string());
                env.insert("HERDER_APP".into(), event.app.clone());
                match tokio::time::timeout(
                    timeout,
                    probe::exec(cmd, reaper, &spec.cwd, &env, run_as.as_ref()),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        Err(format!("`{}` did not finish within {} ms", cmd.join(" "), hook.timeout_ms))
                    }
                }
            }
        };
        match outcome {
            Ok(()) => return,
            Err(e) if attempt < hook.retries => {
                tracing::debug!(app = %event.app, kind = %event.kind, error = %e, attempt, "hook failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                tracing::warn!(app = %event.app, kind = %event.kind, error = %e, "hook failed");
            }
        }
    }
}
