//! Shared helpers for Duraclaw's benchmarks.
