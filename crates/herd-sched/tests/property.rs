//! Thousands of pseudo-random operations checked against a plain reference model.
//!
//! The model follows the documented rules literally (a rotation queue, a pending FIFO, a
//! list of connections refused by every worker), so every `next()` decision is predicted
//! exactly. After each operation the dispatcher's observers must agree with the model,
//! which accounts for every connection in exactly one place.
//!
//! Around them, each worker's hand-off channel is a queue of what it sent and the primary has
//! not read (acks, and the reset Linux reports before them when a worker exits with messages
//! unread). Workers answer, exit and leave at random, the primary reads at random, and every
//! connection must be served by exactly one worker or closed exactly once, never both, never
//! twice. That holds because the primary follows two rules ([`Rules`]); with either switched
//! off, the same checks fail.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;

use herd_sched::{AckError, ConnId, Dispatcher, Next, Pick, WorkerId};

/// Knuth's MMIX linear congruential generator; the high bits are the usable ones.
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: usize) -> usize {
        self.next_u32() as usize % n
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    Pending,
    InFlight(WorkerId),
    Accepted,
    Closed,
    Drained,
}

#[derive(Default)]
struct Model {
    pick: Option<Pick>,
    max: usize,
    /// Registered workers in join order, with their open counts.
    workers: Vec<(WorkerId, usize)>,
    /// Rotation order, front first.
    rotation: VecDeque<WorkerId>,
    pending: VecDeque<ConnId>,
    closing: VecDeque<ConnId>,
    /// Hand-offs per worker, oldest first.
    in_flight: HashMap<WorkerId, Vec<ConnId>>,
    refused: HashMap<ConnId, Vec<WorkerId>>,
    place: HashMap<ConnId, Place>,
    /// Workers that deferred a connection and were not resumed since.
    held_off: HashSet<WorkerId>,
    /// Retired workers (disconnecting, or hung and being killed): nothing new goes to them.
    retired: HashSet<WorkerId>,
}

impl Model {
    fn has(&self, w: WorkerId) -> bool {
        self.workers.iter().any(|&(x, _)| x == w)
    }

    fn refused_by(&self, c: ConnId, w: WorkerId) -> bool {
        self.refused.get(&c).is_some_and(|r| r.contains(&w))
    }

    /// Every worker still taking connections (and there is one) refused `c`.
    fn refused_by_all(&self, c: ConnId) -> bool {
        let mut active = self.workers.iter().filter(|(w, _)| !self.retired.contains(w)).peekable();
        active.peek().is_some() && active.all(|&(w, _)| self.refused_by(c, w))
    }

    fn in_flight(&self, w: WorkerId) -> usize {
        self.in_flight.get(&w).map_or(0, Vec::len)
    }

    fn load(&self, w: WorkerId) -> usize {
        let open = self.workers.iter().find(|&&(x, _)| x == w).unwrap().1;
        open + self.in_flight(w)
    }

    fn eligible(&self, c: ConnId, w: WorkerId) -> bool {
        self.in_flight(w) < self.max
            && !self.refused_by(c, w)
            && !self.held_off.contains(&w)
            && !self.retired.contains(&w)
    }

    /// The decision the documented rules call for.
    fn expected_next(&self) -> Option<Next> {
        if let Some(&conn) = self.closing.front() {
            return Some(Next::Close { conn });
        }
        for &c in &self.pending {
            let candidates = self.rotation.iter().copied().filter(|&w| self.eligible(c, w));
            let chosen = match self.pick.unwrap() {
                Pick::RoundRobin => {
                    let mut candidates = candidates;
                    candidates.next()
                }
                // min_by_key keeps the first of equal keys: rotation order breaks ties.
                Pick::LeastConnections => candidates.min_by_key(|&w| self.load(w)),
            };
            if let Some(worker) = chosen {
                return Some(Next::Send { worker, conn: c });
            }
        }
        None
    }

    fn apply_next(&mut self, n: Next) {
        match n {
            Next::Close { conn } => {
                assert_eq!(self.closing.pop_front(), Some(conn));
                assert!(self.refused_by_all(conn), "closing {conn} not refused by all");
                self.refused.remove(&conn);
                self.place.insert(conn, Place::Closed);
            }
            Next::Send { worker, conn } => {
                assert!(self.eligible(conn, worker), "{worker} may not take {conn}");
                let pos = self.pending.iter().position(|&c| c == conn).unwrap();
                self.pending.remove(pos);
                let in_flight = self.in_flight.entry(worker).or_default();
                in_flight.push(conn);
                assert!(in_flight.len() <= self.max);
                let r = self.rotation.iter().position(|&w| w == worker).unwrap();
                self.rotation.remove(r);
                self.rotation.push_back(worker);
                self.place.insert(conn, Place::InFlight(worker));
            }
        }
    }

    fn ack(&mut self, w: WorkerId, c: ConnId, accepted: bool) {
        let q = self.in_flight.get_mut(&w).unwrap();
        let pos = q.iter().position(|&x| x == c).unwrap();
        q.remove(pos);
        if accepted {
            self.workers.iter_mut().find(|(x, _)| *x == w).unwrap().1 += 1;
            self.refused.remove(&c);
            self.place.insert(c, Place::Accepted);
            return;
        }
        self.refused.entry(c).or_default().push(w);
        self.place.insert(c, Place::Pending);
        if self.refused_by_all(c) {
            self.closing.push_back(c);
        } else {
            self.pending.push_front(c);
        }
    }

    fn none_active(&self) -> bool {
        self.workers.iter().all(|(w, _)| self.retired.contains(w))
    }

    /// Nobody takes connections: those waiting to be closed wait for a worker again.
    fn reopen(&mut self) {
        while let Some(c) = self.closing.pop_back() {
            self.pending.push_front(c);
        }
    }

    /// `w` could not take `c` for now: back to the front, no refusal, `w` held off.
    fn defer(&mut self, w: WorkerId, c: ConnId) {
        let q = self.in_flight.get_mut(&w).unwrap();
        let pos = q.iter().position(|&x| x == c).unwrap();
        q.remove(pos);
        self.held_off.insert(w);
        self.place.insert(c, Place::Pending);
        self.pending.push_front(c);
    }

    fn add(&mut self, w: WorkerId) {
        if self.has(w) {
            return;
        }
        self.workers.push((w, 0));
        self.rotation.push_back(w);
        while let Some(c) = self.closing.pop_back() {
            self.pending.push_front(c);
        }
    }

    fn remove(&mut self, w: WorkerId) {
        if !self.has(w) {
            return;
        }
        self.workers.retain(|&(x, _)| x != w);
        self.rotation.retain(|&x| x != w);
        self.held_off.remove(&w);
        self.retired.remove(&w);
        for c in self.in_flight.remove(&w).unwrap_or_default().into_iter().rev() {
            self.pending.push_front(c);
            self.place.insert(c, Place::Pending);
        }
        for r in self.refused.values_mut() {
            r.retain(|&x| x != w);
        }
        if self.none_active() {
            self.reopen();
        } else {
            let pending = std::mem::take(&mut self.pending);
            for c in pending {
                if self.refused_by_all(c) {
                    self.closing.push_back(c);
                } else {
                    self.pending.push_back(c);
                }
            }
        }
    }

    fn drain(&mut self) -> Vec<ConnId> {
        let mut all: Vec<ConnId> = self.closing.drain(..).collect();
        all.extend(self.pending.drain(..));
        for (w, _) in &self.workers {
            all.extend(self.in_flight.remove(w).unwrap_or_default());
        }
        for c in &all {
            self.place.insert(*c, Place::Drained);
            self.refused.remove(c);
        }
        all
    }

    fn in_flight_pairs(&self) -> Vec<(WorkerId, ConnId)> {
        let mut v: Vec<_> =
            self.in_flight.iter().flat_map(|(&w, q)| q.iter().map(move |&c| (w, c))).collect();
        v.sort_unstable();
        v
    }
}

/// Compares the dispatcher's observers with the model. With `full`, also checks that the
/// model's own bookkeeping puts every connection in exactly one place (slower).
#[track_caller]
fn check(d: &Dispatcher, m: &Model, full: bool, ctx: &dyn Fn() -> String) {
    let workers: Vec<WorkerId> = m.workers.iter().map(|&(w, _)| w).collect();
    assert!(d.workers().eq(workers.iter().copied()), "{}", ctx());
    assert_eq!(d.is_empty(), workers.is_empty(), "{}", ctx());
    for &(w, open) in &m.workers {
        assert_eq!(d.open(w), open, "{}: open({w})", ctx());
        assert_eq!(d.in_flight(w), m.in_flight(w), "{}: in_flight({w})", ctx());
        assert_eq!(d.is_held_off(w), m.held_off.contains(&w), "{}: is_held_off({w})", ctx());
        assert!(d.in_flight(w) <= m.max, "{}: in_flight({w}) over the bound", ctx());
    }
    let in_flight: usize = m.in_flight.values().map(Vec::len).sum();
    assert_eq!(d.pending_len(), m.pending.len() + m.closing.len(), "{}", ctx());
    assert_eq!(d.in_flight_total(), in_flight, "{}", ctx());
    if !full {
        return;
    }
    // Every connection is in exactly one place: the queues and the place map agree.
    let mut queued: Vec<(ConnId, Place)> = m
        .pending
        .iter()
        .chain(&m.closing)
        .map(|&c| (c, Place::Pending))
        .chain(m.in_flight_pairs().into_iter().map(|(w, c)| (c, Place::InFlight(w))))
        .collect();
    queued.sort_unstable_by_key(|&(c, _)| c);
    let mut placed: Vec<(ConnId, Place)> = m
        .place
        .iter()
        .filter(|(_, p)| matches!(p, Place::Pending | Place::InFlight(_)))
        .map(|(&c, p)| (c, p.clone()))
        .collect();
    placed.sort_unstable_by_key(|&(c, _)| c);
    assert_eq!(queued, placed, "{}: a connection lost or duplicated", ctx());
}

/// What a worker sent on its hand-off channel, in the order the primary reads it.
#[derive(Clone, Copy, Debug)]
enum Msg {
    Ack {
        conn: ConnId,
        accepted: bool,
    },
    /// The worker could not take it for now (its descriptor was lost on the way in).
    Defer {
        conn: ConnId,
    },
    /// Linux's `ECONNRESET`: the worker closed its end with messages of ours unread. The
    /// kernel reports it once, *before* the messages still queued.
    Reset,
}

/// The reading rules of the primary (herd-registry), which exactly once rests on. The tests
/// with a rule switched off show that the checks catch the double service that follows.
#[derive(Clone, Copy, Debug)]
struct Rules {
    /// A worker leaves only after everything queued on its channel is read and applied.
    drain_before_leave: bool,
    /// A reset is read past: the messages behind it still count, end of stream comes later.
    read_past_reset: bool,
}

const RULES: Rules = Rules { drain_before_leave: true, read_past_reset: true };

/// The worker side of the hand-off channels, and what became of each connection.
#[derive(Default)]
struct Wire {
    /// Messages each worker sent that the primary has not read, oldest first.
    queued: HashMap<WorkerId, VecDeque<Msg>>,
    /// Connections each worker received and has not answered.
    received: HashMap<WorkerId, Vec<ConnId>>,
    /// Workers that exited and are still registered until the primary notices.
    gone: HashSet<WorkerId>,
    /// The worker that serves each connection (it sent an accepting ack).
    served: HashMap<ConnId, WorkerId>,
    /// Connections the primary closed because every worker refused them.
    closed: HashSet<ConnId>,
}

impl Wire {
    /// A worker accepts `c`: nobody else may have, and it must not have been closed.
    #[track_caller]
    fn serve(&mut self, c: ConnId, w: WorkerId) {
        if let Some(first) = self.served.insert(c, w) {
            panic!("exactly once violated: connection {c} served by worker {first} and {w}");
        }
        assert!(!self.closed.contains(&c), "exactly once violated: {c} closed, then served by {w}");
    }

    #[track_caller]
    fn close(&mut self, c: ConnId) {
        if let Some(w) = self.served.get(&c) {
            panic!("exactly once violated: connection {c} served by worker {w}, then closed");
        }
        assert!(self.closed.insert(c), "exactly once violated: connection {c} closed twice");
    }
}

/// The dispatcher under test, the reference model, and the channels around them.
struct Harness {
    d: Dispatcher,
    m: Model,
    wire: Wire,
    rules: Rules,
}

impl Harness {
    /// The primary reads at most `limit` of `w`'s messages and applies them. Returns whether
    /// it reached end of stream (the worker exited and nothing is left, or, without
    /// `read_past_reset`, a reset read as end of stream): the worker must leave then.
    fn read(&mut self, w: WorkerId, limit: usize) -> bool {
        for _ in 0..limit {
            match self.wire.queued.get_mut(&w).and_then(VecDeque::pop_front) {
                Some(Msg::Ack { conn, accepted }) => {
                    // Whatever is queued was sent for a connection in flight to this worker,
                    // and nothing takes a connection from a worker before its acks are read.
                    self.d.ack(w, conn, accepted).unwrap();
                    self.m.ack(w, conn, accepted);
                }
                Some(Msg::Defer { conn }) => {
                    self.d.defer(w, conn).unwrap();
                    self.m.defer(w, conn);
                }
                Some(Msg::Reset) if self.rules.read_past_reset => {}
                Some(Msg::Reset) => return true,
                None => return self.wire.gone.contains(&w),
            }
        }
        false
    }

    /// The worker leaves the handle (its exit, its close, a failed send, a new grant).
    fn leave(&mut self, w: WorkerId) {
        if self.rules.drain_before_leave {
            self.read(w, usize::MAX);
        }
        // Its channel closes: what the primary did not read is lost, and what it had not
        // answered it never serves.
        self.wire.queued.remove(&w);
        self.wire.received.remove(&w);
        self.wire.gone.remove(&w);
        assert_eq!(self.d.remove_worker(w), self.m.has(w));
        self.m.remove(w);
    }

    /// Takes one decision of the dispatcher (checked against the model) and carries it out.
    fn step(&mut self) -> Option<Next> {
        let want = self.m.expected_next();
        let got = self.d.next();
        assert_eq!(got, want, "next");
        let n = got?;
        self.m.apply_next(n);
        match n {
            // The send to an exited worker fails: it leaves, and the connection goes back.
            Next::Send { worker, .. } if self.wire.gone.contains(&worker) => self.leave(worker),
            Next::Send { worker, conn } => self.wire.received.entry(worker).or_default().push(conn),
            Next::Close { conn } => self.wire.close(conn),
        }
        Some(n)
    }

    /// Worker `w` answers one connection it received (the `index`th), if it can: takes it,
    /// refuses it or, with `defer`, cannot take it for now.
    fn answer(&mut self, w: WorkerId, index: usize, accepted: bool) {
        self.answer_with(w, index, accepted, false);
    }

    fn answer_with(&mut self, w: WorkerId, index: usize, accepted: bool, defer: bool) {
        if self.wire.gone.contains(&w) {
            return;
        }
        let Some(received) = self.wire.received.get_mut(&w).filter(|r| !r.is_empty()) else {
            return;
        };
        let conn = received.remove(index % received.len());
        if defer {
            self.wire.queued.entry(w).or_default().push_back(Msg::Defer { conn });
            return;
        }
        if accepted {
            self.wire.serve(conn, w);
        }
        self.wire.queued.entry(w).or_default().push_back(Msg::Ack { conn, accepted });
    }

    /// Worker `w` exits. With connections of ours unread, its end reports a reset first.
    fn exit(&mut self, w: WorkerId) {
        if !self.m.has(w) || !self.wire.gone.insert(w) {
            return;
        }
        if self.wire.received.remove(&w).is_some_and(|r| !r.is_empty()) {
            self.wire.queued.entry(w).or_default().push_front(Msg::Reset);
        }
    }
}

fn run(seed: u64, pick: Pick, max: usize, ops: usize) {
    run_with(seed, pick, max, ops, RULES);
}

fn run_with(seed: u64, pick: Pick, max: usize, ops: usize, rules: Rules) {
    let mut rng = Lcg(seed);
    let d = Dispatcher::new(pick, NonZeroUsize::new(max).unwrap());
    let m = Model { pick: Some(pick), max, ..Model::default() };
    let mut h = Harness { d, m, wire: Wire::default(), rules };
    let mut next_conn: ConnId = 0;
    for w in 0..3 {
        h.d.add_worker(w);
        h.m.add(w);
    }
    for op in 0..ops {
        let ctx = || format!("seed {seed} {pick:?} max {max} {rules:?} op {op}");
        let roll = rng.below(1000);
        match roll {
            0..300 => {
                h.d.push(next_conn);
                h.m.pending.push_back(next_conn);
                h.m.place.insert(next_conn, Place::Pending);
                next_conn += 1;
            }
            300..600 => {
                h.step();
            }
            600..690 => {
                let (w, index, accepted) =
                    (rng.below(8) as WorkerId, rng.below(64), rng.percent(65));
                // One answer in ten: the descriptor was lost on the way in.
                let defer = rng.percent(10);
                h.answer_with(w, index, accepted, defer);
            }
            690..800 => {
                // The primary reads part of a channel (more may arrive while it reads).
                let w = rng.below(8) as WorkerId;
                let limit = 1 + rng.below(4);
                if h.m.has(w) && h.read(w, limit) {
                    h.leave(w);
                }
            }
            800..840 => {
                let w = rng.below(8) as WorkerId;
                if !h.m.has(w) {
                    h.wire.gone.remove(&w);
                }
                assert_eq!(h.d.add_worker(w), !h.m.has(w), "{}", ctx());
                h.m.add(w);
            }
            840..866 => {
                // The worker leaves, with acks maybe unread: its close or exit is handled
                // before its hand-off channel.
                let w = rng.below(8) as WorkerId;
                if h.m.has(w) {
                    h.leave(w);
                } else {
                    assert!(!h.d.remove_worker(w), "{}", ctx());
                }
            }
            866..870 => {
                // Disconnecting, or found hung: retired, its in-flight connections still wait
                // for its answers (then it leaves or dies, as any worker).
                let w = rng.below(8) as WorkerId;
                assert_eq!(h.d.retire(w), h.m.has(w), "{}", ctx());
                if h.m.has(w) {
                    h.m.retired.insert(w);
                    if h.m.none_active() {
                        h.m.reopen();
                    }
                }
            }
            870..885 => {
                // The pause after a deferral is over.
                let w = rng.below(8) as WorkerId;
                let was = h.m.has(w) && h.m.held_off.remove(&w);
                assert_eq!(h.d.resume(w), was, "{}", ctx());
            }
            885..900 => {
                let w = rng.below(8) as WorkerId;
                h.d.closed(w);
                if let Some(e) = h.m.workers.iter_mut().find(|(x, _)| *x == w) {
                    e.1 = e.1.saturating_sub(1);
                }
            }
            900..930 => h.exit(rng.below(8) as WorkerId),
            930..995 => {
                // An ack that matches nothing in flight: an error, and no change.
                let w = rng.below(9) as WorkerId;
                let c = rng.below(next_conn as usize + 2) as ConnId;
                if h.m.in_flight.get(&w).is_some_and(|q| q.contains(&c)) {
                    continue;
                }
                let before = format!("{:?}", h.d);
                let err = h.d.ack(w, c, rng.percent(50)).unwrap_err();
                let want = if h.m.has(w) {
                    AckError::NotInFlight { worker: w, conn: c }
                } else {
                    AckError::UnknownWorker { worker: w, conn: c }
                };
                assert_eq!(err, want, "{}", ctx());
                assert_eq!(format!("{:?}", h.d), before, "{}: bad ack changed state", ctx());
            }
            _ => {
                // The handle closes; as in the registry, only after what the workers sent is
                // applied. Their channels close with it: nothing received is answered.
                let workers: Vec<WorkerId> = h.m.workers.iter().map(|&(w, _)| w).collect();
                for w in workers {
                    if h.read(w, usize::MAX) {
                        h.leave(w);
                    }
                }
                h.wire.received.clear();
                let mut got = h.d.drain();
                let mut want = h.m.drain();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "{}: drain", ctx());
            }
        }
        check(&h.d, &h.m, op % 64 == 0, &ctx);
    }

    // Liveness: exits are noticed and every channel is read; then, with a fresh worker that
    // accepts everything and the others answering at once, every connection ends up served
    // once, closed once or drained.
    let workers: Vec<WorkerId> = h.m.workers.iter().map(|&(w, _)| w).collect();
    for w in workers {
        if h.wire.gone.contains(&w) || h.read(w, usize::MAX) {
            h.leave(w);
        }
    }
    // Every pause after a deferral ends (the registry's timer).
    for w in std::mem::take(&mut h.m.held_off) {
        assert!(h.d.resume(w), "seed {seed}: {w} held off");
    }
    h.d.add_worker(100);
    h.m.add(100);
    loop {
        if h.step().is_some() {
            check(&h.d, &h.m, false, &|| format!("seed {seed}: final"));
            continue;
        }
        let Some((&w, _)) = h.wire.received.iter().find(|(_, r)| !r.is_empty()) else { break };
        let accepted = w == 100 || rng.percent(50);
        h.answer(w, 0, accepted);
        h.read(w, usize::MAX);
        check(&h.d, &h.m, false, &|| format!("seed {seed}: final"));
    }
    check(&h.d, &h.m, true, &|| format!("seed {seed}: end"));
    assert_eq!(h.d.pending_len(), 0, "seed {seed}: stuck connections");
    assert_eq!(h.d.in_flight_total(), 0);
    assert_eq!(h.m.place.len() as u64, next_conn);
    for (&c, place) in &h.m.place {
        let (served, closed) = (h.wire.served.contains_key(&c), h.wire.closed.contains(&c));
        match place {
            Place::Accepted => assert!(served && !closed, "seed {seed}: {c} accepted"),
            Place::Closed => assert!(closed && !served, "seed {seed}: {c} closed"),
            // The handle closed under it; a worker may have served it before that.
            Place::Drained => assert!(!closed, "seed {seed}: {c} drained"),
            other => panic!("seed {seed}: {c} ends {other:?}"),
        }
    }
}

fn run_seeds(pick: Pick, max: usize) {
    for seed in 1..=12u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), pick, max, 4000);
    }
}

#[test]
fn random_operations_round_robin_one_in_flight() {
    run_seeds(Pick::RoundRobin, 1);
}

#[test]
fn random_operations_round_robin_two_in_flight() {
    run_seeds(Pick::RoundRobin, 2);
}

#[test]
fn random_operations_round_robin_four_in_flight() {
    run_seeds(Pick::RoundRobin, 4);
}

#[test]
fn random_operations_least_conn_one_in_flight() {
    run_seeds(Pick::LeastConnections, 1);
}

#[test]
fn random_operations_least_conn_two_in_flight() {
    run_seeds(Pick::LeastConnections, 2);
}

#[test]
fn random_operations_least_conn_four_in_flight() {
    run_seeds(Pick::LeastConnections, 4);
}

/// The checks catch a worker that leaves with acks unread (the rule off): some connection is
/// served by two workers, or served and closed.
#[test]
#[should_panic(expected = "exactly once violated")]
fn leaving_without_reading_what_the_worker_sent_is_caught() {
    let rules = Rules { drain_before_leave: false, ..RULES };
    for seed in 1..=12u64 {
        run_with(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), Pick::RoundRobin, 2, 4000, rules);
    }
}

/// The checks catch a reset read as end of stream (the rule off): the acks behind it are lost.
#[test]
#[should_panic(expected = "exactly once violated")]
fn a_reset_read_as_end_of_stream_is_caught() {
    let rules = Rules { read_past_reset: false, ..RULES };
    for seed in 1..=12u64 {
        run_with(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), Pick::RoundRobin, 2, 4000, rules);
    }
}
