"""Durations as people write them in herd.toml ("250ms", "1s", "2m", "1m30s"), parsed to seconds.

A bare number is refused on purpose: "timeout = 5" could mean seconds or milliseconds, and a
deploy that waits 5 ms for health is a bad surprise. The unit is always written.

Durations are capped at 30 days (`MAX_SECONDS`): nothing in a stack waits that long on purpose, and
"99999999h" is a typo that would otherwise overflow timers or mean "never" without saying so.
Whether 0 is allowed depends on the key (see `spec.models`): where it means "at once" (stop_grace,
drain_timeout, canary_pause, scale_in_window) or "never" (verify_every) it is; where it would make a
check spin or fail at once (health interval, timeout, deadline; migrate timeout) it is refused.
"""

from __future__ import annotations

import math
import re

from herdsman.spec.checks import Invalid

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
HINT = 'write a number with a unit: "250ms", "1s", "2m", "1h" or "1m30s"'
MAX_SECONDS = 30 * 24 * 3600.0
CAP_HINT = 'durations are at most 30 days ("720h"); did you mean a smaller unit?'


def parse_duration(text: object) -> float:
    """Return the duration in seconds, or raise ValueError with a message fit for a user."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"a duration must be a string with a unit, not {text!r}")
    value = text.strip()
    if not value:
        raise ValueError("a duration cannot be empty")
    pos = 0
    total = 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise ValueError(f"{text!r} is not a duration")
    if not math.isfinite(total) or total > MAX_SECONDS:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise Invalid(f"the duration {shown!r} is longer than 30 days", CAP_HINT)
    return total


def format_duration(seconds: float) -> str:
    """The shortest of "250ms", "1s", "2m", "1h" that says exactly ``seconds``; it parses back to
    the same value (releases store durations this way)."""
    if seconds >= 1 and seconds == int(seconds):
        for unit, size in (("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{int(seconds // size)}{unit}"
        return f"{int(seconds)}s"
    milliseconds = round(seconds * 1000)
    if abs(milliseconds / 1000 - seconds) < 1e-9:
        return f"{milliseconds}ms"
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
