//! Helpers shared by the integration tests: temporary directories, descriptor flags, and
//! waits that end by a deadline.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;
use std::{fs, io, process, thread};

use herd_handle::{BindOptions, Bound, Listener, PeerAddr, Spec, Stream, bind};

/// The longest any test waits for anything.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A directory under the system temporary directory, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name holds the process id, a counter and `tag`, so tests
    /// running at once never share one.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("herd-handle-{}-{n}-{tag}", process::id()));
        fs::create_dir(&path).expect("create temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A name no other test process or test uses, for abstract Unix sockets.
pub fn unique_name(tag: &str) -> Vec<u8> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("herd-handle-test-{}-{n}-{tag}", process::id()).into_bytes()
}

/// `fcntl(F_GETFD)`: whether `FD_CLOEXEC` is set.
#[track_caller]
pub fn is_cloexec(fd: impl AsFd) -> bool {
    // SAFETY: F_GETFD takes no argument and only reads the flags of a borrowed descriptor.
    let flags = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0, "fcntl(F_GETFD): {}", io::Error::last_os_error());
    flags & libc::FD_CLOEXEC != 0
}

/// `fcntl(F_GETFL)`: whether `O_NONBLOCK` is set.
#[track_caller]
pub fn is_nonblocking(fd: impl AsFd) -> bool {
    // SAFETY: F_GETFL takes no argument and only reads the flags of a borrowed descriptor.
    let flags = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0, "fcntl(F_GETFL): {}", io::Error::last_os_error());
    flags & libc::O_NONBLOCK != 0
}

/// Whether a descriptor number is open, without owning it.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any integer is harmless: it fails with EBADF if nothing is open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Runs `f` on its own thread and waits for its result at most [`DEADLINE`]; a panic in `f`
/// is passed on.
#[track_caller]
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(value) => {
            handle.join().expect("the thread sent its result");
            value
        }
        Err(RecvTimeoutError::Timeout) => panic!("{what}: nothing within {DEADLINE:?}"),
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread ended without sending"),
        },
    }
}

/// `listener.accept()` on another thread, bounded by [`DEADLINE`].
#[track_caller]
pub fn accept(listener: &Listener) -> (Stream, PeerAddr) {
    let listener = listener.try_clone().expect("clone the listener");
    let (stream, peer) = within("accept", move || listener.accept()).expect("accept");
    set_timeouts(&stream);
    (stream, peer)
}

/// Read and write timeouts of [`DEADLINE`] on an accepted stream, so no test read hangs.
pub fn set_timeouts(stream: &Stream) {
    match stream {
        Stream::Tcp(s) => {
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s.set_write_timeout(Some(DEADLINE)).unwrap();
        }
        Stream::Unix(s) => {
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s.set_write_timeout(Some(DEADLINE)).unwrap();
        }
    }
}

/// Binds `spec` (a string) with default options and expects a listener.
#[track_caller]
pub fn listen(spec: &str) -> Listener {
    listen_with(&spec.parse().expect("a valid spec"), &BindOptions::default())
}

/// Binds `spec` with `options` and expects a listener.
#[track_caller]
pub fn listen_with(spec: &Spec, options: &BindOptions) -> Listener {
    match bind(spec, options) {
        Ok(Bound::Listener(listener)) => listener,
        Ok(other) => panic!("bind {spec}: expected a listener, got {other:?}"),
        Err(error) => panic!("{error}"),
    }
}
