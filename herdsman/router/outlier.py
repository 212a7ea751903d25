"""Outlier ejection: a backend that fails several requests in a row leaves the rotation for a while.

Why: a hung instance (stopped, deadlocked, swapping) still accepts connections, so only its
silence gives it away, and every request sent to it waits the route's first-byte timeout before
it is retried elsewhere. Taking it out of rotation after a few failures in a row means only those
few requests pay, not one in N for as long as the agent takes to notice. This is HAProxy's
``observe layer7`` with ``on-error mark-down``, and Envoy's outlier detection
(``consecutive_gateway_failure``, ``base_ejection_time`` growing per ejection, ``max_ejection_time``):

- ``FAILURES_TO_EJECT`` (3) failures in a row eject a backend; a failure is a first-byte
  timeout, or a connection refused, reset or not made in time. Any response is a success;
- it stays out for ``BASE_COOLOFF`` (2 s), doubled for each ejection that follows its return,
  at most ``MAX_COOLOFF`` (60 s); then it is tried again, on probation: its first failure
  ejects it again at once, its first success ends the probation;
- a backend that stayed in rotation for ``MAX_COOLOFF`` since its last return starts again
  from ``BASE_COOLOFF``;
- the caller never ejects the last backend of a pool that is neither ejected nor draining
  (``may_eject``), so a pool never empties by ejection.

Pure bookkeeping (time is an argument), so it is property-tested (tests/unit/test_outlier.py);
`router/proxy.py` applies it to a pool.
"""

from __future__ import annotations

from dataclasses import dataclass

FAILURES_TO_EJECT = 3
BASE_COOLOFF = 2.0
MAX_COOLOFF = 60.0


@dataclass(slots=True)
class Outlier:
    """One backend's ejection state."""

    failures: int = 0  # in a row, since the last success or ejection
    ejected_until: float = 0.0  # 0.0: in rotation
    ejections: int = 0  # times taken out, in all
    level: int = 0  # the next cool-off is BASE_COOLOFF * 2**level (capped)
    probation: bool = False  # back from a cool-off, not yet answered a request
    back_at: float | None = None  # when it last came back

    @property
    def ejected(self) -> bool:
        return self.ejected_until != 0.0

    def cooloff(self) -> float:
        return min(MAX_COOLOFF, BASE_COOLOFF * 2.0 ** min(self.level, 32))

    def failed(self, now: float, may_eject: bool) -> bool:
        """A request failed on this backend; True when this takes it out of rotation."""
        if self.ejected:  # a request sent before the ejection, failing late: already counted for
            return False
        self.failures += 1
        if not may_eject or not (self.probation or self.failures >= FAILURES_TO_EJECT):
            return False
        if self.back_at is not None and now - self.back_at >= MAX_COOLOFF:
            self.level = 0  # long in rotation since its last ejection: a fresh start
        self.ejected_until = max(now + self.cooloff(), 1e-9)
        self.level += 1
        self.ejections += 1
        self.failures = 0
        self.probation = False
        return True

    def succeeded(self) -> None:
        self.failures = 0
        self.probation = False

    def comes_back(self, now: float) -> bool:
        """True when its cool-off is over as of ``now``: it is in rotation again, on probation."""
        if not self.ejected or now < self.ejected_until:
            return False
        self.ejected_until = 0.0
        self.probation = True
        self.back_at = now
        return True

    def remaining(self, now: float) -> float:
        """Seconds of cool-off left (0 in rotation)."""
        return max(0.0, self.ejected_until - now) if self.ejected else 0.0
