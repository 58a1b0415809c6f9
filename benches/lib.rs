//! Criterion benchmarks of the herd workspace; the benchmarks are this package's bench targets
//! (`cargo xtask bench`). The library is empty: a package needs a target besides benches.
