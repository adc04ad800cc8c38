//! The telemetry crate's error type.

/// What can go wrong while setting telemetry up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A metrics recorder that is not ours is already installed in this
    /// process (`metrics::set_global_recorder` refuses a second one).
    #[error("another metrics recorder is already installed in this process")]
    RecorderAlreadyInstalled,
    /// The Prometheus exporter refused a histogram bucket configuration.
    #[error("invalid histogram buckets for {metric}: {source}")]
    Buckets {
        /// The metric (or metric suffix) the buckets were for.
        metric: &'static str,
        /// The exporter's complaint.
        source: metrics_exporter_prometheus::BuildError,
    },
}
