//! A worker cannot borrow the primary's privileges (issue 8): a root primary whose workers run
//! as `nobody` binds for them only what they could bind themselves, or what the application
//! allowed; socket files it creates for them are theirs; it removes no socket file for them
//! that they could not remove. Root only: elsewhere the ids cannot be switched, and the test
//! says so and passes without checking anything.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use herd::{Cluster, Event, Spec, WorkerId};
use herd_tests::cluster::{TestCluster, fixture_settings};
use herd_tests::may_fork;

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");
const NOBODY: u32 = 65534;

/// Whether this test process is root and the fixture is reachable by `nobody`.
fn can_switch_ids() -> bool {
    let reachable = Path::new(WORKER)
        .ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !(reachable && root) {
        eprintln!("not root, or the fixture is not reachable by nobody: nothing checked");
    }
    reachable && root
}

fn as_nobody(settings: Cluster) -> Cluster {
    settings.uid(NOBODY).gid(NOBODY)
}

/// A free TCP port below 1024 on 127.0.0.1 in `range` (this process is root, so it may bind
/// one); each test has a range of its own, so tests running at once do not pick the same.
fn free_low_port(range: std::ops::Range<u16>) -> u16 {
    range
        .clone()
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .unwrap_or_else(|| panic!("a free port in {range:?}"))
}

/// A directory under the temporary directory with `mode`, owned by root; removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str, mode: u32) -> Dir {
        let path = std::env::temp_dir().join(format!("herd-priv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `listen <spec>` on the worker: its answer (`listening …` or `error <errno> …`).
fn listen(c: &mut TestCluster, id: WorkerId, spec: &str) -> String {
    c.command(id, &format!("listen {spec} idle"), "listening")
}

#[test]
fn a_worker_under_another_uid_gets_only_what_it_could_bind_itself() {
    if !can_switch_ids() {
        return;
    }
    let _forks = may_fork();
    let port = free_low_port(900..950);
    let low = format!("tcp://127.0.0.1:{port}");
    let mut c = TestCluster::with(as_nobody(fixture_settings(WORKER, "none")));
    let [id] = c.fork_online(1)[..] else { unreachable!() };

    let answer = listen(&mut c, id, &low);
    assert!(answer.starts_with("error 13 "), "port {port} as nobody: {answer}");
    let answer = listen(&mut c, id, "tcp://127.0.0.1:0");
    assert!(answer.starts_with("listening "), "a port of its own: {answer}");
    let answer = listen(&mut c, id, "unix:@herd-priv-abstract");
    assert!(answer.starts_with("listening "), "an abstract name: {answer}");

    // A directory only root may write: no socket file is made there for nobody.
    let closed = Dir::new("closed", 0o755);
    let path = closed.0.join("s.sock");
    let answer = listen(&mut c, id, &format!("unix://{}", path.display()));
    assert!(answer.starts_with("error 13 "), "{answer}");
    assert!(!path.exists(), "nothing was created");

    // A directory nobody may write: the socket file is made, and it is nobody's.
    let open = Dir::new("open", 0o777);
    let path = open.0.join("s.sock");
    let answer = listen(&mut c, id, &format!("unix://{}", path.display()));
    assert!(answer.starts_with("listening "), "{answer}");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "the socket file is the worker's");

    // A sticky directory (as /tmp) with a stale socket file of root's: nobody could not
    // remove it, so neither does the primary for it.
    let sticky = Dir::new("sticky", 0o1777);
    let stale = sticky.0.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let answer = listen(&mut c, id, &format!("unix://{}", stale.display()));
    assert!(answer.starts_with("error 98 "), "the path stays taken: {answer}");
    let meta = std::fs::symlink_metadata(&stale).expect("the stale file is still there");
    assert_eq!(meta.uid(), 0, "root's file, untouched");
}

#[test]
fn what_the_application_allows_is_bound_for_a_worker_under_another_uid() {
    if !can_switch_ids() {
        return;
    }
    let _forks = may_fork();
    let port = free_low_port(950..1000);
    let low = format!("tcp://127.0.0.1:{port}");
    let spec: Spec = low.parse().unwrap();
    let mut c = TestCluster::with(as_nobody(fixture_settings(WORKER, "rr")).allow_listen(spec));
    let [id] = c.fork_online(1)[..] else { unreachable!() };
    let answer = c.command(id, &format!("listen {low}"), "listening");
    assert!(answer.starts_with(&format!("listening 1 {low} ")), "{answer}");
    c.wait_for("listening", |e| matches!(e, Event::Listening { worker, .. } if *worker == id));
    let greeting = c.fetch(&low);
    assert!(greeting.starts_with(&format!("worker {id} ")), "{greeting}");
}
