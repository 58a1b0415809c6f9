//! Starting one worker process: this binary again, with its id, its control channel at a fixed
//! descriptor, and its output where the settings say.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcessStdio};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use herd_ipc::Channel;

use crate::cluster::{Cluster, Stdio};
use crate::protocol::{IPC_FD, IPC_FD_VAR, PRIMARY_PID_VAR, WORKER_ID_VAR};
use crate::{Error, WorkerId, sys};

/// A started worker process and the primary's end of its control channel.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    /// `None` for a socket-activated worker, which has no control channel.
    pub(crate) channel: Option<Channel>,
    /// The program it runs, for error messages.
    pub(crate) exec: String,
}

/// Setting worker `id` up failed at `op`: kills and reaps its process (a worker the primary
/// does not watch must not live on, nor stay a zombie) and returns the error to report. Its
/// channel end and pipes are closed by their owners' drops.
pub(crate) fn abandon(
    mut child: Child,
    id: WorkerId,
    exec: String,
    op: &'static str,
    source: io::Error,
) -> Error {
    let pid = child.id();
    // SIGKILL, then wait: prompt, since nothing delays a killed process's exit for long.
    let _ = child.kill();
    let _ = child.wait();
    Error::SpawnSetup { id, exec, pid, op, source }
}

/// A step after the spawn that a test can make fail (see `inject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Starting an output relay thread.
    Relay,
    /// Registering the control channel with the poller.
    WatchControl,
    /// `pidfd_open`.
    Pidfd,
    /// Registering the pidfd with the poller.
    WatchExit,
}

/// TEST-ONLY injection point: in unit tests, records the pid of the child being set up and
/// fails `step` when the test asked for it (`FAIL_AT`); in every other build, nothing.
#[cfg(test)]
pub(crate) fn inject(step: Step, pid: u32) -> io::Result<()> {
    injection::SPAWNED.set(Some(pid));
    if injection::FAIL_AT.get() == Some(step) {
        return Err(io::Error::other(format!("injected failure at {step:?}")));
    }
    Ok(())
}

/// Not a test build: no injection.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn inject(_step: Step, _pid: u32) -> io::Result<()> {
    Ok(())
}

/// The path of the program this process runs, resolved once, when the primary starts, so that
/// every worker later execs what is at that path *then*: a binary a deploy renamed over the
/// running one, or the new target of a switched symlink (Node likewise forks `process.argv[1]`,
/// a path, not the running file).
///
/// `argv[0]` is the path the program was started by (absolute, relative to the current
/// directory, or a bare name found on `PATH`, as `execvp` finds it), kept with its symlinks; it
/// is used when it names the very file running now (same device and inode as
/// `/proc/self/exe`), since anyone may start a program with any `argv[0]`. Otherwise the path
/// `/proc/self/exe` names now (symlinks resolved), read before any deploy can delete the file
/// (a path read later would end in ` (deleted)`).
///
/// # Errors
/// `/proc/self/exe` cannot be read (no `/proc`).
pub(crate) fn this_program() -> io::Result<PathBuf> {
    let running = std::fs::metadata("/proc/self/exe")?;
    let same_file = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.dev() == running.dev() && m.ino() == running.ino())
    };
    if let Some(arg0) = std::env::args_os().next().filter(|a| !a.is_empty()) {
        let arg0 = Path::new(&arg0);
        let candidates: Vec<PathBuf> = if arg0.as_os_str().as_bytes().contains(&b'/') {
            std::env::current_dir().map(|cwd| vec![cwd.join(arg0)]).unwrap_or_default()
        } else {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path).map(|dir| dir.join(arg0)).collect()
        };
        if let Some(found) = candidates.into_iter().find(|c| c.is_absolute() && same_file(c)) {
            return Ok(found);
        }
    }
    let exe = std::fs::read_link("/proc/self/exe")?;
    // Already deleted (replaced before the primary started): the path without the kernel's
    // suffix names what is there now.
    let deleted = exe
        .as_os_str()
        .as_bytes()
        .strip_suffix(b" (deleted)")
        .map(|b| PathBuf::from(OsStr::from_bytes(b)));
    Ok(deleted.filter(|p| !exe.exists() && p.exists()).unwrap_or(exe))
}

/// Starts worker `id`: `exec` (the program resolved when the primary started, or
/// `Cluster::exec`) with the settings' arguments, environment and ids, plus `env`.
pub(crate) fn spawn(
    settings: &Cluster,
    exec: &Path,
    id: WorkerId,
    env: &[(String, String)],
) -> Result<Spawned, Error> {
    let spawn_error = |source| Error::Spawn { id, exec: exec.display().to_string(), source };
    let mut cmd = Command::new(exec);
    match &settings.args {
        Some(args) => cmd.args(args),
        None => cmd.args(std::env::args_os().skip(1)),
    };
    // The primary's own socket-activation and notify variables (`LISTEN_FDS`, `LISTEN_PID`,
    // `NOTIFY_SOCKET`, ...) are meant for it: a worker inheriting them would take its fd 3,
    // herd's control channel, for a socket systemd passed (`sd_listen_fds(3)`).
    for (name, _) in std::env::vars_os() {
        if sys::is_protocol_var(&name) {
            cmd.env_remove(name);
        }
    }
    cmd.envs(settings.env.iter().map(|(k, v)| (k, v)));
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env(WORKER_ID_VAR, id.to_string());
    cmd.env(PRIMARY_PID_VAR, std::process::id().to_string());
    apply_process_settings(&mut cmd, settings);
    let (ours, theirs) = Channel::pair().map_err(|e| spawn_error(e.into()))?;
    theirs.into_child(&mut cmd, IPC_FD, IPC_FD_VAR).map_err(|e| spawn_error(e.into()))?;
    sys::default_signals(&mut cmd);
    sys::die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(spawn_error)?;
    // Dropping the command closes this process's copy of the worker's end: from now on the
    // worker's exit is end of stream on ours.
    drop(cmd);
    relay_output(settings, child, id, exec, Some(ours))
}

/// Starts socket-activated worker `id` ([`Cluster::socket_activation`]): `exec` with the
/// settings' arguments, `fds` at descriptors 3.. named `names` in `LISTEN_FDNAMES`, `LISTEN_PID`
/// its own pid, and `notify` as its `NOTIFY_SOCKET` if given; of herd's variables only
/// `HERD_WORKER_ID`, and none of the primary's own socket-activation variables.
pub(crate) fn spawn_activated(
    settings: &Cluster,
    exec: &Path,
    id: WorkerId,
    env: &[(String, String)],
    fds: &[std::os::fd::BorrowedFd<'_>],
    names: &[&str],
    notify: Option<&str>,
) -> Result<Spawned, Error> {
    use std::ffi::OsString;
    let spawn_error = |source| Error::Spawn { id, exec: exec.display().to_string(), source };
    let mut vars: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(k, _)| {
            !sys::is_protocol_var(k)
                && k != PRIMARY_PID_VAR
                && k != IPC_FD_VAR
                && k != WORKER_ID_VAR
        })
        .collect();
    vars.extend(settings.env.iter().cloned());
    vars.extend(env.iter().map(|(k, v)| (k.into(), v.into())));
    vars.insert(WORKER_ID_VAR.into(), id.to_string().into());
    if !fds.is_empty() {
        vars.insert("LISTEN_FDS".into(), fds.len().to_string().into());
        vars.insert("LISTEN_FDNAMES".into(), names.join(":").into());
    }
    if let Some(notify) = notify {
        vars.insert("NOTIFY_SOCKET".into(), notify.into());
    }
    let vars: Vec<(OsString, OsString)> = vars.into_iter().collect();
    let args = settings.args.clone().unwrap_or_default();
    let mut cmd = Command::new(exec);
    apply_process_settings(&mut cmd, settings);
    // systemd's `StandardInput=null` default: N copies reading one terminal or pipe would
    // share it by chance.
    cmd.stdin(ProcessStdio::null());
    sys::default_signals(&mut cmd);
    sys::die_with_parent(&mut cmd);
    sys::exec_activated(&mut cmd, exec, &args, &vars, fds).map_err(spawn_error)?;
    let child = cmd.spawn().map_err(spawn_error)?;
    drop(cmd);
    relay_output(settings, child, id, exec, None)
}

/// What every worker, herd's or socket-activated, gets from the settings: a process group of
/// its own (a terminal's Ctrl-C, SIGINT to the foreground group, reaches the primary only,
/// which then stops the workers gracefully), the directory, the ids and the standard streams.
fn apply_process_settings(cmd: &mut Command, settings: &Cluster) {
    cmd.process_group(0);
    if let Some(dir) = &settings.cwd {
        cmd.current_dir(dir);
    }
    if let Some(uid) = settings.uid {
        cmd.uid(uid);
    }
    if let Some(gid) = settings.gid {
        cmd.gid(gid);
    }
    set_stdio(cmd, settings.stdio);
}

fn set_stdio(cmd: &mut Command, stdio: Stdio) {
    match stdio {
        Stdio::Inherit => {}
        Stdio::Silent => {
            cmd.stdout(ProcessStdio::null()).stderr(ProcessStdio::null());
        }
        Stdio::Prefixed => {
            cmd.stdout(ProcessStdio::piped()).stderr(ProcessStdio::piped());
        }
    }
}

/// Starts the threads relaying a spawned worker's output, if it is piped.
fn relay_output(
    settings: &Cluster,
    mut child: Child,
    id: WorkerId,
    exec: &Path,
    channel: Option<Channel>,
) -> Result<Spawned, Error> {
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let exec = exec.display().to_string();
    let prefix = match &settings.name {
        Some(name) => format!("[{name} worker {id}] "),
        None => format!("[worker {id}] "),
    };

    // The relays end by themselves when the pipes close. They are never joined: a grandchild
    // may hold a pipe open long after the worker exits, and the event loop must not wait on it.
    // A thread that cannot start (EAGAIN: the thread or memory limit) fails the fork; a relay
    // already started ends when the killed worker's pipe closes.
    let relays = inject(Step::Relay, child.id())
        .and_then(|()| out.map_or(Ok(()), |out| relay(out, id, &prefix, std::io::stdout)))
        .and_then(|()| err.map_or(Ok(()), |err| relay(err, id, &prefix, std::io::stderr)));
    match relays {
        Ok(()) => Ok(Spawned { child, channel, exec }),
        Err(e) => Err(abandon(child, id, exec, "start the output relay thread", e)),
    }
}

/// The longest line relayed whole, in bytes (64 KiB, the `prefix` not counted): a longer one
/// is written in parts of this size, each but the last ending with [`SPLIT_MARK`], so output
/// with no newline never grows the primary's memory beyond this.
pub(crate) const LINE_MAX: usize = 64 * 1024;

/// What ends each part of a line split at [`LINE_MAX`] bytes (before its newline).
pub(crate) const SPLIT_MARK: &[u8] = b" [herd: line split at 65536 bytes]";

/// Copies a worker's output line by line, each prefixed with `prefix`, until the worker closes it.
fn relay<R: Read + Send + 'static, W: Write + 'static>(
    from: R,
    id: WorkerId,
    prefix: &str,
    to: fn() -> W,
) -> io::Result<()> {
    let name = format!("herd-relay-{id}");
    let prefix = prefix.to_owned();
    let running = Running::start();
    std::thread::Builder::new().name(name).spawn(move || {
        let _running = running;
        // A broken or full destination loses the line, never the worker (nor the relay).
        copy_lines(BufReader::new(from), &prefix, |whole| drop(to().write_all(whole)));
    })?;
    Ok(())
}

/// How long the primary, when dropped, waits for the relays to write what the workers wrote
/// last: 1 s at most, so a grandchild holding a pipe open cannot hold the primary's exit.
pub(crate) const RELAY_FLUSH: Duration = Duration::from_secs(1);

/// The relay threads still running in this process, and a wake-up for each one that ends.
static RELAYS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// One running relay thread: counted from before it starts until it ends (or never starts).
struct Running;

impl Running {
    fn start() -> Running {
        *RELAYS.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        *RELAYS.0.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        RELAYS.1.notify_all();
    }
}

/// Waits until every relay has written the last of its worker's output (its pipe closed), for
/// [`RELAY_FLUSH`] at most. Without it, lines a worker wrote just before the primary's end could
/// still be in a relay, and the process would end with them unwritten.
pub(crate) fn flush_relays() {
    let deadline = std::time::Instant::now() + RELAY_FLUSH;
    let mut running = RELAYS.0.lock().unwrap_or_else(PoisonError::into_inner);
    while *running > 0 {
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else { return };
        running = RELAYS.1.wait_timeout(running, left).unwrap_or_else(PoisonError::into_inner).0;
    }
}

/// Reads `from` until its end, handing `write` each line (at most [`LINE_MAX`] bytes of it:
/// see [`SPLIT_MARK`]) prefixed with `prefix` and ended with a newline, in one buffer, so
/// lines of different workers never interleave mid-line. What is left without a newline at
/// the end (the worker exited) is handed over too.
fn copy_lines(mut from: impl BufRead, prefix: &str, mut write: impl FnMut(&[u8])) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut from).take(LINE_MAX as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut whole = Vec::with_capacity(prefix.len() + line.len() + SPLIT_MARK.len() + 1);
        whole.extend_from_slice(prefix.as_bytes());
        whole.extend_from_slice(&line);
        if !whole.ends_with(b"\n") {
            if line.len() == LINE_MAX {
                whole.extend_from_slice(SPLIT_MARK);
            }
            whole.push(b'\n');
        }
        write(&whole);
    }
}

/// TEST-ONLY: the state of the injection point, per thread (a unit test forks on its own
/// thread).
#[cfg(test)]
pub(crate) mod injection {
    use std::cell::Cell;

    use super::Step;

    thread_local! {
        /// The step to fail.
        pub(crate) static FAIL_AT: Cell<Option<Step>> = const { Cell::new(None) };
        /// The pid of the last child set up.
        pub(crate) static SPAWNED: Cell<Option<u32>> = const { Cell::new(None) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output with no newline is relayed in parts of at most LINE_MAX bytes, each marked as
    /// split, nothing lost; the rest without a newline is handed over at the end. Found by
    /// brk11: 400 MB without a newline grew the primary to 393 MB.
    #[test]
    fn a_line_without_a_newline_is_split_at_line_max_and_the_rest_flushed_at_the_end() {
        let mut input = vec![b'a'; 2 * LINE_MAX + 10];
        input.extend_from_slice(b"\nshort\nlast");
        let mut parts: Vec<Vec<u8>> = Vec::new();
        copy_lines(io::Cursor::new(&input), "[w 1] ", |whole| parts.push(whole.to_vec()));
        assert_eq!(parts.len(), 5, "{:?}", parts.iter().map(Vec::len).collect::<Vec<_>>());
        let mut split = b"[w 1] ".to_vec();
        split.extend(vec![b'a'; LINE_MAX]);
        split.extend_from_slice(SPLIT_MARK);
        split.push(b'\n');
        assert_eq!((&parts[0], &parts[1]), (&split, &split));
        assert_eq!(parts[2], b"[w 1] aaaaaaaaaa\n");
        assert_eq!(parts[3], b"[w 1] short\n");
        assert_eq!(parts[4], b"[w 1] last\n");
    }
}
