//! The Prometheus recorder: installed once per process, rendered on demand
//! (the dashboard serves [`MetricsHandle::render`] at `/metrics`), kept
//! small by a periodic upkeep, with process metrics refreshed before each
//! render.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::TelemetryError;
use crate::metrics::{
    ANALYSIS_DURATION_BUCKETS, CYCLE_DURATION_BUCKETS, DEFAULT_DURATION_BUCKETS,
    JOB_DURATION_BUCKETS, describe_all, initialise_unlabelled, names,
};

/// How often [`MetricsHandle::spawn_upkeep`] runs the exporter's upkeep by
/// default.
pub const DEFAULT_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed recorder. Cheap to clone.
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
}

impl fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsHandle").finish_non_exhaustive()
    }
}

static INSTALLED: Mutex<Option<MetricsHandle>> = Mutex::new(None);

fn buckets(
    builder: PrometheusBuilder,
    metric: &'static str,
    matcher: Matcher,
    values: &[f64],
) -> Result<PrometheusBuilder, TelemetryError> {
    builder
        .set_buckets_for_metric(matcher, values)
        .map_err(|source| TelemetryError::Buckets { metric, source })
}

/// Installs the Prometheus recorder as the process's `metrics` recorder,
/// describes every orchex metric and the process metrics, and returns its
/// handle. Calling it again returns the same handle.
///
/// Install it before creating the [`TelemetryBus`](crate::TelemetryBus):
/// the bus registers its counters when it is created.
///
/// Fails with [`TelemetryError::RecorderAlreadyInstalled`] when another
/// recorder was installed first.
pub fn install_prometheus() -> Result<MetricsHandle, TelemetryError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = &*installed {
        return Ok(handle.clone());
    }
    let mut builder = PrometheusBuilder::new();
    builder = buckets(
        builder,
        names::JOB_DURATION_SECONDS,
        Matcher::Full(names::JOB_DURATION_SECONDS.into()),
        JOB_DURATION_BUCKETS,
    )?;
    builder = buckets(
        builder,
        names::CYCLE_DURATION_SECONDS,
        Matcher::Full(names::CYCLE_DURATION_SECONDS.into()),
        CYCLE_DURATION_BUCKETS,
    )?;
    builder = buckets(
        builder,
        names::ANALYSIS_DURATION_SECONDS,
        Matcher::Full(names::ANALYSIS_DURATION_SECONDS.into()),
        ANALYSIS_DURATION_BUCKETS,
    )?;
    builder = buckets(
        builder,
        "*_duration_seconds",
        Matcher::Suffix("_duration_seconds".into()),
        DEFAULT_DURATION_BUCKETS,
    )?;
    let recorder = builder.build_recorder();
    let prometheus = recorder.handle();
    ::metrics::set_global_recorder(recorder)
        .map_err(|_| TelemetryError::RecorderAlreadyInstalled)?;
    describe_all();
    initialise_unlabelled();
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    let handle = MetricsHandle {
        prometheus,
        process: Arc::new(process),
    };
    *installed = Some(handle.clone());
    Ok(handle)
}

impl MetricsHandle {
    /// The Prometheus text exposition (format 0.0.4) of every metric, with
    /// the process metrics refreshed first.
    pub fn render(&self) -> String {
        self.process.collect();
        self.prometheus.render()
    }

    /// The content type of [`MetricsHandle::render`]'s output.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// Drains histogram samples into their buckets. Without it the exporter's
    /// memory grows between renders; [`MetricsHandle::spawn_upkeep`] calls it
    /// on a timer.
    pub fn run_upkeep(&self) {
        self.prometheus.run_upkeep();
    }

    /// Runs [`MetricsHandle::run_upkeep`] every `interval` until the returned
    /// task is aborted. Needs a tokio runtime.
    pub fn spawn_upkeep(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                handle.run_upkeep();
            }
        })
    }
}
