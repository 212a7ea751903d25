"""The runtime state of an environment, beside its releases: what changes while a release runs.

The generation (what runs was changed by a holder of the deploy lock), the driver it runs on, its
canaries being judged (and an operator's decision), replica counts set at run time, notes for
`herd ps`, and the previews made from it with their expiry. A mixin of `StateStore`, kept apart
so the release history stays a small module.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class RuntimeState:
    _lock: threading.Lock
    _db: sqlite3.Connection

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    # generations: what runs was changed by a holder of the deploy lock ---------------------------
    def bump_generation(self, env: str) -> int:
        """Say that what runs in ``env`` changed (a rollout, a restore, a down); returns the new value."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO generations VALUES (?, 1) ON CONFLICT(env) DO UPDATE SET value = value + 1",
                (env,),
            )
            return int(db.execute("SELECT value FROM generations WHERE env = ?", (env,)).fetchone()[0])

    def generation(self, env: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM generations WHERE env = ?", (env,)).fetchone()
        return int(row[0]) if row else 0

    # the driver each environment runs on -----------------------------------------------------------
    def set_driver(self, env: str, driver: str) -> None:
        """``env``'s instances run on ``driver`` (recorded by a deploy, so that `herd ps`, `logs`
        and `down` find them without being told)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO environment_drivers VALUES (?, ?, ?)", (env, driver, time.time())
            )

    def clear_driver(self, env: str) -> None:
        """Nothing of ``env`` runs any more (`herd down`): the next deploy may choose anew."""
        with self._tx() as db:
            db.execute("DELETE FROM environment_drivers WHERE env = ?", (env,))

    def driver_of(self, env: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT driver FROM environment_drivers WHERE env = ?", (env,)).fetchone()
        return str(row[0]) if row else None

    # canaries: what is being judged now, and what an operator decided ------------------------------
    def set_canary(
        self,
        env: str,
        service: str,
        release: int,
        weight: int,
        state: str,
        numbers: Mapping[str, Any] | None = None,
        reason: str = "",
        baseline: str = "",
    ) -> None:
        """The canary of ``service`` is at ``weight``% in ``state`` (judging, passed, failed, promoted,
        aborted), judged against ``baseline`` ("fresh", or "serving (why)"); a new release's canary
        starts afresh, an operator's decision is kept meanwhile."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT release, weight, since FROM canaries WHERE env = ? AND service = ?", (env, service)
            ).fetchone()
            fresh = row is None or row[0] != release
            since = now if fresh or row[1] != weight else row[2]
            db.execute(
                "INSERT INTO canaries (env, service, release, weight, state, since, updated, numbers, "
                "reason, decision, baseline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?) "
                "ON CONFLICT(env, service) DO UPDATE SET release = excluded.release, "
                "weight = excluded.weight, state = excluded.state, "
                "since = excluded.since, updated = excluded.updated, numbers = excluded.numbers, "
                "reason = excluded.reason, baseline = excluded.baseline"
                + (", decision = ''" if fresh else ""),
                (
                    env,
                    service,
                    release,
                    weight,
                    state,
                    since,
                    now,
                    canonical(dict(numbers or {})),
                    reason,
                    baseline,
                ),
            )

    def decide_canary(self, env: str, decision: str, service: str | None = None) -> list[str]:
        """Ask the canaries being judged (of ``service``, or all) to ``decision`` (promote or abort);
        returns the services asked. The judge reads it within a fraction of a second."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT service FROM canaries WHERE env = ? AND state = 'judging'", (env,)
            ).fetchall()
            asked = [str(r[0]) for r in rows if service is None or r[0] == service]
            for name in asked:
                db.execute(
                    "UPDATE canaries SET decision = ? WHERE env = ? AND service = ?", (decision, env, name)
                )
            return asked

    def canaries(self, env: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM canaries WHERE env = ? ORDER BY service", (env,)
            ).fetchall()
        return [{**dict(row), "numbers": json.loads(row["numbers"])} for row in rows]

    # runtime replica counts and notes -------------------------------------------------------------
    def set_scale(self, env: str, service: str, replicas: int, mode: str) -> None:
        """Run ``replicas`` instances of ``service`` whatever the release says; ``mode`` is who set
        it: "fixed" (`herd scale`) or "auto" (the autoscaler)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO scale VALUES (?, ?, ?, ?, ?)",
                (env, service, replicas, mode, time.time()),
            )

    def clear_scale(self, env: str, service: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM scale WHERE env = ? AND service = ?", (env, service))

    def scales(self, env: str) -> dict[str, tuple[int, str]]:
        """{service: (replicas, mode)} for the services whose count was set at run time."""
        with self._lock:
            rows = self._db.execute("SELECT service, replicas, mode FROM scale WHERE env = ?", (env,))
            return {row[0]: (int(row[1]), str(row[2])) for row in rows.fetchall()}

    def set_note(self, env: str, service: str, note: str) -> None:
        """What `herd ps` should say about a service (empty: nothing)."""
        with self._tx() as db:
            if note:
                db.execute(
                    "INSERT OR REPLACE INTO service_notes VALUES (?, ?, ?, ?)",
                    (env, service, note, time.time()),
                )
            else:
                db.execute("DELETE FROM service_notes WHERE env = ? AND service = ?", (env, service))

    def notes(self, env: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT service, note FROM service_notes WHERE env = ?", (env,))
            return {row[0]: str(row[1]) for row in rows.fetchall()}

    # previews: short-lived environments and when they expire --------------------------------------
    def add_preview(
        self,
        name: str,
        env: str,
        source: str,
        expires: float,
        routes: Mapping[str, Any],
    ) -> bool:
        """Record preview ``name`` (state "creating", not kept) before anything of it starts, so
        an interrupted create still expires; False if one of that name exists."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM previews WHERE name = ?", (name,)).fetchone():
                return False
            db.execute(
                "INSERT INTO previews (name, env, source, created, expires, routes, state)"
                " VALUES (?, ?, ?, ?, ?, ?, 'creating')",
                (name, env, source, time.time(), expires, canonical(dict(routes))),
            )
            return True

    def set_preview_state(self, name: str, state: str) -> None:
        """creating -> ready, or -> removing (what is left of it is being removed)."""
        with self._tx() as db:
            db.execute("UPDATE previews SET state = ? WHERE name = ?", (state, name))

    def keep_preview(self, name: str, kept: bool, until: float | None = None) -> bool:
        """Keep preview ``name`` past its expiry, until ``until`` (None: as long as it is kept), or
        (``kept`` False) no longer; False if there is no such preview."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE previews SET kept = ?, kept_until = ? WHERE name = ?",
                (int(kept), until if kept else None, name),
            )
            return changed.rowcount > 0

    def drop_preview(self, name: str) -> None:
        """The last step of a removal: nothing of the preview is left."""
        with self._tx() as db:
            db.execute("DELETE FROM previews WHERE name = ?", (name,))

    def previews(self) -> list[dict[str, Any]]:
        """Every preview, oldest first: name, env, source, created, expires, routes, state, kept
        (0 or 1) and kept_until (None: for as long as it is kept)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM previews ORDER BY created, name").fetchall()
        return [{**dict(row), "routes": json.loads(row["routes"])} for row in rows]

    def preview(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.previews() if p["name"] == name), None)
