//! Dispatcher behaviour, one scenario per test, table-driven where it fits.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use herd_sched::{AckError, ConnId, Dispatcher, Next, Pick, WorkerId};

fn k(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn with_workers(pick: Pick, max_in_flight: usize, workers: &[WorkerId]) -> Dispatcher {
    let mut d = Dispatcher::new(pick, k(max_in_flight));
    for &w in workers {
        assert!(d.add_worker(w));
    }
    d
}

/// Every decision `next` returns until it returns `None`, without acknowledging anything.
fn run(d: &mut Dispatcher) -> Vec<Next> {
    std::iter::from_fn(|| d.next()).collect()
}

fn send(worker: WorkerId, conn: ConnId) -> Next {
    Next::Send { worker, conn }
}

/// Serves the queue with every worker accepting at once; returns `(worker, conn)` per send.
#[track_caller]
fn serve_accepting(d: &mut Dispatcher) -> Vec<(WorkerId, ConnId)> {
    let mut sent = Vec::new();
    while let Some(n) = d.next() {
        match n {
            Next::Send { worker, conn } => {
                d.ack(worker, conn, true).expect("ack of a sent connection");
                sent.push((worker, conn));
            }
            Next::Close { conn } => panic!("unexpected close of {conn}"),
        }
    }
    sent
}

/// A snapshot of the dispatcher's whole state, to check that an operation changed nothing.
fn state(d: &Dispatcher) -> String {
    format!("{d:?}")
}

#[test]
fn round_robin_is_fair_and_a_strict_rotation() {
    for workers in [1usize, 2, 3, 8, 64] {
        for conns in [0, 1, workers - 1, workers, 5 * workers + 3, 1000] {
            for max in [1, 2, 4] {
                let ids: Vec<WorkerId> = (0..workers as u32).map(|i| 100 + i).collect();
                let mut d = with_workers(Pick::RoundRobin, max, &ids);
                for c in 0..conns as u64 {
                    d.push(c);
                }
                let sent = serve_accepting(&mut d);
                let ctx = format!("{workers} workers, {conns} conns, max_in_flight {max}");
                assert_eq!(sent.len(), conns, "{ctx}");
                assert_eq!(d.pending_len(), 0, "{ctx}");
                for (i, &(w, c)) in sent.iter().enumerate() {
                    assert_eq!(c, i as u64, "FIFO order, {ctx}");
                    assert_eq!(w, ids[i % workers], "rotation at send {i}, {ctx}");
                }
                let counts: Vec<usize> = ids.iter().map(|&w| d.open(w)).collect();
                let (lo, hi) = (counts.iter().min(), counts.iter().max());
                assert!(hi.unwrap() - lo.unwrap() <= 1, "{ctx}: {counts:?}");
            }
        }
    }
}

#[test]
fn round_robin_without_acks_gives_each_worker_one_then_waits() {
    let mut d = with_workers(Pick::RoundRobin, 1, &[1, 2, 3]);
    for c in 10..16 {
        d.push(c);
    }
    assert_eq!(run(&mut d), [send(1, 10), send(2, 11), send(3, 12)]);
    assert_eq!(d.pending_len(), 3);
    // Only the worker that acknowledged is eligible.
    d.ack(2, 11, true).unwrap();
    assert_eq!(run(&mut d), [send(2, 13)]);
    // Both free: the least recently picked goes first.
    d.ack(3, 12, true).unwrap();
    d.ack(1, 10, true).unwrap();
    assert_eq!(run(&mut d), [send(1, 14), send(3, 15)]);
}

/// A least-conn dispatcher whose workers 1, 2, 3 hold `open[i]` accepted connections
/// (at most 5 each), and were last picked in the order 1, 2, 3.
fn least_conn_with_open(open: [usize; 3]) -> Dispatcher {
    let mut d = with_workers(Pick::LeastConnections, 1, &[1, 2, 3]);
    for c in 0..15 {
        d.push(1000 + c);
    }
    let sent = serve_accepting(&mut d);
    assert_eq!(sent.len(), 15);
    for (w, n) in [1, 2, 3].into_iter().zip(open) {
        assert_eq!(d.open(w), 5);
        for _ in n..5 {
            d.closed(w);
        }
        assert_eq!(d.open(w), n);
    }
    d
}

#[test]
fn least_conn_picks_the_worker_with_fewest_connections() {
    // (open connections of workers 1, 2, 3) -> the worker that gets the next connection
    let cases: &[([usize; 3], WorkerId)] = &[
        ([3, 1, 2], 2),
        ([0, 5, 5], 1),
        ([4, 4, 1], 3),
        ([2, 0, 0], 2), // tie: 2 was picked less recently than 3
        ([1, 1, 1], 1), // tie: 1 was picked least recently
        ([5, 5, 5], 1),
    ];
    for &(open, want) in cases {
        let mut d = least_conn_with_open(open);
        d.push(1);
        assert_eq!(d.next(), Some(send(want, 1)), "open {open:?}");
    }
}

#[test]
fn least_conn_counts_in_flight_connections_too() {
    let mut d = with_workers(Pick::LeastConnections, 4, &[1, 2]);
    for c in 0..4 {
        d.push(c);
    }
    // Nothing is acknowledged, so in-flight load alone alternates the picks.
    assert_eq!(run(&mut d), [send(1, 0), send(2, 1), send(1, 2), send(2, 3)]);
}

#[test]
fn least_conn_ties_rotate() {
    let mut d = with_workers(Pick::LeastConnections, 1, &[1, 2, 3]);
    let mut got = Vec::new();
    for c in 0..9 {
        d.push(c);
        let Some(Next::Send { worker, conn }) = d.next() else {
            panic!("no send for {c}");
        };
        d.ack(worker, conn, true).unwrap();
        d.closed(worker); // short connections: every load is back to zero
        got.push(worker);
    }
    assert_eq!(got, [1, 2, 3, 1, 2, 3, 1, 2, 3]);
}

#[test]
fn closed_steers_least_conn() {
    let mut d = least_conn_with_open([4, 4, 4]);
    d.closed(3);
    d.closed(3);
    for c in 0..3 {
        d.push(c);
    }
    // Worker 3 has 2 open: it gets two before the tie at 3 falls back to rotation (1 first).
    assert_eq!(serve_accepting(&mut d), [(3, 0), (3, 1), (1, 2)], "after closes on worker 3");
}

#[test]
fn closed_saturates_and_ignores_unknown_workers() {
    let mut d = with_workers(Pick::LeastConnections, 1, &[1]);
    d.closed(1);
    assert_eq!(d.open(1), 0);
    let before = state(&d);
    d.closed(9);
    assert_eq!(state(&d), before);
}

#[test]
fn max_in_flight_bounds_unacknowledged_handoffs() {
    for (pick, max) in [Pick::RoundRobin, Pick::LeastConnections]
        .into_iter()
        .flat_map(|p| [1, 2, 4].map(|m| (p, m)))
    {
        let ids = [1, 2, 3];
        let mut d = with_workers(pick, max, &ids);
        let total = 60u64;
        for c in 0..total {
            d.push(c);
        }
        let mut in_flight: HashMap<WorkerId, Vec<ConnId>> = HashMap::new();
        let mut served = 0;
        let mut turn = 0usize;
        while served < total {
            while let Some(n) = d.next() {
                let Next::Send { worker, conn } = n else {
                    panic!("unexpected {n:?}");
                };
                let q = in_flight.entry(worker).or_default();
                q.push(conn);
                assert!(q.len() <= max, "{pick:?} max {max}: worker {worker} has {q:?}");
                assert_eq!(d.in_flight(worker), q.len());
            }
            for &w in &ids {
                assert!(d.in_flight(w) <= max);
            }
            if d.pending_len() > 0 {
                // Everyone is saturated, or next() would have sent more.
                for &w in &ids {
                    assert_eq!(d.in_flight(w), max, "{pick:?} max {max}");
                }
            }
            // Acknowledge the oldest hand-off of one worker, rotating over workers.
            let w = ids[turn % ids.len()];
            turn += 1;
            if let Some(q) = in_flight.get_mut(&w).filter(|q| !q.is_empty()) {
                let c = q.remove(0);
                d.ack(w, c, true).unwrap();
                served += 1;
            }
        }
        assert_eq!(d.pending_len(), 0);
        assert_eq!(d.in_flight_total(), 0);
    }
}

#[test]
fn a_worker_that_never_acks_does_not_starve_the_others() {
    for pick in [Pick::RoundRobin, Pick::LeastConnections] {
        for max in [1, 2] {
            let hung = 1;
            let mut d = with_workers(pick, max, &[hung, 2, 3]);
            for c in 0..100 {
                d.push(c);
            }
            let mut to_hung = Vec::new();
            let mut to_others = 0;
            while let Some(n) = d.next() {
                match n {
                    Next::Send { worker, conn } if worker == hung => to_hung.push(conn),
                    Next::Send { worker, conn } => {
                        d.ack(worker, conn, true).unwrap();
                        to_others += 1;
                    }
                    Next::Close { conn } => panic!("unexpected close of {conn}"),
                }
            }
            assert_eq!(to_hung.len(), max, "{pick:?} max {max}");
            assert_eq!(to_others, 100 - max, "{pick:?} max {max}");
            assert_eq!(d.pending_len(), 0);

            // The registry gives up on the hung worker: its connections reach the others,
            // oldest first.
            assert!(d.remove_worker(hung));
            let sent = serve_accepting(&mut d);
            let conns: Vec<ConnId> = sent.iter().map(|&(_, c)| c).collect();
            assert_eq!(conns, to_hung, "{pick:?} max {max}");
            assert!(sent.iter().all(|&(w, _)| w != hung));
        }
    }
}

#[test]
fn a_refused_head_does_not_block_later_connections() {
    for pick in [Pick::RoundRobin, Pick::LeastConnections] {
        // Worker 2 holds its one hand-off and does not answer yet.
        let mut d = with_workers(pick, 1, &[1, 2]);
        d.push(10);
        d.push(11);
        assert_eq!(run(&mut d), [send(1, 10), send(2, 11)]);
        d.push(12);
        d.push(13);
        // Worker 1 refuses 10: it is the head again, but only worker 2 may take it, and
        // worker 2 is busy. Worker 1 has room and gets the next connections meanwhile.
        d.ack(1, 10, false).unwrap();
        assert_eq!(run(&mut d), [send(1, 12)], "{pick:?}");
        d.ack(1, 12, true).unwrap();
        assert_eq!(run(&mut d), [send(1, 13)], "{pick:?}");
        d.ack(1, 13, true).unwrap();
        assert_eq!(run(&mut d), [], "{pick:?}");
        assert_eq!(d.pending_len(), 1);
        // Once worker 2 is free the skipped head goes to it first.
        d.push(14);
        d.ack(2, 11, true).unwrap();
        assert_eq!(run(&mut d), [send(2, 10), send(1, 14)], "{pick:?}");
    }
}

#[test]
fn a_refused_head_closes_when_the_other_worker_leaves() {
    let mut d = with_workers(Pick::RoundRobin, 1, &[1, 2]);
    d.push(10);
    d.push(11);
    assert_eq!(run(&mut d), [send(1, 10), send(2, 11)]);
    d.ack(1, 10, false).unwrap();
    assert_eq!(run(&mut d), []);
    // Worker 2 dies holding 11: 11 is new to worker 1, but 10 is refused by all left.
    d.remove_worker(2);
    assert_eq!(run(&mut d), [Next::Close { conn: 10 }, send(1, 11)]);
}

#[test]
fn workers_joining_mid_stream_get_connections() {
    let mut d = with_workers(Pick::RoundRobin, 1, &[1]);
    for c in 0..3 {
        d.push(c);
    }
    assert_eq!(run(&mut d), [send(1, 0)]);
    d.add_worker(2);
    assert_eq!(run(&mut d), [send(2, 1)]);
    d.ack(1, 0, true).unwrap();
    assert_eq!(run(&mut d), [send(1, 2)]);
}

#[test]
fn least_conn_new_worker_gets_connections_until_balanced() {
    let mut d = least_conn_with_open([3, 3, 3]);
    d.add_worker(4);
    for c in 0..5 {
        d.push(c);
    }
    let sent = serve_accepting(&mut d);
    let workers: Vec<WorkerId> = sent.iter().map(|&(w, _)| w).collect();
    // Worker 4 catches up to 3 open, then the tie rotates starting from worker 1.
    assert_eq!(workers, [4, 4, 4, 1, 2]);
}

#[test]
fn a_leaving_worker_returns_its_connections_to_the_front_in_order() {
    let mut d = with_workers(Pick::RoundRobin, 3, &[1, 2]);
    for c in 0..6 {
        d.push(c);
    }
    assert_eq!(
        run(&mut d),
        [send(1, 0), send(2, 1), send(1, 2), send(2, 3), send(1, 4), send(2, 5)]
    );
    d.push(6);
    d.ack(1, 0, true).unwrap();
    assert_eq!(d.open(1), 1);
    assert!(d.remove_worker(1));
    assert!(!d.remove_worker(1));
    assert_eq!(d.pending_len(), 3, "2 and 4 requeued, 6 still pending");
    assert_eq!(d.in_flight(1), 0);
    assert_eq!(d.open(1), 0);
    assert_eq!(d.workers().collect::<Vec<_>>(), [2]);
    // Worker 2 frees its slots; the requeued ones come before 6.
    for c in [1, 3, 5] {
        d.ack(2, c, true).unwrap();
    }
    assert_eq!(run(&mut d), [send(2, 2), send(2, 4), send(2, 6)]);
    // A late ack from the removed worker is an error.
    assert_eq!(d.ack(1, 2, true), Err(AckError::UnknownWorker { worker: 1, conn: 2 }));
    // A returning worker starts afresh.
    d.add_worker(1);
    assert_eq!(d.open(1), 0);
}

#[test]
fn refusals() {
    struct Case {
        name: &'static str,
        workers: &'static [WorkerId],
        /// Workers that refuse connection 7 whenever it is sent to them.
        refusers: &'static [WorkerId],
        /// The sends of 7 expected, in order, before the final decision.
        sends: &'static [WorkerId],
        closed: bool,
    }
    let cases = [
        Case {
            name: "refused by one goes to another",
            workers: &[1, 2],
            refusers: &[1],
            sends: &[1, 2],
            closed: false,
        },
        Case {
            name: "refused by all closes once",
            workers: &[1, 2, 3],
            refusers: &[1, 2, 3],
            sends: &[1, 2, 3],
            closed: true,
        },
        Case {
            name: "the only worker refuses",
            workers: &[1],
            refusers: &[1],
            sends: &[1],
            closed: true,
        },
        Case {
            name: "refused by all but the last",
            workers: &[1, 2, 3],
            refusers: &[1, 2],
            sends: &[1, 2, 3],
            closed: false,
        },
    ];
    for pick in [Pick::RoundRobin, Pick::LeastConnections] {
        for case in &cases {
            let ctx = format!("{}, {pick:?}", case.name);
            let mut d = with_workers(pick, 1, case.workers);
            d.push(7);
            let mut sends = Vec::new();
            let mut closes = 0;
            let mut steps = 0;
            while let Some(n) = d.next() {
                steps += 1;
                assert!(steps < 100, "{ctx}: loops");
                match n {
                    Next::Send { worker, conn } => {
                        assert_eq!(conn, 7, "{ctx}");
                        sends.push(worker);
                        d.ack(worker, conn, !case.refusers.contains(&worker)).unwrap();
                    }
                    Next::Close { conn } => {
                        assert_eq!(conn, 7, "{ctx}");
                        closes += 1;
                    }
                }
            }
            assert_eq!(sends, case.sends, "{ctx}");
            assert_eq!(closes, usize::from(case.closed), "{ctx}");
            assert_eq!(d.pending_len(), 0, "{ctx}");
            assert_eq!(d.in_flight_total(), 0, "{ctx}");
            let accepted: usize = case.workers.iter().map(|&w| d.open(w)).sum();
            assert_eq!(accepted, usize::from(!case.closed), "{ctx}");
        }
    }
}

#[test]
fn a_refused_connection_goes_before_newer_ones() {
    for pick in [Pick::RoundRobin, Pick::LeastConnections] {
        let mut d = with_workers(pick, 1, &[1, 2]);
        d.push(10);
        d.push(11);
        assert_eq!(run(&mut d), [send(1, 10), send(2, 11)]);
        d.push(12);
        d.ack(1, 10, false).unwrap();
        d.ack(2, 11, true).unwrap();
        // 10 is older than 12: it goes first, to the worker that has not refused it.
        assert_eq!(run(&mut d), [send(2, 10), send(1, 12)], "{pick:?}");
    }
}

#[test]
fn a_joining_worker_rescues_a_connection_refused_by_all() {
    let mut d = with_workers(Pick::RoundRobin, 1, &[1]);
    d.push(7);
    assert_eq!(d.next(), Some(send(1, 7)));
    d.ack(1, 7, false).unwrap();
    // Refused by every current worker, but a new worker joins before the close is taken.
    d.add_worker(2);
    assert_eq!(run(&mut d), [send(2, 7)]);
}

#[test]
fn refusals_are_forgotten_with_the_last_worker() {
    let mut d = with_workers(Pick::RoundRobin, 1, &[1]);
    d.push(7);
    assert_eq!(d.next(), Some(send(1, 7)));
    d.ack(1, 7, false).unwrap();
    d.remove_worker(1);
    // No workers: nothing to close against, the connection waits.
    assert!(d.is_empty());
    assert_eq!(run(&mut d), []);
    assert_eq!(d.pending_len(), 1);
    // The same id joins again (a restarted worker): it is offered the connection anew.
    d.add_worker(1);
    assert_eq!(run(&mut d), [send(1, 7)]);
}

#[test]
fn no_workers_means_connections_wait() {
    let mut d = Dispatcher::new(Pick::RoundRobin, k(1));
    assert!(d.is_empty());
    d.push(1);
    d.push(2);
    assert_eq!(d.next(), None);
    assert_eq!(d.pending_len(), 2);
    d.add_worker(5);
    assert!(!d.is_empty());
    assert_eq!(run(&mut d), [send(5, 1)]);
}

#[test]
fn add_worker_is_idempotent() {
    let mut d = with_workers(Pick::RoundRobin, 1, &[1, 2]);
    d.push(1);
    assert_eq!(d.next(), Some(send(1, 1)));
    let before = state(&d);
    assert!(!d.add_worker(1));
    assert!(!d.add_worker(2));
    assert_eq!(state(&d), before);
    assert_eq!(d.workers().collect::<Vec<_>>(), [1, 2]);
    assert!(d.contains_worker(2));
    assert!(!d.contains_worker(3));
}

#[test]
fn bad_acks_are_errors_and_change_nothing() {
    // Worker 1 holds 10 in flight, 11 was accepted by worker 2, 12 is pending.
    let setup = || {
        let mut d = with_workers(Pick::RoundRobin, 1, &[1, 2]);
        for c in [10, 11, 12] {
            d.push(c);
        }
        assert_eq!(run(&mut d), [send(1, 10), send(2, 11)]);
        d.ack(2, 11, true).unwrap();
        assert_eq!(run(&mut d), [send(2, 12)]);
        d.push(13);
        d
    };
    let cases: &[(&str, WorkerId, ConnId, bool, AckError, &str)] = &[
        (
            "unknown worker",
            9,
            10,
            true,
            AckError::UnknownWorker { worker: 9, conn: 10 },
            "ack from worker 9 for connection 10: worker is not registered",
        ),
        (
            "unknown connection",
            1,
            99,
            true,
            AckError::NotInFlight { worker: 1, conn: 99 },
            "ack from worker 1 for connection 99: connection is not in flight to that worker",
        ),
        (
            "wrong worker",
            2,
            10,
            false,
            AckError::NotInFlight { worker: 2, conn: 10 },
            "ack from worker 2 for connection 10: connection is not in flight to that worker",
        ),
        (
            "double ack",
            2,
            11,
            true,
            AckError::NotInFlight { worker: 2, conn: 11 },
            "ack from worker 2 for connection 11: connection is not in flight to that worker",
        ),
        (
            "pending connection",
            1,
            13,
            false,
            AckError::NotInFlight { worker: 1, conn: 13 },
            "ack from worker 1 for connection 13: connection is not in flight to that worker",
        ),
    ];
    for (name, w, c, accepted, want, msg) in cases {
        let mut d = setup();
        let before = state(&d);
        let err = d.ack(*w, *c, *accepted).expect_err(name);
        assert_eq!(&err, want, "{name}");
        assert_eq!(err.to_string(), *msg, "{name}");
        assert_eq!(state(&d), before, "{name}");
    }

    // A refusal acknowledged twice: the second is an error and changes nothing.
    let mut d = setup();
    d.ack(1, 10, false).unwrap();
    let before = state(&d);
    assert!(d.ack(1, 10, false).is_err());
    assert_eq!(state(&d), before);
}

#[test]
fn drain_returns_every_connection_once() {
    let mut d = with_workers(Pick::LeastConnections, 2, &[1, 2, 3]);
    for c in 0..10 {
        d.push(c);
    }
    run(&mut d); // six in flight, four pending
    d.ack(1, 0, true).unwrap(); // accepted: no longer the dispatcher's
    d.ack(2, 1, false).unwrap(); // back to pending, refused by 2
    d.add_worker(4); // no run: stays pending
    d.remove_worker(3); // its two in-flight connections go back to pending
    d.push(10);
    let mut only = with_workers(Pick::RoundRobin, 1, &[8]);
    only.push(20);
    only.next();
    only.ack(8, 20, false).unwrap(); // awaiting Close

    for (d, want) in [(&mut d, (1..=10).collect::<Vec<ConnId>>()), (&mut only, vec![20])] {
        let open: Vec<usize> = d.workers().map(|w| d.open(w)).collect();
        assert_eq!(d.pending_len() + d.in_flight_total(), want.len());
        let mut got = d.drain();
        got.sort_unstable();
        assert_eq!(got, want, "each exactly once");
        assert_eq!(d.pending_len(), 0);
        assert_eq!(d.in_flight_total(), 0);
        assert_eq!(d.next(), None);
        assert!(d.drain().is_empty());
        // Workers and their accepted connections are not the handle's to close.
        assert_eq!(d.workers().map(|w| d.open(w)).collect::<Vec<_>>(), open);
    }
    assert_eq!(d.open(1), 1);
}

/// A stopping handle takes what waits in the primary and leaves what is in flight to the acks:
/// an accepted ack still counts, a refusal comes back as pending to be taken again.
#[test]
fn take_pending_leaves_in_flight_connections_to_their_acks() {
    let mut d = with_workers(Pick::RoundRobin, 1, &[1, 2]);
    for c in 0..5 {
        d.push(c);
    }
    assert_eq!(run(&mut d), [send(1, 0), send(2, 1)]);
    let mut only = with_workers(Pick::RoundRobin, 1, &[8]);
    only.push(20);
    only.push(21);
    only.next();
    only.ack(8, 20, false).unwrap(); // refused by every worker: awaiting Close
    assert_eq!(only.take_pending(), [20, 21], "the one awaiting Close first, then pending");

    assert_eq!(d.take_pending(), [2, 3, 4], "pending, oldest first");
    assert_eq!(d.pending_len(), 0);
    assert_eq!(d.in_flight_total(), 2, "in flight stays in flight");
    d.retire(1);
    d.retire(2);
    d.ack(1, 0, true).unwrap();
    assert_eq!(d.open(1), 1, "an ack of a connection in flight still counts");
    d.ack(2, 1, false).unwrap();
    assert_eq!(d.next(), None, "every worker retired: nothing is sent");
    assert_eq!(d.take_pending(), [1], "a refusal comes back as pending");
    assert!(d.take_pending().is_empty());
}

#[test]
fn a_retired_worker_gets_nothing_new_but_its_acks_still_count() {
    let mut d = Dispatcher::new(Pick::RoundRobin, std::num::NonZeroUsize::new(2).unwrap());
    d.add_worker(1);
    d.add_worker(2);
    d.push(10);
    d.push(11);
    assert_eq!(d.next(), Some(Next::Send { worker: 1, conn: 10 }));
    assert_eq!(d.next(), Some(Next::Send { worker: 2, conn: 11 }));
    assert!(d.retire(1));
    for c in 12..16 {
        d.push(c);
    }
    // Only worker 2 gets new connections, up to its bound.
    assert_eq!(d.next(), Some(Next::Send { worker: 2, conn: 12 }));
    assert_eq!(d.next(), None);
    // The retired worker's ack for what it already had is honoured.
    assert_eq!(d.ack(1, 10, true), Ok(()));
    assert_eq!(d.open(1), 1);
    // Refused by the only active worker: closed, retired ones do not count as takers.
    d.ack(2, 11, true).unwrap();
    d.ack(2, 12, false).unwrap();
    assert_eq!(d.next(), Some(Next::Close { conn: 12 }));
    // With only retired workers, connections wait instead of being closed.
    assert!(d.retire(2));
    d.push(20);
    assert_eq!(d.next(), None);
    d.add_worker(3);
    assert_eq!(d.next(), Some(Next::Send { worker: 3, conn: 13 }));
}

/// A connection every worker defers (each lost its descriptor: all at their descriptor limit)
/// is never closed: it waits at the front, goes to the first worker resumed, and a deferral
/// holds only that worker off, so the others keep taking connections meanwhile.
#[test]
fn a_connection_deferred_by_every_worker_waits_and_is_never_closed() {
    for pick in [Pick::RoundRobin, Pick::LeastConnections] {
        let mut d = with_workers(pick, 1, &[1, 2]);
        d.push(10);
        d.push(11);
        assert_eq!(run(&mut d), [send(1, 10), send(2, 11)], "{pick:?}");
        // Worker 1 defers: held off, its connection goes to the front for worker 2 (once 2
        // has room), never back to 1 while held off.
        d.defer(1, 10).unwrap();
        assert!(d.is_held_off(1));
        assert_eq!(run(&mut d), [], "{pick:?}: 2 is full, 1 held off");
        d.ack(2, 11, true).unwrap();
        assert_eq!(run(&mut d), [send(2, 10)], "{pick:?}");
        // Now 2 defers it too: everyone is held off, and the connection waits, not closed.
        d.defer(2, 10).unwrap();
        assert_eq!(run(&mut d), [], "{pick:?}: all held off");
        assert_eq!(d.pending_len(), 1, "{pick:?}");
        // The first resumed worker takes it, even one that deferred it before.
        assert!(d.resume(1));
        assert!(!d.resume(1), "resumed once");
        assert_eq!(run(&mut d), [send(1, 10)], "{pick:?}");
        d.ack(1, 10, true).unwrap();
        assert!(d.resume(2));
        assert_eq!(d.pending_len() + d.in_flight_total(), 0, "{pick:?}");
        // A deferral that matches nothing in flight changes nothing.
        assert_eq!(d.defer(1, 99), Err(AckError::NotInFlight { worker: 1, conn: 99 }));
        assert_eq!(d.defer(7, 99), Err(AckError::UnknownWorker { worker: 7, conn: 99 }));
        assert!(!d.is_held_off(1));
    }
}

/// A connection refused by the only worker taking connections would be closed; if that worker
/// retires first (it is disconnecting, or found hung), nobody is left to have refused it, and
/// it waits for a new worker instead, as when the last worker leaves.
#[test]
fn a_connection_about_to_close_waits_again_when_the_last_active_worker_retires() {
    let mut d = with_workers(Pick::RoundRobin, 1, &[1]);
    d.push(10);
    assert_eq!(run(&mut d), [send(1, 10)]);
    d.ack(1, 10, false).unwrap();
    assert!(d.retire(1));
    assert_eq!(run(&mut d), [], "not closed: nobody active refused it");
    assert_eq!(d.pending_len(), 1);
    assert!(d.add_worker(2));
    assert_eq!(run(&mut d), [send(2, 10)]);
}

/// A worker given its own bound takes up to that many unacknowledged hand-offs while the
/// others keep the dispatcher's; an unknown worker is refused.
#[test]
fn a_worker_with_its_own_bound_takes_that_many_in_flight() {
    for pick in [Pick::RoundRobin, Pick::LeastConnections] {
        let mut d = with_workers(pick, 1, &[1, 2]);
        assert!(d.set_max_in_flight(1, k(3)));
        assert!(!d.set_max_in_flight(9, k(3)));
        for c in 0..6 {
            d.push(c);
        }
        let sent = run(&mut d);
        let to = |w| {
            sent.iter().filter(|n| matches!(n, Next::Send { worker, .. } if *worker == w)).count()
        };
        assert_eq!((to(1), to(2)), (3, 1), "{pick:?}: {sent:?}");
        assert_eq!(d.pending_len(), 2);
        d.ack(
            2,
            sent.iter()
                .find_map(|n| match n {
                    Next::Send { worker: 2, conn } => Some(*conn),
                    _ => None,
                })
                .unwrap(),
            true,
        )
        .unwrap();
        assert_eq!(run(&mut d).len(), 1, "{pick:?}: worker 2 takes one more");
    }
}
