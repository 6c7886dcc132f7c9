//! PM2 flags that herder does not take as they are: read before the argument parser, so that
//! each gets its own answer instead of "unexpected argument".
//!
//! Some turn off something herder never does (`--no-pmx`: herder injects nothing into apps);
//! they are accepted with a note on stderr, so that scripts written for PM2 keep working.
//! The others ask for something herder does differently; they are refused with what to use
//! instead. Flags herder implements (`--max-memory-restart`, `--cron`, `-f` …) are clap's.

use std::ffi::OsString;

/// What herder does with a PM2 flag.
enum Answer {
    /// Accepted and dropped, with this note.
    Accept(&'static str),
    /// `-s/--silent`: accepted; the command prints nothing on stdout.
    Silent,
    /// `--no-color`: accepted; as `NO_COLOR` does, it turns off the colours of `logs`.
    NoColor,
    /// Refused: why, and what to use.
    Refuse(&'static str),
}

struct Pm2Flag {
    names: &'static [&'static str],
    /// It takes a value (`--parallel 4`).
    takes_value: bool,
    /// The verbs it applies to; empty: every verb.
    verbs: &'static [&'static str],
    answer: Answer,
}

const FLAGS: &[Pm2Flag] = &[
    Pm2Flag {
        names: &["--no-vizion"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Accept("`--no-vizion`: herder reads no git metadata of apps; there is nothing to turn off"),
    },
    Pm2Flag {
        names: &["--no-pmx", "--no-automation"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Accept(
            "`--no-pmx`: herder loads nothing into apps (its metrics come from /proc and cgroups); there is nothing to turn off",
        ),
    },
    Pm2Flag {
        names: &["-x", "--execute-command"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Accept("`-x`: every app runs as its own process (PM2's fork mode) already"),
    },
    Pm2Flag {
        names: &["--disable-source-map-support"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Accept("`--disable-source-map-support`: herder turns on no source maps; there is nothing to turn off"),
    },
    Pm2Flag {
        names: &["--parallel"],
        takes_value: true,
        verbs: &[],
        answer: Answer::Accept("`--parallel`: herder acts on all the apps named at once"),
    },
    Pm2Flag { names: &["-s", "--silent"], takes_value: false, verbs: &[], answer: Answer::Silent },
    Pm2Flag { names: &["--no-color"], takes_value: false, verbs: &[], answer: Answer::NoColor },
    Pm2Flag {
        names: &["--no-treekill"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Refuse(
            "`--no-treekill`: herder always stops an app's whole process tree (its cgroup), so that nothing it started is left running\nhint: to signal the main process alone, use `herder signal SIGTERM <app>`",
        ),
    },
    Pm2Flag {
        names: &["--source-map-support"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Refuse(
            "`--source-map-support`: herder passes Node's own flag instead\nhint: --node-args=\"--enable-source-maps\"",
        ),
    },
    Pm2Flag {
        names: &["--trace", "--disable-trace", "--v8", "--event-loop-inspector", "--deep-monitoring"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Refuse(
            "PM2 Plus's APM instrumentation is not part of herder: it loads nothing into apps\nhint: CPU, memory and restarts are in `herder monit`, `herder metrics` (Prometheus) and `herder events`",
        ),
    },
    Pm2Flag {
        names: &["--ext"],
        takes_value: true,
        verbs: &[],
        answer: Answer::Refuse(
            "`--ext`: herder watches paths, not extensions\nhint: --watch=src,lib --ignore-watch '*.log' (a name or a glob, repeatable)",
        ),
    },
    Pm2Flag {
        names: &["--attach"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Refuse("`--attach`: herder starts the app and returns\nhint: then `herder logs <app>` follows its output"),
    },
    Pm2Flag {
        names: &["-w", "--write"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Refuse(
            "`--write`: herder keeps no per-app JSON file\nhint: `herder show <app> --json` prints the app's settings; `herder save` records every app for `resurrect`",
        ),
    },
    Pm2Flag {
        names: &["--container", "--dist", "--image-name", "--node-version", "--fresh", "--dockerdaemon"],
        takes_value: false,
        verbs: &[],
        answer: Answer::Refuse(
            "herder does not build container images\nhint: in your own image, run `herder run herder.toml` as PID 1 (see docs/deployment.md)",
        ),
    },
    Pm2Flag {
        names: &["--highlight"],
        takes_value: false,
        verbs: &["logs", "log"],
        answer: Answer::Refuse("`--highlight`: herder's `logs` does not highlight\nhint: herder logs <app> | grep --color=always -e WORD -e ''"),
    },
    Pm2Flag {
        names: &["--format"],
        takes_value: false,
        verbs: &["logs", "log"],
        answer: Answer::Refuse("`--format`: herder's `logs` prints `name | line`, `--raw` the lines alone, `--json` one object per line\nhint: herder logs <app> --raw"),
    },
    Pm2Flag {
        names: &["--hp"],
        takes_value: true,
        verbs: &["startup", "unstartup"],
        answer: Answer::Refuse(
            "`--hp`: herder's unit takes the home of the user it runs as from its passwd entry\nhint: `herder startup --run-as USER`",
        ),
    },
    Pm2Flag {
        names: &["-u"],
        takes_value: true,
        verbs: &["startup", "unstartup"],
        answer: Answer::Refuse("`-u USER`: herder names the user with `--run-as`\nhint: `herder startup --run-as USER`"),
    },
    Pm2Flag {
        names: &["--service-name"],
        takes_value: true,
        verbs: &["startup", "unstartup"],
        answer: Answer::Refuse(
            "`--service-name`: herder's unit is always `herder.service`\nhint: `herder startup --unit-dir DIR` writes it elsewhere; `herder startup` prints where it wrote it",
        ),
    },
    Pm2Flag {
        names: &["--watch"],
        takes_value: false,
        verbs: &["stop"],
        answer: Answer::Accept("`--watch`: herder stops watching every app it stops; `herder start <app>` watches it again"),
    },
    Pm2Flag {
        names: &["--watch"],
        takes_value: false,
        verbs: &["restart"],
        answer: Answer::Refuse(
            "`--watch` on restart: in herder, watching is part of the app's spec, not a switch of `restart`\nhint: set `watch` in the config and `herder restart <config file>`, or `herder start <script> --watch -f` to replace the app with a watched one",
        ),
    },
    Pm2Flag {
        names: &["--wait-ip"],
        takes_value: false,
        verbs: &["startup"],
        answer: Answer::Accept(
            "`--wait-ip`: herder's system unit already starts after `network-online.target` (an address is up)",
        ),
    },
];

/// Whether `word` reads as a dayjs time format (`HH:mm:ss`, `YYYY-MM-DD`) rather than an app
/// name: only format letters and separators, with at least one two-letter token.
fn is_time_format(word: &str) -> bool {
    let letters = |c: char| "YMDHhmsSZAa".contains(c);
    word.chars().all(|c| letters(c) || " -:/.T[],".contains(c))
        && ["YY", "MM", "DD", "HH", "hh", "mm", "ss"].iter().any(|t| word.contains(t))
}

/// The init systems `startup` names (PM2's `startup [platform]`).
const PLATFORMS: &[&str] = &["systemd", "upstart", "launchd", "openrc", "rcd", "systemv", "smf"];

/// The arguments for the parser, and what the PM2 flags among them asked for.
#[derive(Debug, Default)]
pub struct Read {
    pub args: Vec<OsString>,
    pub notes: Vec<&'static str>,
    pub silent: bool,
    pub no_color: bool,
}

/// Take the PM2 flags out of `args` (the program's name first); `Err` says why one is refused.
pub fn read(args: Vec<OsString>) -> Result<Read, String> {
    let mut read = Read::default();
    let mut iter = args.into_iter();
    read.args.extend(iter.next());
    let mut verb: Option<String> = None;
    let mut rest = false;
    while let Some(arg) = iter.next() {
        let text = arg.to_str().map(str::to_string);
        let Some(text) = text.filter(|_| !rest) else {
            read.args.push(arg);
            continue;
        };
        if text == "--" {
            rest = true;
            read.args.push(arg);
            continue;
        }
        if verb.is_none() && !text.starts_with('-') {
            verb = Some(text.clone());
        }
        let (name, inline_value) = match text.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (text.clone(), None),
        };
        if name == "--user"
            && inline_value.is_none()
            && matches!(verb.as_deref(), Some("startup" | "unstartup"))
        {
            let value = iter.as_slice().first().and_then(|a| a.to_str()).filter(|a| !a.starts_with('-'));
            if let Some(user) = value.filter(|v| !PLATFORMS.contains(v)) {
                return Err(format!(
                    "`--user {user}`: herder names the account a system unit runs as with `--run-as`; `--user` alone writes a unit for your own user's systemd\nhint: `herder startup --run-as {user}`"
                ));
            }
        }
        // PM2's `logs --timestamp [format]` takes the format after a space; herder's needs `=`.
        if name == "--timestamp" && inline_value.is_none() && matches!(verb.as_deref(), Some("logs" | "log"))
        {
            let format = iter.as_slice().first().and_then(|a| a.to_str()).filter(|a| is_time_format(a));
            if let Some(format) = format.map(str::to_string) {
                iter.next();
                read.args.push(format!("--timestamp={format}").into());
                continue;
            }
        }
        let found = FLAGS.iter().find(|f| {
            f.names.contains(&name.as_str())
                && (f.verbs.is_empty() || verb.as_deref().is_some_and(|v| f.verbs.contains(&v)))
        });
        let Some(flag) = found else {
            read.args.push(arg);
            continue;
        };
        if flag.takes_value && inline_value.is_none() {
            // The value is the next word, unless it is another flag.
            let next = iter.as_slice().first().and_then(|a| a.to_str()).is_some_and(|a| !a.starts_with('-'));
            if next {
                iter.next();
            }
        }
        match &flag.answer {
            Answer::Accept(note) => read.notes.push(note),
            Answer::Silent => read.silent = true,
            Answer::NoColor => read.no_color = true,
            Answer::Refuse(why) => return Err((*why).to_string()),
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        std::iter::once("herder").chain(words.iter().copied()).map(OsString::from).collect()
    }

    #[test]
    fn accepted_flags_leave_the_rest_for_the_parser() {
        let r =
            read(args(&["start", "app.js", "--no-pmx", "--parallel", "4", "-s", "--name", "api"])).unwrap();
        assert_eq!(r.args, args(&["start", "app.js", "--name", "api"]));
        assert!(r.silent);
        assert_eq!(r.notes.len(), 2);
        let r = read(args(&["restart", "all", "--parallel=2"])).unwrap();
        assert_eq!(r.args, args(&["restart", "all"]));
    }

    #[test]
    fn refused_flags_say_what_to_use() {
        let e = read(args(&["start", "app.js", "--no-treekill"])).unwrap_err();
        assert!(e.contains("herder signal"), "{e}");
        let e = read(args(&["start", "app.js", "--ext", "js,json"])).unwrap_err();
        assert!(e.contains("--ignore-watch"), "{e}");
        let e = read(args(&["startup", "-u", "deploy", "--hp", "/home/deploy"])).unwrap_err();
        assert!(e.contains("--run-as"), "{e}");
        let r = read(args(&["startup", "--wait-ip"])).unwrap();
        assert_eq!((r.args, r.notes.len()), (args(&["startup"]), 1));
    }

    #[test]
    fn flags_after_the_separator_belong_to_the_app_and_scoped_flags_to_their_verbs() {
        let r = read(args(&["start", "app.js", "--", "--no-treekill", "-s"])).unwrap();
        assert_eq!(r.args, args(&["start", "app.js", "--", "--no-treekill", "-s"]));
        assert!(!r.silent);
        // `-u` is PM2's startup user; elsewhere it is left to the parser.
        let r = read(args(&["start", "app.js", "-u", "x"])).unwrap();
        assert_eq!(r.args, args(&["start", "app.js", "-u", "x"]));
    }

    #[test]
    fn pm2s_spellings_of_watch_user_and_timestamp() {
        let r = read(args(&["stop", "api", "--watch"])).unwrap();
        assert_eq!((r.args, r.notes.len()), (args(&["stop", "api"]), 1));
        let e = read(args(&["restart", "api", "--watch"])).unwrap_err();
        assert!(e.contains("`watch`"), "{e}");
        let e = read(args(&["startup", "--user", "deploy"])).unwrap_err();
        assert!(e.contains("--run-as deploy"), "{e}");
        // herder's own `--user` (a user unit) stays the parser's.
        let r = read(args(&["startup", "--user"])).unwrap();
        assert_eq!(r.args, args(&["startup", "--user"]));
        let r = read(args(&["startup", "--user", "systemd"])).unwrap();
        assert_eq!(r.args, args(&["startup", "--user", "systemd"]));
        let r = read(args(&["logs", "--timestamp", "HH:mm:ss", "api"])).unwrap();
        assert_eq!(r.args, args(&["logs", "--timestamp=HH:mm:ss", "api"]));
        let r = read(args(&["logs", "--timestamp", "comms"])).unwrap();
        assert_eq!(r.args, args(&["logs", "--timestamp", "comms"]), "an app name stays a target");
    }
}
