//! Metric handles behind the `metrics` feature.
//!
//! Handles are registered once, when a primitive is built with a name, and
//! kept; the hot path only calls `increment`/`set` on a handle it already
//! holds, which never allocates. Without the feature, or without a name,
//! the primitives hold no handles at all. The names are listed in the crate
//! documentation (`orchex_circuit_breaker_state`, ...).

#[cfg(feature = "metrics")]
mod enabled {
    /// A counter handle.
    #[derive(Clone)]
    pub(crate) struct Counter(metrics::Counter);

    impl Counter {
        pub(crate) fn new(name: &'static str, labels: &[(&'static str, String)]) -> Self {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            Self(metrics::counter!(name, labels))
        }

        #[inline]
        pub(crate) fn increment(&self, by: u64) {
            self.0.increment(by);
        }
    }

    /// A gauge handle.
    #[derive(Clone)]
    pub(crate) struct Gauge(metrics::Gauge);

    impl Gauge {
        pub(crate) fn new(name: &'static str, labels: &[(&'static str, String)]) -> Self {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            Self(metrics::gauge!(name, labels))
        }

        #[inline]
        pub(crate) fn set(&self, value: f64) {
            self.0.set(value);
        }

        #[inline]
        pub(crate) fn increment(&self, by: f64) {
            self.0.increment(by);
        }

        #[inline]
        pub(crate) fn decrement(&self, by: f64) {
            self.0.decrement(by);
        }
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::unused_self)] // same signatures as the real handles
mod enabled {
    /// A counter handle (metrics disabled: does nothing).
    #[derive(Clone)]
    pub(crate) struct Counter;

    impl Counter {
        pub(crate) fn new(_name: &'static str, _labels: &[(&'static str, String)]) -> Self {
            Self
        }

        #[inline]
        pub(crate) fn increment(&self, _by: u64) {}
    }

    /// A gauge handle (metrics disabled: does nothing).
    #[derive(Clone)]
    pub(crate) struct Gauge;

    impl Gauge {
        pub(crate) fn new(_name: &'static str, _labels: &[(&'static str, String)]) -> Self {
            Self
        }

        #[inline]
        pub(crate) fn set(&self, _value: f64) {}

        #[inline]
        pub(crate) fn increment(&self, _by: f64) {}

        #[inline]
        pub(crate) fn decrement(&self, _by: f64) {}
    }
}

pub(crate) use enabled::{Counter, Gauge};

/// Whether metric handles are worth creating for a primitive with this name.
#[inline]
pub(crate) fn wanted(name: Option<&str>) -> bool {
    cfg!(feature = "metrics") && name.is_some()
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counter")
    }
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gauge")
    }
}
