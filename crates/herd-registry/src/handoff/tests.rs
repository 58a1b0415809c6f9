//! Unit tests of the hand-off handle for interleavings the registry's public API cannot
//! order: a send to a worker that fails before its channel is read, and send failures other
//! than a closed channel (injected through [`Outlet`]'s test-only `faults`, since `ENOBUFS`
//! and the like cannot be produced on demand).

use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_handle::{BindOptions, Bound, Spec, bind};
use herd_ipc::Channel;
use herd_sched::{ConnId, Pick, WorkerId};

use super::Handoff;
use super::outlet::RETRY_PAUSE;
use crate::sys::{Events, Poller, Watched, codes};
use crate::wire::{FromWorker, ToWorker};

const DEADLINE: Duration = Duration::from_secs(10);

/// The listener's poller key; workers get keys from 100 up.
const LISTENER: usize = 1;

/// One `rr` hand-off handle on 127.0.0.1, driven by hand.
struct Fixture {
    poller: Arc<Poller>,
    handoff: Handoff,
    address: SocketAddr,
    next_conn: ConnId,
    clients: Vec<TcpStream>,
}

impl Fixture {
    fn new(max_in_flight: usize) -> Fixture {
        let poller = Arc::new(Poller::new().expect("poller"));
        let spec: Spec = "tcp://127.0.0.1:0".parse().expect("spec");
        let Ok(Bound::Listener(listener)) = bind(&spec, &BindOptions::default()) else {
            panic!("bind {spec}");
        };
        let address = listener.local_addr().expect("local address").socket_addr().expect("ip");
        let listener = Watched::new(&poller, listener, LISTENER).expect("watch the listener");
        let max = NonZeroUsize::new(max_in_flight).expect("max_in_flight > 0");
        let handoff = Handoff::new(listener, Pick::RoundRobin, max);
        Fixture { poller, handoff, address, next_conn: 0, clients: Vec::new() }
    }

    fn add_worker(&mut self, worker: WorkerId) -> Channel {
        let token = 100 + worker as usize;
        self.handoff.add_worker(&self.poller, worker, token).expect("add a worker")
    }

    /// A client connects, and the handle accepts it (and hands it out) once the listener is
    /// readable. Worker channels are not read: only the listener's handler runs.
    fn connect_and_accept(&mut self) -> ConnId {
        let conn = self.next_conn;
        self.clients.push(TcpStream::connect(self.address).expect("connect"));
        let deadline = Instant::now() + DEADLINE;
        let mut events = Events::new();
        while self.handoff.stats().accepted <= conn {
            assert!(Instant::now() < deadline, "connection {conn} not accepted");
            events.clear();
            self.poller.wait(&mut events, Some(Duration::from_millis(100))).expect("wait");
            if events.iter().any(|e| e.key == LISTENER) {
                self.handoff.on_listener_ready(&mut self.next_conn);
            }
        }
        conn
    }

    /// Runs the handle's timer until nothing is scheduled, at most `turns` times.
    fn run_timers(&mut self, turns: usize) {
        for _ in 0..turns {
            let Some(at) = self.handoff.deadline() else { return };
            self.handoff.on_timer(at);
        }
    }
}

/// The worker's next `NewConn`, which must be queued already, with its one descriptor.
#[track_caller]
fn received(worker: &Channel) -> ConnId {
    let (ToWorker::NewConn { conn, .. }, fds) = worker.try_recv_value().expect("a NewConn queued");
    assert_eq!(fds.len(), 1, "NewConn {conn} carries its descriptor");
    conn
}

#[track_caller]
fn assert_nothing_queued(worker: &Channel) {
    match worker.try_recv_value::<ToWorker>() {
        Err(e) if e.is_would_block() => {}
        other => panic!("expected nothing queued, got {other:?}"),
    }
}

fn io_error(errno: i32) -> herd_ipc::Error {
    herd_ipc::Error::Io { op: "sendmsg", source: std::io::Error::from_raw_os_error(errno) }
}

#[test]
fn a_worker_whose_send_fails_has_its_acks_applied_before_its_connections_are_requeued() {
    let mut f = Fixture::new(2);
    let w1 = f.add_worker(1);
    let a = f.connect_and_accept();
    assert_eq!(received(&w1), a);
    // Worker 1 takes A, acks, and exits; the primary has not read its channel yet.
    w1.send_value(&FromWorker::Ack { conn: a, accepted: true, idle: 0 }, &[]).expect("ack");
    drop(w1);

    // B arrives first: sending it to worker 1 fails (closed), and worker 1 leaves the handle.
    let b = f.connect_and_accept();
    assert!(!f.handoff.has_worker(1), "the closed worker left the handle");
    let stats = f.handoff.stats();
    assert_eq!(stats.delivered, 1, "worker 1's ack for A was applied before it left");
    assert_eq!(f.handoff.held(), 1, "only B is still held: {stats:?}");

    // The next worker gets B, and only B: A has been served once already.
    let w2 = f.add_worker(2);
    assert_eq!(received(&w2), b);
    assert_nothing_queued(&w2);
}

#[test]
fn a_transient_send_error_keeps_the_worker_and_sends_again_after_a_pause() {
    let mut f = Fixture::new(1);
    let w1 = f.add_worker(1);
    f.handoff.workers.get_mut(&1).expect("worker 1").faults.push_back(io_error(codes::ENOBUFS));
    let before = Instant::now();
    let a = f.connect_and_accept();

    assert!(f.handoff.has_worker(1), "ENOBUFS does not mean the worker is gone");
    assert_eq!(f.handoff.stats().send_errors, 1);
    assert_nothing_queued(&w1);
    let retry = f.handoff.deadline().expect("a retry is scheduled");
    assert!(retry >= before + RETRY_PAUSE, "the retry waits for the pause");

    f.handoff.on_timer(retry);
    assert_eq!(received(&w1), a, "sent again once the pause is over");
    assert_eq!(f.handoff.deadline(), None);
    assert_eq!(f.handoff.stats().send_errors, 1);
}

#[test]
fn a_message_that_can_never_be_sent_goes_to_another_worker() {
    let mut f = Fixture::new(1);
    let w1 = f.add_worker(1);
    let w2 = f.add_worker(2);
    f.handoff.workers.get_mut(&1).expect("worker 1").faults.push_back(io_error(codes::EMSGSIZE));
    let a = f.connect_and_accept();

    // Worker 1 (first in the rotation) could not be sent A: it counts as its refusal.
    assert!(f.handoff.has_worker(1));
    assert_eq!(f.handoff.stats().send_errors, 1);
    assert_eq!(received(&w2), a);
    assert_nothing_queued(&w1);
    // Worker 1 still gets the next one.
    let b = f.connect_and_accept();
    assert_eq!(received(&w1), b);
}

#[test]
fn a_transient_error_that_never_clears_does_not_wedge_the_queue() {
    let mut f = Fixture::new(1);
    let w1 = f.add_worker(1);
    let w2 = f.add_worker(2);
    let faults = &mut f.handoff.workers.get_mut(&1).expect("worker 1").faults;
    faults.extend((0..1000).map(|_| io_error(codes::ENOBUFS)));
    let a = f.connect_and_accept();
    f.run_timers(1000);

    // After about a second of retries A goes to worker 2; worker 1 stays.
    assert_eq!(received(&w2), a);
    assert!(f.handoff.has_worker(1));
    assert_eq!(f.handoff.stats().send_errors, 100);
    assert_nothing_queued(&w1);
}

#[test]
fn a_deferred_connection_is_never_closed_and_goes_out_again_after_the_pause() {
    let mut f = Fixture::new(1);
    let w1 = f.add_worker(1);
    let w2 = f.add_worker(2);
    let a = f.connect_and_accept();
    assert_eq!(received(&w1), a);
    // Worker 1 lost A's descriptor: A goes to worker 2.
    let before = Instant::now();
    w1.send_value(&FromWorker::Deferred { conn: a }, &[]).expect("defer");
    f.handoff.on_worker_ready(1);
    assert_eq!(received(&w2), a);
    // Worker 2 too: everyone is held off, A waits in the primary, nothing is closed.
    w2.send_value(&FromWorker::Deferred { conn: a }, &[]).expect("defer");
    f.handoff.on_worker_ready(2);
    assert_nothing_queued(&w1);
    assert_nothing_queued(&w2);
    let stats = f.handoff.stats();
    assert_eq!((stats.deferred, stats.refused, f.handoff.held()), (2, 0, 1), "{stats:?}");
    // After the pause A goes out again, to worker 1 (first in the rotation of the resumed).
    let resume = f.handoff.deadline().expect("the pause ends");
    assert!(resume >= before + super::DEFER_PAUSE, "the pause lasts");
    f.handoff.on_timer(resume);
    let again = [&w1, &w2].iter().filter_map(|w| w.try_recv_value::<ToWorker>().ok()).count();
    assert_eq!(again, 1, "A is sent again to exactly one worker");
    assert_eq!(f.handoff.held(), 1);
}
