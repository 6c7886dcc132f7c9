//! Capture of app output: each instance's stdout and stderr are pipes read by the daemon and
//! appended to `logs/<name>-<instance>.out.log` / `.err.log`.
//!
//! Readers hold no buffer of their own while they wait: a pipe is awaited for readability,
//! then drained through one per-thread buffer straight into the file, so idle apps cost the
//! daemon no memory and busy ones move data in large chunks.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use tokio::net::unix::pipe;

use crate::paths::Paths;

/// Size of the per-thread copy buffer.
const CHUNK: usize = 256 * 1024;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A name made safe for a file name: anything but `[A-Za-z0-9._-]` becomes `-`.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect()
}

/// The stdout and stderr log paths of one instance.
pub fn instance_paths(paths: &Paths, name: &str, index: u32) -> (PathBuf, PathBuf) {
    let base = format!("{}-{index}", file_safe(name));
    let dir = paths.logs_dir();
    (dir.join(format!("{base}.out.log")), dir.join(format!("{base}.err.log")))
}

/// Open a log file for appending (0640), creating it.
pub fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

/// Copy everything read from `pipe_fd` to `file` until the pipe closes.
pub fn capture(pipe_fd: OwnedFd, mut file: File, app: &str, index: u32) {
    let app = app.to_string();
    let rx = match pipe::Receiver::from_owned_fd(pipe_fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(app = %app, instance = index, error = %e, "cannot read the app's output");
            return;
        }
    };
    tokio::spawn(async move {
        let mut write_failed = false;
        loop {
            if rx.readable().await.is_err() {
                return;
            }
            let done = BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                if buf.len() < CHUNK {
                    buf.resize(CHUNK, 0);
                }
                // Bounded, so one flooding app cannot starve the others on this thread.
                for _ in 0..16 {
                    match rx.try_read(&mut buf) {
                        Ok(0) => return true,
                        Ok(n) => {
                            if let Err(e) = file.write_all(&buf[..n]) {
                                if !write_failed {
                                    tracing::error!(app = %app, instance = index, error = %e, "cannot write the app's log");
                                    write_failed = true;
                                }
                            } else {
                                write_failed = false;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return true,
                    }
                }
                false
            });
            if done {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_file_safe() {
        assert_eq!(file_safe("api/v1 web"), "api-v1-web");
        assert_eq!(file_safe("web.app_1-x"), "web.app_1-x");
    }
}
