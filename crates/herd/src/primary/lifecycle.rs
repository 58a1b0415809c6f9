//! Worker lives: graceful disconnect, kill after a grace period, respawn with backoff,
//! rolling restart, adding and removing workers, and the signals that drive them.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use herd_registry::{Key, Watched};

use super::respawn::Decision;
use super::{Event, Primary, SIGNAL_TOKEN, trace};
use crate::protocol::ToWorker;
use crate::{Error, Signal, WorkerId, sys};

/// A rolling restart in progress: places still to roll, and the one rolling now.
#[derive(Debug)]
pub(crate) struct Rolling {
    queue: VecDeque<usize>,
    current: Option<Roll>,
    /// When it began, and how many places it has rolled: for its log lines and progress.
    started: Instant,
    replaced: usize,
}

#[derive(Debug, Clone)]
struct Roll {
    place: usize,
    old: WorkerId,
    new: WorkerId,
    /// The handles the old worker held when the roll began: the new one must hold them all
    /// (and any the old one took since) to be ready, even if the old one dies meanwhile.
    keys: Vec<Key>,
    /// The old worker was told to disconnect (the new one listens on all it listened on).
    handed_over: bool,
    /// The old worker exited before the new one was ready: there is nobody to disconnect, and
    /// the place is the new worker's whatever happens.
    old_gone: bool,
    /// When the new worker must be ready by ([`Cluster::ready_timeout`] after its fork), or
    /// the restart is aborted.
    ///
    /// [`Cluster::ready_timeout`]: crate::Cluster::ready_timeout
    ready_by: Instant,
    /// When the new worker was forked.
    forked_at: Instant,
}

/// How a worker that exited leaves its place, for [`Primary::on_worker_gone`].
pub(super) struct Death {
    /// Its place, if it still had one.
    pub(super) place: Option<usize>,
    /// It was disconnecting (by either side).
    pub(super) after_disconnect: bool,
    /// How long it ran.
    pub(super) uptime: Duration,
    /// It never listened, and its latest listen failed, so: the error.
    pub(super) failed_to_listen: Option<String>,
    /// Its process id and how it ended, for the log line of its respawn.
    pub(super) pid: u32,
    pub(super) status: ExitStatus,
}

impl Primary {
    /// Disconnects a worker gracefully (Node's `worker.disconnect()`): the primary hands it no
    /// new connection at once, its listeners stop yielding connections, it finishes the
    /// connections it has and exits; if it has not exited after the kill timeout
    /// ([`Cluster::kill_timeout`](crate::Cluster::kill_timeout)), it is killed (SIGKILL). It is
    /// not respawned; its `Exit` event says `after_disconnect` if it exited by itself, and
    /// carries the signal if it was killed.
    ///
    /// When it stops taking connections, by policy:
    /// - `rr`, `least-conn`: before this returns. The primary hands it nothing new; the
    ///   connections already sent to it and not yet taken are refused by the worker when it
    ///   reads the disconnect, and go to the other workers.
    /// - `reuseport`: before this returns, if its place is given up (no rolling replacement
    ///   takes it): its socket leaves the group, and the connections queued on it migrate to
    ///   the other places where the kernel allows it ([`herd_registry::migrates_queued`]).
    /// - `none` (a socket every worker accepts on): when the worker reads the disconnect
    ///   message. Between this call and that moment (its control thread's next read: well
    ///   under a millisecond on an idle machine, as long as the worker is not scheduled on a
    ///   busy one, never for a stopped worker, which accepts nothing either) it may still
    ///   accept a connection from the shared queue, as may every other worker; a connection it
    ///   accepts is counted before the disconnect is seen and served to the end, so nothing is
    ///   lost. The socket itself stays open for the others: only a stop
    ///   ([`disconnect_all`](Primary::disconnect_all)) closes it for everyone at once.
    ///
    /// # Errors
    /// [`Error::NoSuchWorker`] when no worker has this id.
    pub fn disconnect(&mut self, id: WorkerId) -> Result<(), Error> {
        if !self.workers.contains_key(&id) {
            return Err(Error::NoSuchWorker(id));
        }
        self.mark_disconnecting(id);
        if let Some(slot) = self.workers.get(&id).filter(|w| w.activated && w.exit.is_some()) {
            // A socket-activated program is told as systemd tells a service: SIGTERM, to its
            // whole process group (what it started too, `KillMode=control-group`).
            let _ = sys::kill_group(slot.pid, Signal::Term.number());
            return Ok(());
        }
        // A worker whose channel is already closed cannot be told; the kill timer stands.
        let _ = self.post(id, ToWorker::Disconnect, Vec::new());
        Ok(())
    }

    /// The worker is disconnecting (told by the primary, or by itself).
    pub(super) fn mark_disconnecting(&mut self, id: WorkerId) {
        let kill_timeout = self.settings.kill_timeout;
        let Some(slot) = self.workers.get_mut(&id) else { return };
        if slot.after_disconnect {
            return;
        }
        slot.after_disconnect = true;
        slot.kill_at = Some(Instant::now() + kill_timeout);
        let place = slot.place;
        // Connections already handed to it wait for its acks; nothing new goes to it.
        self.registry.lock().retire_worker(id);
        // A rolling replacement disconnected before it took over: the restart stops, and the
        // place (its sockets included) goes back to the predecessor if that still serves.
        let roll = self.rolling.as_ref().and_then(|r| r.current.clone());
        if let Some(roll) = roll.filter(|r| r.new == id && !r.handed_over) {
            let reason = format!("replacement worker {id} was disconnected before it was ready");
            if self.abort_roll(&roll, reason) {
                return;
            }
        }
        // Its place is free for a later fork unless a rolling restart already gave it a
        // successor; with none, its `reuseport` sockets must not keep a share of connections.
        if let Some(place) = place {
            if self.places.get(place) == Some(&Some(id)) {
                self.places[place] = None;
                // At a stop a socket-activated worker keeps its socket listening until it
                // exits (see disconnect_all).
                if !(self.stopping && self.settings.activation.is_some()) {
                    self.registry.lock().vacate_slot(place);
                }
            }
        }
    }

    /// Whether worker `id`, leaving now, will be replaced in its place: by a respawn (it holds
    /// its place and was not disconnected), or by the replacement a rolling restart is bringing
    /// up for it. The handles it held then wait for the replacement instead of closing.
    pub(super) fn replacement_expected(&self, id: WorkerId) -> bool {
        let Some(slot) = self.workers.get(&id) else { return false };
        if self.stopping {
            return false;
        }
        let rolling = self.rolling.as_ref().and_then(|r| r.current.as_ref());
        if rolling.is_some_and(|roll| roll.old == id && !roll.handed_over) {
            return true;
        }
        let holds_place = slot.place.is_some_and(|p| self.places.get(p) == Some(&Some(id)));
        holds_place && !slot.after_disconnect && self.settings.respawn.enabled
    }

    /// Whether place `p` counts as a worker: one holds it, or a respawn is scheduled for it. A
    /// pending respawn is a worker for every count (adding, removing, restarting).
    pub(super) fn place_taken(&self, p: usize) -> bool {
        self.places.get(p).is_some_and(Option::is_some)
            || self.respawns.iter().any(|&(q, _)| q == p)
    }

    /// Stops the cluster gracefully (Node's `cluster.disconnect()`; SIGTERM and SIGINT with
    /// [`handle_signals`](Primary::handle_signals)): every worker is disconnected
    /// ([`disconnect`](Primary::disconnect)) and finishes the connections it has, and nothing
    /// listens any more, at once and under every policy: the primary shuts down every
    /// listening stream socket it bound ([`herd_registry::Registry::stop_listening`]), which
    /// stops the workers' copies with it, so a client connecting from now on is refused
    /// (`ECONNREFUSED`) instead of waiting for a worker that will never accept it. Under
    /// [`Cluster::socket_activation`](crate::Cluster::socket_activation) the sockets are not
    /// shut down (SIGTERM tells such a worker, as systemd tells a service, and a socket shut
    /// down under its `accept(2)` fails it with `EINVAL` before its handler runs): each closes
    /// once its last worker exited, and clients connecting meanwhile wait in its queue.
    /// Connections the kernel had queued that no worker accepted yet are reset then, and those
    /// the primary had accepted for a worker (`rr`, `least-conn`) that none took are closed.
    /// UDP sockets stay until their last worker leaves.
    ///
    /// Respawning, pending respawns and a rolling restart stop (the restart ends with
    /// [`Event::RestartAborted`], reason `the cluster is stopping`); [`restart_all`] and the
    /// signals SIGHUP, SIGTTIN and SIGTTOU are ignored until the stop ends.
    /// [`Event::Drained`] ends it, once every worker has exited and every bound socket is
    /// released; then the primary may exit, or fork again: the cluster works as new
    /// (respawning, restarts, a later stop with its own `Drained`).
    ///
    /// Re-entrant: a call while a stop is under way joins it (it disconnects the workers forked
    /// since, and stops the handles they listen on), and one `Drained` ends both. A worker
    /// forked during a stop listens on a new socket (the stopped one is detached from its
    /// address), is not disconnected by the stop it was forked in, and `Drained` waits for it.
    ///
    /// [`restart_all`]: Primary::restart_all
    pub fn disconnect_all(&mut self) {
        if !self.stopping {
            self.systemd_stopping();
            trace::stopping(self.worker_count());
        }
        self.stopping = true;
        self.respawns.clear();
        self.awaiting.clear();
        if let Some(rolling) = self.rolling.take() {
            let place = rolling.current.map(|roll| roll.place).or(rolling.queue.front().copied());
            if let Some(place) = place {
                let reason = "the cluster is stopping".to_owned();
                trace::restart_aborted(place, &reason, Some(rolling.started.elapsed()));
                self.control_restart_ended(Err(format!(
                    "restart aborted at place {place}: {reason}"
                )));
                self.events.push_back(Event::RestartAborted { place, reason });
            }
        }
        // Every worker is told first, and retired from every hand-off handle, so that no
        // connection is handed to it from here on ...
        let held: Vec<bool> = self.places.iter().map(Option::is_some).collect();
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            let _ = self.disconnect(id);
        }
        // ... then nothing listens any more: new clients are refused at once. Not under
        // socket-activated programs: SIGTERM tells them, as systemd tells a service, and a
        // socket shut down under one would wake its accept(2) with EINVAL before its handler
        // runs (a Python app logged a traceback and exited 1); their sockets close as they go.
        let activated = self.settings.activation.is_some();
        if activated {
            self.registry.lock().detach_listening_open();
            // Only places nobody holds (a respawn just cancelled) are given up now.
            for place in (0..self.places.len()).filter(|&p| !held.get(p).copied().unwrap_or(false))
            {
                self.registry.lock().vacate_slot(place);
            }
        } else {
            self.registry.lock().stop_listening();
            // Places whose respawn was just cancelled have nobody coming either.
            for place in 0..self.places.len() {
                self.registry.lock().vacate_slot(place);
            }
        }
        self.places.clear();
    }

    /// Kills every worker at once (SIGKILL) and stops respawning: the second Ctrl-C.
    /// [`Event::Drained`] follows when they are reaped.
    pub fn stop_now(&mut self) {
        self.disconnect_all();
        for slot in self.workers.values().filter(|w| w.exit.is_some()) {
            slot.kill(Signal::Kill);
        }
    }

    /// Starts a rolling restart: one place at a time, a replacement is forked into the place,
    /// and only once it listens on everything its predecessor listened on is the predecessor
    /// disconnected; the next place rolls when the predecessor has exited. No connection is
    /// refused meanwhile. [`Event::Restarted`] reports the end.
    ///
    /// A request while a restart is under way (a second SIGHUP) is merged into it,
    /// [`Event::RestartMerged`] says how: the places already rolled, and the one rolling, roll
    /// again at its end, so every worker at the end was forked after the last request (a
    /// binary deployed in the middle of a restart is what every worker runs). One after the
    /// end, or after an abort, starts a new restart. While the cluster is stopping
    /// ([`disconnect_all`](Primary::disconnect_all), until [`Event::Drained`]) a request is
    /// ignored: the stop wins.
    ///
    /// The restart stops early with [`Event::RestartAborted`], and the old worker of that
    /// place keeps serving, when the replacement cannot be forked, dies before it is ready, or
    /// is not ready within [`Cluster::ready_timeout`](crate::Cluster::ready_timeout) of its
    /// fork; in the last case the primary kills it (SIGKILL), and it is reaped as any worker
    /// (an `Exit` event) but not respawned.
    ///
    /// [`Event::Restarting`] says when a restart begins, and how many places it will roll.
    pub fn restart_all(&mut self) {
        if self.stopping {
            return;
        }
        let held = self.places.iter().enumerate().filter(|(_, w)| w.is_some()).map(|(p, _)| p);
        match &mut self.rolling {
            None => {
                let queue: VecDeque<usize> = held.collect();
                trace::restart_begins(queue.len());
                self.events.push_back(Event::Restarting { workers: queue.len() });
                let started = Instant::now();
                self.rolling = Some(Rolling { queue, current: None, started, replaced: 0 });
            }
            Some(rolling) => {
                // Every held place the restart will not reach from here was forked before
                // this request: it rolls again.
                let again: Vec<usize> = held.filter(|p| !rolling.queue.contains(p)).collect();
                rolling.queue.extend(again.iter().copied());
                trace::restart_merged(&again);
                self.events.push_back(Event::RestartMerged { places: again });
            }
        }
    }

    /// Adds a worker in a new place (SIGTTIN).
    pub fn add_worker(&mut self) -> Result<WorkerId, Error> {
        self.fork()
    }

    /// How many workers the cluster counts: places held by a worker or waiting for a
    /// respawn (a place being rolled counts once).
    pub fn worker_count(&self) -> usize {
        (0..self.places.len()).filter(|&p| self.place_taken(p)).count()
    }

    /// Removes the highest place, gracefully, unless it is the last one: what SIGTTOU does,
    /// with gunicorn's floor of one worker. See
    /// [`remove_worker_down_to`](Primary::remove_worker_down_to), which this is with `min` 1.
    pub fn remove_worker(&mut self) -> Option<WorkerId> {
        self.remove_worker_down_to(1)
    }

    /// Removes the highest place, gracefully, if the cluster counts more than `min` workers
    /// ([`worker_count`](Primary::worker_count)); else does nothing. Its worker is
    /// disconnected, or, if the place is waiting for a respawn, the respawn is cancelled (a
    /// pending respawn counts as a worker, so that is the removal). The place goes away, and
    /// under `reuseport` its sockets leave their groups at once (their queued connections
    /// migrate to the other places where the kernel allows it: see
    /// [`herd_registry::migrates_queued`]). Returns the worker disconnected; `None` when a
    /// pending respawn was cancelled instead, or nothing was removed.
    ///
    /// `min` 0 is the explicit way to remove the last worker: the cluster then serves nobody
    /// until a worker is forked again. The ports its port-0 listens got are kept for the
    /// primary's life, so a worker forked later listens on the same ones.
    pub fn remove_worker_down_to(&mut self, min: usize) -> Option<WorkerId> {
        if self.worker_count() <= min {
            return None;
        }
        while self.places.len().checked_sub(1).is_some_and(|last| !self.place_taken(last)) {
            self.places.pop();
        }
        let place = self.places.len().checked_sub(1)?;
        let held = self.places.pop().flatten();
        self.respawns.retain(|&(p, _)| p != place);
        // A place that is rolling has two workers: the restart stops there, and the
        // predecessor goes with the place too.
        let roll = self.rolling.as_ref().and_then(|r| r.current.clone());
        let predecessor = match roll.filter(|r| r.place == place && !r.handed_over) {
            Some(roll) => {
                let took = self.rolling.take().map(|r| r.started.elapsed());
                let reason = format!("place {place} was removed");
                trace::restart_aborted(place, &reason, took);
                self.control_restart_ended(Err(format!(
                    "restart aborted at place {place}: {reason}"
                )));
                self.events.push_back(Event::RestartAborted { place, reason });
                (!roll.old_gone).then_some(roll.old)
            }
            None => None,
        };
        let leaving: Vec<WorkerId> = held.into_iter().chain(predecessor).collect();
        for &id in &leaving {
            if let Some(slot) = self.workers.get_mut(&id) {
                slot.place = None;
            }
        }
        self.registry.lock().vacate_slot(place);
        for &id in &leaving {
            let _ = self.disconnect(id);
        }
        held
    }

    /// Handles SIGINT and SIGTERM (graceful stop, [`disconnect_all`](Primary::disconnect_all);
    /// a second one while the stop is under way stops at once, [`stop_now`](Primary::stop_now)),
    /// SIGHUP (rolling restart, [`restart_all`](Primary::restart_all); one during a restart is
    /// merged into it, [`Event::RestartMerged`]), SIGTTIN and SIGTTOU (one worker more or
    /// fewer, never fewer than one: [`Event::Scaled`] says the outcome), as gunicorn does.
    /// While the cluster is stopping, SIGHUP, SIGTTIN and SIGTTOU are ignored. With
    /// [`Cluster::forward_signals`](crate::Cluster::forward_signals), SIGQUIT, SIGUSR1,
    /// SIGUSR2 and SIGWINCH are forwarded to every worker. Each arrives as [`Event::Signal`]
    /// too, before what it caused.
    ///
    /// The handlers compose: they are registered in signal-hook's registry, the one
    /// `tokio::signal` and `signal-hook` use, so the application's own handlers of the same
    /// signals (a `tokio::signal::unix::signal(SignalKind::hangup())`, say) run too, whichever
    /// was installed first; a `sigaction` handler installed before is called as well (one
    /// installed after, with `sigaction` directly, replaces every handler of the registry).
    /// They act only in this process: a child forked from it ignores them until it execs.
    /// Calling it again replaces the earlier registration; dropping the primary removes it.
    ///
    /// The workers handle SIGTERM themselves (see [`crate::worker`]): under systemd's default
    /// `KillMode=control-group`, which sends SIGTERM to the primary and every worker at once,
    /// the workers drain while the primary stops, and nothing in flight is lost.
    pub fn handle_signals(&mut self) -> Result<(), Error> {
        let mut signals = vec![Signal::Int, Signal::Term, Signal::Hup, Signal::Ttin, Signal::Ttou];
        if self.settings.forward_signals {
            signals.extend(super::init::FORWARDED);
        }
        let read = sys::install_signals(&signals).map_err(Error::io("install signal handlers"))?;
        self.signals = Some(
            Watched::new(&self.poller, read, SIGNAL_TOKEN)
                .map_err(Error::io("watch signal pipe"))?,
        );
        Ok(())
    }

    pub(super) fn on_signals(&mut self) {
        let Some(pipe) = &self.signals else { return };
        for signal in sys::drain_signals(pipe.get().as_fd()) {
            trace::signal(signal, super::init::FORWARDED.contains(&signal));
            self.events.push_back(Event::Signal(signal));
            match signal {
                Signal::Int | Signal::Term if self.stopping => self.stop_now(),
                Signal::Int | Signal::Term => self.disconnect_all(),
                Signal::Hup => self.restart_all(),
                Signal::Ttin if !self.stopping => {
                    let _ = self.scale_by_signal(true);
                }
                forwarded if super::init::FORWARDED.contains(&forwarded) => self.forward(forwarded),
                Signal::Ttou if !self.stopping => {
                    let _ = self.scale_by_signal(false);
                }
                _ => {}
            }
        }
    }

    /// One worker more (SIGTTIN) or fewer (SIGTTOU, never below one: gunicorn's floor), and
    /// the event that says the outcome: `Ok((from, to))`, or the fork's error in words.
    pub(super) fn scale_by_signal(&mut self, up: bool) -> Result<(usize, usize), String> {
        let from = self.worker_count();
        if up {
            if let Err(e) = self.add_worker() {
                let reason = e.to_string();
                trace::fork_failed(None, &reason);
                self.events.push_back(Event::ForkFailed { reason: reason.clone() });
                return Err(reason);
            }
        } else {
            self.remove_worker();
        }
        let to = self.worker_count();
        trace::scaled(from, to);
        self.events.push_back(Event::Scaled { from, to });
        Ok((from, to))
    }

    /// A worker exited while a rolling restart runs. A replacement that died before taking
    /// over aborts the restart; if its predecessor still serves, the place goes back to it and
    /// the replacement is not respawned (returns `true`); if the predecessor is gone too, the
    /// place lost its worker like any other (respawned as the settings say). A predecessor that
    /// left lets the next place roll, at once if it was handed over, else once its successor is
    /// ready (or, not ready in time, is killed).
    /// `last_words` ([`Slot::last_words`](super::worker::Slot::last_words)) end the reason of
    /// an abort.
    pub(super) fn rolling_on_exit(
        &mut self,
        id: WorkerId,
        status: ExitStatus,
        last_words: &str,
    ) -> bool {
        let Some(roll) = self.rolling.as_ref().and_then(|r| r.current.clone()) else {
            return false;
        };
        if roll.new == id && !roll.handed_over {
            let reason =
                format!("replacement worker {id} died before it was ready: {status}{last_words}");
            return self.abort_roll(&roll, reason);
        }
        if roll.old == id {
            if let Some(rolling) = &mut self.rolling {
                if roll.handed_over {
                    rolling.current = None;
                } else if let Some(current) = &mut rolling.current {
                    current.old_gone = true;
                }
            }
        }
        false
    }

    /// Ends a rolling restart at `roll`, and `RestartAborted` says why. The place goes back to
    /// the old worker if it still serves (returns `true`); otherwise it stays the new worker's,
    /// whose death is then that of the place's worker.
    fn abort_roll(&mut self, roll: &Roll, reason: String) -> bool {
        let old_serves = !roll.old_gone
            && self.workers.get(&roll.old).is_some_and(|w| !w.after_disconnect && w.exit.is_some());
        if old_serves {
            if let Some(p) = self.places.get_mut(roll.place) {
                *p = Some(roll.old);
            }
            // The replacement's handles wait for nobody.
            self.registry.lock().expire_awaiting(roll.place);
        }
        let took = self.rolling.take().map(|r| r.started.elapsed());
        trace::restart_aborted(roll.place, &reason, took);
        self.control_restart_ended(Err(format!(
            "restart aborted at place {}: {reason}",
            roll.place
        )));
        self.events.push_back(Event::RestartAborted { place: roll.place, reason });
        old_serves
    }

    /// How many places the rolling restart under way will still roll (the one rolling now
    /// included); 0 with none.
    pub(super) fn rolling_places(&self) -> usize {
        self.rolling.as_ref().map_or(0, |r| r.queue.len() + usize::from(r.current.is_some()))
    }

    /// When the replacement rolling now must be ready by, if one is waited for.
    pub(super) fn rolling_deadline(&self) -> Option<Instant> {
        let roll = self.rolling.as_ref()?.current.as_ref()?;
        (!roll.handed_over).then_some(roll.ready_by)
    }

    /// A worker exited: respawn it if it died unexpectedly, unless it never listened and its
    /// last listen failed (a respawn would fail the same way: the application decides, told
    /// by `ListenFailed` and `RespawnHalted`).
    pub(super) fn on_worker_gone(&mut self, id: WorkerId, death: Death) {
        let Some(place) = death.place else { return };
        // A place its worker gave up (a disconnect) or that a successor holds is not ours.
        if self.places.get(place) != Some(&Some(id)) {
            return;
        }
        self.places[place] = None;
        if death.after_disconnect || self.stopping || !self.settings.respawn.enabled {
            // Nobody is coming to this place.
            self.registry.lock().vacate_slot(place);
            return;
        }
        if let Some(failure) = death.failed_to_listen {
            self.registry.lock().vacate_slot(place);
            let reason = format!(
                "place {place}: worker {id} exited before it ever listened, its last listen \
                 having failed ({failure}): not respawned"
            );
            trace::respawn_halted(place, &reason);
            self.events.push_back(Event::RespawnHalted { place, reason });
            return;
        }
        let respawner = self.respawners.entry(place).or_default();
        match respawner.on_death(&self.settings.respawn, Instant::now(), death.uptime) {
            Decision::After(delay) => {
                // The place keeps its `reuseport` sockets, queues included, for the respawn.
                self.respawns.push((place, Instant::now() + delay));
                trace::respawning(id, death.pid, place, death.status, death.uptime, delay);
                self.events.push_back(Event::Respawning { worker: id, place, delay });
            }
            Decision::Halt(reason) => {
                self.registry.lock().vacate_slot(place);
                let reason = format!("place {place}: {reason}");
                trace::respawn_halted(place, &reason);
                self.events.push_back(Event::RespawnHalted { place, reason });
            }
        }
    }

    /// The earliest timer: a kill after the grace period, or a respawn.
    pub(super) fn timer(&self) -> Option<Instant> {
        let kills = self.workers.values().filter_map(|w| w.kill_at);
        let respawns = self.respawns.iter().map(|&(_, at)| at);
        let awaiting = self.awaiting.iter().map(|&(_, _, at)| at);
        kills.chain(respawns).chain(awaiting).min()
    }

    pub(super) fn on_timer(&mut self, now: Instant) {
        for slot in self.workers.values_mut() {
            if slot.kill_at.is_some_and(|at| at <= now) && slot.exit.is_some() {
                slot.kill_at = None;
                slot.kill(Signal::Kill);
            }
        }
        let (expired, waiting): (Vec<_>, Vec<_>) =
            self.awaiting.iter().partition(|&&(_, _, at)| at <= now);
        self.awaiting = waiting;
        for (place, worker, _) in expired {
            // Only the deadline of the worker that holds the place now counts: one that died
            // meanwhile left the place to a later respawn, which has a deadline of its own.
            if self.places.get(place) == Some(&Some(worker)) {
                self.registry.lock().expire_awaiting(place);
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = self.respawns.iter().partition(|&&(_, at)| at <= now);
        self.respawns = later;
        for (place, _) in due {
            if place < self.places.len() && self.places[place].is_none() && !self.stopping {
                let forked = self.fork_into(place, &[]);
                if let Ok(worker) = forked {
                    self.count_restart(place);
                    // The handles kept for this place wait for it until the ready timeout.
                    self.awaiting.push((place, worker, now + self.settings.ready_timeout));
                }
                if let Err(e) = forked {
                    trace::fork_failed(Some(place), &e.to_string());
                    self.events.push_back(Event::ForkFailed { reason: e.to_string() });
                    // A failed respawn is one more quick death: retried after the next backoff
                    // step, within the same restart limit (descriptors or processes may free
                    // up), so the place is neither dropped silently nor retried in a spin.
                    let respawner = self.respawners.entry(place).or_default();
                    match respawner.on_death(&self.settings.respawn, now, Duration::ZERO) {
                        Decision::After(delay) => self.respawns.push((place, now + delay)),
                        Decision::Halt(reason) => {
                            // Nobody is coming to this place after all.
                            self.registry.lock().vacate_slot(place);
                            let reason = format!("place {place}: {reason}");
                            trace::respawn_halted(place, &reason);
                            self.events.push_back(Event::RespawnHalted { place, reason });
                        }
                    }
                }
            }
        }
    }

    /// Moves what waits on the state of others: the rolling restart and the end of a
    /// `disconnect_all`.
    pub(super) fn advance(&mut self) {
        self.advance_rolling();
        self.control_advance();
        if self.stopping && self.workers.is_empty() && self.registry.read().is_empty() {
            // The stop is over: a later one is a stop of its own.
            self.stopping = false;
            trace::drained();
            self.control_drained();
            self.events.push_back(Event::Drained);
        }
    }

    fn advance_rolling(&mut self) {
        let Some(rolling) = &mut self.rolling else { return };
        match rolling.current.clone() {
            None => {
                while let Some(place) = rolling.queue.pop_front() {
                    let Some(Some(old)) = self.places.get(place).copied() else { continue };
                    match self.fork_into(place, &[]) {
                        Ok(new) => {
                            self.count_restart(place);
                            let ready_by = Instant::now() + self.settings.ready_timeout;
                            let keys = self.registry.read().keys_of(old);
                            let roll = Roll {
                                place,
                                old,
                                new,
                                keys,
                                handed_over: false,
                                old_gone: false,
                                ready_by,
                                forked_at: Instant::now(),
                            };
                            if let Some(r) = &mut self.rolling {
                                r.current = Some(roll);
                            }
                        }
                        Err(e) => {
                            self.places[place] = Some(old);
                            let reason = format!("fork a replacement for place {place}: {e}");
                            let took = self.rolling.take().map(|r| r.started.elapsed());
                            trace::restart_aborted(place, &reason, took);
                            self.control_restart_ended(Err(format!(
                                "restart aborted at place {place}: {reason}"
                            )));
                            self.events.push_back(Event::RestartAborted { place, reason });
                        }
                    }
                    return;
                }
                if let Some(done) = self.rolling.take() {
                    trace::restarted(done.replaced, done.started.elapsed());
                    self.control_restart_ended(Ok((done.replaced, done.started.elapsed())));
                }
                self.events.push_back(Event::Restarted);
            }
            Some(roll) if !roll.handed_over => {
                let online =
                    self.workers.get(&roll.new).is_some_and(|w| w.state != super::State::Forked);
                let mut old_keys = self.registry.read().keys_of(roll.old);
                old_keys.extend(roll.keys.iter().cloned());
                let new_keys = self.registry.read().keys_of(roll.new);
                let mut missing: Vec<String> = old_keys
                    .iter()
                    .filter(|k| !new_keys.contains(k))
                    .map(ToString::to_string)
                    .collect();
                missing.sort();
                missing.dedup();
                if online && missing.is_empty() {
                    let pid = self.workers.get(&roll.new).map_or(0, |w| w.pid);
                    let ready = roll.forked_at.elapsed();
                    trace::replaced(roll.place, roll.old, roll.new, pid, ready);
                    self.control_replaced(roll.place, roll.old, roll.new, pid, ready);
                    if let Some(r) = &mut self.rolling {
                        r.replaced += 1;
                    }
                    if roll.old_gone {
                        // Nobody to hand over from: the next place rolls.
                        if let Some(r) = &mut self.rolling {
                            r.current = None;
                        }
                    } else {
                        if let Some(current) =
                            self.rolling.as_mut().and_then(|r| r.current.as_mut())
                        {
                            current.handed_over = true;
                        }
                        let _ = self.disconnect(roll.old);
                    }
                } else if Instant::now() >= roll.ready_by {
                    let (new, timeout) = (roll.new, self.settings.ready_timeout);
                    let words = self.workers.get(&new).map(|w| w.last_words()).unwrap_or_default();
                    let reason = if online {
                        format!(
                            "replacement worker {new} did not listen on {} within \
                             {timeout:?}{words}",
                            missing.join(", ")
                        )
                    } else {
                        format!(
                            "replacement worker {new} did not come online within {timeout:?}{words}"
                        )
                    };
                    // Nothing new goes to it; what it was handed goes elsewhere when it dies,
                    // and its exit comes through the pidfd as any worker's.
                    self.registry.lock().retire_worker(new);
                    if let Some(slot) = self.workers.get(&new).filter(|w| w.exit.is_some()) {
                        slot.kill(Signal::Kill);
                    }
                    self.abort_roll(&roll, reason);
                }
            }
            Some(_) => {}
        }
    }
}
