//! Hot reload and partial updates of the running configuration.
//!
//! [`ConfigHandle`] owns the running configuration and publishes every new
//! valid one through a `tokio::sync::watch` channel. A reload that fails
//! validation keeps the running configuration and is reported as
//! [`ReloadOutcome::Rejected`], which the daemon turns into a
//! `config_rejected` event.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use orchex_core::Config;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use crate::error::ConfigError;
use crate::load::{Loader, read_overrides};

/// Keys whose change takes effect only after a restart.
const RESTART_KEYS: &[&str] = &["dashboard.bind", "dashboard.port", "storage.path"];

/// What happened when a new configuration was offered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The new configuration is valid and now running.
    Applied {
        /// Dotted paths of the keys whose value changed.
        changed: Vec<String>,
        /// Changed keys that only take effect after a restart.
        needs_restart: Vec<String>,
    },
    /// The file is valid and equal to the running configuration.
    Unchanged,
    /// The new configuration is invalid; the running one stays.
    Rejected {
        /// Every reason, as printed by `orchexd --check-config`.
        error: String,
    },
}

/// The running configuration, shared by every component of the daemon.
///
/// Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    loader: Loader,
    current: watch::Sender<Arc<Config>>,
    outcomes: broadcast::Sender<ReloadOutcome>,
    /// Serialises reloads and patches so that their file reads and writes
    /// never interleave.
    update_lock: Mutex<()>,
}

impl ConfigHandle {
    /// Wraps an already loaded configuration.
    pub fn new(loader: Loader, config: Config) -> Self {
        let (current, _) = watch::channel(Arc::new(config));
        let (outcomes, _) = broadcast::channel(64);
        Self {
            inner: Arc::new(Inner {
                loader,
                current,
                outcomes,
                update_lock: Mutex::new(()),
            }),
        }
    }

    /// The running configuration.
    pub fn current(&self) -> Arc<Config> {
        self.inner.current.borrow().clone()
    }

    /// A receiver that sees every configuration applied from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.inner.current.subscribe()
    }

    /// A receiver of every reload outcome (applied, unchanged, rejected).
    pub fn outcomes(&self) -> broadcast::Receiver<ReloadOutcome> {
        self.inner.outcomes.subscribe()
    }

    /// The loader, for its file paths.
    pub fn loader(&self) -> &Loader {
        &self.inner.loader
    }

    /// Re-reads the file (SIGHUP, `POST /api/config/reload`, file change),
    /// applies it when valid, and reports the outcome to subscribers too.
    pub fn reload(&self) -> ReloadOutcome {
        let _guard = self
            .inner
            .update_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let outcome = match self.inner.loader.load() {
            Ok(loaded) => self.apply(loaded.config),
            Err(err) => ReloadOutcome::Rejected {
                error: err.to_string(),
            },
        };
        let _ = self.inner.outcomes.send(outcome.clone());
        outcome
    }

    /// Applies a validated partial update (`PATCH /api/config`) and persists
    /// it in the overrides file beside the config.
    ///
    /// `update` is an object of camelCase keys, e.g.
    /// `{"optimizer": {"safety": {"rateLimitPerHour": 20}}}`. Tables merge
    /// key by key; any other value (lists included) replaces the old one.
    /// Nothing is written when the result would be invalid.
    pub fn patch(&self, update: &Value) -> Result<ReloadOutcome, ConfigError> {
        check_update(update)?;
        self.edit_overrides(|overrides, _| {
            deep_merge(overrides, update);
            Ok::<(), ConfigError>(())
        })
    }

    /// Edits the overrides file itself, under the update lock, so that two
    /// read-modify-write changes (two repositories added at once, say) each
    /// see the other's result and neither is lost. `edit` gets the
    /// overrides (a JSON object) and the running configuration, and may
    /// refuse with its own error.
    /// The result is validated before anything is written, as for
    /// [`ConfigHandle::patch`].
    pub fn edit_overrides<E: From<ConfigError>>(
        &self,
        edit: impl FnOnce(&mut Value, &Config) -> Result<(), E>,
    ) -> Result<ReloadOutcome, E> {
        let _guard = self
            .inner
            .update_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let overrides_path = self.inner.loader.overrides_path();
        let mut overrides = read_overrides(overrides_path)?;
        if !overrides.is_object() {
            overrides = Value::Object(serde_json::Map::new());
        }
        edit(&mut overrides, &self.current())?;
        let loaded = self.inner.loader.load_with_overrides(&overrides)?;
        write_atomically(overrides_path, &overrides)?;
        let outcome = self.apply(loaded.config);
        let _ = self.inner.outcomes.send(outcome.clone());
        Ok(outcome)
    }

    /// The configuration the files and the environment give without the
    /// overrides file (what the operator's file itself lists). Takes no
    /// lock, so it may be called from an [`ConfigHandle::edit_overrides`]
    /// edit.
    pub fn load_without_overrides(&self) -> Result<Config, ConfigError> {
        Ok(self
            .inner
            .loader
            .load_with_overrides(&Value::Object(serde_json::Map::new()))?
            .config)
    }

    fn apply(&self, config: Config) -> ReloadOutcome {
        let old = self.current();
        if *old == config {
            return ReloadOutcome::Unchanged;
        }
        let changed = changed_keys(&old, &config);
        let needs_restart = changed
            .iter()
            .filter(|key| RESTART_KEYS.iter().any(|r| key.starts_with(r)))
            .cloned()
            .collect();
        self.inner.current.send_replace(Arc::new(config));
        ReloadOutcome::Applied {
            changed,
            needs_restart,
        }
    }

    /// Watches the config file and its overrides file, reloading after
    /// `debounce` of quiet (editors write files in several steps).
    ///
    /// Must be called within a tokio runtime. The watch stops when the
    /// returned guard is dropped.
    pub fn watch_file(&self, debounce: Duration) -> Result<FileWatchGuard, ConfigError> {
        let config_path = self.inner.loader.path().to_path_buf();
        let dir = match config_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let names: Vec<_> = [
            config_path.file_name(),
            self.inner.loader.overrides_path().file_name(),
        ]
        .into_iter()
        .flatten()
        .map(ToOwned::to_owned)
        .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(event) => event.paths.iter().any(|path| {
                        path.file_name()
                            .is_some_and(|name| names.iter().any(|n| n == name))
                    }),
                    // Errors are surfaced by a reload attempt.
                    Err(_) => true,
                };
                if relevant {
                    let _ = tx.send(());
                }
            })
            .map_err(|source| ConfigError::Watch {
                path: dir.clone(),
                source,
            })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| ConfigError::Watch {
                path: dir.clone(),
                source,
            })?;
        let handle = self.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Settle: wait until no event arrived for `debounce`.
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(())) => {}
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let handle = handle.clone();
                let outcome = tokio::task::spawn_blocking(move || handle.reload()).await;
                match outcome {
                    Ok(ReloadOutcome::Rejected { error }) => {
                        tracing::warn!(%error, "config change rejected; keeping the running config");
                    }
                    Ok(ReloadOutcome::Applied { changed, .. }) => {
                        tracing::info!(?changed, "config reloaded");
                    }
                    Ok(_) => {}
                    Err(err) => tracing::error!(%err, "config reload task failed"),
                }
            }
        });
        Ok(FileWatchGuard {
            _watcher: watcher,
            task,
        })
    }
}

/// Keeps a config file watch alive; dropping it stops the watch.
#[derive(Debug)]
pub struct FileWatchGuard {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileWatchGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shape every update must have, whatever its keys.
fn check_update(update: &Value) -> Result<(), ConfigError> {
    let Value::Object(fields) = update else {
        return Err(ConfigError::BadUpdate(
            "the update must be a JSON object of configuration keys".to_owned(),
        ));
    };
    if fields.contains_key("version") {
        return Err(ConfigError::BadUpdate(
            "version cannot be changed by an update".to_owned(),
        ));
    }
    if let Some(path) = find_null(update, String::new()) {
        return Err(ConfigError::BadUpdate(format!(
            "{path}: null is not a value; write the default explicitly"
        )));
    }
    Ok(())
}

fn find_null(value: &Value, path: String) -> Option<String> {
    match value {
        Value::Null => Some(path),
        Value::Object(map) => map.iter().find_map(|(key, child)| {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            find_null(child, child_path)
        }),
        _ => None,
    }
}

/// Merges `update` into `base`: tables key by key, anything else replaces.
pub(crate) fn deep_merge(base: &mut Value, update: &Value) {
    match (base, update) {
        (Value::Object(base), Value::Object(update)) => {
            for (key, value) in update {
                match base.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        deep_merge(existing, value);
                    }
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, update) => *base = update.clone(),
    }
}

fn write_atomically(path: &Path, value: &Value) -> Result<(), ConfigError> {
    let text = toml::to_string(value).map_err(|err| ConfigError::BadUpdate(err.to_string()))?;
    let contents = format!(
        "# Written by orchex (PATCH /api/config, orchexctl config set).\n# These keys override {}.\n{text}",
        path.file_name().map_or_else(String::new, |n| n
            .to_string_lossy()
            .replace(".overrides", ""))
    );
    let tmp = path.with_extension("toml.tmp");
    let io = |action, source| ConfigError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    // Private (it sits beside a config that may hold tokens), flushed
    // before the rename and the rename flushed after, so that a crash or a
    // power cut leaves the old file or the new one, never an empty one.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", e));
    }
    std::fs::rename(&tmp, path).map_err(|e| io("replace", e))?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io("flush the directory of", e))?;
    }
    Ok(())
}

/// Dotted paths of the leaves that differ between two configurations.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["*".to_owned()];
    };
    let mut changed = Vec::new();
    diff(&old, &new, String::new(), &mut changed);
    changed
}

fn diff(old: &Value, new: &Value, path: String, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(x, y, child, out),
                    _ => out.push(child),
                }
            }
        }
        (a, b) if a != b => out.push(path),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_merge_merges_tables_and_replaces_lists() {
        let mut base = serde_json::json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        deep_merge(&mut base, &serde_json::json!({"a": {"b": 3}, "l": [9]}));
        assert_eq!(base, serde_json::json!({"a": {"b": 3, "c": 2}, "l": [9]}));
    }

    #[test]
    fn changed_keys_lists_leaves() {
        let old = Config::default();
        let mut new = old.clone();
        new.dashboard.port = 9999;
        new.optimizer.safety.rate_limit_per_hour = 3;
        assert_eq!(
            changed_keys(&old, &new),
            vec!["dashboard.port", "optimizer.safety.rateLimitPerHour"]
        );
    }
}
