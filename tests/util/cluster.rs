//! A primary driven by a test, with the `cluster-worker` fixture as its workers.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use herd::{Cluster, Event, Policy, Primary, Stdio, WorkerId};

use crate::DEADLINE;

/// A primary in the test process. Its workers get SIGKILL if the test thread dies, and are
/// reaped when it drops.
pub struct TestCluster {
    /// The primary.
    pub primary: Primary,
    /// Events seen while waiting for something else, oldest first.
    pub seen: Vec<Event>,
}

impl TestCluster {
    /// A primary running `exec` as its workers under `policy`, with no worker yet.
    pub fn new(exec: &str, policy: Option<Policy>) -> TestCluster {
        let mut cluster =
            Cluster::new().exec(exec).args(Vec::<String>::new()).stdio(Stdio::Prefixed);
        if let Some(policy) = policy {
            cluster = cluster.policy(policy);
        }
        TestCluster::with(cluster)
    }

    /// A primary with these settings (set `exec` to a fixture), with no worker yet.
    pub fn with(cluster: Cluster) -> TestCluster {
        TestCluster { primary: cluster.primary().expect("become the primary"), seen: Vec::new() }
    }

    /// Forks `count` workers and waits until each is online; returns their ids.
    pub fn fork_online(&mut self, count: usize) -> Vec<WorkerId> {
        let ids: Vec<WorkerId> = (0..count).map(|_| self.primary.fork().expect("fork")).collect();
        for &id in &ids {
            self.wait_for(
                &format!("worker {id} online"),
                |e| matches!(e, Event::Online(w) if *w == id),
            );
        }
        ids
    }

    /// Runs the primary until an event matches, within [`DEADLINE`]; other events are kept in
    /// `seen`. Panics naming `what` on timeout.
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, mut matches: impl FnMut(&Event) -> bool) -> Event {
        if let Some(i) = self.seen.iter().position(&mut matches) {
            return self.seen.remove(i);
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.primary.next_event(Some(left)).expect("primary event loop") {
                Some(event) if matches(&event) => return event,
                Some(event) => self.seen.push(event),
                None => panic!("{what}: not within {DEADLINE:?}; events seen: {:?}", self.seen),
            }
        }
    }

    /// Runs the primary's loop for `duration` (to let it hand out connections while a test
    /// thread works), keeping the events.
    pub fn pump(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Some(event) = self.primary.next_event(Some(left)).expect("primary event loop") {
                self.seen.push(event);
            }
        }
    }

    /// Sends a command to a worker and returns its answer: the next message from that worker
    /// whose first word is `answer` (or `error`).
    #[track_caller]
    pub fn command(&mut self, worker: WorkerId, command: &str, answer: &str) -> String {
        self.command_with_fds(worker, command, &[], answer).0
    }

    /// [`command`](TestCluster::command) with descriptors attached both ways.
    #[track_caller]
    pub fn command_with_fds(
        &mut self,
        worker: WorkerId,
        command: &str,
        fds: &[BorrowedFd<'_>],
        answer: &str,
    ) -> (String, Vec<OwnedFd>) {
        self.primary.send(worker, command.as_bytes(), fds).expect("send a command");
        let event = self.wait_for(&format!("worker {worker} answering {command:?}"), |e| {
            matches!(e, Event::Message { worker: w, data, .. } if *w == worker && {
                let first = data.split(|b| *b == b' ').next().unwrap_or_default();
                first == answer.as_bytes() || first == b"error"
            })
        });
        let Event::Message { data, fds, .. } = event else { unreachable!() };
        (String::from_utf8(data).expect("utf-8 answer"), fds)
    }

    /// `listen <spec> <flags>` on a worker: the listener number and the address, or panics with
    /// the worker's error.
    #[track_caller]
    pub fn listen(&mut self, worker: WorkerId, spec: &str, flags: &str) -> (usize, String) {
        let (n, address, _) = self.listen_kind(worker, spec, flags);
        (n, address)
    }

    /// [`listen`](TestCluster::listen), with the kind of listener the worker got: `socket`
    /// (it accepts on a listening socket) or `handoff` (connections come from the primary).
    #[track_caller]
    pub fn listen_kind(
        &mut self,
        worker: WorkerId,
        spec: &str,
        flags: &str,
    ) -> (usize, String, String) {
        let answer = self.command(worker, &format!("listen {spec} {flags}"), "listening");
        let mut words = answer.split_whitespace();
        assert_eq!(words.next(), Some("listening"), "worker {worker}: {answer}");
        let n = words.next().and_then(|w| w.parse().ok()).expect("listener number");
        let address = words.next().expect("address").to_owned();
        (n, address, words.next().expect("listener kind").to_owned())
    }

    /// Connects to `address` (a `tcp://` spec or `host:port`) while the primary runs, and
    /// returns what the server wrote before closing.
    #[track_caller]
    pub fn fetch(&mut self, address: &str) -> String {
        let address = address.trim_start_matches("tcp://").to_owned();
        self.run_client(&format!("fetch {address}"), move || {
            let mut stream = TcpStream::connect(&address)?;
            stream.set_read_timeout(Some(DEADLINE))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
    }

    /// [`fetch`](TestCluster::fetch) from a unix socket at `path`.
    #[track_caller]
    pub fn fetch_unix(&mut self, path: &Path) -> String {
        let path = path.to_owned();
        self.run_client(&format!("fetch {}", path.display()), move || {
            let mut stream = UnixStream::connect(&path)?;
            stream.set_read_timeout(Some(DEADLINE))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
    }

    /// Runs `client` on a thread while the primary's loop runs, and returns its result; panics
    /// naming `what` if it fails or takes longer than [`DEADLINE`].
    #[track_caller]
    pub fn run_client<T: Send + 'static>(
        &mut self,
        what: &str,
        client: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> T {
        let client = std::thread::spawn(client);
        let deadline = Instant::now() + DEADLINE;
        while !client.is_finished() {
            assert!(Instant::now() < deadline, "{what}: no answer within {DEADLINE:?}");
            // Short slices: a hand-off takes a few loop turns, and nothing announces its end.
            self.pump(Duration::from_millis(1));
        }
        client.join().expect("client thread").unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Runs the primary's loop until `done` holds, within [`DEADLINE`]: for states that no
    /// event announces (a handle closed, a connection held). Panics naming `what` on timeout.
    #[track_caller]
    pub fn pump_until(&mut self, what: &str, mut done: impl FnMut(&mut TestCluster) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {DEADLINE:?}; handles {:?}, connections held {}, events seen \
                 {:?}",
                self.primary.handles(),
                self.primary.connections_held(),
                self.seen
            );
            self.pump(Duration::from_millis(2));
        }
    }

    /// `close <n>` on a worker: its listener `n` is dropped when this returns.
    #[track_caller]
    pub fn close(&mut self, worker: WorkerId, n: usize) {
        let answer = self.command(worker, &format!("close {n}"), "closed");
        assert_eq!(answer, format!("closed {n}"), "worker {worker}");
    }

    /// Waits for worker `id`'s `Exit` event and returns its status.
    #[track_caller]
    pub fn wait_exit(&mut self, id: WorkerId) -> ExitStatus {
        let event = self.wait_for(
            &format!("worker {id} exit"),
            |e| matches!(e, Event::Exit { worker, .. } if *worker == id),
        );
        let Event::Exit { status, .. } = event else { unreachable!() };
        status
    }
}

/// Settings for a primary whose workers run `exec` (a fixture) under `policy`, with their
/// output prefixed.
pub fn fixture_settings(exec: &str, policy: &str) -> Cluster {
    Cluster::new()
        .exec(exec)
        .args(Vec::<String>::new())
        .stdio(Stdio::Prefixed)
        .policy(policy.parse().expect("a policy name"))
}

/// `count` clients connected to `address` (a `tcp://` spec or `host:port`), each reading with
/// a timeout of [`DEADLINE`]. The kernel completes a connect whether or not anyone accepts it.
pub fn connect_clients(address: &str, count: usize) -> Vec<TcpStream> {
    let target = address.trim_start_matches("tcp://");
    (0..count)
        .map(|_| {
            let stream = TcpStream::connect(target).expect("connect");
            stream.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
            stream
        })
        .collect()
}

impl TestCluster {
    /// What the server writes to each client before closing (or the error), read on a thread
    /// while the primary runs; panics naming `what` past [`DEADLINE`].
    #[track_caller]
    pub fn answers(&mut self, what: &str, clients: Vec<TcpStream>) -> Vec<std::io::Result<String>> {
        self.run_client(what, move || {
            Ok(clients
                .into_iter()
                .map(|mut stream| {
                    let mut text = String::new();
                    stream.read_to_string(&mut text).map(|_| text)
                })
                .collect())
        })
    }
}

/// Makes every `cluster-worker` fixture listen there as it starts (see the fixture's docs).
pub const AUTOLISTEN: &str = "HERD_TEST_AUTOLISTEN";

/// `settings` with respawning on: `initial` doubling to `max`, never reset (workers here live
/// well under a minute), at most `max_restarts` within a minute.
pub fn respawning(
    settings: Cluster,
    initial: Duration,
    max: Duration,
    max_restarts: usize,
) -> Cluster {
    settings.respawn(herd::RespawnPolicy {
        enabled: true,
        initial_delay: initial,
        max_delay: max,
        stable_after: Duration::from_secs(60),
        max_restarts: Some(max_restarts),
        window: Duration::from_secs(60),
    })
}

/// A primary with `count` fixture workers that all listen on one port-0 address (and so will
/// every worker it forks later); returns it with their ids and the `tcp://` address.
pub fn serving(settings: Cluster, count: usize) -> (TestCluster, Vec<WorkerId>, String) {
    let mut c = TestCluster::with(settings.env(AUTOLISTEN, "tcp://127.0.0.1:0"));
    let ids = c.fork_online(count);
    let mut address: Option<String> = None;
    for &id in &ids {
        let at = c.listening(id);
        assert_eq!(*address.get_or_insert_with(|| at.clone()), at, "worker {id}: one address");
    }
    (c, ids, address.unwrap())
}

impl TestCluster {
    /// Waits for worker `id`'s `Listening` event; returns the address.
    #[track_caller]
    pub fn listening(&mut self, id: WorkerId) -> String {
        let event = self.wait_for(
            &format!("worker {id} listening"),
            |e| matches!(e, Event::Listening { worker, .. } if *worker == id),
        );
        let Event::Listening { address, .. } = event else { unreachable!() };
        address.to_string()
    }

    /// Waits for worker `id`'s `Exit` event; returns its status and `after_disconnect`.
    #[track_caller]
    pub fn exit_of(&mut self, id: WorkerId) -> (ExitStatus, bool) {
        let event = self.wait_for(
            &format!("worker {id} exit"),
            |e| matches!(e, Event::Exit { worker, .. } if *worker == id),
        );
        let Event::Exit { status, after_disconnect, .. } = event else { unreachable!() };
        (status, after_disconnect)
    }
}

/// `count` distinct TCP ports that were free a moment ago on 127.0.0.1 (bound together on port
/// 0, read, and released).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local_addr").port()).collect()
}

/// The worker id in a `worker <id> pid <pid>` greeting.
pub fn greeting_worker(text: &str) -> WorkerId {
    text.split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("not a greeting: {text:?}"))
}
