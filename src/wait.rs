//! Waiting for a condition with a deadline, for the few places where the kernel offers no
//! event to wait on (a process group emptying, a lock let go, a file appearing): pauses that
//! double from a short first one up to a ceiling, so that a quick condition is seen at once
//! and a slow one costs few wake-ups.

use std::time::{Duration, Instant};

/// Doubling pauses until a deadline.
#[derive(Debug, Clone)]
pub struct Backoff {
    pause: Duration,
    max: Duration,
    deadline: Instant,
}

impl Backoff {
    /// Pauses from `first` doubling up to `max`, for `timeout` from now.
    pub fn new(timeout: Duration, first: Duration, max: Duration) -> Backoff {
        Backoff { pause: first, max, deadline: Instant::now() + timeout }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The next pause, cut to the deadline; `None` once it has passed.
    fn next(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(self.max);
        Some(pause)
    }

    /// Sleep the next pause (blocking the thread); false, without sleeping, once the deadline
    /// has passed.
    pub fn sleep(&mut self) -> bool {
        self.next().map(std::thread::sleep).is_some()
    }

    /// [`Backoff::sleep`] on the tokio timer.
    pub async fn sleep_async(&mut self) -> bool {
        match self.next() {
            Some(pause) => {
                tokio::time::sleep(pause).await;
                true
            }
            None => false,
        }
    }
}

/// Call `f` until it returns `Some` or `timeout` passes (`None`), blocking the thread between
/// calls. `f` is called once more at the deadline.
pub fn until<T>(
    timeout: Duration,
    first: Duration,
    max: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let mut backoff = Backoff::new(timeout, first, max);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if !backoff.sleep() {
            return f();
        }
    }
}

/// [`until`] on the tokio timer.
pub async fn until_async<T>(
    timeout: Duration,
    first: Duration,
    max: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let mut backoff = Backoff::new(timeout, first, max);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if !backoff.sleep_async().await {
            return f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_condition_met_at_once_costs_no_pause() {
        let start = Instant::now();
        assert_eq!(until(Duration::from_secs(5), MS, MS * 50, || Some(3)), Some(3));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_condition_is_polled_until_it_holds() {
        let mut calls = 0;
        let got = until(Duration::from_secs(5), MS, MS * 4, || {
            calls += 1;
            (calls == 4).then_some(calls)
        });
        assert_eq!(got, Some(4));
    }

    #[test]
    fn the_deadline_ends_the_wait_with_one_last_look() {
        let mut calls = 0;
        let got: Option<()> = until(MS * 20, MS, MS * 4, || {
            calls += 1;
            None
        });
        assert_eq!(got, None);
        assert!(calls >= 3, "{calls}");
        let mut b = Backoff::new(Duration::ZERO, MS, MS);
        assert!(b.expired());
        assert!(!b.sleep());
    }

    #[tokio::test]
    async fn the_async_wait_uses_the_timer() {
        let mut calls = 0;
        let got = until_async(Duration::from_secs(5), MS, MS * 2, || {
            calls += 1;
            (calls == 3).then_some("ok")
        })
        .await;
        assert_eq!(got, Some("ok"));
    }
}
