//! placeholder until the resilience primitives land
