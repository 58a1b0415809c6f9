//! The handle table: bind once per key, share with later workers, close with the last one.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::sys::Poller;
use herd_handle::{BindOptions, Bound, Error, SocketFile, Spec, bind};
use herd_sched::{ConnId, Policy, WorkerId};

use crate::Key;
use crate::handoff::{Handoff, HandoffStats};
use crate::reuseport::ReusePort;
use crate::stats::{HandleKind, HandleStats};
use crate::sys::Watched;

/// How a worker uses what it was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A listening stream socket the worker accepts on itself (`none`, and `reuseport`'s
    /// per-slot socket).
    Listener,
    /// A bound UDP socket, shared by every worker (UDP is always shared).
    Datagram,
    /// The worker's end of a hand-off channel: connections arrive on it (`rr`, `least-conn`).
    Handoff,
}

/// The answer to a worker's query: what to send it.
#[derive(Debug)]
pub struct Grant {
    /// The handle's key.
    pub key: Key,
    /// What `fd` is.
    pub mode: Mode,
    /// A descriptor for the worker (a duplicate: the primary keeps its own).
    pub fd: OwnedFd,
    /// The bound address, with the real port when port 0 was asked (Node's `sockname`).
    pub address: Spec,
}

enum Handle {
    Shared(Bound),
    ReusePort(ReusePort),
    Handoff(Box<Handoff>),
}

/// The number of a handle in the table, unique for the table's life: a handle a stop detached
/// from its key and the one bound for that key afterwards are two entries.
type EntryId = u64;

struct Entry {
    /// The key it was bound for.
    key: Key,
    handle: Handle,
    address: Spec,
    workers: BTreeSet<WorkerId>,
    /// Places whose worker left this handle by dying while a replacement is expected there
    /// (a respawn): the handle stays open for it, even with no worker, so its socket, port and
    /// queued connections are the replacement's. Cleared when the place's next worker listens
    /// here, when nobody is coming ([`Registry::vacate_slot`]), or when the replacement did not
    /// listen here in time ([`Registry::expire_awaiting`]).
    awaiting: BTreeSet<usize>,
    /// A socket file the primary created, and its identity: removed when the handle closes,
    /// if the file at the path is still that one.
    unlink: Option<(PathBuf, SocketFile)>,
    /// Inherited (`fd://N`): the listening socket is also its giver's (systemd's, under socket
    /// activation), so a stop never shuts it down; it only stops accepting on it.
    inherited: bool,
}

/// What a poller key of the registry's belongs to.
#[derive(Clone, Debug)]
enum Source {
    Listener(EntryId),
    Worker(EntryId, WorkerId),
}

/// The primary's table of bound handles, keyed by [`Key`].
///
/// A key asked with port 0 keeps the port its first bind got for the registry's life: when its
/// handle closed (every worker left it) and a worker asks for the key again, that port is bound
/// again, so a cluster scaled down to no worker and up again serves where it served before
/// (Node binds a new port). Only if another process has taken the port since is a new one
/// bound, and kept from then on.
///
/// It registers the sockets and channels it watches with the poller it is given, under keys
/// from `token_base` upwards; the event loop passes every event with such a key to
/// [`on_event`](Registry::on_event). Binding is synchronous, so every query is answered at
/// once: the first query for a key binds, later ones share; a failed bind returns the error
/// and stores nothing, so the next query binds again (Node's "gives other workers a chance to
/// retry").
///
/// A graceful stop ([`stop_listening`](Registry::stop_listening)) detaches every stream handle
/// from its key: it takes no new connection, stays in the table until its last worker leaves,
/// and a later query for the key binds anew.
pub struct Registry {
    policy: Policy,
    max_in_flight: NonZeroUsize,
    poller: Arc<Poller>,
    next_token: usize,
    next_conn: ConnId,
    next_entry: EntryId,
    /// Every open handle: those queries join, and those a stop detached.
    entries: HashMap<EntryId, Entry>,
    /// The handle each key's queries join.
    live: HashMap<Key, EntryId>,
    sources: HashMap<usize, Source>,
    /// The place (slot) each worker queried from, for [`Registry::remove_worker`].
    places: HashMap<WorkerId, usize>,
    /// For each key asked with port 0 (TCP or UDP), the address its first bind got: a handle
    /// opened again for the key binds that port again.
    ports: HashMap<Key, Spec>,
}

impl Registry {
    /// An empty table for `policy`. `max_in_flight` bounds unacknowledged hand-offs per worker
    /// and handle (1 is Node's behaviour). Poller keys from `token_base` upwards are the
    /// registry's.
    pub fn new(
        policy: Policy,
        max_in_flight: NonZeroUsize,
        poller: Arc<Poller>,
        token_base: usize,
    ) -> Registry {
        Registry {
            policy,
            max_in_flight,
            poller,
            next_token: token_base,
            next_conn: 0,
            next_entry: 0,
            entries: HashMap::new(),
            live: HashMap::new(),
            sources: HashMap::new(),
            places: HashMap::new(),
            ports: HashMap::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Whether the poller key belongs to the registry.
    pub fn owns(&self, token: usize) -> bool {
        self.sources.contains_key(&token)
    }

    /// A worker asks for `spec` at `index`: bind it if the key is new, then grant the worker
    /// its descriptor. `options` apply only when this query binds.
    ///
    /// # Errors
    /// The bind's error, naming the operation and the address, with its errno.
    pub fn query(
        &mut self,
        worker: WorkerId,
        spec: &Spec,
        index: u32,
        options: &BindOptions,
    ) -> Result<Grant, Error> {
        self.query_in_slot(worker, spec, index, options, None)
    }

    /// [`query`](Registry::query) for a worker that has a place (`slot`) in the cluster:
    /// under `reuseport` it gets that slot's socket, so a replacement worker shares its
    /// predecessor's socket and queue. Other policies ignore the slot.
    pub fn query_in_slot(
        &mut self,
        worker: WorkerId,
        spec: &Spec,
        index: u32,
        options: &BindOptions,
        slot: Option<usize>,
    ) -> Result<Grant, Error> {
        let key = Key::new(spec, index);
        let id = match self.live.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.next_entry;
                let entry = self.open(id, &key, spec, options)?;
                self.next_entry += 1;
                self.entries.insert(id, entry);
                self.live.insert(key, id);
                id
            }
        };
        let grant = self.grant(worker, id, spec, slot);
        match (&grant, slot) {
            (Ok(_), Some(place)) => {
                self.places.insert(worker, place);
                if let Some(entry) = self.entries.get_mut(&id) {
                    // The replacement this place's handle waited for has come.
                    entry.awaiting.remove(&place);
                }
            }
            (Ok(_), None) => {}
            (Err(_), _) => {
                // Nobody else holds a fresh entry that failed to grant: drop it.
                if self
                    .entries
                    .get(&id)
                    .is_some_and(|e| e.workers.is_empty() && e.awaiting.is_empty())
                {
                    self.close(id);
                }
            }
        }
        grant
    }

    /// Binds the handle for `key`. A port-0 key whose port was seen before binds that port
    /// again; should it be taken (by another process, since), a new port is bound and
    /// remembered instead, rather than leaving the key unbindable.
    fn open(
        &mut self,
        id: EntryId,
        key: &Key,
        spec: &Spec,
        options: &BindOptions,
    ) -> Result<Entry, Error> {
        if spec.port() != Some(0) {
            return self.create(id, key, spec, options);
        }
        let entry = match self.ports.get(key).cloned() {
            Some(known) => match self.create(id, key, &known, options) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    self.create(id, key, spec, options)?
                }
                other => other?,
            },
            None => self.create(id, key, spec, options)?,
        };
        self.ports.insert(key.clone(), entry.address.clone());
        Ok(entry)
    }

    fn create(
        &mut self,
        id: EntryId,
        key: &Key,
        spec: &Spec,
        options: &BindOptions,
    ) -> Result<Entry, Error> {
        let mut unlink = None;
        let kernel_side = !self.policy.is_handoff() || spec.is_datagram();
        // reuseport groups are a TCP feature here: unix sockets and inherited descriptors
        // cannot be bound once per slot, so under `reuseport` they are shared like UDP.
        let (handle, address) = if self.policy == Policy::ReusePort && matches!(spec, Spec::Tcp(_))
        {
            let (handle, address) = ReusePort::bind(spec, options)?;
            (Handle::ReusePort(handle), address)
        } else {
            let bound = bind(spec, options)?;
            let address = bound.local_addr().map_err(|e| Error::new("getsockname", spec, e))?;
            if let (Spec::Unix(path), Bound::Listener(listener)) = (spec, &bound) {
                unlink = listener.socket_file().map(|file| (path.clone(), file));
            }
            match bound {
                Bound::Listener(listener) if !kernel_side => {
                    let token = self.token();
                    let watched = Watched::new(&self.poller, listener, token)
                        .map_err(|e| Error::new("watch", spec, e))?;
                    let pick = self.policy.pick().unwrap_or(herd_sched::Pick::RoundRobin);
                    self.sources.insert(token, Source::Listener(id));
                    (
                        Handle::Handoff(Box::new(Handoff::new(watched, pick, self.max_in_flight))),
                        address,
                    )
                }
                // UDP is always shared, whatever the policy (as in Node).
                other => (Handle::Shared(other), address),
            }
        };
        Ok(Entry {
            key: key.clone(),
            handle,
            address,
            workers: BTreeSet::new(),
            awaiting: BTreeSet::new(),
            unlink,
            inherited: matches!(spec, Spec::Fd(_)),
        })
    }

    fn grant(
        &mut self,
        worker: WorkerId,
        id: EntryId,
        spec: &Spec,
        slot: Option<usize>,
    ) -> Result<Grant, Error> {
        let token = if matches!(self.entries.get(&id).map(|e| &e.handle), Some(Handle::Handoff(_)))
        {
            Some(self.token())
        } else {
            None
        };
        let entry = self
            .entries
            .get_mut(&id)
            .ok_or_else(|| Error::new("query", spec, std::io::Error::other("handle vanished")))?;
        let (mode, fd) = match &mut entry.handle {
            Handle::Shared(bound) => {
                let mode =
                    if matches!(bound, Bound::Udp(_)) { Mode::Datagram } else { Mode::Listener };
                (mode, bound.as_fd().try_clone_to_owned().map_err(|e| Error::new("dup", spec, e))?)
            }
            Handle::ReusePort(handle) => {
                let socket = handle.socket_for(worker, slot)?;
                (
                    Mode::Listener,
                    socket.as_fd().try_clone_to_owned().map_err(|e| Error::new("dup", spec, e))?,
                )
            }
            Handle::Handoff(handoff) => {
                let token = token.unwrap_or_default();
                if handoff.has_worker(worker) {
                    // A new grant replaces the worker's channel; what it sent on the old one
                    // is applied first (remove_worker drains).
                    handoff.remove_worker(worker);
                    self.sources.retain(
                        |_, s| !matches!(s, Source::Worker(e, w) if *e == id && *w == worker),
                    );
                }
                let channel = match handoff.add_worker(&self.poller, worker, token) {
                    Ok(channel) => channel,
                    Err(e) => {
                        // The query fails, so the worker holds nothing here now, even if it
                        // held an (already removed) channel before: the table must not list it.
                        entry.workers.remove(&worker);
                        return Err(Error::new("hand-off channel", spec, e));
                    }
                };
                self.sources.insert(token, Source::Worker(id, worker));
                (Mode::Handoff, OwnedFd::from(channel))
            }
        };
        entry.workers.insert(worker);
        Ok(Grant { key: entry.key.clone(), mode, fd, address: entry.address.clone() })
    }

    fn token(&mut self) -> usize {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// The worker no longer listens on `key` (it closed its listener). Returns whether that
    /// closed the handle: the last worker out closes the socket and removes a socket file the
    /// primary created. Under `reuseport` the worker's slot leaves the group if nobody else
    /// holds it (the worker stays in its place, so no replacement will take the slot).
    ///
    /// On a hand-off handle, everything the worker already sent on its hand-off channel (acks,
    /// close reports) is read and applied first, so a connection it acknowledged is never
    /// handed to another worker; its unacknowledged connections then go to the others.
    pub fn release(&mut self, worker: WorkerId, key: &Key) -> bool {
        // A worker holds at most one handle per key: its indexes tell its listens apart.
        let held = self.entries.iter().find(|(_, e)| e.key == *key && e.workers.contains(&worker));
        match held.map(|(&id, _)| id) {
            Some(id) => self.leave(worker, id, false),
            None => false,
        }
    }

    fn leave(&mut self, worker: WorkerId, id: EntryId, keep_slot: bool) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else { return false };
        if !entry.workers.remove(&worker) {
            return false;
        }
        match &mut entry.handle {
            Handle::Shared(_) => {}
            Handle::ReusePort(handle) => handle.remove_worker(worker, keep_slot),
            Handle::Handoff(handoff) => handoff.remove_worker(worker),
        }
        self.sources.retain(|_, s| !matches!(s, Source::Worker(e, w) if *e == id && *w == worker));
        if entry.workers.is_empty() && entry.awaiting.is_empty() {
            self.close(id);
            true
        } else {
            false
        }
    }

    /// The worker is disconnecting: it gets no new connection from any hand-off handle, but
    /// connections already sent to it wait for its acks (so none is served twice), and it keeps
    /// its handles until it closes them or goes away ([`remove_worker`](Registry::remove_worker)).
    pub fn retire_worker(&mut self, worker: WorkerId) {
        for entry in self.entries.values_mut() {
            if let Handle::Handoff(handoff) = &mut entry.handle {
                handoff.retire_worker(worker);
            }
        }
    }

    /// The keys of the handles the worker holds, sorted.
    pub fn keys_of(&self, worker: WorkerId) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .entries
            .values()
            .filter(|e| e.workers.contains(&worker))
            .map(|e| e.key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// A graceful stop begins: every stream handle stops taking connections now, for every
    /// worker holding it, so a client connecting from now on is refused at once instead of
    /// waiting in a queue nobody will accept from (Node's workers close their servers when
    /// they disconnect; here the primary does it for all of them at the same moment).
    ///
    /// - A shared listening socket (`none`, unix sockets) is shut down
    ///   ([`herd_handle::Listener::stop_listening`]): every worker's copy stops with it. An
    ///   inherited one (`fd://N`, systemd's socket activation) is not: it is its giver's too,
    ///   and shut down it would stop listening for the giver as well. New connections then
    ///   wait in its queue for whoever accepts next (the next instance of the service), as
    ///   socket activation intends; the workers stop accepting as they disconnect.
    /// - A `reuseport` handle: every slot leaves the group ([`vacate_slot`](Registry::vacate_slot)).
    /// - A hand-off handle (`rr`, `least-conn`) shuts its listening socket down and closes the
    ///   connections it accepted that no worker took (counted in
    ///   [`HandoffStats::closed_at_stop`](crate::HandoffStats::closed_at_stop)); those in flight
    ///   to a worker wait for its answer, and are served if it took them.
    ///
    /// Connections the kernel had queued that nobody accepted are reset (TCP) or, for a unix
    /// socket, may still be accepted. Connections workers accepted are theirs to finish.
    ///
    /// Each such handle is detached from its key: it stays in the table, with its workers,
    /// until the last one leaves (so [`is_empty`](Registry::is_empty) still waits for them),
    /// no place waits on it any more, and a later query for the key binds a new socket. UDP
    /// sockets have no connections to refuse: they stay as they are, until their last worker
    /// leaves.
    pub fn stop_listening(&mut self) {
        self.detach_listening(true);
    }

    /// [`stop_listening`](Registry::stop_listening) for workers told to stop by a signal
    /// (socket-activated programs, as systemd stops a service): every stream handle is
    /// detached from its key as there, but no socket is shut down and no `reuseport` slot
    /// leaves its group, so a worker blocked in `accept(2)` is not woken by `EINVAL` before
    /// its SIGTERM handler runs. Each socket closes with its handle, once its last worker
    /// left; connections arriving meanwhile wait in its queue (reset when it closes, if no
    /// worker took them).
    pub fn detach_listening_open(&mut self) {
        self.detach_listening(false);
    }

    /// Detaches every stream handle from its key; shuts each down with `shut_down`.
    fn detach_listening(&mut self, shut_down: bool) {
        let stream: Vec<(Key, EntryId)> = self
            .live
            .iter()
            .filter(|(_, id)| {
                !matches!(
                    self.entries.get(id).map(|e| &e.handle),
                    Some(Handle::Shared(Bound::Udp(_)))
                )
            })
            .map(|(k, &id)| (k.clone(), id))
            .collect();
        for (key, id) in stream {
            self.live.remove(&key);
            let Some(entry) = self.entries.get_mut(&id) else { continue };
            match &mut entry.handle {
                Handle::Shared(_) | Handle::ReusePort(_) if !shut_down => {}
                // An inherited socket is also its giver's: shut down, it would stop listening
                // for the giver too (systemd's socket would refuse everyone until restarted).
                // Its connections wait in its queue for whoever accepts next.
                Handle::Shared(Bound::Listener(_)) if entry.inherited => {}
                Handle::Shared(Bound::Listener(listener)) => {
                    // Fails only for a socket that is not listening any more.
                    let _ = listener.stop_listening();
                }
                Handle::Shared(Bound::Udp(_)) => {}
                Handle::ReusePort(handle) => handle.vacate_all(),
                Handle::Handoff(handoff) => handoff.stop(!entry.inherited),
            }
            entry.awaiting.clear();
            if entry.workers.is_empty() {
                self.close(id);
            }
        }
    }

    /// No worker is in place `slot` and none is coming (its worker was removed, disconnected
    /// for good, or died without a respawn): the `reuseport` socket of that slot leaves its
    /// group in every handle at once, even while a disconnecting worker still holds a
    /// duplicate, so the kernel stops sending it new connections. Connections queued on it
    /// move to the other slots where the kernel can migrate them ([`migrates_queued`](crate::migrates_queued)), and
    /// are reset otherwise; never left waiting in a queue nobody accepts from. A worker given
    /// the slot later gets a new socket.
    pub fn vacate_slot(&mut self, slot: usize) {
        let mut unheld = Vec::new();
        for (&id, entry) in &mut self.entries {
            if let Handle::ReusePort(handle) = &mut entry.handle {
                handle.vacate(slot);
            }
            // Nobody is coming to that place: handles kept open for it stop waiting.
            if entry.awaiting.remove(&slot) && entry.workers.is_empty() && entry.awaiting.is_empty()
            {
                unheld.push(id);
            }
        }
        for id in unheld {
            self.close(id);
        }
    }

    /// The worker is gone (exited, or its channel closed): it leaves every handle it held, each
    /// as [`release`](Registry::release) does (what it sent is applied first).
    ///
    /// With `replacement_expected` (the primary will respawn its place) every handle it held
    /// waits for the replacement: it stays open even if no worker is left on it (the socket,
    /// its port and its queued connections are the replacement's, as under Node a port would
    /// otherwise close between a crash and the respawn), and under `reuseport` its slot keeps
    /// its socket. Without, a handle with no worker left closes, and a `reuseport` slot left
    /// with no holder leaves its group.
    pub fn remove_worker(&mut self, worker: WorkerId, replacement_expected: bool) {
        let place = self.places.remove(&worker);
        let ids: Vec<EntryId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.workers.contains(&worker))
            .map(|(&id, _)| id)
            .collect();
        let awaited = place.filter(|_| replacement_expected);
        for id in ids {
            // A handle a stop detached waits for nobody: a replacement would bind anew.
            let live = self.live.values().any(|&l| l == id);
            if let (Some(place), Some(entry), true) = (awaited, self.entries.get_mut(&id), live) {
                // A handle the replacement already listens on (a rolling replacement that
                // joined before its predecessor died) waits for nobody.
                let places = &self.places;
                let taken =
                    entry.workers.iter().any(|w| *w != worker && places.get(w) == Some(&place));
                if !taken {
                    entry.awaiting.insert(place);
                }
            }
            self.leave(worker, id, replacement_expected);
        }
        // After leaving: what it sent last (acks read on the way out) is counted first.
        for entry in self.entries.values_mut() {
            if let Handle::Handoff(handoff) = &mut entry.handle {
                handoff.forget_worker(worker);
            }
        }
    }

    /// The replacement expected in place `slot` has had its time and did not listen on some of
    /// the handles that waited for it: those stop waiting for it. A `reuseport` slot nobody
    /// holds leaves its group; a handle left with no worker and nothing to wait for closes.
    pub fn expire_awaiting(&mut self, slot: usize) {
        let mut unheld = Vec::new();
        for (&id, entry) in &mut self.entries {
            if !entry.awaiting.remove(&slot) {
                continue;
            }
            if let Handle::ReusePort(handle) = &mut entry.handle {
                handle.vacate_if_unheld(slot);
            }
            if entry.workers.is_empty() && entry.awaiting.is_empty() {
                unheld.push(id);
            }
        }
        for id in unheld {
            self.close(id);
        }
    }

    fn close(&mut self, id: EntryId) {
        if let Some(entry) = self.entries.remove(&id) {
            if self.live.get(&entry.key) == Some(&id) {
                self.live.remove(&entry.key);
            }
            self.sources.retain(|_, s| match s {
                Source::Listener(e) | Source::Worker(e, _) => *e != id,
            });
            drop(entry.handle);
            if let Some((path, file)) = entry.unlink {
                // Only the file this handle's bind created: never one another process (a
                // deploy's new instance) has bound at the path since.
                let _ = file.remove_if_at(&path);
            }
        }
    }

    /// Handles a poller event whose key [`owns`](Registry::owns) says is the registry's.
    pub fn on_event(&mut self, token: usize) {
        let Some(source) = self.sources.get(&token).cloned() else { return };
        match source {
            Source::Listener(id) => {
                if let Some(Entry { handle: Handle::Handoff(handoff), .. }) =
                    self.entries.get_mut(&id)
                {
                    handoff.on_listener_ready(&mut self.next_conn);
                }
                self.forget_gone_workers(id);
            }
            Source::Worker(id, worker) => {
                if let Some(Entry { handle: Handle::Handoff(handoff), .. }) =
                    self.entries.get_mut(&id)
                {
                    handoff.on_worker_ready(worker);
                }
                self.forget_gone_workers(id);
            }
        }
    }

    /// Drops the poller keys of workers a hand-off handle let go of (their channel closed).
    fn forget_gone_workers(&mut self, id: EntryId) {
        let Some(Entry { handle: Handle::Handoff(handoff), .. }) = self.entries.get(&id) else {
            return;
        };
        self.sources.retain(|_, s| match s {
            Source::Worker(e, w) if *e == id => handoff.has_worker(*w),
            _ => true,
        });
    }

    /// The earliest moment [`on_timer`](Registry::on_timer) has work (a listener paused after
    /// descriptors ran out resumes).
    pub fn deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match &e.handle {
                Handle::Handoff(h) => h.deadline(),
                _ => None,
            })
            .min()
    }

    /// Resumes what was paused until `now` or earlier.
    pub fn on_timer(&mut self, now: Instant) {
        for entry in self.entries.values_mut() {
            if let Handle::Handoff(h) = &mut entry.handle {
                h.on_timer(now);
            }
        }
    }

    /// Since when the worker has had connections handed to it, on some hand-off handle,
    /// without acknowledging any: the earliest over its handles (hang detection).
    pub fn stalled_since(&self, worker: WorkerId) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match &e.handle {
                Handle::Handoff(h) => h.stalled_since(worker),
                _ => None,
            })
            .min()
    }

    /// Samples the accept queue of every `reuseport` slot socket (`TCP_INFO`), for
    /// [`slot_stuck_since`](Registry::slot_stuck_since). Call it at a steady pace.
    pub fn sample_queues(&mut self, now: Instant) {
        for entry in self.entries.values_mut() {
            if let Handle::ReusePort(handle) = &mut entry.handle {
                handle.sample(now);
            }
        }
    }

    /// Since when, per the samples, a `reuseport` socket of place `slot` has had connections
    /// queued without its queue ever getting shorter: nobody accepts from it (hang detection).
    pub fn slot_stuck_since(&self, slot: usize) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match &e.handle {
                Handle::ReusePort(h) => h.stuck_since(slot),
                _ => None,
            })
            .min()
    }

    /// The keys of the open handles (a key appears twice while a handle a stop detached from
    /// it is still held and a new one was bound for it).
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.values().map(|e| &e.key)
    }

    /// Whether no handle is open, detached ones included.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The handle of `key`: the one queries join, else one a stop detached from it.
    fn entry_of(&self, key: &Key) -> Option<&Entry> {
        match self.live.get(key) {
            Some(id) => self.entries.get(id),
            None => self.entries.values().find(|e| e.key == *key),
        }
    }

    /// The workers holding the handle `key` (the one queries join, else one a stop detached).
    pub fn workers_of(&self, key: &Key) -> Vec<WorkerId> {
        self.entry_of(key).map(|e| e.workers.iter().copied().collect()).unwrap_or_default()
    }

    /// Counters of the hand-off handle `key` (`None` for other kinds); as
    /// [`workers_of`](Registry::workers_of), the handle queries join, else a detached one.
    pub fn handoff_stats(&self, key: &Key) -> Option<HandoffStats> {
        match &self.entry_of(key)?.handle {
            Handle::Handoff(h) => Some(h.stats()),
            _ => None,
        }
    }

    /// What each open handle counts and holds now (detached ones included), sorted by key.
    /// Reads each TCP listening socket's accept queue (`TCP_INFO`), one system call per
    /// socket.
    pub fn handle_stats(&self) -> Vec<HandleStats> {
        let mut all: Vec<HandleStats> = self
            .entries
            .iter()
            .map(|(id, entry)| {
                let stopped = self.live.get(&entry.key) != Some(id);
                let queue_of =
                    |fd: std::os::fd::BorrowedFd<'_>| crate::sys::accept_queue_len(fd).ok();
                let mut stats = HandleStats {
                    key: entry.key.to_string(),
                    address: entry.address.to_string(),
                    kind: HandleKind::Shared,
                    workers: entry.workers.iter().copied().collect(),
                    stopped,
                    queued: None,
                    handoff: None,
                    held: 0,
                    latency: None,
                    per_worker: Vec::new(),
                };
                match &entry.handle {
                    Handle::Shared(Bound::Udp(_)) => stats.kind = HandleKind::Datagram,
                    Handle::Shared(bound) => {
                        stats.queued = queue_of(bound.as_fd()).map(u64::from);
                    }
                    Handle::ReusePort(handle) => {
                        stats.kind = HandleKind::ReusePort;
                        stats.queued = handle.queued();
                    }
                    Handle::Handoff(handoff) => {
                        stats.kind = HandleKind::Handoff;
                        stats.queued = queue_of(handoff.listener().as_fd()).map(u64::from);
                        stats.handoff = Some(handoff.stats());
                        stats.held = handoff.held() as u64;
                        stats.latency = Some(handoff.latency().clone());
                        stats.per_worker = handoff.worker_counts();
                    }
                }
                stats
            })
            .collect();
        all.sort_by(|a, b| (&a.key, a.stopped).cmp(&(&b.key, b.stopped)));
        all
    }

    /// Connections the primary holds right now, over every hand-off handle.
    pub fn connections_held(&self) -> usize {
        self.entries
            .values()
            .map(|e| match &e.handle {
                Handle::Handoff(h) => h.held(),
                _ => 0,
            })
            .sum()
    }
}
