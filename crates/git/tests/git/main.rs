//! Integration tests of orchex-git against real repositories built with the
//! `git` CLI; results are checked with `git` itself.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, dead_code)]

mod fixture;

mod deliver;
mod diff;
mod errors;
mod history;
mod open;
mod workspace;
