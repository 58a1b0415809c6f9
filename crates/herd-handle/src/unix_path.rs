//! Unix socket files: Node's path shortening, stale socket files, permissions.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::BindOptions;

/// The shorter of `path` and the same path relative to `cwd`, Node's rule for binding Unix
/// sockets: `sun_path` holds only about 108 bytes, and a long absolute path under the current
/// directory often fits once made relative.
///
/// `cwd` must be what `getcwd` returns (as [`std::env::current_dir`] does): absolute and free
/// of symbolic links, so that each `..` stepping out of it reaches its real parent. `..`
/// components inside `path` are kept as they are: behind a symbolic link `a/link/..` is not
/// `a`, and the kernel resolves the kept components as it would have in `path`. A `path` that
/// is already relative, or a `cwd` that is not absolute or contains `..`, gives `path`
/// unchanged.
///
/// ```
/// use std::path::{Path, PathBuf};
/// use herd_handle::shorten;
///
/// let cwd = Path::new("/home/app/deployments/current");
/// assert_eq!(shorten(Path::new("/home/app/deployments/current/run/app.sock"), cwd),
///            PathBuf::from("run/app.sock"));
/// assert_eq!(shorten(Path::new("/home/app/deployments/shared/app.sock"), cwd),
///            PathBuf::from("../shared/app.sock"));
/// assert_eq!(shorten(Path::new("/tmp/app.sock"), cwd), PathBuf::from("/tmp/app.sock"));
/// ```
pub fn shorten(path: &Path, cwd: &Path) -> PathBuf {
    match relative_to(path, cwd) {
        Some(relative)
            if !relative.as_os_str().is_empty()
                && relative.as_os_str().len() < path.as_os_str().len() =>
        {
            relative
        }
        _ => path.to_path_buf(),
    }
}

/// `path` relative to `cwd`, by components, or `None` when that cannot be said safely.
fn relative_to(path: &Path, cwd: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || !cwd.is_absolute() || cwd.components().any(is_parent) {
        return None;
    }
    let mut path_rest = path.components().peekable();
    let mut cwd_rest = cwd.components().peekable();
    while let (Some(a), Some(b)) = (path_rest.peek(), cwd_rest.peek()) {
        if a != b {
            break;
        }
        path_rest.next();
        cwd_rest.next();
    }
    // What is left of `cwd` are plain names (no `..`, and `components` drops inner `.`): one
    // step up for each.
    let mut relative: PathBuf = cwd_rest.map(|_| Component::ParentDir).collect();
    relative.extend(path_rest);
    Some(relative)
}

fn is_parent(component: Component<'_>) -> bool {
    component == Component::ParentDir
}

/// The identity of a socket file: its device and inode numbers (`lstat`), which tell the file
/// one bind created from a file another process created at the same path since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketFile {
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The socket file now at `path` (a symbolic link is not followed).
    ///
    /// # Errors
    /// The `lstat` error (`ENOENT` when nothing is there), or `InvalidInput` when the file
    /// there is not a socket.
    pub fn at(path: &Path) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(path)?;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket file"));
        }
        Ok(SocketFile { dev: meta.dev(), ino: meta.ino() })
    }

    /// Removes the file at `path` only if it is this very file, without ever removing a file
    /// another process put there, even one that appears there during the call.
    ///
    /// A check followed by `unlink` would race a concurrent binder (it could replace the file
    /// between the two). Instead the file at `path` is first moved aside under a name private
    /// to this process (`rename(2)`, atomic), checked there, and then either removed (it is
    /// this file) or linked back (`link(2)`, which never replaces anything) and its private
    /// name removed. Returns whether this file was removed: `false` when another file (or
    /// nothing) was at `path`. (A file that replaces this one in the microseconds between the
    /// first look and the move is away from `path` only until it is linked back: never
    /// removed.)
    ///
    /// # Errors
    /// The `rename`, `lstat` or `unlink` error. If another process has bound a new socket at
    /// `path` in the instant the foreign file was aside, the foreign file cannot be linked
    /// back: that is reported as `AlreadyExists`, naming the private path where it is.
    pub fn remove_if_at(self, path: &Path) -> io::Result<bool> {
        if SocketFile::at(path).ok() != Some(self) {
            // Cheap first look: not ours (or gone), so not touched at all.
            return Ok(false);
        }
        let aside = private_name(path);
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        if SocketFile::at(&aside).ok() == Some(self) {
            fs::remove_file(&aside)?;
            return Ok(true);
        }
        // Someone replaced the file between the look and the move: put theirs back.
        match fs::hard_link(&aside, path) {
            Ok(()) => {
                fs::remove_file(&aside)?;
                Ok(false)
            }
            Err(e) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} was replaced while being removed; the other file is kept at {}: {e}",
                    path.display(),
                    aside.display()
                ),
            )),
        }
    }
}

/// A name beside `path`, private to this process and call.
fn private_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".herd-{}-{n}", std::process::id()));
    PathBuf::from(name)
}

/// Removes the socket file at `path` if nobody listens on it any more; says whether it did.
///
/// It must be a socket itself (`lstat`: a symbolic link to one is left alone), and a connect
/// to it must be refused (`ECONNREFUSED`, what the kernel says when no socket is bound to
/// the file). Any other answer, errors included, leaves the file where it is. The probe is
/// nonblocking, so a live listener with a full backlog (`EAGAIN`) counts as live rather than
/// making us wait.
///
/// Only the file that was probed is removed ([`SocketFile::remove_if_at`]): if another process
/// removes the stale file and binds a new socket there meanwhile, its socket stays, and our
/// bind then fails with `EADDRINUSE`, as it should.
pub(crate) fn remove_if_stale(path: &Path) -> bool {
    let Ok(stale) = SocketFile::at(path) else { return false };
    if !connect_refused(path) {
        return false;
    }
    stale.remove_if_at(path).unwrap_or(false)
}

fn connect_refused(path: &Path) -> bool {
    let probe = || -> io::Result<()> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.connect(&SockAddr::unix(path)?)
    };
    matches!(probe(), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// Adds read and/or write permission for user, group and others to the socket file at `path`
/// as the options ask, as libuv's `uv_pipe_chmod` does.
///
/// The execute bits, which mean nothing on a socket, are cleared at the same time, so that
/// the result does not depend on the umask: both options give exactly `0o666`.
pub(crate) fn set_mode(path: &Path, options: &BindOptions) -> io::Result<()> {
    let mut wanted = 0;
    if options.readable_all {
        wanted |= 0o444;
    }
    if options.writable_all {
        wanted |= 0o222;
    }
    if wanted == 0 {
        return Ok(());
    }
    let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
    fs::set_permissions(path, fs::Permissions::from_mode((mode & !0o111) | wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_table() {
        let cases = [
            // (path, cwd, expected)
            ("/a/b/c/app.sock", "/a/b/c", "app.sock"),
            ("/a/b/c/run/app.sock", "/a/b/c", "run/app.sock"),
            ("/home/user/project/x.sock", "/home/user/other", "../project/x.sock"),
            ("/srv/deep/tree/of/dirs/s", "/srv/deep/tree/of/dirs/here/and/there", "../../../s"),
            // The relative form is not shorter: keep the absolute path.
            ("/x.sock", "/a/b/c/d", "/x.sock"),
            ("/tmp/s", "/home/user", "/tmp/s"),
            // Equal lengths are not shorter either.
            ("/a/bc", "/a/b", "/a/bc"),
            // `..` inside the path is kept, after the common prefix.
            ("/a/b/../c/app.sock", "/a/b", "../c/app.sock"),
            ("/a/../b/app.sock", "/a", "../b/app.sock"),
            // `.` components do not count.
            ("/a/./b/c/app.sock", "/a/b/c", "app.sock"),
            // Relative paths are already relative.
            ("rel/app.sock", "/a/b", "rel/app.sock"),
            ("../app.sock", "/a/b", "../app.sock"),
            // A cwd that is not absolute, or has `..`, cannot be trusted.
            ("/a/b/c/app.sock", "a/b/c", "/a/b/c/app.sock"),
            ("/a/b/c/app.sock", "/a/x/../b/c", "/a/b/c/app.sock"),
            // The path is the cwd itself: the relative form would be empty.
            ("/a/b", "/a/b", "/a/b"),
            // Trailing slashes do not matter.
            ("/a/b/c/app.sock", "/a/b/c/", "app.sock"),
            ("/", "/a", "/"),
        ];
        for (path, cwd, expected) in cases {
            assert_eq!(
                shorten(Path::new(path), Path::new(cwd)),
                PathBuf::from(expected),
                "shorten({path:?}, {cwd:?})"
            );
        }
    }

    #[test]
    fn shortened_path_names_the_same_place() {
        // Resolving the short form against cwd gives back the path, component for component.
        let cwd = Path::new("/srv/app/releases/42");
        for path in ["/srv/app/releases/42/s.sock", "/srv/app/shared/s.sock", "/srv/x"] {
            let short = shorten(Path::new(path), cwd);
            let back = if short.is_absolute() { short } else { normalize(&cwd.join(short)) };
            assert_eq!(back, PathBuf::from(path));
        }
    }

    /// Folds `..` lexically; fine in this test, whose paths have no symbolic links.
    fn normalize(path: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for component in path.components() {
            if component == Component::ParentDir {
                out.pop();
            } else {
                out.push(component);
            }
        }
        out
    }
}
