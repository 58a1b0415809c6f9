//! Picking a worker does not allocate.
//!
//! This test binary counts the current thread's allocations with a wrapper around the
//! system allocator; the library itself has no unsafe code.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::num::NonZeroUsize;

use herd_sched::{Dispatcher, Next, Pick};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the counter may already be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counter is a const-initialised thread-local `Cell` that
// itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn picks_and_acks_do_not_allocate_with_64_workers() {
    for pick in [Pick::RoundRobin, Pick::LeastConnections] {
        for max in [1, 4] {
            let mut d = Dispatcher::new(pick, NonZeroUsize::new(max).unwrap());
            for w in 0..64 {
                d.add_worker(w);
            }
            let conns = 10_000u64;
            for c in 0..conns {
                d.push(c);
            }
            let before = allocations();
            let mut sent = 0u64;
            while let Some(n) = d.next() {
                let Next::Send { worker, conn } = n else {
                    panic!("unexpected {n:?}");
                };
                d.ack(worker, conn, true).unwrap();
                d.closed(worker);
                sent += 1;
            }
            let after = allocations();
            assert_eq!(sent, conns);
            assert_eq!(after - before, 0, "{pick:?} max {max}: allocations while picking");
        }
    }
}
