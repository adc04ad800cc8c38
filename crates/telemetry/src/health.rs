//! Health aggregation: components report `ok`, `degraded` or `unhealthy`
//! with a reason, or register a probe that is asked at snapshot time; the
//! snapshot is `orchex-core`'s [`HealthStatus`], worst component first.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use orchex_core::{ComponentHealth, HealthStatus};

type Probe = Arc<dyn Fn() -> ComponentHealth + Send + Sync>;

#[derive(Clone)]
enum Entry {
    Reported(ComponentHealth),
    Probe(Probe),
}

/// The daemon's health board. Cheap to clone (shared).
///
/// ```
/// use orchex_core::{ComponentHealth, HealthLevel};
/// use orchex_telemetry::HealthRegistry;
///
/// let health = HealthRegistry::new();
/// health.report("watcher", ComponentHealth::ok());
/// health.register_probe("store", || ComponentHealth::degraded("database or disk is full"));
/// let snapshot = health.snapshot();
/// assert_eq!(snapshot.status, HealthLevel::Degraded);
/// assert_eq!(snapshot.checks["store"].reason.as_deref(), Some("database or disk is full"));
/// ```
#[derive(Clone, Default)]
pub struct HealthRegistry {
    entries: Arc<RwLock<BTreeMap<String, Entry>>>,
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthRegistry")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl HealthRegistry {
    /// An empty registry (overall `ok`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `component`'s health (replacing a probe of the same name).
    pub fn report(&self, component: impl Into<String>, health: ComponentHealth) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(component.into(), Entry::Reported(health));
    }

    /// Asks `probe` for `component`'s health at every snapshot (for
    /// components that know their state, such as the store).
    pub fn register_probe(
        &self,
        component: impl Into<String>,
        probe: impl Fn() -> ComponentHealth + Send + Sync + 'static,
    ) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(component.into(), Entry::Probe(Arc::new(probe)));
    }

    /// Forgets a component.
    pub fn remove(&self, component: &str) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(component);
    }

    /// One component's current health.
    pub fn get(&self, component: &str) -> Option<ComponentHealth> {
        let entry = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(component)
            .cloned();
        entry.map(|entry| match entry {
            Entry::Reported(health) => health,
            Entry::Probe(probe) => probe(),
        })
    }

    /// A handle that reports for one component.
    pub fn reporter(&self, component: impl Into<String>) -> HealthReporter {
        HealthReporter {
            registry: self.clone(),
            component: component.into(),
        }
    }

    /// Every component's health and the aggregate (the worst of them).
    pub fn snapshot(&self) -> HealthStatus {
        // Probes run outside the lock: a probe may take its own locks.
        let entries: Vec<(String, Entry)> = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect();
        let mut status = HealthStatus::default();
        for (name, entry) in entries {
            let health = match entry {
                Entry::Reported(health) => health,
                Entry::Probe(probe) => probe(),
            };
            status.report(name, health);
        }
        status
    }
}

/// Reports the health of one named component. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    registry: HealthRegistry,
    component: String,
}

impl HealthReporter {
    /// The component's name.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Reports `health`.
    pub fn report(&self, health: ComponentHealth) {
        self.registry.report(self.component.clone(), health);
    }

    /// Reports `ok`.
    pub fn ok(&self) {
        self.report(ComponentHealth::ok());
    }

    /// Reports `degraded` with `reason`.
    pub fn degraded(&self, reason: impl Into<String>) {
        self.report(ComponentHealth::degraded(reason));
    }

    /// Reports `unhealthy` with `reason`.
    pub fn unhealthy(&self, reason: impl Into<String>) {
        self.report(ComponentHealth::unhealthy(reason));
    }

    /// The component's current health.
    pub fn current(&self) -> Option<ComponentHealth> {
        self.registry.get(&self.component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchex_core::HealthLevel;

    #[test]
    fn the_worst_component_decides_and_reports_replace() {
        let health = HealthRegistry::new();
        assert_eq!(health.snapshot().status, HealthLevel::Ok);
        let store = health.reporter("store");
        store.degraded("disk full");
        health.report("watcher", ComponentHealth::unhealthy("inotify limit"));
        assert_eq!(health.snapshot().status, HealthLevel::Unhealthy);
        health.report("watcher", ComponentHealth::ok());
        assert_eq!(health.snapshot().status, HealthLevel::Degraded);
        store.ok();
        assert_eq!(health.snapshot().status, HealthLevel::Ok);
        health.remove("store");
        assert_eq!(health.snapshot().checks.len(), 1);
        assert_eq!(store.current(), None);
    }

    #[test]
    fn probes_are_asked_at_each_snapshot() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let full = Arc::new(AtomicBool::new(false));
        let health = HealthRegistry::new();
        let probe_full = Arc::clone(&full);
        health.register_probe("store", move || {
            if probe_full.load(Ordering::Relaxed) {
                ComponentHealth::degraded("full")
            } else {
                ComponentHealth::ok()
            }
        });
        assert_eq!(health.snapshot().status, HealthLevel::Ok);
        full.store(true, Ordering::Relaxed);
        assert_eq!(health.snapshot().status, HealthLevel::Degraded);
        assert_eq!(health.get("store").unwrap().status, HealthLevel::Degraded);
    }
}
