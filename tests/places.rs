//! Places and their sockets: a place with no worker present or coming takes no connections
//! (`reuseport` black holes), and a pending respawn counts as a worker when scaling. A
//! primary in this test process, `cluster-worker` fixtures as its workers.

use std::time::Duration;

use herd::{Cluster, Event, Signal, WorkerId};
use herd_tests::cluster::{
    TestCluster, connect_clients, fixture_settings, greeting_worker, respawning, serving,
};
use herd_tests::{DEADLINE, may_fork, send_signal, stop_process};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Settings for a primary whose workers are the fixture, under `policy`, respawn off.
fn settings(policy: &str) -> Cluster {
    fixture_settings(WORKER, policy)
        .respawn(herd::RespawnPolicy { enabled: false, ..herd::RespawnPolicy::default() })
}

/// How the place of the first worker is left with nobody in it and nobody coming.
#[derive(Clone, Copy, Debug)]
enum Vacate {
    /// SIGKILL, respawning off.
    KilledNoRespawn,
    /// SIGKILL, respawning halted at once (a limit of 0 respawns).
    KilledRespawnHalted,
    /// `Primary::disconnect`, which never respawns.
    DisconnectedByPrimary,
    /// The worker's own `Worker::disconnect`.
    DisconnectedItself,
}

/// Under `reuseport` the kernel hashes new connections over every socket of the group. Once a
/// place is vacated for good, every new connection must reach the worker that is left; a
/// socket left in the group would swallow a share of them (the issue measured 5 of 20).
fn vacated_place_takes_no_new_connections(how: Vacate) {
    let _forks = may_fork();
    let settings = match how {
        Vacate::KilledRespawnHalted => respawning(settings("reuseport"), ms(10), ms(10), 0),
        _ => settings("reuseport"),
    };
    let (mut c, ids, address) = serving(settings, 2);
    let [gone, left] = ids[..] else { unreachable!() };
    match how {
        Vacate::KilledNoRespawn | Vacate::KilledRespawnHalted => {
            c.primary.kill(gone, Signal::Kill).unwrap();
        }
        Vacate::DisconnectedByPrimary => c.primary.disconnect(gone).unwrap(),
        Vacate::DisconnectedItself => {
            c.command(gone, "disconnect", "disconnecting");
        }
    }
    c.exit_of(gone);
    if let Vacate::KilledRespawnHalted = how {
        c.wait_for("respawning halted", |e| matches!(e, Event::RespawnHalted { .. }));
    }
    for i in 0..20 {
        let greeting = c.fetch(&address);
        assert_eq!(greeting_worker(&greeting), left, "{how:?}: connection {i}");
    }
}

#[test]
fn a_place_vacated_by_a_death_without_respawn_takes_no_connections() {
    vacated_place_takes_no_new_connections(Vacate::KilledNoRespawn);
}

#[test]
fn a_place_vacated_when_respawning_halts_takes_no_connections() {
    vacated_place_takes_no_new_connections(Vacate::KilledRespawnHalted);
}

#[test]
fn a_place_vacated_by_the_primarys_disconnect_takes_no_connections() {
    vacated_place_takes_no_new_connections(Vacate::DisconnectedByPrimary);
}

#[test]
fn a_place_vacated_by_the_workers_own_disconnect_takes_no_connections() {
    vacated_place_takes_no_new_connections(Vacate::DisconnectedItself);
}

/// Connections already queued on a vacated place's socket are not left there: they move to the
/// worker that is left where the kernel can migrate them (`herd::registry::migrates_queued`),
/// and are reset at once otherwise. None waits for an answer that never comes.
#[test]
fn connections_queued_on_a_vacated_place_move_to_the_others() {
    let _forks = may_fork();
    let (mut c, ids, address) = serving(settings("reuseport"), 2);
    let [stopped, left] = ids[..] else { unreachable!() };
    let pid = c.primary.worker(stopped).unwrap().pid;
    // Stopped, the worker accepts nothing: connections hashed to its socket stay queued there.
    stop_process(pid);
    let clients = connect_clients(&address, 32);
    // The primary disconnects it: nobody will take its place, so its socket leaves the group
    // now, while the stopped worker still holds a duplicate of it.
    c.primary.disconnect(stopped).unwrap();
    let migrates = herd::registry::migrates_queued();
    let answers = c.answers("the queued clients' answers", clients);
    for (i, answer) in answers.iter().enumerate() {
        match answer {
            Ok(text) if !text.is_empty() => {
                assert_eq!(greeting_worker(text), left, "client {i}");
            }
            other => {
                assert!(!migrates, "client {i}: {other:?}, though queued connections migrate");
                let timed_out =
                    matches!(other, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                assert!(!timed_out, "client {i} waited for an answer that never came");
            }
        }
    }
    send_signal(pid, "CONT");
    c.exit_of(stopped);
}

/// The live workers, in id order: not dead and not disconnecting.
fn live(c: &TestCluster) -> Vec<WorkerId> {
    c.primary
        .workers()
        .filter(|w| !w.disconnecting && w.state != herd::State::Dead)
        .map(|w| w.id)
        .collect()
}

/// 3 workers, the one in place 2 dies, and while its respawn is pending `remove_worker` runs:
/// the pending respawn is the worker removed. Before, the respawn was cancelled *and* a live
/// worker disconnected, leaving 1 worker instead of 2.
#[test]
fn removing_a_place_waiting_for_its_respawn_cancels_the_respawn_only() {
    let _forks = may_fork();
    let (mut c, ids, _address) = serving(respawning(settings("rr"), ms(300), ms(300), 10), 3);
    c.primary.kill(ids[2], Signal::Kill).unwrap();
    c.wait_for("the respawn is scheduled", |e| matches!(e, Event::Respawning { place: 2, .. }));
    // Nothing of the loop runs between the event and this call: the respawn is still pending.
    assert_eq!(c.primary.remove_worker(), None, "no live worker is removed");
    assert_eq!(live(&c), ids[..2], "both live workers stay");
    // The cancelled respawn never comes: run the loop well past its delay.
    c.pump(ms(900));
    let last = ids[2];
    let forks: Vec<&Event> =
        c.seen.iter().filter(|e| matches!(e, Event::Fork(id) if *id > last)).collect();
    assert!(forks.is_empty(), "a cancelled respawn forked: {forks:?}");
    assert_eq!(live(&c), ids[..2]);
}

/// Adding a worker while a respawn is pending takes a new place: the pending respawn is a
/// worker too, so the cluster grows from 2 to 3 (before, the new worker took the dead one's
/// place and the respawn was dropped, leaving 2).
#[test]
fn adding_a_worker_while_a_respawn_is_pending_takes_a_new_place() {
    let _forks = may_fork();
    let (mut c, ids, _address) = serving(respawning(settings("rr"), ms(300), ms(300), 10), 2);
    c.primary.kill(ids[1], Signal::Kill).unwrap();
    c.wait_for("the respawn is scheduled", |e| matches!(e, Event::Respawning { place: 1, .. }));
    let added = c.primary.add_worker().unwrap();
    assert_eq!(c.primary.worker(added).unwrap().place, Some(2), "a new place, not the pending one");
    c.listening(added);
    let last = ids[1];
    let respawned =
        c.wait_for("the respawn", |e| matches!(e, Event::Fork(id) if *id > last && *id != added));
    let Event::Fork(respawned) = respawned else { unreachable!() };
    assert_eq!(c.primary.worker(respawned).unwrap().place, Some(1));
    c.listening(respawned);
    let mut places: Vec<Option<usize>> =
        live(&c).into_iter().map(|id| c.primary.worker(id).unwrap().place).collect();
    places.sort();
    assert_eq!(places, [Some(0), Some(1), Some(2)]);
}

/// The last worker dies with its place to be respawned: its handle waits for the respawn, so
/// the connections queued meanwhile are served by the replacement and the port (asked as 0)
/// stays the same, under every policy. Before, the handle closed with its last worker: the
/// queued clients were reset and the respawn listened on a new port.
fn the_last_workers_handle_waits_for_its_respawn(policy: &str) {
    let _forks = may_fork();
    let (mut c, ids, address) = serving(respawning(settings(policy), ms(200), ms(200), 10), 1);
    let pid = c.primary.worker(ids[0]).unwrap().pid;
    // Stopped, it takes nothing: the clients wait in the queue (or, under rr, in the primary).
    stop_process(pid);
    let clients = connect_clients(&address, 5);
    c.primary.kill(ids[0], Signal::Kill).unwrap();
    c.exit_of(ids[0]);
    let gone = ids[0];
    let respawned = c.wait_for("the respawn", |e| matches!(e, Event::Fork(id) if *id > gone));
    let Event::Fork(respawned) = respawned else { unreachable!() };
    assert_eq!(c.listening(respawned), address, "{policy}: the respawn listens on the same port");
    let answers = c.answers("the queued clients", clients);
    for (i, answer) in answers.iter().enumerate() {
        let answer = answer.as_ref().unwrap_or_else(|e| panic!("{policy}: client {i}: {e}"));
        assert_eq!(greeting_worker(answer), respawned, "{policy}: client {i}: {answer:?}");
    }
}

#[test]
fn the_last_workers_handle_waits_for_its_respawn_under_rr() {
    the_last_workers_handle_waits_for_its_respawn("rr");
}

#[test]
fn the_last_workers_handle_waits_for_its_respawn_under_none() {
    the_last_workers_handle_waits_for_its_respawn("none");
}

#[test]
fn the_last_workers_handle_waits_for_its_respawn_under_reuseport() {
    the_last_workers_handle_waits_for_its_respawn("reuseport");
}

/// A rolling restart whose old worker dies before its replacement is ready keeps the
/// replacement under the ready deadline: never ready, it is killed and the restart aborts
/// (before, the roll moved on and left it in the place for good, and under `reuseport` the
/// place's socket kept a share of connections nobody accepted). The place is then respawned as
/// after any death, and once that worker too has had its time, the place's socket leaves the
/// group: every connection reaches the worker that serves.
#[test]
fn a_roll_whose_old_worker_dies_keeps_the_ready_deadline_and_leaves_no_black_hole() {
    let _forks = may_fork();
    let settings =
        respawning(settings("reuseport"), ms(50), ms(50), 10).ready_timeout(Duration::from_secs(3));
    let mut c = TestCluster::with(settings);
    // The first workers listen because they are told to; the replacements never listen.
    let ids = c.fork_online(2);
    let mut address = String::new();
    for &id in &ids {
        address = c.listen(id, "tcp://127.0.0.1:0", "").1;
    }
    c.primary.restart_all();
    let last = ids[1];
    let new = c.wait_for("the replacement", |e| matches!(e, Event::Fork(id) if *id > last));
    let Event::Fork(new) = new else { unreachable!() };
    c.wait_for("the replacement online", |e| matches!(e, Event::Online(id) if *id == new));
    c.primary.kill(ids[0], Signal::Kill).unwrap();
    let aborted = c.wait_for("the restart aborts", |e| matches!(e, Event::RestartAborted { .. }));
    let Event::RestartAborted { place, reason } = aborted else { unreachable!() };
    assert_eq!(place, 0, "{reason}");
    assert!(reason.contains(&format!("replacement worker {new} did not")), "{reason}");
    c.exit_of(new);
    // Place 0 is respawned (never listening either); its handles stop waiting for it after
    // the ready timeout, and its socket leaves the group.
    for i in 0..20 {
        let greeting = c.fetch(&address);
        assert_eq!(greeting_worker(&greeting), ids[1], "connection {i}");
    }
}

/// A respawned worker that listened and then died too leaves its place to the next respawn:
/// its own ready deadline, passing before that respawn comes, must not close the handles that
/// wait for the place (before, the port changed and the clients queued meanwhile were reset).
#[test]
fn a_dead_respawns_ready_deadline_does_not_close_handles_waiting_for_the_next() {
    let _forks = may_fork();
    let settings = respawning(settings("rr"), ms(6000), ms(6000), 10).ready_timeout(ms(4000));
    let (mut c, ids, address) = serving(settings, 1);
    c.primary.kill(ids[0], Signal::Kill).unwrap();
    let first = ids[0];
    let second = c.wait_for("the first respawn", |e| matches!(e, Event::Fork(id) if *id > first));
    let Event::Fork(second) = second else { unreachable!() };
    assert_eq!(c.listening(second), address);
    // It dies well inside its ready timeout (4 s); the next respawn comes 6 s later, so its
    // deadline passes while the place waits.
    c.primary.kill(second, Signal::Kill).unwrap();
    let third = c.wait_for("the second respawn", |e| matches!(e, Event::Fork(id) if *id > second));
    let Event::Fork(third) = third else { unreachable!() };
    assert_eq!(c.listening(third), address, "the port stays across both respawns");
    assert_eq!(greeting_worker(&c.fetch(&address)), third);
}

/// Rolling restart, the old worker dies while its replacement already listens on one of its
/// two handles: that handle waits for nobody (the replacement holds it), so once the
/// replacement closes it, it closes (before, it stayed open with nobody accepting).
#[test]
fn a_handle_the_replacement_already_holds_does_not_wait_for_it() {
    let _forks = may_fork();
    let settings = respawning(settings("rr"), ms(50), ms(50), 10).ready_timeout(DEADLINE);
    let (mut c, ids, _first) = serving(settings, 1);
    let old = ids[0];
    // A second handle (index 1 of the same spec), which replacements do not take by themselves.
    c.listen(old, "tcp://127.0.0.1:0", "");
    c.primary.restart_all();
    let new = c.wait_for("the replacement", |e| matches!(e, Event::Fork(id) if *id > old));
    let Event::Fork(new) = new else { unreachable!() };
    c.listening(new); // its autolisten: index 0, listener 1
    c.primary.kill(old, Signal::Kill).unwrap();
    c.exit_of(old);
    c.listen(new, "tcp://127.0.0.1:0", ""); // index 1: now it holds both
    c.wait_for("the restart ends", |e| matches!(e, Event::Restarted));
    let handles = c.primary.handles();
    assert_eq!(handles.len(), 2, "{handles:?}");
    c.close(new, 1);
    c.pump_until("the index-0 handle closes", |c| c.primary.handles().len() == 1);
    let left = c.primary.handles();
    assert!(left[0].ends_with(":1"), "the index-1 handle stays: {left:?}");
}

/// Removing the highest place while it is rolling (here the last one, so explicitly:
/// `remove_worker_down_to(0)`) removes the place with both its workers, and the restart stops
/// there (before, the predecessor kept serving outside any place, beyond the reach of later
/// removals and restarts).
#[test]
fn removing_a_rolling_place_removes_both_its_workers() {
    let _forks = may_fork();
    let mut c = TestCluster::with(settings("rr").ready_timeout(DEADLINE));
    let [old] = c.fork_online(1)[..] else { unreachable!() };
    c.listen(old, "tcp://127.0.0.1:0", "");
    c.primary.restart_all();
    // The replacement never listens (it is not told to): the roll waits for it.
    let new = c.wait_for("the replacement", |e| matches!(e, Event::Fork(id) if *id > old));
    let Event::Fork(new) = new else { unreachable!() };
    c.wait_for("the replacement online", |e| matches!(e, Event::Online(id) if *id == new));
    assert_eq!(c.primary.remove_worker(), None, "not the last worker, unless asked explicitly");
    assert_eq!(c.primary.remove_worker_down_to(0), Some(new));
    let aborted = c.wait_for("the restart stops", |e| matches!(e, Event::RestartAborted { .. }));
    let Event::RestartAborted { reason, .. } = aborted else { unreachable!() };
    assert!(reason.contains("removed"), "{reason}");
    for id in [old, new] {
        let (_, after_disconnect) = c.exit_of(id);
        assert!(after_disconnect, "worker {id} was disconnected");
    }
    assert!(live(&c).is_empty());
    assert_eq!(c.primary.remove_worker_down_to(0), None, "no place is left");
}

/// A rolling replacement disconnected before it was ready stops the restart and leaves the
/// place, its `reuseport` socket included, to its predecessor (before, the socket left the
/// group and the predecessor, still listening, got no connection).
#[test]
fn disconnecting_a_rolling_replacement_gives_the_place_back_with_its_socket() {
    let _forks = may_fork();
    let mut c = TestCluster::with(settings("reuseport").ready_timeout(DEADLINE));
    let [old] = c.fork_online(1)[..] else { unreachable!() };
    let (_, address) = c.listen(old, "tcp://127.0.0.1:0", "");
    c.primary.restart_all();
    let new = c.wait_for("the replacement", |e| matches!(e, Event::Fork(id) if *id > old));
    let Event::Fork(new) = new else { unreachable!() };
    c.wait_for("the replacement online", |e| matches!(e, Event::Online(id) if *id == new));
    c.primary.disconnect(new).unwrap();
    let aborted = c.wait_for("the restart stops", |e| matches!(e, Event::RestartAborted { .. }));
    let Event::RestartAborted { place, reason } = aborted else { unreachable!() };
    assert_eq!(place, 0, "{reason}");
    c.exit_of(new);
    for i in 0..10 {
        assert_eq!(greeting_worker(&c.fetch(&address)), old, "connection {i}");
    }
    assert_eq!(c.primary.worker(old).unwrap().place, Some(0));
}

/// Backoff is per place, and a crash-looping place neither slows nor stops the others (issue
/// 8, fifth finding: one back-off for the whole cluster, then a halt that ended the service).
/// Place 0's worker is killed again and again: its delays grow to the cap and it is retried,
/// never halted (the default policy sets no limit), while places 1 and 2 serve throughout; a
/// first death in place 1 afterwards waits only the initial delay.
#[test]
fn a_crash_looping_place_backs_off_alone_while_the_others_serve() {
    let _forks = may_fork();
    let policy =
        herd::RespawnPolicy { initial_delay: ms(50), max_delay: ms(400), ..Default::default() };
    let (mut c, ids, address) = serving(settings("rr").respawn(policy), 3);
    let mut victim = ids[0];
    let mut newest = ids[2];
    let mut delays = Vec::new();
    for round in 0..8 {
        c.primary.kill(victim, Signal::Kill).unwrap();
        let event = c.wait_for(
            &format!("round {round}: the respawn"),
            |e| matches!(e, Event::Respawning { worker, .. } if *worker == victim),
        );
        let Event::Respawning { place, delay, .. } = event else { unreachable!() };
        assert_eq!(place, 0);
        delays.push(delay);
        let last = newest;
        let fork = c.wait_for(
            &format!("round {round}: the fork"),
            |e| matches!(e, Event::Fork(id) if *id > last),
        );
        let Event::Fork(next) = fork else { unreachable!() };
        newest = next;
        c.wait_for(
            &format!("round {round}: online"),
            |e| matches!(e, Event::Online(id) if *id == next),
        );
        // The others keep serving meanwhile.
        let greeting = greeting_worker(&c.fetch(&address));
        assert!(greeting != victim, "round {round}: answered by the dead worker");
        victim = next;
    }
    assert_eq!(delays, [50, 100, 200, 400, 400, 400, 400, 400].map(ms));
    for &id in &ids[1..] {
        assert_ne!(c.primary.worker(id).map(|w| w.state), Some(herd::State::Dead), "{id} lives");
    }
    let halted: Vec<&Event> =
        c.seen.iter().filter(|e| matches!(e, Event::RespawnHalted { .. })).collect();
    assert!(halted.is_empty(), "no place halts by default: {halted:?}");
    // Place 1's first death: its own backoff, untouched by place 0's.
    c.primary.kill(ids[1], Signal::Kill).unwrap();
    let event = c.wait_for(
        "place 1's respawn",
        |e| matches!(e, Event::Respawning { worker, .. } if *worker == ids[1]),
    );
    let Event::Respawning { place, delay, .. } = event else { unreachable!() };
    assert_eq!((place, delay), (1, ms(50)));
}

/// Issue 9, finding 5, through the API: `remove_worker` keeps the last worker (the floor SIGTTOU
/// has); removing it takes `remove_worker_down_to(0)`, and a worker added back then listens on
/// the port the port-0 listen got first, although its handle closed meanwhile (before, it got
/// a new port). Under every kind of handle: shared, hand-off, one socket per place.
fn the_port_of_a_port_0_listen_outlives_its_last_worker(policy: &str) {
    let (mut c, ids, address) = serving(settings(policy), 1);
    assert_eq!(c.primary.remove_worker(), None, "{policy}: the last worker stays");
    assert_eq!(c.primary.worker_count(), 1, "{policy}");
    assert_eq!(greeting_worker(&c.fetch(&address)), ids[0], "{policy}: and serves");
    assert_eq!(c.primary.remove_worker_down_to(0), Some(ids[0]), "{policy}: asked explicitly");
    let (status, after_disconnect) = c.exit_of(ids[0]);
    assert!(after_disconnect && status.success(), "{policy}: {status:?}");
    c.pump_until(&format!("{policy}: the handle closes"), |c| c.primary.handles().is_empty());
    assert_eq!(c.primary.worker_count(), 0, "{policy}");
    let added = c.primary.add_worker().unwrap();
    assert_eq!(c.listening(added), address, "{policy}: the same port as before");
    assert_eq!(greeting_worker(&c.fetch(&address)), added, "{policy}");
}

#[test]
fn the_port_of_a_port_0_listen_outlives_its_last_worker_under_rr() {
    let _forks = may_fork();
    the_port_of_a_port_0_listen_outlives_its_last_worker("rr");
}

#[test]
fn the_port_of_a_port_0_listen_outlives_its_last_worker_under_none() {
    let _forks = may_fork();
    the_port_of_a_port_0_listen_outlives_its_last_worker("none");
}

#[test]
fn the_port_of_a_port_0_listen_outlives_its_last_worker_under_reuseport() {
    let _forks = may_fork();
    the_port_of_a_port_0_listen_outlives_its_last_worker("reuseport");
}
