//! A server under test, from spawn to reaped: start it, wait for its `listening on http://…`
//! line, stop it with SIGTERM (SIGKILL after 5 s), and reap it on every path.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{http, procstat};

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Stderr kept for error messages.
const STDERR_KEEP: usize = 4096;

pub(crate) struct Server {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    reaped: bool,
}

/// A command, prefixed with `taskset -c <core>` when pinned.
pub(crate) fn command(program: &std::path::Path, args: &[String], core: Option<usize>) -> Command {
    match core {
        Some(core) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(core.to_string()).arg(program).args(args);
            cmd
        }
        None => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
    }
}

/// The address in a `listening on http://ADDR:PORT (…)` line.
pub(crate) fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix("listening on http://")?;
    rest.split_whitespace().next()?.trim_end_matches('/').parse().ok()
}

impl Server {
    /// Spawns `cmd` and waits for its listening line; the process is reaped if that fails.
    pub(crate) fn start(mut cmd: Command, what: &str) -> Result<Server, String> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // A policy in the environment must not override the one on the command line.
        cmd.env_remove("HERD_SCHED_POLICY").env_remove("NODE_CLUSTER_SCHED_POLICY");
        let mut child = cmd.spawn().map_err(|e| format!("{what}: cannot start: {e}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let stderr_pipe = child.stderr.take().expect("piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        drain_stderr(stderr_pipe, Arc::clone(&stderr));
        let (tx, rx) = mpsc::channel();
        // Reads the listening line, then drains the rest (hello's per-worker lines at exit).
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sent {
                    continue;
                }
                if let Some(addr) = parse_listening(&line) {
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let mut server =
            Server { child, pid, addr: ([127, 0, 0, 1], 0).into(), stderr, reaped: false };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                let status = server.kill();
                Err(format!(
                    "{what}: no listening line ({}); stderr: {}",
                    status.map_or("still running, killed".into(), |s| s.to_string()),
                    server.stderr_text()
                ))
            }
        }
    }

    /// Spawns `cmd`, a server that prints no listening line (nginx), and waits until `addr`
    /// answers `GET /` with 200; the process is reaped if that fails.
    pub(crate) fn start_probed(
        mut cmd: Command,
        addr: SocketAddr,
        what: &str,
    ) -> Result<Server, String> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("{what}: cannot start: {e}"))?;
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(String::new()));
        drain_stderr(child.stderr.take().expect("piped"), Arc::clone(&stderr));
        let mut server = Server { child, pid, addr, stderr, reaped: false };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if answers(addr) {
                return Ok(server);
            }
            let exited = server.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let status = server.kill();
                return Err(format!(
                    "{what}: never answered on {addr} ({}); stderr: {}",
                    status.map_or("still running, killed".into(), |s| s.to_string()),
                    server.stderr_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stderr_text(&self) -> String {
        let text = self.stderr.lock().map(|s| s.trim().to_string()).unwrap_or_default();
        if text.is_empty() { "(empty)".into() } else { text }
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL; always reaped. Waits (briefly) for the
    /// children it had to be gone too, so the next run starts on a quiet machine.
    pub(crate) fn stop(mut self) -> Result<ExitStatus, String> {
        let children = procstat::children(self.pid);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let status = match wait_deadline(&mut self.child, Instant::now() + STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let status = self.kill();
                return Err(format!(
                    "pid {} ignored SIGTERM for {STOP_TIMEOUT:?}, killed ({status:?})",
                    self.pid
                ));
            }
        };
        self.reaped = true;
        let deadline = Instant::now() + Duration::from_secs(2);
        while children.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(status)
    }

    /// SIGKILL and reap.
    fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.reaped = true;
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
        }
    }
}

/// Waits for the child until `deadline`: its status, or `None` if it is still running.
pub(crate) fn wait_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Whether `addr` answers `GET /` with a 200.
fn answers(addr: SocketAddr) -> bool {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(http::GET_CLOSE).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match http::parse_head(&buf) {
            Ok(Some(head)) => return head.status == 200,
            Ok(None) => {}
            Err(_) => return false,
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rfind(')').is_some_and(|i| !s[i + 1..].trim_start().starts_with('Z')))
}

fn drain_stderr(mut pipe: impl Read + Send + 'static, keep: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let Ok(mut text) = keep.lock() else { break };
            if text.len() < STDERR_KEEP {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        let line = "listening on http://127.0.0.1:41234 (4 workers, policy rr)";
        assert_eq!(parse_listening(line), Some("127.0.0.1:41234".parse().unwrap()));
        assert_eq!(
            parse_listening("listening on http://[::1]:80 (1 workers, policy ceiling)\n"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_listening("worker 1: 10 requests"), None);
    }
}
