//! The restart policy (DESIGN.md, Lifecycle) as a pure function of the spec, the policy's
//! memory and one exit, so it can be tested as a table.

use crate::protocol::spec::{BACKOFF_MAX_MS, BACKOFF_RESET_MS};
use crate::protocol::{AppSpec, ExitReason, Status};

/// What the policy remembers between exits of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Unstable runs in a row.
    pub unstable: u32,
    /// The last exponential backoff delay used, if any.
    pub backoff_ms: Option<u64>,
}

/// What to do after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Restart {
        delay_ms: u64,
    },
    /// Leave the instance in this state (`stopped` or `errored`), with a reason.
    Halt {
        status: Status,
        reason: Option<String>,
    },
}

/// Decide what follows `exit` after a run of `uptime_ms`.
pub fn on_exit(spec: &AppSpec, st: &mut PolicyState, exit: ExitReason, uptime_ms: u64) -> Decision {
    let code_stops = matches!(exit, ExitReason::Code(c) if spec.stop_exit_codes.contains(&c));
    if code_stops {
        // A listed code is how the app says it is done: a normal stop.
        let reason = match exit {
            ExitReason::Code(0) => None,
            other => Some(format!("exited with {other}, which `stop_exit_codes` lists: a normal stop")),
        };
        return Decision::Halt { status: Status::Stopped, reason };
    }
    if !spec.autorestart {
        return match exit {
            ExitReason::Code(0) => Decision::Halt { status: Status::Stopped, reason: None },
            other => Decision::Halt {
                status: Status::Errored,
                reason: Some(format!("exited with {other}; not restarted because `autorestart` is off")),
            },
        };
    }
    next_restart(spec, st, uptime_ms, &format!("last exit: {exit}"))
}

/// Decide what follows a restart for `max_memory_restart` after a run of `uptime_ms`. It
/// happens whatever `autorestart` says, but a run shorter than `min_uptime` is unstable like a
/// crash: an app whose memory is over the limit from its start ends `errored` instead of
/// restarting forever.
pub fn on_memory_restart(spec: &AppSpec, st: &mut PolicyState, uptime_ms: u64, why: &str) -> Decision {
    match next_restart(spec, st, uptime_ms, &format!("last: {why}")) {
        Decision::Halt { status, reason } => Decision::Halt {
            status,
            reason: reason.map(|r| {
                format!("{r}\nhint: the app's memory may be over `max_memory_restart` from its start")
            }),
        },
        restart => restart,
    }
}

/// Count the run as stable or not; past `max_restarts` unstable runs, halt, else restart after
/// the delay the spec sets.
fn next_restart(spec: &AppSpec, st: &mut PolicyState, uptime_ms: u64, last: &str) -> Decision {
    if uptime_ms < spec.min_uptime_ms {
        st.unstable += 1;
    } else {
        st.unstable = 0;
    }
    if st.unstable > spec.max_restarts {
        return Decision::Halt {
            status: Status::Errored,
            reason: Some(format!(
                "{} unstable runs in a row (each shorter than `min_uptime` {} ms, over `max_restarts` {}); {last}",
                st.unstable, spec.min_uptime_ms, spec.max_restarts
            )),
        };
    }
    let delay_ms = match spec.exp_backoff_restart_delay_ms {
        Some(first) => {
            if uptime_ms >= BACKOFF_RESET_MS {
                st.backoff_ms = None;
            }
            let next = match st.backoff_ms {
                None => first,
                Some(prev) => ((prev as f64 * 1.5) as u64).min(BACKOFF_MAX_MS).max(first.min(BACKOFF_MAX_MS)),
            };
            st.backoff_ms = Some(next);
            next
        }
        None => spec.restart_delay_ms,
    };
    Decision::Restart { delay_ms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec() -> AppSpec {
        AppSpec::new("t", "/bin/true", PathBuf::from("/"))
    }

    fn restart(delay_ms: u64) -> Decision {
        Decision::Restart { delay_ms }
    }

    #[test]
    fn table() {
        type Case = (&'static str, fn(&mut AppSpec), PolicyState, ExitReason, u64, Decision, u32);
        let cases: Vec<Case> = vec![
            (
                "crash restarts at once",
                |_| {},
                PolicyState::default(),
                ExitReason::Code(1),
                5_000,
                restart(0),
                0,
            ),
            ("kill -9 restarts", |_| {}, PolicyState::default(), ExitReason::Signal(9), 5_000, restart(0), 0),
            (
                "restart_delay applies",
                |s| s.restart_delay_ms = 250,
                PolicyState::default(),
                ExitReason::Code(1),
                5_000,
                restart(250),
                0,
            ),
            (
                "short run counts as unstable",
                |_| {},
                PolicyState::default(),
                ExitReason::Code(1),
                10,
                restart(0),
                1,
            ),
            (
                "a stable run resets the unstable count",
                |_| {},
                PolicyState { unstable: 5, backoff_ms: None },
                ExitReason::Code(1),
                5_000,
                restart(0),
                0,
            ),
            (
                "max_restarts unstable runs still restart",
                |s| s.max_restarts = 3,
                PolicyState { unstable: 2, backoff_ms: None },
                ExitReason::Code(1),
                10,
                restart(0),
                3,
            ),
            (
                "autorestart off, clean exit stops",
                |s| s.autorestart = false,
                PolicyState::default(),
                ExitReason::Code(0),
                10,
                Decision::Halt { status: Status::Stopped, reason: None },
                0,
            ),
            (
                "min_uptime 0 never counts a run as unstable",
                |s| s.min_uptime_ms = 0,
                PolicyState::default(),
                ExitReason::Code(1),
                0,
                restart(0),
                0,
            ),
        ];
        for (name, tweak, mut st, exit, uptime, want, want_unstable) in cases {
            let mut s = spec();
            tweak(&mut s);
            assert_eq!(on_exit(&s, &mut st, exit, uptime), want, "{name}");
            assert_eq!(st.unstable, want_unstable, "{name}");
        }
    }

    #[test]
    fn more_than_max_restarts_unstable_runs_is_errored() {
        let mut s = spec();
        s.max_restarts = 3;
        let mut st = PolicyState::default();
        for _ in 0..3 {
            assert_eq!(on_exit(&s, &mut st, ExitReason::Code(1), 5), restart(0));
        }
        let d = on_exit(&s, &mut st, ExitReason::Code(1), 5);
        assert!(
            matches!(d, Decision::Halt { status: Status::Errored, reason: Some(ref r) } if r.contains("code 1")),
            "{d:?}"
        );
    }

    #[test]
    fn memory_restarts_of_short_runs_end_errored_whatever_autorestart_says() {
        let mut s = spec();
        s.max_restarts = 2;
        s.autorestart = false;
        let mut st = PolicyState::default();
        let why = "memory 12.0 MiB over `max_memory_restart` (5.0 MiB)";
        // A long run is stable: restarted at once, however many times.
        for _ in 0..5 {
            assert_eq!(on_memory_restart(&s, &mut st, 5_000, why), restart(0));
        }
        assert_eq!(st.unstable, 0);
        for _ in 0..2 {
            assert_eq!(on_memory_restart(&s, &mut st, 10, why), restart(0));
        }
        match on_memory_restart(&s, &mut st, 10, why) {
            Decision::Halt { status: Status::Errored, reason: Some(r) } => {
                assert!(r.contains("3 unstable runs") && r.contains("over `max_memory_restart`"), "{r}")
            }
            d => panic!("{d:?}"),
        }
        // With a restart delay, unstable memory restarts wait like crashes.
        let mut s = spec();
        s.exp_backoff_restart_delay_ms = Some(100);
        let mut st = PolicyState::default();
        assert_eq!(on_memory_restart(&s, &mut st, 10, why), restart(100));
        assert_eq!(on_memory_restart(&s, &mut st, 10, why), restart(150));
    }

    #[test]
    fn stop_exit_codes_and_autorestart_off_halt() {
        let mut s = spec();
        s.stop_exit_codes = vec![0, 3];
        let mut st = PolicyState::default();
        assert!(matches!(
            on_exit(&s, &mut st, ExitReason::Code(3), 5_000),
            Decision::Halt { status: Status::Stopped, reason: Some(r) } if r.contains("stop_exit_codes")
        ));
        assert!(matches!(
            on_exit(&s, &mut st, ExitReason::Code(0), 5_000),
            Decision::Halt { status: Status::Stopped, .. }
        ));
        assert_eq!(on_exit(&s, &mut st, ExitReason::Code(2), 5_000), restart(0));
        s.autorestart = false;
        assert!(matches!(
            on_exit(&s, &mut st, ExitReason::Signal(9), 5_000),
            Decision::Halt { status: Status::Errored, .. }
        ));
    }

    #[test]
    fn exponential_backoff_grows_caps_and_resets() {
        let mut s = spec();
        s.exp_backoff_restart_delay_ms = Some(100);
        s.max_restarts = 1000;
        let mut st = PolicyState::default();
        let delays: Vec<u64> = (0..4)
            .map(|_| match on_exit(&s, &mut st, ExitReason::Code(1), 5) {
                Decision::Restart { delay_ms } => delay_ms,
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(delays, vec![100, 150, 225, 337]);
        for _ in 0..30 {
            on_exit(&s, &mut st, ExitReason::Code(1), 5);
        }
        assert_eq!(st.backoff_ms, Some(BACKOFF_MAX_MS));
        assert_eq!(on_exit(&s, &mut st, ExitReason::Code(1), BACKOFF_RESET_MS), restart(100));
    }
}
