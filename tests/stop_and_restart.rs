//! The stop/restart state machine's edges and the events it reports (issue 9, items 4, 7, 8
//! and 9): stops that can be repeated and a cluster that works after one, restarts asked for
//! during a restart or cut short by a stop, kills reported as kills, a worker's own `kill()`,
//! events that carry the worker's state, and a worker's SIGTERM as a graceful disconnect. A
//! primary in this test process, `cluster-worker` fixtures as its workers.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use herd::{Cluster, Event, Signal, State, WorkerId, WorkerInfo};
use herd_tests::cluster::{TestCluster, fixture_settings, greeting_worker, respawning, serving};
use herd_tests::{DEADLINE, may_fork};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Settings for a primary whose workers are the fixture, under `policy`, respawning after
/// 20 ms (at most 10 times a minute).
fn settings(policy: &str) -> Cluster {
    respawning(fixture_settings(WORKER, policy), ms(20), ms(20), 10)
}

fn is_message(event: &Event, from: WorkerId, text: &str) -> bool {
    matches!(event, Event::Message { worker, data, .. } if *worker == from && data == text.as_bytes())
}

/// Waits for worker `id`'s `Exit` event; returns its status, `after_disconnect` and info.
#[track_caller]
fn exit_of(c: &mut TestCluster, id: WorkerId) -> (std::process::ExitStatus, bool, WorkerInfo) {
    let event = c.wait_for(
        &format!("worker {id} exit"),
        |e| matches!(e, Event::Exit { worker, .. } if *worker == id),
    );
    let Event::Exit { status, after_disconnect, info, .. } = event else { unreachable!() };
    (status, after_disconnect, info)
}

/// Waits for worker `id`'s `Disconnect` event; returns the info it carries.
#[track_caller]
fn disconnect_of(c: &mut TestCluster, id: WorkerId) -> WorkerInfo {
    let event = c.wait_for(
        &format!("worker {id} disconnect"),
        |e| matches!(e, Event::Disconnect { worker, .. } if *worker == id),
    );
    let Event::Disconnect { info, .. } = event else { unreachable!() };
    info
}

/// The ids of the workers forked after worker `last` (`Fork` events) among the events seen.
fn forked_after(c: &TestCluster, last: WorkerId) -> Vec<WorkerId> {
    c.seen
        .iter()
        .filter_map(|e| match e {
            Event::Fork(id) if *id > last => Some(*id),
            _ => None,
        })
        .collect()
}

/// A client connected to a `hold` listener: the worker that takes it answers only once the
/// client sends a line.
fn held_client(c: &mut TestCluster, worker: WorkerId) -> TcpStream {
    let (n, address) = c.listen(worker, "tcp://127.0.0.1:0", "hold");
    let stream = TcpStream::connect(address.trim_start_matches("tcp://")).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    c.wait_for(&format!("worker {worker} holds a connection"), |e| {
        is_message(e, worker, &format!("held {n}"))
    });
    stream
}

/// Issue 9, item 7: `disconnect_all`, then new workers, then `disconnect_all` again. Before,
/// the second stop never reported `Drained`, and after the first one respawning and
/// `restart_all` stayed off for the rest of the primary's life. Now each stop ends with its
/// own `Drained`, and in between the cluster respawns and restarts as new.
#[test]
fn two_stops_give_two_drained_and_the_cluster_respawns_and_restarts_between_them() {
    let _forks = may_fork();
    let (mut c, first, address) = serving(settings("rr"), 2);
    c.primary.disconnect_all();
    c.wait_for("the first Drained", |e| matches!(e, Event::Drained));
    for &id in &first {
        let (status, after_disconnect, _) = exit_of(&mut c, id);
        assert!(after_disconnect && status.code() == Some(0), "worker {id}: {status:?}");
    }

    // A new cluster in the same primary: two workers. The stopped socket was released (nothing
    // is left at `Drained`); their port-0 listen binds anew, on the port the key got first (a
    // port-0 listen keeps its port while the primary lives).
    assert_eq!(c.primary.handles(), Vec::<String>::new(), "released at the first Drained");
    let second = c.fork_online(2);
    let again = c.listening(second[0]);
    assert_eq!(c.listening(second[1]), again);
    assert_eq!(again, address, "the port-0 key's port, bound again");
    assert!(second.contains(&greeting_worker(&c.fetch(&again))));

    // Respawning works again: a killed worker is replaced in its place.
    c.primary.kill(second[0], Signal::Kill).unwrap();
    c.wait_for(
        "a respawn after the first stop",
        |e| matches!(e, Event::Respawning { worker, .. } if *worker == second[0]),
    );
    let event =
        c.wait_for("the respawned worker", |e| matches!(e, Event::Fork(w) if *w > second[1]));
    let Event::Fork(respawned) = event else { unreachable!() };
    c.listening(respawned);

    // And so does a rolling restart.
    c.primary.restart_all();
    let event = c.wait_for("the restart after the first stop ends", |e| {
        matches!(e, Event::Restarted | Event::RestartAborted { .. })
    });
    assert!(matches!(event, Event::Restarted), "{event:?}; seen {:?}", c.seen);
    let serving: BTreeSet<WorkerId> = c.primary.workers().map(|w| w.id).collect();
    assert_eq!(serving.len(), 2, "{serving:?}");
    assert!(serving.iter().all(|&id| id > respawned), "the restart replaced both: {serving:?}");

    c.primary.disconnect_all();
    c.wait_for("the second Drained", |e| matches!(e, Event::Drained));
    assert_eq!(c.primary.workers().count(), 0);
    assert_eq!(c.primary.handles(), Vec::<String>::new());
    let drained = c.seen.iter().filter(|e| matches!(e, Event::Drained)).count();
    assert_eq!(drained, 0, "one Drained per stop, each consumed above: {:?}", c.seen);
}

/// Issue 9, item 7: a restart asked for while one rolls (a second SIGHUP, after a deploy) is
/// merged, and said so: `RestartMerged` names the place rolled before the request, which rolls
/// again, so both workers serving at the end were forked after the second request. Before,
/// the second request was dropped without a word.
#[test]
fn a_restart_asked_for_during_a_restart_is_merged_and_rolls_again_what_was_forked_before_it() {
    let _forks = may_fork();
    let (mut c, old, _address) = serving(settings("rr"), 2);
    c.primary.restart_all();
    let event = c.wait_for("the first replacement", |e| matches!(e, Event::Fork(w) if *w > old[1]));
    let Event::Fork(early) = event else { unreachable!() };
    assert_eq!(c.primary.worker(early).unwrap().place, Some(0), "place 0 rolls first");

    c.primary.restart_all();
    let event = c.wait_for("the merge", |e| matches!(e, Event::RestartMerged { .. }));
    let Event::RestartMerged { places } = event else { unreachable!() };
    assert_eq!(places, [0], "place 0 (rolling) rolls again; place 1 was still to come");
    let event = c.wait_for("the merged restart ends", |e| {
        matches!(e, Event::Restarted | Event::RestartAborted { .. })
    });
    assert!(matches!(event, Event::Restarted), "{event:?}; seen {:?}", c.seen);
    let late: BTreeSet<WorkerId> = c.primary.workers().map(|w| w.id).collect();
    assert_eq!(late.len(), 2, "{late:?}");
    assert!(late.iter().all(|&id| id > early), "every worker forked after the request: {late:?}");
    let later = forked_after(&c, early);
    assert_eq!(later.len(), 2, "after {early} in place 0: place 1, then 0 again: {later:?}");
    let ended = c.seen.iter().filter(|e| matches!(e, Event::Restarted)).count();
    assert_eq!(ended, 0, "one Restarted for both requests: {:?}", c.seen);
}

/// Issue 9, item 7: a stop (SIGTERM's `disconnect_all`) while a replacement is starting ends
/// the restart (`RestartAborted`, `the cluster is stopping`), forks nothing more, and drains
/// every worker, the starting replacement included, to `Drained`; under `reuseport`, whose
/// replacement, when it asks for its place's socket once the stop is under way, is refused (it
/// is disconnecting), so nothing is bound anew during the stop.
///
/// The primary's loop reads the workers' channels before each event it returns (`Restarting`
/// comes before the `Fork`), so on a busy machine a fast replacement can be online, and granted
/// its socket, before the test sees its `Fork`; with its predecessor gone as fast, place 1
/// would be rolling by then. So the roll is held in place 0: the old workers also listen on a
/// second handle, which the replacement never asks for, so it is never ready. And a grant
/// made before the stop is allowed: only a listen asked once the stop began must be refused.
/// Events keep the loop's order and `disconnect_all` queues `RestartAborted` at once, so a
/// replacement whose `Online` comes after it had not asked before the stop.
#[test]
fn a_stop_during_a_rolling_restart_ends_it_and_drains_every_worker() {
    let _forks = may_fork();
    let (mut c, old, address) = serving(settings("reuseport"), 2);
    // Index 1 of the same spec: replacements listen on index 0 only (their autolisten).
    let second: Vec<String> =
        old.iter().map(|&id| c.listen(id, "tcp://127.0.0.1:0", "").1).collect();
    assert_eq!(second[0], second[1], "one index-1 handle");
    c.primary.restart_all();
    let event = c.wait_for("a replacement", |e| matches!(e, Event::Fork(w) if *w > old[1]));
    let Event::Fork(replacement) = event else { unreachable!() };

    c.seen.clear();
    c.primary.disconnect_all();
    let event = c.wait_for("the restart's end", |e| {
        matches!(e, Event::Restarted | Event::RestartAborted { .. })
    });
    let Event::RestartAborted { place, reason } = event else {
        panic!("a stop ends the restart: {event:?}; seen {:?}", c.seen)
    };
    assert_eq!((place, reason.as_str()), (0, "the cluster is stopping"), "seen {:?}", c.seen);
    // What the loop did before the stop began is queued before `RestartAborted`: the worker
    // sends `Online` before any listen, so one not online by then asked during the stop.
    let online_before_stop =
        c.seen.iter().any(|e| matches!(e, Event::Online(w) if *w == replacement));
    c.wait_for("Drained", |e| matches!(e, Event::Drained));
    for id in [old[0], old[1], replacement] {
        let (status, after_disconnect, _) = exit_of(&mut c, id);
        assert!(after_disconnect && status.code() == Some(0), "worker {id}: {status:?}");
    }
    assert!(forked_after(&c, replacement).is_empty(), "nothing forked once stopping: {:?}", c.seen);
    // The replacement's listen, if it got to ask before it drained, came after the stop
    // began unless it was online before: refused, since a disconnecting worker gets no handle
    // (see the test below), so nothing listened anew.
    if !online_before_stop {
        let listened = c
            .seen
            .iter()
            .any(|e| matches!(e, Event::Listening { worker, .. } if *worker == replacement));
        assert!(!listened, "the disconnecting replacement listened: {:?}", c.seen);
    }
    assert_eq!(c.primary.handles(), Vec::<String>::new());
    for address in [&address, &second[0]] {
        let refused = TcpStream::connect(address.trim_start_matches("tcp://")).map(drop);
        assert!(refused.is_err(), "a drained cluster listens no more on {address}");
    }
}

/// A disconnecting worker is granted no new handle (its listen fails with `ENOTCONN`), so
/// nothing starts listening for a worker that will not accept: during a stop, a rolling
/// replacement caught starting would otherwise bind its place's socket anew.
#[test]
fn a_disconnecting_worker_gets_no_new_handle() {
    let _forks = may_fork();
    let mut c = TestCluster::with(fixture_settings(WORKER, "reuseport"));
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    // A held connection keeps the worker alive, and reading commands, while it drains.
    let held = held_client(&mut c, id);
    c.seen.clear();
    c.primary.disconnect(id).unwrap();
    let answer = c.command(id, "listen tcp://127.0.0.1:0", "listening");
    assert!(
        answer.starts_with(&format!("error {} ", libc::ENOTCONN)),
        "a disconnecting worker's listen: {answer}"
    );
    let listened =
        c.seen.iter().any(|e| matches!(e, Event::Listening { worker, .. } if *worker == id));
    assert!(!listened, "a Listening after the disconnect: {:?}", c.seen);
    drop(held);
    let (status, after_disconnect, _) = exit_of(&mut c, id);
    assert!(after_disconnect && status.code() == Some(0), "{status:?}");
}

/// Issue 9, item 8: a worker killed by a signal while the whole cluster was being stopped was
/// reported `Exit { after_disconnect: true }`, which reads as a clean drain. Now only a worker
/// that exited by itself is: the killed one is reported killed, with its signal, while its info
/// still says a disconnect was under way.
#[test]
fn a_worker_killed_during_a_stop_is_reported_killed_not_drained() {
    let _forks = may_fork();
    let mut c = TestCluster::with(fixture_settings(WORKER, "rr"));
    let [holder, idle] = c.fork_online(2)[..] else { unreachable!() };
    let mut held = held_client(&mut c, holder);
    c.primary.disconnect_all();
    let (status, after_disconnect, info) = exit_of(&mut c, idle);
    assert!(after_disconnect && status.code() == Some(0), "the idle worker drains: {status:?}");
    assert!(info.disconnecting, "{info:?}");

    c.primary.kill(holder, Signal::Kill).unwrap();
    let (status, after_disconnect, info) = exit_of(&mut c, holder);
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(!after_disconnect, "a kill is reported as a kill, not as a drain");
    assert!(info.disconnecting && info.state == State::Dead, "{info:?}");
    c.wait_for("Drained", |e| matches!(e, Event::Drained));
    let mut text = String::new();
    let read = held.read_to_string(&mut text);
    assert!(read.is_err() || text.is_empty(), "the killed worker answered: {read:?} {text:?}");
}

/// Issue 9, item 9: a worker's own `kill()` (Node's `cluster.worker.kill()`) exits at once, with
/// a connection still open (its client sees it closed, unanswered), as an intended exit: code
/// 0, `after_disconnect`, not respawned.
#[test]
fn a_workers_own_kill_exits_at_once_as_intended_and_is_not_respawned() {
    let _forks = may_fork();
    let mut c = TestCluster::with(settings("rr"));
    let [killer, other] = c.fork_online(2)[..] else { unreachable!() };
    let mut held = held_client(&mut c, killer);
    assert_eq!(c.command(killer, "kill", "killing"), "killing");
    let info = disconnect_of(&mut c, killer);
    assert!(info.disconnecting, "exitedAfterDisconnect is known at the disconnect: {info:?}");
    let (status, after_disconnect, _) = exit_of(&mut c, killer);
    assert_eq!((status.code(), after_disconnect), (Some(0), true), "{status:?}");
    let mut text = String::new();
    let read = held.read_to_string(&mut text);
    assert!(read.is_err() || text.is_empty(), "cut short, not answered: {read:?} {text:?}");
    // The respawn delay is 20 ms: 300 ms is ample time for a wrong respawn to show.
    c.pump(ms(300));
    let respawned: Vec<&Event> =
        c.seen.iter().filter(|e| matches!(e, Event::Respawning { .. })).collect();
    assert!(respawned.is_empty(), "an intended exit is not respawned: {respawned:?}");
    assert!(forked_after(&c, other).is_empty(), "nothing forked: {:?}", c.seen);
    let left: Vec<WorkerId> = c.primary.workers().map(|w| w.id).collect();
    assert_eq!(left, [other]);
}

/// Issue 9, item 9: `Disconnect` and `Exit` carry the worker's state as it was then (Node's
/// handler checks `worker.state` and `worker.exitedAfterDisconnect`), though
/// `Primary::worker(id)` has forgotten the worker by the time they are read: a worker that
/// disconnects itself is `Disconnected` and disconnecting at its `Disconnect`; one that just
/// exits is not disconnecting.
#[test]
fn disconnect_and_exit_events_carry_the_workers_state_when_they_happen() {
    let _forks = may_fork();
    let mut c = TestCluster::with(fixture_settings(WORKER, "rr"));
    let [leaving, crashing] = c.fork_online(2)[..] else { unreachable!() };
    let pid = c.primary.worker(leaving).unwrap().pid;
    assert_eq!(c.command(leaving, "disconnect", "disconnecting"), "disconnecting");
    let info = disconnect_of(&mut c, leaving);
    assert_eq!(
        (info.id, info.pid, info.place, info.state, info.disconnecting),
        (leaving, pid, Some(0), State::Disconnected, true),
        "{info:?}"
    );
    let (_, after_disconnect, info) = exit_of(&mut c, leaving);
    assert!(after_disconnect && info.state == State::Dead && info.disconnecting, "{info:?}");
    assert!(c.primary.worker(leaving).is_none(), "gone from the table by its Exit");

    c.primary.send(crashing, b"exit 3", &[]).unwrap();
    let info = disconnect_of(&mut c, crashing);
    assert!(!info.disconnecting, "nobody asked it to go: {info:?}");
    let (status, after_disconnect, info) = exit_of(&mut c, crashing);
    assert_eq!((status.code(), after_disconnect, info.disconnecting), (Some(3), false, false));
}

/// Issue 9, item 4: `kill <worker pid>` (SIGTERM, here through `Primary::kill`) disconnects the
/// worker gracefully, exactly as if the primary had asked: the connection it holds is served
/// to the end, it exits 0, after a disconnect, and is not respawned; the other worker serves.
/// Before, it died at once with the connection, and was respawned.
#[test]
fn sigterm_to_one_worker_drains_it_like_a_disconnect() {
    let _forks = may_fork();
    let (mut c, ids, address) = serving(settings("rr"), 2);
    let [signalled, other] = ids[..] else { unreachable!() };
    let held = held_client(&mut c, signalled);
    c.primary.kill(signalled, Signal::Term).unwrap();
    c.pump_until(&format!("worker {signalled} disconnecting on SIGTERM"), |c| {
        c.primary.worker(signalled).is_some_and(|w| w.disconnecting)
    });
    for i in 0..5 {
        assert_eq!(greeting_worker(&c.fetch(&address)), other, "fetch {i} after the SIGTERM");
    }
    let answer = c.run_client("the held client's answer", move || {
        let mut held = held;
        held.write_all(b"go\n")?;
        let mut text = String::new();
        held.read_to_string(&mut text)?;
        Ok(text)
    });
    assert_eq!(greeting_worker(&answer), signalled, "its connection is served to the end");
    let (status, after_disconnect, _) = exit_of(&mut c, signalled);
    assert_eq!((status.code(), after_disconnect), (Some(0), true), "{status:?}");
    c.pump(ms(300));
    let respawned: Vec<&Event> =
        c.seen.iter().filter(|e| matches!(e, Event::Respawning { .. })).collect();
    assert!(respawned.is_empty(), "a drained worker is not respawned: {respawned:?}");
}
