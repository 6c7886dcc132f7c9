//! The `herder` binary: parse, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The daemon is long-lived: start it without the argument parser, so that none of the
    // parser's code is paged into it (a few hundred KB of its resident memory).
    let mut args = std::env::args_os().skip(1);
    if let (Some(verb), None) = (args.next(), args.next()) {
        if verb == "daemon" {
            return match herder::cli::run_daemon() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
    }
    let cli = herder::cli::Cli::parse();
    match herder::cli::run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
