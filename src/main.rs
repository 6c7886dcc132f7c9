//! The `herder` binary: parse, run, map to an exit code.

use std::process::ExitCode;

/// tokio's scheduler statistics are the program's only use of the C math library: defining
/// `pow` here (musl's, ported to Rust) keeps `libm.so` out of every herder process. Loading it
/// runs its ifunc resolvers, which page in ~600 KB of it that would count in the daemon's
/// resident memory, and costs every command its relocation.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

fn main() -> ExitCode {
    // The daemon is long-lived: start it without the argument parser, so that none of the
    // parser's code is paged into it (a few hundred KB of its resident memory).
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let [verb, rest @ ..] = args.as_slice() {
        let resurrect = match rest {
            [] => Some(false),
            [flag] if flag == "--resurrect" => Some(true),
            _ => None,
        };
        if let (true, Some(resurrect)) = (verb == "daemon", resurrect) {
            return match herder::cli::run_daemon(resurrect) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
    }
    let cli = match herder::cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::from(1);
        }
    };
    match herder::cli::run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
