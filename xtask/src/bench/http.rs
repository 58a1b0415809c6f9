//! The little HTTP/1.1 the load generator speaks: two fixed requests and a response head
//! parser, plus the worker id in `hello from worker <id> pid <pid>`.

/// A request that asks the server to close after answering (`close` mode).
pub(crate) const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
/// A request on a kept-alive connection (`keepalive` mode).
pub(crate) const GET_KEEPALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n";

/// What the generator needs from a response head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// Bytes of the head, through its blank line; the body follows.
    pub(crate) len: usize,
    pub(crate) content_length: usize,
    /// The server closes the connection after this response.
    pub(crate) close: bool,
}

/// Parses a response head from the start of `buf`: `Ok(None)` if it is not complete yet, an
/// error if it is malformed or has no `Content-Length`.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut content_length = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length =
                Some(value.parse().map_err(|_| format!("bad Content-Length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let content_length = content_length.ok_or("response without Content-Length")?;
    Ok(Some(Head { status, len: end + 4, content_length, close }))
}

/// The worker id in a `hello from worker <id> pid <pid>` body.
pub(crate) fn worker_id(body: &[u8]) -> Option<u64> {
    let rest = body.strip_prefix(b"hello from worker ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || !rest[digits..].starts_with(b" pid ") {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hello_and_node_heads() {
        let hello = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 27\r\nConnection: close\r\n\r\nhello from worker 3 pid 42\n";
        let head = parse_head(hello).unwrap().unwrap();
        assert_eq!(head, Head { status: 200, len: 84, content_length: 27, close: true });
        assert_eq!(worker_id(&hello[head.len..]), Some(3));

        let node = b"HTTP/1.1 200 OK\r\ncontent-length: 28\r\nconnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
        let head = parse_head(node).unwrap().unwrap();
        assert_eq!((head.status, head.content_length, head.close), (200, 28, false));
        assert_eq!(head.len, node.len());
    }

    #[test]
    fn incomplete_and_malformed_heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"), Ok(None));
        assert!(parse_head(b"SSH-2.0 hi\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err(), "no Content-Length");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        let not_found = parse_head(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(not_found.unwrap().map(|h| (h.status, h.close)), Some((404, true)));
    }

    #[test]
    fn worker_ids_from_bodies() {
        assert_eq!(worker_id(b"hello from worker 0 pid 7\n"), Some(0));
        assert_eq!(worker_id(b"hello from worker 12 pid 99999\n"), Some(12));
        assert_eq!(worker_id(b"hello from worker x pid 1\n"), None);
        assert_eq!(worker_id(b"hello from worker 1\n"), None);
        assert_eq!(worker_id(b"not found\n"), None);
    }
}
