"""Latency histograms per backend: what a canary verdict compares, window against window.

A mean (what `/metrics` had) hides a slow tail and cannot be tested; raw samples would grow without
bound. Fixed log-spaced buckets, about 12% wide from 0.25 ms to 60 s, keep a per-request cost of
one bisect and let two windows be compared by rank (Mann-Whitney on binned data, see
`deploy.verdict`) and by quantiles, on either side of a pool change.
"""

from __future__ import annotations

from bisect import bisect_left

# upper bounds in milliseconds; a last, open bucket holds everything slower than 60 s
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(
    round(0.25 * 1.12**i, 3) for i in range(110) if 0.25 * 1.12**i <= 60_000
)


def empty() -> list[int]:
    return [0] * (len(LATENCY_BOUNDS_MS) + 1)


def bucket(seconds: float) -> int:
    """The index of the bucket a request of ``seconds`` falls in."""
    return bisect_left(LATENCY_BOUNDS_MS, seconds * 1000.0)
