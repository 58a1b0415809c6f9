//! The `rr` hand-off path in isolation, per connection: a client connects; the primary
//! accepts and sends the descriptor; the worker receives it and acknowledges; the primary
//! reads the ack and closes its copy.

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
    let poller = Arc::new(Poller::new().unwrap());
    let mut registry =
        Registry::new("rr".parse().unwrap(), NonZeroUsize::MIN, Arc::clone(&poller), 1000);
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
                    Ok((ToWorker::NewConn { conn }, mut fds)) => {
                        worker.send_value(&FromWorker::Ack { conn, accepted: true }, &[]).unwrap();
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

criterion_group!(benches, handoff);
criterion_main!(benches);
