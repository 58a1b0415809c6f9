//! What a process running under other credentials could bind itself: the rule a primary
//! applies before it binds, with its own privileges, for a worker that runs as another user.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::Spec;

/// A user and group id, as a worker runs under (`Cluster::uid`, `Cluster::gid` in herd).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

/// The first port an unprivileged process may bind (`net.ipv4.ip_unprivileged_port_start`,
/// 1024 unless the sysctl says otherwise; it applies to IPv6 too).
fn unprivileged_port_start() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1024)
}

/// Whether a process with `creds` could bind `spec` itself, as the kernel would decide.
///
/// - TCP and UDP: port 0 or a port from `net.ipv4.ip_unprivileged_port_start` (1024) up
///   (`CAP_NET_BIND_SERVICE` is not assumed).
/// - Abstract names: always (they have no permissions).
/// - A socket file: every directory above it searchable and its directory writable for
///   `creds` (`path_resolution(7)`: owner bits if the uid owns it, else group bits if the gid
///   does, else other bits; supplementary groups and ACLs are not known here, so this may
///   refuse what they would allow, never the reverse).
/// - An inherited descriptor (`fd://`, `systemd:`): never: it is the binder's, not the other
///   process's.
///
/// # Errors
/// `EACCES` (`PermissionDenied`) saying why; the `stat` error of a directory on the way.
pub fn check_bind_access(spec: &Spec, creds: &Credentials) -> io::Result<()> {
    if creds.uid == 0 {
        return Ok(());
    }
    let denied = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    match spec {
        Spec::Tcp(address) | Spec::Udp(address) => {
            let start = unprivileged_port_start();
            if address.port() != 0 && address.port() < start {
                return denied(format!(
                    "port {} is below {start} (ip_unprivileged_port_start): uid {} cannot bind it",
                    address.port(),
                    creds.uid
                ));
            }
            Ok(())
        }
        Spec::UnixAbstract(_) => Ok(()),
        Spec::Unix(path) => {
            let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
                return denied(format!("{}: no directory to check", path.display()));
            };
            for ancestor in dir.ancestors().skip(1) {
                if !allowed(ancestor, creds, 0o1)? {
                    return denied(format!(
                        "{}: uid {} cannot search {}",
                        path.display(),
                        creds.uid,
                        ancestor.display()
                    ));
                }
            }
            if !allowed(dir, creds, 0o3)? {
                return denied(format!(
                    "{}: uid {} cannot create files in {}",
                    path.display(),
                    creds.uid,
                    dir.display()
                ));
            }
            Ok(())
        }
        Spec::Fd(_) | Spec::Systemd { .. } => denied(format!(
            "{spec} is a descriptor of the binding process, not of uid {}",
            creds.uid
        )),
    }
}

/// Whether a process with `creds` could remove the file at `path` itself: its directory is
/// writable and searchable for it, and, in a sticky directory (`/tmp`), it owns the file or the
/// directory (`unlink(2)`).
pub fn could_remove(path: &Path, creds: &Credentials) -> bool {
    if creds.uid == 0 {
        return true;
    }
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else { return false };
    let (Ok(dir_meta), Ok(file_meta)) = (fs::metadata(dir), fs::symlink_metadata(path)) else {
        return false;
    };
    let sticky = dir_meta.mode() & 0o1000 != 0;
    allowed(dir, creds, 0o3).unwrap_or(false)
        && (!sticky || file_meta.uid() == creds.uid || dir_meta.uid() == creds.uid)
}

/// Whether `creds` have the permission bits `wanted` (of `rwx` = 4, 2, 1) on `path`.
fn allowed(path: &Path, creds: &Credentials, wanted: u32) -> io::Result<bool> {
    let meta = fs::metadata(path)?;
    let mode = meta.mode();
    let bits = if meta.uid() == creds.uid {
        mode >> 6
    } else if meta.gid() == creds.gid {
        mode >> 3
    } else {
        mode
    };
    Ok(bits & wanted == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY: Credentials = Credentials { uid: 65534, gid: 65534 };

    fn check(spec: &str, creds: &Credentials) -> bool {
        check_bind_access(&spec.parse().unwrap(), creds).is_ok()
    }

    #[test]
    fn ports_abstract_names_and_inherited_descriptors() {
        let start = unprivileged_port_start();
        assert!(check("tcp://127.0.0.1:0", &NOBODY), "a port of its own");
        assert!(check(&format!("tcp://127.0.0.1:{start}"), &NOBODY));
        assert!(!check(&format!("tcp://127.0.0.1:{}", start - 1), &NOBODY));
        assert!(!check("udp://[::1]:53", &NOBODY));
        assert!(check("unix:@any-abstract-name", &NOBODY));
        assert!(!check("fd://3", &NOBODY), "the binder's descriptor");
        let root = Credentials { uid: 0, gid: 0 };
        assert!(check("tcp://127.0.0.1:80", &root) && check("fd://3", &root), "root may");
        let error = check_bind_access(&"tcp://127.0.0.1:80".parse().unwrap(), &NOBODY);
        let error = error.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(error.to_string().contains("port 80"), "{error}");
    }

    #[test]
    fn socket_files_need_a_writable_directory() {
        // `/` is root's and not writable by others; `/tmp` is (sticky).
        assert!(!check("unix:///herd-never-there.sock", &NOBODY));
        assert!(check("unix:///tmp/herd-never-there.sock", &NOBODY));
        assert!(!could_remove(Path::new("/tmp"), &NOBODY), "root's, in a root directory");
    }
}
