"""The state store (`.herd/state.db`): what was released, what each rollout did, what happened.

SQLite in WAL mode, so the CLI can read while the agent writes. Every write is one short
transaction. Rollout steps are written ahead: a step is recorded as `started` before it is applied
and `done` after, so an agent killed between the two knows exactly where to resume or revert.
Calls are synchronous; async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herdsman.errors import DeployError
from herdsman.state.runtime import RuntimeState
from herdsman.state.runtime import canonical as _canonical
from herdsman.state.schema import MIGRATIONS

if TYPE_CHECKING:  # the models load when a release is read: `herd ps` reads only runtime state
    from herdsman.spec import Service


@dataclass(frozen=True)
class ServiceRelease:
    """One service of a release, typed: the image it runs and the config it runs with."""

    name: str
    image: str  # manifest digest
    image_spec: str  # digest of what of the service's spec went into its image
    config: Service


_PARSED: dict[str, dict[str, ServiceRelease]] = {}  # by content digest: a release never changes
_PARSED_KEEP = 64


def services_of(content: Mapping[str, Any]) -> dict[str, ServiceRelease]:
    """The services of a release's content (recorded or about to be), typed."""
    from herdsman.spec.models import Service

    return {
        name: ServiceRelease(
            name,
            str(entry["image"]),
            str(entry.get("image_spec", "")),
            Service.model_validate(entry["config"]),
        )
        for name, entry in content.get("services", {}).items()
    }


def _parse(digest: str, content: Mapping[str, Any]) -> dict[str, ServiceRelease]:
    """A release's services as typed values, validated once per content however often it is read."""
    found = _PARSED.get(digest)
    if found is None:
        found = services_of(content)
        if len(_PARSED) >= _PARSED_KEEP:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[digest] = found
    return found


def asker() -> str:
    """Who asks for a release from this process: user@host, as a release records it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Release:
    env: str
    number: int
    created: float
    trigger: str
    revision: str
    content: dict[str, Any]  # {"services": {name: {"image": digest, "config": {...}}}}
    content_digest: str
    copy_of: int | None
    status: str
    reason: str
    by: str = ""  # who asked for it: user@host ("" when not recorded)

    def services(self) -> dict[str, ServiceRelease]:
        """Its services, typed (parsed once per content; ``content`` keeps the record as stored)."""
        return dict(_parse(self.content_digest, self.content))


@dataclass(frozen=True)
class Rollout:
    id: int
    env: str
    from_release: int | None
    to_release: int
    strategy: str
    state: str  # running, done, failed, reverted
    reason: str
    started: float
    finished: float | None


class StateStore(RuntimeState):
    """Releases, rollouts and events (here), and runtime state (`runtime.RuntimeState`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # releases and events are the project's business only: 0600
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    # releases ---------------------------------------------------------------------------------
    def create_release(
        self,
        env: str,
        content: dict[str, Any],
        *,
        trigger: str,
        revision: str = "",
        copy_of: int | None = None,
        by: str = "",
    ) -> Release:
        text = _canonical(content)
        digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT COALESCE(MAX(number), 0) FROM releases WHERE env = ?", (env,)).fetchone()
            number = int(row[0]) + 1
            db.execute(
                "INSERT INTO releases (env, number, created, trigger, revision, content, content_digest, "
                "copy_of, by_whom) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env, number, now, trigger, revision, text, digest, copy_of, by),
            )
            db.execute("INSERT INTO release_status VALUES (?, ?, 'pending', '', ?)", (env, number, now))
        return self.release(env, number)

    def set_release_status(self, env: str, number: int, status: str, reason: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE release_status SET status = ?, reason = ?, updated = ? WHERE env = ? AND number = ?",
                (status, reason, time.time(), env, number),
            )

    def release(self, env: str, number: int) -> Release:
        rows = self._releases("WHERE r.env = ? AND r.number = ?", (env, number))
        if not rows:
            raise DeployError(
                f"there is no release {number} in environment {env!r}", hint="`herd releases` lists them"
            )
        return rows[0]

    def environments(self) -> list[str]:
        """Every environment that has a release."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT env FROM releases ORDER BY env").fetchall()
        return [str(row[0]) for row in rows]

    def releases(self, env: str) -> list[Release]:
        return self._releases("WHERE r.env = ? ORDER BY r.number", (env,))

    def current_release(self, env: str) -> Release | None:
        """The release now serving: the newest one that was deployed."""
        rows = self._releases(
            "WHERE r.env = ? AND s.status = 'deployed' ORDER BY r.number DESC LIMIT 1", (env,)
        )
        return rows[0] if rows else None

    def previous_good(self, env: str, before: int) -> Release | None:
        """The newest release before ``before`` that was deployed successfully at some point."""
        rows = self._releases(
            "WHERE r.env = ? AND r.number < ? AND s.status IN ('deployed', 'superseded', 'stopped') "
            "ORDER BY r.number DESC LIMIT 1",
            (env, before),
        )
        return rows[0] if rows else None

    def _releases(self, where: str, args: tuple[Any, ...]) -> list[Release]:
        with self._lock:
            rows = self._db.execute(
                "SELECT r.*, s.status, s.reason FROM releases r JOIN release_status s "
                f"ON s.env = r.env AND s.number = r.number {where}",
                args,
            ).fetchall()
        return [
            Release(
                env=row["env"],
                number=row["number"],
                created=row["created"],
                trigger=row["trigger"],
                revision=row["revision"],
                content=json.loads(row["content"]),
                content_digest=row["content_digest"],
                copy_of=row["copy_of"],
                status=row["status"],
                reason=row["reason"],
                by=row["by_whom"],
            )
            for row in rows
        ]

    # rollouts (write-ahead) ---------------------------------------------------------------------
    def start_rollout(
        self, env: str, from_release: int | None, to_release: int, strategy: str, steps: list[dict[str, Any]]
    ) -> Rollout:
        now = time.time()
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO rollouts (env, from_release, to_release, strategy, state, started) "
                "VALUES (?, ?, ?, ?, 'running', ?)",
                (env, from_release, to_release, strategy, now),
            )
            rollout_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO rollout_steps VALUES (?, ?, ?, 'pending', '', ?)",
                [(rollout_id, seq, _canonical(step), now) for seq, step in enumerate(steps)],
            )
        return self.rollout(rollout_id)

    def mark_step(self, rollout: int, seq: int, state: str, detail: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE rollout_steps SET state = ?, detail = ?, updated = ? WHERE rollout = ? AND seq = ?",
                (state, detail, time.time(), rollout, seq),
            )

    def steps(self, rollout: int) -> list[tuple[int, dict[str, Any], str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, step, state, detail FROM rollout_steps WHERE rollout = ? ORDER BY seq",
                (rollout,),
            ).fetchall()
        return [(row["seq"], json.loads(row["step"]), row["state"], row["detail"]) for row in rows]

    def finish_rollout(self, rollout: int, state: str, reason: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE rollouts SET state = ?, reason = ?, finished = ? WHERE id = ?",
                (state, reason, time.time(), rollout),
            )

    def rollout(self, rollout_id: int) -> Rollout:
        with self._lock:
            row = self._db.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        return Rollout(**dict(row))

    def unfinished_rollouts(self, env: str) -> list[Rollout]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM rollouts WHERE env = ? AND state = 'running' ORDER BY id", (env,)
            ).fetchall()
        return [Rollout(**dict(row)) for row in rows]

    # events -------------------------------------------------------------------------------------
    def event(
        self,
        env: str,
        kind: str,
        message: str,
        *,
        service: str = "",
        instance: str = "",
        release: int | None = None,
        **data: Any,
    ) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO events (at, env, kind, service, instance, release, message, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), env, kind, service, instance, release, message, _canonical(data)),
            )
            return int(cursor.lastrowid or 0)

    def events(
        self,
        env: str,
        after: int = 0,
        limit: int = 1000,
        *,
        last: int | None = None,
        kinds: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """Events after id ``after`` in order, or with ``last`` the newest ``last`` of them; with
        ``kinds``, only those kinds (filtered before the limit, so `-n 5 --kind heal` is 5 heals)."""
        where = "env = ? AND id > ?"
        args: list[Any] = [env, after]
        if kinds:
            where += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            args += list(kinds)
        with self._lock:
            if last is not None:
                rows = self._db.execute(
                    f"SELECT * FROM (SELECT * FROM events WHERE {where} ORDER BY id DESC LIMIT ?)"
                    " ORDER BY id",
                    (*args, last),
                ).fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT * FROM events WHERE {where} ORDER BY id LIMIT ?", (*args, limit)
                ).fetchall()
        return [{**dict(row), "data": json.loads(row["data"])} for row in rows]


def _statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.strip().splitlines():
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
