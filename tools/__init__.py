"""Operator tools: the soimctl admin CLI, its commands and benchmarks, and build helpers."""
