//! Benchmarks for registry-redirect live in `benches/`.
