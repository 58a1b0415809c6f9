//! Many workers flooding at once (issue 8, finding 4, found again by a review): each worker's
//! budget bounds what the primary holds for it, and the total over all workers is bounded by a
//! quarter of the primary's descriptor limit, so eight flooders sending descriptors cannot use
//! up the descriptors the primary needs. Alone in its binary: it lowers this process's
//! descriptor limit.

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herd::{Event, WorkerId};
use herd_tests::cluster::{AUTOLISTEN, TestCluster, fixture_settings};
use herd_tests::{DEADLINE, may_fork, open_fds};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");
/// This process's descriptor limit for the test: the common default soft limit.
const NOFILE: usize = 1024;

#[test]
fn eight_flooding_workers_hold_at_most_a_quarter_of_the_primarys_descriptors() {
    herd_tests::sys::set_nofile(NOFILE as u64).expect("lower RLIMIT_NOFILE");
    let _fork = may_fork();
    let settings = fixture_settings(WORKER, "rr")
        .env(AUTOLISTEN, "tcp://127.0.0.1:0")
        .respawn(herd::RespawnPolicy { enabled: false, ..Default::default() });
    let mut c = TestCluster::with(settings);
    let server = c.fork_online(1)[0];
    let address = c.listening(server);
    let base = open_fds().len();
    let flooders: Vec<WorkerId> = (0..8)
        .map(|_| {
            let env = [("HERD_TEST_FLOOD".to_owned(), "messages".to_owned())];
            c.primary.fork_with_env(&env).expect("fork a flooder")
        })
        .collect();
    // A client served again and again meanwhile: the primary still accepts and hands off.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (target, stop) = (address.trim_start_matches("tcp://").to_owned(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut answered, mut failed) = (0usize, 0usize);
            while !stop.load(Ordering::SeqCst) {
                let answer = TcpStream::connect(&target).and_then(|mut s| {
                    s.set_read_timeout(Some(DEADLINE))?;
                    let mut text = String::new();
                    s.read_to_string(&mut text).map(|_| text)
                });
                match answer {
                    Ok(text) if text.starts_with("worker ") => answered += 1,
                    _ => failed += 1,
                }
            }
            (answered, failed)
        })
    };
    let (mut max_fds, mut lost, mut taken) = (0, 0, 0);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        max_fds = max_fds.max(open_fds().len());
        match c.primary.next_event(Some(Duration::from_millis(10))).expect("event loop") {
            // The application's work on each message (not a synchronisation).
            Some(Event::Message { .. }) => {
                taken += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Some(Event::DescriptorsLost { .. }) => lost += 1,
            _ => {}
        }
    }
    stop.store(true, Ordering::SeqCst);
    for &id in &flooders {
        c.primary.kill(id, herd::Signal::Kill).expect("kill a flooder");
    }
    let (answered, failed) = client.join().expect("client thread");
    // A quarter of the limit, plus one message's descriptor per flooder read past it, plus
    // each flooder's own (its control channel, pidfd and output pipes: at most 6).
    let bound = base + NOFILE / 4 + flooders.len() * (1 + 6) + 16;
    eprintln!("descriptors {base} → {max_fds} (bound {bound}); {taken} messages taken");
    assert!(max_fds <= bound, "the primary held {max_fds} descriptors (bound {bound})");
    assert_eq!(lost, 0, "messages arrived without their descriptors");
    assert!(taken > 100, "only {taken} messages taken");
    assert_eq!(failed, 0, "clients failed ({answered} answered)");
}
