//! Thousands of pseudo-random operations checked against a plain reference model.
//!
//! The model follows the documented rules literally (a rotation queue, a pending FIFO, a
//! list of connections refused by every worker), so every `next()` decision is predicted
//! exactly. After each operation the dispatcher's observers must agree with the model,
//! which accounts for every connection in exactly one place.

use std::collections::{HashMap, VecDeque};
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
}

impl Model {
    fn has(&self, w: WorkerId) -> bool {
        self.workers.iter().any(|&(x, _)| x == w)
    }

    fn refused_by(&self, c: ConnId, w: WorkerId) -> bool {
        self.refused.get(&c).is_some_and(|r| r.contains(&w))
    }

    fn refused_by_all(&self, c: ConnId) -> bool {
        !self.workers.is_empty() && self.workers.iter().all(|&(w, _)| self.refused_by(c, w))
    }

    fn in_flight(&self, w: WorkerId) -> usize {
        self.in_flight.get(&w).map_or(0, Vec::len)
    }

    fn load(&self, w: WorkerId) -> usize {
        let open = self.workers.iter().find(|&&(x, _)| x == w).unwrap().1;
        open + self.in_flight(w)
    }

    fn eligible(&self, c: ConnId, w: WorkerId) -> bool {
        self.in_flight(w) < self.max && !self.refused_by(c, w)
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
        for c in self.in_flight.remove(&w).unwrap_or_default().into_iter().rev() {
            self.pending.push_front(c);
            self.place.insert(c, Place::Pending);
        }
        for r in self.refused.values_mut() {
            r.retain(|&x| x != w);
        }
        if self.workers.is_empty() {
            while let Some(c) = self.closing.pop_back() {
                self.pending.push_front(c);
            }
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

fn run(seed: u64, pick: Pick, max: usize, ops: usize) {
    let mut rng = Lcg(seed);
    let mut d = Dispatcher::new(pick, NonZeroUsize::new(max).unwrap());
    let mut m = Model { pick: Some(pick), max, ..Model::default() };
    let mut next_conn: ConnId = 0;
    for w in 0..3 {
        d.add_worker(w);
        m.add(w);
    }
    for op in 0..ops {
        let ctx = || format!("seed {seed} {pick:?} max {max} op {op}");
        let roll = rng.below(1000);
        match roll {
            0..300 => {
                d.push(next_conn);
                m.pending.push_back(next_conn);
                m.place.insert(next_conn, Place::Pending);
                next_conn += 1;
            }
            300..600 => {
                let want = m.expected_next();
                let got = d.next();
                assert_eq!(got, want, "{}: next", ctx());
                if let Some(n) = got {
                    m.apply_next(n);
                }
            }
            600..800 => {
                let pairs = m.in_flight_pairs();
                if !pairs.is_empty() {
                    let (w, c) = pairs[rng.below(pairs.len())];
                    let accepted = rng.percent(65);
                    d.ack(w, c, accepted).unwrap();
                    m.ack(w, c, accepted);
                }
            }
            800..840 => {
                let w = rng.below(8) as WorkerId;
                assert_eq!(d.add_worker(w), !m.has(w), "{}", ctx());
                m.add(w);
            }
            840..870 => {
                let w = rng.below(8) as WorkerId;
                assert_eq!(d.remove_worker(w), m.has(w), "{}", ctx());
                m.remove(w);
            }
            870..930 => {
                let w = rng.below(8) as WorkerId;
                d.closed(w);
                if let Some(e) = m.workers.iter_mut().find(|(x, _)| *x == w) {
                    e.1 = e.1.saturating_sub(1);
                }
            }
            930..995 => {
                // An ack that matches nothing in flight: an error, and no change.
                let w = rng.below(9) as WorkerId;
                let c = rng.below(next_conn as usize + 2) as ConnId;
                if m.in_flight.get(&w).is_some_and(|q| q.contains(&c)) {
                    continue;
                }
                let before = format!("{d:?}");
                let err = d.ack(w, c, rng.percent(50)).unwrap_err();
                let want = if m.has(w) {
                    AckError::NotInFlight { worker: w, conn: c }
                } else {
                    AckError::UnknownWorker { worker: w, conn: c }
                };
                assert_eq!(err, want, "{}", ctx());
                assert_eq!(format!("{d:?}"), before, "{}: bad ack changed state", ctx());
            }
            _ => {
                let mut got = d.drain();
                let mut want = m.drain();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "{}: drain", ctx());
            }
        }
        check(&d, &m, op % 64 == 0, &ctx);
    }

    // Liveness: with a fresh worker that accepts everything, and the others answering at
    // once, every connection ends up accepted or closed.
    d.add_worker(100);
    m.add(100);
    loop {
        let want = m.expected_next();
        let got = d.next();
        assert_eq!(got, want, "seed {seed}: final next");
        match got {
            Some(n) => m.apply_next(n),
            None => {
                let pairs = m.in_flight_pairs();
                let Some(&(w, c)) = pairs.first() else { break };
                let accepted = w == 100 || rng.percent(50);
                d.ack(w, c, accepted).unwrap();
                m.ack(w, c, accepted);
            }
        }
        check(&d, &m, false, &|| format!("seed {seed}: final"));
    }
    check(&d, &m, true, &|| format!("seed {seed}: end"));
    assert_eq!(d.pending_len(), 0, "seed {seed}: stuck connections");
    assert_eq!(d.in_flight_total(), 0);
    assert!(
        m.place.values().all(|p| matches!(p, Place::Accepted | Place::Closed | Place::Drained)),
        "seed {seed}"
    );
    assert_eq!(m.place.len() as u64, next_conn);
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
