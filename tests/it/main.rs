//! Integration tests: the real `herder` binary, real processes, a temporary `HERDER_HOME`.

mod harness;

mod config_errors;
mod config_formats;
mod daemon;
mod doctor;
mod events;
mod health;
mod hooks;
mod lifecycle;
mod log_config;
mod logs;
mod metrics;
mod monit;
mod monitoring;
mod ready;
mod recovery;
mod tree;
mod update;
mod watch;
