//! herd-registry: a worker's query for a key already bound, among 1,000 keys (the lookup, the
//! duplicate of the socket for the worker, and its release).

use std::num::NonZeroUsize;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_handle::{BindOptions, Spec};
use herd_registry::Registry;

fn lookup_among_1000(c: &mut Criterion) {
    let poller = Arc::new(herd_registry::Poller::new().unwrap());
    let mut registry = Registry::new("none".parse().unwrap(), NonZeroUsize::MIN, poller, 1 << 32);
    let options = BindOptions::default();
    let spec: Spec = "tcp://127.0.0.1:0".parse().unwrap();
    // 1,000 keys: index 0..1000 of one address, each its own bind.
    for index in 0..1000 {
        registry.query(1, &spec, index, &options).unwrap();
    }
    let mut index = 0;
    c.bench_function("registry/query_existing_key_of_1000", |b| {
        b.iter(|| {
            index = (index + 7) % 1000;
            let grant = registry.query(2, &spec, index, &options).unwrap();
            // Worker 1 still holds it, so this never closes the handle.
            registry.release(2, &grant.key);
        })
    });
}

criterion_group!(benches, lookup_among_1000);
criterion_main!(benches);
