//! Deploys (issue 9, finding 1): a new build put on disk the usual ways, then SIGHUP, must be
//! what the replacement workers run; a build that cannot run, or cannot listen, aborts the
//! rolling restart with the reason, and the old workers serve on. `hello` as a black box,
//! started by the path a deploy updates.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use herd_tests::hello::{Hello, hello_binary};
use herd_tests::http;
use herd_tests::{TempDir, process_gone, wait_until};

/// The inode of the file at `path` (following symlinks).
fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).ino()
}

/// The inode of the program process `pid` runs (`/proc/PID/exe`, which still resolves to the
/// file after it was deleted or renamed over).
fn running(pid: u32) -> u64 {
    inode(Path::new(&format!("/proc/{pid}/exe")))
}

/// `cp from dir/name.tmp && mv dir/name.tmp dir/name`: the usual atomic replacement.
fn put(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("copy to {}: {e}", tmp.display()));
    std::fs::rename(&tmp, to).unwrap_or_else(|e| panic!("rename over {}: {e}", to.display()));
}

/// `GET /` on new connections until `count` distinct worker pids have answered; their pids.
#[track_caller]
fn serving(address: &str, count: usize) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for _ in 0..300 {
        let response = http::get(address, "/").unwrap();
        let (_, pid) = response.greeting().unwrap_or_else(|| panic!("{response:?}"));
        pids.insert(pid);
        if pids.len() == count {
            return pids;
        }
    }
    panic!("{count} workers expected, {pids:?} answered")
}

/// Sends SIGHUP and waits for the end of the `n`th rolling restart; returns hello's line for
/// that end (`rolling restart done`, or `rolling restart aborted ...`).
#[track_caller]
fn restart(hello: &Hello, n: usize) -> String {
    hello.signal("HUP");
    let ends = hello.wait_for_log("hello: rolling restart ", 2 * n);
    let ends: Vec<&String> = ends.iter().filter(|l| !l.ends_with(" begins")).collect();
    assert_eq!(ends.len(), n, "one end per restart: {ends:?}");
    ends[n - 1].clone()
}

/// The scenario: `current -> v1`, hello started as `current/app`, 2 workers under load of
/// new connections. Each deploy is followed by SIGHUP.
/// 1. A new build renamed over `v1/app` (the old file is then deleted while it runs): the
///    replacements run the new file.
/// 2. A new release `v2`, and `current` switched to it (an atomic symlink swap): the
///    replacements run `v2/app`.
/// 3. A broken build (not executable): the restart aborts naming the program and the exec's
///    error; the workers of (2) serve on.
/// 4. A build that exits at once because its address is in use (the README's program, with
///    127.0.0.1:8080 taken): the restart aborts with its exit status and its failed listen;
///    the workers of (2) serve on.
#[test]
fn a_binary_renamed_over_the_running_one_is_what_the_replacements_run() {
    let dir = TempDir::new("deploy");
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    for release in [&v1, &v2] {
        std::fs::create_dir(release).unwrap();
    }
    put(&hello_binary(), &v1.join("app"));
    std::os::unix::fs::symlink(&v1, dir.join("current")).unwrap();
    let program = dir.join("current").join("app");
    let args = ["--workers", "2", "--listen", "127.0.0.1:0"];
    let (hello, _, address) = Hello::start_program(&program, &args, &[]);
    let first = serving(&address, 2);
    for &pid in &first {
        assert_eq!(running(pid), inode(&v1.join("app")), "worker {pid} runs v1/app");
    }

    // 1. cp new app.tmp && mv app.tmp app
    let old_build = inode(&v1.join("app"));
    put(&hello_binary(), &v1.join("app"));
    let new_build = inode(&v1.join("app"));
    assert_ne!(new_build, old_build);
    let end = restart(&hello, 1);
    assert_eq!(end, "hello: rolling restart done", "{}", hello.stderr_so_far());
    wait_until("the old workers gone", || first.iter().all(|&pid| process_gone(pid)));
    let second = serving(&address, 2);
    for &pid in &second {
        assert_eq!(running(pid), new_build, "worker {pid} runs the build renamed over v1/app");
    }

    // 2. A new release, and the `current` symlink switched to it.
    put(&hello_binary(), &v2.join("app"));
    std::os::unix::fs::symlink(&v2, dir.join("current.tmp")).unwrap();
    std::fs::rename(dir.join("current.tmp"), dir.join("current")).unwrap();
    let end = restart(&hello, 2);
    assert_eq!(end, "hello: rolling restart done", "{}", hello.stderr_so_far());
    wait_until("the v1 workers gone", || second.iter().all(|&pid| process_gone(pid)));
    let third = serving(&address, 2);
    for &pid in &third {
        assert_eq!(running(pid), inode(&v2.join("app")), "worker {pid} runs v2/app");
    }

    // 3. A broken build: not executable.
    let broken = dir.join("broken");
    std::fs::write(&broken, "not a program").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o644)).unwrap();
    put(&broken, &v2.join("app"));
    let end = restart(&hello, 3);
    assert!(
        end.starts_with("hello: rolling restart aborted at place 0: ")
            && end.contains(&program.display().to_string())
            && end.contains("Permission denied (os error 13)"),
        "the abort names the program and the exec's error: {end}"
    );
    assert_eq!(serving(&address, 2), third, "the workers of v2 serve on");

    // 4. A build that cannot listen: its address is in use.
    let blocker = std::net::TcpListener::bind("127.0.0.1:8080");
    if let Err(e) = &blocker {
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "bind 127.0.0.1:8080: {e}");
    }
    put(Path::new(env!("CARGO_BIN_EXE_readme")), &v2.join("app"));
    let end = restart(&hello, 4);
    assert!(
        end.starts_with("hello: rolling restart aborted at place 0: ")
            && end.contains("died before it was ready: exit status: 1")
            && end.contains("its last listen failed: bind tcp://127.0.0.1:8080: "),
        "the abort gives the exit status and the failed listen: {end}"
    );
    assert_eq!(serving(&address, 2), third, "the workers of v2 serve on");

    hello.signal("TERM");
    let (status, _, stderr) = hello.wait();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    let begins =
        stderr.lines().filter(|l| l.starts_with("hello: rolling restart of 2 workers begins"));
    assert_eq!(begins.count(), 4, "one line per restart's beginning: {stderr}");
}
