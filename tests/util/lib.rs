//! Helpers shared by the multi-process tests and their fixture binaries.
//!
//! Every child a test spawns lives in a [`Reaped`] guard, so it is killed and waited for even
//! when the test fails; its stderr is captured and shown in failure messages.

pub mod cluster;
pub mod hello;
pub mod http;
pub mod sys;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::time::Duration;

/// A generous deadline for anything a child process must do: this runs on busy 2-core machines.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The descriptor number fixtures receive their channel at, and the variable that names it.
pub const CHANNEL_FD: i32 = 3;
/// The environment variable naming [`CHANNEL_FD`] in a fixture.
pub const CHANNEL_FD_VAR: &str = "HERD_TEST_IPC_FD";

/// Held for reading by every test of a binary that forks, for writing by the tests that need
/// no other fork in flight.
static FORKS: RwLock<()> = RwLock::new(());

/// Taken by a test that spawns processes, in a binary where some test takes
/// [`no_forks_elsewhere`]. Tests holding it run in parallel.
pub fn may_fork() -> RwLockReadGuard<'static, ()> {
    FORKS.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Taken by a test that asserts a socket of this process is closed everywhere (its port bound
/// again, a connection refused): a child that another test forks holds a copy of every
/// descriptor of this process, close-on-exec or not, until it execs, and on a busy machine
/// that can take long enough to keep a closed listener listening.
pub fn no_forks_elsewhere() -> RwLockWriteGuard<'static, ()> {
    FORKS.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A spawned child that is killed and reaped when dropped.
pub struct Reaped {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// What the child wrote on stderr so far.
    stderr_so_far: Arc<Mutex<Vec<u8>>>,
}

impl Reaped {
    /// Spawns `cmd` with stderr captured (and echoed to ours once collected).
    pub fn spawn(mut cmd: Command) -> Reaped {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let stderr_so_far = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&stderr_so_far);
        let stderr = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => collected
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let bytes = collected.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&bytes).into_owned()
        });
        Reaped { child, stderr: Some(stderr), stderr_so_far }
    }

    /// What the child has written on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr_so_far.lock().unwrap_or_else(|p| p.into_inner()))
            .into_owned()
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdout, if it was piped (`cmd.stdout(Stdio::piped())` before
    /// [`spawn`](Reaped::spawn)); `None` the second time.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Sends SIGKILL (ignoring a child that is already gone).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the child to exit within [`DEADLINE`]; returns its status and stderr. Panics,
    /// with the stderr so far, if it does not exit in time (the guard then kills it).
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let stderr = self.stderr.take().map(|h| h.join().unwrap()).unwrap_or_default();
                return (status, stderr);
            }
            if started.elapsed() > DEADLINE {
                self.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().map(|h| h.join().unwrap()).unwrap_or_default();
                panic!("child {} did not exit within {DEADLINE:?}; stderr:\n{stderr}", self.id());
            }
            // Polling a child's exit at 10 ms steps: std has no timed wait on a child.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(stderr) = self.stderr.take() {
            if let Ok(text) = stderr.join() {
                if !text.is_empty() {
                    eprintln!("--- stderr of child {} ---\n{text}", self.child.id());
                }
            }
        }
    }
}

/// Runs a fixture to its end: spawns `cmd` with stdout piped, reads all it prints, and waits
/// for it (within [`DEADLINE`]); returns its stdout and stderr once it exited 0, and panics
/// with its stderr otherwise.
#[track_caller]
pub fn run_fixture(mut cmd: Command) -> (String, String) {
    cmd.stdout(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut child = Reaped::spawn(cmd);
    let mut stdout = child.take_stdout().expect("piped stdout");
    let out = within_deadline("the fixture's report", move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let (status, stderr) = child.wait();
    assert!(status.success(), "{what}: {status}; stderr:\n{stderr}");
    (out.expect("read the fixture's report"), stderr)
}

/// Runs `f` on another thread and returns its result, or panics naming `what` if it takes
/// longer than [`DEADLINE`]: a blocking call in a test must never hang the suite.
#[track_caller]
pub fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("{what}: no result within {DEADLINE:?}"))
}

/// Whether process `pid` is gone: no `/proc/<pid>`, or a zombie (`Z`) or dead (`X`) one that
/// merely waits for whoever reaps it (an orphan's reaper may be init, or a subreaper that
/// never waits for it).
pub fn process_gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    // `pid (comm) state ...`: the command may hold spaces and parentheses, the state follows
    // the last `)`.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X"))
}

/// The live processes (not [gone](process_gone)) that are herd workers of primary `pid`: whose
/// environment holds `HERD_PRIMARY_PID=<pid>` (read from `/proc/*/environ`, which this user
/// can read for its own processes). A worker that outlived its primary stays one of them.
pub fn workers_of(primary: u32) -> Vec<u32> {
    let marker = format!("HERD_PRIMARY_PID={primary}");
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) && !process_gone(pid)
        })
        .collect()
}

/// The descriptor numbers open in this process, read from `/proc/self/fd` (the directory's own
/// descriptor excluded).
pub fn open_fds() -> Vec<i32> {
    let dir = std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd");
    let listed: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    // The directory's own descriptor is closed now, so it no longer resolves.
    let mut fds: Vec<i32> = listed
        .into_iter()
        .filter(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// The descriptors of this process that a child would inherit across exec: open, without
/// `FD_CLOEXEC` (read from `/proc/self/fdinfo`). Outside the test's control (a CI runner or a
/// shell may hand some down), so tests compare a child's descriptors against this set.
pub fn inheritable_fds() -> Vec<i32> {
    const O_CLOEXEC_OCTAL: u32 = 0o2000000;
    open_fds()
        .into_iter()
        .filter(|fd| {
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok());
            flags.is_some_and(|f| f & O_CLOEXEC_OCTAL == 0)
        })
        .collect()
}

/// Sends `signal` (a name such as `TERM` or `HUP`) to process `pid` with kill(1): this
/// package calls no libc.
#[track_caller]
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("run kill -{signal} {pid}: {e}"));
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// Whether every thread of process `pid` is stopped (`T` in `/proc/PID/task/*/stat`): a
/// SIGSTOP takes effect shortly after `kill` returns, and until then the process may still
/// accept a connection.
pub fn process_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.filter_map(Result::ok).all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        matches!(state, Some("T" | "t"))
    })
}

/// Sends SIGSTOP to `pid` and waits until it has taken effect ([`process_stopped`]).
#[track_caller]
pub fn stop_process(pid: u32) {
    send_signal(pid, "STOP");
    wait_until(&format!("process {pid} stopped"), || process_stopped(pid));
}

/// Polls `done` every 10 ms until it holds, within [`DEADLINE`]: only for states no event
/// announces (another process's exit, a server's side of a connection). Panics naming `what`.
#[track_caller]
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every descriptor of this process with what it refers to (`3 -> socket:[1234]`), for
/// failure messages of the tests that count them.
pub fn described_fds() -> Vec<String> {
    open_fds()
        .into_iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"));
            format!("{fd} -> {}", target.map_or("?".into(), |t| t.display().to_string()))
        })
        .collect()
}

/// A directory of its own under the system's temporary directory, removed with everything in
/// it when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/herd-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("herd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The TCP sockets listening on `port` (any local address, IPv4 and IPv6), each with the
/// number of connections queued on it that nobody accepted yet: read from `/proc/net/tcp` and
/// `/proc/net/tcp6`, where a listening socket (state `0A`) shows its accept queue's length as
/// `rx_queue`. Empty once nothing listens there.
pub fn listening_sockets(port: u16) -> Vec<u32> {
    let suffix = format!(":{port:04X}");
    let mut queues = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // `sl local_address rem_address st tx_queue:rx_queue ...`
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, _, state, queues_field, ..] = fields[..] else { continue };
            if state != "0A" || !local.ends_with(&suffix) {
                continue;
            }
            let rx =
                queues_field.split_once(':').and_then(|(_, rx)| u32::from_str_radix(rx, 16).ok());
            queues.push(rx.unwrap_or(0));
        }
    }
    queues
}

/// The port of a `host:port` or `tcp://host:port` address.
#[track_caller]
pub fn port_of(address: &str) -> u16 {
    address
        .trim_start_matches("tcp://")
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

/// Sends `signal` to every process of `pids` with one kill(1) call: as close to "at once" as
/// a group signal (systemd's `KillMode=control-group` sends one to each process of the unit).
#[track_caller]
pub fn send_signal_to_all(pids: &[u32], signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .unwrap_or_else(|e| panic!("run kill -{signal} {pids:?}: {e}"));
    assert!(status.success(), "kill -{signal} {pids:?}: {status}");
}

/// CPU time (user + system) of process `pid` so far, in clock ticks (`/proc/PID/stat` fields
/// 14 and 15; 100 ticks a second on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
}
