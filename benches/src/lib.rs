//! Shared helpers for the orchex benchmarks and harnesses.
//!
//! The benchmarks themselves live in `benches/benches/*.rs` (criterion, run
//! with `cargo bench -p orchex-benches` or `just bench`). Each one measures an
//! orchex hot path next to the crate a user would otherwise pick, in the same
//! run, so that `docs/performance.md` can report ratios rather than absolute
//! timings from a noisy machine.
