//! Where the binaries under test come from.
//!
//! `env!("CARGO_BIN_EXE_<name>")` exists only in the tests of the package
//! that owns the binary, and artifact dependencies are unstable, so this
//! crate asks cargo instead: the first test of a process that needs, say,
//! `confab` runs
//!
//! ```text
//! cargo build -p confab-cli --bin confab --message-format=json-render-diagnostics
//! ```
//!
//! with the profile of the running test executable, and takes the path from
//! cargo's own `compiler-artifact` message (so a custom target dir or
//! `--target` triple needs no guessing). When the binary is fresh this is a
//! no-op check well under a second; when it is missing or stale (plain
//! `cargo test -p confab-tests` builds no bins of other packages, and
//! `cargo test --workspace` builds confab-cli only as a unit-test harness)
//! cargo builds it. Tests of one process wait on the same mutex, so one
//! build runs at a time; separate processes serialise on cargo's own
//! build-directory lock, which `cargo test` does not hold while tests run.
//!
//! A binary behind a cargo feature (`confab-server-fault`, which needs
//! confab-server's `fault-hooks`) is built the same way with `--features`;
//! the feature changes the library's fingerprint, so the normal
//! `confab-server` stays fresh next to it.
//!
//! An example of a library (the bot SDK's `announcer`, a bot the tests run
//! as a process of its own) is built the same way with `--example`.
//!
//! An override variable (`CONFAB_BIN`, `CONFAB_SERVER_BIN`,
//! `CONFAB_SERVER_FAULT_BIN`, `CONFAB_ANNOUNCER_BIN`) pointing at a built
//! binary skips the build (for testing a release build elsewhere).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The `confab` client binary (package confab-cli); `CONFAB_BIN` overrides.
pub fn confab() -> PathBuf {
    workspace_binary("confab-cli", "confab", "CONFAB_BIN")
}

/// The `confab-server` binary; `CONFAB_SERVER_BIN` overrides.
pub fn confab_server() -> PathBuf {
    workspace_binary("confab-server", "confab-server", "CONFAB_SERVER_BIN")
}

/// `confab-server-fault`: confab-server built with its `fault-hooks` feature,
/// which obeys fault variables such as `CONFAB_FAULT_ABORT_AFTER_COMMIT`;
/// `CONFAB_SERVER_FAULT_BIN` overrides.
pub fn confab_server_fault() -> PathBuf {
    workspace_binary_with_features(
        "confab-server",
        "confab-server-fault",
        &["fault-hooks"],
        "CONFAB_SERVER_FAULT_BIN",
    )
}

/// The bot SDK's `announcer` example: a bot that sends its stdin lines with
/// an outbox file; `CONFAB_ANNOUNCER_BIN` overrides.
pub fn announcer() -> PathBuf {
    artifact(
        "confab-bot-sdk",
        Target::Example("announcer"),
        &[],
        "CONFAB_ANNOUNCER_BIN",
    )
}

/// The path of a fresh `bin` of workspace `package`, built on first use, or
/// the file named by the `override_var` environment variable.
pub fn workspace_binary(package: &str, bin: &str, override_var: &str) -> PathBuf {
    workspace_binary_with_features(package, bin, &[], override_var)
}

/// Like [`workspace_binary`], for a `bin` that needs cargo `features` of
/// `package` (its `required-features`).
pub fn workspace_binary_with_features(
    package: &str,
    bin: &str,
    features: &[&str],
    override_var: &str,
) -> PathBuf {
    artifact(package, Target::Bin(bin), features, override_var)
}

/// An executable target of a package: `--bin NAME` or `--example NAME`.
#[derive(Clone, Copy)]
enum Target<'a> {
    Bin(&'a str),
    Example(&'a str),
}

impl Target<'_> {
    fn name(&self) -> &str {
        match self {
            Target::Bin(name) | Target::Example(name) => name,
        }
    }

    /// The cargo flag that selects it.
    fn flag(&self) -> &'static str {
        match self {
            Target::Bin(_) => "--bin",
            Target::Example(_) => "--example",
        }
    }
}

/// The path of a fresh `target` of `package`, built on first use, or the
/// file named by the `override_var` environment variable.
fn artifact(package: &str, target: Target<'_>, features: &[&str], override_var: &str) -> PathBuf {
    let bin = target.name();
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held across the build: a second test wanting the same binary waits
    // for it instead of starting a second cargo. A test that panicked while
    // holding it left no entry behind, so the poison carries no bad state.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(bin) {
        return path.clone();
    }
    let path = match std::env::var_os(override_var) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{override_var}={} is not a file: point it at a built {bin} binary or unset it",
                path.display()
            );
            path
        }
        None => build(package, target, features),
    };
    built.insert(bin.to_owned(), path.clone());
    path
}

/// Runs `cargo build` for the binary and returns the path cargo reports.
fn build(package: &str, target: Target<'_>, features: &[&str]) -> PathBuf {
    let (bin, flag) = (target.name(), target.flag());
    // The cargo running these tests sets CARGO; the one that compiled them
    // is the next best; a plain `cargo` on PATH is the last resort.
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let mut command = Command::new(&cargo);
    // `cargo test` describes the running package (confab-tests) in the
    // environment of its test processes. Build scripts of dependencies
    // track some of those variables (ring reruns on CARGO_MANIFEST_DIR), so
    // inheriting them would rebuild half the tree here and again in the
    // next outer build. Everything else (CARGO_TARGET_DIR, RUSTFLAGS,
    // CARGO_HOME, ...) is the user's configuration and is kept.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(describes_running_package) {
            command.env_remove(&name);
        }
    }
    command.args(["build", "-p", package, flag, bin]);
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let output = command
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--profile")
        .arg(profile())
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", Path::new(&cargo).display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`cargo build -p {package} {flag} {bin}{}` failed; fix the build or set the override variable:\n{stderr}",
        features_flag(features)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == bin)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built {bin} but reported no executable:\n{stderr}"));
    assert!(
        path.is_file(),
        "cargo reported {} but it is not a file",
        path.display()
    );
    path
}

/// ` --features a,b` for a message, or nothing.
fn features_flag(features: &[&str]) -> String {
    if features.is_empty() {
        String::new()
    } else {
        format!(" --features {}", features.join(","))
    }
}

/// Whether `name` is one of the variables cargo sets to describe the
/// package of the running test, not the user's configuration.
fn describes_running_package(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// The cargo profile this test executable was built with, read from where
/// it lives (`<target>/[<triple>/]<profile dir>/deps/<test>-<hash>`), so the
/// binary shares the already built dependencies instead of rebuilding them.
fn profile() -> String {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent() // deps
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str());
    match dir {
        // "debug" is the directory of both the dev and the test profile.
        Some("debug") | None => "dev".to_owned(),
        Some(name) => name.to_owned(),
    }
}
