//! Out of descriptors: accept fails with EMFILE, the primary pauses instead of spinning, and
//! no connection is lost. Alone in its binary: it lowers the process's descriptor limit.

mod util;

use util::{Primary, Worker, connect_and_write, open_fds};

fn set_fd_limit(soft: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write a valid rlimit struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[test]
fn exhausted_descriptors_pause_accepting_and_lose_nothing() {
    const CLIENTS: usize = 20;
    let mut primary = Primary::new("rr", 1);
    let grant = primary.query(1, "tcp://127.0.0.1:0", 0);
    let key = grant.key.clone();
    let address = util::tcp_address(&grant);
    let worker = Worker::new(1, grant);
    // The handshakes complete in the kernel; the connections wait in the backlog.
    let clients: Vec<_> = (0..CLIENTS).map(|i| connect_and_write(address, i as u8)).collect();

    // No descriptor left: a low limit, and every number below it taken (descriptor numbers,
    // not counts, are what the limit bounds).
    let normal = rlimit_now();
    set_fd_limit(open_fds() as u64 + 16);
    let anchor = std::fs::File::open("/dev/null").unwrap();
    let mut fillers = Vec::new();
    while let Ok(fd) = anchor.try_clone() {
        fillers.push(fd);
    }
    for _ in 0..100 {
        primary.turn();
    }
    let stats = primary.registry.handoff_stats(&key).unwrap();
    drop(fillers);
    set_fd_limit(normal);
    assert_eq!(stats.accepted, 0, "nothing can be accepted without a descriptor");
    assert!(stats.exhausted >= 1, "accept never hit EMFILE: {stats:?}");
    // Each exhaustion pauses accepting for 50 ms, i.e. several 10 ms turns: a loop that
    // retried at once would count one per turn.
    assert!(stats.exhausted < 50, "accepting spun: {stats:?}");

    // Descriptors are back: every connection is accepted and delivered.
    let mut received = 0;
    primary.run_until("every connection delivered", |_| {
        while let Some(conn) = worker.try_conn() {
            worker.ack(conn.conn, true);
            received += 1;
        }
        (received == CLIENTS).then_some(())
    });
    primary.run_until_delivered(&key, CLIENTS as u64);
    drop(clients);
}

fn rlimit_now() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes a valid rlimit struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_cur
}
