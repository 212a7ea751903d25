"""Quarantined instances on disk: listing, retention per service (oldest purged first), purge."""

from __future__ import annotations

from pathlib import Path

import pytest

from herdsman.errors import HerdError
from herdsman.quarantine import Quarantine


def keep(q: Quarantine, instance: str, service: str, when: float, log: Path | None = None) -> Path:
    place = q.record(
        instance, {"service": service, "reason": "failed 3 liveness checks", "quarantined": when}, log
    )
    (place / "tmp").mkdir()
    (place / "tmp" / "core").write_text("dump")
    return place


def test_retention_keeps_the_newest_per_service(tmp_path: Path) -> None:
    q = Quarantine(tmp_path)
    for n in range(5):
        keep(q, f"web-1-{n}", "web", 100.0 + n)
    keep(q, "worker-1-0", "worker", 50.0)
    assert q.prune("web", 2) == ["web-1-0", "web-1-1", "web-1-2"]
    assert [k.id for k in q.all()] == ["worker-1-0", "web-1-3", "web-1-4"]
    assert q.prune("web", 2) == []


def test_a_previews_quarantines_never_push_out_productions(tmp_path: Path) -> None:
    """One quarantine directory holds every environment's kept instances: retention counts per
    environment (review: a failing preview purged production's evidence of the same service)."""
    q = Quarantine(tmp_path)
    for n, env in enumerate(["production", "production", "preview-a", "preview-a", "preview-a"]):
        q.record(
            f"{env}-web-{n}", {"service": "web", "quarantined": 100.0 + n, "labels": {"herd.env": env}}, None
        )
    assert q.prune("web", 2, "preview-a") == ["preview-a-web-2"]
    assert q.prune("web", 2, "production") == []
    assert sorted(k.id for k in q.all() if k.env == "production") == ["production-web-0", "production-web-1"]


def test_purge_and_inspect(tmp_path: Path) -> None:
    log = tmp_path / "web-1-0.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    q = Quarantine(tmp_path)
    place = keep(q, "web-1-0", "web", 1.0, log)
    (place / "tmp" / "sub").mkdir(mode=0o500)  # read-only directories do not stop a purge
    kept = q.get("web-1-0")
    assert kept.changed_files() == ["/tmp/core"]
    assert kept.log_tail(3) == ["line 97", "line 98", "line 99"]
    assert q.purge(["web-1-0"]) == ["web-1-0"] and not place.exists()
    with pytest.raises(HerdError, match="no quarantined instance"):
        q.get("web-1-0")
    keep(q, "a", "web", 1.0)
    keep(q, "b", "web", 2.0)
    assert q.purge(None) == ["a", "b"] and q.all() == []
