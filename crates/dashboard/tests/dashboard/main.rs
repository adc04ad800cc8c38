//! The dashboard crate end to end, in one test binary: a real stack
//! (git repository, SQLite, bus, monitor, orchestrator running real steps)
//! served on a loopback port and driven over HTTP, WebSockets and a real
//! headless browser.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod api;
mod browser;
mod support;
mod ws;
