//! `watch`: restart an app when its files change.
//!
//! One inotify instance per watching instance, with a watch on every directory under the
//! watched paths except ignored ones, so that `node_modules` costs nothing; directories created
//! later are added as they appear. A change is reported once the files have been quiet for
//! `watch_delay` (at least [`MIN_QUIET`]), so an editor's save, a `git checkout` or a build is
//! one restart.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;

/// Changes closer together than this are one burst, whatever `watch_delay` says.
pub const MIN_QUIET: Duration = Duration::from_millis(100);

/// Names never watched: version control, dependencies, editors' scratch files.
const ALWAYS_IGNORED: &[&str] = &[".git", ".hg", ".svn", "node_modules", "__pycache__"];

/// What a watcher leaves out.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    /// Plain names: match any component of the path.
    names: Vec<String>,
    /// Globs: match the path relative to the app's `cwd` (or, with no `/`, a file name).
    globs: Vec<Glob>,
    /// Files and directories left out as a whole (the app's logs, herder's home).
    paths: Vec<PathBuf>,
    /// File names left out with anything that starts with them (rotated logs: `x.log.1.gz`).
    prefixes: Vec<(PathBuf, String)>,
    cwd: PathBuf,
}

impl Ignore {
    /// Whether `pattern` is usable in `ignore_watch`; the error says what is wrong.
    pub fn check(pattern: &str) -> Result<(), String> {
        if pattern.trim().is_empty() {
            return Err("it is empty".into());
        }
        Glob::parse(pattern).map(|_| ())
    }

    /// The rules for an app in `cwd`: `patterns` from `ignore_watch`, plus the defaults and
    /// `files` (its log files and herder's home).
    pub fn new(cwd: &Path, patterns: &[String], files: &[PathBuf], dirs: &[PathBuf]) -> Ignore {
        let mut ignore = Ignore { cwd: cwd.to_path_buf(), ..Ignore::default() };
        ignore.names = ALWAYS_IGNORED.iter().map(|s| s.to_string()).collect();
        for p in patterns {
            if p.contains(['*', '?', '[', '/']) {
                if let Ok(g) = Glob::parse(p.trim_start_matches("./")) {
                    ignore.globs.push(g);
                }
            } else {
                ignore.names.push(p.clone());
            }
        }
        ignore.paths = dirs.to_vec();
        for f in files {
            if let (Some(dir), Some(name)) = (f.parent(), f.file_name()) {
                ignore.prefixes.push((dir.to_path_buf(), name.to_string_lossy().into_owned()));
            }
        }
        ignore
    }

    /// Whether a change to `path` is to be ignored.
    pub fn matches(&self, path: &Path) -> bool {
        if self.paths.iter().any(|p| path.starts_with(p)) {
            return true;
        }
        let name = path.file_name().map(OsStr::to_string_lossy).unwrap_or_default();
        if is_scratch(&name) {
            return true;
        }
        if let Some(dir) = path.parent() {
            if self.prefixes.iter().any(|(d, n)| d == dir && name.starts_with(n.as_str())) {
                return true;
            }
        }
        let rel = path.strip_prefix(&self.cwd).unwrap_or(path);
        if rel
            .components()
            .any(|c| matches!(c, Component::Normal(n) if self.names.iter().any(|x| n == x.as_str())))
        {
            return true;
        }
        let rel_text = rel.to_string_lossy();
        self.globs.iter().any(|g| {
            if g.anchored {
                g.matches(&rel_text)
            } else {
                // A glob without `/` matches any component, like a name.
                rel.components().any(|c| g.matches(&c.as_os_str().to_string_lossy()))
            }
        })
    }
}

/// Editors' swap, backup and probe files: never a change worth a restart.
fn is_scratch(name: &str) -> bool {
    name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name == "4913"
        || (name.starts_with(".#"))
        || (name.starts_with('#') && name.ends_with('#'))
}

/// A shell-style glob: `*` and `?` within a path component, `**` across components,
/// `[abc]`, `[a-z]`, `[!a]`.
#[derive(Debug, Clone)]
struct Glob {
    tokens: Vec<Token>,
    /// It has a `/`: it matches the whole relative path.
    anchored: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    Any,
    Star,
    DoubleStar,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Glob {
    fn parse(pattern: &str) -> Result<Glob, String> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    // `**/` also matches no directory at all.
                    if chars.peek() == Some(&'/') {
                        chars.next();
                    }
                    tokens.push(Token::DoubleStar);
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::Any),
                '[' => {
                    let negated = matches!(chars.peek(), Some('!' | '^'));
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        if c == ']' && !ranges.is_empty() {
                            closed = true;
                            break;
                        }
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some(']') => {
                                    ranges.push((c, c));
                                    ranges.push(('-', '-'));
                                    closed = true;
                                    break;
                                }
                                Some(hi) if hi >= c => ranges.push((c, hi)),
                                Some(hi) => return Err(format!("the range `{c}-{hi}` is backwards")),
                                None => break,
                            }
                        } else {
                            ranges.push((c, c));
                        }
                    }
                    if !closed {
                        return Err("a `[` is not closed".into());
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                '\\' => tokens.push(Token::Char(chars.next().unwrap_or('\\'))),
                c => tokens.push(Token::Char(c)),
            }
        }
        Ok(Glob { anchored: pattern.contains('/'), tokens })
    }

    fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        glob_match(&self.tokens, &text)
    }
}

fn glob_match(tokens: &[Token], text: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else { return text.is_empty() };
    match first {
        Token::DoubleStar => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Token::Star => {
            let stop = text.iter().position(|c| *c == '/').unwrap_or(text.len());
            (0..=stop).any(|i| glob_match(rest, &text[i..]))
        }
        Token::Any => text.first().is_some_and(|c| *c != '/') && glob_match(rest, &text[1..]),
        Token::Char(c) => text.first() == Some(c) && glob_match(rest, &text[1..]),
        Token::Class { negated, ranges } => {
            text.first()
                .is_some_and(|c| *c != '/' && ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                && glob_match(rest, &text[1..])
        }
    }
}

/// The fd of an inotify instance, for tokio.
struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches an app's paths.
pub struct Watcher {
    fd: AsyncFd<Fd>,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    /// Watched directories: a change anywhere under them counts.
    trees: Vec<PathBuf>,
    /// Watched files: only changes to these count in their directories.
    files: Vec<PathBuf>,
    ignore: Ignore,
    /// Directories that could not be watched (the inotify watch limit): said once.
    pub note: Option<String>,
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl Watcher {
    /// Watch `roots` (directories, watched whole, or files) leaving out `ignore`. Must be
    /// called inside the tokio runtime.
    pub fn new(roots: &[PathBuf], ignore: Ignore) -> io::Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: the fd is the inotify instance's, owned by `Fd` and closed only with it.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(inotify), tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        let mut w =
            Watcher { fd, dirs: HashMap::new(), trees: Vec::new(), files: Vec::new(), ignore, note: None };
        for root in roots {
            if root.is_dir() || !root.exists() {
                // A path that does not exist yet is a directory to come (`dist`): its nearest
                // existing ancestor is watched until it appears.
                w.trees.push(root.clone());
                if root.is_dir() {
                    w.add_tree(root);
                } else {
                    w.watch_ancestor(root);
                }
            } else if let Some(dir) = root.parent() {
                // A file is watched through its directory: editors replace files by renaming.
                w.files.push(root.clone());
                w.add_dir(dir);
            }
        }
        if w.dirs.is_empty() {
            let shown: Vec<String> = roots.iter().map(|p| p.display().to_string()).collect();
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("nothing to watch in {}", shown.join(", ")),
            ));
        }
        Ok(w)
    }

    /// Watch the nearest existing ancestor of `path` (not its subdirectories), to see `path`
    /// appear.
    fn watch_ancestor(&mut self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d.is_dir() {
                self.add_dir(d);
                return;
            }
            dir = d.parent();
        }
    }

    /// How many directories are watched.
    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    fn add_dir(&mut self, dir: &Path) -> bool {
        match self.fd.get_ref().0.add_watch(dir, mask()) {
            Ok(wd) => {
                self.dirs.insert(wd, dir.to_path_buf());
                true
            }
            Err(nix::errno::Errno::ENOSPC) => {
                self.note.get_or_insert_with(|| {
                    format!(
                        "the inotify watch limit is reached (fs.inotify.max_user_watches); {} and what is under it are not watched",
                        dir.display()
                    )
                });
                false
            }
            Err(_) => false,
        }
    }

    fn add_tree(&mut self, root: &Path) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if self.ignore.matches(&dir) && dir != root || !self.add_dir(&dir) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                // Symlinks are not followed: a link to `/` must not watch the machine.
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }

    /// The next change that counts (the path that changed), waiting as long as it takes.
    pub async fn changed(&mut self) -> PathBuf {
        loop {
            if let Some(p) = self.read_now() {
                return p;
            }
            let Ok(mut guard) = self.fd.readable().await else { return std::future::pending().await };
            guard.clear_ready();
        }
    }

    /// A change that counts among the events queued now, if any; directories created are
    /// watched from now on.
    fn read_now(&mut self) -> Option<PathBuf> {
        let mut found = None;
        loop {
            let events = match self.fd.get_ref().0.read_events() {
                Ok(events) if !events.is_empty() => events,
                _ => return found,
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost, directories created meanwhile among them: watch every
                    // tree again (existing watches are kept) and count it as a change.
                    for root in self.trees.clone() {
                        if root.is_dir() {
                            self.add_tree(&root);
                        } else {
                            self.watch_ancestor(&root);
                        }
                    }
                    found.get_or_insert_with(|| {
                        self.trees.first().or(self.files.first()).cloned().unwrap_or_default()
                    });
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // A watched directory is gone: if it was a watched path itself, watch for it
                    // to come back (`rm -rf build && tsc`).
                    if let Some(dir) = self.dirs.remove(&ev.wd) {
                        if self.trees.contains(&dir) {
                            self.watch_ancestor(&dir);
                        }
                    }
                    continue;
                }
                let Some(dir) = self.dirs.get(&ev.wd).cloned() else { continue };
                let path = match &ev.name {
                    Some(name) => dir.join(name),
                    None => dir,
                };
                if self.ignore.matches(&path) {
                    continue;
                }
                if !self.files.contains(&path) && !self.trees.iter().any(|t| path.starts_with(t)) {
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_ISDIR)
                    && ev.mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                {
                    self.add_tree(&path);
                }
                found.get_or_insert(path);
            }
        }
    }

    /// Forget the changes queued so far (those the app made while restarting).
    pub fn drain(&mut self) {
        self.read_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(patterns: &[&str]) -> Ignore {
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Ignore::new(
            Path::new("/app"),
            &patterns,
            &[PathBuf::from("/app/logs/web.out.log")],
            &[PathBuf::from("/app/.herder")],
        )
    }

    #[test]
    fn defaults_leave_out_vcs_dependencies_logs_and_scratch_files() {
        let i = ignore(&[]);
        assert!(i.matches(Path::new("/app/.git/index")));
        assert!(i.matches(Path::new("/app/node_modules/x/index.js")));
        assert!(i.matches(Path::new("/app/logs/web.out.log")));
        assert!(i.matches(Path::new("/app/logs/web.out.log.1.gz")));
        assert!(i.matches(Path::new("/app/.herder/state.json")));
        assert!(i.matches(Path::new("/app/.server.js.swp")));
        assert!(i.matches(Path::new("/app/server.js~")));
        assert!(!i.matches(Path::new("/app/server.js")));
        assert!(!i.matches(Path::new("/app/.env")));
        assert!(!i.matches(Path::new("/app/logs/other.log")));
    }

    #[test]
    fn names_match_components_and_globs_match_paths() {
        let i = ignore(&["dist", "*.tmp", "src/**/*.gen.js", "./cache/*"]);
        assert!(i.matches(Path::new("/app/dist/a.js")));
        assert!(i.matches(Path::new("/app/src/dist/a.js")));
        assert!(!i.matches(Path::new("/app/distro/a.js")));
        assert!(i.matches(Path::new("/app/a/b/c.tmp")));
        assert!(i.matches(Path::new("/app/src/x.gen.js")));
        assert!(i.matches(Path::new("/app/src/a/b/x.gen.js")));
        assert!(!i.matches(Path::new("/app/lib/x.gen.js")));
        assert!(i.matches(Path::new("/app/cache/a")));
        assert!(!i.matches(Path::new("/app/cache/a/b")));
    }

    #[test]
    fn globs_parse_classes_and_reject_broken_ones() {
        let g = Glob::parse("[a-c]?.[!j]s").unwrap();
        assert!(g.matches("b1.ts"));
        assert!(!g.matches("b1.js"));
        assert!(!g.matches("d1.ts"));
        assert!(Ignore::check("[abc").is_err());
        assert!(Ignore::check("[z-a]").is_err());
        assert!(Ignore::check(" ").is_err());
        assert!(Ignore::check("**/*.log").is_ok());
    }
}
