//! Helpers for the end-to-end tests in `tests/tests/`, which run the real
//! `orchexd` and `orchexctl` executables as child processes.
//!
//! Cargo only builds a package's executables for that package's own
//! integration tests, so [`binary`] builds the two binaries of the workspace
//! once per test process (`cargo build --bin orchexd --bin orchexctl`, in the
//! same target directory and profile), then returns their paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The target directory this test binary was built into.
fn target_profile_dir() -> PathBuf {
    // <target>/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map_or_else(|| workspace_root().join("target/debug"), Path::to_path_buf)
}

fn build_binaries() -> Result<PathBuf, String> {
    let profile_dir = target_profile_dir();
    let target_dir = profile_dir
        .parent()
        .ok_or("the test binary is not inside a target directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("cannot tell the build profile")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--bin", "orchexd", "--bin", "orchexctl"])
        .arg("--target-dir")
        .arg(target_dir);
    if profile != "debug" {
        command.args(["--profile", profile]);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build of the binaries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(profile_dir)
}

/// The path of a workspace executable (`orchexd` or `orchexctl`), built on
/// first use.
///
/// # Panics
///
/// When the binaries cannot be built; the test cannot run without them.
pub fn binary(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(build_binaries) {
        Ok(dir) => dir.join(name),
        Err(message) => panic!("{message}"),
    }
}

/// A command for a workspace executable, with `ORCHEX_*` variables of the
/// calling environment removed so that tests are not influenced by them.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORCHEX_") {
            command.env_remove(key);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

/// Runs `command` and returns its output; panics if it cannot be started.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

/// The captured stdout as a string.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The captured stderr as a string.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
