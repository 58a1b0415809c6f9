//! `cargo xtask bench` flags.

use std::time::Duration;

pub(crate) const HELP: &str = "\
usage: cargo xtask bench [flags]
       cargo xtask bench --criterion [criterion args, e.g. a name filter]

Runs the `hello` example (release build) under each policy and as `hello --bare` (the same
serving code in N processes binding with SO_REUSEPORT themselves, no herd), `evloop` (one
epoll loop per herd worker) under none, reuseport and rr, nginx with a generated
configuration (if `nginx` is on the PATH), a Node.js cluster peer (if `node` is on the PATH),
a single-threaded reference server (`ceiling`), and `hello-axum` (under rr and reuseport)
beside a one-process axum server (`axum-single`); drives each with a built-in load generator
on 127.0.0.1, and a few of them with `wrk` too (if on the PATH); measures start-up (exec to
every worker listening, 4 workers) and idle memory; prints markdown tables. Full results go
to <target-dir>/herd-bench/ (a timestamped JSON file and latest.json).

flags:
  --mode close,keepalive     connection modes: a new connection per request, or one per slot
  --concurrency N            connections in flight, one generator thread each (default 32)
  --duration SECS            measured seconds per run (default 5; --quick: 1)
  --warmup SECS              unmeasured seconds before each run (default 0.5; --quick: 0.25)
  --workers N                cluster workers (default: the number of cores)
  --policies LIST            herd policies: none,rr,least-conn,reuseport (default: all)
  --repeats N                rounds; each runs every configuration once (default 3; --quick: 1)
  --quick                    a smoke run (about 2 minutes on 2 busy cores, with nginx, node and
                             wrk installed): 1 round, 1 s runs, no second
                             generator check, wrk on one server only, 1 start-up sample
  --pin                      server on core 1, generator on core 0 (needs taskset)
  --no-node                  skip the Node.js peer rows
  --no-nginx                 skip the nginx rows
  --no-wrk                   skip the rows loaded by wrk
  --no-startup               skip the start-up and idle memory rows
  --no-axum                  skip the async rows: hello-axum under rr and reuseport (those of
                             --policies) beside axum-single, one process with a multi-thread
                             runtime of --workers threads
  --criterion [args]         run the criterion benches instead (cargo bench -p herd-benches)
  -h, --help                 this text
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A new connection for every request.
    Close,
    /// One connection per slot, reused.
    KeepAlive,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Close => "close",
            Mode::KeepAlive => "keepalive",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "close" => Ok(Mode::Close),
            "keepalive" | "keep-alive" => Ok(Mode::KeepAlive),
            _ => Err(format!("unknown mode {s:?} (close, keepalive)")),
        }
    }
}

pub(crate) const POLICIES: [&str; 4] = ["none", "rr", "least-conn", "reuseport"];

#[derive(Clone, Debug)]
pub(crate) struct Args {
    pub(crate) modes: Vec<Mode>,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) workers: usize,
    pub(crate) policies: Vec<String>,
    pub(crate) repeats: usize,
    pub(crate) quick: bool,
    pub(crate) pin: bool,
    pub(crate) node: bool,
    /// The async rows: `hello-axum` and `axum-single`.
    pub(crate) axum: bool,
    /// The nginx rows, if nginx is on the PATH.
    pub(crate) nginx: bool,
    /// The rows loaded by wrk, if wrk is on the PATH.
    pub(crate) wrk: bool,
    /// The start-up and idle memory rows.
    pub(crate) startup: bool,
}

/// What the command line asks for: a benchmark run, the criterion benches, or help.
pub(crate) enum Request {
    Run(Args),
    Criterion(Vec<String>),
    Help,
}

fn list<T>(value: &str, each: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items: Vec<T> =
        value.split(',').filter(|s| !s.is_empty()).map(each).collect::<Result<_, _>>()?;
    if items.is_empty() { Err(format!("empty list {value:?}")) } else { Ok(items) }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{flag} {value:?}: not a number"))
}

fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    let secs: f64 = number(flag, value)?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{flag} {value}: expected 0 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) fn parse(args: &[String]) -> Result<Request, String> {
    if args.first().is_some_and(|a| a == "--criterion") {
        return Ok(Request::Criterion(args[1..].to_vec()));
    }
    let mut modes = None;
    let mut duration = None;
    let mut repeats = None;
    let mut out = Args {
        modes: vec![Mode::Close, Mode::KeepAlive],
        concurrency: 32,
        duration: Duration::from_secs(5),
        warmup: Duration::from_millis(500),
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        policies: POLICIES.iter().map(|p| p.to_string()).collect(),
        repeats: 3,
        quick: false,
        pin: false,
        node: true,
        axum: true,
        nginx: true,
        wrk: true,
        startup: true,
    };
    let mut warmup = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value =
            || it.next().map(String::as_str).ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(Request::Help),
            "--mode" | "--modes" => modes = Some(list(value()?, Mode::parse)?),
            "--concurrency" => out.concurrency = number(flag, value()?)?,
            "--duration" => duration = Some(seconds(flag, value()?)?),
            "--warmup" => warmup = Some(seconds(flag, value()?)?),
            "--workers" => out.workers = number(flag, value()?)?,
            "--policies" | "--policy" => {
                out.policies = list(value()?, |p| {
                    let p = if p == "shared" { "none" } else { p };
                    if POLICIES.contains(&p) {
                        Ok(p.to_string())
                    } else {
                        Err(format!("unknown policy {p:?} (none, rr, least-conn, reuseport)"))
                    }
                })?;
            }
            "--repeats" => repeats = Some(number(flag, value()?)?),
            "--quick" => out.quick = true,
            "--pin" => out.pin = true,
            "--no-node" => out.node = false,
            "--no-axum" => out.axum = false,
            "--no-nginx" => out.nginx = false,
            "--no-wrk" => out.wrk = false,
            "--no-startup" => out.startup = false,
            "--criterion" => return Err("--criterion must come first".into()),
            other => return Err(format!("unknown flag {other:?} (see --help)")),
        }
    }
    if out.quick {
        out.duration = Duration::from_secs(1);
        out.warmup = Duration::from_millis(250);
        out.repeats = 1;
    }
    out.warmup = warmup.unwrap_or(out.warmup);
    out.modes = modes.unwrap_or(out.modes);
    out.duration = duration.unwrap_or(out.duration);
    out.repeats = repeats.unwrap_or(out.repeats);
    if out.concurrency == 0 || out.concurrency > 4096 {
        return Err("--concurrency must be 1 to 4096".into());
    }
    if out.workers == 0 || out.workers > 256 {
        return Err("--workers must be 1 to 256".into());
    }
    if out.repeats == 0 || out.repeats > 100 {
        return Err("--repeats must be 1 to 100".into());
    }
    if out.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    Ok(Request::Run(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Args {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args) {
            Ok(Request::Run(a)) => a,
            _ => panic!("{args:?} should parse as a run"),
        }
    }

    #[test]
    fn flags_and_quick_defaults() {
        let a = run(&["--mode", "close", "--policies", "rr,shared", "--quick", "--repeats", "2"]);
        assert_eq!(a.modes, [Mode::Close]);
        assert_eq!(a.policies, ["rr", "none"]);
        assert_eq!((a.repeats, a.duration), (2, Duration::from_secs(1)));
        assert_eq!(a.warmup, Duration::from_millis(250));
        let a = run(&["--quick", "--warmup", "1", "--no-nginx", "--no-wrk", "--no-startup"]);
        assert_eq!(a.warmup, Duration::from_secs(1));
        assert!(!a.nginx && !a.wrk && !a.startup);
        let a = run(&[]);
        assert_eq!((a.repeats, a.duration, a.modes.len()), (3, Duration::from_secs(5), 2));
        assert!(parse(&["--policies".into(), "fifo".into()]).is_err());
        assert!(
            matches!(parse(&["--criterion".into(), "sched".into()]), Ok(Request::Criterion(f)) if f == ["sched"])
        );
    }
}
