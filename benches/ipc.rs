//! herd-ipc: the cost of one message, with 0 and 1 descriptor, one way and round trip, and
//! messages per second one way.
//!
//! "One way" sends and receives on one thread: the full cost of a message (two system calls,
//! the descriptor installed and closed) without a context switch. "Round trip" bounces a
//! message off an echo thread, so it includes two wake-ups across cores.

use std::hint::black_box;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herd_ipc::Channel;

/// A message the size of a control message: a hand-off notice with a key and a sequence number.
const PAYLOAD: &[u8] = b"newconn 127.0.0.1:8080:4:undefined:0 seq=123456";

fn one_way(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipc/one_way");
    let (a, b) = Channel::pair().unwrap();
    let (fd_source, _keep) = std::io::pipe().unwrap();
    let mut buf = Vec::new();
    for (name, fds) in [("0fd", &[][..]), ("1fd", &[fd_source.as_fd()][..])] {
        group.bench_function(name, |bench| {
            bench.iter(|| {
                a.send(PAYLOAD, fds).unwrap();
                black_box(b.recv_into(&mut buf).unwrap());
            })
        });
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipc/round_trip");
    let (fd_source, _keep) = std::io::pipe().unwrap();
    for (name, with_fd) in [("0fd", false), ("1fd", true)] {
        let (a, b) = Channel::pair().unwrap();
        // The echo thread sends back what it got, descriptors included.
        let echo = std::thread::spawn(move || {
            let mut buf = Vec::new();
            while let Ok(fds) = b.recv_into(&mut buf) {
                let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
                if b.send(&buf, &borrowed).is_err() {
                    break;
                }
            }
        });
        let mut buf = Vec::new();
        let fds: &[BorrowedFd<'_>] = if with_fd { &[fd_source.as_fd()] } else { &[] };
        group.bench_function(name, |bench| {
            bench.iter(|| {
                a.send(PAYLOAD, fds).unwrap();
                black_box(a.recv_into(&mut buf).unwrap());
            })
        });
        drop(a);
        echo.join().unwrap();
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipc/throughput");
    group.throughput(Throughput::Elements(1));
    let (fd_source, _keep) = std::io::pipe().unwrap();
    for (name, with_fd) in [("0fd", false), ("1fd", true)] {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let (a, b) = Channel::pair().unwrap();
                let receiver = std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    for _ in 0..iters {
                        black_box(b.recv_into(&mut buf).unwrap());
                    }
                });
                let fds: &[BorrowedFd<'_>] = if with_fd { &[fd_source.as_fd()] } else { &[] };
                let started = Instant::now();
                for _ in 0..iters {
                    a.send(PAYLOAD, fds).unwrap();
                }
                receiver.join().unwrap();
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = one_way, round_trip, throughput
}
criterion_main!(benches);
