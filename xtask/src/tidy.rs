//! Repository conventions, checked as ordinary tests so `cargo xtask test` enforces them.

use std::fs;

use crate::tasks::root;

/// Every crate directory has a heading in ARCHITECTURE.md: the one-page map must not go stale.
#[test]
fn architecture_names_every_crate() {
    let root = root();
    let architecture = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut missing = Vec::new();
    for entry in fs::read_dir(root.join("crates")).expect("crates/") {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !architecture.contains(&format!("### `{name}`")) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md has no `### `name`` heading for: {missing:?}");
}

/// CI runs exactly the README's test command.
#[test]
fn ci_runs_the_readme_test_command() {
    let root = root();
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let ci = fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    assert!(readme.contains("cargo xtask test"), "the README must give `cargo xtask test`");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo xtask test"),
        ".ci/run must run `cargo xtask test` on a line of its own"
    );
}

/// Nothing outside a `sys` module names `libc::` or opens an `unsafe` block, so every raw OS
/// call is in one reviewed place.
#[test]
fn libc_and_unsafe_only_in_sys_modules() {
    let mut offenders = Vec::new();
    let crates = root().join("crates");
    for krate in fs::read_dir(&crates).unwrap() {
        let krate = krate.unwrap().path();
        // Examples are code users copy: they follow the same rule.
        let mut check = |path: &std::path::Path, text: &str| {
            let in_sys = path.components().any(|c| c.as_os_str() == "sys");
            if !in_sys && (text.contains("libc::") || text.contains("unsafe {")) {
                offenders.push(path.display().to_string());
            }
        };
        visit(&krate.join("src"), &mut check);
        visit(&krate.join("examples"), &mut check);
    }
    assert!(offenders.is_empty(), "libc:: or unsafe outside a sys module: {offenders:?}");
}

fn visit(dir: &std::path::Path, f: &mut dyn FnMut(&std::path::Path, &str)) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &fs::read_to_string(&path).unwrap());
        }
    }
}
