"""Benchmark workloads: plain user code, traced as user code (bench/ is not a library)."""
