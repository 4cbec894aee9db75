"""Benchmarks: the native preprocessing engine against its floor and the libraries it replaces
(:mod:`ibnedge.bench.preprocess`). Speed claims are ratios measured in one run on the same
files (per-image medians), never timed unit tests."""
from __future__ import annotations
