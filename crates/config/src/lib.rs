//! Configuration for orchex: loading, validation, migration, defaults,
//! overrides and hot reload (PRODUCT.md §7, every key in `docs/config.md`).
//!
//! A configuration is read from a TOML or JSON file, migrated from older
//! format versions, layered with the overrides file written by
//! `PATCH /api/config` and with `ORCHEX_<SECTION>__<KEY>` environment
//! variables (through figment), then checked: unknown keys are rejected with
//! a suggestion, types and cross-field rules are validated, and every problem
//! is reported at once with its key path.
//!
//! This crate knows nothing about the daemon's components: it produces an
//! `orchex_core::Config` and publishes new ones through
//! [`ConfigHandle::subscribe`]; applying them is the consumers' job.
//!
//! # Example
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("orchex.toml");
//! std::fs::write(&path, "[optimizer.safety]\nrateLimitPerHour = 0\n[dashbord]\n")?;
//! let err = orchex_config::Loader::new(&path).without_env().load().unwrap_err();
//! let text = err.to_string();
//! assert!(text.contains("optimizer.safety.rateLimitPerHour: must be at least 1, got 0"));
//! assert!(text.contains("dashbord: unknown key, did you mean `dashboard`?"));
//! # Ok(()) }
//! ```

mod error;
mod load;
mod reload;
mod schema;
mod validate;

pub use error::{ConfigError, Issue, Issues};
pub use load::{ENV_PREFIX, Loaded, Loader, REMOVED_REPOSITORIES, overrides_path};
pub use reload::{ConfigHandle, FileWatchGuard, ReloadOutcome};

/// The commented default configuration, as written by `orchexd` when no
/// config exists and by `orchexctl config init`. It is identical to the
/// shipped `config/orchex.toml`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Writes [`DEFAULT_TOML`] to `path`, creating parent directories. Refuses to
/// replace an existing file unless `overwrite` is set.
pub fn write_default(path: &std::path::Path, overwrite: bool) -> Result<(), ConfigError> {
    let io = |action, source| ConfigError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| io("create", e))?;
    std::io::Write::write_all(&mut file, DEFAULT_TOML.as_bytes()).map_err(|e| io("write", e))
}
