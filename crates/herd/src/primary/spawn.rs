//! Starting one worker process: this binary again, with its id, its control channel at a fixed
//! descriptor, and its output where the settings say.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio as ProcessStdio};

use herd_ipc::Channel;

use crate::cluster::{Cluster, Stdio};
use crate::protocol::{IPC_FD, IPC_FD_VAR, PRIMARY_PID_VAR, WORKER_ID_VAR};
use crate::{Error, WorkerId, sys};

/// A started worker process and the primary's end of its control channel.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) channel: Channel,
}

pub(crate) fn spawn(
    settings: &Cluster,
    id: WorkerId,
    env: &[(String, String)],
) -> Result<Spawned, Error> {
    let exec = match &settings.exec {
        Some(exec) => exec.clone(),
        None => std::env::current_exe().map_err(Error::io("current_exe"))?,
    };
    let spawn_error = |source| Error::Spawn { id, exec: exec.display().to_string(), source };
    let mut cmd = Command::new(&exec);
    match &settings.args {
        Some(args) => cmd.args(args),
        None => cmd.args(std::env::args_os().skip(1)),
    };
    cmd.envs(settings.env.iter().map(|(k, v)| (k, v)));
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env(WORKER_ID_VAR, id.to_string());
    cmd.env(PRIMARY_PID_VAR, std::process::id().to_string());
    // A process group of its own: a terminal's Ctrl-C (SIGINT to the foreground group) reaches
    // the primary only, which then stops the workers gracefully.
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
    match settings.stdio {
        Stdio::Inherit => {}
        Stdio::Silent => {
            cmd.stdout(ProcessStdio::null()).stderr(ProcessStdio::null());
        }
        Stdio::Prefixed => {
            cmd.stdout(ProcessStdio::piped()).stderr(ProcessStdio::piped());
        }
    }
    let (ours, theirs) = Channel::pair().map_err(|e| spawn_error(e.into()))?;
    theirs.into_child(&mut cmd, IPC_FD, IPC_FD_VAR).map_err(|e| spawn_error(e.into()))?;
    sys::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(spawn_error)?;
    // Dropping the command closes this process's copy of the worker's end: from now on the
    // worker's exit is end of stream on ours.
    drop(cmd);

    // The relays end by themselves when the pipes close. They are never joined: a grandchild
    // may hold a pipe open long after the worker exits, and the event loop must not wait on it.
    if let Some(out) = child.stdout.take() {
        relay(out, id, std::io::stdout);
    }
    if let Some(err) = child.stderr.take() {
        relay(err, id, std::io::stderr);
    }
    Ok(Spawned { child, channel: ours })
}

/// Copies a worker's output line by line, each prefixed with its id, until the worker closes it.
fn relay<R: Read + Send + 'static, W: Write + 'static>(from: R, id: WorkerId, to: fn() -> W) {
    std::thread::spawn(move || {
        let mut lines = BufReader::new(from);
        let mut line = Vec::new();
        let prefix = format!("[worker {id}] ");
        while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            // One write per line, so lines of different workers never interleave mid-line.
            let mut whole = Vec::with_capacity(prefix.len() + line.len() + 1);
            whole.extend_from_slice(prefix.as_bytes());
            whole.extend_from_slice(&line);
            if !whole.ends_with(b"\n") {
                whole.push(b'\n');
            }
            let _ = to().write_all(&whole);
            line.clear();
        }
    });
}
