//! The primary's own socket activation (`sd_listen_fds_with_names(3)`): the sockets systemd
//! (or any service manager speaking the protocol) passed this process, taken once, when the
//! first primary starts, and looked up by name for a [`Spec::Systemd`].
//!
//! The protocol, as systemd's `sd_listen_fds_with_names(3)` reads it: nothing is passed unless
//! `LISTEN_PID` is this process's pid (a variable inherited from a parent is someone else's);
//! `LISTEN_FDS` sockets then sit at descriptors 3, 4, …; `LISTEN_FDNAMES`, if set, names them
//! (`:`-separated, exactly one name each), else each is `unknown`. Each is made close-on-exec,
//! so no child inherits it by accident (even when the names are malformed: they are this
//! process's all the same). A malformed `LISTEN_PID` or `LISTEN_FDS`, a name count that does
//! not match, or a descriptor that is not open is an error (systemd's `-EINVAL`,
//! `-EBADF`), reported when a `systemd:` spec is looked up.
//!
//! The variables are not unset (`sd_listen_fds`'s `unset_environment`): changing the
//! environment of a process whose other threads may read it is unsound, and a library does
//! not know its threads. What unsetting is for holds all the same: no worker herd starts
//! sees them (both kinds of worker get an environment without them), a child the application
//! starts itself sees a `LISTEN_PID` that is not its own and so takes nothing (the protocol's
//! rule), and the descriptors are close-on-exec.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use herd_handle::Spec;

use crate::sys::LISTEN_FDS_START;

/// The sockets passed to this process, by name, in descriptor order; or why the variables
/// could not be read.
type Passed = Result<Vec<(String, OwnedFd)>, String>;

/// Taken once per process: the descriptors are this process's for its whole life (systemd
/// holds them too), whatever primaries come and go.
static PASSED: OnceLock<Passed> = OnceLock::new();

/// The sockets passed to this process, taken (and made close-on-exec) on the first call.
pub(super) fn passed() -> &'static Passed {
    PASSED.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok();
        take(var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"))
    })
}

/// Reads the protocol's variables (as given) and takes the descriptors they pass.
fn take(pid: Option<String>, fds: Option<String>, names: Option<String>) -> Passed {
    take_with(pid, fds, names, crate::sys::take_listen_fds)
}

/// What takes `count` descriptors from 3 (making them close-on-exec): the first one that
/// failed and why, on an error.
type Taker = fn(RawFd) -> Result<Vec<OwnedFd>, (RawFd, io::Error)>;

/// [`take`], the descriptors taken by `taker`.
fn take_with(
    pid: Option<String>,
    fds: Option<String>,
    names: Option<String>,
    taker: Taker,
) -> Passed {
    let Some(pid) = pid else { return Ok(Vec::new()) };
    let ours = match pid.parse::<u32>() {
        Ok(pid) if pid > 0 => pid == std::process::id(),
        _ => return Err(format!("LISTEN_PID={pid:?}: not a process id")),
    };
    let Some(fds) = fds.filter(|_| ours) else { return Ok(Vec::new()) };
    // A count whose last descriptor would not be a descriptor number is no count.
    let count = match fds.parse::<i32>() {
        Ok(count) if count <= 0 => return Ok(Vec::new()),
        Ok(count) if count <= RawFd::MAX - LISTEN_FDS_START => count,
        _ => return Err(format!("LISTEN_FDS={fds:?}: not a number of descriptors")),
    };
    // Taken (so made close-on-exec) before the names are checked: they are this process's
    // whatever the names say, and must not leak into the programs it starts. A count far
    // beyond the descriptors open fails at the first one missing, before anything of its
    // size is allocated.
    let taken =
        taker(count).map_err(|(fd, e)| format!("LISTEN_FDS={fds:?}: descriptor {fd}: {e}"))?;
    let names: Option<Vec<String>> = names.map(|n| n.split(':').map(str::to_owned).collect());
    if let Some(names) = names.as_ref().filter(|n| n.len() != count as usize) {
        return Err(format!(
            "LISTEN_FDNAMES={:?} names {} sockets, LISTEN_FDS={fds:?} passes {count}",
            names.join(":"),
            names.len()
        ));
    }
    let names = names.unwrap_or_else(|| vec!["unknown".to_owned(); taken.len()]);
    Ok(names.into_iter().zip(taken).collect())
}

/// `spec`, with a [`Spec::Systemd`] turned into the [`Spec::Fd`] of the socket it names (which
/// the registry then shares as any inherited socket, never shut down by a stop); any other
/// spec as it is.
///
/// # Errors
/// `listen systemd:NAME: …` (`NotFound`) naming the sockets that were passed, when none has
/// that name (or not that many); (`InvalidInput`) naming the variable, when they could not be
/// read.
pub(super) fn resolve(spec: &Spec) -> Result<Spec, herd_handle::Error> {
    match spec {
        Spec::Systemd { .. } => lookup(passed(), spec),
        other => Ok(other.clone()),
    }
}

/// [`resolve`] against `passed`.
fn lookup(passed: &Passed, spec: &Spec) -> Result<Spec, herd_handle::Error> {
    let Spec::Systemd { name, index } = spec else { return Ok(spec.clone()) };
    let fail = |kind, message: String| {
        Err(herd_handle::Error::new("listen", spec, io::Error::new(kind, message)))
    };
    let passed = match passed {
        Ok(passed) => passed,
        Err(e) => return fail(io::ErrorKind::InvalidInput, format!("socket activation: {e}")),
    };
    let named: Vec<&OwnedFd> = passed.iter().filter(|(n, _)| n == name).map(|(_, fd)| fd).collect();
    if let Some(fd) = named.get(*index) {
        return Ok(Spec::Fd(fd.as_raw_fd()));
    }
    let message = if passed.is_empty() {
        "systemd passed this process no socket (LISTEN_PID is not its pid, or LISTEN_FDS is \
         unset or 0)"
            .to_owned()
    } else if named.is_empty() {
        let names: Vec<String> = passed.iter().map(|(n, _)| format!("{n:?}")).collect();
        format!("systemd passed no socket named {name:?} (LISTEN_FDNAMES: {})", names.join(", "))
    } else {
        format!("systemd passed {} sockets named {name:?}, so no index {index}", named.len())
    };
    fail(io::ErrorKind::NotFound, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    /// Nothing is taken, and nothing is wrong, unless the variables are for this process.
    #[test]
    fn someone_elses_or_no_variables_pass_nothing() {
        assert!(take(None, owned("2"), None).unwrap().is_empty());
        let other = (std::process::id() + 1).to_string();
        assert!(take(Some(other), owned("nonsense"), None).unwrap().is_empty());
        let ours = std::process::id().to_string();
        assert!(take(Some(ours.clone()), None, None).unwrap().is_empty());
        assert!(take(Some(ours), owned("0"), owned("web")).unwrap().is_empty());
    }

    #[test]
    fn malformed_variables_are_errors_naming_them() {
        let error = take(owned("init"), owned("1"), None).unwrap_err();
        assert_eq!(error, r#"LISTEN_PID="init": not a process id"#);
        let ours = || Some(std::process::id().to_string());
        for fds in ["one", "", "2147483647", "1 "] {
            let error = take(ours(), owned(fds), None).unwrap_err();
            assert_eq!(error, format!("LISTEN_FDS={fds:?}: not a number of descriptors"));
        }
        let error = take_with(ours(), owned("1"), owned("web:api"), fake_take).unwrap_err();
        assert_eq!(error, r#"LISTEN_FDNAMES="web:api" names 2 sockets, LISTEN_FDS="1" passes 1"#);
    }

    /// Stands for `take_listen_fds` (which touches this test process's own descriptor 3):
    /// counts its calls.
    fn fake_take(count: RawFd) -> Result<Vec<OwnedFd>, (RawFd, io::Error)> {
        FAKE_TAKEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok((0..count).map(|_| std::fs::File::open("/dev/null").unwrap().into()).collect())
    }

    static FAKE_TAKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// With `LISTEN_PID` ours, the passed descriptors are taken (made close-on-exec) even when
    /// the names are malformed, which is still the error (found by brk11: the activator's
    /// sockets leaked into every worker).
    #[test]
    fn the_descriptors_are_taken_even_when_the_names_do_not_match() {
        let ours = Some(std::process::id().to_string());
        let before = FAKE_TAKEN.load(std::sync::atomic::Ordering::SeqCst);
        let error = take_with(ours, owned("2"), owned("web"), fake_take).unwrap_err();
        assert!(error.starts_with("LISTEN_FDNAMES=\"web\" names 1 sockets"), "{error}");
        assert_eq!(FAKE_TAKEN.load(std::sync::atomic::Ordering::SeqCst), before + 1);
    }

    #[test]
    fn a_name_is_looked_up_and_a_missing_one_lists_those_passed() {
        let sockets = |names: &[&str]| -> Passed {
            Ok(names
                .iter()
                .map(|n| ((*n).to_owned(), std::fs::File::open("/dev/null").unwrap().into()))
                .collect())
        };
        let passed = sockets(&["web", "app.socket", "app.socket"]);
        let fds: Vec<RawFd> = passed.as_ref().unwrap().iter().map(|(_, f)| f.as_raw_fd()).collect();
        let spec = |s: &str| s.parse::<Spec>().unwrap();
        assert_eq!(lookup(&passed, &spec("systemd:web")).unwrap(), Spec::Fd(fds[0]));
        assert_eq!(lookup(&passed, &spec("systemd:app.socket:1")).unwrap(), Spec::Fd(fds[2]));
        assert_eq!(lookup(&passed, &spec("tcp://127.0.0.1:1")).unwrap(), spec("tcp://127.0.0.1:1"));
        let error = lookup(&passed, &spec("systemd:api")).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"listen systemd:api: systemd passed no socket named "api" (LISTEN_FDNAMES: "web", "app.socket", "app.socket")"#
        );
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let error = lookup(&passed, &spec("systemd:app.socket:2")).unwrap_err();
        assert!(error.to_string().ends_with(r#"2 sockets named "app.socket", so no index 2"#));
        let error = lookup(&sockets(&[]), &spec("systemd:web")).unwrap_err();
        assert!(error.to_string().contains("passed this process no socket"), "{error}");
        let malformed: Passed = Err(r#"LISTEN_FDS="one": not a number of descriptors"#.into());
        let error = lookup(&malformed, &spec("systemd:web")).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"listen systemd:web: socket activation: LISTEN_FDS="one": not a number of descriptors"#
        );
    }
}
