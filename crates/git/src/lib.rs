//! Every git operation orchex performs, through `gix`.
//!
//! This crate will hold opening repositories, branch tips, history walks,
//! isolated checkouts, working-tree snapshots, writing a directory back as a
//! commit, compare-and-swap branch updates, diff summaries and rollback. No
//! `git` executable is needed at run time.
