//! `cargo xtask bench`: herd's `hello` under each policy, a Node.js cluster peer and a
//! single-threaded reference server, `hello-axum` beside a one-process axum server, driven by a built-in load generator on loopback; medians
//! over interleaved rounds, a markdown table, and the full results as JSON.
//!
//! `cargo xtask bench --criterion [args]` runs the criterion benches instead.

mod args;
mod histogram;
mod http;
mod json;
mod load;
mod machine;
mod nginx;
mod procstat;
mod remote;
mod report;
mod results;
mod run;
mod server;
mod startup;
mod stats;
mod wrk;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Instant, SystemTime};

use crate::tasks;
use args::{Args, Request};
use machine::Machine;
use report::Results;
use run::{Config, Env, Kind, Run};

/// `cargo xtask bench [flags]`.
pub(crate) fn main(argv: &[String]) -> Result<(), String> {
    match args::parse(argv)? {
        Request::Help => {
            print!("{}", args::HELP);
            Ok(())
        }
        Request::Criterion(extra) => tasks::criterion(&extra),
        Request::Run(args) => {
            if cfg!(debug_assertions) && std::env::var_os(OPTIMIZED).is_none() {
                reexec_optimized(argv)?;
            }
            bench(&args)
        }
    }
}

/// Set in the environment of the optimized xtask that a debug one hands over to.
const OPTIMIZED: &str = "HERD_BENCH_OPTIMIZED";

/// `cargo xtask` is a debug build, and a debug load generator would measure itself: build
/// xtask in release and become it (same arguments). Returns only if that fails, after saying so.
fn reexec_optimized(argv: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    tasks::step("build xtask (release), for an optimized load generator", {
        tasks::cargo(&["build", "--release", "-p", "xtask"])
    })?;
    let exe = target_dir().join("release").join("xtask");
    let err = Command::new(&exe).arg("bench").args(argv).env(OPTIMIZED, "1").exec();
    println!("note: cannot run {}: {err}; the load generator stays a debug build", exe.display());
    Ok(())
}

/// The hidden `cargo xtask bench-load`: a second load generator process.
pub(crate) fn load_main(argv: &[String]) -> Result<(), String> {
    remote::main(argv)
}

/// The workspace's target directory: `CARGO_TARGET_DIR` if set, else `<root>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir().map(|cwd| cwd.join(&dir)).unwrap_or(dir)
            }
        }
        _ => tasks::root().join("target"),
    }
}

/// Which optional rows this run has: the peers and generators found, less those turned off.
#[derive(Clone, Copy)]
struct Optional {
    node: bool,
    nginx: bool,
    wrk: bool,
}

/// The configurations of one round, in the order each round runs them.
fn configs(args: &Args, optional: Optional) -> Vec<Config> {
    let mut out = Vec::new();
    let has = |policy: &str| args.policies.iter().any(|p| p == policy);
    for &mode in &args.modes {
        let mut add = |kind: Kind, generators: u32, wrk: bool| {
            out.push(Config { mode, kind, generators, wrk });
        };
        add(Kind::Ceiling, 1, false);
        if !args.quick {
            add(Kind::Ceiling, 2, false);
        }
        for policy in &args.policies {
            add(Kind::Herd(policy.clone()), 1, false);
        }
        add(Kind::Bare, 1, false);
        for policy in ["none", "reuseport", "rr"].into_iter().filter(|p| has(p)) {
            add(Kind::Evloop(policy.into()), 1, false);
        }
        if optional.nginx {
            add(Kind::Nginx, 1, false);
        }
        if optional.node {
            add(Kind::Node("rr"), 1, false);
            add(Kind::Node("none"), 1, false);
        }
        if args.axum {
            for policy in ["rr", "reuseport"].into_iter().filter(|p| has(p)) {
                add(Kind::HerdAxum(policy.into()), 1, false);
            }
            add(Kind::AxumSingle, 1, false);
        }
        if optional.wrk && args.quick {
            // The smoke run checks that wrk runs and parses, once per mode.
            add(Kind::Bare, 1, true);
        } else if optional.wrk {
            // The same servers under the second generator: hello with and without herd, and
            // the event loops.
            if has("reuseport") {
                add(Kind::Herd("reuseport".into()), 1, true);
            }
            add(Kind::Bare, 1, true);
            if has("reuseport") {
                add(Kind::Evloop("reuseport".into()), 1, true);
            }
            if optional.nginx {
                add(Kind::Nginx, 1, true);
            }
        }
    }
    out
}

/// Pins this process (every thread, and the threads it will start) to `core`.
fn pin_self(core: usize) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("taskset failed ({status})")) }
}

fn bench(args: &Args) -> Result<(), String> {
    let started = (Instant::now(), SystemTime::now());
    let machine = Machine::probe();
    let mut notes = Vec::new();
    let mut note = |text: String| {
        println!("note: {text}");
        notes.push(text);
    };

    note(format!("load average (1, 5, 15 min) at start: {}", results::load_average()));
    let mut build = tasks::cargo(&["build", "--release", "-p", "herd"]);
    build.args(["--example", "hello", "--example", "ceiling", "--example", "evloop"]);
    if args.axum {
        // The feature changes nothing in hello, ceiling or evloop (they use no async code).
        build.args(["--example", "hello-axum", "--example", "axum-single", "--features", "axum"]);
    }
    tasks::step("build the examples (release)", build)?;
    let examples = target_dir().join("release").join("examples");

    let node = args.node && machine.node.is_some();
    if !args.node {
        note("--no-node: peer rows skipped".into());
    } else if let Some(version) = &machine.node {
        note(format!("peer: Node.js {version} (xtask/node/cluster.js)"));
    } else {
        note("node not found, peer rows skipped".into());
    }
    let nginx = args.nginx && machine.nginx.is_some();
    if !args.nginx {
        note("--no-nginx: nginx rows skipped".into());
    } else if let Some(version) = &machine.nginx {
        note(format!("peer: {version} (generated configuration, see xtask/src/bench/nginx.rs)"));
    } else {
        note("nginx not found, nginx rows skipped".into());
    }
    let wrk = args.wrk && machine.wrk.is_some();
    if !args.wrk {
        note("--no-wrk: wrk rows skipped".into());
    } else if let Some(version) = &machine.wrk {
        note(format!("second generator: {version}"));
    } else {
        note("wrk not found, rows under a second generator skipped".into());
    }
    let mut pin = None;
    if args.pin {
        if !machine.taskset {
            note("--pin: taskset not found on PATH, pinning unavailable; running unpinned".into());
        } else if machine.cores < 2 {
            note(format!(
                "--pin: needs 2 cores, this machine has {}; running unpinned",
                machine.cores
            ));
        } else {
            pin_self(0)?;
            pin = Some((1, 0));
            note("pinned: server processes on core 1, generator(s) on core 0".into());
        }
    }

    let env = Env {
        hello: examples.join("hello"),
        ceiling: examples.join("ceiling"),
        hello_axum: examples.join("hello-axum"),
        axum_single: examples.join("axum-single"),
        evloop: examples.join("evloop"),
        node_script: tasks::root().join("xtask").join("node").join("cluster.js"),
        workers: args.workers,
        concurrency: args.concurrency,
        warmup: args.warmup,
        duration: args.duration,
        pin,
    };
    let configs = configs(args, Optional { node, nginx, wrk });
    let per_run = (env.warmup + env.duration).as_secs_f64() + 0.5;
    println!(
        "==> {} configurations × {} rounds, {:.1} s each: about {:.0} s \
         ({} workers, concurrency {}, {}; {} cores: {})",
        configs.len(),
        args.repeats,
        per_run,
        per_run * (configs.len() * args.repeats) as f64,
        args.workers,
        args.concurrency,
        args.modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(" and "),
        machine.cores,
        machine.cpu,
    );

    let startups = if args.startup {
        let rounds = if args.quick { 1 } else { 5 };
        println!("==> start-up and idle memory: {} workers, {rounds} rounds", startup::WORKERS);
        startup::measure(&startup::kinds(node, nginx), &env, rounds)
    } else {
        Vec::new()
    };

    let mut runs: Vec<Run> = Vec::new();
    for round in 0..args.repeats {
        for (index, config) in configs.iter().enumerate() {
            let run = run::run(config, index, round, &env);
            print_progress(config, &run, round, args.repeats);
            runs.push(run);
        }
    }

    let results = Results { configs: &configs, runs: &runs };
    let summaries = results.summaries();
    let mut targets = results.targets();
    targets.extend(startup::targets(&startups));
    let document = results::Document {
        started: started.1,
        elapsed_s: started.0.elapsed().as_secs_f64(),
        args,
        pinned: pin.is_some(),
        machine: &machine,
        notes: &notes,
        results: &results,
        startups: &startups,
        targets: &targets,
    };
    let path = document.write(&target_dir().join("herd-bench"))?;

    println!("\n## Generator check (ceiling with two generator processes ÷ one, same round)\n");
    for check in results.generator_check() {
        println!("- {}", check.line(machine.cores));
    }
    let wrk_checks = results.wrk_check();
    if !wrk_checks.is_empty() {
        println!("\n## Second generator (wrk ÷ built-in, same server, same round)\n");
        for check in wrk_checks {
            println!("- {}", check.line());
        }
    }
    println!("\n## Targets (medians of per-round values, min–max in brackets)\n");
    print!("{}", report::targets_text(&targets));
    println!("\nload average (1, 5, 15 min) at end: {}", results::load_average());
    println!(
        "\nresults: {} (and latest.json); {:.0} s in all",
        path.display(),
        started.0.elapsed().as_secs_f64()
    );
    println!(
        "\n## Results ({} workers, concurrency {}, {:.1} s × {} rounds; {}, {} cores)\n",
        args.workers,
        args.concurrency,
        args.duration.as_secs_f64(),
        args.repeats,
        machine.cpu,
        machine.cores
    );
    print!("{}", report::table(&configs, &summaries));
    if !startups.is_empty() {
        println!("\n## Start-up and idle memory ({} workers)\n", startup::WORKERS);
        print!("{}", startup::table(&startups));
    }
    Ok(())
}

fn print_progress(config: &Config, run: &Run, round: usize, rounds: usize) {
    let head =
        format!("[{}/{}] {:<9} {:<15}", round + 1, rounds, config.mode.name(), config.label());
    if let Some(message) = &run.failed {
        println!("{head} FAILED: {message}");
        return;
    }
    let ms = |q| run.latency_us(q).map_or("–".into(), |us| format!("{:.2}", us / 1000.0));
    let error = run.outcome.first_error.as_ref().map_or(String::new(), |e| format!(" ({e})"));
    let per_worker: Vec<String> =
        run.outcome.per_worker.iter().map(|(id, n)| format!("{id}:{n}")).collect();
    println!(
        "{head} {:>9.0} req/s  p50 {} ms  p99 {} ms  jain {} [{}]  server {:.2} cores  \
         gen {:.2} cores  errors {}{error}",
        run.rps(),
        ms(0.5),
        ms(0.99),
        run.jain().map_or("–".into(), |j| format!("{j:.4}")),
        per_worker.join(" "),
        run.server_cores(),
        run.generator_cores(),
        run.outcome.errors,
    );
}
