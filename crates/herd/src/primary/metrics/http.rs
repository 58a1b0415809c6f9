//! Just enough HTTP/1.x for a scraper and a probe: one `GET` (or `HEAD`) request line in,
//! a status, a body and `Connection: close` out. Written by hand rather than with hyper
//! because the primary runs no async runtime and three fixed paths need no router. The
//! connections themselves are [`super::server`]'s; this file only parses and encodes.

/// The longest request head read: 8 KiB (a scraper's is a few hundred bytes).
pub(super) const MAX_HEAD: usize = 8 * 1024;

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

/// Whether `head` holds a whole request head (up to the blank line that ends it).
pub(super) fn head_ended(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// What a request head asks: `Ok((path, head_only))` for a `GET` or `HEAD` of a path (the
/// query string left off), else the answer to give at once (405 or 400).
pub(super) fn parse(head: &[u8]) -> Result<(String, bool), Response> {
    let head = String::from_utf8_lossy(head);
    match parse_request_line(&head) {
        Some((method @ ("GET" | "HEAD"), path)) => Ok((path.to_owned(), method == "HEAD")),
        Some(_) => Err(Response::text(405, "only GET and HEAD\n")),
        None => Err(Response::text(400, "bad request\n")),
    }
}

/// The bytes to send for `response`: status line, headers, and the body unless `head_only`.
pub(super) fn encode(response: &Response, head_only: bool) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if !head_only {
        bytes.extend_from_slice(response.body.as_bytes());
    }
    bytes
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
    use super::{head_ended, parse_request_line};

    #[test]
    fn a_head_ends_at_the_blank_line() {
        assert!(head_ended(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(head_ended(b"GET / HTTP/1.0\n\n"));
        assert!(!head_ended(b"GET / HTTP/1.1\r\nHost: a\r\n"));
    }

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
