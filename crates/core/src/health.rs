//! Health: components report ok, degraded or unhealthy, with a reason.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How well a component, or the whole daemon, is doing. Ordered from best to
/// worst so that the aggregate is the maximum.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum HealthLevel {
    /// Working as intended.
    #[default]
    Ok,
    /// Working, with reduced guarantees (e.g. the store cannot write).
    Degraded,
    /// Not doing its job.
    Unhealthy,
}

impl fmt::Display for HealthLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthLevel::Ok => "ok",
            HealthLevel::Degraded => "degraded",
            HealthLevel::Unhealthy => "unhealthy",
        })
    }
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ComponentHealth {
    /// The component's level.
    pub status: HealthLevel,
    /// Why it is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ComponentHealth {
    /// A healthy component.
    pub const fn ok() -> Self {
        Self {
            status: HealthLevel::Ok,
            reason: None,
        }
    }

    /// A degraded component, with the reason.
    pub fn degraded(reason: impl Into<String>) -> Self {
        Self {
            status: HealthLevel::Degraded,
            reason: Some(reason.into()),
        }
    }

    /// An unhealthy component, with the reason.
    pub fn unhealthy(reason: impl Into<String>) -> Self {
        Self {
            status: HealthLevel::Unhealthy,
            reason: Some(reason.into()),
        }
    }
}

/// The daemon's health: the worst component decides the overall status.
///
/// ```
/// use orchex_core::{ComponentHealth, HealthLevel, HealthStatus};
/// let mut health = HealthStatus::default();
/// health.report("store", ComponentHealth::degraded("disk full"));
/// health.report("watcher", ComponentHealth::ok());
/// assert_eq!(health.status, HealthLevel::Degraded);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// The aggregate level.
    pub status: HealthLevel,
    /// Each component's health, by name.
    pub checks: BTreeMap<String, ComponentHealth>,
}

impl HealthStatus {
    /// Records a component's health and recomputes the aggregate.
    pub fn report(&mut self, component: impl Into<String>, health: ComponentHealth) {
        self.checks.insert(component.into(), health);
        self.status = self
            .checks
            .values()
            .map(|check| check.status)
            .max()
            .unwrap_or_default();
    }
}
