//! The control socket's server ([`Cluster::control_socket`](crate::Cluster::control_socket);
//! the protocol is [`crate::control`]'s).
//!
//! The primary's loop never touches a client: a thread accepts (checking `SO_PEERCRED`), a
//! thread per connection reads the request line (bounded, with a timeout), parses it, queues
//! it for the loop and wakes it (a byte on a socket pair the loop polls), then writes the
//! replies the loop posts into a bounded queue. A `status` costs the loop one
//! [`Primary::stats`] (a brief registry lock and a few small `/proc` reads per worker). The loop acts on requests at its turn, as on
//! signals, and a client that does not read its replies is dropped, never waited for.
//!
//! A reply posted is a reply written: when the primary is dropped (a library app returning
//! from `main` right after [`Event::Drained`]), the server waits, up to [`IO_TIMEOUT`], for
//! the connection threads to write what was posted to them, since the process ending would
//! kill them with it (a `herd stop` would otherwise see its connection closed before even
//! its `stopping` line).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herd_registry::{Poller, Watched};

use super::{CONTROL_TOKEN, Event, Primary, State, trace};
use crate::control::{
    ClusterStatus, IO_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_BYTES, Reply, Request,
};
use crate::{Error, WorkerId, sys};

/// Replies that may wait for one connection's thread to write them: a client that lets more
/// pile up is dropped (a reload of a large cluster posts one per place).
const REPLY_QUEUE: usize = 256;

/// A parsed request, who sent it, and where its replies go.
struct Incoming {
    request: Request,
    peer: sys::PeerCredentials,
    reply: mpsc::SyncSender<Reply>,
}

/// A `scale` waiting for its new workers to come online and its removed ones to exit.
struct ScaleWait {
    reply: mpsc::SyncSender<Reply>,
    from: usize,
    to: usize,
    added: Vec<WorkerId>,
    removed: Vec<WorkerId>,
    deadline: Instant,
    within: Duration,
}

/// The primary's side of the control socket.
pub(super) struct ControlServer {
    path: PathBuf,
    /// The socket file's device and inode: only that file is removed at the end.
    identity: (u64, u64),
    requests: mpsc::Receiver<Incoming>,
    wake: Watched<UnixStream>,
    /// Dropped to tell the accept thread to end.
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    /// The connections whose request went to the loop and whose replies are still being
    /// written: waited for when the server is dropped.
    answering: Arc<Answering>,
    reloads: Vec<mpsc::SyncSender<Reply>>,
    stops: Vec<mpsc::SyncSender<Reply>>,
    scales: Vec<ScaleWait>,
}

impl ControlServer {
    /// Binds `path` (see [`Cluster::control_socket`](crate::Cluster::control_socket)) and
    /// starts the accept thread; its wake-ups arrive on `poller` under [`CONTROL_TOKEN`].
    pub(super) fn start(path: &Path, poller: &Arc<Poller>) -> Result<ControlServer, Error> {
        let fail = |op: &'static str| {
            let path = path.to_owned();
            move |source| Error::Control { path, op, source }
        };
        let (listener, identity) = bind(path)?;
        listener.set_nonblocking(true).map_err(fail("set it non-blocking"))?;
        let (wake_rx, wake_tx) = UnixStream::pair().map_err(fail("create its wake-up pair"))?;
        wake_rx.set_nonblocking(true).map_err(fail("set it non-blocking"))?;
        wake_tx.set_nonblocking(true).map_err(fail("set it non-blocking"))?;
        let (stop_rx, stop_tx) = UnixStream::pair().map_err(fail("create its stop pair"))?;
        stop_rx.set_nonblocking(true).map_err(fail("set it non-blocking"))?;
        let wake =
            Watched::new(poller, wake_rx, CONTROL_TOKEN).map_err(fail("watch its wake-up pair"))?;
        let (sender, requests) = mpsc::channel();
        let (uid, _) = sys::effective_ids();
        let answering = Arc::new(Answering::default());
        let shared = Arc::clone(&answering);
        let thread = std::thread::Builder::new()
            .name("herd-control".into())
            .spawn(move || accept_loop(&listener, &stop_rx, &sender, &wake_tx, uid, &shared))
            .map_err(fail("start its thread"))?;
        trace::control_listening(path);
        Ok(ControlServer {
            path: path.to_owned(),
            identity,
            requests,
            wake,
            stop: Some(stop_tx),
            thread: Some(thread),
            answering,
            reloads: Vec::new(),
            stops: Vec::new(),
            scales: Vec::new(),
        })
    }
}

impl Drop for ControlServer {
    /// Ends the accept thread, lets every connection write the replies posted to it (up to
    /// [`IO_TIMEOUT`] in all), and removes the socket file, if it is still the one bound.
    fn drop(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Every reply sender gone (the requests not taken yet go with the queue), each
        // connection's thread writes what it holds and ends.
        self.reloads.clear();
        self.stops.clear();
        self.scales.clear();
        drop(std::mem::replace(&mut self.requests, mpsc::channel().1));
        self.answering.wait_idle(Instant::now() + IO_TIMEOUT);
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How many connections are answering: their request went to the loop, and their thread
/// writes the replies until the loop drops its sender.
#[derive(Default)]
struct Answering {
    count: Mutex<usize>,
    done: Condvar,
}

impl Answering {
    /// Counts one connection in until the guard is dropped.
    fn start(self: &Arc<Self>) -> AnsweringGuard {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        AnsweringGuard(Arc::clone(self))
    }

    /// Waits until no connection is answering, or `deadline`.
    fn wait_idle(&self, deadline: Instant) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            count = self.done.wait_timeout(count, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// One connection answering; counted out on drop.
struct AnsweringGuard(Arc<Answering>);

impl Drop for AnsweringGuard {
    fn drop(&mut self) {
        *self.0.count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.done.notify_all();
    }
}

/// Binds the socket file, replacing a stale one (a socket nobody listens on), and makes it
/// mode 0600. Returns it with its device and inode.
fn bind(path: &Path) -> Result<(UnixListener, (u64, u64)), Error> {
    let fail = |op: &'static str| {
        let path = path.to_owned();
        move |source| Error::Control { path, op, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail("create its directory"))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_directory(dir).map_err(fail("check its directory"))?;
    }
    let listener = match UnixListener::bind(path) {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let stale_socket = std::fs::symlink_metadata(path)
                .is_ok_and(|m| m.file_type().is_socket())
                && UnixStream::connect(path)
                    .is_err_and(|c| c.kind() == std::io::ErrorKind::ConnectionRefused);
            if !stale_socket {
                // A live primary, or a file that is no socket: not ours to remove.
                return Err(fail("bind (another primary listens there, or it is no socket)")(e));
            }
            std::fs::remove_file(path).map_err(fail("remove the stale socket"))?;
            UnixListener::bind(path).map_err(fail("bind"))?
        }
        Err(e) => return Err(fail("bind")(e)),
    };
    // Connecting needs write permission on the file (`unix(7)`); SO_PEERCRED is checked on
    // every connection besides, so the moment between bind and chmod lets nobody in.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(fail("chmod 0600"))?;
    let meta = std::fs::symlink_metadata(path).map_err(fail("stat"))?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// Refuses a directory another user could replace the socket in (a `/tmp/herd-UID` made by
/// someone else beforehand, mode 0777): it must be owned by this process's uid or root, and
/// not writable by group or others unless sticky (`/tmp`'s 1777: only a file's owner may
/// remove or rename it, `unlink(2)`). A symbolic link is followed, and its target checked.
fn check_directory(dir: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let (uid, _) = sys::effective_ids();
    let owner = meta.uid();
    let shown = dir.display();
    let unsafe_because = if !meta.is_dir() {
        Some("is no directory".to_owned())
    } else if owner != uid && owner != 0 {
        Some(format!("is owned by uid {owner}, neither this process's ({uid}) nor root"))
    } else if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        Some(format!("is writable by others (mode {:o}) and not sticky", meta.mode() & 0o7777))
    } else {
        None
    };
    match unsafe_because {
        Some(why) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{shown} {why}: another user could replace the socket (remove it, or choose \
                 another path with --control)"
            ),
        )),
        None => Ok(()),
    }
}

/// The connections that have not sent their request yet, oldest first: each with a number
/// and a handle to shut it down when a new one needs its room.
#[derive(Default)]
struct Idle {
    next: u64,
    waiting: std::collections::VecDeque<(u64, UnixStream)>,
}

impl Idle {
    fn lock(idle: &Mutex<Idle>) -> std::sync::MutexGuard<'_, Idle> {
        idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// At most one refusal line a second in the log, with how many it stands for: a client
/// looping on a refused connect must not flood the log.
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(1);

    fn refuse(&mut self, stream: UnixStream, reason: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|at| now.duration_since(at) < Self::EVERY) {
            self.unlogged += 1;
        } else {
            match std::mem::take(&mut self.unlogged) {
                0 => trace::control_refused(reason),
                n => trace::control_refused(&format!("{reason} (and {n} more refused before)")),
            }
            self.last = Some(now);
        }
        if stream.set_nonblocking(true).is_ok() {
            let _ = write_reply(&stream, &Reply::Error { message: reason.to_owned() });
        }
    }
}

/// Accepts until `stop` reads end of stream (its other end dropped with the server).
fn accept_loop(
    listener: &UnixListener,
    stop: &UnixStream,
    requests: &mpsc::Sender<Incoming>,
    wake: &UnixStream,
    uid: u32,
    answering: &Arc<Answering>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let idle = Arc::new(Mutex::new(Idle::default()));
    let mut refusals = RefusalLog { last: None, unlogged: 0 };
    loop {
        if sys::wait_either(stop.as_fd(), listener.as_fd()).is_err() {
            return;
        }
        match (&*stop).read(&mut [0; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => return,
        }
        let Ok((stream, _)) = listener.accept() else { continue };
        let peer = match sys::peer_credentials(stream.as_fd()) {
            Ok(peer) => peer,
            Err(e) => {
                trace::control_refused(&format!("SO_PEERCRED: {e}: connection closed"));
                continue;
            }
        };
        if peer.uid != uid && peer.uid != 0 {
            let reason = format!(
                "uid {} (pid {}) may not use this control socket: only uid {uid} and root may",
                peer.uid, peer.pid
            );
            refusals.refuse(stream, &reason);
            continue;
        }
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            // As the metrics server does: the connection that has waited longest without a
            // request goes (its thread sees the end of stream and ends), so idle clients
            // cannot lock `herd status` out. One whose request is under way stays.
            let oldest = Idle::lock(&idle).waiting.pop_front();
            if let Some((_, old)) = oldest {
                let _ = old.shutdown(std::net::Shutdown::Both);
            } else {
                let reason = format!(
                    "pid {}: {MAX_CONNECTIONS} control connections are busy with requests: \
                     refused",
                    peer.pid
                );
                refusals.refuse(stream, &reason);
                continue;
            }
        }
        let Ok(wake) = wake.try_clone() else { continue };
        let Ok(handle) = stream.try_clone() else { continue };
        let number = {
            let mut idle = Idle::lock(&idle);
            idle.next += 1;
            let number = idle.next;
            idle.waiting.push_back((number, handle));
            number
        };
        let requests = requests.clone();
        active.fetch_add(1, Ordering::SeqCst);
        let count = Arc::clone(&active);
        let answering = Arc::clone(answering);
        let idle = Arc::clone(&idle);
        let spawned =
            std::thread::Builder::new().name("herd-control-conn".into()).spawn(move || {
                let unlist = || Idle::lock(&idle).waiting.retain(|(n, _)| *n != number);
                serve(stream, peer, &requests, &wake, &answering, unlist);
                Idle::lock(&idle).waiting.retain(|(n, _)| *n != number);
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn write_reply(mut stream: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// One connection: its request line, to the loop, and the replies back, each read and write
/// within [`IO_TIMEOUT`]. `unlist` takes it off the idle list once its request is read.
fn serve(
    stream: UnixStream,
    peer: sys::PeerCredentials,
    requests: &mpsc::Sender<Incoming>,
    wake: &UnixStream,
    answering: &Arc<Answering>,
    unlist: impl FnOnce(),
) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    if setup.is_err() {
        return;
    }
    let error = |message: String| {
        trace::control_refused(&format!("pid {}: {message}", peer.pid));
        let _ = write_reply(&stream, &Reply::Error { message });
    };
    let mut line = Vec::new();
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    match BufReader::new((&stream).take(limit)).read_until(b'\n', &mut line) {
        Ok(_) if line.len() > MAX_REQUEST_BYTES => {
            return error(format!("a request is one line of at most {MAX_REQUEST_BYTES} bytes"));
        }
        // Closed without a request: by the client, or shut for a newer connection.
        Ok(0) => return,
        Ok(_) => unlist(),
        Err(e) => return error(format!("no request line within {IO_TIMEOUT:?}: {e}")),
    }
    let request = match serde_json::from_slice::<Request>(&line) {
        Ok(request) => request,
        Err(e) => {
            let shown = String::from_utf8_lossy(&line);
            return error(format!("not a request ({e}): {:?}", shown.trim_end()));
        }
    };
    let (reply, replies) = mpsc::sync_channel(REPLY_QUEUE);
    // Counted before the loop can post anything, so a server dropped meanwhile waits for it.
    let _answering = answering.start();
    if requests.send(Incoming { request, peer, reply }).is_err() {
        return error("the primary is gone".into());
    }
    // A full pair means a wake-up is pending already.
    let _ = (&*wake).write(&[1]);
    for reply in replies {
        if write_reply(&stream, &reply).is_err() {
            return;
        }
    }
}

/// How a request is named in the log.
fn describe(request: &Request) -> String {
    match request {
        Request::Status => "status".into(),
        Request::Reload => "reload".into(),
        Request::Scale { workers } => format!("scale {workers}"),
        Request::Stop => "stop".into(),
    }
}

impl Primary {
    /// The wake-up pair is readable: acts on every request queued.
    pub(super) fn on_control_socket(&mut self) {
        let Some(control) = &self.control else { return };
        let mut drained = [0; 64];
        while matches!(control.wake.get().read(&mut drained), Ok(n) if n > 0) {}
        let incoming: Vec<Incoming> = control.requests.try_iter().collect();
        for request in incoming {
            self.control_request(request);
        }
    }

    fn control_request(&mut self, incoming: Incoming) {
        let Incoming { request, peer, reply } = incoming;
        trace::control_request(&describe(&request), peer.uid, peer.pid);
        let error = |message: String| {
            let _ = reply.try_send(Reply::Error { message });
        };
        match request {
            Request::Status => {
                let _ = reply.try_send(Reply::Status(Box::new(self.control_status())));
            }
            // A second stop does what a second SIGTERM does: the hard stop.
            Request::Stop if self.stopping => {
                let workers = self.workers.values().filter(|w| w.exit.is_some()).count();
                let _ = reply.try_send(Reply::Stopping { workers, now: true });
                self.stop_now();
                if let Some(control) = &mut self.control {
                    control.stops.push(reply);
                }
            }
            _ if self.stopping => error("the cluster is stopping".into()),
            Request::Reload => {
                self.restart_all();
                let workers = self.rolling_places();
                let _ = reply.try_send(Reply::Restarting { workers });
                if let Some(control) = &mut self.control {
                    control.reloads.push(reply);
                }
            }
            Request::Scale { workers: 0 } => {
                error("scale 0: a cluster keeps at least 1 worker (`herd stop` stops it)".into());
            }
            Request::Scale { workers } if workers > crate::MAX_WORKERS => error(format!(
                "scale {workers}: at most {} workers (herd::MAX_WORKERS)",
                crate::MAX_WORKERS
            )),
            Request::Scale { workers } => self.control_scale(workers, reply),
            Request::Stop => {
                let _ =
                    reply.try_send(Reply::Stopping { workers: self.worker_count(), now: false });
                self.disconnect_all();
                if let Some(control) = &mut self.control {
                    control.stops.push(reply);
                }
            }
        }
    }

    /// Adds or removes workers until the cluster counts `to`, then waits (in
    /// [`control_advance`](Primary::control_advance)) until it is true.
    fn control_scale(&mut self, to: usize, reply: mpsc::SyncSender<Reply>) {
        let from = self.worker_count();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let mut failure = None;
        while self.worker_count() < to {
            match self.add_worker() {
                Ok(id) => added.push(id),
                Err(e) => {
                    let reason = e.to_string();
                    trace::fork_failed(None, &reason);
                    self.events.push_back(Event::ForkFailed { reason: reason.clone() });
                    failure = Some(reason);
                    break;
                }
            }
        }
        while self.worker_count() > to {
            let before = self.worker_count();
            removed.extend(self.remove_worker_down_to(to));
            if self.worker_count() == before {
                break;
            }
        }
        let now_count = self.worker_count();
        if now_count != from {
            trace::scaled(from, now_count);
            self.events.push_back(Event::Scaled { from, to: now_count });
        }
        if let Some(reason) = failure {
            let message = format!("scaled from {from} to {now_count} workers, not {to}: {reason}");
            let _ = reply.try_send(Reply::Error { message });
            return;
        }
        let within = self.settings.ready_timeout + self.settings.kill_timeout;
        let deadline = Instant::now() + within;
        if let Some(control) = &mut self.control {
            let to = now_count;
            control.scales.push(ScaleWait { reply, from, to, added, removed, deadline, within });
        }
    }

    /// Answers the `scale` requests that are done, failed or out of time.
    pub(super) fn control_advance(&mut self) {
        let Some(control) = &mut self.control else { return };
        if control.scales.is_empty() {
            return;
        }
        let now = Instant::now();
        let workers = &self.workers;
        control.scales.retain(|wait| {
            let up = |id: &WorkerId| {
                workers.get(id).is_some_and(|w| matches!(w.state, State::Online | State::Listening))
            };
            let died = wait.added.iter().find(|id| {
                workers.get(id).is_none_or(|w| matches!(w.state, State::Dead | State::Disconnected))
            });
            let reply = if let Some(id) = died {
                Reply::Error { message: format!("worker {id} died before it was online") }
            } else if wait.added.iter().all(up)
                && wait.removed.iter().all(|id| !workers.contains_key(id))
            {
                Reply::Scaled { from: wait.from, to: wait.to }
            } else if now >= wait.deadline {
                Reply::Error {
                    message: format!(
                        "scaled from {} to {} workers, but not all online (or gone) within {:?}",
                        wait.from, wait.to, wait.within
                    ),
                }
            } else {
                return true;
            };
            let _ = wait.reply.try_send(reply);
            false
        });
    }

    /// When the earliest `scale` request times out.
    pub(super) fn control_deadline(&self) -> Option<Instant> {
        self.control.as_ref()?.scales.iter().map(|w| w.deadline).min()
    }

    /// A rolling restart replaced the worker of `place`: each `reload` client hears it.
    pub(super) fn control_replaced(
        &mut self,
        place: usize,
        old: WorkerId,
        new: WorkerId,
        pid: u32,
        ready: Duration,
    ) {
        let Some(control) = &mut self.control else { return };
        let reply = Reply::Replaced { place, old, new, pid, ready_seconds: ready.as_secs_f64() };
        control.reloads.retain(|r| r.try_send(reply.clone()).is_ok());
    }

    /// The rolling restart ended: places replaced and how long it took, or why it aborted.
    pub(super) fn control_restart_ended(&mut self, outcome: Result<(usize, Duration), String>) {
        let Some(control) = &mut self.control else { return };
        let reply = match outcome {
            Ok((replaced, took)) => Reply::Restarted { replaced, seconds: took.as_secs_f64() },
            Err(message) => Reply::Error { message },
        };
        for r in control.reloads.drain(..) {
            let _ = r.try_send(reply.clone());
        }
    }

    /// The stop is over.
    pub(super) fn control_drained(&mut self) {
        let Some(control) = &mut self.control else { return };
        for r in control.stops.drain(..) {
            let _ = r.try_send(Reply::Drained);
        }
    }

    /// The cluster as `status` reports it.
    fn control_status(&self) -> ClusterStatus {
        ClusterStatus {
            name: self.settings.name.clone(),
            worker_count: self.worker_count(),
            restarting: self.rolling.is_some(),
            handles: self.handles(),
            stats: self.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the loop posted to a connection is written before the server's drop returns,
    /// though the client takes it slower than that: a process that ends right after its
    /// primary is dropped loses no reply.
    #[test]
    fn a_dropped_server_writes_the_replies_posted_before_it_returns() {
        let dir = std::env::temp_dir().join(format!("herd-control-drop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("control.sock");
        let poller = Arc::new(Poller::new().expect("a poller"));
        let server = ControlServer::start(&path, &poller).expect("the server");
        let mut client = UnixStream::connect(&path).expect("connect");
        client.write_all(b"{\"cmd\":\"stop\"}\n").expect("the request");
        let incoming = server.requests.recv_timeout(Duration::from_secs(30)).expect("the request");
        // More than the socket's buffer holds: the thread writes as the client reads.
        let reply = Reply::Error { message: "x".repeat(2000) };
        for _ in 0..REPLY_QUEUE {
            incoming.reply.try_send(reply.clone()).expect("room in the queue");
        }
        let reader = std::thread::spawn(move || {
            let mut lines = 0;
            for line in BufReader::new(client).lines() {
                assert!(line.expect("a reply line").contains("xxx"));
                lines += 1;
            }
            lines
        });
        drop(incoming);
        let answering = Arc::clone(&server.answering);
        drop(server);
        let left = *answering.count.lock().unwrap();
        assert_eq!(left, 0, "the drop returned with {left} connection(s) still writing");
        assert_eq!(reader.join().expect("the reader"), REPLY_QUEUE);
        assert!(!path.exists(), "the socket file is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
