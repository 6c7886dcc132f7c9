//! The metrics endpoint: Prometheus text that a parser accepts, with the promised series.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use herder::protocol::Status;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

fn get(addr: &str, path: &str) -> (String, String) {
    request(addr, "GET", path)
}

fn request(addr: &str, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Serve the metrics on a free loopback port; its address.
fn listen(h: &TestHome) -> String {
    let said = h.ok(&["metrics", "--listen", "127.0.0.1:0"]);
    said.trim()
        .strip_prefix("metrics served at http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{said}"))
        .to_string()
}

/// Send `bytes` and read what comes back until the endpoint closes the connection (a reset
/// after the answer, when the endpoint closes with bytes left unread, ends it too).
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A strict reading of the text format (0.0.4): every line is `# HELP`, `# TYPE` or a sample
/// `name{label="value",…} number` of a family whose TYPE came before it.
fn check_text_format(body: &str) {
    let mut typed: Vec<String> = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid_name(name) && ["counter", "gauge"].contains(&kind), "{line}");
            typed.push(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(valid_name(rest.split(' ').next().unwrap()), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value: {line}");
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad name: {line}");
        assert!(typed.last().is_some_and(|t| t == name), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{line}"));
            // key="value" pairs; values may hold escaped quotes.
            let mut rest = inner;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(valid_name(key), "bad label name: {line}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => {
                            end = Some(i);
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label: {line}"));
                rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
            }
        }
    }
}

#[test]
fn the_endpoint_serves_parseable_prometheus_text_with_every_series() {
    let h = TestHome::new();
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "web", "--", &h.tag("w")]);
    // A name that needs escaping in a label value (checked by the strict reading below).
    h.ok(&["start", fixture("idle.sh").to_str().unwrap(), "--name", "odd \"name\"", "--", &h.tag("o")]);
    h.ok(&["start", fixture("crash.sh").to_str().unwrap(), "--name", "crashy", "--max-restarts", "2"]);
    // 60 MB resident, which the daemon's own memory must not include.
    h.ok(&["start", fixture("grow.py").to_str().unwrap(), "--name", "big", "--", "1000", "60"]);
    h.wait_status("web", Status::Online, T);
    h.wait_status("crashy", Status::Errored, T);
    wait_for("a sample", T, || h.app("web").instances[0].memory_bytes);
    wait_for("the big app's 60 MB", T, || {
        (h.app("big").instances[0].memory_bytes? > 60 * 1024 * 1024).then_some(())
    });
    let addr = listen(&h);

    let (head, body) = get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/plain; version=0.0.4"), "{head}");
    check_text_format(&body);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |metric: &str, app: &str| {
        scrape.samples.iter().find(|s| s.metric == metric && s.labels.get("app") == Some(app)).map(
            |s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                ref other => panic!("{metric}: {other:?}"),
            },
        )
    };
    let web = "web";
    assert!(body.contains("app=\"odd \\\"name\\\"\""), "{body}");
    assert_eq!(value("herder_app_up", web), Some(1.0));
    assert_eq!(value("herder_app_up", "crashy"), Some(0.0));
    assert_eq!(value("herder_app_restarts_total", "crashy"), Some(2.0));
    assert!(value("herder_app_memory_bytes", web).unwrap() > 100_000.0);
    assert!(value("herder_app_cpu_seconds_total", web).is_some());
    assert!(value("herder_app_uptime_seconds", web).unwrap() >= 0.0);
    let status = scrape
        .samples
        .iter()
        .find(|s| s.metric == "herder_app_status" && s.labels.get("app") == Some("crashy"))
        .unwrap();
    assert_eq!(status.labels.get("status"), Some("errored"));
    // The instance is `index`: `instance` is Prometheus's own label for the scraped target.
    for sample in scrape.samples.iter().filter(|s| s.metric.starts_with("herder_app_")) {
        assert!(sample.labels.get("instance").is_none(), "{sample:?}");
        assert_eq!(sample.labels.get("index"), Some("0"), "{sample:?}");
    }
    // The daemon's own memory, without its apps'.
    let daemon_rss = |pid: u32| {
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
        statm.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() * 4096.0
    };
    let daemon = h.daemon_pid().unwrap();
    let reported =
        match scrape.samples.iter().find(|s| s.metric == "herder_daemon_memory_bytes").unwrap().value {
            prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{other:?}"),
        };
    let own = daemon_rss(daemon);
    assert!(
        reported > 0.0 && reported < own + 30.0 * 1024.0 * 1024.0,
        "{reported} for a daemon of {own} bytes"
    );
    for daemon_series in [
        "herder_daemon_uptime_seconds",
        "herder_daemon_memory_bytes",
        "herder_daemon_cpu_seconds_total",
        "herder_daemon_apps",
    ] {
        assert!(scrape.samples.iter().any(|s| s.metric == daemon_series), "{daemon_series} missing");
    }
    assert_eq!(
        scrape.samples.iter().find(|s| s.metric == "herder_daemon_apps").map(|s| &s.value),
        Some(&prometheus_parse::Value::Gauge(4.0))
    );
    // HEAD: the same head as GET, its Content-Length included, and no body.
    let (head, rest) = request(&addr, "HEAD", "/metrics");
    assert!(head.starts_with("HTTP/1.1 200") && rest.is_empty(), "{head}\n{rest}");
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
    // The body changes from one scrape to the next (uptimes, CPU) but not by much.
    assert!(length.abs_diff(body.len()) < 200, "HEAD says {length}, GET gave {}", body.len());
    // `herder metrics` prints the same text.
    check_text_format(&h.ok(&["metrics"]));

    // A client that ends its lines with a bare LF is answered too (in its own HTTP/1.0).
    let text = raw(&addr, b"GET /metrics HTTP/1.0\n\n");
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");

    let (head, _) = get(&addr, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // A new daemon (after a crash) serves them at the same address.
    let daemon = h.daemon_pid().unwrap();
    // SAFETY: kill(2) on the test's own daemon.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    wait_for("the old daemon to go", T, || (!pid_alive(daemon)).then_some(()));
    h.ok(&["list"]);
    let (head, body) = wait_for("the endpoint again", T, || {
        TcpStream::connect(&addr).ok()?;
        Some(get(&addr, "/metrics"))
    });
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    check_text_format(&body);

    h.ok(&["metrics", "--off"]);
    assert!(TcpStream::connect(&addr).is_err(), "still listening after --off");
}

#[test]
fn the_endpoint_refuses_addresses_beyond_loopback() {
    let h = TestHome::new();
    let err = h.fails(&["metrics", "--listen", "0.0.0.0:9209"]);
    assert!(err.contains("not a loopback address"), "{err}");
}

#[test]
fn the_endpoint_answers_each_request_alone_and_bad_ones_with_their_status() {
    let h = TestHome::new();
    let addr = listen(&h);

    // One request per connection: the answer says so, and the endpoint closes it (a second
    // request sent at once gets no answer).
    let text =
        raw(&addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("\r\nConnection: close"), "{head}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    // The query string is not part of the path.
    let (head, _) = get(&addr, "/metrics?x=1");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let (head, body) = request(&addr, "POST", "/metrics");
    assert!(head.starts_with("HTTP/1.1 405") && head.contains("\r\nAllow: GET, HEAD"), "{head}");
    assert_eq!(body, "GET /metrics\n");

    let text = raw(&addr, b"this is not http\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");

    // A head past 16 KiB.
    let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024));
    let text = raw(&addr, big.as_bytes());
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    // The endpoint still serves after all that.
    let (head, _) = get(&addr, "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// `herder update` hands the endpoint to the new image without failing a scrape: the old one
/// stops accepting and answers the scrapes under way, the next answers what waits.
#[test]
fn scrapes_all_through_an_update_are_answered() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let h = TestHome::new();
    let addr = listen(&h);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let scraper = {
        let (addr, stop, done) = (addr.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut n, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let scrape = || -> std::io::Result<String> {
                    let mut s = TcpStream::connect(&addr)?;
                    s.set_read_timeout(Some(T))?;
                    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
                    let mut text = String::new();
                    s.read_to_string(&mut text)?;
                    Ok(text)
                };
                match scrape() {
                    Ok(text) if text.starts_with("HTTP/1.1 200") && text.contains("herder_daemon") => {}
                    Ok(text) => failed.push(text.lines().next().unwrap_or("(nothing)").to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                n += 1;
                done.store(n, Ordering::Relaxed);
            }
            (n, failed)
        })
    };
    // Scrapes are under way before the update, and after it.
    wait_for("a few scrapes", T, || (done.load(Ordering::Relaxed) >= 5).then_some(()));
    h.ok(&["update"]);
    let before_end = done.load(Ordering::Relaxed);
    wait_for("scrapes after the update", T, || {
        (done.load(Ordering::Relaxed) >= before_end + 5).then_some(())
    });
    let after = get(&addr, "/metrics");
    stop.store(true, Ordering::Relaxed);
    let (n, failed) = scraper.join().unwrap();
    assert!(failed.is_empty(), "{} of {n} scrapes failed: {failed:?}", failed.len());
    assert!(after.0.starts_with("HTTP/1.1 200"), "{}", after.0);
}
