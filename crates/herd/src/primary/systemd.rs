//! Telling systemd how the cluster is (`sd_notify(3)`), when [`Cluster::notify_systemd`] asks
//! for it and `NOTIFY_SOCKET` names a socket: `READY=1` once every place's first worker is
//! ready, `RELOADING=1` with `MONOTONIC_USEC=` when a rolling restart begins and `READY=1` when
//! it ends (done or aborted), `STOPPING=1` when a stop begins, a `STATUS=` line with each, and
//! `WATCHDOG=1` at half of `WATCHDOG_USEC` (when `WATCHDOG_PID` is unset or this process).
//!
//! [`Cluster::notify_systemd`]: crate::Cluster::notify_systemd

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use super::{Event, Primary, State};
use crate::sys;

/// The primary's end of systemd's notification socket.
pub(super) struct Systemd {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `READY=1` was sent for the start.
    started: bool,
    /// Half the watchdog period, and when the next `WATCHDOG=1` is due.
    watchdog: Option<(Duration, Instant)>,
}

impl Systemd {
    /// From this process's environment: `None` without `NOTIFY_SOCKET` (or if it names no
    /// usable address: `@name` for the abstract namespace, else a path).
    pub(super) fn from_env() -> Option<Systemd> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(&path),
        }
        .ok()?;
        let socket = UnixDatagram::unbound().ok()?;
        let ours =
            std::env::var("WATCHDOG_PID").map_or(true, |pid| pid == std::process::id().to_string());
        let usec = std::env::var("WATCHDOG_USEC").ok().and_then(|u| u.parse::<u64>().ok());
        let watchdog = usec.filter(|&u| ours && u > 0).map(|u| {
            let every = Duration::from_micros(u) / 2;
            (every, Instant::now() + every)
        });
        Some(Systemd { socket, addr, started: false, watchdog })
    }

    /// Sends one notification (lines `KEY=VALUE`); a failed send changes nothing.
    fn send(&self, lines: &[&str]) {
        let message: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let _ = self.socket.send_to_addr(message.as_bytes(), &self.addr);
    }

    /// When the next `WATCHDOG=1` is due.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.watchdog.map(|(_, at)| at)
    }
}

impl Primary {
    /// Sends `WATCHDOG=1` when due.
    pub(super) fn systemd_watchdog(&mut self, now: Instant) {
        let Some(systemd) = &mut self.systemd else { return };
        if let Some((every, at)) = systemd.watchdog.filter(|&(_, at)| at <= now) {
            systemd.send(&["WATCHDOG=1"]);
            systemd.watchdog = Some((every, at.max(now - every) + every));
        }
    }

    /// Tells systemd what `event`, about to be returned, means for the service.
    pub(super) fn systemd_on(&mut self, event: &Event) {
        let count = self.worker_count();
        let all_ready = (0..self.places.len()).filter_map(|p| self.places[p]).all(|id| {
            self.workers
                .get(&id)
                .is_some_and(|w| matches!(w.state, State::Online | State::Listening))
        });
        let stopping = self.stopping;
        let Some(systemd) = &mut self.systemd else { return };
        match event {
            Event::Online(_) | Event::Listening { .. } if !systemd.started && all_ready => {
                systemd.started = true;
                systemd.send(&["READY=1", &format!("STATUS={count} workers ready")]);
            }
            Event::Restarting { workers } => {
                let status = format!("STATUS=rolling restart of {workers} workers");
                match sys::monotonic_usec() {
                    Ok(usec) => {
                        systemd.send(&["RELOADING=1", &format!("MONOTONIC_USEC={usec}"), &status])
                    }
                    Err(_) => systemd.send(&["RELOADING=1", &status]),
                }
            }
            Event::Restarted => {
                systemd.send(&["READY=1", &format!("STATUS=restarted: {count} workers")]);
            }
            Event::RestartAborted { reason, .. } if !stopping => {
                let status = format!("STATUS=restart aborted, the old workers serve on: {reason}");
                systemd.send(&["READY=1", &status]);
            }
            _ => {}
        }
    }

    /// A stop begins: `STOPPING=1`.
    pub(super) fn systemd_stopping(&mut self) {
        if let Some(systemd) = &self.systemd {
            systemd.send(&["STOPPING=1", "STATUS=stopping: the workers finish what they hold"]);
        }
    }
}
