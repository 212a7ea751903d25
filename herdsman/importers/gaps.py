"""One thing of the input that herd.toml cannot say, and why: listed at the end of an imported file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    key: str  # where in the input: services.web.networks
    why: str  # what herdsman does instead, or why it has no such thing

    def render(self) -> str:
        return f"{self.key}: {self.why}"
