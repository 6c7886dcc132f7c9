//! herder: a process manager for production services on Linux.
//!
//! The `herder` binary is a thin client ([`cli`], [`client`]) that talks to one daemon per
//! `HERDER_HOME` ([`daemon`]) over a Unix socket ([`protocol`]). The daemon supervises each
//! instance of each app with its own task ([`supervisor`]) on top of process primitives
//! ([`process`]) and captures its output ([`logs`]). `herder monit` is a terminal client ([`tui`]).

pub mod balancer;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod export;
pub mod health;
pub mod human;
pub mod logs;
pub mod paths;
pub mod process;
pub mod protocol;
pub mod supervisor;
pub mod tui;
pub mod users;
pub mod wait;
pub mod web;
