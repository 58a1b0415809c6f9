//! Worker lives, end to end: graceful disconnect from either side, the kill timeout,
//! `disconnect_all` and `Drained`, respawn with backoff and its limit, rolling restarts under
//! load and their readiness deadline, removing and adding workers. A primary in this test process, `cluster-worker`
//! fixtures as its workers.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herd::{Cluster, Event, Signal, WorkerId};
use herd_tests::cluster::{TestCluster, fixture_settings, greeting_worker, respawning, serving};
use herd_tests::{DEADLINE, may_fork, no_forks_elsewhere, process_gone};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Settings for a primary whose workers are the fixture, under `policy`.
fn settings(policy: &str) -> Cluster {
    fixture_settings(WORKER, policy)
}

fn is_message(event: &Event, from: WorkerId, text: &str) -> bool {
    matches!(event, Event::Message { worker, data, .. } if *worker == from && data == text.as_bytes())
}

/// The `Fork` events of workers after `last` and the `Respawning` events among `seen`.
fn forks_and_respawns(c: &TestCluster, last: WorkerId) -> Vec<&Event> {
    let new = |e: &&Event| match e {
        Event::Fork(id) => *id > last,
        Event::Respawning { .. } => true,
        _ => false,
    };
    c.seen.iter().filter(new).collect()
}

/// A client connected to a `hold` listener: the worker that takes it answers only after
/// [`finish`](HeldClient::finish) sends a line.
struct HeldClient(TcpStream);

impl HeldClient {
    fn connect(address: &str) -> HeldClient {
        let stream = TcpStream::connect(address.trim_start_matches("tcp://")).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        HeldClient(stream)
    }

    /// Sends the line and reads what the worker writes before closing.
    fn finish(mut self) -> std::io::Result<String> {
        self.0.write_all(b"go\n")?;
        let mut text = String::new();
        self.0.read_to_string(&mut text)?;
        Ok(text)
    }
}

/// A fixture worker's greeting (`worker <id> pid <pid>`) read from `address` on a new
/// connection: the worker id, or what went wrong.
fn fetch_once(address: &str) -> Result<WorkerId, String> {
    let mut stream = TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(DEADLINE)).map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| format!("read: {e}"))?;
    text.strip_prefix("worker ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("not a greeting: {text:?}"))
}

/// A client thread fetching greetings from `address` one after another until stopped (or for
/// at most [`DEADLINE`]).
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: JoinHandle<Vec<Result<WorkerId, String>>>,
}

impl Load {
    fn start(address: &str) -> Load {
        let address = address.trim_start_matches("tcp://").to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&done));
        let thread = std::thread::spawn(move || {
            let mut results = Vec::new();
            // Bounded: a test that fails before stopping it leaves it running.
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < DEADLINE {
                results.push(fetch_once(&address));
                count.fetch_add(1, Ordering::Relaxed);
            }
            results
        });
        Load { stop, done, thread }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops the client, running the primary meanwhile (under `rr` its fetch in progress needs
    /// it); returns every result.
    fn stop(self, c: &mut TestCluster) -> Vec<Result<WorkerId, String>> {
        self.stop.store(true, Ordering::Relaxed);
        c.pump_until("the load client stops", |_| self.thread.is_finished());
        self.thread.join().expect("load client thread")
    }
}

#[test]
fn a_graceful_disconnect_lets_open_connections_finish_and_sends_new_ones_elsewhere() {
    let _forks = may_fork();
    let mut c = TestCluster::with(settings("rr"));
    let [old, other] = c.fork_online(2)[..] else { unreachable!() };
    // The old worker listens alone first, so the held connection is surely its.
    let (n, address) = c.listen(old, "tcp://127.0.0.1:0", "hold");
    let held = HeldClient::connect(&address);
    c.wait_for("the old worker holds a connection", |e| is_message(e, old, &format!("held {n}")));
    let (_, same) = c.listen(other, "tcp://127.0.0.1:0", "");
    assert_eq!(same, address);
    let old_pid = c.primary.worker(old).unwrap().pid;

    c.primary.disconnect(old).unwrap();
    assert!(c.primary.worker(old).unwrap().disconnecting, "the primary marks it disconnecting");
    for i in 0..10 {
        let greeting = c.fetch(&address);
        assert_eq!(greeting_worker(&greeting), other, "fetch {i} after the disconnect");
    }
    let early: Vec<_> = c
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Exit { worker, .. } if *worker == old))
        .collect();
    assert!(early.is_empty(), "the old worker exited with a connection open: {early:?}");
    assert!(!process_gone(old_pid), "the old worker lives while its connection is open");

    let answer = c.run_client("the held client's answer", move || held.finish());
    assert_eq!(greeting_worker(&answer), old, "the held connection is served to the end");
    let (status, after_disconnect) = c.exit_of(old);
    assert!(after_disconnect, "the exit follows the disconnect");
    assert_eq!(status.code(), Some(0), "a graceful exit: {status:?}");
    assert_eq!(greeting_worker(&c.fetch(&address)), other, "the other worker still serves");
}

#[test]
fn a_worker_that_disconnects_itself_exits_after_disconnect_and_is_not_respawned() {
    let _forks = may_fork();
    let (mut c, ids, address) = serving(respawning(settings("rr"), ms(20), ms(20), 10), 2);
    let [leaving, staying] = ids[..] else { unreachable!() };
    assert_eq!(c.command(leaving, "disconnect", "disconnecting"), "disconnecting");
    let (status, after_disconnect) = c.exit_of(leaving);
    assert!(after_disconnect, "a worker-side disconnect counts as one");
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The respawn delay is 20 ms: 500 ms is ample time for a wrong respawn to show.
    c.pump(ms(500));
    let forked = forks_and_respawns(&c, staying);
    assert!(forked.is_empty(), "no respawn after a disconnect: {forked:?}");
    let left: Vec<WorkerId> = c.primary.workers().map(|w| w.id).collect();
    assert_eq!(left, [staying]);
    for i in 0..5 {
        assert_eq!(greeting_worker(&c.fetch(&address)), staying, "fetch {i}");
    }
}

#[test]
fn disconnect_all_reports_drained_only_once_every_worker_exited_and_every_handle_closed() {
    // Asserts at the end that the socket is closed: no other test's child may hold a copy.
    let _forks = no_forks_elsewhere();
    let mut c = TestCluster::with(settings("rr"));
    let [holder, idle] = c.fork_online(2)[..] else { unreachable!() };
    let (n, address) = c.listen(holder, "tcp://127.0.0.1:0", "hold");
    let held = HeldClient::connect(&address);
    c.wait_for("the holder holds a connection", |e| is_message(e, holder, &format!("held {n}")));
    let (_, same) = c.listen(idle, "tcp://127.0.0.1:0", "");
    assert_eq!(same, address);
    let holder_pid = c.primary.worker(holder).unwrap().pid;

    c.primary.disconnect_all();
    let (status, after_disconnect) = c.exit_of(idle);
    assert!(after_disconnect && status.code() == Some(0), "idle worker: {status:?}");
    // Room for a premature `Drained` to show while the holder still serves.
    c.pump(ms(200));
    let drained = c.seen.iter().any(|e| matches!(e, Event::Drained));
    assert!(!drained, "drained with worker {holder} still serving: {:?}", c.seen);
    assert!(!process_gone(holder_pid), "the holder lives while its connection is open");

    let answer = c.run_client("the held client's answer", move || held.finish());
    assert_eq!(greeting_worker(&answer), holder);
    c.wait_for("drained", |e| matches!(e, Event::Drained));
    // Checked before the loop runs again: true when `Drained` was reported.
    assert_eq!(c.primary.handles(), Vec::<String>::new(), "every handle released at Drained");
    assert_eq!(c.primary.workers().count(), 0, "no worker left at Drained");
    let holder_exit = c.seen.iter().find_map(|e| match e {
        Event::Exit { worker, status, after_disconnect, .. } if *worker == holder => {
            Some((*status, *after_disconnect))
        }
        _ => None,
    });
    let (status, after_disconnect) =
        holder_exit.unwrap_or_else(|| panic!("no exit of {holder} before Drained: {:?}", c.seen));
    assert!(after_disconnect && status.code() == Some(0), "holder: {status:?}");
    let refused = TcpStream::connect(address.trim_start_matches("tcp://"))
        .map(|_| ())
        .expect_err("connected to a drained cluster's socket");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
}

#[test]
fn a_disconnecting_worker_that_does_not_finish_is_killed_after_the_kill_timeout() {
    let _forks = may_fork();
    let timeout = ms(500);
    let mut c = TestCluster::with(settings("rr").kill_timeout(timeout));
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    let (n, address) = c.listen(id, "tcp://127.0.0.1:0", "hold");
    let mut held = HeldClient::connect(&address);
    c.wait_for("the worker holds a connection", |e| is_message(e, id, &format!("held {n}")));

    let disconnected = Instant::now();
    c.primary.disconnect(id).unwrap();
    // The held client never sends its line: the worker cannot finish.
    let (status, after_disconnect) = c.exit_of(id);
    let took = disconnected.elapsed();
    assert_eq!(status.signal(), Some(9), "killed with SIGKILL: {status:?}");
    assert!(!after_disconnect, "a kill is reported as a kill, not as a drain");
    assert!(took >= timeout, "killed after {took:?}, before the {timeout:?} timeout");
    let mut text = String::new();
    let read = held.0.read_to_string(&mut text);
    assert!(read.is_err() || text.is_empty(), "the held client got no answer: {read:?} {text:?}");
}

#[test]
fn an_unexpectedly_dead_worker_is_respawned_into_its_place_with_doubling_delays() {
    let _forks = may_fork();
    let settings = respawning(settings("rr"), ms(50), ms(400), 100);
    let mut c = TestCluster::with(settings);
    let [mut id] = c.fork_online(1)[..] else { unreachable!() };
    assert_eq!(c.primary.worker(id).unwrap().place, Some(0));
    let mut delays = Vec::new();
    for round in 0..5 {
        let killed = Instant::now();
        c.primary.kill(id, Signal::Kill).unwrap();
        let event = c.wait_for(
            &format!("round {round}: worker {id} respawning"),
            |e| matches!(e, Event::Respawning { worker, .. } if *worker == id),
        );
        let Event::Respawning { place, delay, .. } = event else { unreachable!() };
        assert_eq!(place, 0, "round {round}");
        delays.push(delay);
        let (status, after_disconnect) = c.exit_of(id);
        assert_eq!((status.signal(), after_disconnect), (Some(9), false), "round {round}");
        let event = c.wait_for(
            &format!("round {round}: a fork"),
            |e| matches!(e, Event::Fork(w) if *w > id),
        );
        let Event::Fork(new) = event else { unreachable!() };
        // The death came after the kill, the fork `delay` after the death.
        assert!(killed.elapsed() >= delay, "round {round}: forked before {delay:?}");
        assert!(new > id, "round {round}: ids increase ({new} after {id})");
        c.wait_for(
            &format!("round {round}: {new} online"),
            |e| matches!(e, Event::Online(w) if *w == new),
        );
        assert_eq!(c.primary.worker(new).unwrap().place, Some(0), "round {round}: same place");
        id = new;
    }
    assert_eq!(delays, [50, 100, 200, 400, 400].map(ms));
    assert_eq!(c.primary.workers().count(), 1);
}

#[test]
fn respawning_halts_after_max_restarts_within_the_window() {
    let _forks = may_fork();
    let mut c = TestCluster::with(respawning(settings("rr"), ms(10), ms(40), 3));
    let [mut id] = c.fork_online(1)[..] else { unreachable!() };
    for round in 0..3 {
        c.primary.kill(id, Signal::Kill).unwrap();
        c.wait_for(
            &format!("respawn {round} of {id}"),
            |e| matches!(e, Event::Respawning { worker, .. } if *worker == id),
        );
        let event =
            c.wait_for(&format!("fork {round}"), |e| matches!(e, Event::Fork(w) if *w > id));
        let Event::Fork(new) = event else { unreachable!() };
        c.wait_for(&format!("{new} online"), |e| matches!(e, Event::Online(w) if *w == new));
        id = new;
    }
    c.primary.kill(id, Signal::Kill).unwrap();
    let event = c.wait_for("the fourth death's verdict", |e| {
        matches!(e, Event::RespawnHalted { .. })
            || matches!(e, Event::Respawning { worker, .. } if *worker == id)
    });
    let Event::RespawnHalted { reason, .. } = event else {
        panic!("a fourth respawn within the window: {event:?}")
    };
    assert!(reason.contains("3 respawns"), "{reason}");
    c.seen.clear();
    c.pump(ms(500));
    let forked = forks_and_respawns(&c, id);
    assert!(forked.is_empty(), "nothing forked once halted: {forked:?}");
    assert_eq!(c.primary.workers().count(), 0);
}

/// A rolling restart of two workers while a client fetches without pause: every fetch is
/// answered, the old workers leave after a disconnect, and the new ones serve.
fn rolling_restart_under_load(policy: &str) {
    let (mut c, old, address) = serving(settings(policy), 2);
    let old_pids: Vec<u32> = old.iter().map(|&id| c.primary.worker(id).unwrap().pid).collect();
    let load = Load::start(&address);
    c.pump_until(&format!("{policy}: the client is served"), |_| load.done() >= 5);
    let before = load.done();
    c.primary.restart_all();
    let event = c.wait_for(&format!("{policy}: the restart ends"), |e| {
        matches!(e, Event::Restarted | Event::RestartAborted { .. })
    });
    assert!(matches!(event, Event::Restarted), "{policy}: {event:?}; seen {:?}", c.seen);
    let during = load.done() - before;
    let results = load.stop(&mut c);
    assert!(during > 0, "{policy}: no fetch during the restart");
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{policy}: {} of {} fetches failed: {failed:?}",
        failed.len(),
        results.len()
    );

    for &id in &old {
        let exit = c.seen.iter().find_map(|e| match e {
            Event::Exit { worker, status, after_disconnect, .. } if *worker == id => {
                Some((status.code(), *after_disconnect))
            }
            _ => None,
        });
        assert_eq!(exit, Some((Some(0), true)), "{policy}: worker {id} exited after disconnect");
    }
    c.pump_until(&format!("{policy}: the old workers leave the table"), |c| {
        old.iter().all(|&id| c.primary.worker(id).is_none())
    });
    assert!(old_pids.iter().all(|&pid| process_gone(pid)), "{policy}: old processes gone");
    let new: BTreeSet<WorkerId> = c.primary.workers().map(|w| w.id).collect();
    assert_eq!(new.len(), 2, "{policy}: two workers after the restart: {new:?}");
    assert!(new.iter().all(|id| !old.contains(id)), "{policy}: {new:?} replaced {old:?}");
    let places: BTreeSet<_> = c.primary.workers().filter_map(|w| w.place).collect();
    assert_eq!(places, [0, 1].into(), "{policy}: the new workers took the old places");
    let mut served = BTreeSet::new();
    for _ in 0..300 {
        let id = greeting_worker(&c.fetch(&address));
        assert!(new.contains(&id), "{policy}: served by {id} after the restart");
        served.insert(id);
        if served.len() == new.len() {
            break;
        }
    }
    assert_eq!(served, new, "{policy}: the new workers serve");
}

#[test]
fn a_replacement_that_never_listens_everywhere_is_killed_at_the_ready_timeout_and_the_old_worker_serves()
 {
    let _forks = may_fork();
    let timeout = ms(1000);
    let settings = respawning(settings("rr"), ms(20), ms(20), 10).ready_timeout(timeout);
    let (mut c, ids, first) = serving(settings, 1);
    let [old] = ids[..] else { unreachable!() };
    // A second listener, by command: a replacement only autolistens, so it never holds this
    // key and can never take over.
    let (_, second) = c.listen(old, "tcp://127.0.0.1:0", "");
    let handles = c.primary.handles();
    let [_, missing] = &handles[..] else { panic!("two handles: {handles:?}") };
    let missing = missing.clone();
    assert!(missing.ends_with(":1"), "the second listen is index 1: {handles:?}");

    let asked = Instant::now();
    c.primary.restart_all();
    let event = c.wait_for("the restart ends", |e| {
        matches!(e, Event::Restarted | Event::RestartAborted { .. })
    });
    let took = asked.elapsed();
    let Event::RestartAborted { place, reason } = event else {
        panic!("the restart cannot succeed: {event:?}; seen {:?}", c.seen)
    };
    assert_eq!(place, 0);
    assert!(took >= timeout, "aborted after {took:?}, before the {timeout:?} timeout");
    let new = c
        .seen
        .iter()
        .find_map(|e| match e {
            Event::Fork(w) if *w > old => Some(*w),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no replacement forked: {:?}", c.seen));
    // Events come in order: a `Listening` before the abort means the replacement was online
    // and held its first key when the deadline struck.
    let listened =
        c.seen.iter().any(|e| matches!(e, Event::Listening { worker, .. } if *worker == new));
    let expected = if listened {
        format!("replacement worker {new} did not listen on {missing} within {timeout:?}")
    } else {
        format!("replacement worker {new} did not come online within {timeout:?}")
    };
    assert_eq!(reason, expected);

    let (status, after_disconnect) = c.exit_of(new);
    assert_eq!((status.signal(), after_disconnect), (Some(9), false), "the replacement is killed");
    // The respawn delay is 20 ms: 300 ms is ample time for a wrong respawn to show.
    c.pump(ms(300));
    let forked = forks_and_respawns(&c, new);
    assert!(forked.is_empty(), "a killed replacement is not respawned: {forked:?}");
    let info = c.primary.worker(old).expect("the old worker stays");
    assert_eq!((info.place, info.disconnecting), (Some(0), false), "{info:?}");
    assert_eq!(c.primary.workers().count(), 1);
    assert_eq!(greeting_worker(&c.fetch(&first)), old, "the old worker serves its first address");
    assert_eq!(greeting_worker(&c.fetch(&second)), old, "and its second");

    // The aborted restart is over: a new request starts a new one.
    c.seen.clear();
    c.primary.restart_all();
    let event = c.wait_for("a second restart forks", |e| matches!(e, Event::Fork(w) if *w > new));
    let Event::Fork(newer) = event else { unreachable!() };
    let event = c.wait_for("the second restart ends", |e| {
        matches!(e, Event::Restarted | Event::RestartAborted { .. })
    });
    assert!(matches!(event, Event::RestartAborted { place: 0, .. }), "{event:?}");
    c.exit_of(newer);
    assert_eq!(greeting_worker(&c.fetch(&second)), old, "the old worker still serves");
}

#[test]
fn a_rolling_restart_under_load_refuses_nothing_under_rr() {
    let _forks = may_fork();
    rolling_restart_under_load("rr");
}

#[test]
fn a_rolling_restart_under_load_refuses_nothing_under_reuseport() {
    let _forks = may_fork();
    rolling_restart_under_load("reuseport");
}

#[test]
fn a_rolling_restart_under_load_refuses_nothing_under_none() {
    let _forks = may_fork();
    rolling_restart_under_load("none");
}

/// Removes the worker in the highest place (it leaves gracefully, not respawned), checks the
/// rest serve, then adds a worker, which takes a new place and serves too.
fn remove_then_add(policy: &str) {
    let (mut c, ids, address) = serving(respawning(settings(policy), ms(20), ms(20), 10), 3);
    assert_eq!(c.primary.worker(ids[2]).unwrap().place, Some(2), "{policy}");
    let removed = c.primary.remove_worker().expect("a worker to remove");
    assert_eq!(removed, ids[2], "{policy}: the highest place goes");
    let (status, after_disconnect) = c.exit_of(removed);
    assert!(after_disconnect && status.code() == Some(0), "{policy}: {status:?}");
    let rest: BTreeSet<WorkerId> = ids[..2].iter().copied().collect();
    let mut served = BTreeSet::new();
    for i in 0..300 {
        let id = greeting_worker(&c.fetch(&address));
        assert!(rest.contains(&id), "{policy}: fetch {i} served by {id}");
        served.insert(id);
        if served == rest && i >= 20 {
            break;
        }
    }
    assert_eq!(served, rest, "{policy}: the remaining workers serve");
    let forked = forks_and_respawns(&c, removed);
    assert!(forked.is_empty(), "{policy}: a removal is final: {forked:?}");
    assert_eq!(c.primary.workers().map(|w| w.id).collect::<BTreeSet<_>>(), rest, "{policy}");

    let added = c.primary.add_worker().unwrap();
    assert!(added > removed, "{policy}: a new id");
    c.wait_for(
        &format!("{policy}: {added} online"),
        |e| matches!(e, Event::Online(w) if *w == added),
    );
    assert_eq!(c.listening(added), address, "{policy}");
    assert_eq!(c.primary.worker(added).unwrap().place, Some(2), "{policy}: a third place");
    let mut served_by_added = false;
    for i in 0..300 {
        let id = greeting_worker(&c.fetch(&address));
        assert!(id == added || rest.contains(&id), "{policy}: fetch {i} served by {id}");
        if id == added {
            served_by_added = true;
            break;
        }
    }
    assert!(served_by_added, "{policy}: the added worker serves");
}

#[test]
fn remove_worker_retires_the_highest_place_and_add_worker_adds_one_under_rr() {
    let _forks = may_fork();
    remove_then_add("rr");
}

#[test]
fn remove_worker_retires_the_highest_place_and_add_worker_adds_one_under_reuseport() {
    let _forks = may_fork();
    remove_then_add("reuseport");
}
