//! herd-sched: one pick (push, next, ack) with 64 workers, for each hand-off rule.

use std::hint::black_box;
use std::num::NonZeroUsize;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_sched::{Dispatcher, Next, Pick};

fn pick_64(c: &mut Criterion) {
    let mut group = c.benchmark_group("sched/pick_64_workers");
    for (name, pick) in [("rr", Pick::RoundRobin), ("least-conn", Pick::LeastConnections)] {
        let mut d = Dispatcher::new(pick, NonZeroUsize::MIN);
        for w in 1..=64 {
            d.add_worker(w);
        }
        let mut conn = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                conn += 1;
                d.push(conn);
                let Some(Next::Send { worker, conn }) = d.next() else { unreachable!() };
                d.ack(worker, conn, true).unwrap();
                // Keep least-conn's counts level, as closing connections would.
                d.closed(black_box(worker));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick_64);
criterion_main!(benches);
