"""herd.lock: every input of a bake that is not pinned by the project's own files, resolved once.

A base tag ("debian:bookworm") or a requirements file without hashes means different bytes on
different days. The first bake resolves them and writes what it found here (the base's digest, the
exact wheels with their sha256); every later bake uses exactly that, until `herd bake --refresh`
resolves anew ("made to order": the newest base and packages) and rewrites the file.
The file is meant to be committed. It is written atomically and only when its content changes.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from herdsman.errors import Problem, SpecError

LOCK_VERSION = 1
HEADER = (
    "# herd.lock: the resolved inputs of every image (base digests, exact Python wheels).\n"
    "# Written by `herd bake`; `herd bake --refresh` resolves them anew. Commit this file.\n"
)


class Lock:
    def __init__(self, file: Path, services: dict[str, dict[str, Any]] | None = None) -> None:
        self.file = file
        self.services: dict[str, dict[str, Any]] = services or {}
        self._original = self.render()

    @classmethod
    def load(cls, file: Path) -> Lock:
        if not file.exists():
            return cls(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SpecError(
                Problem("", f"cannot read the lock file: {exc}", "delete it and run `herd bake --refresh`"),
                file=str(file),
            ) from None
        version = data.get("version")
        if version != LOCK_VERSION:
            raise SpecError(
                Problem(
                    "version", f"lock version {version!r} is not {LOCK_VERSION}", "run `herd bake --refresh`"
                ),
                file=str(file),
            )
        services = data.get("service", {})
        if not isinstance(services, dict) or not all(isinstance(v, dict) for v in services.values()):
            raise SpecError(
                Problem("service", "must be a table of services", "run `herd bake --refresh`"), file=str(file)
            )
        return cls(file, services)

    def get(self, service: str, part: str) -> dict[str, Any] | None:
        value = self.services.get(service, {}).get(part)
        return value if isinstance(value, dict) else None

    def put(self, service: str, part: str, value: dict[str, Any] | None) -> None:
        entry = self.services.setdefault(service, {})
        if value is None:
            entry.pop(part, None)
        else:
            entry[part] = value

    def keep_only(self, services: set[str]) -> None:
        for name in list(self.services):
            if name not in services:
                del self.services[name]

    def render(self) -> str:
        body = {"version": LOCK_VERSION, "service": dict(sorted(self.services.items()))}
        return HEADER + tomli_w.dumps(body)

    @property
    def changed(self) -> bool:
        return self.render() != self._original

    def save(self) -> bool:
        """Write the file if its content changed; say whether it did."""
        text = self.render()
        if text == self._original and self.file.exists():
            return False
        tmp = self.file.with_name(f".{self.file.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.file)
        self._original = text
        return True
