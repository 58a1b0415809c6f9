//! The registry's own thread: accepts, hand-offs and their acks run there, on a poller of
//! their own, so they never wait for the application. The application takes its events on the
//! primary's thread at its own pace (1 ms per message, a slow log call, a lock); if the
//! hand-off path turned in that loop, every connection under `rr` and `least-conn` would wait
//! for it, and one flooding worker would slow every other worker down.
//!
//! The primary's thread still changes the registry (a worker's query, its departure, hang
//! checks): both threads lock the one [`Registry`], so every change is applied whole, in some
//! order, exactly as when one loop did both. Only the primary's thread adds or removes a
//! handle or a worker of a handle; the registry's thread moves connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use herd_registry::{Events, Poller, Registry, Watched};

use crate::sys::{self, Notify};

/// The registry's poller keys start here; below is the wake-up pipe.
const TOKEN_BASE: usize = 1;
/// The wake-up pipe's poller key.
const WAKE_TOKEN: usize = 0;

struct Shared {
    registry: Mutex<Registry>,
    /// Raised when the primary's thread has changed the registry (its deadline may be earlier
    /// now) or the thread is to stop.
    wake: Notify,
    stop: AtomicBool,
}

/// The registry and the thread that runs its sources. Dropping it stops and joins the thread.
pub(super) struct RegistryThread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The registry, locked by the primary's thread; the registry's thread is woken when it is
/// let go, to look at its deadline again.
pub(super) struct Locked<'a> {
    guard: MutexGuard<'a, Registry>,
    wake: &'a Notify,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Registry {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.wake.raise();
    }
}

impl RegistryThread {
    /// A registry for `policy` with its thread started.
    ///
    /// # Errors
    /// Creating the poller or the wake-up pipe, registering it, or spawning the thread.
    pub(super) fn start(
        policy: herd_sched::Policy,
        max_in_flight: std::num::NonZeroUsize,
    ) -> std::io::Result<RegistryThread> {
        let poller = Arc::new(Poller::new()?);
        let registry = Registry::new(policy, max_in_flight, Arc::clone(&poller), TOKEN_BASE);
        let shared = Arc::new(Shared {
            registry: Mutex::new(registry),
            wake: Notify::new()?,
            stop: AtomicBool::new(false),
        });
        let wake = Watched::new(&poller, shared.wake_fd()?, WAKE_TOKEN)?;
        let runner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("herd-registry".into())
            .spawn(move || runner.run(&poller, &wake))?;
        Ok(RegistryThread { shared, thread: Some(thread) })
    }

    /// The registry, for a change from the primary's thread.
    pub(super) fn lock(&self) -> Locked<'_> {
        Locked { guard: self.shared.lock(), wake: &self.shared.wake }
    }

    /// The registry, to read from the primary's thread (the thread is not woken).
    pub(super) fn read(&self) -> MutexGuard<'_, Registry> {
        self.shared.lock()
    }
}

impl Drop for RegistryThread {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.raise();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic on the other thread left the registry as it was at some step; serving on
        // beats refusing every later call.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A duplicate of the wake-up pipe's read end, for the poller to own.
    fn wake_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.wake.as_fd().try_clone_to_owned()
    }

    /// The thread's loop. `_wake` is the wake-up pipe's registration, kept for as long.
    fn run(&self, poller: &Poller, _wake: &Watched<std::os::fd::OwnedFd>) {
        // Signals are the primary's thread's to take (and the application's, whose masks and
        // `sigwait` must keep working): none is delivered here.
        sys::block_signals_in_this_thread();
        let mut events = Events::new();
        while !self.stop.load(Ordering::SeqCst) {
            let timeout =
                self.lock().deadline().map(|at| at.saturating_duration_since(Instant::now()));
            events.clear();
            if let Err(e) = poller.wait(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    // Nothing else can be waited on (EBADF, EINVAL: a bug); yield rather than
                    // spin, and try again.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                continue;
            }
            let mut registry = self.lock();
            for event in events.iter() {
                if event.key == WAKE_TOKEN {
                    self.wake.clear();
                } else if registry.owns(event.key) {
                    registry.on_event(event.key);
                }
            }
            registry.on_timer(Instant::now());
        }
    }
}
