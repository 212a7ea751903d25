"""The process driver's record files: parsed once, read again only when a file changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from herdsman.drivers.records import RecordFiles, write_json


def test_a_listing_parses_only_new_or_changed_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = RecordFiles(tmp_path)
    for n in range(3):
        files.write({"id": f"i{n}", "port": 1000 + n})
    assert [r["id"] for r in files.all()] == ["i0", "i1", "i2"]
    parsed: list[str] = []
    real = json.loads
    monkeypatch.setattr("herdsman.drivers.records.json.loads", lambda text: parsed.append(text) or real(text))
    assert [r["port"] for r in files.all()] == [1000, 1001, 1002]
    assert parsed == [], "nothing changed: nothing parsed again"
    other = RecordFiles(tmp_path)  # another process (a CLI beside the agent) writes and removes
    other.write({"id": "i1", "port": 2001, "stopping": True})
    other.remove("i0")
    write_json(tmp_path / "i3.json", {"id": "i3", "port": 1003})
    assert [(r["id"], r["port"]) for r in files.all()] == [("i1", 2001), ("i2", 1002), ("i3", 1003)]
    assert len(parsed) == 2, "only the rewritten and the new record"


def test_unreadable_and_temporary_files_are_skipped(tmp_path: Path) -> None:
    files = RecordFiles(tmp_path)
    files.write({"id": "good"})
    (tmp_path / "torn.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / ".good.json.tmp").write_text("{}")
    assert [r["id"] for r in files.all()] == ["good"]
    assert files.load("torn") is None and files.load("missing") is None
    assert oct(os.stat(tmp_path / "good.json").st_mode & 0o777) == "0o600"
