//! Integration tests: the real `herder` binary, real processes, a temporary `HERDER_HOME`.

mod harness;

mod balancer;
mod cgroup_leaf;
mod chaos;
mod cluster;
mod config_errors;
mod config_formats;
mod container;
mod daemon;
mod doctor;
mod events;
mod generations;
mod health;
mod hooks;
mod lifecycle;
mod log_config;
mod logs;
mod metrics;
mod monit;
mod monitoring;
mod nofile;
mod persistence;
mod pm2;
mod pm2_flags;
mod pm2_verbs;
mod ready;
mod recovery;
mod secrets;
mod start_safety;
mod startup;
mod tree;
mod update;
mod user;
mod watch;
