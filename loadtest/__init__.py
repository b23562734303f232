"""Load testing (Locust, `make loadtest`) and the benchmark (`make bench`); see BENCHMARKS.md."""
