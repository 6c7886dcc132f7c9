//! The web dashboard and its JSON API: access (token, session, CSRF, Host and Origin), the
//! CLI's verbs over HTTP, live log lines, clear 4xx errors; then the page in a real browser
//! (tests/web/dashboard.test.js) and the API against its OpenAPI document (schemathesis).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// The dashboard served on a free loopback port: its address and token.
fn serve(h: &TestHome) -> (String, String) {
    let said = h.ok(&["web", "--listen", "127.0.0.1:0"]);
    let addr = said
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("web dashboard at http://"))
        .and_then(|s| s.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{said}"))
        .to_string();
    let url = h.ok(&["web", "--token"]);
    let token = url.trim().rsplit_once("token=").unwrap_or_else(|| panic!("{url}")).1.to_string();
    assert_eq!(url.trim(), format!("http://{addr}/login?token={token}"));
    (addr, token)
}

/// An answer: status, head (lower-cased names), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}\n{}", self.head, self.body))
    }
}

/// Send a request (`headers` as `Name: value` lines) and read the whole answer.
fn send(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    Answer { status, head: head.to_string(), body: body.to_string() }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// A start script for a shell app that prints each line it is asked for, with the Unix time
/// in ms it wrote it: `ask(h, …)` asks.
fn talker(h: &TestHome) -> PathBuf {
    let script = h.write(
        "talker.sh",
        "#!/bin/sh\n# Say `line-<n>-<ms>` each time the file `ask` appears.\nn=0\nwhile true; do\n  if [ -e ask ]; then rm -f ask; n=$((n+1)); echo \"line-$n-$(date +%s%3N)\"; fi\n  sleep 0.02\ndone\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn start_idle(h: &TestHome, name: &str) {
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", name, "--", &h.tag(name)]);
}

#[test]
fn the_dashboard_is_off_until_asked_and_listens_on_loopback_by_default() {
    let h = TestHome::new();
    let said = h.ok(&["web"]);
    assert!(said.contains("the web dashboard is off"), "{said}");
    assert!(!h.home.join("web.token").exists(), "a token before the dashboard was asked for");
    // The default address is loopback: served there, or refused there when something else
    // (another home's dashboard) holds the port.
    let out = h.run(&["web", "--listen"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("127.0.0.1:9615"), "{text}");
    if out.status.success() {
        assert!(!text.contains("warning"), "{text}");
        h.ok(&["web", "--off"]);
        assert!(TcpStream::connect("127.0.0.1:9615").is_err() || h.ok(&["web"]).contains("off"));
    }
    // The token is the user's alone.
    h.ok(&["web", "--listen", "127.0.0.1:0"]);
    let mode = std::fs::metadata(h.home.join("web.token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Another address only when named, with a warning in the output and in daemon.log.
    let out = h.run(&["web", "--listen", "0.0.0.0:0"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning") && err.contains("beyond this machine"), "{err}");
    let log = std::fs::read_to_string(h.home.join("daemon.log")).unwrap();
    assert!(log.contains("web dashboard listening beyond loopback"), "{log}");
    h.ok(&["web", "--off"]);
    assert!(h.ok(&["web"]).contains("off"));
}

#[test]
fn without_the_token_the_page_and_every_api_call_answer_401() {
    let h = TestHome::new();
    start_idle(&h, "one");
    let (addr, token) = serve(&h);
    let gets = [
        "/",
        "/index.html",
        "/app.js",
        "/app.css",
        "/api/apps",
        "/api/apps/one",
        "/api/apps/one/history",
        "/api/apps/one/logs",
        "/api/events",
        "/api/stats",
        "/api/openapi.json",
        "/api/nope",
    ];
    let posts = [
        "/api/apps/one/restart",
        "/api/apps/one/reload",
        "/api/apps/one/stop",
        "/api/apps/one/start",
        "/api/apps/one/scale",
    ];
    let port = addr.rsplit_once(':').unwrap().1;
    let forged = format!("Cookie: herder_session_{port}=forged");
    for (method, paths) in [("GET", &gets[..]), ("POST", &posts[..])] {
        for path in paths {
            for auth in [&[][..], &["Authorization: Bearer wrong"][..], &[forged.as_str()][..]] {
                let a = send(&addr, method, path, auth, "{\"count\": 2}");
                assert_eq!(a.status, 401, "{method} {path} {auth:?}: {}\n{}", a.head, a.body);
                if path.starts_with("/api/") {
                    assert!(a.json()["error"].as_str().unwrap().contains("token"), "{}", a.body);
                }
            }
        }
    }
    // Nothing was done.
    assert_eq!(h.app("one").instances[0].restarts, 0);
    assert_eq!(h.app("one").instances.len(), 1);

    // The token works as a bearer.
    let a = send(&addr, "GET", "/api/apps", &[&bearer(&token)], "");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()[0]["spec"]["name"], "one");

    // Logging in: a wrong token gets the form again, the right one a session cookie.
    let a = send(&addr, "GET", "/login?token=wrong", &[], "");
    assert_eq!(a.status, 401);
    assert!(a.body.contains("herder web --token"), "{}", a.body);
    let a = send(&addr, "GET", &format!("/login?token={token}"), &[], "");
    assert_eq!(a.status, 303, "{}", a.head);
    assert_eq!(a.header("location"), Some("/"));
    let cookie = a.header("set-cookie").unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.split("; ").any(|p| p == attribute), "{attribute} missing: {cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    // Named by the port: a second dashboard on this host keeps its own session.
    assert!(session.starts_with(&format!("herder_session_{port}=")), "{cookie}");
    let with_cookie = format!("Cookie: {session}");
    let page = send(&addr, "GET", "/", &[&with_cookie], "");
    assert_eq!(page.status, 200);
    let csrf = page
        .body
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 32, "{csrf}");
    assert_eq!(send(&addr, "GET", "/api/apps", &[&with_cookie], "").status, 200);

    // A change with the cookie needs the CSRF token, and not from another site.
    let pid = h.app("one").instances[0].pid.unwrap();
    let a = send(&addr, "POST", "/api/apps/one/restart", &[&with_cookie], "");
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("CSRF"));
    let a = send(
        &addr,
        "POST",
        "/api/apps/one/restart",
        &[&with_cookie, "X-CSRF-Token: 0123456789abcdef0123456789abcdef"],
        "",
    );
    assert_eq!(a.status, 403);
    let csrf_header = format!("X-CSRF-Token: {csrf}");
    let a = send(
        &addr,
        "POST",
        "/api/apps/one/restart",
        &[&with_cookie, &csrf_header, "Sec-Fetch-Site: cross-site"],
        "",
    );
    assert_eq!(a.status, 403);
    assert_eq!(h.app("one").instances[0].pid, Some(pid), "restarted by a refused request");
    let a = send(
        &addr,
        "POST",
        "/api/apps/one/restart",
        &[&with_cookie, &csrf_header, "Sec-Fetch-Site: same-origin"],
        "",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_ne!(h.app("one").instances[0].pid, Some(pid));
}

#[test]
fn a_foreign_host_or_origin_is_refused() {
    let h = TestHome::new();
    start_idle(&h, "one");
    let (addr, token) = serve(&h);
    let auth = bearer(&token);
    let port = addr.rsplit_once(':').unwrap().1;
    // DNS rebinding: a name that points at 127.0.0.1 but is not this server's.
    for host in [
        format!("Host: rebound.example:{port}"),
        "Host: 127.0.0.1:1".into(),
        format!("Host: 10.0.0.1:{port}"),
    ] {
        for path in ["/", "/api/apps", "/login"] {
            let a = send(&addr, "GET", path, &[&host, &auth], "");
            assert_eq!(a.status, 421, "{host} {path}: {}", a.head);
        }
    }
    assert_eq!(send(&addr, "GET", "/api/apps", &[&format!("Host: localhost:{port}"), &auth], "").status, 200);
    let pid = h.app("one").instances[0].pid;
    for origin in ["Origin: http://evil.example", "Origin: null", &format!("Origin: http://localhost:{port}")]
    {
        let a = send(&addr, "POST", "/api/apps/one/restart", &[origin, &auth], "");
        assert_eq!(a.status, 403, "{origin}: {}", a.body);
        assert_eq!(send(&addr, "GET", "/api/apps", &[origin, &auth], "").status, 403, "{origin}");
    }
    assert_eq!(h.app("one").instances[0].pid, pid);
    let same = format!("Origin: http://{addr}");
    assert_eq!(send(&addr, "POST", "/api/apps/one/restart", &[&same, &auth], "").status, 200);
}

#[test]
fn the_api_restarts_stops_starts_and_scales_as_the_cli_does() {
    let h = TestHome::new();
    start_idle(&h, "one");
    let (addr, token) = serve(&h);
    let auth = bearer(&token);
    let first = h.wait_status("one", Status::Online, T).instances[0].pid.unwrap();

    let a = send(&addr, "POST", "/api/apps/one/restart", &[&auth], "");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["apps"][0]["spec"]["name"], "one");
    let second = wait_for("a new pid", T, || h.app("one").instances[0].pid.filter(|p| *p != first));
    assert!(!pid_alive(first));

    let a = send(&addr, "POST", "/api/apps/one/scale", &[&auth], "{\"count\": 3}");
    assert_eq!(a.status, 200, "{}", a.body);
    let app = h.wait_status("one", Status::Online, T);
    assert_eq!(app.instances.len(), 3);
    assert_eq!(app.instances[0].pid, Some(second), "scaling up touched the first instance");
    let listed = send(&addr, "GET", "/api/apps", &[&auth], "").json();
    assert_eq!(listed[0]["instances"].as_array().unwrap().len(), 3);
    assert_eq!(send(&addr, "POST", "/api/apps/one/scale", &[&auth], "{\"count\": \"1\"}").status, 200);
    wait_for("one instance", T, || (h.app("one").instances.len() == 1).then_some(()));

    assert_eq!(send(&addr, "POST", "/api/apps/one/stop", &[&auth], "").status, 200);
    h.wait_status("one", Status::Stopped, T);
    assert_eq!(send(&addr, "POST", "/api/apps/one/start", &[&auth], "").status, 200);
    h.wait_status("one", Status::Online, T);
    assert_eq!(send(&addr, "POST", "/api/apps/one/reload", &[&auth], "").status, 200);

    // One app, with its last hour.
    let shown = send(&addr, "GET", "/api/apps/one", &[&auth], "");
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["spec"]["name"], "one");
    let history = wait_for("a sample in the history", T, || {
        let hist = send(&addr, "GET", "/api/apps/one/history", &[&auth], "").json();
        hist["instances"][0]["points"].as_array().filter(|p| !p.is_empty()).map(|_| hist.clone())
    });
    assert_eq!(history["bucket_ms"], 30000);
    assert!(history["instances"][0]["points"][0]["memory_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn no_secret_is_in_any_answer() {
    let h = TestHome::new();
    let file = h.write(
        "herder.toml",
        &format!(
            "[[apps]]\nname = \"one\"\nscript = \"{}\"\nargs = [\"--token=s3cr3t-value\"]\nenv = {{ API_TOKEN = \"s3cr3t-value\" }}\n",
            fixture("idle.sh").display()
        ),
    );
    h.ok(&["start", file.to_str().unwrap()]);
    let (addr, token) = serve(&h);
    let auth = bearer(&token);
    for path in ["/api/apps", "/api/apps/one"] {
        let a = send(&addr, "GET", path, &[&auth], "");
        assert_eq!(a.status, 200);
        assert!(!a.body.contains("s3cr3t-value"), "{path}: {}", a.body);
    }
    let shown = send(&addr, "GET", "/api/apps/one", &[&auth], "").json();
    assert_eq!(shown["spec"]["env"]["API_TOKEN"], "********");
}

/// Read server-sent events from `path` until `f` returns `Some` for one (its name and data).
fn read_events<T>(
    addr: &str,
    token: &str,
    path: &str,
    timeout: Duration,
    before: impl FnOnce(),
    mut f: impl FnMut(&str, &str) -> Option<T>,
) -> T {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let deadline = Instant::now() + timeout;
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(Instant::now() < deadline, "no head: {head}");
        let _ = r.read_line(&mut head);
    }
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");
    before();
    let (mut name, mut line) = (String::new(), String::new());
    loop {
        assert!(Instant::now() < deadline, "timed out reading {path}");
        // A read that times out keeps what it read: the line goes on at the next one.
        if r.read_line(&mut line).unwrap_or(0) == 0 || !line.ends_with('\n') {
            continue;
        }
        let line = std::mem::take(&mut line);
        if let Some(n) = line.trim_end().strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(data) = line.trim_end().strip_prefix("data: ") {
            if let Some(v) = f(&name, data) {
                return v;
            }
        }
    }
}

#[test]
fn a_log_line_reaches_the_stream_within_a_second_of_being_written() {
    let h = TestHome::new();
    h.ok(&["start", talker(&h).to_str().unwrap(), "--name", "talker"]);
    h.wait_status("talker", Status::Online, T);
    let (addr, token) = serve(&h);
    let ask = h.dir.path().join("ask");
    let (written, got) = read_events(
        &addr,
        &token,
        "/api/apps/talker/logs",
        T,
        || std::fs::write(&ask, "").unwrap(),
        |name, data| {
            let got = herder::protocol::now_ms();
            (name == "line").then(|| {
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                let text = v["text"].as_str().unwrap().to_string();
                let written: u64 = text.rsplit('-').next().unwrap().trim().parse().unwrap();
                assert_eq!(v["stream"], "out");
                (written, got)
            })
        },
    );
    assert!(got.saturating_sub(written) < 1000, "the line took {} ms", got - written);

    // Events stream too: a restart is seen.
    let (addr2, token2) = (addr.clone(), token.clone());
    let kind = read_events(
        &addr,
        &token,
        "/api/events",
        T,
        || assert_eq!(send(&addr2, "POST", "/api/apps/talker/restart", &[&bearer(&token2)], "").status, 200),
        |name, data| {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            (name == "event" && v["app"] == "talker" && v["kind"] == "start").then(|| v["kind"].to_string())
        },
    );
    assert_eq!(kind, "\"start\"");
    // And figures: every app, at once.
    let apps = read_events(
        &addr,
        &token,
        "/api/stats",
        T,
        || {},
        |name, data| {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            (name == "stats").then(|| v["apps"].as_array().unwrap().len())
        },
    );
    assert_eq!(apps, 1);
}

#[test]
fn bad_input_gets_a_4xx_with_a_message() {
    let h = TestHome::new();
    start_idle(&h, "one");
    let (addr, token) = serve(&h);
    let auth = bearer(&token);
    let cases: [(&str, &str, &str, u16); 13] = [
        ("POST", "/api/apps/one/scale", "{\"count\": \"+1\"}", 400),
        ("POST", "/api/apps/one/scale", "not json", 400),
        ("POST", "/api/apps/one/scale", "{}", 400),
        ("POST", "/api/apps/one/scale", "{\"count\": 0}", 400),
        ("POST", "/api/apps/one/scale", "{\"count\": 100000}", 400),
        ("POST", "/api/apps/one/scale", "{\"count\": \"three\"}", 400),
        ("POST", "/api/apps/nobody/restart", "", 404),
        ("GET", "/api/apps/nobody", "", 404),
        ("GET", "/api/apps/nobody/logs", "", 404),
        ("GET", "/api/apps/%ff", "", 400),
        ("GET", "/api/apps/one/restart", "", 405),
        ("DELETE", "/api/apps", "", 405),
        ("GET", "/api/no/such/route", "", 404),
    ];
    for (method, path, body, status) in cases {
        let a = send(&addr, method, path, &[&auth], body);
        assert_eq!(a.status, status, "{method} {path} {body}: {}", a.body);
        let message = a.json()["error"].as_str().unwrap().to_string();
        assert!(!message.is_empty(), "{method} {path}");
    }
    let big = format!("{{\"count\": \"{}\"}}", "1".repeat(70 * 1024));
    assert_eq!(send(&addr, "POST", "/api/apps/one/scale", &[&auth], &big).status, 413);
    assert_eq!(h.app("one").instances.len(), 1);
}

#[test]
fn the_dashboard_is_served_again_by_the_next_daemon() {
    let h = TestHome::new();
    let (addr, token) = serve(&h);
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the old daemon to go", T, || (!pid_alive(daemon)).then_some(()));
    h.ok(&["list"]);
    let a = wait_for("the dashboard again", T, || {
        TcpStream::connect(&addr).ok()?;
        Some(send(&addr, "GET", "/api/apps", &[&bearer(&token)], ""))
    });
    assert_eq!(a.status, 200, "the same token: {}", a.body);
    h.ok(&["web", "--off"]);
    assert!(TcpStream::connect(&addr).is_err(), "still listening after --off");
}

/// `herder update` hands the dashboard to the new image: its socket (no connection refused)
/// and its sessions (an open page stays logged in).
#[test]
fn an_update_keeps_the_dashboard_and_its_sessions() {
    let h = TestHome::new();
    start_idle(&h, "one");
    let (addr, token) = serve(&h);
    let a = send(&addr, "GET", &format!("/login?token={token}"), &[], "");
    let session = a.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let cookie = format!("Cookie: {session}");
    let page = send(&addr, "GET", "/", &[&cookie], "");
    assert_eq!(page.status, 200);
    let csrf = page
        .body
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let old = h.daemon_pid().unwrap();
    // Requests all through the update: none is refused.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (addr, token, stop) = (addr.clone(), token.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut failed = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match TcpStream::connect(&addr) {
                    Ok(_) => {
                        let a = send(&addr, "GET", "/api/apps", &[&bearer(&token)], "");
                        if a.status != 200 {
                            failed.push(a.status.to_string());
                        }
                    }
                    Err(e) => failed.push(e.to_string()),
                }
                n += 1;
            }
            (n, failed)
        })
    };
    let said = h.ok(&["update"]);
    stop.store(true, Ordering::Relaxed);
    let (n, failed) = load.join().unwrap();
    assert!(failed.is_empty(), "{} of {n} failed: {failed:?}\n{said}", failed.len());
    assert!(n > 0);
    assert_eq!(h.daemon_pid(), Some(old), "an update in place keeps the pid");
    // The same session, and its CSRF token, work with the new image.
    assert_eq!(send(&addr, "GET", "/api/apps", &[&cookie], "").status, 200);
    let with_csrf = format!("X-CSRF-Token: {csrf}");
    let a = send(&addr, "POST", "/api/apps/one/restart", &[&cookie, &with_csrf], "");
    assert_eq!(a.status, 200, "{}", a.body);
    let listed = h.ok(&["web"]);
    assert!(listed.contains(&addr), "{listed}");
}

/// Where `.ci/run` installed playwright-core (a `node_modules` folder).
fn playwright_modules() -> PathBuf {
    let dir = std::env::var_os("HERDER_TEST_PLAYWRIGHT").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/herder-ci/web/node_modules")
    });
    assert!(
        dir.join("playwright-core").is_dir(),
        "no playwright-core in {}: .ci/run installs it (npm install --prefix ~/.cache/herder-ci/web playwright-core)",
        dir.display()
    );
    dir
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("HERDER_TEST_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "no chromium at {}: .ci/run installs it (apt-get install chromium)",
        path.display()
    );
    path
}

#[test]
fn the_page_works_in_a_real_browser() {
    let h = TestHome::new();
    h.ok(&["start", talker(&h).to_str().unwrap(), "--name", "alpha"]);
    start_idle(&h, "beta");
    start_idle(&h, "gamma");
    for app in ["alpha", "beta", "gamma"] {
        h.wait_status(app, Status::Online, T);
    }
    let (addr, token) = serve(&h);
    // `HERDER_SCREENSHOT=docs/dashboard.png` keeps the picture for the README.
    let screenshot = std::env::var_os("HERDER_SCREENSHOT")
        .map(|p| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p))
        .unwrap_or_else(|| h.dir.path().join("dashboard.png"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web/dashboard.test.js");
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{addr}/login?token={token}"))
        .arg(h.dir.path().join("ask"))
        .arg(&screenshot)
        .env("HERDER_TEST_PLAYWRIGHT", playwright_modules())
        .env("HERDER_TEST_CHROMIUM", chromium())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    for step in [
        "logged in with the token",
        "two apps online",
        "restarted alpha",
        "a new log line appeared",
        "scaled beta from 1 to 3",
        "screenshot of three apps and a chart",
        "no error in the page",
    ] {
        assert!(stdout.contains(&format!("ok: {step}")), "no `{step}`:\n{stdout}\n{stderr}");
    }
    // What the browser did, the daemon did.
    assert_eq!(h.app("beta").instances.len(), 3);
    assert!(h.app("alpha").instances[0].restarts >= 1);
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
}

/// schemathesis, from the venv `.ci/run` made.
fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("HERDER_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/herder-ci/venv"));
    let bin = venv.join("bin/schemathesis");
    assert!(bin.exists(), "no schemathesis in {}: .ci/run installs it", venv.display());
    bin
}

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    let h = TestHome::new();
    start_idle(&h, "one");
    start_idle(&h, "two");
    let (addr, token) = serve(&h);
    // The streams never end, so they are left out; scale runs alone, so that no restart
    // waits on the instances it added.
    let runs: [&[&str]; 2] =
        [&["--exclude-path-regex", "/(events|stats|logs|scale)$"], &["--include-path-regex", "/scale$"]];
    for run in runs {
        let out = std::process::Command::new(schemathesis())
            .arg("run")
            .arg(format!("http://{addr}/api/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--max-examples", "20", "--seed", "1", "--workers", "1", "--request-timeout", "30"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(run)
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(h.dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis {run:?} found problems:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("passed") && !stdout.contains("Server error"), "{stdout}");
    }
    // The daemon serves on.
    assert_eq!(send(&addr, "GET", "/api/apps", &[&bearer(&token)], "").status, 200);
}
