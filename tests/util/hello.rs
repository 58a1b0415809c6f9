//! The `hello` example as a black box: found (or built) beside the test binary, run with its
//! stdout read line by line, and told things with signals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};

use crate::{DEADLINE, Reaped};

/// The `hello` example of package `herd`, in the target directory this test binary was built
/// in (`<target>/<profile>/deps/<test>` → `<target>/<profile>/examples/hello`).
///
/// Under cargo (`$CARGO` set) it is built first with `$CARGO build -p herd --example hello`
/// into that same target directory: a no-op when it is fresh, and a stale binary would test
/// old code (`cargo test -p herd-tests` does not build it). Without cargo, the binary must
/// exist. Built once per test process.
pub fn hello_binary() -> PathBuf {
    // Built with the same features as `hello-axum` (they change nothing in `hello`), so one
    // build of herd and its dev-dependencies serves both.
    example_binary("hello", &["axum"])
}

/// Example `name` of package `herd`, built with `features` as [`hello_binary`] builds
/// `hello` (once per test process and example).
pub fn example_binary(name: &str, features: &[&str]) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    built
        .entry(name.to_owned())
        .or_insert_with(|| find_or_build("herd", "--example", name, features))
        .clone()
}

/// The `herd` binary of package `herd-cli`, found or built as [`hello_binary`] is.
pub fn herd_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| find_or_build("herd-cli", "--bin", "herd", &[])).clone()
}

/// Target `name` of kind `kind` (`--example`, `--bin`) of `package`, built with `features`, in
/// the target directory of this test binary (built there first under cargo).
fn find_or_build(package: &str, kind: &str, name: &str, features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps", exe.display()));
    let binary = match kind {
        "--example" => profile_dir.join("examples").join(name),
        _ => profile_dir.join(name),
    };
    let Ok(cargo) = std::env::var("CARGO") else {
        assert!(
            binary.exists(),
            "{} does not exist and $CARGO is not set to build it: run `cargo build -p \
             {package} {kind} {name} --features {}` with this target directory",
            binary.display(),
            features.join(",")
        );
        return binary;
    };
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, kind, name]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => panic!("no profile directory in {}", exe.display()),
    }
    cmd.env("CARGO_TARGET_DIR", target_dir).current_dir(env!("CARGO_MANIFEST_DIR"));
    let output = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(binary.exists(), "{cmd:?} succeeded but {} does not exist", binary.display());
    binary
}

/// A running `hello` primary: killed (and its workers with it, by their parent-death signal)
/// and reaped when dropped.
pub struct Hello {
    child: Option<Reaped>,
    lines: mpsc::Receiver<String>,
}

impl Hello {
    /// Starts `hello` with these arguments and extra environment. `HERD_SCHED_POLICY` and the
    /// worker id variable of this process are not passed on.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Hello {
        Hello::spawn_command(Command::new(hello_binary()), args, env)
    }

    /// Starts `program` (a copy of hello's binary, say) as [`spawn`](Hello::spawn) starts
    /// hello, and waits for its listening line as [`start`](Hello::start) does.
    pub fn start_program(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Hello, String, String) {
        Hello::spawn_command(Command::new(program), args, env).started(args)
    }

    /// [`start`](Hello::start) with the descriptor limit (`ulimit -n`) of the whole cluster
    /// set to `limit`, as a shell does it: `sh -c 'ulimit -n LIMIT && exec hello ARGS'`.
    pub fn start_with_fd_limit(
        args: &[&str],
        env: &[(&str, &str)],
        limit: u32,
    ) -> (Hello, String, String) {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""));
        cmd.arg(hello_binary());
        let hello = Hello::spawn_command(cmd, args, env);
        hello.started(args)
    }

    /// Starts `cmd` (hello's binary, prepared by the caller: descriptors passed, say) as
    /// [`start`](Hello::start) starts hello, and waits for its listening line.
    pub fn start_command(
        cmd: Command,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Hello, String, String) {
        Hello::spawn_command(cmd, args, env).started(args)
    }

    /// Starts `cmd` with these arguments and extra environment, stdout read line by line and
    /// stderr collected, as [`spawn`](Hello::spawn) starts hello (any program run so: `herd`).
    ///
    /// A `herd run` that names no control socket (`--control`, `--no-control`, or its own
    /// `XDG_RUNTIME_DIR`) gets `--no-control`: tests run in parallel, and two clusters of one
    /// program's name may not share the default socket (the second would stop at its start).
    pub fn spawn_command(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Hello {
        let chooses = args.iter().any(|a| *a == "--control" || *a == "--no-control")
            || env.iter().any(|(k, _)| *k == "XDG_RUNTIME_DIR");
        let args: Vec<&str> = match args.split_first() {
            Some((&"run", rest)) if !chooses => {
                ["run", "--no-control"].into_iter().chain(rest.iter().copied()).collect()
            }
            _ => args.to_vec(),
        };
        cmd.args(&args).env_remove(herd::WORKER_ID_VAR).env_remove("HERD_SCHED_POLICY");
        cmd.envs(env.iter().copied()).stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = Reaped::spawn(cmd);
        let stdout = child.take_stdout().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Hello { child: Some(child), lines }
    }

    /// Starts `hello` and waits for its `listening on http://…` line; returns it with the
    /// `host:port` it names. Panics with hello's stderr if it exits first.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> (Hello, String, String) {
        Hello::spawn(args, env).started(args)
    }

    fn started(self, args: &[&str]) -> (Hello, String, String) {
        let mut hello = self;
        let Some(line) = hello.next_line() else {
            let (status, _, stderr) = hello.wait();
            panic!("hello {args:?} exited before listening: {status}; stderr:\n{stderr}");
        };
        let address = line
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
            .to_owned();
        (hello, line, address)
    }

    /// The pids of the primary's children (its workers), from
    /// `/proc/<pid>/task/<pid>/children`.
    pub fn worker_pids(&self) -> Vec<u32> {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The primary's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The next line on hello's stdout, or `None` once it is closed. Panics if none comes
    /// within [`DEADLINE`].
    #[track_caller]
    pub fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("hello printed nothing within {DEADLINE:?}")
            }
        }
    }

    /// What hello has written on stderr so far (its log lines).
    pub fn stderr_so_far(&self) -> String {
        self.child.as_ref().expect("running").stderr_so_far()
    }

    /// Waits (within [`DEADLINE`]) until hello has written at least `count` stderr lines
    /// containing `text`; returns those lines.
    #[track_caller]
    pub fn wait_for_log(&self, text: &str, count: usize) -> Vec<String> {
        let lines = || -> Vec<String> {
            self.stderr_so_far().lines().filter(|l| l.contains(text)).map(str::to_owned).collect()
        };
        let started = std::time::Instant::now();
        while lines().len() < count {
            assert!(
                started.elapsed() < DEADLINE,
                "{count} stderr lines with {text:?}: not within {DEADLINE:?}; stderr:\n{}",
                self.stderr_so_far()
            );
            // Polling a pipe another thread reads: nothing announces a new line.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        lines()
    }

    /// Sends a signal (`TERM`, `HUP`, `KILL`, …) to the primary.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        crate::send_signal(self.pid(), signal);
    }

    /// Waits (within [`DEADLINE`]) for hello to exit; returns its status, the stdout lines not
    /// read yet, and its stderr.
    pub fn wait(mut self) -> (ExitStatus, Vec<String>, String) {
        let (status, stderr) = self.child.take().expect("running").wait();
        let mut rest = Vec::new();
        while let Some(line) = self.next_line() {
            rest.push(line);
        }
        (status, rest, stderr)
    }
}
