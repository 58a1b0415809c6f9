//! Waiting for the worker's disconnect from async code, on any runtime: a task's waker is
//! kept under the worker's lock and woken when the state it waits for comes about.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use super::{Inner, Shared, Worker};

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// The worker is disconnecting.
    Disconnecting,
    /// The worker is disconnecting and holds no open connection.
    Idle,
}

/// The wakers of tasks waiting on the worker, by waiter id (one per future, so a future that
/// is dropped takes its waker with it and the table never grows past the futures alive).
#[derive(Default)]
pub(super) struct Waiters {
    disconnecting: HashMap<u64, Waker>,
    idle: HashMap<u64, Waker>,
}

impl Waiters {
    fn of(&mut self, until: Until) -> &mut HashMap<u64, Waker> {
        match until {
            Until::Disconnecting => &mut self.disconnecting,
            Until::Idle => &mut self.idle,
        }
    }

    /// Wakes every task waiting for `until`.
    pub(super) fn wake(&mut self, until: Until) {
        for (_, waker) in self.of(until).drain() {
            waker.wake();
        }
    }
}

impl Inner {
    fn reached(&self, until: Until, state: &Shared) -> bool {
        let disconnecting = self.disconnecting.load(Ordering::SeqCst);
        match until {
            Until::Disconnecting => disconnecting,
            Until::Idle => disconnecting && state.open == 0,
        }
    }

    /// Ready once `until` holds; otherwise keeps `cx`'s waker under `waiter` (allocated on
    /// first use) to be woken when it may hold. The check and the registration are made under
    /// the lock that the state changes take before they wake, so no wake-up is lost.
    fn poll_until(&self, until: Until, waiter: &mut Option<u64>, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if self.reached(until, &state) {
            if let Some(id) = waiter.take() {
                state.waiters.of(until).remove(&id);
            }
            return Poll::Ready(());
        }
        let id = *waiter.get_or_insert_with(|| self.next_waiter.fetch_add(1, Ordering::Relaxed));
        match state.waiters.of(until).entry(id) {
            Entry::Occupied(known) if known.get().will_wake(cx.waker()) => {}
            Entry::Occupied(mut known) => {
                known.insert(cx.waker().clone());
            }
            Entry::Vacant(slot) => {
                slot.insert(cx.waker().clone());
            }
        }
        Poll::Pending
    }

    fn forget_waiter(&self, until: Until, waiter: Option<u64>) {
        if let Some(id) = waiter {
            self.lock().waiters.of(until).remove(&id);
        }
    }
}

/// A future that resolves once this worker is disconnecting, from [`Worker::disconnected`].
/// `Send`, `'static`, cheap, and runtime-agnostic: it needs no tokio.
#[must_use = "futures do nothing unless polled"]
pub struct Disconnected {
    worker: Worker,
    until: Until,
    waiter: Option<u64>,
}

impl Disconnected {
    pub(crate) fn new(worker: &Worker, until: Until) -> Disconnected {
        Disconnected { worker: worker.clone(), until, waiter: None }
    }
}

impl Future for Disconnected {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.worker.inner.poll_until(this.until, &mut this.waiter, cx)
    }
}

impl Drop for Disconnected {
    fn drop(&mut self) {
        self.worker.inner.forget_waiter(self.until, self.waiter.take());
    }
}

impl std::fmt::Debug for Disconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disconnected").field("until", &self.until).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use herd_ipc::Channel;

    use crate::Worker;

    /// Counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// No runtime: the future is woken by the disconnect itself, resolves then, and a future
    /// dropped while pending takes its waker out of the worker's table.
    #[test]
    fn disconnected_is_woken_by_the_disconnect_and_forgets_dropped_waiters() {
        let (control, _primary) = Channel::pair().unwrap();
        let worker = Worker::for_test(control).unwrap();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);

        for _ in 0..1000 {
            let mut dropped = Box::pin(worker.disconnected());
            assert_eq!(dropped.as_mut().poll(&mut cx), Poll::Pending);
        }
        assert_eq!(worker.inner.lock().waiters.disconnecting.len(), 0, "dropped waiters stay");

        let mut waiting = Box::pin(worker.disconnected());
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Pending, "polled again: one waker");
        assert_eq!(worker.inner.lock().waiters.disconnecting.len(), 1);
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        // The application owns the exit (it asked for the disconnect): no drain thread exits
        // this test process.
        worker.inner.begin_disconnect(false);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken once by the disconnect");
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(Box::pin(worker.disconnected()).as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(worker.inner.lock().waiters.disconnecting.len(), 0);
    }
}
