//! `cargo xtask`: the workspace's harness jobs, one subcommand each. Std only.
//!
//! `.cargo/config.toml` aliases `cargo xtask` to `cargo run --package xtask --`.

mod tasks;
#[cfg(test)]
mod tidy;

use std::process::ExitCode;

/// One subcommand: its name, a line of help, and what runs it.
struct Task {
    name: &'static str,
    help: &'static str,
    run: fn(&[String]) -> Result<(), String>,
}

const TASKS: &[Task] = &[
    Task {
        name: "test",
        help: "everything CI checks: fmt, clippy -D warnings, all tests (multi-process ones too), docs",
        run: tasks::test,
    },
    Task {
        name: "bench",
        help: "the criterion benchmarks (extra arguments go to criterion, e.g. a name filter)",
        run: tasks::bench,
    },
];

fn usage() -> String {
    let mut text = String::from("usage: cargo xtask <subcommand> [args]\n\nsubcommands:\n");
    for task in TASKS {
        text.push_str(&format!("  {:<8} {}\n", task.name, task.help));
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
