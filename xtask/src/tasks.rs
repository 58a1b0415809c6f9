//! The subcommands' bodies.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The workspace root: xtask lives one level below it.
pub(crate) fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("xtask sits inside the workspace").to_path_buf()
}

/// A `cargo` command run from the workspace root, through `$CARGO` so the same toolchain runs.
pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(root());
    cmd
}

/// Runs one step, printing what it is and how long it took; fails with its exit status.
pub(crate) fn step(title: &str, mut cmd: Command) -> Result<(), String> {
    println!("==> {title}");
    let started = Instant::now();
    let status = cmd.status().map_err(|e| format!("{title}: cannot start: {e}"))?;
    println!("<== {title}: {} in {:.1}s", status, started.elapsed().as_secs_f64());
    if status.success() { Ok(()) } else { Err(format!("{title} failed ({status})")) }
}

/// `cargo xtask test`: what CI runs, and what a developer runs before pushing.
pub(crate) fn test(args: &[String]) -> Result<(), String> {
    if let Some(extra) = args.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    step("rustfmt", cargo(&["fmt", "--all", "--", "--check"]))?;
    // Every cargo feature is built, linted and tested: an optional layer that no CI step
    // compiles would rot unseen.
    let clippy =
        ["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"];
    step("clippy", cargo(&clippy))?;
    // --all-targets builds and runs unit tests, integration tests (with their fixture
    // binaries), examples, and each criterion bench once in test mode, so benches keep compiling.
    step("tests", cargo(&["test", "--workspace", "--all-targets", "--all-features"]))?;
    step("doctests", cargo(&["test", "--workspace", "--doc", "--all-features"]))?;
    let mut doc = cargo(&["doc", "--workspace", "--no-deps", "--all-features"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    step("rustdoc", doc)?;
    println!("xtask test: all green");
    Ok(())
}

/// `cargo xtask bench --criterion [args]`: the criterion benchmarks, release build.
pub(crate) fn criterion(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo(&["bench", "--package", "herd-benches", "--"]);
    cmd.args(args);
    step("criterion benches", cmd)
}
