"""Quarantined instances: pulled from service, stopped, but kept for a post-mortem.

Each one is a directory `.herd/quarantine/INSTANCE/` holding:

    instance.json   what it ran (service, release, image, command, labels), why it was pulled,
                    when, its last health results
    log             a copy of its log (the log store keeps the original too)
    tmp/            what it wrote outside its volumes (its private /tmp), moved there at stop
    drift/          for a drifted instance: the files that differ from its image, and a list

At most `quarantine_keep` are kept per service; the oldest go first. Everything here is plain
files, so `herd inspect` and `herd quarantine` work with or without a running agent.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herdsman.errors import HerdError


@dataclass(frozen=True)
class Kept:
    id: str
    path: Path
    record: dict[str, Any]

    @property
    def service(self) -> str:
        return str(self.record.get("service", ""))

    @property
    def env(self) -> str:
        """The environment it ran in (production, preview-NAME), from its labels."""
        return str((self.record.get("labels") or {}).get("herd.env", ""))

    @property
    def when(self) -> float:
        return float(self.record.get("quarantined", 0.0))

    def changed_files(self) -> list[str]:
        """Paths (relative to the instance's root) it wrote or that drifted."""
        out: list[str] = []
        tmp = self.path / "tmp"
        if tmp.is_dir():
            for root, _dirs, files in os.walk(tmp):
                out += ["/tmp/" + str(Path(root, f).relative_to(tmp)) for f in files]
        listing = self.path / "drift" / "differences.json"
        if listing.is_file():
            for item in json.loads(listing.read_text()):
                out.append(f"/{str(item.get('path', '')).lstrip('/')} ({item.get('kind', 'changed')})")
        return sorted(out)

    def log_tail(self, lines: int = 20) -> list[str]:
        log = self.path / "log"
        if not log.is_file():
            return []
        with log.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 32768))
            return handle.read().decode(errors="replace").splitlines()[-lines:]


class Quarantine:
    def __init__(self, home: Path) -> None:
        self.root = home / "quarantine"

    def place(self, instance_id: str) -> Path:
        return self.root / instance_id

    def record(self, instance_id: str, info: dict[str, Any], log: Path | None) -> Path:
        """Write the instance's record and a copy of its log; returns its directory (the driver then
        moves what the instance wrote into `tmp/`)."""
        place = self.place(instance_id)
        place.mkdir(parents=True, exist_ok=True)
        info = {**info, "id": instance_id, "quarantined": info.get("quarantined", time.time())}
        tmp = place / ".instance.json.tmp"
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
        os.replace(tmp, place / "instance.json")
        if log is not None and log.is_file():
            shutil.copyfile(log, place / "log")
        return place

    def all(self) -> list[Kept]:
        if not self.root.is_dir():
            return []
        out = []
        for place in self.root.iterdir():
            try:
                record = json.loads((place / "instance.json").read_text())
            except (OSError, ValueError):
                continue
            out.append(Kept(place.name, place, record))
        return sorted(out, key=lambda k: (k.when, k.id))

    def get(self, instance_id: str) -> Kept:
        for kept in self.all():
            if kept.id == instance_id:
                return kept
        raise HerdError(
            f"no quarantined instance {instance_id!r}",
            hint="`herd quarantine` lists the kept ones",
        )

    def purge(self, ids: list[str] | None = None) -> list[str]:
        """Delete the given quarantined instances (all when ``ids`` is None); return their ids."""
        targets = self.all() if ids is None else [self.get(i) for i in ids]
        for kept in targets:
            _remove(kept.path)
        return [k.id for k in targets]

    def prune(self, service: str, keep: int, env: str | None = None) -> list[str]:
        """Keep the newest ``keep`` of ``service`` (of environment ``env`` when given: a preview's
        quarantines never push out production's); delete the older ones."""
        mine = [k for k in self.all() if k.service == service and (env is None or k.env == env)]
        old = mine[: max(0, len(mine) - keep)]
        for kept in old:
            _remove(kept.path)
        return [k.id for k in old]


def _remove(path: Path) -> None:
    """Remove a kept instance, also when it holds read-only directories copied from an image."""

    for root, dirs, _files in os.walk(path):
        for name in dirs:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)
