"""The process driver's instance records: one JSON file each in `.herd/run/instances/`.

The records are the process driver's whole memory (a new agent adopts what an old one started by
reading them), so every listing reads the directory again. A record is written once when its
instance starts and removed when it is gone, so a file whose name, size and modification time are
unchanged has not changed: it is parsed once, not at each listing. At a thousand instances a
burst read every record for each start (or each second) and spent a third of the agent's CPU on
it; now a listing costs a directory scan and one `stat` per record.

The records handed out are shared with the cache: read them, never change them in place.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

Record = dict[str, Any]


class RecordFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._parsed: dict[str, tuple[tuple[int, int, int], Record]] = {}

    def path(self, instance_id: str) -> Path:
        return self.directory / f"{instance_id}.json"

    def all(self) -> list[Record]:
        """Every record, in the order of the files' names."""
        seen: dict[str, tuple[tuple[int, int, int], Record]] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not entry.name.endswith(".json") or entry.name.startswith("."):
                    continue
                with contextlib.suppress(OSError, ValueError):
                    info = entry.stat()
                    key = (info.st_ino, info.st_size, info.st_mtime_ns)
                    known = self._parsed.get(entry.name)
                    if known is None or known[0] != key:
                        record = json.loads(Path(entry.path).read_text())
                        if not isinstance(record, dict):
                            continue
                        known = (key, record)
                    seen[entry.name] = known
        self._parsed = seen
        return [seen[name][1] for name in sorted(seen)]

    def load(self, instance_id: str) -> Record | None:
        """One record, read afresh (it may have been removed by another process)."""
        try:
            value = json.loads(self.path(instance_id).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write(self, record: Record) -> None:
        write_json(self.path(str(record["id"])), record)

    def remove(self, instance_id: str) -> None:
        self.path(instance_id).unlink(missing_ok=True)
        self._parsed.pop(f"{instance_id}.json", None)


def write_json(path: Path, value: Any) -> None:
    """Written whole or not at all, readable by herdsman's user only (0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(value, sort_keys=True))
    os.replace(tmp, path)
