//! The `rr` hand-off path in isolation, per connection: a client connects; the primary
//! accepts and sends the descriptor; the worker receives it and acknowledges; the primary
//! reads the ack and closes its copy. And the same for a batch of 8 clients at once: one
//! `sendmmsg` carries them to the worker, one `recvmmsg` brings their 8 acks back.

use std::net::TcpStream;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_handle::Spec;
use herd_ipc::Channel;
use herd_registry::Registry;
use herd_registry::wire::{FromWorker, ToWorker};
use herd_registry::{Events, Poller};

/// One turn of the primary's loop.
fn turn(poller: &Poller, events: &mut Events, registry: &mut Registry) {
    events.clear();
    poller.wait(events, Some(Duration::from_secs(5))).unwrap();
    for event in events.iter() {
        if registry.owns(event.key) {
            registry.on_event(event.key);
        }
    }
}

fn handoff(c: &mut Criterion) {
    one_at_a_time(c, NonZeroUsize::MIN);
    batch(c, BATCH);
}

/// Clients per iteration of the batch bench, and the `max_in_flight` it runs with.
const BATCH: usize = 8;

fn one_at_a_time(c: &mut Criterion, max_in_flight: NonZeroUsize) {
    let poller = Arc::new(Poller::new().unwrap());
    let mut registry =
        Registry::new("rr".parse().unwrap(), max_in_flight, Arc::clone(&poller), 1000);
    let spec: Spec = "tcp://127.0.0.1:0".parse().unwrap();
    let grant = registry.query(1, &spec, 0, &Default::default()).unwrap();
    let address = grant.address.socket_addr().unwrap();
    let worker = Channel::from_fd(grant.fd).unwrap();
    let mut events = Events::new();
    c.bench_function("handoff/accept_send_receive_ack", |b| {
        b.iter(|| {
            let client = TcpStream::connect(address).unwrap();
            let received: OwnedFd = loop {
                match worker.try_recv_value::<ToWorker>() {
                    Ok((ToWorker::NewConn { conn, .. }, mut fds)) => {
                        worker
                            .send_value(&FromWorker::Ack { conn, accepted: true, idle: 0 }, &[])
                            .unwrap();
                        break fds.pop().unwrap();
                    }
                    Err(e) if e.is_would_block() => turn(&poller, &mut events, &mut registry),
                    Err(e) => panic!("{e}"),
                }
            };
            while registry.connections_held() > 0 {
                turn(&poller, &mut events, &mut registry);
            }
            drop((received, client));
        })
    });
}

/// `count` clients connect; the primary's turns accept them and send them to the one worker,
/// which takes each and acknowledges it; the primary reads the acks and closes its copies.
fn batch(c: &mut Criterion, count: usize) {
    let poller = Arc::new(Poller::new().unwrap());
    let max_in_flight = NonZeroUsize::new(count).unwrap();
    let mut registry =
        Registry::new("rr".parse().unwrap(), max_in_flight, Arc::clone(&poller), 1000);
    let spec: Spec = "tcp://127.0.0.1:0".parse().unwrap();
    let grant = registry.query(1, &spec, 0, &Default::default()).unwrap();
    let address = grant.address.socket_addr().unwrap();
    let worker = Channel::from_fd(grant.fd).unwrap();
    let mut events = Events::new();
    let mut group = c.benchmark_group("handoff");
    group.throughput(criterion::Throughput::Elements(count as u64));
    group.bench_function(format!("batch_of_{count}"), |b| {
        b.iter(|| {
            let clients: Vec<TcpStream> =
                (0..count).map(|_| TcpStream::connect(address).unwrap()).collect();
            let mut received: Vec<OwnedFd> = Vec::with_capacity(count);
            while received.len() < count {
                match worker.try_recv_value::<ToWorker>() {
                    Ok((ToWorker::NewConn { conn, .. }, mut fds)) => {
                        worker
                            .send_value(&FromWorker::Ack { conn, accepted: true, idle: 0 }, &[])
                            .unwrap();
                        received.push(fds.pop().unwrap());
                    }
                    Err(e) if e.is_would_block() => turn(&poller, &mut events, &mut registry),
                    Err(e) => panic!("{e}"),
                }
            }
            while registry.connections_held() > 0 {
                turn(&poller, &mut events, &mut registry);
            }
            drop((received, clients));
        })
    });
    group.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
