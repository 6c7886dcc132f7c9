//! The HTTP client of the probes and the webhooks: one HTTP/1.1 request per connection
//! (`Connection: close`) on hyper, whose answer's status is all that is read.
//!
//! No pool: a probe asks every few seconds and a webhook once per event, so a connection kept
//! open between them would save a loopback connect and cost a socket and a task per target.
//! The caller bounds the whole exchange with its timeout; dropping the future closes the
//! connection. Redirects are not followed (a probe takes 3xx as healthy).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where an `http://` URL points: the address to connect to, the `Host` header and the path.
#[derive(Debug, PartialEq)]
struct Target {
    addr: String,
    host: String,
    path: String,
}

/// `http://host[:port][/path]` into its [`Target`] (port 80 when none is given).
fn target(url: &str) -> Option<Target> {
    let uri: Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host().filter(|h| !h.is_empty())?;
    let port = uri.port_u16();
    Some(Target {
        addr: format!("{host}:{}", port.unwrap_or(80)),
        host: match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        },
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    })
}

/// The largest answer head read.
const MAX_HEAD: usize = 64 * 1024;

/// Send one request to `url` (a JSON body with `json_body`) and return the answer's status
/// code.
pub(crate) async fn request(url: &str, method: Method, json_body: Option<&[u8]>) -> Result<u16, String> {
    let t = target(url).ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let mut req = Request::builder()
        .method(method.clone())
        .uri(&t.path)
        .header(header::HOST, &t.host)
        .header(header::USER_AGENT, "herder")
        .header(header::CONNECTION, "close");
    if json_body.is_some() {
        req = req.header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let body = Full::new(json_body.map_or_else(Bytes::new, Bytes::copy_from_slice));
    let req = req.body(body).map_err(|e| format!("`{url}`: {e}"))?;

    let stream = TcpStream::connect(&t.addr).await.map_err(|e| format!("connect {}: {e}", t.addr))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        // As the receivers written by hand for this client's predecessor expect them.
        .title_case_headers(true)
        // Only the status matters: an answer's head past this is an error, not memory.
        .max_buf_size(MAX_HEAD)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    // The connection is driven here, not in a task of its own: it ends with this future.
    tokio::pin!(conn);
    let sent = sender.send_request(req);
    tokio::pin!(sent);
    let answer = tokio::select! {
        biased;
        answer = &mut sent => answer,
        ended = &mut conn => match ended {
            // The answer (or why there is none) is waiting in the request's future.
            Ok(()) => sent.await,
            Err(e) => sent.await.map_err(|_| e),
        },
    };
    answer.map(|res| res.status().as_u16()).map_err(|e| match std::error::Error::source(&e) {
        Some(cause) => format!("{method} {url}: {e}: {cause}"),
        None => format!("{method} {url}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(addr: &str, host: &str, path: &str) -> Option<Target> {
        Some(Target { addr: addr.into(), host: host.into(), path: path.into() })
    }

    #[test]
    fn urls_give_the_address_the_host_header_and_the_path() {
        assert_eq!(
            target("http://127.0.0.1:8080/health?x=1"),
            t("127.0.0.1:8080", "127.0.0.1:8080", "/health?x=1")
        );
        assert_eq!(target("http://example.test"), t("example.test:80", "example.test", "/"));
        assert_eq!(target("http://[::1]:9000/h"), t("[::1]:9000", "[::1]:9000", "/h"));
        assert_eq!(target("http://[::1]/"), t("[::1]:80", "[::1]", "/"));
        // Credentials in the URL are not sent on as a Host.
        assert_eq!(target("http://u:tok@localhost:81/"), t("localhost:81", "localhost:81", "/"));
        assert_eq!(target("https://x"), None);
        assert_eq!(target("http://"), None);
        assert_eq!(target("http://a b/"), None);
    }

    /// A server for one connection: it reads the request's head and body, sends `answer`
    /// (nothing when empty) and closes; the request comes back.
    async fn server(answer: impl AsRef<[u8]> + Send + 'static) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?a=1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |n| n.parse().unwrap());
                    if body.len() >= len {
                        break;
                    }
                }
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            // The client may have given up already.
            let _ = s.write_all(answer.as_ref()).await;
            String::from_utf8(got).unwrap()
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_request_carries_its_headers_and_body_and_returns_the_status() {
        let (url, seen) = server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy").await;
        assert_eq!(request(&url, Method::POST, Some(b"{\"a\":1}")).await, Ok(503));
        let seen = seen.await.unwrap();
        let (head, body) = seen.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("POST /hook?a=1 HTTP/1.1"));
        let mut headers: Vec<&str> = lines.collect();
        headers.sort();
        let host = format!("Host: {}", url.split('/').nth(2).unwrap());
        let mut want = vec![
            "Connection: close",
            "Content-Length: 7",
            "Content-Type: application/json",
            host.as_str(),
            "User-Agent: herder",
        ];
        want.sort();
        assert_eq!(headers, want);
        assert_eq!(body, "{\"a\":1}");

        // A GET has no body and says nothing of one; an answer without a body is read too.
        let (url, seen) = server(b"HTTP/1.0 302 Found\r\nLocation: /elsewhere\r\n\r\n").await;
        assert_eq!(request(&url, Method::GET, None).await, Ok(302));
        let seen = seen.await.unwrap();
        assert!(seen.starts_with("GET /hook?a=1 HTTP/1.1\r\n") && !seen.contains("Content-"), "{seen}");
    }

    #[tokio::test]
    async fn no_answer_or_a_broken_one_is_an_error() {
        let (url, _seen) = server(b"").await;
        let err = request(&url, Method::GET, None).await.unwrap_err();
        assert!(err.starts_with(&format!("GET {url}: ")), "{err}");

        let (url, _seen) = server(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        let err = request(&url, Method::GET, None).await.unwrap_err();
        assert!(err.starts_with(&format!("GET {url}: ")), "{err}");

        let huge = format!("HTTP/1.1 200 OK\r\nX-Huge: {}\r\n\r\n", "a".repeat(2 * MAX_HEAD));
        let (url, _seen) = server(huge).await;
        let err = request(&url, Method::GET, None).await.unwrap_err();
        assert!(err.starts_with(&format!("GET {url}: ")), "{err}");

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = request(&format!("http://127.0.0.1:{port}/"), Method::GET, None).await.unwrap_err();
        assert!(err.starts_with(&format!("connect 127.0.0.1:{port}: ")), "{err}");

        assert_eq!(
            request("ftp://x/", Method::GET, None).await,
            Err("`ftp://x/` is not an http:// URL".into())
        );
    }

    #[tokio::test]
    async fn a_request_given_up_closes_its_connection() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let asking = tokio::spawn(async move { request(&url, Method::GET, None).await });
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        // The caller's timeout drops the request: the server sees the connection end.
        asking.abort();
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    }
}
