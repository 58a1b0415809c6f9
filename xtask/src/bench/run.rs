//! One run: a configuration (mode, server, generators), starting its server, loading it,
//! sampling `/proc` at the window's edges, stopping it; and the figures derived from that.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::args::Mode;
use super::load::{self, Edge, Outcome, Plan};
use super::procstat::{self, Sample};
use super::remote;
use super::server::{self, Server};
use super::stats;
use super::{nginx, wrk};

/// The server under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The `hello` example under a policy.
    Herd(String),
    /// `xtask/node/cluster.js` under `rr` or `none`.
    Node(&'static str),
    /// The `ceiling` example: one process, one thread.
    Ceiling,
    /// The `hello-axum` example under a policy.
    HerdAxum(String),
    /// The `axum-single` example: one process, axum on a multi-thread runtime with as many
    /// threads as the clusters have workers.
    AxumSingle,
    /// `hello --bare`: hello's serving code in N processes that each bind with
    /// `SO_REUSEPORT` themselves, no herd.
    Bare,
    /// The `evloop` example under a policy: one epoll loop per herd worker.
    Evloop(String),
    /// nginx with a generated configuration (see `nginx.rs`).
    Nginx,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) mode: Mode,
    pub(crate) kind: Kind,
    /// Generator processes (2 only for the ceiling's check of the generator).
    pub(crate) generators: u32,
    /// Loaded by `wrk` instead of the built-in generator.
    pub(crate) wrk: bool,
}

impl Config {
    pub(crate) fn label(&self) -> String {
        let server = self.server_label();
        if self.wrk { format!("{server}, wrk") } else { server }
    }

    fn server_label(&self) -> String {
        match &self.kind {
            Kind::Herd(policy) => format!("herd {policy}"),
            Kind::Node(policy) => format!("node {policy}"),
            Kind::Ceiling if self.generators > 1 => format!("ceiling, {} gen", self.generators),
            Kind::Ceiling => "ceiling".into(),
            Kind::HerdAxum(policy) => format!("herd-axum {policy}"),
            Kind::AxumSingle => "axum 1-proc".into(),
            Kind::Bare => "bare".into(),
            Kind::Evloop(policy) => format!("herd-evloop {policy}"),
            Kind::Nginx => "nginx".into(),
        }
    }

    /// The generator's name, as the JSON says it.
    pub(crate) fn generator(&self) -> &'static str {
        if self.wrk { "wrk" } else { "built-in" }
    }

    pub(crate) fn policy(&self) -> &str {
        match &self.kind {
            Kind::Herd(p) => p,
            Kind::Node(p) => p,
            Kind::Ceiling => "ceiling",
            Kind::HerdAxum(p) => p,
            Kind::AxumSingle => "single",
            Kind::Bare => "bare",
            Kind::Evloop(p) => p,
            Kind::Nginx => "nginx",
        }
    }

    pub(crate) fn server(&self) -> &'static str {
        match self.kind {
            Kind::Herd(_) => "herd",
            Kind::Node(_) => "node",
            Kind::Ceiling => "ceiling",
            Kind::HerdAxum(_) => "herd-axum",
            Kind::AxumSingle => "axum",
            Kind::Bare => "hello-bare",
            Kind::Evloop(_) => "herd-evloop",
            Kind::Nginx => "nginx",
        }
    }
}

/// What a run needs besides its configuration.
pub(crate) struct Env {
    pub(crate) hello: PathBuf,
    pub(crate) ceiling: PathBuf,
    pub(crate) hello_axum: PathBuf,
    pub(crate) axum_single: PathBuf,
    pub(crate) evloop: PathBuf,
    pub(crate) node_script: PathBuf,
    pub(crate) workers: usize,
    pub(crate) concurrency: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// `(server core, generator core)` when pinned.
    pub(crate) pin: Option<(usize, usize)>,
}

/// One run's measurements.
pub(crate) struct Run {
    pub(crate) config: usize,
    pub(crate) round: usize,
    /// Why the run produced nothing, if it failed.
    pub(crate) failed: Option<String>,
    pub(crate) outcome: Outcome,
    pub(crate) primary_cpu_s: f64,
    /// Primary plus every child it had at both window edges.
    pub(crate) all_cpu_s: f64,
    pub(crate) processes: usize,
    pub(crate) primary_rss_kib: Option<u64>,
    /// The largest worker's resident set.
    pub(crate) worker_rss_kib: Option<u64>,
    /// Workers the counts are spread over (zeros for any that served nothing).
    pub(crate) expected_workers: usize,
}

impl Run {
    pub(crate) fn failed(config: usize, round: usize, message: String) -> Run {
        Run {
            config,
            round,
            failed: Some(message),
            outcome: Outcome::empty(0.0),
            primary_cpu_s: 0.0,
            all_cpu_s: 0.0,
            processes: 0,
            primary_rss_kib: None,
            worker_rss_kib: None,
            expected_workers: 0,
        }
    }

    pub(crate) fn ok(&self) -> bool {
        self.failed.is_none()
    }

    pub(crate) fn rps(&self) -> f64 {
        self.outcome.requests as f64 / self.outcome.window_s
    }

    /// Latency at quantile `q`, in microseconds (wrk's runs: only the quantiles wrk gives).
    pub(crate) fn latency_us(&self, q: f64) -> Option<f64> {
        match &self.outcome.quantiles {
            Some(given) => given.iter().find(|(p, _)| (p - q).abs() < 1e-9).map(|&(_, us)| us),
            None => self.outcome.latency.quantile(q),
        }
    }

    pub(crate) fn worker_counts(&self) -> Vec<u64> {
        stats::padded(self.outcome.per_worker.values().copied(), self.expected_workers)
    }

    /// `None` when the answers name no worker (`expected_workers` 0: nginx, wrk).
    pub(crate) fn jain(&self) -> Option<f64> {
        (self.expected_workers > 0).then(|| stats::jain(&self.worker_counts())).flatten()
    }

    pub(crate) fn max_over_min(&self) -> Option<f64> {
        (self.expected_workers > 0).then(|| stats::max_over_min(&self.worker_counts())).flatten()
    }

    /// New connections in the window; meaningful in `close` mode only (keep-alive
    /// connections open during the warm-up).
    fn new_connections(&self, mode: Mode) -> Option<f64> {
        let n = self.outcome.connections;
        (mode == Mode::Close && n > 0).then_some(n as f64)
    }

    /// The primary's CPU seconds per 1,000 connections (`close` mode).
    pub(crate) fn primary_cpu_s_per_1k_conn(&self, mode: Mode) -> Option<f64> {
        Some(self.primary_cpu_s / self.new_connections(mode)? * 1000.0)
    }

    /// Every server process's CPU microseconds per connection (`close` mode).
    pub(crate) fn all_cpu_us_per_conn(&self, mode: Mode) -> Option<f64> {
        Some(self.all_cpu_s / self.new_connections(mode)? * 1e6)
    }

    /// Every server process's CPU microseconds per request (both modes).
    pub(crate) fn all_cpu_us_per_request(&self) -> Option<f64> {
        (self.outcome.requests > 0).then(|| self.all_cpu_s / self.outcome.requests as f64 * 1e6)
    }

    /// Cores the server processes kept busy on average.
    pub(crate) fn server_cores(&self) -> f64 {
        self.all_cpu_s / self.outcome.window_s
    }

    /// Cores the generator(s) kept busy on average.
    pub(crate) fn generator_cores(&self) -> f64 {
        self.outcome.cpu_s / self.outcome.window_s
    }
}

/// Starts the configuration's server, loads it for one window, stops it.
pub(crate) fn run(config: &Config, index: usize, round: usize, env: &Env) -> Run {
    match measure(config, env) {
        Ok(mut run) => {
            run.config = index;
            run.round = round;
            run
        }
        Err(message) => Run::failed(index, round, message),
    }
}

/// A started server, and the nginx directory it runs from (removed after the server stops).
pub(crate) struct Started {
    pub(crate) server: Server,
    /// Workers whose ids the answers carry (0: the answers name none).
    pub(crate) expected: usize,
    pub(crate) nginx: Option<nginx::Instance>,
}

impl Started {
    /// Stops the server (then removes nginx's directory); a problem is a warning.
    pub(crate) fn stop(self, what: &str) {
        if let Err(message) = self.server.stop() {
            eprintln!("warning: {what}: {message}");
        }
        drop(self.nginx);
    }
}

/// Starts `kind` with `workers` workers on a free loopback port and waits until it listens
/// (its listening line; nginx: until it answers).
pub(crate) fn start(kind: &Kind, workers: usize, env: &Env, what: &str) -> Result<Started, String> {
    let listen = "127.0.0.1:0".to_string();
    let n = workers.to_string();
    let core = env.pin.map(|(server, _)| server);
    let cluster = |program: &PathBuf, policy: &str| {
        let args = ["--workers", &n, "--policy", policy, "--listen", &listen];
        (program.clone(), args.map(String::from).to_vec(), workers)
    };
    let (program, args, expected) = match kind {
        Kind::Herd(policy) => cluster(&env.hello, policy),
        Kind::Evloop(policy) => cluster(&env.evloop, policy),
        Kind::HerdAxum(policy) => cluster(&env.hello_axum, policy),
        Kind::Bare => {
            let args = ["--bare", "--workers", &n, "--listen", &listen];
            (env.hello.clone(), args.map(String::from).to_vec(), workers)
        }
        Kind::Node(policy) => {
            let script = env.node_script.display().to_string();
            let args = [&script, "--workers", &n, "--policy", policy, "--listen", &listen];
            (PathBuf::from("node"), args.map(String::from).to_vec(), workers)
        }
        Kind::Ceiling => (env.ceiling.clone(), vec!["--listen".into(), listen], 1),
        Kind::AxumSingle => {
            let args = ["--threads", &n, "--listen", &listen];
            (env.axum_single.clone(), args.map(String::from).to_vec(), 1)
        }
        Kind::Nginx => {
            let instance = nginx::Instance::new(workers)?;
            let cmd = server::command(Path::new("nginx"), &instance.args(), core);
            let server = Server::start_probed(cmd, instance.addr, what)?;
            return Ok(Started { server, expected: 0, nginx: Some(instance) });
        }
    };
    let cmd = server::command(&program, &args, core);
    Ok(Started { server: Server::start(cmd, what)?, expected, nginx: None })
}

fn measure(config: &Config, env: &Env) -> Result<Run, String> {
    let started = start(&config.kind, env.workers, env, &config.label())?;
    let server = &started.server;
    // wrk reads no bodies: no worker ids.
    let expected = if config.wrk { 0 } else { started.expected };

    let remote_share = if config.generators > 1 { env.concurrency / 2 } else { 0 };
    // A second generator process needs a moment to start before the common start time.
    let lead = if remote_share > 0 { 300 } else { 100 };
    let start = Instant::now() + Duration::from_millis(lead);
    let plan = Plan {
        addr: server.addr,
        mode: config.mode,
        concurrency: env.concurrency - remote_share,
        start,
        measure_from: start + env.warmup,
        end: start + env.warmup + env.duration,
    };
    let remote = if remote_share > 0 {
        let child_plan = Plan { concurrency: remote_share, ..plan };
        Some(remote::spawn(&child_plan, env.pin.map(|(_, generator)| generator))?)
    } else {
        None
    };

    let pid = server.pid;
    let (mut before, mut after) = (Sample::default(), Sample::default());
    let (mut primary_rss, mut worker_rss) = (None, None);
    let mut at_edge = |edge| match edge {
        Edge::Open => before = Sample::take(pid),
        Edge::Close => {
            after = Sample::take(pid);
            primary_rss = procstat::rss_kib(pid);
            worker_rss = after.children.iter().filter_map(|(p, _)| procstat::rss_kib(*p)).max();
        }
    };
    let loaded =
        if config.wrk { load_wrk(&plan, &mut at_edge) } else { load::run(&plan, &mut at_edge) };
    let mut outcome = match loaded {
        Ok(outcome) => outcome,
        Err(message) => {
            started.stop(&config.label());
            return Err(message);
        }
    };
    if let Some(remote) = remote {
        let theirs = remote.collect(plan.end + Duration::from_secs(10))?;
        outcome.merge(&theirs);
    }
    let (primary_ticks, all_ticks) = before.delta(&after);
    started.stop(&config.label());
    Ok(Run {
        config: 0,
        round: 0,
        failed: None,
        outcome,
        primary_cpu_s: procstat::seconds(primary_ticks),
        all_cpu_s: procstat::seconds(all_ticks),
        processes: 1 + after.children.len(),
        primary_rss_kib: primary_rss,
        worker_rss_kib: worker_rss,
        expected_workers: expected,
    })
}

/// One run under `wrk` (see `wrk.rs`): wrk runs for the plan's measured duration (rounded up
/// to whole seconds; it has no warm-up), and the server is sampled from just after wrk starts
/// to just after it ends, so its CPU and wrk's request count cover the same time.
fn load_wrk(plan: &Plan, at_edge: &mut dyn FnMut(Edge)) -> Result<Outcome, String> {
    load::sleep_until(plan.measure_from);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = plan.end - plan.measure_from;
    let mut cmd = wrk::command(plan.addr, plan.mode, cores, plan.concurrency, run);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("wrk: cannot start: {e}"))?;
    let opened = Instant::now();
    at_edge(Edge::Open);
    let wrk_pid = child.id();
    // Until wrk has exited (a zombie, not reaped yet: its CPU times are still readable).
    let deadline = opened + run + Duration::from_secs(15);
    let mut cpu = 0;
    while Instant::now() < deadline {
        match procstat::zombie_cpu_ticks(wrk_pid) {
            (true, ticks) => {
                cpu = ticks;
                break;
            }
            (false, ticks) => cpu = ticks,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let window_s = opened.elapsed().as_secs_f64();
    at_edge(Edge::Close);
    let output = child.wait_with_output().map_err(|e| format!("wrk: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = wrk::parse(&stdout).map_err(|e| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        format!("{e} (wrk {}; stderr: {})", output.status, stderr.trim())
    })?;
    let mut outcome = Outcome::empty(window_s);
    outcome.requests = report.requests;
    outcome.errors = report.errors;
    if report.errors > 0 {
        outcome.first_error =
            Some(format!("wrk: {} socket errors or non-2xx answers", report.errors));
    }
    if plan.mode == Mode::Close {
        outcome.connections = outcome.requests;
    }
    outcome.quantiles = Some(report.latency_us);
    outcome.cpu_s = procstat::seconds(cpu);
    Ok(outcome)
}
