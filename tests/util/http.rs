//! A small HTTP/1.1 client over std's `TcpStream`, enough to drive the `hello` example: one
//! `GET` at a time, keep-alive or `Connection: close`, bodies by `Content-Length`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use herd::WorkerId;

use crate::DEADLINE;

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, `Content-Length` bytes of it.
    pub body: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The worker id and pid of a `hello from worker <id> pid <pid>\n` body, or `None` for any
    /// other body.
    pub fn greeting(&self) -> Option<(WorkerId, u32)> {
        let line = self.body.strip_suffix('\n')?;
        let rest = line.strip_prefix("hello from worker ")?;
        let (id, pid) = rest.split_once(" pid ")?;
        Some((id.parse().ok()?, pid.parse().ok()?))
    }
}

/// A client connection: requests are sent and answered one at a time.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects to `address` (`host:port`); reads time out after [`DEADLINE`].
    pub fn connect(address: &str) -> io::Result<Client> {
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        Ok(Client { reader: BufReader::new(stream) })
    }

    /// Sends `GET <path>`, with `Connection: close` if `close`, without reading the answer.
    pub fn send(&mut self, path: &str, close: bool) -> io::Result<()> {
        let connection = if close { "Connection: close\r\n" } else { "" };
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{connection}\r\n");
        self.reader.get_mut().write_all(request.as_bytes())
    }

    /// Sends `bytes` as they are (a request of the test's own making), without reading.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one response. `UnexpectedEof` if the server closes before a whole one.
    pub fn read_response(&mut self) -> io::Result<Response> {
        let status_line = self.line()?;
        let mut words = status_line.split_whitespace();
        let status = match (words.next(), words.next().and_then(|s| s.parse().ok())) {
            (Some("HTTP/1.1"), Some(status)) => status,
            _ => return Err(invalid(format!("bad status line {status_line:?}"))),
        };
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) =
                line.split_once(':').ok_or_else(|| invalid(format!("bad header {line:?}")))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut response = Response { status, headers, body: String::new() };
        let length: usize = response
            .header("Content-Length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| invalid(format!("no Content-Length: {response:?}")))?;
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        response.body = String::from_utf8(body).map_err(|e| invalid(e.to_string()))?;
        Ok(response)
    }

    /// [`send`](Client::send) then [`read_response`](Client::read_response).
    pub fn get(&mut self, path: &str, close: bool) -> io::Result<Response> {
        self.send(path, close)?;
        self.read_response()
    }

    /// Whether the server closed the connection: the next read gets end of stream (or a reset)
    /// rather than data. Waits up to [`DEADLINE`] for either.
    pub fn closed_by_server(&mut self) -> io::Result<bool> {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// One line without its `\r\n`; `UnexpectedEof` at end of stream.
    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response"));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// `GET <path>` on a new connection with `Connection: close`.
pub fn get(address: &str, path: &str) -> io::Result<Response> {
    Client::connect(address)?.get(path, true)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
