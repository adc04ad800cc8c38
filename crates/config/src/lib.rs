//! Configuration loading for orchex.
