//! Socket-activated workers ([`Cluster::socket_activation`]): programs that speak no herd
//! protocol. The primary binds their sockets through its handle table at each fork (so a place
//! keeps its `reuseport` socket across replacements), hands them over as systemd does
//! (`sd_listen_fds(3)`), and learns that a worker is ready from a delay or from `READY=1` on
//! the worker's own `NOTIFY_SOCKET` (`sd_notify(3)`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Instant;

use herd_handle::BindOptions;
use herd_registry::Watched;
use herd_sched::Policy;

use super::{Event, Primary, State};
use crate::cluster::{Cluster, Readiness};
use crate::{Error, WorkerId};

/// The most a `sd_notify(3)` datagram is read of (systemd reads 4 KiB plus a few).
const NOTIFY_MAX: usize = 4096;

/// Refuses settings socket-activated workers cannot run with.
pub(super) fn check(settings: &Cluster, policy: Policy) -> Result<(), Error> {
    let fail = |reason: String| Err(Error::Activation { reason });
    if settings.activation.is_none() {
        return Ok(());
    }
    if !matches!(policy, Policy::Shared | Policy::ReusePort) {
        return fail(format!(
            "policy {policy} hands connections over through herd's worker protocol, which a \
             socket-activated program does not speak: use none or reuseport"
        ));
    }
    if settings.exec.is_none() {
        return fail("no program to run (Cluster::exec)".into());
    }
    for listen in &settings.activation_listen {
        let name = &listen.name;
        if name.is_empty()
            || name.len() > 255
            || name.contains(':')
            || name.chars().any(|c| c.is_control())
        {
            return fail(format!(
                "socket name {name:?} for {}: 1 to 255 printable characters, no ':'",
                listen.spec
            ));
        }
    }
    Ok(())
}

/// A worker's `NOTIFY_SOCKET`: a datagram socket in the abstract namespace, CLOEXEC (std's)
/// and non-blocking, and its name as the variable spells it (`@…`).
pub(super) fn notify_socket(id: WorkerId) -> io::Result<(UnixDatagram, String)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("herd-notify/{}/{id}/{nanos:x}", std::process::id());
    let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    socket.set_nonblocking(true)?;
    crate::sys::pass_credentials(socket.as_fd())?;
    Ok((socket, format!("@{name}")))
}

/// Whether process `pid` is `ancestor` or one of its descendants (`/proc/PID/stat`'s parent
/// pids, followed at most 64 steps up).
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // `pid (comm) state ppid ...`: the command may hold spaces; the fields follow the `)`.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        match ppid.and_then(|p| p.parse().ok()) {
            Some(parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

impl Primary {
    /// Binds (or shares) every activation socket for worker `id` in `place`: the descriptors
    /// to hand over, in order. On failure the worker holds nothing.
    pub(super) fn activation_grants(
        &mut self,
        id: WorkerId,
        place: usize,
    ) -> Result<Vec<OwnedFd>, Error> {
        let mut fds = Vec::new();
        let listens = self.settings.activation_listen.clone();
        for listen in &listens {
            let granted = super::listen_fds::resolve(&listen.spec).and_then(|spec| {
                self.registry.lock().query_in_slot(
                    id,
                    &spec,
                    0,
                    &BindOptions::default(),
                    Some(place),
                )
            });
            match granted {
                Ok(grant) => {
                    // Blocking, as systemd hands sockets over (the primary never accepts on
                    // a `none` or `reuseport` socket itself).
                    let blocking = crate::sys::set_blocking(grant.fd.as_fd());
                    fds.push(grant.fd);
                    if let Err(source) = blocking {
                        let e = herd_handle::Error::new("fcntl F_SETFL", &listen.spec, source);
                        self.registry.lock().remove_worker(id, true);
                        return Err(Error::Listen(e));
                    }
                }
                Err(e) => {
                    let expected = self.places.get(place).is_some_and(Option::is_some)
                        || self.respawns.iter().any(|&(p, _)| p == place);
                    self.registry.lock().remove_worker(id, expected);
                    return Err(Error::Listen(e));
                }
            }
        }
        Ok(fds)
    }

    /// Forks a socket-activated worker into `place` (see [`Primary::fork_into`]).
    pub(super) fn spawn_activated(
        &mut self,
        id: WorkerId,
        place: usize,
        env: &[(String, String)],
    ) -> Result<(super::spawn::Spawned, Option<UnixDatagram>), Error> {
        let fds = self.activation_grants(id, place)?;
        let notify =
            match self.settings.activation {
                Some(Readiness::Notify) => Some(notify_socket(id).map_err(|source| {
                    Error::Spawn { id, exec: self.exec.display().to_string(), source }
                })?),
                _ => None,
            };
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let names: Vec<&str> =
            self.settings.activation_listen.iter().map(|l| l.name.as_str()).collect();
        let spawned = super::spawn::spawn_activated(
            &self.settings,
            &self.exec,
            id,
            env,
            &borrowed,
            &names,
            notify.as_ref().map(|(_, name)| name.as_str()),
        );
        match spawned {
            Ok(spawned) => Ok((spawned, notify.map(|(socket, _)| socket))),
            Err(e) => {
                let expected = self.places.get(place).is_some_and(Option::is_some)
                    || self.respawns.iter().any(|&(p, _)| p == place);
                self.registry.lock().remove_worker(id, expected);
                Err(e)
            }
        }
    }

    /// Starts watching a new socket-activated worker's readiness.
    pub(super) fn watch_readiness(&mut self, id: WorkerId, notify: Option<Watched<UnixDatagram>>) {
        let delay = match self.settings.activation {
            Some(Readiness::Delay(delay)) => Some(delay),
            _ => None,
        };
        if let Some(slot) = self.workers.get_mut(&id) {
            slot.activated = true;
            slot.listened = true;
            slot.notify = notify;
            slot.ready_at = delay.map(|d| slot.started + d);
        }
    }

    /// The worker is ready: it counts as online and listening (its sockets were its own from
    /// the start).
    pub(super) fn mark_ready(&mut self, id: WorkerId) {
        let Some(slot) = self.workers.get_mut(&id) else { return };
        slot.ready_at = None;
        if slot.state == State::Forked {
            slot.state = State::Listening;
            slot.listening_since.get_or_insert_with(std::time::Instant::now);
            super::trace::online(id, slot.pid);
            self.events.push_back(Event::Online(id));
        }
    }

    /// When the earliest delayed readiness is due.
    pub(super) fn ready_deadline(&self) -> Option<Instant> {
        self.workers.values().filter_map(|w| w.ready_at).min()
    }

    /// Marks ready the workers whose delay is over.
    pub(super) fn on_ready_timers(&mut self, now: Instant) {
        let due: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.ready_at.is_some_and(|at| at <= now) && w.exit.is_some())
            .map(|w| w.id)
            .collect();
        for id in due {
            self.mark_ready(id);
        }
    }

    /// Reads what worker `id` (or a process of its own tree) sent to its `NOTIFY_SOCKET`: `READY=1` on a line of its own
    /// makes it ready; the latest datagram is kept as its last message (said when it dies or
    /// is not ready in time).
    pub(super) fn on_notify(&mut self, id: WorkerId) {
        let mut buf = vec![0u8; NOTIFY_MAX];
        loop {
            let Some(slot) = self.workers.get_mut(&id) else { return };
            let Some(notify) = &slot.notify else { return };
            match crate::sys::recv_with_pid(notify.get().as_fd(), &mut buf) {
                // Only the worker and its own descendants speak for it (systemd's
                // `NotifyAccess=all`, within the worker's process tree): an abstract socket is
                // open to every process of the network namespace.
                Ok((_, sender)) if !sender.is_some_and(|pid| descends_from(pid, slot.pid)) => {}
                Ok((n, _)) => {
                    let data = &buf[..n];
                    slot.record_message(data);
                    if data.split(|&b| b == b'\n').any(|line| line == b"READY=1") {
                        self.mark_ready(id);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_off_policies_and_bad_names_are_refused() {
        let base = || Cluster::new().exec("/bin/true").socket_activation(Readiness::Notify);
        for policy in [Policy::RoundRobin, Policy::LeastConnections] {
            let error = base().policy(policy).primary().err().expect("refused");
            assert!(matches!(error, Error::Activation { .. }), "{policy}: {error}");
            assert!(error.to_string().contains("use none or reuseport"), "{error}");
        }
        for policy in [Policy::Shared, Policy::ReusePort] {
            assert!(base().policy(policy).primary().is_ok(), "{policy}");
        }
        let spec = "127.0.0.1:0".parse().unwrap();
        let error = base().policy(Policy::Shared).activation_listen("a:b", spec).primary();
        assert!(matches!(error, Err(Error::Activation { .. })));
        let no_exec = Cluster::new().policy(Policy::Shared).socket_activation(Readiness::Notify);
        assert!(matches!(no_exec.primary(), Err(Error::Activation { .. })));
    }
}
