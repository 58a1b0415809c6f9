//! Just enough HTTP/1.x for a scraper and a probe: read one `GET` (or `HEAD`) request line,
//! answer with a status, a body and `Connection: close`. Written by hand rather than with
//! hyper because the primary runs no async runtime and three fixed paths need no router;
//! every read and write is bounded by a timeout, so a client that stalls holds the thread
//! for at most [`IO_TIMEOUT`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one client may take to send its request or read the answer: 2 s.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest request head read: 8 KiB (a scraper's is a few hundred bytes).
const MAX_HEAD: usize = 8 * 1024;

/// An answer.
pub(super) struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    pub(super) fn ok(content_type: &'static str, body: String) -> Response {
        Response { status: 200, content_type, body }
    }

    pub(super) fn text(status: u16, body: &str) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

/// Reads one request from `stream` and writes what `route` answers for its path (the query
/// string left off). A request that cannot be read is answered 400 where possible; errors
/// writing to a client that went away are ignored.
pub(super) fn answer(mut stream: TcpStream, route: impl FnOnce(&str) -> Response) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux (accept(2)), but say so anyway.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let (response, head_only) = match read_head(&mut stream) {
        Some(head) => match parse_request_line(&head) {
            Some((method @ ("GET" | "HEAD"), path)) => (route(path), method == "HEAD"),
            Some(_) => (Response::text(405, "only GET and HEAD\n"), false),
            None => (Response::text(400, "bad request\n"), false),
        },
        None => (Response::text(400, "bad request\n"), false),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if !head_only {
        let _ = stream.write_all(response.body.as_bytes());
    }
    let _ = stream.flush();
}

/// The request up to the blank line that ends its head (or the first [`MAX_HEAD`] bytes);
/// `None` if the client sent nothing in time.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let ended =
        |h: &[u8]| h.windows(4).any(|w| w == b"\r\n\r\n") || h.windows(2).any(|w| w == b"\n\n");
    while !ended(&head) && head.len() < MAX_HEAD {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (!head.is_empty()).then(|| String::from_utf8_lossy(&head).into_owned())
}

/// `METHOD /path?query HTTP/1.1` → (method, path).
fn parse_request_line(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    let path = target.split(['?', '#']).next()?;
    path.starts_with('/').then_some((method, path))
}

#[cfg(test)]
mod tests {
    use super::parse_request_line;

    #[test]
    fn the_request_line_gives_method_and_path_without_the_query() {
        assert_eq!(
            parse_request_line("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line("HEAD /livez HTTP/1.0\r\n"), Some(("HEAD", "/livez")));
        assert_eq!(parse_request_line("GET metrics HTTP/1.1\r\n"), None);
        assert_eq!(parse_request_line(""), None);
    }
}
