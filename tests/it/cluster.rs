//! Cluster mode: the daemon binds an app's port once and every instance serves it (socket
//! activation), unchanged Node apps through herder's preload, other languages on fd 3; reload
//! replaces each instance with one that is ready first, and fails no request.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster").join(path)
}

/// A port no one listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `GET /` on its own connection: the body, or why not.
fn get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("read: {e}"))?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {text:?}"));
    }
    Ok(text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// The pid in a body of the example servers ("hello from pid 123 …").
fn pid_of(body: &str) -> u32 {
    body.split_whitespace().nth(3).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{body:?}"))
}

/// Requests in a loop from two threads until stopped: (answered, failures).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    /// Two clients that open a connection per request, and two that keep theirs open (as
    /// browsers and `wrk` do) and open a new one only when the server closes it.
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let threads = (0..4)
            .map(|n| {
                let (stop, ok) = (stop.clone(), ok.clone());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    let mut conn: Option<KeepAlive> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let answer = if n % 2 == 0 { get(port) } else { KeepAlive::get(&mut conn, port) };
                        match answer {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.push(e),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }

    /// Stop, and fail the test if any request failed; the requests answered.
    fn finish_without_failures(self) -> usize {
        let (ok, failures) = self.finish();
        assert!(
            failures.is_empty(),
            "{} failed of {}: {:?}",
            failures.len(),
            ok + failures.len(),
            &failures[..failures.len().min(5)]
        );
        ok
    }
}

/// Wait until requests to `port` have reached every one of `pids` (`tries` requests a round).
fn wait_until_each_answers(port: u16, pids: &BTreeSet<u32>, tries: usize, what: &str) {
    let mut seen = BTreeSet::new();
    wait_for(what, T, || {
        for _ in 0..tries {
            if let Ok(body) = get(port) {
                seen.insert(pid_of(&body));
            }
        }
        (seen == *pids).then_some(())
    });
}

/// A keep-alive connection, reading answers by their `Content-Length`.
struct KeepAlive {
    stream: std::io::BufReader<TcpStream>,
}

impl KeepAlive {
    /// One `GET /` on the open connection (opened first if there is none); the connection is
    /// dropped when the answer says `Connection: close`. A failure on a connection that was
    /// open is a failed request, as for any client.
    fn get(conn: &mut Option<KeepAlive>, port: u16) -> Result<String, String> {
        use std::io::BufRead;
        if conn.is_none() {
            let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            *conn = Some(KeepAlive { stream: std::io::BufReader::new(s) });
        }
        let c = conn.as_mut().unwrap();
        let result = (|| {
            c.stream
                .get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                .map_err(|e| format!("keep-alive write: {e}"))?;
            let (mut length, mut close, mut status) = (0usize, false, String::new());
            loop {
                let mut line = String::new();
                if c.stream.read_line(&mut line).map_err(|e| format!("keep-alive read: {e}"))? == 0 {
                    return Err("keep-alive: closed before an answer".to_string());
                }
                let line = line.trim_end();
                if status.is_empty() {
                    status = line.to_string();
                } else if line.is_empty() {
                    break;
                } else if let Some((k, v)) = line.split_once(':') {
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => length = v.trim().parse().unwrap_or(0),
                        "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            c.stream.read_exact(&mut body).map_err(|e| format!("keep-alive body: {e}"))?;
            if !status.starts_with("HTTP/1.1 200") {
                return Err(format!("keep-alive answer: {status}"));
            }
            Ok((String::from_utf8_lossy(&body).into_owned(), close))
        })();
        match result {
            Ok((body, close)) => {
                if close {
                    *conn = None;
                }
                Ok(body)
            }
            Err(e) => {
                *conn = None;
                Err(e)
            }
        }
    }
}

/// The ecosystem file of a typical deployment guide, on `port`.
fn ecosystem(h: &TestHome, port: u16) -> PathBuf {
    std::fs::copy(example("node/server.js"), h.dir.path().join("server.js")).unwrap();
    let text = std::fs::read_to_string(example("node/ecosystem.config.js"))
        .unwrap()
        .replace("3000", &port.to_string());
    h.write("ecosystem.config.js", &text)
}

#[test]
fn a_pm2_cluster_file_runs_unchanged_and_every_instance_serves_the_port() {
    let h = TestHome::new();
    let port = free_port();
    let file = ecosystem(&h, port);
    let out = h.ok(&["start", file.to_str().unwrap(), "--env", "production"]);
    assert!(out.contains("cluster"), "list shows the mode: {out}");
    let app = h.wait_status("api", Status::Online, T);
    assert_eq!(app.instances.len(), 3);
    assert_eq!(app.spec.sockets.len(), 1);
    let pids: BTreeSet<u32> = app.instances.iter().map(|i| i.pid.unwrap()).collect();
    // Each instance answers once it listens; a few hundred requests reach all of them.
    wait_until_each_answers(port, &pids, 100, "every instance to answer");
    let show = h.ok(&["show", "api"]);
    assert!(show.contains("sockets") && show.contains(&port.to_string()), "{show}");
}

#[test]
fn reload_replaces_every_instance_and_fails_no_request() {
    let h = TestHome::new();
    let port = free_port();
    let file = ecosystem(&h, port);
    h.ok(&["start", file.to_str().unwrap()]);
    let before: BTreeSet<u32> =
        h.wait_status("api", Status::Online, T).instances.iter().map(|i| i.pid.unwrap()).collect();
    wait_for("the app to answer", T, || get(port).ok());
    let (_follower, events) = follow_events(&h);
    let load = Load::start(port);
    let mut all_pids = before.clone();
    for round in 0..3 {
        let out = h.ok(&["reload", "api"]);
        assert!(out.contains("reloaded `api`"), "{out}");
        let now: BTreeSet<u32> = h.app("api").instances.iter().map(|i| i.pid.unwrap()).collect();
        assert_eq!(now.len(), 3);
        assert!(now.is_disjoint(&all_pids), "round {round}: every instance is new: {now:?} {all_pids:?}");
        all_pids.extend(now);
    }
    let ok = load.finish_without_failures();
    assert!(ok > 50, "the load ran: {ok}");
    // A `reload` event per replaced instance.
    let reloads = std::iter::from_fn(|| events.recv_timeout(Duration::from_secs(5)).ok())
        .filter(|e| e["kind"] == "reload")
        .take(9)
        .count();
    assert_eq!(reloads, 9, "three reloads of three instances");
    // The old processes are gone.
    for pid in before {
        assert!(!pid_alive(pid), "{pid}");
    }
}

#[test]
fn a_python_app_serves_on_fd_3_and_reloads_without_failures() {
    let h = TestHome::new();
    let port = free_port();
    let text = format!(
        "[[apps]]\nname = \"py\"\nscript = \"{}\"\ninstances = 2\nport = {port}\n",
        example("python/server.py").display()
    );
    let file = h.write("herder.toml", &text);
    h.ok(&["start", file.to_str().unwrap()]);
    let app = h.wait_status("py", Status::Online, T);
    let pids: BTreeSet<u32> = app.instances.iter().map(|i| i.pid.unwrap()).collect();
    wait_until_each_answers(port, &pids, 50, "both instances to answer");
    let load = Load::start(port);
    h.ok(&["reload", "py"]);
    load.finish_without_failures();
    let now: BTreeSet<u32> = h.app("py").instances.iter().map(|i| i.pid.unwrap()).collect();
    assert!(now.is_disjoint(&pids));
}

#[test]
fn a_replacement_that_is_never_ready_stops_the_reload_and_the_old_instances_serve() {
    let h = TestHome::new();
    let port = free_port();
    let flag = h.dir.path().join("hang");
    // Ready at once, unless the flag file exists: then it listens but never says so.
    let script = h.write(
        "app.js",
        &format!(
            "const http = require('http');\n\
             http.createServer((q, s) => s.end(`hello from pid ${{process.pid}}`)).listen(Number(process.env.PORT), () => {{\n\
             \x20 if (!require('fs').existsSync({:?})) process.send('ready');\n\
             }});\n",
            flag.to_str().unwrap()
        ),
    );
    let text = format!(
        "[[apps]]\nname = \"web\"\nscript = \"{}\"\ninstances = 2\nport = {port}\nwait_ready = true\nlisten_timeout = \"4s\"\n",
        script.display()
    );
    h.ok(&["start", h.write("herder.toml", &text).to_str().unwrap()]);
    let before: Vec<u32> =
        h.wait_status("web", Status::Online, T).instances.iter().map(|i| i.pid.unwrap()).collect();
    std::fs::write(&flag, "").unwrap();
    let started = std::time::Instant::now();
    let err = h.fails(&["reload", "web"]);
    // Within `listen_timeout` and a margin.
    assert!(started.elapsed() < Duration::from_secs(12), "{:?}", started.elapsed());
    assert!(err.contains("`web` instance 0"), "{err}");
    assert!(err.contains("listen_timeout"), "{err}");
    let app = h.app("web");
    assert_eq!(app.instances.iter().map(|i| i.pid.unwrap()).collect::<Vec<_>>(), before);
    for _ in 0..20 {
        let body = get(port).unwrap();
        assert!(before.contains(&pid_of(&body)), "{body}");
    }
}

#[test]
fn a_taken_port_is_an_error_naming_its_holder_and_nothing_starts() {
    let h = TestHome::new();
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let text = format!(
        "[[apps]]\nname = \"web\"\nscript = \"{}\"\ninstances = 2\nport = {port}\n",
        example("node/server.js").display()
    );
    let err = h.fails(&["start", h.write("herder.toml", &text).to_str().unwrap()]);
    assert!(err.contains(&format!("port {port} is taken by pid {}", std::process::id())), "{err}");
    assert!(h.list().is_empty());
}

#[test]
fn the_socket_outlives_the_instances_and_a_daemon_update() {
    let h = TestHome::new();
    let port = free_port();
    let file = ecosystem(&h, port);
    h.ok(&["start", file.to_str().unwrap()]);
    let app = h.wait_status("api", Status::Online, T);
    wait_for("the app to answer", T, || get(port).ok());
    // Every instance killed at once: connections wait in the socket's queue until the
    // instances are back, none is refused.
    for i in &app.instances {
        // SAFETY: kill(2) on the test's own app.
        unsafe { libc::kill(i.pid.unwrap() as i32, libc::SIGKILL) };
    }
    for _ in 0..10 {
        get(port).expect("served after the restart");
    }
    let spread = |h: &TestHome| {
        let shown = h.ok(&["show", "api"]);
        let line = shown.lines().find(|l| l.contains("new connections"));
        line.map_or_else(|| "show names no spread".to_string(), str::to_string)
    };
    let before = spread(&h);
    let load = Load::start(port);
    h.ok(&["update"]);
    load.finish_without_failures();
    assert_eq!(spread(&h), before, "the new daemon steers the group as the old one did");
    // Deleted, the app gives its port back.
    h.ok(&["delete", "api"]);
    wait_for("the port to be free", T, || std::net::TcpListener::bind(("0.0.0.0", port)).ok());
}

#[test]
fn each_instance_has_its_own_id_and_a_number_targets_that_instance_alone() {
    let h = TestHome::new();
    let idle = fixture("idle.sh");
    h.ok(&["start", idle.to_str().unwrap(), "--name", "many", "-i", "3"]);
    h.ok(&["start", idle.to_str().unwrap(), "--name", "one"]);
    let many = h.wait_status("many", Status::Online, T);
    let ids: Vec<u32> = many.instances.iter().map(|i| i.id.unwrap()).collect();
    assert_eq!(ids[0], many.id, "the first instance's id is the app's");
    let one = h.app("one");
    let mut all = ids.clone();
    all.push(one.instances[0].id.unwrap());
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 4, "ids are unique: {all:?}");
    let table = h.ok(&["list"]);
    for id in &all {
        assert!(table.lines().any(|l| l.starts_with(&format!("{id} "))), "{id} in:\n{table}");
    }
    // `stop <id>` stops that instance alone, and says so; the name targets them all.
    let out = h.ok(&["stop", &ids[1].to_string()]);
    assert!(out.starts_with("stopped `many:1`\n"), "{out}");
    let many = h.app("many");
    let statuses: Vec<Status> = many.instances.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [Status::Online, Status::Stopped, Status::Online]);
    let out = h.ok(&["restart", &ids[1].to_string(), &ids[2].to_string()]);
    assert!(out.starts_with("restarted `many:1`, `many:2`\n"), "{out}");
    h.wait_status("many", Status::Online, T);
    let out = h.ok(&["restart", &ids[1].to_string(), "many"]);
    assert!(out.starts_with("restarted `many`\n"), "the whole app when a target names it: {out}");
    h.wait_status("many", Status::Online, T);
    let err = h.fails(&["delete", &ids[2].to_string()]);
    assert!(err.contains("herder scale many -1"), "{err}");
    // The ids survive the daemon's crash and its update.
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the daemon to die", T, || (!pid_alive(daemon)).then_some(()));
    let after: Vec<u32> =
        h.wait_status("many", Status::Online, T).instances.iter().map(|i| i.id.unwrap()).collect();
    assert_eq!(after, ids);
    h.ok(&["update"]);
    let after: Vec<u32> = h.app("many").instances.iter().map(|i| i.id.unwrap()).collect();
    assert_eq!(after, ids);
}

#[test]
fn scale_changes_the_count_live_without_a_failed_request_and_save_records_it() {
    let h = TestHome::new();
    let port = free_port();
    let text = format!(
        "[[apps]]\nname = \"api\"\nscript = \"{}\"\ninstances = 2\nport = {port}\n",
        example("node/server.js").display()
    );
    h.ok(&["start", h.write("herder.toml", &text).to_str().unwrap()]);
    let first: Vec<u32> =
        h.wait_status("api", Status::Online, T).instances.iter().map(|i| i.pid.unwrap()).collect();
    wait_for("the app to answer", T, || get(port).ok());
    let load = Load::start(port);
    let out = h.ok(&["scale", "api", "6"]);
    assert!(out.contains("scaled `api` from 2 to 6"), "{out}");
    let six = h.wait_status("api", Status::Online, T);
    assert_eq!(six.instances.len(), 6);
    let kept: Vec<u32> = six.instances[..2].iter().map(|i| i.pid.unwrap()).collect();
    assert_eq!(kept, first, "the instances there are untouched");
    let out = h.ok(&["scale", "api", "-4"]);
    assert!(out.contains("from 6 to 2"), "{out}");
    load.finish_without_failures();
    let two = h.app("api");
    assert_eq!(two.instances.len(), 2);
    assert_eq!(two.spec.instances, 2);
    h.ok(&["save"]);
    h.ok(&["delete", "api"]);
    h.ok(&["resurrect"]);
    assert_eq!(h.wait_status("api", Status::Online, T).instances.len(), 2, "save recorded the count");
    assert!(h.fails(&["scale", "api", "zero"]).contains("`zero` is not a count"));
}

/// The pids of every instance of `app`.
fn pids(h: &TestHome, app: &str) -> Vec<u32> {
    h.app(app).instances.iter().map(|i| i.pid.unwrap()).collect()
}

#[test]
fn apply_changes_only_what_changed_and_a_second_apply_nothing() {
    let h = TestHome::new();
    let idle = fixture("idle.sh");
    let file = |a_env: &str, b_count: u32, with_c: bool| {
        let mut text = format!(
            "[[apps]]\nname = \"a\"\nscript = \"{0}\"\nenv = {{ MODE = \"{a_env}\" }}\n\n\
             [[apps]]\nname = \"b\"\nscript = \"{0}\"\ninstances = {b_count}\n",
            idle.display()
        );
        if with_c {
            text.push_str(&format!("\n[[apps]]\nname = \"c\"\nscript = \"{}\"\n", idle.display()));
        }
        h.write("apps.toml", &text)
    };
    let path = file("one", 2, true);
    let path = path.to_str().unwrap();
    let out = h.ok(&["apply", path]);
    assert!(
        out.contains("started `a`") && out.contains("started `b`") && out.contains("started `c`"),
        "{out}"
    );
    for app in ["a", "b", "c"] {
        h.wait_status(app, Status::Online, T);
    }
    let (a, b, c) = (pids(&h, "a"), pids(&h, "b"), pids(&h, "c"));

    file("two", 3, true);
    let plan = h.ok(&["apply", path, "--dry-run"]);
    assert!(
        plan.contains("reload `a` (changed: env)") && plan.contains("scale `b` (2 → 3 instances)"),
        "{plan}"
    );
    assert_eq!((pids(&h, "a"), pids(&h, "b").len()), (a.clone(), 2), "a dry run changes nothing");
    let out = h.ok(&["apply", path]);
    assert!(
        out.contains("reloaded `a`") && out.contains("scaled `b`") && out.contains("unchanged `c`"),
        "{out}"
    );
    h.wait_status("b", Status::Online, T);
    assert_ne!(pids(&h, "a"), a, "a was reloaded");
    let b3 = pids(&h, "b");
    assert_eq!((b3.len(), &b3[..2]), (3, &b[..]), "b rescaled, its instances untouched");
    assert_eq!(pids(&h, "c"), c, "c untouched");

    let (a2, b2) = (pids(&h, "a"), pids(&h, "b"));
    let out = h.ok(&["apply", path]);
    assert!(["a", "b", "c"].iter().all(|n| out.contains(&format!("unchanged `{n}`"))), "{out}");
    assert_eq!(
        (pids(&h, "a"), pids(&h, "b"), pids(&h, "c")),
        (a2, b2, c.clone()),
        "a second apply changes nothing"
    );

    file("two", 3, false);
    let out = h.ok(&["apply", path, "--prune"]);
    assert!(out.contains("deleted `c`"), "{out}");
    assert!(h.list().iter().all(|x| x.spec.name != "c"));
}

#[test]
fn connections_spread_evenly_over_the_instances() {
    let h = TestHome::new();
    let port = free_port();
    let text = format!(
        "[[apps]]\nname = \"api\"\nscript = \"{}\"\ninstances = 4\nport = {port}\n",
        example("node/server.js").display()
    );
    h.ok(&["start", h.write("herder.toml", &text).to_str().unwrap()]);
    let app = h.wait_status("api", Status::Online, T);
    let pids: BTreeSet<u32> = app.instances.iter().map(|i| i.pid.unwrap()).collect();
    // Every instance listens before the count begins.
    wait_until_each_answers(port, &pids, 50, "every instance to answer");
    // Where the daemon can load eBPF (CAP_BPF, Linux 5.10 on) the kernel hands new
    // connections to the instances in turn: exactly even. Elsewhere it spreads them by a hash
    // of the client's port: even on average, so more connections and looser bounds.
    let shown = h.ok(&["show", "api"]);
    let round_robin = shown.contains("new connections round-robin");
    assert!(
        round_robin || shown.contains("new connections by a hash of the client's port"),
        "show says how connections are spread: {shown}"
    );
    let n = if round_robin { 64 } else { 400 };
    let fair = |counts: &std::collections::BTreeMap<u32, usize>, what: &str| {
        assert_eq!(counts.len(), 4, "{what}: {counts:?}");
        eprintln!("{what}: {counts:?} (round-robin: {round_robin})");
        if round_robin {
            assert!(counts.values().all(|c| *c == n / 4), "{what}: {n} in turn over 4 instances: {counts:?}");
        } else {
            assert!(
                counts.values().all(|c| (n * 6 / 40..=n * 14 / 40).contains(c)),
                "{what}: {n} over 4 instances, each within 0.6x-1.4x of {}: {counts:?}",
                n / 4
            );
        }
    };
    // Connections open at once (keep-alive clients): each asks once who serves it.
    let mut conns: Vec<TcpStream> =
        (0..n).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let mut counts = std::collections::BTreeMap::new();
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let got = c.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..got]);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        *counts.entry(pid_of(body)).or_insert(0) += 1;
    }
    fair(&counts, "keep-alive connections");
    drop(conns);
    // Clients that each close after one request.
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        *counts.entry(pid_of(&get(port).unwrap())).or_insert(0) += 1;
    }
    fair(&counts, "one request per connection");
}

/// An unchanged Node app in cluster mode that listens on a port herder was not told of (no
/// `port`, no `PORT`): the preload asks the daemon for it over the IPC channel, and every
/// instance serves it on one socket the daemon holds, through restarts, a reload and an update.
#[test]
fn a_node_app_that_listens_on_a_port_it_was_not_given_shares_it() {
    let h = TestHome::new();
    let port = free_port();
    h.write(
        "server.js",
        &format!(
            r#"const http = require('http');
process.on('message', (m) => console.error('the app saw a message: ' + JSON.stringify(m)));
http.createServer((req, res) => res.end(`hello from pid ${{process.pid}}\n`)).listen({port});
"#
        ),
    );
    let file = h.write(
        "ecosystem.config.js",
        "module.exports = { apps: [{ name: 'web', script: './server.js', instances: 3, exec_mode: 'cluster' }] };\n",
    );
    let out = h.ok(&["start", file.to_str().unwrap()]);
    assert!(out.contains("cluster"), "list shows the mode: {out}");
    let every_instance_answers = |what: &str| {
        let pids: BTreeSet<u32> =
            h.wait_status("web", Status::Online, T).instances.iter().map(|i| i.pid.unwrap()).collect();
        assert_eq!(pids.len(), 3, "{what}");
        wait_until_each_answers(port, &pids, 100, &format!("every instance to answer ({what})"));
    };
    every_instance_answers("after the start");
    let app = h.app("web");
    assert!(app.instances.iter().all(|i| i.restarts == 0), "none crashed on EADDRINUSE: {:?}", app.instances);

    // Restarted, the instances inherit the port as if it had been configured.
    h.ok(&["restart", "web"]);
    every_instance_answers("after a restart");

    // A reload and an update fail no request: the socket is the daemon's.
    let load = Load::start(port);
    h.ok(&["reload", "web"]);
    h.ok(&["update"]);
    load.finish_without_failures();
    h.ok(&["restart", "1"]);
    every_instance_answers("after an update and a restart");

    // The request and its answer are Node's internal messages: the app's listener saw none.
    for i in 0..3 {
        let err = std::fs::read_to_string(h.home.join(format!("logs/web-{i}.err.log"))).unwrap_or_default();
        assert!(!err.contains("the app saw a message"), "{err}");
        assert!(!err.contains("EADDRINUSE"), "{err}");
    }

    // Deleted, the app gives the port back.
    h.ok(&["delete", "web"]);
    wait_for("the port to be free", T, || std::net::TcpListener::bind(("0.0.0.0", port)).ok());
}
