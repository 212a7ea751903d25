"""How many instances may be starting at once during a burst: adaptive, and pure.

A burst (`herd scale web=1000`, the autoscaler reaching its max) must not fork a thousand
processes at once: the host would stop answering, health checks would time out, and the burst
would take longer than a paced one. So starts go through a window of ``limit`` slots, a slot being
held from an instance's launch until its admission (health-checked) or failure. The window moves
as TCP's congestion window does:

- slow start: each admission that shows no congestion widens it by one (it doubles per round);
- after the first sign of congestion, additive increase: by 1/limit per admission (one per round);
- on congestion it is halved (multiplicative decrease), never below ``floor``, and only once per
  round: admissions of instances launched before the last cut say nothing new.

Congestion is either signal: an admission much slower than the fastest seen (``slower`` times:
starts queue for the CPU), or the host's run queue per core (``/proc/loadavg``'s runnable count,
smoothed) climbing more than ``busy_margin`` above where it was when the burst began (a machine
already busy with other work is not held against the burst, only what the burst adds). A failed
start counts as congestion too. The effectful side (reading the run queue, timing admissions)
lives in `deploy/burst.py`; here are only the rules, unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

QUICK = 0.05  # seconds: an admission faster than this is never "slow", however fast the best was


def in_proportion(pause: float, count: int, size: int) -> float:
    """``pause`` up to ``size`` things, longer in proportion past it: the pause between two acts
    that each cost O(count) (a whole pool set, a router's counters read)."""
    return pause * max(1.0, count / size)


@dataclass
class Pace:
    floor: int = 2
    ceiling: int = 64
    limit: float = 4.0
    slower: float = 4.0  # an admission this many times slower than the fastest is congestion
    busy_margin: float = 2.0  # runnable tasks per core above the burst's starting point
    smoothing: float = 0.3  # weight of a new run-queue sample in its moving average
    growing: bool = True  # slow start, until the first congestion
    best: float | None = None  # the fastest admission seen, seconds
    runnable: float | None = None  # smoothed runnable tasks per core
    baseline: float | None = None  # runnable per core when the burst began
    launched: int = 0  # tickets handed out
    cut_at: int = 0  # tickets below this were launched before the last cut
    cuts: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # cuts by cause: slow, busy, failed
    history: list[int] = field(default_factory=list)  # the slot count after each change, for reports

    def __post_init__(self) -> None:
        self.limit = float(min(self.ceiling, max(self.floor, self.limit)))

    @property
    def slots(self) -> int:
        """How many instances may be starting (launched, not yet admitted) now."""
        return max(self.floor, min(self.ceiling, int(self.limit)))

    def begin(self, runnable_per_core: float) -> None:
        """The run queue before the burst's first start: what the burst is measured against."""
        self.baseline = self.runnable = runnable_per_core

    def launch(self) -> int:
        """A start begins; its ticket goes back with its outcome."""
        ticket = self.launched
        self.launched += 1
        return ticket

    def admitted(self, ticket: int, seconds: float, runnable_per_core: float) -> bool:
        """An instance passed its health check ``seconds`` after its launch, with the run queue at
        ``runnable_per_core``. Returns whether this was taken as congestion."""
        self._sample(runnable_per_core)
        self.best = seconds if self.best is None else min(self.best, seconds)
        cause = self.congestion(seconds)
        if cause:
            return self._cut(ticket, cause)
        self.limit = min(float(self.ceiling), self.limit + (1.0 if self.growing else 1.0 / self.limit))
        self._note()
        return False

    def failed(self, ticket: int) -> bool:
        """An instance failed to start or to become healthy: back off as for congestion."""
        return self._cut(ticket, "failed")

    def congested(self, seconds: float) -> bool:
        return bool(self.congestion(seconds))

    def congestion(self, seconds: float) -> str:
        """Which sign of congestion an admission after ``seconds`` shows: "slow", "busy" or ""."""
        if self.best is not None and seconds > self.slower * max(self.best, QUICK):
            return "slow"
        base = self.baseline if self.baseline is not None else 0.0
        if self.runnable is not None and self.runnable > base + self.busy_margin:
            return "busy"
        return ""

    def _sample(self, runnable_per_core: float) -> None:
        if self.runnable is None:
            self.runnable = runnable_per_core
        else:
            self.runnable += self.smoothing * (runnable_per_core - self.runnable)
        if self.baseline is None:
            self.baseline = runnable_per_core

    def _cut(self, ticket: int, cause: str) -> bool:
        if ticket < self.cut_at:  # launched before the last cut: that round is already answered
            return False
        self.reasons[cause] = self.reasons.get(cause, 0) + 1
        self.growing = False
        self.limit = max(float(self.floor), self.limit / 2)
        self.cut_at = self.launched
        self.cuts += 1
        self._note()
        return True

    def _note(self) -> None:
        if not self.history or self.history[-1] != self.slots:
            self.history.append(self.slots)
