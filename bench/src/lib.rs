//! Benchmark support. The load harness is `bench/run.py`; the micro-benchmarks are in `benches/`;
//! `minimal-bff` is the "no policies" baseline the harness measures bff-mobile against.
