//! `cargo xtask`: the workspace's harness jobs, one subcommand each. Std only.
//!
//! `.cargo/config.toml` aliases `cargo xtask` to `cargo run --package xtask --`.

mod bench;
mod tasks;
#[cfg(test)]
mod tidy;

use std::process::ExitCode;

/// One subcommand: its name, a line of help, and what runs it.
struct Task {
    name: &'static str,
    help: &'static str,
    run: fn(&[String]) -> Result<(), String>,
    /// Not listed: run by xtask itself, not by people.
    hidden: bool,
}

const TASKS: &[Task] = &[
    Task {
        name: "test",
        help: "everything CI checks: fmt, clippy -D warnings, all tests (multi-process ones too), docs",
        run: tasks::test,
        hidden: false,
    },
    Task {
        name: "bench",
        help: "hello under each policy vs a Node.js cluster and a one-thread ceiling on loopback,
hello-axum (rr, reuseport) vs one axum process:
req/s, latency, fairness, CPU, RSS; a table, and JSON in <target>/herd-bench/
[--mode close,keepalive] [--concurrency N] [--duration S] [--warmup S] [--workers N]
[--policies none,rr,least-conn,reuseport] [--repeats N] [--quick] [--pin] [--no-node] [--no-axum]
--criterion [filter]: the criterion benches instead; --help: every flag",
        run: bench::main,
        hidden: false,
    },
    Task {
        name: "bench-load",
        help: "a second load generator process for `bench`",
        run: bench::load_main,
        hidden: true,
    },
];

fn usage() -> String {
    let mut text = String::from("usage: cargo xtask <subcommand> [args]\n\nsubcommands:\n");
    for task in TASKS.iter().filter(|t| !t.hidden) {
        // Continuation lines of the help line up under its first line.
        let help = task.help.replace('\n', &format!("\n{:11}", ""));
        text.push_str(&format!("  {:<8} {help}\n", task.name));
    }
    text
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    };
    if matches!(name.as_str(), "help" | "-h" | "--help") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let Some(task) = TASKS.iter().find(|t| t.name == name) else {
        eprint!("xtask: unknown subcommand {name:?}\n\n{}", usage());
        return ExitCode::from(2);
    };
    match (task.run)(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {}: {message}", task.name);
            ExitCode::FAILURE
        }
    }
}
