"""The agent's keepers of previews: a keeper that cannot start is tried again after a doubling
wait, not every 2 s round with an event each time (review: a persistently failing keeper filled the
state store's events)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from herdsman.agent import previews as keeping
from herdsman.state import StateStore


def test_a_keeper_that_cannot_start_is_tried_again_after_a_doubling_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateStore(tmp_path / "state.db")
    assert state.add_preview("pr-1", "preview-pr-1", "release 1", 10**12, {})
    state.set_preview_state("pr-1", "ready")
    expiry = keeping.PreviewExpiry(lambda: None, state, "production", asyncio.Event())  # type: ignore[arg-type,return-value]
    tries: list[str] = []

    async def cannot(env: str) -> None:
        tries.append(env)
        raise RuntimeError("the router is not answering")

    monkeypatch.setattr(expiry, "_keep", cannot)
    clock = [1000.0]
    monkeypatch.setattr(keeping.time, "time", lambda: clock[0])

    def round_at(when: float) -> None:
        clock[0] = when
        asyncio.run(expiry.once())

    round_at(1000.0)
    round_at(1002.0)  # within the first wait (4 s): not tried
    assert tries == ["preview-pr-1"]
    round_at(1004.5)  # tried again, then waits 8 s
    round_at(1010.0)
    assert len(tries) == 2
    round_at(1013.0)
    assert len(tries) == 3 and expiry.retry["preview-pr-1"][1] == 16.0
    said: list[Any] = [e["message"] for e in state.events("preview-pr-1")]
    assert len(said) == 3 and said[0].endswith("again in 4s") and said[-1].endswith("again in 16s")
    state.close()
