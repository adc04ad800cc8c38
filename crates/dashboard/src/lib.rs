//! The operator surface of orchex: the axum REST API, the WebSocket live
//! stream, the embedded web dashboard, authentication and the OpenAPI
//! description.
//!
//! It talks to the orchestrator through the control handle that crate
//! exposes and to live events through the telemetry bus.
